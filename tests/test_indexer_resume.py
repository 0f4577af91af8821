"""`muqsearch index` killed with SIGKILL or Ctrl-C mid-run, then run again: exactly the right rows and vectors.

The indexer is held mid-run by ``MUQSEARCH_INDEX_HOLD``: after its first committed tracks it writes the
hold file and waits until it is deleted, so the kill always lands mid-run, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sqlalchemy import select

from benchmarks.audio_files import write_audio
from indexer.audio import load_audio
from indexer.catalog import IndexRun, Track
from indexer.pipeline import HOLD_ENV
from indexer.vectors import Library, index_ids

N_FILES = 8


def index_command(music, library, model_dir):
    return [sys.executable, "-m", "app", "index", str(music), "--library", str(library), "--model", str(model_dir),
            "--workers", "1", "--commit-every", "2", "--json"]


def wait_for_hold(process, hold, log) -> dict:
    """The indexer's "started" signal: the hold file, written once it has committed tracks."""
    deadline = time.monotonic() + 300
    while not hold.exists():
        assert process.poll() is None, f"indexer ended before it was held:\n{log()}"
        assert time.monotonic() < deadline, "no commit within 300 s"
        time.sleep(0.02)
    return json.loads(hold.read_text())


def session_processes(sid: int) -> list[int]:
    """Pids of live processes in session ``sid`` (the killed indexer's decoders, if any survived)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: session id
                pids.append(int(entry))
    return pids


def assert_rows_match_the_model(library, paths, model):
    """Every catalog track is complete (all segments) and holds the vectors the model gives for its file."""
    with library.catalog.session() as s:
        tracks = s.scalars(select(Track)).all()
        assert len({t.path for t in tracks}) == len(tracks), "duplicate paths"
        for track in tracks:
            assert track.path in paths
            expected_tracks, clips = model.embed_audio([load_audio(track.path)], return_clips=True)
            assert len(track.segments) == track.n_segments == len(clips[0].embeddings)
            np.testing.assert_allclose(track.vector(), expected_tracks[0].numpy(), atol=1e-5)
            stored = np.stack([seg.vector() for seg in track.segments])
            np.testing.assert_allclose(stored, clips[0].embeddings.numpy(), atol=1e-5)
        return tracks


@pytest.mark.timeout(600)
def test_sigkill_mid_run_then_resume(tmp_path, tiny_model, tiny_model_dir):
    music, library_dir = tmp_path / "music", tmp_path / "library"
    paths = {str(write_audio(music / f"{n:02d}.wav", 2.0 + (n % 6), 22050, 1, seed=n)) for n in range(N_FILES)}
    hold = tmp_path / "started.json"
    env = dict(os.environ, MUQSEARCH_THREADS="1", OMP_NUM_THREADS="1")
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(index_command(music, library_dir, tiny_model_dir), env=dict(env, **{HOLD_ENV: str(hold)}),
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = wait_for_hold(process, hold, (tmp_path / "first.log").read_text)
        os.kill(process.pid, signal.SIGKILL)  # the main process only, like `kill -9 PID`
        process.wait()
        # Its decoder processes notice and exit by themselves.
        deadline = time.monotonic() + 20
        while session_processes(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_processes(process.pid) == [], "decoder processes outlived the killed indexer"
    finally:
        if session_processes(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()

    with Library.open(library_dir) as library:
        kept = assert_rows_match_the_model(library, paths, tiny_model)
        assert len(kept) == started["tracks"] >= 1, "the committed tracks are exactly those the signal announced"
        assert len(kept) < N_FILES

    resumed = subprocess.run(index_command(music, library_dir, tiny_model_dir), env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["indexed"], summary["skipped"], summary["failed"]) == (N_FILES - len(kept), len(kept), 0)

    with Library.open(library_dir) as library:
        tracks = assert_rows_match_the_model(library, paths, tiny_model)
        assert {t.path for t in tracks} == paths
        kept_ids = {t.id for t in kept}
        assert kept_ids <= {t.id for t in tracks}  # committed rows were kept, not redone
        assert library.check().ok
        indexes = library.load()
        assert sorted(index_ids(indexes.tracks)) == sorted(t.id for t in tracks)
        assert indexes.segments.ntotal == sum(t.n_segments for t in tracks)
        with library.catalog.session() as s:
            assert [r.status for r in s.scalars(select(IndexRun).order_by(IndexRun.id))] == ["interrupted", "done"]


@pytest.mark.timeout(600)
def test_ctrl_c_stops_cleanly_and_blames_no_file(tmp_path, tiny_model_dir):
    music, library_dir = tmp_path / "music", tmp_path / "library"
    files = N_FILES
    for n in range(files):
        write_audio(music / f"{n:02d}.wav", 2.0 + (n % 6), 22050, 1, seed=n)
    hold = tmp_path / "started.json"
    env = dict(os.environ, MUQSEARCH_THREADS="1", OMP_NUM_THREADS="1")
    # A terminal's Ctrl-C reaches a process whose SIGINT is at its default; a runner started in the background
    # (`cmd &` in a script) hands down an ignored SIGINT, so restore the default as a terminal would have it.
    log = tmp_path / "first.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(index_command(music, library_dir, tiny_model_dir),
                                   env=dict(env, **{HOLD_ENV: str(hold)}), stdout=subprocess.PIPE, stderr=stderr,
                                   text=True, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        started = wait_for_hold(process, hold, log.read_text)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        process.communicate(timeout=120)
    stderr = log.read_text()
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    with Library.open(library_dir) as library:
        assert library.catalog.counts()["tracks"] == started["tracks"] < files
        assert library.catalog.errors() == []  # no file blamed for the interruption
        assert library.check().ok  # the finished tracks are already searchable
        with library.catalog.session() as s:
            assert s.scalars(select(IndexRun.status)).all() == ["interrupted"]
    resumed = subprocess.run(index_command(music, library_dir, tiny_model_dir), env=env, capture_output=True,
                             text=True, timeout=300)
    summary = json.loads(resumed.stdout)
    assert (summary["indexed"], summary["skipped"], summary["failed"]) == (files - started["tracks"], started["tracks"], 0)
    with Library.open(library_dir) as library:
        assert library.catalog.counts()["tracks"] == files and library.check().ok
