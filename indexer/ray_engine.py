"""The Ray engine: the decode and embed stages on a Ray cluster, through Ray Data.

    files --map(decode_row)--> clips per file --map_batches(Embedder, actor pool)--> vectors --> driver

- **decode** runs as Ray tasks, one file each (:func:`indexer.stages.decode`); a bad file becomes a row
  carrying its error, never an exception, so one file cannot fail the dataset.
- **embed** runs in a pool of actors (``map_batches`` with a class): each actor loads the model once,
  checks it is the driver's model (same fingerprint), and embeds ``batch_size`` files per call; with
  GPUs in the cluster each actor takes ``num_gpus`` of one.
- **store** stays on the driver: the run's one :class:`~indexer.stages.Store` commits in small
  transactions. Ray Data retries the tasks of a dead worker and restarts its actors; a file that comes
  back twice is stored once (the driver keeps the first). A dead driver loses only the uncommitted
  batch: the next run plans from the catalog and does the rest.
- **admission**: a file starts decoding only while fewer than ``window`` started files have yet to reach
  the driver (:class:`Admission`, an actor beside the driver). Ray Data's streaming executor otherwise
  runs ahead of the store as far as the input goes: decoded clips and vectors pile up in the object
  store when the catalog is slower than the cluster, and a run held mid-way (``IndexOptions.hold_file``)
  would hold only the driver while the cluster finished every file -- a worker "killed mid-run" would
  then die after the work.

Ray is optional (``pip install muqsearch[ray]``); nothing imports it unless ``--engine ray`` is chosen.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from indexer.decode import DecodeSettings, DoneMessage
from indexer.scan import FoundFile
from indexer.stages import Task, decode, embed
from indexer.tags import TrackTags

OBJECT_STORE_BYTES = 500 * 2**20  # a Ray started here keeps its shared memory small
DECODE_MEMORY_BYTES = 512 * 2**20  # reserved per decode task: a worker process with torch, and one file's clips


@dataclass
class RayEngine:
    """Decode and embed on Ray; ``load_model`` is a picklable function that gives the model (on actors)."""

    load_model: object
    address: str | None = None  # None: start a Ray on this machine for the run
    actors: int = 1  # embedding actors
    batch_size: int = 4  # files per embedding call
    lookahead: int = 4  # batches per actor admitted to the cluster beyond the files the driver has taken
    num_cpus: int | None = None  # of a Ray started here (None: all cores)

    def process(self, run, tasks: list[Task]) -> None:
        """``run``: the :class:`indexer.pipeline.Indexer` (model, options, store, summary)."""
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False  # the run has its own
        # Ray prints the cluster's error messages (a task that failed and will be retried, an actor
        # restarted) on the driver's stdout, from a thread: they go to stderr, beside the progress bar,
        # so that stdout carries only the command's own output (`--json` stays one JSON document).
        with contextlib.redirect_stdout(sys.stderr):
            started_here = not ray.is_initialized()
            if started_here:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(address="local", num_cpus=self.num_cpus, object_store_memory=OBJECT_STORE_BYTES,
                             include_dashboard=False, log_to_driver=False)  # "local": a new one, never a stale one
            try:
                self._run(ray, run, tasks)
            finally:
                if started_here:
                    ray.shutdown()

    def _run(self, ray, run, tasks: list[Task]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        model, store, summary = run.model, run.store, run.summary
        settings = DecodeSettings(model.sample_rate, model.clip_policy, run.options.max_seconds)
        by_id = {t.id: t for t in tasks}
        rows = [{"task_id": t.id, "path": t.path, "size": t.file.size, "mtime_ns": t.file.mtime_ns,
                 "previous_hash": t.previous_hash or ""} for t in tasks]
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else None
        # Beside the driver (a node that dies with it anyway), taking no CPU: the decode tasks wait on it.
        beside_driver = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        admission = ray.remote(Admission).options(num_cpus=0, scheduling_strategy=beside_driver).remote(
            self.lookahead * self.batch_size * self.actors)
        dataset = (
            ray.data.from_items(rows, override_num_blocks=len(rows))
            # A task reserves memory for one decoded file; as the actors' resources differ, Ray Data keeps
            # decoding in tasks (retried on another node if their worker dies) rather than in the actors.
            .map(decode_row, fn_kwargs={"settings": settings, "admission": admission}, num_cpus=1,
                 memory=DECODE_MEMORY_BYTES)
            .map_batches(Embedder, fn_constructor_kwargs={"load_model": self.load_model,
                                                          "fingerprint": model.fingerprint()},
                         batch_size=self.batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=self.actors),
                         num_cpus=1, num_gpus=gpus)
        )
        phase_start = time.monotonic()
        run.start_tagger()
        run.open_progress(len(tasks))
        for row in dataset.iter_rows():
            task = by_id[int(row["task_id"])]
            admission.taken.remote(task.id)
            if task.outcome is not None:
                continue  # a retried task's second answer: the first is already stored
            _settle(task, row)
            summary.model_seconds += float(row["model_seconds"])
            summary.clips += task.done.n_clips if task.outcome == "track" else 0
            store.add(task)
            store.maybe_commit()
        summary.embed_phase_seconds = time.monotonic() - phase_start


class Admission:
    """Admits a file to the cluster while fewer than ``window`` admitted files have yet to reach the driver.

    A file admitted before (a task retried after its worker died, or run again to rebuild a lost result)
    passes at once: its first admission is still counted until the driver takes its row. A waiting task
    blocks in ``ray.get``, which frees its CPU for the admitted tasks it waits on.
    """

    def __init__(self, window: int):
        import asyncio

        self.window = window
        self.admitted: set[int] = set()  # admitted, not yet taken by the driver
        self.done: set[int] = set()  # taken by the driver
        self.changed = asyncio.Condition()

    async def enter(self, task_id: int) -> None:
        async with self.changed:
            if task_id in self.admitted or task_id in self.done:
                return
            await self.changed.wait_for(lambda: len(self.admitted) < self.window)
            self.admitted.add(task_id)

    async def taken(self, task_id: int) -> None:
        async with self.changed:
            self.admitted.discard(task_id)
            self.done.add(task_id)
            self.changed.notify_all()


def decode_row(row: dict, settings: DecodeSettings, admission) -> dict:
    """The decode stage as a Ray task: one file's clips (as bytes), facts and tags, or its error; the file
    starts once ``admission`` (an :class:`Admission` actor) lets it."""
    import ray

    ray.get(admission.enter.remote(int(row["task_id"])))
    task = Task(int(row["task_id"]), FoundFile(row["path"], int(row["size"]), int(row["mtime_ns"])),
                previous_hash=row["previous_hash"] or None)
    clips = decode(task, settings)
    out = {"task_id": task.id, "error_stage": "", "error_message": "", "facts": "", "tags": "", "same_audio": False,
           "n_clips": 0, "starts": b"", "clips": b"", "clip_lengths": b""}
    if task.failed:
        out["error_stage"], out["error_message"] = task.error
        return out
    done = task.done
    out.update(facts=json.dumps(done.facts), tags=json.dumps(asdict(done.tags)), same_audio=done.same_audio,
               n_clips=done.n_clips,
               starts=np.array([task.starts[i] for i in range(len(clips))], np.int64).tobytes(),
               clip_lengths=np.array([len(c) for c in clips], np.int64).tobytes(),
               clips=b"".join(np.ascontiguousarray(c, np.float32).tobytes() for c in clips))
    return out


class Embedder:
    """The embed stage as a Ray actor: the model loads once per actor; each call embeds a batch of files."""

    def __init__(self, load_model, fingerprint: dict):
        from muq_model.identity import same_vectors
        from muq_model.runtime import configure_threads

        configure_threads()
        self.model = load_model()
        if not same_vectors(self.model.fingerprint(), fingerprint):
            raise RuntimeError(f"the Ray workers load another model than the driver's (fingerprint {fingerprint})")

    def __call__(self, batch: dict) -> dict:
        started = time.monotonic()
        n = len(batch["task_id"])
        clips_of = []
        for i in range(n):
            lengths = np.frombuffer(batch["clip_lengths"][i], np.int64)
            flat = np.frombuffer(batch["clips"][i], np.float32)
            bounds = np.cumsum(np.concatenate([[0], lengths]))
            clips_of.append([flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        by_length: dict[int, list[tuple[int, int]]] = {}  # equal-length clips of any files embed together
        for i, clips in enumerate(clips_of):
            for k, clip in enumerate(clips):
                by_length.setdefault(len(clip), []).append((i, k))
        vectors = [np.zeros((len(c), self.model.dim), np.float32) for c in clips_of]
        errors = [""] * n
        for members in by_length.values():
            try:
                out = embed(self.model, [clips_of[i][k] for i, k in members])
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory: fail these files, keep going
                for i, _ in members:
                    errors[i] = f"model failed: {exc}"
                continue
            for (i, k), vector in zip(members, out, strict=True):
                vectors[i][k] = vector
        share = (time.monotonic() - started) / max(1, n)
        return {
            "task_id": batch["task_id"], "error_stage": np.array(
                [s or ("embed" if errors[i] else "") for i, s in enumerate(batch["error_stage"])], dtype=object),
            "error_message": np.array([m or errors[i] for i, m in enumerate(batch["error_message"])], dtype=object),
            "facts": batch["facts"], "tags": batch["tags"], "same_audio": batch["same_audio"],
            "n_clips": batch["n_clips"], "starts": batch["starts"],
            "vectors": np.array([v.tobytes() for v in vectors], dtype=object),
            "model_seconds": np.full(n, share),
        }


def _settle(task: Task, row: dict) -> None:
    """Put a row's outcome on its task: a track with its vectors, a retag, or an error."""
    if row["error_stage"]:
        task.fail(row["error_stage"], row["error_message"])
        return
    facts, tags = json.loads(row["facts"]), TrackTags(**json.loads(row["tags"]))
    n_clips = int(row["n_clips"])
    task.done = DoneMessage(task.id, facts, tags, n_clips, same_audio=bool(row["same_audio"]))
    if task.done.same_audio:
        task.outcome = "retag"
        return
    starts = np.frombuffer(row["starts"], np.int64)
    vectors = np.frombuffer(row["vectors"], np.float32).reshape(n_clips, -1)
    task.starts = {i: int(s) for i, s in enumerate(starts)}
    task.vectors = {i: vectors[i].copy() for i in range(n_clips)}
    task.outcome = "track"
