"""The prebuilt demo library: a first start installs it without calling the model when it fits the demo
model and clips, and falls back to indexing (all of it, or only the clips that differ) when it does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

import data.demo
from app import choose
from app.cli import main
from data.demo.build_library import CATALOG, MANIFEST, build, clip_files, read_manifest
from indexer.catalog import Segment, Track
from indexer.vectors import Library
from muq_model import MuQMuLan


@pytest.fixture(scope="module")
def built(app_library, tiny_model, tmp_path_factory):
    """Four app test tracks as demo clips, the tiny model on disk, and their prebuilt library made by the
    shipped builder (built once: tests work on copies)."""
    base = tmp_path_factory.mktemp("demo-prebuilt")
    (base / "demo-music").mkdir()
    for path in app_library.paths[:4]:
        shutil.copy(path, base / "demo-music")
    tiny_model.save_pretrained(base / "demo-model")
    build(base / "prebuilt", base / "demo-music", base / "demo-model", progress=False)
    return base


@pytest.fixture
def world(built, tmp_path, monkeypatch):
    """A private copy of the stand-in demo world with its prebuilt library, and an empty home."""
    for name in ("demo-music", "demo-model", "prebuilt"):
        shutil.copytree(built / name, tmp_path / name)
    monkeypatch.setattr(data.demo, "DEMO_AUDIO_DIR", tmp_path / "demo-music")
    monkeypatch.setattr(data.demo, "DEMO_MODEL_DIR", tmp_path / "demo-model")
    monkeypatch.setattr(data.demo, "DEMO_PREBUILT_DIR", tmp_path / "prebuilt")
    monkeypatch.setattr(data.demo, "EXAMPLE_QUERIES", (("slow sad piano", {}),))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MUQSEARCH_LIBRARY", raising=False)
    monkeypatch.delenv("MUQSEARCH_MODEL", raising=False)
    return tmp_path


@pytest.fixture
def embedded(monkeypatch):
    """Counts the clips the model embeds from here on (any instance)."""
    clips = []
    real = MuQMuLan.embed_clips

    def counting(self, batch, *args, **kwargs):
        clips.append(len(batch))
        return real(self, batch, *args, **kwargs)

    monkeypatch.setattr(MuQMuLan, "embed_clips", counting)
    return clips


def _first_start(capsys=None):
    setup = choose.resolve(None, None)
    model = MuQMuLan.from_pretrained(setup.model).eval()
    return setup, choose.index_if_needed(setup, model, setup.model, progress=capsys is not None)


def _stored_vectors(library_dir: Path) -> dict[str, np.ndarray]:
    """file name -> (clips, dim) segment vectors, as the library's vector index holds them."""
    with Library.open(library_dir) as library, library.catalog.session() as s:
        indexes = library.load()
        rows = s.execute(select(Track.path, Segment.id).join(Segment.track).order_by(Track.path, Segment.index))
        by_name: dict[str, list[int]] = {}
        for path, segment_id in rows:
            by_name.setdefault(Path(path).name, []).append(segment_id)
    return {name: indexes.segment_vectors(ids) for name, ids in by_name.items()}


def _track_paths(library_dir: Path) -> list[str]:
    with Library.open(library_dir) as library, library.catalog.session() as s:
        return sorted(s.scalars(select(Track.path)))


def test_first_start_installs_the_prebuilt_library_without_calling_the_model(world, embedded, capsys):
    setup, summary = _first_start(capsys)
    assert "prebuilt catalog of 4 clips" in capsys.readouterr().out
    assert embedded == [] and summary.indexed == 0 and summary.skipped == 4 and summary.failed == 0
    with Library.open(setup.library_dir) as library:
        assert library.catalog.get_meta("model_name") == setup.model
    assert _track_paths(setup.library_dir) == sorted(str(world / "demo-music" / name) for name in clip_files(world / "demo-music"))
    # the same vectors an ordinary first start (indexing everything) stores
    installed = _stored_vectors(setup.library_dir)
    shutil.rmtree(setup.library_dir)
    shutil.rmtree(world / "prebuilt")
    _first_start()
    assert sum(embedded) > 0
    indexed = _stored_vectors(setup.library_dir)
    assert installed.keys() == indexed.keys()
    for name in installed:
        np.testing.assert_allclose(installed[name], indexed[name], atol=1e-5)


def test_the_demo_command_answers_from_the_prebuilt_library(world, embedded, capsys):
    assert main(["demo", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "prebuilt catalog" in out and "“slow sad piano”" in out
    assert embedded == []  # the query's text went through the text tower only


def test_a_retrained_demo_model_falls_back_to_indexing_and_says_why(world, embedded, capsys, monkeypatch):
    import torch

    from muq_model import MuQMuLanConfig

    torch.manual_seed(7)
    retrained = MuQMuLan(MuQMuLanConfig.tiny()).eval().save_pretrained(world / "retrained")
    monkeypatch.setattr(data.demo, "DEMO_MODEL_DIR", retrained)
    setup, summary = _first_start(capsys)
    out = capsys.readouterr().out
    assert "does not fit: it was made with another build of the demo model" in out
    assert summary.indexed == 4 and sum(embedded) > 0
    with Library.open(setup.library_dir) as library:
        assert library.catalog.get_meta("model_name") == str(retrained)


def test_only_clips_that_differ_are_indexed_again(world, app_library, embedded, capsys):
    music = world / "demo-music"
    names = sorted(clip_files(music))
    shutil.copy(app_library.paths[5], music / names[0])  # re-rendered: other bytes under the same name
    (music / names[1]).unlink()  # gone
    setup, summary = _first_start(capsys)
    assert "2 of its clips are not byte for byte here" in capsys.readouterr().out
    assert (summary.indexed, summary.skipped, summary.removed) == (1, 2, 1)
    with Library.open(setup.library_dir) as library:
        assert library.catalog.counts()["tracks"] == 3


def test_a_second_start_reuses_the_installed_library(world, embedded):
    setup, _ = _first_start()
    with Library.open(setup.library_dir) as library:
        generation = library.generation
    _, summary = _first_start()
    assert summary.skipped == 4 and summary.indexed == 0 and embedded == []
    with Library.open(setup.library_dir) as library:
        assert library.generation == generation


def test_the_build_is_deterministic_and_holds_no_path_of_this_machine(world, built):
    build(world / "again", world / "demo-music", world / "demo-model", progress=False)  # elsewhere, later
    for name in (CATALOG, MANIFEST):
        assert (world / "again" / name).read_bytes() == (built / "prebuilt" / name).read_bytes(), name
        for place in (world, built):
            assert str(place).encode() not in (world / "again" / name).read_bytes()


@pytest.mark.skipif(read_manifest(data.demo.DEMO_PREBUILT_DIR) is None
                    or not (data.demo.DEMO_MODEL_DIR / "config.json").is_file(),
                    reason="no prebuilt demo library or demo model in this checkout")
def test_the_shipped_prebuilt_library_fits_the_shipped_model_and_clips(tmp_path):
    """Retraining the demo model or re-rendering the clips means `python -m data.demo.build_library`."""
    from muq_model.identity import same_vectors

    manifest = read_manifest(data.demo.DEMO_PREBUILT_DIR)
    model = MuQMuLan.from_pretrained(data.demo.DEMO_MODEL_DIR)
    assert same_vectors(manifest["fingerprint"], model.fingerprint())
    assert manifest["clips"] == clip_files(data.demo.DEMO_AUDIO_DIR)
    shutil.copy(data.demo.DEMO_PREBUILT_DIR / CATALOG, tmp_path / CATALOG)  # opening sets WAL: not on the shipped file
    with Library.open(tmp_path) as library:
        assert library.generation == 0 and library.catalog.counts()["errors"] == 0
    assert _track_paths(tmp_path) == sorted(manifest["clips"])  # relative to the clips' folder
    assert len(manifest["clips"]) == manifest["tracks"] == data.demo.DEMO_CLIPS
