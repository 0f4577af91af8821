"""The indexer's stages, each a plain function over one :class:`Task` per file, the task carrying its outcome.

    scan   -> files under the roots (scan problems recorded as errors)
    plan   -> a Task per new or changed file; unchanged files (and unchanged known-bad ones) skipped
    decode -> the file's clips at the model rate, or an error naming the stage ("read", "decode")
    embed  -> one unit vector per clip, in batches of equal-length clips from any files
    store  -> catalog rows (track, segments, tags) or an ``errors`` row, in small transactions

An engine (``indexer.local_engine``, ``indexer.ray_engine``) moves tasks from plan to store: where
decoding and embedding run is its business; every engine hands finished tasks to one :class:`Store`,
so the guarantees (small transactions, no duplicates, errors recorded, resumable) live in one place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError

from indexer.catalog import Catalog, IndexError_, Segment, Track, TrackTag, to_blob
from indexer.decode import ClipMessage, DecodeJob, DecodeSettings, DoneMessage, ErrorMessage, decode_file
from indexer.scan import FoundFile, scan

COMMIT_ATTEMPTS = 5  # a transaction that collides with another writer (PostgreSQL) is written again


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

    def note_error(self, path: str, stage: str, message: str) -> None:
        self.failed += 1
        self.errors.append({"path": path, "stage": stage, "message": message})

    def to_json(self) -> dict:
        counts = {name: getattr(self, name) for name in ("indexed", "skipped", "failed", "removed", "retagged", "missing")}
        return {**counts, "errors": self.errors, "audio_hours": round(self.audio_seconds / 3600, 4),
                "seconds": round(self.seconds, 3), "model_busy": round(self.model_busy, 4),
                "generation": self.generation, "run_id": self.run_id, "interrupted": self.interrupted}


@dataclass
class Task:
    """One file's journey through the stages; ``outcome`` says how it ended ("track", "retag", "error")."""

    id: int
    file: FoundFile
    previous_id: int | None = None  # the catalog track this file had (replaced when it stores)
    previous_hash: str | None = None
    starts: dict[int, int] = field(default_factory=dict)  # clip index -> start sample
    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # clip index -> unit vector
    done: DoneMessage | None = None
    outcome: str | None = None
    error: tuple[str, str] | None = None  # (stage, message) when outcome == "error"

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def failed(self) -> bool:
        return self.outcome == "error"

    @property
    def complete(self) -> bool:
        return self.done is not None and len(self.vectors) == self.done.n_clips

    def fail(self, stage: str, message: str) -> None:
        self.outcome, self.error = "error", (stage, message)
        self.vectors.clear()

    def job(self) -> DecodeJob:
        return DecodeJob(self.id, self.path, self.previous_hash)


# --------------------------------------------------------------------------------------------------
# scan + plan


def scan_roots(roots: list[str], catalog: Catalog, *, exclude, run_id: int, summary: IndexSummary) -> list[FoundFile]:
    """The audio files under ``roots``; scan problems replace the roots' earlier scan errors."""
    result = scan(roots, exclude=exclude)
    with catalog.session.begin() as s:
        for root in roots:  # scan problems are re-established by every scan of their root
            under_root = or_(IndexError_.path == root, IndexError_.path.startswith(root.rstrip(os.sep) + os.sep))
            s.execute(delete(IndexError_).where(IndexError_.stage == "scan", under_root))
        for path, reason in result.problems:
            catalog.record_error(s, path, "scan", reason, run_id)
            summary.note_error(path, "scan", reason)
    return result.files


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
# decode + embed


def decode(task: Task, settings: DecodeSettings) -> list[np.ndarray]:
    """Decode a whole file: its clips in order (starts and facts land on the task, or its error)."""
    clips: list[np.ndarray] = []

    def collect(message) -> None:
        if isinstance(message, ClipMessage):
            task.starts[message.index] = message.start_sample
            clips.append(message.clip)
        elif isinstance(message, DoneMessage):
            task.done = message
        elif isinstance(message, ErrorMessage):
            task.fail(message.stage, message.message)

    try:
        decode_file(task.job(), settings, collect)
    except Exception as exc:  # noqa: BLE001 - a surprise in one file must not end the others
        task.fail("decode", f"unexpected {type(exc).__name__}: {exc}")
    if task.failed:
        return []
    return clips


def embed(model, clips: list[np.ndarray]) -> np.ndarray:
    """(n, dim) unit vectors of equal-length clips, in batches of the model's size."""
    import torch

    per_batch = max(1, model.clip_batch_samples // len(clips[0])) if clips else 1
    out = [
        model.embed_clips(torch.from_numpy(np.stack(clips[start : start + per_batch]))).numpy()
        for start in range(0, len(clips), per_batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)


# --------------------------------------------------------------------------------------------------
# store


@dataclass
class Store:
    """The one writer of a run: finished tasks become catalog rows, ``commit_every`` tasks or
    ``commit_seconds`` per transaction, so a killed run loses at most the uncommitted batch.

    ``on_commit(tracks)`` is told after each transaction that stored tracks (the run's running total).
    """

    catalog: Catalog
    run_id: int
    summary: IndexSummary
    sample_rate: int
    clip_samples: int
    commit_every: int = 16
    commit_seconds: float = 10.0
    tagger: object = None  # indexer.autotag.AutoTagger, when auto tags are on
    on_finish: Callable[[], None] | None = None  # after each task reaches its outcome (progress)
    on_commit: Callable[[int], None] | None = None
    buffer: list[Task] = field(default_factory=list)
    committed_tracks: int = 0
    _last_commit: float = field(default_factory=time.monotonic)

    def add(self, task: Task) -> None:
        """Take a task whose outcome is decided; counted now, written at the next commit."""
        self.buffer.append(task)
        if task.outcome == "track":
            self.summary.indexed += 1
            self.summary.audio_seconds += task.done.facts["duration"]
        elif task.outcome == "retag":
            self.summary.retagged += 1
        else:
            self.summary.note_error(task.path, *task.error)
        if self.on_finish is not None:
            self.on_finish()

    def maybe_commit(self) -> None:
        if len(self.buffer) >= self.commit_every or (
            self.buffer and time.monotonic() - self._last_commit >= self.commit_seconds
        ):
            self.commit()

    def commit(self) -> None:
        """Write the buffered tracks, retags and errors in one transaction (again, if it collided)."""
        if not self.buffer:
            return
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                with self.catalog.session.begin() as s:
                    tracks = self._write(s)
                break
            except (IntegrityError, OperationalError):
                # Another indexer stored one of these paths meanwhile, or the two deadlocked: the
                # transaction rolled back whole; written again, it keeps whichever row is current.
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        for task in self.buffer:
            task.vectors, task.starts, task.done = {}, {}, None  # free the memory of stored tracks
        self.buffer.clear()
        self._last_commit = time.monotonic()
        if tracks:
            self.committed_tracks += tracks
            if self.on_commit is not None:
                self.on_commit(self.committed_tracks)

    def _write(self, s) -> int:
        stored_paths, tracks = [], 0
        for task in sorted(self.buffer, key=lambda t: t.path):  # one order for every writer: fewer deadlocks
            if task.outcome == "track":
                facts = task.done.facts
                current = s.execute(
                    select(Track.id, Track.size, Track.mtime_ns, Track.audio_hash).where(Track.path == task.path)
                ).first()
                if current is None or (current.size, current.mtime_ns, current.audio_hash) != (
                    facts["size"], facts["mtime_ns"], facts["audio_hash"]
                ):  # else another indexer stored this very file meanwhile: keep its row
                    if current is not None:
                        s.execute(delete(Track).where(Track.id == current.id))
                    s.add(self._track_row(task))
                    tracks += 1
                stored_paths.append(task.path)
            elif task.outcome == "retag":
                self._retag(s, task)
                stored_paths.append(task.path)
            else:
                stage, message = task.error
                self.catalog.record_error(s, task.path, stage, message, self.run_id, task.file.size,
                                          task.file.mtime_ns)
        self.catalog.clear_errors(s, stored_paths)
        return tracks

    def _track_row(self, task: Task) -> Track:
        done = task.done
        facts, tags = done.facts, done.tags
        rate = self.sample_rate
        clip_vectors = np.stack([task.vectors[i] for i in range(done.n_clips)])  # (n_clips, dim)
        mean = clip_vectors.mean(axis=0)  # the track embedding: mean of unit clip vectors
        track = Track(
            path=task.path, size=facts["size"], mtime_ns=facts["mtime_ns"], audio_hash=facts["audio_hash"],
            duration=facts["duration"], sample_rate=facts["sample_rate"], channels=facts["channels"],
            codec=facts["codec"], container=facts["container"], n_segments=done.n_clips,
            embedding=to_blob(mean), run_id=self.run_id, **_tag_columns(tags),
        )
        track.segments = [
            Segment(
                index=i,
                start=task.starts[i] / rate,
                end=min((task.starts[i] + self.clip_samples) / rate, facts["duration"]),
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


def _tag_columns(tags) -> dict:
    """The Track columns that come from a file's tags (TrackTags has the fields of the same names)."""
    columns = {name: getattr(tags, name) for name in ("title", "artist", "album", "albumartist", "year", "tracknumber")}
    return {**columns, "genre": "; ".join(tags.genres) or None, "title_from_filename": tags.from_filename}


def _file_tags(tags) -> list[TrackTag]:
    return [TrackTag(tag=g, category="genre", score=None, source="file") for g in tags.genres]
