"""The local engine: decoder processes on this machine stream clips to the model in this process.

Worker processes stream clips through one pipe each, a few clips ahead, so the model here always has
the next batch ready and a 60-minute file never sits in memory whole; a crashed or stuck decoder costs
only its file. Equal-length clips from any files are embedded together (:func:`indexer.stages.embed`);
a task whose clips are all embedded goes to the run's :class:`~indexer.stages.Store`.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from indexer.decode import ClipMessage, DecodeSettings, DoneMessage, ErrorMessage, worker_main
from indexer.stages import Task, embed

DECODER_LOG = "decoder.log"
MAX_IDLE_CRASHES = 3  # decoder deaths with no file in hand before the run gives up


@dataclass
class Decoder:
    """One decoder process and its pipe; ``tasks`` are the ids of the jobs it holds, oldest first."""

    slot: int
    process: mp.Process
    connection: object  # multiprocessing.connection.Connection
    tasks: deque = field(default_factory=deque)
    last_heard: float = field(default_factory=time.monotonic)
    retired: bool = False

    def retire(self) -> None:
        """No more jobs for it: ask it to exit once it has sent everything."""
        if not self.retired:
            self.retired = True
            try:
                self.connection.send(None)
            except OSError:
                pass  # already gone; the pool notices


class DecoderPool:
    """Worker processes started from a fork server (never forked from this process with its model and
    thread pools), each with its own pipe."""

    def __init__(self, settings: DecodeSettings, prefetch: int):
        self.settings, self.prefetch = settings, prefetch
        if "forkserver" in mp.get_all_start_methods():
            self.ctx = mp.get_context("forkserver")
            self.ctx.set_forkserver_preload(["indexer.decode", "muq_model.clips"])
        else:
            self.ctx = mp.get_context("spawn")
        self.decoders: dict[int, Decoder] = {}

    def start(self, slot: int) -> Decoder:
        ours, theirs = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=worker_main, args=(theirs, self.settings, self.prefetch),
                                   daemon=True, name=f"muqsearch-decode-{slot}")
        process.start()
        theirs.close()  # only the worker holds its end now: its death reads as end-of-file here
        self.decoders[slot] = Decoder(slot, process, ours)
        return self.decoders[slot]

    def ready(self, timeout: float) -> list[Decoder]:
        """Decoders with a message (or an end-of-file) waiting, after at most ``timeout`` seconds."""
        by_connection = {d.connection: d for d in self.decoders.values() if not d.connection.closed}
        return [by_connection[c] for c in mp_connection.wait(list(by_connection), timeout=timeout)]

    def remove(self, decoder: Decoder) -> None:
        decoder.connection.close()
        del self.decoders[decoder.slot]

    def close(self) -> None:
        for decoder in self.decoders.values():
            decoder.connection.close()  # end-of-file: a worker still running exits
        for decoder in self.decoders.values():
            decoder.process.join(timeout=2)
            if decoder.process.is_alive():
                decoder.process.kill()
        self.decoders.clear()


class LocalEngine:
    """Decode in ``options.workers`` processes, embed here, hand finished tasks to the run's store."""

    def process(self, run, tasks: list[Task]) -> None:
        """``run``: the :class:`indexer.pipeline.Indexer` (model, options, store, summary, library)."""
        _LocalRun(run, tasks).go()


class _LocalRun:
    def __init__(self, run, tasks: list[Task]):
        self.run, self.model, self.options = run, run.model, run.options
        self.store, self.summary = run.store, run.summary
        self.tasks = {t.id: t for t in tasks}
        self.unfinished = set(self.tasks)
        self.waiting = deque(t.id for t in tasks)  # not yet handed to a decoder
        self.pending: dict[int, list[ClipMessage]] = defaultdict(list)  # clip length -> clips to embed
        self.idle_crashes = 0  # decoder deaths not caused by a file (cannot start, killed from outside)

    def go(self) -> None:
        cache_dir = self.run.library.cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)
        settings = DecodeSettings(
            sample_rate=self.model.sample_rate,
            policy=self.model.clip_policy,
            max_seconds=self.options.max_seconds,
            stderr_path=str(cache_dir / DECODER_LOG),
        )
        n_workers = max(1, min(self.options.workers, len(self.tasks)))
        per_batch = max(1, self.model.clip_batch_samples // self.model.clip_samples)
        pool = DecoderPool(settings, prefetch=max(2, 2 * per_batch // n_workers))
        phase_start = time.monotonic()
        try:
            for slot in range(n_workers):
                self.assign(pool.start(slot))
            self.run.start_tagger()  # the decoders start on the first files meanwhile
            self.run.open_progress(len(self.tasks))
            while self.unfinished:
                ready = pool.ready(timeout=0.2)
                for decoder in ready:
                    try:
                        message = decoder.connection.recv()
                    except (EOFError, OSError):  # it exited (retired) or died
                        decoder.process.join(timeout=5)
                        self.bury(pool, decoder, f"decoder process crashed (exit code {decoder.process.exitcode})")
                        continue
                    self.receive(decoder, message)
                if not ready and not self.embed_pending(idle=True):
                    self.look_after(pool)  # nothing to read and nothing to embed: are the decoders fine?
                self.store.maybe_commit()
            self.summary.embed_phase_seconds = time.monotonic() - phase_start
        finally:
            pool.close()

    def assign(self, decoder: Decoder) -> None:
        """Keep two jobs outstanding per decoder, so it starts the next file without waiting for us."""
        while len(decoder.tasks) < 2 and self.waiting:
            task = self.tasks[self.waiting.popleft()]
            decoder.tasks.append(task.id)
            decoder.connection.send(task.job())
        if not decoder.tasks:
            decoder.retire()

    def receive(self, decoder: Decoder, message) -> None:
        decoder.last_heard = time.monotonic()
        task = self.tasks[message.task_id]
        if not isinstance(message, ClipMessage):  # the decoder is done with this file
            decoder.tasks.popleft()
            self.assign(decoder)
        if task.failed:
            return  # late clips of a file that already failed
        if isinstance(message, ClipMessage):
            task.starts[message.index] = message.start_sample
            self.pending[len(message.clip)].append(message)
            self.embed_pending(idle=False)
        elif isinstance(message, DoneMessage):
            task.done = message
            if message.same_audio:
                self.finish(task, "retag")
            elif task.complete:
                self.finish(task, "track")
        elif isinstance(message, ErrorMessage):
            self.fail(task, message.stage, message.message)

    def embed_pending(self, *, idle: bool) -> bool:
        """Embed every full batch; when idle, also the largest partial one. True if the model ran.

        Clips shorter than a full clip come from tracks under 5 s (one clip each, of a length no other
        track shares exactly), so they never wait for company.
        """
        ran = False
        for length, clips in self.pending.items():
            per_batch = max(1, self.model.clip_batch_samples // length)
            while len(clips) >= per_batch or (clips and length != self.model.clip_samples):
                batch, clips[:] = clips[:per_batch], clips[per_batch:]
                self.embed_batch(batch)
                ran = True
        if idle and not ran:
            clips = max(self.pending.values(), key=len, default=[])
            if clips:
                batch, clips[:] = list(clips), []
                self.embed_batch(batch)
                ran = True
        return ran

    def embed_batch(self, batch: list[ClipMessage]) -> None:
        touched = {c.task_id: self.tasks[c.task_id] for c in batch}
        start = time.monotonic()
        try:
            vectors = embed(self.model, [c.clip for c in batch])  # (B, dim)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: fail these files, keep going
            for task in touched.values():
                self.fail(task, "embed", f"model failed: {exc}")
            return
        finally:
            self.summary.model_seconds += time.monotonic() - start
        self.summary.clips += len(batch)
        for message, vector in zip(batch, vectors, strict=True):
            touched[message.task_id].vectors[message.index] = vector
        for task in touched.values():
            if task.complete and not task.failed and task.id in self.unfinished:
                self.finish(task, "track")

    def look_after(self, pool: DecoderPool) -> None:
        """Stop a decoder stuck on one file; bury any that died without a word."""
        now = time.monotonic()
        for decoder in list(pool.decoders.values()):
            if decoder.tasks and now - decoder.last_heard > self.options.decode_timeout:
                decoder.process.kill()
                decoder.process.join()
                self.bury(pool, decoder, f"decoder gave no sign of progress for {self.options.decode_timeout:.0f} s")
            elif not decoder.process.is_alive():
                self.bury(pool, decoder, f"decoder process crashed (exit code {decoder.process.exitcode})")
        if not pool.decoders:
            for task_id in list(self.unfinished):  # cannot happen unless decoders vanish: report, not hang
                self.fail(self.tasks[task_id], "decode", "no decoder process reported on this file")

    def bury(self, pool: DecoderPool, decoder: Decoder, reason: str) -> None:
        """A decoder has gone: fail the file it was on, hand its next job on, start a replacement."""
        pool.remove(decoder)
        if decoder.tasks:
            self.fail(self.tasks[decoder.tasks.popleft()], "decode", reason)
            self.waiting.extendleft(reversed(decoder.tasks))  # not started yet
        elif decoder.process.exitcode == 0:
            return  # retired normally
        else:
            self.idle_crashes += 1
            if self.idle_crashes > MAX_IDLE_CRASHES:
                raise RuntimeError(
                    f"decoder processes keep dying before they decode anything ({reason}); "
                    f"see {self.run.library.cache_dir / DECODER_LOG}"
                )
        if self.waiting:
            self.assign(pool.start(decoder.slot))

    def finish(self, task: Task, outcome: str) -> None:
        task.outcome = outcome
        self.unfinished.discard(task.id)
        self.store.add(task)

    def fail(self, task: Task, stage: str, message: str) -> None:
        if task.failed:
            return
        task.fail(stage, message)
        for clips in self.pending.values():
            clips[:] = [c for c in clips if c.task_id != task.id]
        self.unfinished.discard(task.id)
        self.store.add(task)
