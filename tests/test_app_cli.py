"""`muqsearch search | similar | describe | texts | demo` end to end: the tiny model saved to disk, the app
test tracks indexed by `muqsearch index`, then the app commands with --json and exports."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from app.cli import main


@pytest.fixture(scope="module")
def cli_library(app_library, tiny_model, tmp_path_factory):
    """(global options, music paths) for a library indexed through the CLI with a saved model."""
    base = tmp_path_factory.mktemp("cli")
    music = base / "music"
    music.mkdir()
    paths = [shutil.copy(p, music) for p in app_library.paths]
    tiny_model.save_pretrained(base / "model")
    options = ["--library", str(base / "library")]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["index", str(music), *options, "--model", str(base / "model"), "--workers", "1"])
    assert code == 0, err.getvalue()
    return options, [str(p) for p in paths]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_json_and_playlist(cli_library, capsys, tmp_path):
    options, paths = cli_library
    playlist = tmp_path / "out.m3u"
    code, out, err = run(capsys, "search", "slow sad piano", "-k", "3", "--moments", "--json", "--m3u", str(playlist),
                         *options)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["verdict"] in ("strong", "weak", "none")
    results = answer["results"]
    assert len(results) == 3
    assert {"track_id", "path", "title", "artist", "score", "confidence", "tags", "start", "end"} <= results[0].keys()
    assert all(0.0 <= r["confidence"] <= 1.0 for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    lines = playlist.read_text().splitlines()
    assert lines[0] == "#EXTM3U" and [x for x in lines if not x.startswith("#")] == [r["path"] for r in results]
    assert any(x.startswith("#EXTVLCOPT:start-time=") for x in lines)


def test_search_filters_and_text_output(cli_library, capsys):
    options, _ = cli_library
    code, out, _ = run(capsys, "search", "piano", "--filter", "artist=cleo", "--filter", "year=2000..", "--json", *options)
    assert code == 0 and {r["artist"] for r in json.loads(out)["results"]} == {"Cleo"}
    code, out, _ = run(capsys, "search", "piano", "-k", "2", *options)
    assert code == 0 and "  1." in out and "  2." in out and "Verdict:" in out
    code, _, err = run(capsys, "search", "piano", "--filter", "mood=sad", *options)
    assert code == 2 and err.startswith("muqsearch search: filter 'mood=sad': unknown key")


def test_similar_and_describe(cli_library, capsys, tmp_path):
    options, paths = cli_library
    code, out, err = run(capsys, "similar", "2", "-k", "3", "--json", *options)
    assert code == 0, err
    assert 2 not in [r["track_id"] for r in json.loads(out)]
    export = tmp_path / "similar.csv"
    code, out, _ = run(capsys, "similar", paths[3], "--export", str(export), *options)
    assert code == 0 and export.read_text().startswith("rank,track_id,score,title")
    code, out, err = run(capsys, "describe", paths[0], "-k", "4", "--json", *options)
    assert code == 0, err
    described = json.loads(out)
    assert len(described["tags"]) == 4 and described["similar"]
    code, _, err = run(capsys, "describe", str(tmp_path / "missing.wav"), *options)
    assert code == 2 and "missing.wav" in err


def test_texts_add_list_remove(cli_library, capsys, tmp_path):
    options, _ = cli_library
    briefs = tmp_path / "briefs.json"
    briefs.write_text(json.dumps(["music for a chase scene", {"text": "a lullaby", "category": "scene"}]))
    code, out, err = run(capsys, *options, "texts", "add", str(briefs))
    assert code == 0 and "added 2 texts" in out, err
    code, out, _ = run(capsys, *options, "--json", "texts", "list")
    assert [c["name"] for c in json.loads(out)] == ["briefs"]
    code, out, _ = run(capsys, "describe", "1", "--json", *options)
    assert {d["text"] for d in json.loads(out)["descriptions"]} == {"music for a chase scene", "a lullaby"}
    code, out, _ = run(capsys, *options, "texts", "remove", "briefs")
    assert code == 0
    code, _, err = run(capsys, *options, "texts", "remove", "briefs")
    assert code == 2 and "no text collection" in err


def test_a_library_without_tracks_says_how_to_index(capsys, tmp_path, cli_library):
    model_dir = cli_library[0][1].replace("library", "model")
    code, _, err = run(capsys, "search", "piano", "--library", str(tmp_path / "empty"), "--model", model_dir)
    assert code == 2 and "muqsearch index" in err


# --------------------------------------------------------------------------------------------------
# Issue 17: the first hour of a new user


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a command loads the model: input mistakes must be answered before that."""
    from muq_model import MuQMuLan

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(MuQMuLan, "from_pretrained", refuse)


@pytest.mark.parametrize("argv, message", [
    (["search", "   "], "Type a description"),
    (["search", "x" * 501], "limit is 500"),
    (["search", "piano", "--filter", "colour=red"], "unknown key 'colour'"),
    (["search", "piano", "-k", "0"], "-k must be between 1 and"),
    (["similar", "no-such-file.wav"], "no-such-file.wav does not exist"),
    (["describe", "no-such-file.wav"], "no-such-file.wav does not exist"),
    (["texts", "add", "no-such-briefs.txt"], "no-such-briefs.txt"),
])
def test_input_mistakes_are_refused_before_the_model_loads(cli_library, capsys, no_model_load, argv, message):
    options, _ = cli_library
    code, out, err = run(capsys, *options, *argv)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert out == ""


def test_no_match_exits_1_and_names_the_filter_that_excludes_everything(cli_library, capsys):
    options, _ = cli_library
    code, out, err = run(capsys, "search", "piano", "--filter", "artist=nobody", *options)
    assert code == 1 and out == ""
    assert "no track has artist=nobody" in err
    code, out, err = run(capsys, "search", "piano", "--filter", "artist=cleo", "--filter", "album=first", "--json",
                         *options)  # each matches some tracks, together none
    assert code == 1 and json.loads(out) == {"verdict": "none", "searched_for": "piano", "avoided": [], "corrections": [], "results": []}
    assert "artist=cleo, album=first together" in err
    code, out, err = run(capsys, "search", "piano", "--filter", "year=1900..1950", *options)
    assert code == 1 and "no track is from 1900..1950" in err


def test_an_unknown_tag_lists_the_known_tags(cli_library, capsys):
    options, _ = cli_library
    code, _, err = run(capsys, "search", "piano", "--filter", "tag=kazoo", *options)
    assert code == 1 and "no track has the tag 'kazoo'" in err
    assert "Classical" in err and "Electronic" in err  # the files' genres are tags of this library


def test_status_without_arguments_falls_back_to_the_demo_library(capsys, monkeypatch, tmp_path, cli_library):
    """`status` used to fail ("no library at ...") where every other command falls back to the demo."""
    from app import choose

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MUQSEARCH_LIBRARY", raising=False)
    monkeypatch.delenv("MUQSEARCH_MODEL", raising=False)
    assert choose.demo_world() is not None
    code, _, err = run(capsys, "status")
    assert code == 2 and "the demo library is not indexed yet: `muqsearch serve` or `muqsearch demo`" in err
    shutil.copytree(cli_library[0][1], choose.demo_library_dir())  # as if `muqsearch serve` had indexed it
    code, out, err = run(capsys, "--json", "status")
    assert code == 0, err
    assert json.loads(out)["library"] == str(choose.demo_library_dir())
    assert choose.resolve(None, None).library_dir == choose.demo_library_dir()  # the library search would use


# --------------------------------------------------------------------------------------------------
# Issue 18: --precision as a user option


@pytest.fixture(scope="module")
def int8_library(cli_library, tmp_path_factory):
    """(library options, model dir, music dir): cli_library's music indexed again with --precision int8."""
    fp32_options, paths = cli_library
    model_dir = fp32_options[1].replace("library", "model")
    options = ["--library", str(tmp_path_factory.mktemp("int8") / "library")]
    music = str(Path(paths[0]).parent)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["index", music, *options, "--model", model_dir, "--workers", "1", "--precision", "int8"])
    assert code == 0, err.getvalue()
    return options, model_dir, music


def test_the_precision_flag_reaches_the_model_and_the_library_keeps_it(cli_library, int8_library, capsys):
    fp32_options, paths = cli_library
    int8_options, _, _ = int8_library
    code, out, err = run(capsys, "--json", "status", *int8_options)
    assert code == 0, err
    assert json.loads(out)["fingerprint"]["precision"] == "int8"
    # searching needs no flag: the library's precision is the default; int8 vectors are close to fp32's, not equal
    scores = {}
    for options in (fp32_options, int8_options):
        code, out, err = run(capsys, "search", "slow sad piano", "-k", str(len(paths)), "--json", *options)
        assert code == 0, err
        scores[options[1]] = {Path(r["path"]).name: r["score"] for r in json.loads(out)["results"]}
    fp32, int8 = scores.values()
    assert fp32.keys() == int8.keys() and len(fp32) == len(paths)
    differences = [abs(fp32[name] - int8[name]) for name in fp32]
    assert 0 < max(differences) < 0.05


def test_a_library_never_mixes_precisions(int8_library, capsys, tmp_path):
    options, model_dir, music = int8_library
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(next(Path(music).iterdir()), extra / "copy.wav")  # a new file: there would be vectors to add
    code, _, err = run(capsys, "index", str(extra), *options, "--model", model_dir, "--precision", "fp32")
    assert code == 2
    assert "made in precision int8" in err and "computes in precision fp32" in err and "--precision int8" in err
    code, out, _ = run(capsys, "--json", "status", *options)
    assert str(extra) not in out  # nothing was added
    code, _, err = run(capsys, "search", "piano", *options, "--precision", "fp32")
    assert code == 2 and "made in precision int8" in err and "computes in precision fp32" in err


@pytest.mark.parametrize("argv, message", [
    (["search", "piano", "--device", "cpu", "--precision", "tf32"], "precision tf32 needs a CUDA device"),
    (["train", "pairs.jsonl", "--out", "out", "--device", "cpu", "--precision", "int8"],
     "precision int8 is for inference only"),
])
def test_a_precision_that_cannot_run_is_a_user_error(cli_library, capsys, argv, message):
    options, _ = cli_library
    code, out, err = run(capsys, *options, *argv)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_an_unknown_precision_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["search", "piano", "--precision", "fp16"])
    assert exit_.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
