"""`muqsearch index --engine ray` on a real Ray cluster on this machine: a head node (which runs no work)
and two worker nodes, each started with `ray start` in a session of its own so a test can kill one whole.

The same catalog as the local engine; a worker node killed mid-run and a driver killed mid-run lose
and duplicate nothing. Runs are held mid-way by ``MUQSEARCH_INDEX_HOLD`` (the indexer's "started"
signal); a held driver takes no more results, so the cluster admits no more files (the engine's
admission window) and every kill lands mid-run whatever the machine's speed. One cluster serves the
module; a test that kills a node gets it back before the next test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

pytest.importorskip("ray", reason="the Ray engine is optional: pip install -r requirements-ray.txt")

from app.cli import main  # noqa: E402
from benchmarks.audio_files import write_audio  # noqa: E402
from indexer.audio import load_audio  # noqa: E402
from indexer.catalog import Track  # noqa: E402
from indexer.pipeline import HOLD_ENV, Indexer, IndexOptions  # noqa: E402
from indexer.vectors import Library  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
N_FILES = 24  # more than the Ray engine admits ahead of a held driver (4 batches of 4)
pytestmark = pytest.mark.timeout(900)


class RayCluster:
    """A head and worker nodes on this machine; ``kill(node)`` kills a node's every process."""

    WORKERS = ("worker-1", "worker-2")

    def __init__(self, base: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        # Ray authenticates every client with a token: this cluster's is made here and given to the driver.
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), MUQSEARCH_THREADS="1", OMP_NUM_THREADS="1",
                        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
                        RAY_raylet_start_wait_time_s="300")  # a loaded 2-core machine starts nodes slowly
        self.base, self.nodes = base, {}
        self.temp_dir = tempfile.mkdtemp(prefix="mqr-")  # short: Ray's socket paths must fit in 107 bytes
        try:
            self.start("head", "--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard", "false",
                       "--temp-dir", self.temp_dir)
            self.wait_for_head()  # a worker node started before the head is up gives up
            self.wait_for_nodes(1)
            self.restore()
        except BaseException:
            self.stop()
            raise

    def start(self, name: str, *options: str) -> None:
        log = open(self.base / f"{name}.log", "a")
        self.nodes[name] = subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(150 * 2**20),
             "--disable-usage-stats", *options], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def restore(self) -> None:
        """Start the worker nodes that are not running (all of them at first; after a test, the killed one)."""
        for name in self.WORKERS:  # one at a time: kind to a busy machine
            if name not in self.nodes or self.nodes[name].poll() is not None:
                self.start(name, "--address", self.address, "--num-cpus", "2")
                self.wait_for_nodes(1 + sum(self.nodes[w].poll() is None for w in self.WORKERS if w in self.nodes))

    def wait_for_head(self) -> None:
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not start"
                time.sleep(0.5)

    def wait_for_nodes(self, n: int) -> None:
        """Until the cluster counts ``n`` live nodes (a killed node is counted dead once its heartbeats stop)."""
        script = (f"import ray, time; ray.init(address={self.address!r}, log_to_driver=False)\n"
                  f"deadline = time.monotonic() + 180\n"
                  f"while len([x for x in ray.nodes() if x['Alive']]) != {n} and time.monotonic() < deadline:\n"
                  f"    time.sleep(0.5)\n"
                  f"print(len([x for x in ray.nodes() if x['Alive']]))")
        out = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                             timeout=300).stdout.strip()
        assert out.splitlines() and out.splitlines()[-1] == str(n), f"the Ray cluster did not reach {n} nodes"

    def embedders(self) -> dict[int, str]:
        """{pid: node} of this cluster's Ray actors that hold the model (their process title names the class)."""
        sessions = {node.pid: name for name, node in self.nodes.items() if node.poll() is None}
        found = {}
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
                session = os.getsid(int(entry))
            except OSError:  # gone meanwhile
                continue
            if title.startswith(b"ray::") and b"Embedder" in title and session in sessions:
                found[int(entry)] = sessions[session]
        return found

    def kill(self, name: str) -> None:
        os.killpg(self.nodes[name].pid, signal.SIGKILL)
        self.nodes[name].wait()

    def stop(self) -> None:
        for node in self.nodes.values():
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One cluster for the module (starting one takes a while on two cores); each test gets it whole."""
    cluster = RayCluster(tmp_path_factory.mktemp("ray"))
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(ray_cluster):
    ray_cluster.restore()
    return ray_cluster


@pytest.fixture
def music(tmp_path):
    root = tmp_path / "music"
    paths = {str(write_audio(root / f"{n:02d}.wav", 2.0 + n % 5, 22050, 1, seed=n)) for n in range(N_FILES)}
    (root / "bad.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    return root, paths


def index_command(music_root, library, model_dir, cluster, *extra):
    return [sys.executable, "-m", "app", "index", str(music_root), "--library", str(library), "--model", str(model_dir),
            "--engine", "ray", "--ray-address", cluster.address, "--commit-every", "2", "--json", *extra]


def start_held(command, cluster, hold: Path, log: Path) -> tuple[subprocess.Popen, dict]:
    """Start the indexer and wait for its "started" signal: it has committed tracks and waits."""
    process = subprocess.Popen(command, env=dict(cluster.env, **{HOLD_ENV: str(hold)}), stdout=subprocess.PIPE,
                               stderr=open(log, "w"), text=True, start_new_session=True)
    deadline = time.monotonic() + 400
    while not hold.exists():
        assert process.poll() is None, f"the indexer ended before its first commit:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no commit within 400 s"
        time.sleep(0.05)
    return process, json.loads(hold.read_text())


def assert_every_track_once(library_dir, paths, model):
    with Library.open(library_dir) as library:
        with library.catalog.session() as s:
            counts = dict(s.execute(select(Track.path, func.count()).group_by(Track.path)).all())
            assert counts == dict.fromkeys(paths, 1)
            for track in s.scalars(select(Track)):
                expected, clips = model.embed_audio([load_audio(track.path)], return_clips=True)
                assert len(track.segments) == track.n_segments == len(clips[0].embeddings)
                np.testing.assert_allclose(track.vector(), expected[0].numpy(), atol=1e-5)
        assert [e.path for e in library.catalog.errors()] == [str(Path(next(iter(paths))).parent / "bad.wav")]
        assert library.check().ok


def test_the_ray_engine_builds_the_same_catalog_as_the_local_engine(cluster, music, tmp_path, tiny_model,
                                                                   tiny_model_dir, capsys):
    root, paths = music
    with Library.open(tmp_path / "local", create=True) as library:
        Indexer(library, tiny_model, str(tiny_model_dir), IndexOptions(workers=1, progress=False)).run([root])
    done = subprocess.run(index_command(root, tmp_path / "ray", tiny_model_dir, cluster), env=cluster.env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["indexed"], summary["failed"]) == (N_FILES, 1)

    def catalog(directory):
        with Library.open(directory) as library, library.catalog.session() as s:
            tracks = {t.path: (t.to_dict(), t.vector(), [(g.index, g.start, g.end, g.vector()) for g in t.segments],
                               sorted((x.tag, x.category, x.source, round(x.score or 0, 4)) for x in t.tags))
                      for t in s.scalars(select(Track))}
            return tracks, [e.to_dict() for e in library.catalog.errors()]

    (local, local_errors), (ray, ray_errors) = catalog(tmp_path / "local"), catalog(tmp_path / "ray")
    assert local.keys() == ray.keys() == paths and ray_errors == local_errors
    for path, (facts, vector, segments, tags) in local.items():
        ray_facts, ray_vector, ray_segments, ray_tags = ray[path]
        assert {k: v for k, v in ray_facts.items() if k != "id"} == {k: v for k, v in facts.items() if k != "id"}
        np.testing.assert_allclose(ray_vector, vector, atol=1e-5)
        assert [s[:3] for s in ray_segments] == [s[:3] for s in segments]
        np.testing.assert_allclose(np.stack([s[3] for s in ray_segments]), np.stack([s[3] for s in segments]), atol=1e-5)
        assert ray_tags == tags
    assert_every_track_once(tmp_path / "ray", paths, tiny_model)

    # Unchanged files are skipped, bad unchanged ones too, without joining the cluster (run in this process
    # to see that Ray was never started).
    import ray

    assert main(index_command(root, tmp_path / "ray", tiny_model_dir, cluster)[3:]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == N_FILES + 1 and not ray.is_initialized()


def test_a_driver_killed_mid_run_is_finished_by_the_next_run(cluster, music, tmp_path, tiny_model, tiny_model_dir):
    root, paths = music
    command = index_command(root, tmp_path / "library", tiny_model_dir, cluster)
    process, started = start_held(command, cluster, tmp_path / "started.json", tmp_path / "driver.log")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with Library.open(tmp_path / "library") as library:
        assert library.catalog.counts()["tracks"] == started["tracks"] < N_FILES

    again = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert (summary["indexed"], summary["skipped"]) == (N_FILES - started["tracks"], started["tracks"])
    assert_every_track_once(tmp_path / "library", paths, tiny_model)


def test_a_worker_node_killed_mid_run_loses_and_duplicates_nothing(cluster, music, tmp_path, tiny_model,
                                                                   tiny_model_dir):
    root, paths = music
    hold = tmp_path / "started.json"
    process, started = start_held(index_command(root, tmp_path / "library", tiny_model_dir, cluster),
                                  cluster, hold, tmp_path / "driver.log")
    try:
        # Held, the driver takes no more results, so the cluster admits no more files: work is left undone.
        assert 1 <= started["tracks"] < N_FILES
        embedders = cluster.embedders()
        assert embedders, "no embedding actor is running mid-run"
        victim = next(iter(embedders.values()))  # the node holding the model: the worst one to lose
        cluster.kill(victim)
        hold.unlink()  # let the driver go on: Ray restarts the actor on the other node and retries the rest
        out, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    summary = json.loads(out)
    assert (summary["indexed"], summary["failed"]) == (N_FILES, 1)
    assert_every_track_once(tmp_path / "library", paths, tiny_model)
