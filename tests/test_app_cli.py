"""`muqsearch search | similar | describe | texts | demo` end to end: the tiny model saved to disk, the app
test tracks indexed by `muqsearch index`, then the app commands with --json and exports."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

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
    results = json.loads(out)
    assert len(results) == 3
    assert {"track_id", "path", "title", "artist", "score", "tags", "start", "end"} <= results[0].keys()
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    lines = playlist.read_text().splitlines()
    assert lines[0] == "#EXTM3U" and [x for x in lines if not x.startswith("#")] == [r["path"] for r in results]
    assert any(x.startswith("#EXTVLCOPT:start-time=") for x in lines)


def test_search_filters_and_text_output(cli_library, capsys):
    options, _ = cli_library
    code, out, _ = run(capsys, "search", "piano", "--filter", "artist=cleo", "--filter", "year=2000..", "--json", *options)
    assert code == 0 and {r["artist"] for r in json.loads(out)} == {"Cleo"}
    code, out, _ = run(capsys, "search", "piano", "-k", "2", *options)
    assert code == 0 and "  1." in out and "  2." in out
    code, _, err = run(capsys, "search", "piano", "--filter", "mood=sad", *options)
    assert code == 1 and err.startswith("muqsearch search: filter 'mood=sad': unknown key")


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
    assert code == 1 and "missing.wav" in err


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
    assert code == 1 and "no text collection" in err


def test_a_library_without_tracks_says_how_to_index(capsys, tmp_path, cli_library):
    model_dir = cli_library[0][1].replace("library", "model")
    code, _, err = run(capsys, "search", "piano", "--library", str(tmp_path / "empty"), "--model", model_dir)
    assert code == 1 and "muqsearch index" in err
