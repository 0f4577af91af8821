"""Out of the box: with no --library and no --model the app uses the bundled demo world, sets its library up
in a per-user folder on first start (here by indexing: the shipped prebuilt library was made by another
model than these tests' stand-in; see test_demo_prebuilt.py), reuses it afterwards, and says which model
runs and how to switch."""

from __future__ import annotations

import json
import shutil

import pytest

import data.demo
from app import choose
from app.cli import main


@pytest.fixture
def demo_world(app_library, tiny_model, tmp_path, monkeypatch):
    """A stand-in demo world (the app test tracks + the tiny model saved to disk) and an empty home."""
    music = tmp_path / "demo-music"
    music.mkdir()
    for path in app_library.paths[:4]:
        shutil.copy(path, music)
    tiny_model.save_pretrained(tmp_path / "demo-model")
    monkeypatch.setattr(data.demo, "DEMO_AUDIO_DIR", music)
    monkeypatch.setattr(data.demo, "DEMO_MODEL_DIR", tmp_path / "demo-model")
    monkeypatch.setattr(data.demo, "EXAMPLE_QUERIES", (("slow sad piano", {}), ("fast drums", {})))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MUQSEARCH_LIBRARY", raising=False)
    monkeypatch.delenv("MUQSEARCH_MODEL", raising=False)
    return tmp_path


def test_no_options_means_the_demo_world(demo_world):
    setup = choose.resolve(None, None)
    assert setup.demo is not None and setup.index_roots == (demo_world / "demo-music",)
    assert setup.library_dir == demo_world / "home" / "muqsearch" / "demo-library"
    assert setup.model == str(demo_world / "demo-model")
    text = choose.notice(setup, setup.model)
    assert "demo model" in text and "only knows that demo world" in text and choose.REAL_MODEL in text


def test_demo_command_indexes_once_then_reuses_the_library(demo_world, capsys):
    assert main(["demo", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "only knows that demo world" in out and "“slow sad piano”" in out and "“fast drums”" in out
    library = demo_world / "home" / "muqsearch" / "demo-library"
    from indexer.vectors import Library

    with Library.open(library) as lib:
        generation, tracks = lib.generation, lib.catalog.counts()["tracks"]
    assert tracks == 4 and generation >= 1
    assert main(["demo", "-k", "1"]) == 0
    with Library.open(library) as lib:
        assert lib.generation == generation  # nothing re-indexed the second time


def test_a_first_search_sets_the_demo_library_up_and_keeps_stdout_for_the_answer(demo_world, capsys):
    """No serve or demo before it: `search` installs the demo library itself (it used to tell the user to
    index ~/Music into it), says so on stderr, and --json stays one object on stdout."""
    from indexer.vectors import Library

    assert main(["--json", "search", "slow sad piano", "-k", "2"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["results"]) == 2
    assert "Indexing the demo library into" in captured.err
    with Library.open(demo_world / "home" / "muqsearch" / "demo-library") as lib:
        generation, tracks = lib.generation, lib.catalog.counts()["tracks"]
    assert tracks == 4
    assert main(["--json", "search", "fast drums", "-k", "1"]) == 0
    assert "demo library" not in capsys.readouterr().err  # set up once: the next command only reads it
    with Library.open(demo_world / "home" / "muqsearch" / "demo-library") as lib:
        assert lib.generation == generation


def test_an_explicit_library_or_model_is_not_the_demo(demo_world, tmp_path):
    setup = choose.resolve(str(tmp_path / "mine"), "OpenMuQ/MuQ-MuLan-large")
    assert setup.demo is None and setup.model == "OpenMuQ/MuQ-MuLan-large" and not setup.index_roots
    assert "demo model" not in choose.notice(setup, setup.model)


def test_without_a_demo_world_the_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data.demo, "DEMO_MODEL_DIR", tmp_path / "absent")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MUQSEARCH_LIBRARY", raising=False)
    with pytest.raises(choose.SetupError, match="muqsearch --model OpenMuQ/MuQ-MuLan-large index"):
        choose.resolve(None, None)


def test_a_new_demo_model_rebuilds_the_demo_library(demo_world, capsys, monkeypatch):
    import torch

    from indexer.vectors import Library
    from muq_model import MuQMuLan, MuQMuLanConfig

    assert main(["demo", "-k", "1"]) == 0
    torch.manual_seed(7)
    MuQMuLan(MuQMuLanConfig.tiny()).eval().save_pretrained(demo_world / "newer-model")
    monkeypatch.setattr(data.demo, "DEMO_MODEL_DIR", demo_world / "newer-model")
    assert main(["demo", "-k", "1"]) == 0, capsys.readouterr().err
    with Library.open(demo_world / "home" / "muqsearch" / "demo-library") as lib:
        assert lib.catalog.get_meta("model_name") == str(demo_world / "newer-model")
        assert lib.catalog.counts()["tracks"] == 4
