"""`muqsearch index` and `muqsearch status` as a user runs them (in-process, real model directory)."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from benchmarks.audio_files import write_audio
from indexer import ann


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def music(tmp_path):
    root = tmp_path / "music"
    for n in range(3):
        write_audio(root / f"song{n}.flac", 3.0 + n, 44100, 2, seed=n)
    (root / "bad.ogg").write_bytes(b"OggS" + b"\0" * 200)
    return root


def test_index_json_then_status_json(capsys, music, tmp_path, tiny_model_dir):
    library = tmp_path / "library"
    code, out, err = run(capsys, "index", music, "--library", library, "--model", tiny_model_dir, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert {"indexed", "skipped", "failed", "removed", "errors"} <= set(summary)
    assert (summary["indexed"], summary["skipped"], summary["failed"], summary["removed"]) == (3, 0, 1, 0)
    assert summary["errors"] == [
        {"path": str(music / "bad.ogg"), "stage": "read", "message": summary["errors"][0]["message"]}
    ]

    code, out, _ = run(capsys, "status", "--library", library, "--json")
    status = json.loads(out)
    assert code == 0
    assert {"tracks", "segments", "errors", "model", "index_type", "generation"} <= set(status)
    assert (status["tracks"], status["segments"], status["errors"]) == (3, 3, 1)
    assert status["model"] == str(tiny_model_dir) and status["index_type"] == "flat"
    assert status["generation"] == 1 and status["consistent"] is True
    assert status["sizes_bytes"]["tracks_index"] > 0

    # The library remembers its model: a re-run needs no --model, and skips everything.
    code, out, _ = run(capsys, "index", music, "--library", library, "--json")
    again = json.loads(out)
    assert code == 0 and (again["indexed"], again["skipped"], again["failed"]) == (0, 4, 0)


def test_text_output_lists_every_failure(capsys, music, tmp_path, tiny_model_dir):
    library = tmp_path / "library"
    code, out, err = run(capsys, "index", music, "--library", library, "--model", tiny_model_dir)
    assert code == 0
    assert "indexed 3" in out and "failed 1" in out
    assert f"failed [read] {music / 'bad.ogg'}:" in out
    assert "indexing" in err  # the progress bar goes to stderr
    code, out, _ = run(capsys, "status", "--library", library)
    assert "tracks:    3" in out and "errors:    1" in out and "bad.ogg" in out and "consistent: yes" in out


def test_nothing_indexable_exits_1(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "x.mp3").write_text("no")
    code, out, _ = run(capsys, "index", tmp_path / "music", "--library", tmp_path / "lib", "--model",
                       tiny_model_dir, "--json")
    assert code == 1 and json.loads(out)["failed"] == 1


def test_without_a_model_the_message_says_what_to_pass(capsys, music, tmp_path, monkeypatch):
    monkeypatch.delenv("MUQSEARCH_MODEL", raising=False)
    code, _, err = run(capsys, "index", music, "--library", tmp_path / "lib")
    assert code == 2 and "--model" in err


def test_status_of_a_missing_library(capsys, tmp_path):
    code, _, err = run(capsys, "status", "--library", tmp_path / "nothing")
    assert code == 2 and "muqsearch index" in err


def test_optimize_switches_to_the_ann_index_past_the_threshold(capsys, music, tmp_path, tiny_model_dir, monkeypatch):
    library = tmp_path / "library"
    run(capsys, "index", music, "--library", library, "--model", tiny_model_dir)
    monkeypatch.setattr(ann, "EXACT_LIMIT", 2)
    code, out, _ = run(capsys, "status", "--library", library, "--json")
    assert "--optimize" in json.loads(out)["advice"]
    code, out, _ = run(capsys, "index", music, "--library", library, "--optimize", "--json")
    assert code == 0 and json.loads(out)["generation"] == 2
    code, out, _ = run(capsys, "status", "--library", library, "--json")
    status = json.loads(out)
    large = ann.index_kind_for(ann.EXACT_LIMIT + 1)  # the approximate kind the indexer picks past the limit
    assert large != "flat"
    assert (status["index_type"], status["segment_index_type"], status["advice"]) == (large, large, None)
    assert status["consistent"]


def test_default_library_dir_follows_env_and_xdg(monkeypatch, tmp_path):
    from indexer.layout import default_library_dir

    monkeypatch.setenv("MUQSEARCH_LIBRARY", str(tmp_path / "env-lib"))
    assert default_library_dir() == tmp_path / "env-lib"
    monkeypatch.delenv("MUQSEARCH_LIBRARY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_library_dir() == tmp_path / "xdg" / "muqsearch" / "library"


def test_a_damaged_index_is_detected_by_status_and_rebuilt_by_index(capsys, music, tmp_path, tiny_model_dir):
    library = tmp_path / "library"
    run(capsys, "index", music, "--library", library, "--model", tiny_model_dir)
    (library / "vectors" / "gen-00000001" / "tracks.faiss").write_bytes(b"\0" * 100)
    code, out, _ = run(capsys, "status", "--library", library, "--json")
    assert code == 0 and json.loads(out)["consistent"] is False
    code, out, _ = run(capsys, "index", music, "--library", library, "--json")
    assert code == 0 and json.loads(out)["generation"] == 2
    code, out, _ = run(capsys, "status", "--library", library, "--json")
    status = json.loads(out)
    assert status["consistent"] is True and status["tracks"] == 3


def test_a_run_with_nothing_to_do_never_loads_the_model(capsys, music, tmp_path, tiny_model_dir, monkeypatch):
    library = tmp_path / "library"
    run(capsys, "index", music, "--library", library, "--model", tiny_model_dir)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("muq_model.MuQMuLan.from_pretrained", no_loading)
    code, out, _ = run(capsys, "index", music, "--library", library, "--json")
    assert code == 0 and json.loads(out)["skipped"] == 4
    write_audio(music / "new.wav", 2.0, 22050, 1, seed=9)
    code, _, err = run(capsys, "index", music, "--library", library, "--json")
    assert code == 2 and "cannot load model" in err and "the model was loaded" in err


# --------------------------------------------------------------------------------------------------
# Issue 17: the first hour of a new user


@pytest.mark.parametrize("model", [None, "missing-model-dir"])
def test_a_failed_index_of_a_new_library_leaves_nothing_behind(capsys, music, tmp_path, monkeypatch, model):
    """It left an empty catalog.sqlite, after which `status` showed an empty library."""
    monkeypatch.delenv("MUQSEARCH_MODEL", raising=False)
    library = tmp_path / "new" / "library"
    code, _, err = run(capsys, "index", music, "--library", library,
                       *(["--model", tmp_path / model] if model else []))
    assert code == 2 and ("--model" in err if model is None else "cannot load model" in err), err
    assert not library.exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")  # a folder that existed keeps what it held
    code, _, _ = run(capsys, "index", music, "--library", tmp_path / "kept", "--model", tmp_path / "missing")
    assert code == 2 and sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]


def test_index_help_gives_the_thresholds_the_code_uses(capsys, monkeypatch):
    from indexer.commands import auto_index_kinds, describe_index_kinds

    assert auto_index_kinds() == [("flat", 1, ann.EXACT_LIMIT),
                                  (ann.index_kind_for(ann.EXACT_LIMIT), ann.EXACT_LIMIT, ann.IN_MEMORY_LIMIT),
                                  (ann.index_kind_for(ann.IN_MEMORY_LIMIT), ann.IN_MEMORY_LIMIT, None)]
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    assert " ".join(describe_index_kinds().split()) in " ".join(capsys.readouterr().out.split())
    monkeypatch.setattr(ann, "index_kind_for",  # a third kind appears in the help without editing it
                        lambda n, exact_limit=None: "flat" if n < 50_000 else "pq-refine" if n < 10**7 else "ivf")
    assert describe_index_kinds() == "exact (flat) below 50,000 vectors, pq-refine from 50,000 to 9,999,999, ivf from 10,000,000"


@pytest.fixture
def demo_domain_model(tiny_model_dir, tmp_path):
    """The tiny model declaring, as the demo model does, that it only knows the demo world."""
    import shutil

    from app.choose import demo_world

    model = tmp_path / "domain-model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["domain"] = json.loads((demo_world().model_dir / "config.json").read_text())["domain"]
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_a_model_with_a_declared_domain_is_flagged_on_other_music(capsys, music, tmp_path, demo_domain_model):
    library = tmp_path / "library"
    code, out, err = run(capsys, "index", music, "--library", library, "--model", demo_domain_model)
    assert code == 0
    assert "only knows the MuQ Search demo world, but 3 of its 3 tracks are other music" in err
    assert "--model OpenMuQ/MuQ-MuLan-large" in err
    code, out, _ = run(capsys, "index", music, "--library", library, "--json")
    assert json.loads(out)["domain"]["outside"] == 3
    code, out, _ = run(capsys, "status", "--library", library)
    assert code == 0 and "warning:   this library's model only knows the MuQ Search demo world" in out
    code, out, _ = run(capsys, "status", "--library", library, "--json")
    assert json.loads(out)["domain"]["outside"] == 3


def test_the_demo_worlds_own_files_are_not_flagged_wherever_they_are(capsys, tmp_path, demo_domain_model,
                                                                       tiny_model_dir):
    import shutil

    from app.choose import demo_world

    folder = tmp_path / "copied-demo"
    folder.mkdir()
    for path in sorted(demo_world().music_dir.glob("*.opus"))[:3]:
        shutil.copy(path, folder)  # by content: a copy of a demo file is a demo file
    code, out, err = run(capsys, "index", folder, "--library", tmp_path / "library", "--model", demo_domain_model,
                         "--json")
    assert code == 0 and json.loads(out)["domain"] == {
        "domain": "MuQ Search demo world", "tracks": 3, "outside": 0, "examples": [], "warning": None}
    assert "warning" not in err
    write_audio(folder / "mine.wav", 3.0, seed=5)  # one other file: flagged
    code, out, err = run(capsys, "index", folder, "--library", tmp_path / "library", "--json")
    assert json.loads(out)["domain"]["outside"] == 1 and "mine.wav" in err
    code, out, err = run(capsys, "index", folder, "--library", tmp_path / "plain", "--model", tiny_model_dir,
                         "--json")  # a model that declares no domain: nothing to flag
    assert json.loads(out)["domain"] is None and "warning" not in err
