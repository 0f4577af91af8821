"""One indexing run: lock, record the run, then the stages (``indexer.stages``) through an engine, then
the vector indexes.

- **scan** and **plan** run here: unchanged files (same path, size, mtime) and unchanged known-bad
  files are skipped; a changed file keeps its audio hash so the decoder can tell a tag edit (refresh
  tags only) from new audio (embed again).
- **decode** and **embed** run in an engine: :class:`indexer.local_engine.LocalEngine` (decoder
  processes on this machine, the model in this process; the default) or
  :class:`indexer.ray_engine.RayEngine` (Ray Data tasks and an actor pool, on one machine or a cluster).
- **store**: the run's one :class:`~indexer.stages.Store` writes finished tasks in small transactions
  (``commit_every`` tracks or ``commit_seconds``), so a run killed at any moment loses at most the
  uncommitted batch, and the next run, planning from the catalog, finishes the job without duplicates.
- **vectors**: ``Library.sync`` brings the FAISS indexes up to date with the catalog at the end
  (and repairs them after a run that was killed before this step).

``IndexOptions.hold_file`` makes a run say when it has committed its first tracks and wait there: the
signal the kill/resume tests (and anyone checking a deployment's fault handling) act on.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from indexer.autotag import AutoTagger
from indexer.catalog import IndexError_, IndexRun, Track, utcnow
from indexer.local_engine import LocalEngine
from indexer.stages import IndexSummary, Store, plan, scan_roots
from indexer.vectors import Library, LibraryError

LOCK_FILENAME = ".indexer.lock"
MAX_TRACK_SECONDS = 4 * 3600  # longer files are refused as absurd (a whole-day stream, a corrupt header)
DECODE_TIMEOUT_SECONDS = 600.0  # a worker silent this long on one file is stopped and the file reported
HOLD_ENV = "MUQSEARCH_INDEX_HOLD"


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
    # After the first transaction that stores tracks, write this file (JSON: run id, tracks committed)
    # and wait until it is deleted: a run held mid-way, for kill/resume tests and fault drills.
    hold_file: str | None = None


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


class Indexer:
    """One indexing run of a library with a model, its decode and embed stages run by ``engine``."""

    def __init__(self, library: Library, model, model_name: str, options: IndexOptions | None = None,
                 engine=None):
        """``model``: a MuQMuLan, or a function returning one, called only once some file needs
        embedding -- so a re-run with nothing to do never waits for a model to load."""
        self.library = library
        self.catalog = library.catalog
        self._model = model
        self.model_name = model_name
        self.options = options or IndexOptions()
        self.engine = engine or LocalEngine()
        self.summary = IndexSummary()
        self.store: Store | None = None
        self._progress = None
        self._status = "done"
        self._held = False

    @property
    def model(self):
        if not isinstance(self._model, torch.nn.Module):
            self._model = self._model()
        return self._model

    # ---- entry point ------------------------------------------------------------------------------

    def run(self, roots) -> IndexSummary:
        started = time.monotonic()
        roots = [os.path.abspath(os.path.expanduser(str(r))) for r in roots]
        with library_lock(self.library.directory), ExitStack() as owner:
            self.summary.run_id = self._start_run(roots, owner)
            try:
                found = scan_roots(roots, self.catalog, exclude=[self.library.directory],
                                   run_id=self.summary.run_id, summary=self.summary)
                tasks, self.summary.skipped = plan(found, self.catalog, retry_errors=self.options.retry_errors)
                if tasks:
                    self.catalog.claim_fingerprint(self.model.fingerprint(), self.model_name, self.model.dim)
                    self.store = self._new_store()
                    self.engine.process(self, tasks)
                    self.store.commit()
                self._prune_or_count_missing({f.path for f in found})
            except BaseException as exc:  # keep what is finished, then let the problem through
                self.summary.interrupted = isinstance(exc, KeyboardInterrupt)
                self._status = "interrupted" if self.summary.interrupted else "failed"
                if self.store is not None:
                    self.store.commit()
                raise
            finally:
                self._close_progress()
                self.summary.generation = self.library.sync(optimize=self.options.optimize,
                                                            use_gpu=self.options.use_gpu)
                self.summary.seconds = time.monotonic() - started
                self._finish_run()
        return self.summary

    def _new_store(self) -> Store:
        return Store(
            self.catalog, self.summary.run_id, self.summary, self.model.sample_rate, self.model.clip_samples,
            commit_every=self.options.commit_every, commit_seconds=self.options.commit_seconds,
            on_finish=self._advance_progress, on_commit=self._hold,
        )

    def start_tagger(self) -> None:
        """Give the store its auto-tagger (embeds the vocabulary once per model; engines call this while
        their decoders start)."""
        if self.options.auto_tags:
            start = time.monotonic()
            try:
                self.store.tagger = AutoTagger.for_model(self.model, self.catalog)
            except IntegrityError:  # another indexer cached the vocabulary meanwhile: read its copy
                self.store.tagger = AutoTagger.for_model(self.model, self.catalog)
            self.summary.model_seconds += time.monotonic() - start

    def _start_run(self, roots: list[str], owner: ExitStack) -> int:
        with self.catalog.session.begin() as s:
            # A run still "running" whose owner is gone was killed (with SQLite: any, as we hold the lock).
            running = s.scalars(select(IndexRun.id).where(IndexRun.status == "running")).all()
            orphans = [run_id for run_id in running if self.catalog.is_orphaned(s, run_id)]
            if orphans:
                s.execute(update(IndexRun).where(IndexRun.id.in_(orphans)).values(status="interrupted"))
            run = IndexRun(roots=json.dumps(roots), model=self.model_name)
            s.add(run)
            s.flush()
            owner.enter_context(self.catalog.holding_run(run.id))  # before others can see the row
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

    def _hold(self, committed: int) -> None:
        """The "started" signal: after the first commit with tracks, publish it and wait to be released."""
        if self.options.hold_file is None or self._held:
            return
        self._held = True
        path = Path(self.options.hold_file)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps({"run_id": self.summary.run_id, "tracks": committed}) + "\n")
        os.replace(temporary, path)  # appears whole
        while path.exists():
            time.sleep(0.02)

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

    def open_progress(self, total: int) -> None:
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
