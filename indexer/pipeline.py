"""The indexing pipeline: scan -> plan -> decode -> embed -> store, then the vector indexes.

Stages, in the order a file goes through them (one :class:`Task` per file carries its state):

- **scan** (``indexer.scan``): the producer; finds audio files under the roots.
- **plan**: compares what was found with the catalog. Unchanged files (same path, size, mtime) and
  unchanged known-bad files are skipped; a changed file keeps its audio hash so the decoder can tell a
  tag edit (refresh tags only) from new audio (embed again).
- **decode** (``indexer.decode``): worker processes stream clips through one pipe each, a few clips
  ahead, so the model in this process always has the next batch ready and a 60-minute file never sits
  in memory whole; a crashed or stuck decoder costs only its file.
- **embed**: batches equal-length clips from any files through ``model.embed_clips``.
- **store**: a finished track (all clips embedded) becomes catalog rows -- track, segments, file and auto
  tags -- written in small transactions (``commit_every`` tracks or ``commit_seconds``), so a run killed
  at any moment loses at most the uncommitted batch, and the next run, planning from the catalog,
  finishes the job without duplicates. Failures become ``errors`` rows in the same transactions.
- **vectors**: ``Library.sync`` brings the FAISS indexes up to date with the catalog at the end
  (and repairs them after a run that was killed before this step).
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import sys
import time
from collections import defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from sqlalchemy import delete, or_, select, update

from indexer.autotag import AutoTagger
from indexer.catalog import Catalog, IndexError_, IndexRun, Segment, Track, TrackTag, to_blob, utcnow
from indexer.decode import ClipMessage, DecodeJob, DecodeSettings, DoneMessage, ErrorMessage, worker_main
from indexer.scan import FoundFile, scan
from indexer.vectors import Library, LibraryError

LOCK_FILENAME = ".indexer.lock"
DECODER_LOG = "decoder.log"
MAX_TRACK_SECONDS = 4 * 3600  # longer files are refused as absurd (a whole-day stream, a corrupt header)
DECODE_TIMEOUT_SECONDS = 600.0  # a worker silent this long on one file is stopped and the file reported
MAX_IDLE_CRASHES = 3  # decoder deaths with no file in hand before the run gives up


def default_workers() -> int:
    from muq_model.runtime import available_cores

    return max(1, min(4, available_cores() // 2))


@dataclass
class IndexOptions:
    workers: int = field(default_factory=default_workers)
    prune: bool = False  # remove catalog tracks whose files are gone
    optimize: bool = False  # rebuild the vector indexes with the kind chosen for the library's size
    retry_errors: bool = False  # decode again files that failed before even if unchanged
    commit_every: int = 16  # tracks per catalog transaction
    commit_seconds: float = 10.0  # ... or this long since the last commit, whichever comes first
    max_seconds: float = MAX_TRACK_SECONDS
    decode_timeout: float = DECODE_TIMEOUT_SECONDS
    auto_tags: bool = True
    use_gpu: bool = False  # faiss-gpu for the vector indexes, when importable
    progress: bool = True


@dataclass
class IndexSummary:
    indexed: int = 0  # embedded and stored this run
    retagged: int = 0  # changed on disk but same audio: tags refreshed, vectors kept
    skipped: int = 0  # unchanged since the last run (including unchanged known-bad files)
    failed: int = 0
    removed: int = 0  # pruned: file gone from disk
    missing: int = 0  # file gone from disk, kept in the catalog (no --prune)
    errors: list[dict] = field(default_factory=list)  # {path, stage, message} of this run
    audio_seconds: float = 0.0  # audio embedded this run
    seconds: float = 0.0
    model_seconds: float = 0.0  # time spent inside the model
    clips: int = 0
    generation: int = 0
    run_id: int | None = None
    interrupted: bool = False

    embed_phase_seconds: float = 0.0  # from the first job handed to the decoders to the last track

    @property
    def nothing_indexed(self) -> bool:
        """No file is in the library as a result of this run: `muqsearch index` exits 1."""
        return self.indexed + self.retagged + self.skipped == 0

    @property
    def model_busy(self) -> float:
        """Share of the decode+embed phase the model spent computing (the rest it waited for clips)."""
        return self.model_seconds / self.embed_phase_seconds if self.embed_phase_seconds else 0.0

    def to_json(self) -> dict:
        return {
            "indexed": self.indexed,
            "skipped": self.skipped,
            "failed": self.failed,
            "removed": self.removed,
            "retagged": self.retagged,
            "missing": self.missing,
            "errors": self.errors,
            "audio_hours": round(self.audio_seconds / 3600, 4),
            "seconds": round(self.seconds, 3),
            "model_busy": round(self.model_busy, 4),
            "generation": self.generation,
            "run_id": self.run_id,
            "interrupted": self.interrupted,
        }


@dataclass
class Task:
    """One file's journey through the pipeline."""

    id: int
    file: FoundFile
    previous_id: int | None = None  # the catalog track this file had (replaced when it stores)
    previous_hash: str | None = None
    starts: dict[int, int] = field(default_factory=dict)  # clip index -> start sample
    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # clip index -> unit vector
    done: DoneMessage | None = None
    failed: bool = False

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def complete(self) -> bool:
        return self.done is not None and len(self.vectors) == self.done.n_clips


class IndexLocked(LibraryError):
    """Another `muqsearch index` is writing to this library."""


@contextmanager
def library_lock(directory):
    """Hold an exclusive lock on a library for a run (the OS releases it if the process is killed)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLocked(f"another `muqsearch index` is running on {directory}; wait for it to finish") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --------------------------------------------------------------------------------------------------
# decoder processes


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


# --------------------------------------------------------------------------------------------------
# plan


def plan(found: list[FoundFile], catalog: Catalog, *, retry_errors: bool) -> tuple[list[Task], int]:
    """Tasks for new and changed files, and the number of files skipped as unchanged."""
    with catalog.session() as s:
        known = {
            row.path: row
            for row in s.execute(select(Track.id, Track.path, Track.size, Track.mtime_ns, Track.audio_hash))
        }
        bad = {
            row.path: (row.size, row.mtime_ns)
            for row in s.execute(select(IndexError_.path, IndexError_.size, IndexError_.mtime_ns))
        }
    tasks, skipped = [], 0
    for file in found:
        row = known.get(file.path)
        if row is not None and (row.size, row.mtime_ns) == (file.size, file.mtime_ns):
            skipped += 1
        elif row is None and not retry_errors and bad.get(file.path) == (file.size, file.mtime_ns):
            skipped += 1  # failed before and unchanged since: `status` lists it, --retry-errors retries
        else:
            tasks.append(Task(len(tasks), file, row.id if row else None, row.audio_hash if row else None))
    return tasks, skipped


# --------------------------------------------------------------------------------------------------
# the run


class Indexer:
    """One indexing run of a library with a model."""

    def __init__(self, library: Library, model, model_name: str, options: IndexOptions | None = None):
        """``model``: a MuQMuLan, or a function returning one, called only once some file needs
        embedding -- so a re-run with nothing to do never waits for a model to load."""
        self.library = library
        self.catalog = library.catalog
        self._model = model
        self.model_name = model_name
        self.options = options or IndexOptions()
        self.summary = IndexSummary()
        self.tagger: AutoTagger | None = None
        self._pending: dict[int, list[ClipMessage]] = defaultdict(list)  # clip length -> clips to embed
        self._tasks: dict[int, Task] = {}
        self._unfinished: set[int] = set()
        self._waiting: deque[int] = deque()
        self._idle_crashes = 0  # decoder deaths not caused by a file (cannot start, killed from outside)
        self._buffer: list[tuple[str, Task, object]] = []  # (kind, task, payload) awaiting commit
        self._last_commit = time.monotonic()
        self._progress = None
        self._status = "done"

    @property
    def model(self):
        if not isinstance(self._model, torch.nn.Module):
            self._model = self._model()
        return self._model

    # ---- entry point ------------------------------------------------------------------------------

    def run(self, roots) -> IndexSummary:
        started = time.monotonic()
        roots = [os.path.abspath(os.path.expanduser(str(r))) for r in roots]
        with library_lock(self.library.directory):
            self.summary.run_id = self._start_run(roots)
            try:
                found = self._scan(roots)
                tasks, self.summary.skipped = plan(found, self.catalog, retry_errors=self.options.retry_errors)
                if tasks:
                    self.catalog.claim_fingerprint(self.model.fingerprint(), self.model_name, self.model.dim)
                    self._process(tasks)
                self._prune_or_count_missing({f.path for f in found})
            except BaseException as exc:  # keep what is finished, then let the problem through
                self.summary.interrupted = isinstance(exc, KeyboardInterrupt)
                self._status = "interrupted" if self.summary.interrupted else "failed"
                self._commit()
                raise
            finally:
                self._close_progress()
                self.summary.generation = self.library.sync(optimize=self.options.optimize,
                                                            use_gpu=self.options.use_gpu)
                self.summary.seconds = time.monotonic() - started
                self._finish_run()
        return self.summary

    def _start_run(self, roots: list[str]) -> int:
        with self.catalog.session.begin() as s:
            # Only one run can hold the lock, so any run still "running" was killed.
            s.execute(update(IndexRun).where(IndexRun.status == "running").values(status="interrupted"))
            run = IndexRun(roots=json.dumps(roots), model=self.model_name)
            s.add(run)
            s.flush()
            return run.id

    def _finish_run(self) -> None:
        summary = self.summary
        with self.catalog.session.begin() as s:
            run = s.get(IndexRun, summary.run_id)
            run.finished = utcnow()
            run.status = self._status
            run.indexed, run.skipped, run.failed, run.removed = (
                summary.indexed, summary.skipped, summary.failed, summary.removed
            )
            run.audio_seconds = summary.audio_seconds

    # ---- scan -------------------------------------------------------------------------------------

    def _scan(self, roots: list[str]) -> list[FoundFile]:
        result = scan(roots, exclude=[self.library.directory])
        with self.catalog.session.begin() as s:
            for root in roots:  # scan problems are re-established by every scan of their root
                under_root = or_(IndexError_.path == root, IndexError_.path.startswith(root.rstrip(os.sep) + os.sep))
                s.execute(delete(IndexError_).where(IndexError_.stage == "scan", under_root))
            for path, reason in result.problems:
                self.catalog.record_error(s, path, "scan", reason, self.summary.run_id)
                self._note_error(path, "scan", reason)
        return result.files

    # ---- decode + embed ---------------------------------------------------------------------------

    def _process(self, tasks: list[Task]) -> None:
        self._tasks = {t.id: t for t in tasks}
        self._unfinished = set(self._tasks)
        self._waiting = deque(t.id for t in tasks)  # not yet handed to a decoder
        self.library.cache_dir.mkdir(parents=True, exist_ok=True)
        settings = DecodeSettings(
            sample_rate=self.model.sample_rate,
            policy=self.model.clip_policy,
            max_seconds=self.options.max_seconds,
            stderr_path=str(self.library.cache_dir / DECODER_LOG),
        )
        n_workers = max(1, min(self.options.workers, len(tasks)))
        per_batch = max(1, self.model.clip_batch_samples // self.model.clip_samples)
        pool = DecoderPool(settings, prefetch=max(2, 2 * per_batch // n_workers))
        phase_start = time.monotonic()
        try:
            for slot in range(n_workers):
                self._assign(pool.start(slot))
            if self.options.auto_tags:  # the decoders start on the first files meanwhile
                self.tagger = AutoTagger.for_model(self.model, self.catalog)
                self.summary.model_seconds += time.monotonic() - phase_start
            self._open_progress(len(tasks))
            while self._unfinished:
                ready = pool.ready(timeout=0.2)
                for decoder in ready:
                    try:
                        message = decoder.connection.recv()
                    except (EOFError, OSError):  # it exited (retired) or died
                        decoder.process.join(timeout=5)
                        self._bury(pool, decoder, f"decoder process crashed (exit code {decoder.process.exitcode})")
                        continue
                    self._receive(decoder, message)
                if not ready and not self._embed_pending(idle=True):
                    self._look_after(pool)  # nothing to read and nothing to embed: are the decoders fine?
                self._maybe_commit()
            self.summary.embed_phase_seconds = time.monotonic() - phase_start
        finally:
            pool.close()
        self._commit()

    def _assign(self, decoder: Decoder) -> None:
        """Keep two jobs outstanding per decoder, so it starts the next file without waiting for us."""
        while len(decoder.tasks) < 2 and self._waiting:
            task = self._tasks[self._waiting.popleft()]
            decoder.tasks.append(task.id)
            decoder.connection.send(DecodeJob(task.id, task.path, task.previous_hash))
        if not decoder.tasks:
            decoder.retire()

    def _receive(self, decoder: Decoder, message) -> None:
        decoder.last_heard = time.monotonic()
        task = self._tasks[message.task_id]
        if not isinstance(message, ClipMessage):  # the decoder is done with this file
            decoder.tasks.popleft()
            self._assign(decoder)
        if task.failed:
            return  # late clips of a file that already failed
        if isinstance(message, ClipMessage):
            task.starts[message.index] = message.start_sample
            self._pending[len(message.clip)].append(message)
            self._embed_pending(idle=False)
        elif isinstance(message, DoneMessage):
            task.done = message
            if message.same_audio:
                self._finish(task, "retag")
            elif task.complete:
                self._finish(task, "track")
        elif isinstance(message, ErrorMessage):
            self._fail(task, message.stage, message.message)

    def _embed_pending(self, *, idle: bool) -> bool:
        """Embed every full batch; when idle, also the largest partial one. True if the model ran.

        Clips shorter than a full clip come from tracks under 5 s (one clip each, of a length no other
        track shares exactly), so they never wait for company.
        """
        ran = False
        for length, clips in self._pending.items():
            per_batch = max(1, self.model.clip_batch_samples // length)
            while len(clips) >= per_batch or (clips and length != self.model.clip_samples):
                batch, clips[:] = clips[:per_batch], clips[per_batch:]
                self._embed(batch)
                ran = True
        if idle and not ran:
            clips = max(self._pending.values(), key=len, default=[])
            if clips:
                batch, clips[:] = list(clips), []
                self._embed(batch)
                ran = True
        return ran

    def _embed(self, batch: list[ClipMessage]) -> None:
        clips = torch.from_numpy(np.stack([c.clip for c in batch]))  # (B, S)
        touched = {c.task_id: self._tasks[c.task_id] for c in batch}
        start = time.monotonic()
        try:
            vectors = self.model.embed_clips(clips).numpy()  # (B, dim)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: fail these files, keep going
            for task in touched.values():
                self._fail(task, "embed", f"model failed: {exc}")
            return
        finally:
            self.summary.model_seconds += time.monotonic() - start
        self.summary.clips += len(batch)
        for message, vector in zip(batch, vectors, strict=True):
            touched[message.task_id].vectors[message.index] = vector
        for task in touched.values():
            if task.complete and not task.failed and task.id in self._unfinished:
                self._finish(task, "track")

    def _look_after(self, pool: DecoderPool) -> None:
        """Stop a decoder stuck on one file; bury any that died without a word."""
        now = time.monotonic()
        for decoder in list(pool.decoders.values()):
            if decoder.tasks and now - decoder.last_heard > self.options.decode_timeout:
                decoder.process.kill()
                decoder.process.join()
                self._bury(pool, decoder, f"decoder gave no sign of progress for {self.options.decode_timeout:.0f} s")
            elif not decoder.process.is_alive():
                self._bury(pool, decoder, f"decoder process crashed (exit code {decoder.process.exitcode})")
        if not pool.decoders:
            for task_id in list(self._unfinished):  # cannot happen unless decoders vanish: report, not hang
                self._fail(self._tasks[task_id], "decode", "no decoder process reported on this file")

    def _bury(self, pool: DecoderPool, decoder: Decoder, reason: str) -> None:
        """A decoder has gone: fail the file it was on, hand its next job on, start a replacement."""
        pool.remove(decoder)
        if decoder.tasks:
            self._fail(self._tasks[decoder.tasks.popleft()], "decode", reason)
            self._waiting.extendleft(reversed(decoder.tasks))  # not started yet
        elif decoder.process.exitcode == 0:
            return  # retired normally
        else:
            self._idle_crashes += 1
            if self._idle_crashes > MAX_IDLE_CRASHES:
                raise RuntimeError(
                    f"decoder processes keep dying before they decode anything ({reason}); "
                    f"see {self.library.cache_dir / DECODER_LOG}"
                )
        if self._waiting:
            self._assign(pool.start(decoder.slot))

    # ---- store ------------------------------------------------------------------------------------

    def _finish(self, task: Task, kind: str) -> None:
        self._unfinished.discard(task.id)
        self._buffer.append((kind, task, None))
        if kind == "track":
            self.summary.indexed += 1
            self.summary.audio_seconds += task.done.facts["duration"]
        else:
            self.summary.retagged += 1
        self._advance_progress()

    def _fail(self, task: Task, stage: str, message: str) -> None:
        if task.failed:
            return
        task.failed = True
        task.vectors.clear()
        for clips in self._pending.values():
            clips[:] = [c for c in clips if c.task_id != task.id]
        self._unfinished.discard(task.id)
        self._buffer.append(("error", task, (stage, message)))
        self._note_error(task.path, stage, message)
        self._advance_progress()

    def _note_error(self, path: str, stage: str, message: str) -> None:
        self.summary.failed += 1
        self.summary.errors.append({"path": path, "stage": stage, "message": message})

    def _maybe_commit(self) -> None:
        if len(self._buffer) >= self.options.commit_every or (
            self._buffer and time.monotonic() - self._last_commit >= self.options.commit_seconds
        ):
            self._commit()

    def _commit(self) -> None:
        """Write the buffered tracks, retags and errors in one transaction."""
        if not self._buffer:
            return
        run_id = self.summary.run_id
        with self.catalog.session.begin() as s:
            stored_paths = []
            for kind, task, payload in self._buffer:
                if kind == "track":
                    s.execute(delete(Track).where(Track.path == task.path))
                    s.add(self._track_row(task))
                    stored_paths.append(task.path)
                elif kind == "retag":
                    self._retag(s, task)
                    stored_paths.append(task.path)
                else:
                    stage, message = payload
                    self.catalog.record_error(s, task.path, stage, message, run_id, task.file.size, task.file.mtime_ns)
            self.catalog.clear_errors(s, stored_paths)
        for _, task, _ in self._buffer:
            task.vectors, task.starts, task.done = {}, {}, None  # free the memory of stored tracks
        self._buffer.clear()
        self._last_commit = time.monotonic()

    def _track_row(self, task: Task) -> Track:
        done = task.done
        facts, tags = done.facts, done.tags
        rate = self.model.sample_rate
        clip_vectors = np.stack([task.vectors[i] for i in range(done.n_clips)])  # (n_clips, dim)
        mean = clip_vectors.mean(axis=0)  # the track embedding: mean of unit clip vectors
        track = Track(
            path=task.path, size=facts["size"], mtime_ns=facts["mtime_ns"], audio_hash=facts["audio_hash"],
            duration=facts["duration"], sample_rate=facts["sample_rate"], channels=facts["channels"],
            codec=facts["codec"], container=facts["container"], n_segments=done.n_clips,
            embedding=to_blob(mean), run_id=self.summary.run_id, **_tag_columns(tags),
        )
        track.segments = [
            Segment(
                index=i,
                start=task.starts[i] / rate,
                end=min((task.starts[i] + self.model.clip_samples) / rate, facts["duration"]),
                embedding=to_blob(clip_vectors[i]),
            )
            for i in range(done.n_clips)
        ]
        track.tags = _file_tags(tags)
        if self.tagger is not None:
            track.tags += [
                TrackTag(tag=t.tag, category=t.category, score=t.score, source="auto")
                for t in self.tagger.tags_for(mean)
            ]
        return track

    def _retag(self, session, task: Task) -> None:
        """Same audio, changed file: refresh facts and file tags, keep id and vectors."""
        facts = task.done.facts
        track = session.get(Track, task.previous_id)
        if track is None:
            return
        track.size, track.mtime_ns = facts["size"], facts["mtime_ns"]
        for column, value in _tag_columns(task.done.tags).items():
            setattr(track, column, value)
        session.execute(delete(TrackTag).where(TrackTag.track_id == track.id, TrackTag.source == "file"))
        for tag in _file_tags(task.done.tags):
            tag.track_id = track.id
            session.add(tag)

    # ---- prune ------------------------------------------------------------------------------------

    def _prune_or_count_missing(self, found: set[str]) -> None:
        """Tracks whose file is gone: removed with --prune, else counted. Files the scan saw are not stat'ed."""
        with self.catalog.session() as s:
            rows = s.execute(select(Track.id, Track.path)).all()
        gone = [row for row in rows if row.path not in found and not os.path.lexists(row.path)]
        if not self.options.prune:
            self.summary.missing = len(gone)
            return
        with self.catalog.session.begin() as s:
            ids = [row.id for row in gone]
            for start in range(0, len(ids), 500):
                s.execute(delete(Track).where(Track.id.in_(ids[start : start + 500])))
            stale = [p for p in s.scalars(select(IndexError_.path).distinct()) if not os.path.lexists(p)]
            self.catalog.clear_errors(s, stale)
        self.summary.removed = len(gone)

    # ---- progress ---------------------------------------------------------------------------------

    def _open_progress(self, total: int) -> None:
        if not self.options.progress:
            return
        from tqdm import tqdm

        self._progress = tqdm(total=total, unit="track", file=sys.stderr, dynamic_ncols=True,
                              desc="indexing", smoothing=0.1)

    def _advance_progress(self) -> None:
        if self._progress is not None:
            self._progress.update(1)
            minutes, seconds = divmod(int(self.summary.audio_seconds), 60)
            self._progress.set_postfix_str(
                f"audio {minutes // 60}:{minutes % 60:02d}:{seconds:02d}, {self.summary.failed} failed", refresh=False
            )

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None


def _tag_columns(tags) -> dict:
    return {
        "title": tags.title,
        "artist": tags.artist,
        "album": tags.album,
        "albumartist": tags.albumartist,
        "year": tags.year,
        "genre": "; ".join(tags.genres) or None,
        "tracknumber": tags.tracknumber,
        "title_from_filename": tags.from_filename,
    }


def _file_tags(tags) -> list[TrackTag]:
    return [TrackTag(tag=g, category="genre", score=None, source="file") for g in tags.genres]
