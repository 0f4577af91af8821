"""The catalog in PostgreSQL: the indexer CLI's --catalog, one schema on both backends, and two indexers writing
one catalog at once. (tests/test_indexer_pipeline.py runs the pipeline's tests on both backends.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sqlalchemy import func, inspect, select

from app.cli import main
from benchmarks.audio_files import write_audio
from indexer.audio import load_audio
from indexer.catalog import CATALOG_ENV, Catalog, CatalogError, IndexError_, IndexRun, Meta, Track
from indexer.pipeline import HOLD_ENV
from indexer.vectors import Library, index_ids


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_and_status_with_a_postgresql_catalog(capsys, tmp_path, tiny_model_dir, postgres_catalog):
    music = tmp_path / "music"
    for n in range(3):
        write_audio(music / f"song{n}.flac", 3.0 + n, 44100, 2, seed=n)
    (music / "bad.ogg").write_bytes(b"OggS" + b"\0" * 200)
    library = tmp_path / "library"
    code, out, err = run(capsys, "index", music, "--library", library, "--catalog", postgres_catalog,
                         "--model", tiny_model_dir, "--json")
    assert code == 0, err
    assert (json.loads(out)["indexed"], json.loads(out)["failed"]) == (3, 1)
    assert not (library / "catalog.sqlite").exists()  # the rows went to PostgreSQL
    assert os.environ.get(CATALOG_ENV) is None  # the option lasts for its command only

    code, out, _ = run(capsys, "--catalog", postgres_catalog, "status", "--library", library, "--json")
    status = json.loads(out)
    assert code == 0 and (status["tracks"], status["segments"], status["errors"]) == (3, 3, 1)
    assert status["consistent"] is True

    # The FAISS files are derived: a machine with an empty library folder rebuilds them from the catalog.
    elsewhere = tmp_path / "elsewhere"
    code, out, err = run(capsys, "index", music, "--library", elsewhere, "--catalog", postgres_catalog, "--json")
    assert code == 0, err
    assert (json.loads(out)["indexed"], json.loads(out)["skipped"]) == (0, 4)
    with Library.open(elsewhere, catalog_url=postgres_catalog) as lib:
        assert lib.check().ok and len(index_ids(lib.load().tracks)) == 3

    # The environment variable names the catalog as well as the option does.
    os.environ[CATALOG_ENV] = postgres_catalog
    try:
        code, out, err = run(capsys, "status", "--library", elsewhere, "--json")
    finally:
        del os.environ[CATALOG_ENV]
    assert code == 0 and json.loads(out)["tracks"] == 3, err


def test_search_status_and_describe_answer_from_a_postgresql_catalog_as_from_sqlite(capsys, monkeypatch, tmp_path,
                                                                                  tiny_model_dir, postgres_catalog):
    """The same files indexed into a SQLite library and into PostgreSQL (FAISS files in the library folder)
    give the same answers through the CLI; without --model the commands read the model from PostgreSQL."""
    music = tmp_path / "music"
    for n in range(5):
        write_audio(music / f"song{n}.wav", 4.0 + 5 * n, 22050, 1, seed=n)
    (music / "bad.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    questions = {"search": ["search", "slow sad piano", "-k", "3", "--moments"],
                 "describe": ["describe", music / "song2.wav", "-k", "5", "--similar", "2"],
                 "status": ["status"]}
    answers = {}
    for backend, catalog in (("sqlite", []), ("postgresql", ["--catalog", postgres_catalog])):
        library = tmp_path / backend
        code, _, err = run(capsys, "index", music, "--library", library, "--model", tiny_model_dir, "--workers", "1",
                           *catalog)
        assert code == 0, err
        for name, argv in questions.items():
            code, out, err = run(capsys, *argv, "--library", library, "--json", *catalog)
            assert code == 0, err
            answers[backend, name] = json.loads(out)
    assert not (tmp_path / "postgresql" / "catalog.sqlite").exists()  # its catalog is in PostgreSQL only
    assert len(list((tmp_path / "postgresql" / "vectors").glob("gen-*"))) >= 1  # its FAISS files are here

    def tracks(results):  # track ids are each catalog's own; paths, order and scores must agree
        return [({k: v for k, v in r.items() if k not in ("track_id", "score", "moment_score")},
                 r["score"], r.get("moment_score", 0.0)) for r in results]

    def same(a, b):
        assert [x[0] for x in a] == [x[0] for x in b]
        np.testing.assert_allclose([x[1:] for x in a], [x[1:] for x in b], atol=1e-5)

    search = answers["sqlite", "search"], answers["postgresql", "search"]
    assert len(search[0]["results"]) == 3 and all("start" in r for r in search[0]["results"])
    same(tracks(search[0]["results"]), tracks(search[1]["results"]))
    assert search[0]["verdict"] == search[1]["verdict"]  # the null bank is stored in either catalog alike
    assert [r["confidence"] for r in search[0]["results"]] == [r["confidence"] for r in search[1]["results"]]
    described = answers["sqlite", "describe"], answers["postgresql", "describe"]
    assert len(described[0]["tags"]) == 5 and len(described[0]["similar"]) == 2
    assert [t["text"] for t in described[0]["tags"]] == [t["text"] for t in described[1]["tags"]]
    np.testing.assert_allclose([t["score"] for t in described[0]["tags"]], [t["score"] for t in described[1]["tags"]],
                               atol=1e-5)
    same(tracks(described[0]["similar"]), tracks(described[1]["similar"]))
    facts = ("tracks", "segments", "errors", "error_list", "model", "fingerprint", "index_type", "consistent")
    status = answers["sqlite", "status"], answers["postgresql", "status"]
    assert {k: status[0][k] for k in facts} == {k: status[1][k] for k in facts}
    assert (status[1]["tracks"], status[1]["errors"], status[1]["consistent"]) == (5, 1, True)

    # Without --library the default library is the one in the catalog (not the demo), even with no folder yet.
    monkeypatch.delenv("MUQSEARCH_LIBRARY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    code, out, err = run(capsys, "status", "--catalog", postgres_catalog, "--json")
    assert code == 0, err
    assert (json.loads(out)["tracks"], json.loads(out)["consistent"]) == (5, False)  # no vector files here yet


def test_an_unreachable_catalog_server_is_named_and_the_command_exits_2(capsys, tmp_path, tiny_model_dir):
    url = f"postgresql://muq:secret@/nowhere?host={tmp_path}&port=1"  # no server has a socket there
    (tmp_path / "music").mkdir()
    for argv in (["search", "piano"], ["similar", "1"], ["describe", "1"], ["status"],
                 ["index", tmp_path / "music"]):
        code, _, err = run(capsys, *argv, "--library", tmp_path / "library", "--catalog", url, "--model",
                           tiny_model_dir)
        assert code == 2, (argv, err)
        assert f"cannot open the catalog postgresql://muq:***@/nowhere?host={tmp_path}&port=1" in err, (argv, err)
        assert "secret" not in err and "Traceback" not in err


def test_one_schema_on_both_backends(tmp_path, postgres_catalog):
    with Catalog(tmp_path / "lib") as sqlite, Catalog(postgres_catalog) as postgresql:
        def columns(catalog):
            inspector = inspect(catalog.engine)
            return {t: sorted(c["name"] for c in inspector.get_columns(t)) for t in inspector.get_table_names()}

        assert columns(sqlite) == columns(postgresql)
        for catalog in (sqlite, postgresql):
            assert catalog.get_meta("schema_version") == "1"
            with catalog.session.begin() as s:  # a catalog from a newer muqsearch is refused, not misread
                s.get(Meta, "schema_version").value = "99"
    with pytest.raises(CatalogError, match="newer"):
        Catalog(postgres_catalog)
    with pytest.raises(CatalogError, match="newer"):
        Catalog(tmp_path / "lib")


def test_64_bit_file_facts(postgres_catalog):
    """Sizes and nanosecond mtimes overflow 32 bits: BIGINT columns on PostgreSQL."""
    with Catalog(postgres_catalog) as catalog, catalog.session.begin() as s:
        s.add(IndexError_(path="/x.flac", stage="read", message="m", size=5 * 2**32, mtime_ns=1_780_000_000 * 10**9))
    with Catalog(postgres_catalog) as catalog, catalog.session() as s:
        assert s.scalar(select(IndexError_.mtime_ns)) == 1_780_000_000 * 10**9


def wait_for(path, process, what):
    deadline = time.monotonic() + 300
    while not path.exists():
        assert process.poll() is None, f"{what} ended before it was held: {process.communicate()[1]}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return json.loads(path.read_text())


@pytest.mark.timeout(600)
def test_two_indexers_on_one_catalog_store_every_track_once(tmp_path, tiny_model, tiny_model_dir, postgres_catalog):
    """Two machines (two library folders) index the same music into one catalog at the same time."""
    music = tmp_path / "music"
    paths = {str(write_audio(music / f"{n:02d}.wav", 2.0 + n % 4, 16000, 1, seed=n)) for n in range(12)}
    (music / "bad.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    env = dict(os.environ, MUQSEARCH_THREADS="1", OMP_NUM_THREADS="1")

    def start(name):
        command = [sys.executable, "-m", "app", "index", str(music), "--library", str(tmp_path / name),
                   "--catalog", postgres_catalog, "--model", str(tiny_model_dir), "--workers", "1",
                   "--commit-every", "2", "--json"]
        return subprocess.Popen(command, env=dict(env, **{HOLD_ENV: str(tmp_path / f"{name}.held")}),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("a")
    held = wait_for(tmp_path / "a.held", first, "first indexer")  # it has planned every file, stored a few
    second = start("b")  # plans while the first holds the rest in flight: both will embed the same files
    wait_for(tmp_path / "b.held", second, "second indexer")
    with Catalog(postgres_catalog) as catalog, catalog.session() as s:  # the second saw the first alive
        assert s.scalars(select(IndexRun.status)).all() == ["running", "running"]
    (tmp_path / "a.held").unlink()  # both go on at once
    (tmp_path / "b.held").unlink()
    summaries = []
    for process in (first, second):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        summaries.append(json.loads(out))
    # The second planned every file the first had not stored yet: those were embedded twice, stored once.
    assert [s["indexed"] for s in summaries] == [len(paths), len(paths) - held["tracks"]]

    with Library.open(tmp_path / "a", catalog_url=postgres_catalog) as library:
        with library.catalog.session() as s:
            rows = s.execute(select(Track.path, func.count()).group_by(Track.path)).all()
            assert {path: count for path, count in rows} == dict.fromkeys(paths, 1)
            assert s.scalars(select(IndexError_.path)).all() == [str(music / "bad.wav")]
            assert s.scalars(select(IndexRun.status)).all() == ["done", "done"]
            for track in s.scalars(select(Track)):
                expected, clips = tiny_model.embed_audio([load_audio(track.path)], return_clips=True)
                assert len(track.segments) == track.n_segments == len(clips[0].embeddings)
                np.testing.assert_allclose(track.vector(), expected[0].numpy(), atol=1e-5)
        library.sync()
        assert library.check().ok


@pytest.mark.timeout(600)
def test_a_killed_run_on_postgresql_is_resumed_and_marked_interrupted(tmp_path, tiny_model_dir, postgres_catalog):
    music = tmp_path / "music"
    paths = {str(write_audio(music / f"{n:02d}.wav", 2.0 + n % 3, 16000, 1, seed=n)) for n in range(6)}
    command = [sys.executable, "-m", "app", "index", str(music), "--library", str(tmp_path / "library"),
               "--catalog", postgres_catalog, "--model", str(tiny_model_dir), "--workers", "1",
               "--commit-every", "2", "--json"]
    env = dict(os.environ, MUQSEARCH_THREADS="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=dict(env, **{HOLD_ENV: str(tmp_path / "held")}), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    held = wait_for(tmp_path / "held", process, "indexer")
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["indexed"], summary["skipped"]) == (len(paths) - held["tracks"], held["tracks"])
    with Catalog(postgres_catalog) as catalog, catalog.session() as s:
        assert sorted(s.scalars(select(Track.path))) == sorted(paths)
        # the killed run's lock died with its connection: the next run saw it was gone
        assert s.scalars(select(IndexRun.status).order_by(IndexRun.id)).all() == ["interrupted", "done"]
