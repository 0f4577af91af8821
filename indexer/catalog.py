"""The catalog: SQLAlchemy 2.x models over SQLite (WAL, the default) or PostgreSQL, the source of truth
of a library.

Every vector lives here as a float32 blob (BLOB / BYTEA), so the FAISS indexes in ``DIR/vectors/`` can
always be rebuilt from it (see ``indexer/vectors.py``). A plain path means SQLite (``DIR/catalog.sqlite``);
``postgresql://user@host/db`` (or ``$MUQSEARCH_CATALOG``) a PostgreSQL database, reached with psycopg 3.
The schema and its migrations are the same on both; several indexers may write one PostgreSQL catalog
at once (writes that collide are retried by ``indexer.stages.Store``; schema and meta writes are
serialised with an advisory lock or are upserts).

Tables
    meta             key/value: schema_version, model_fingerprint (JSON), model_name, index_generation,
                     index_type (track index kind), segment_index_type
    tracks           one row per indexed file: file facts, tags, audio hash, track embedding (the mean of
                     its unit-norm clip embeddings, not renormalised)
    segments         the 10 s clips of each track: index, start/end seconds, embedding (unit norm)
    track_tags       (track, tag, category, score, source): source "file" = from the file's genre tag,
                     "auto" = scored against the built-in vocabulary with the library's model
    errors           outstanding problems, one row per file and stage (removed once the file indexes)
    index_runs       one row per `muqsearch index` run, with its counts
    text_collections named sets of texts with their embeddings (``muqsearch texts add``; the built-in
    texts            vocabulary is cached here as collection :data:`VOCABULARY_COLLECTION`)

Ids are AUTOINCREMENT and never reused, so a FAISS index of an older generation can never point at
a different track than the one it was built from. A track whose audio changes gets a new id.

Schema versions live in ``meta.schema_version``; :data:`MIGRATIONS` upgrades older catalogs in place,
and a catalog newer than this code is refused rather than misread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import (
    BigInteger,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from indexer.layout import CATALOG_ENV as CATALOG_ENV  # defined with the layout, importable here too
from indexer.layout import catalog_file
from muq_model.identity import made_in_precision, precision_conflict, same_vectors

SCHEMA_VERSION = 1
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
VOCABULARY_COLLECTION = "builtin:vocabulary"
TAG_SOURCES = ("file", "auto")
SCHEMA_LOCK = 0x6D7571  # PostgreSQL advisory lock key ("muq") serialising schema and model claims
RUN_LOCK = 0x6D7572  # PostgreSQL advisory lock class: (RUN_LOCK, run id) is held by the run's indexer
# File sizes and nanosecond mtimes need 64 bits: BIGINT on PostgreSQL; SQLite's INTEGER already is.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class CatalogError(RuntimeError):
    """The catalog cannot be used as asked (newer schema, different model, ...); the message says why."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


def stack_blobs(blobs: Iterable[bytes], dim: int) -> np.ndarray:
    """(n, dim) float32 from n embedding blobs."""
    joined = b"".join(blobs)
    return np.frombuffer(joined, dtype=np.float32).reshape(-1, dim).copy()


# --------------------------------------------------------------------------------------------------
# Models


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Track(Base):
    __tablename__ = "tracks"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)  # absolute, as found by the scan
    # file facts (size + mtime decide "unchanged"; the audio hash decides "same audio" after a tag edit)
    size: Mapped[int] = mapped_column(BigInt)
    mtime_ns: Mapped[int] = mapped_column(BigInt)
    audio_hash: Mapped[str] = mapped_column(String(64), index=True)
    duration: Mapped[float] = mapped_column(Float)  # seconds of decoded audio
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    codec: Mapped[str] = mapped_column(String(64))
    container: Mapped[str] = mapped_column(String(64))
    # tags (title always set: from the file name when the file has none)
    title: Mapped[str] = mapped_column(Text)
    artist: Mapped[str | None] = mapped_column(Text, index=True)
    album: Mapped[str | None] = mapped_column(Text, index=True)
    albumartist: Mapped[str | None] = mapped_column(Text)
    year: Mapped[int | None] = mapped_column(Integer, index=True)
    genre: Mapped[str | None] = mapped_column(Text)  # the file's genres joined with "; "
    tracknumber: Mapped[int | None] = mapped_column(Integer)
    title_from_filename: Mapped[bool] = mapped_column(default=False)
    # vectors
    n_segments: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    indexed_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("index_runs.id", ondelete="SET NULL"))

    segments: Mapped[list[Segment]] = relationship(
        back_populates="track", cascade="all, delete-orphan", passive_deletes=True, order_by="Segment.index"
    )
    tags: Mapped[list[TrackTag]] = relationship(
        back_populates="track", cascade="all, delete-orphan", passive_deletes=True
    )

    def vector(self) -> np.ndarray:
        return from_blob(self.embedding)

    def to_dict(self) -> dict:
        """The track's facts and tags, without vectors or bookkeeping (what two index runs must agree on)."""
        return {name: getattr(self, name) for name in TRACK_FACTS}


TRACK_FACTS = ("id", "path", "title", "artist", "album", "albumartist", "year", "genre", "tracknumber", "duration",
               "sample_rate", "channels", "codec", "size", "n_segments")


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("track_id", "index"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # 0-based clip number within the track
    start: Mapped[float] = mapped_column(Float)  # seconds
    end: Mapped[float] = mapped_column(Float)  # seconds (the wrapped last clip ends at the track's end)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)

    track: Mapped[Track] = relationship(back_populates="segments")

    def vector(self) -> np.ndarray:
        return from_blob(self.embedding)


class TrackTag(Base):
    __tablename__ = "track_tags"
    __table_args__ = (
        UniqueConstraint("track_id", "tag", "category", "source"),
        Index("ix_track_tags_tag", "tag"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    tag: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))  # genre, mood, instrument, era, scene
    score: Mapped[float | None] = mapped_column(Float)  # cosine similarity for "auto", None for "file"
    source: Mapped[str] = mapped_column(String(8))  # "file" | "auto"

    track: Mapped[Track] = relationship(back_populates="tags")


class IndexError_(Base):
    """A file that could not be indexed (named with a trailing _ to keep Python's IndexError)."""

    __tablename__ = "errors"
    __table_args__ = (UniqueConstraint("path", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, index=True)
    stage: Mapped[str] = mapped_column(String(16))  # scan, read, decode, embed, store
    message: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("index_runs.id", ondelete="SET NULL"))
    # the file as it was when it failed: an unchanged bad file is not retried on every run
    size: Mapped[int | None] = mapped_column(BigInt)
    mtime_ns: Mapped[int | None] = mapped_column(BigInt)

    def to_dict(self) -> dict:
        return {"path": self.path, "stage": self.stage, "message": self.message}


class IndexRun(Base):
    __tablename__ = "index_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started: Mapped[datetime] = mapped_column(default=utcnow)
    finished: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")  # running, done, interrupted, failed
    roots: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    model: Mapped[str | None] = mapped_column(Text)
    indexed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class TextCollection(Base):
    __tablename__ = "text_collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    # which model made the embeddings (JSON fingerprint) and of what source data (e.g. vocabulary hash)
    fingerprint: Mapped[str] = mapped_column(Text)
    source_hash: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(default=utcnow)

    texts: Mapped[list[Text_]] = relationship(
        back_populates="collection", cascade="all, delete-orphan", passive_deletes=True, order_by="Text_.id"
    )


class Text_(Base):
    """One text of a collection with its embedding (named with a trailing _ to keep sqlalchemy's Text)."""

    __tablename__ = "texts"
    __table_args__ = (UniqueConstraint("collection_id", "text"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("text_collections.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(32))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)

    collection: Mapped[TextCollection] = relationship(back_populates="texts")

    def vector(self) -> np.ndarray:
        return from_blob(self.embedding)


# --------------------------------------------------------------------------------------------------
# Opening


def catalog_url(location: str | os.PathLike) -> str:
    """A SQLAlchemy URL for a library directory, a catalog file path, or a URL (returned as is)."""
    url = str(location)
    if "://" in url:
        for plain in ("postgresql://", "postgres://"):  # SQLAlchemy's default driver is psycopg2; ours is 3
            if url.startswith(plain):
                return "postgresql+psycopg://" + url.removeprefix(plain)
        return url
    path = Path(location)
    if path.suffix.lower() not in SQLITE_SUFFIXES:
        path = catalog_file(path)
    return f"sqlite:///{path.resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the search service) never block the indexer
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash never corrupts, at most loses unsynced
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@dataclass(frozen=True)
class HeldRows:
    """Catalog rows of the tracks and segments an index generation holds (SQLAlchemy result rows)."""

    tracks: list  # (id, path, title, artist, album, year, duration, audio_hash), by id
    tags: list  # (track_id, tag, source, score)
    segments: list  # (id, track_id, start, end), by track and position
    roots: list[str]  # every folder an index run was given


class Catalog:
    """An open catalog: an engine, a session factory, and the library-wide facts kept in ``meta``."""

    def __init__(self, location: str | os.PathLike, *, create: bool = True):
        url = catalog_url(location)
        if url.startswith("sqlite:///"):
            db_path = Path(url.removeprefix("sqlite:///"))
            if not db_path.exists() and not create:
                raise CatalogError(f"no catalog at {db_path}: run `muqsearch index` first")
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)  # for messages
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self._migrate(create)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- schema -----------------------------------------------------------------------------------

    def serialized(self, session: Session) -> None:
        """Make the rest of this transaction wait for any other writer's serialized part (PostgreSQL;
        SQLite serialises writers anyway)."""
        if self.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})

    @contextmanager
    def holding_run(self, run_id: int):
        """While inside, this process visibly owns index run ``run_id`` (PostgreSQL: an advisory lock on a
        connection of its own, released by the server if the process dies)."""
        if self.engine.dialect.name != "postgresql":
            yield  # SQLite: the library lock already says a run is alive
            return
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key, :run)"), {"key": RUN_LOCK, "run": run_id})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key, :run)"), {"key": RUN_LOCK, "run": run_id})
                connection.commit()

    def is_orphaned(self, session: Session, run_id: int) -> bool:
        """Whether a run recorded as running has no live owner (PostgreSQL: nobody holds its lock)."""
        if self.engine.dialect.name != "postgresql":
            return True  # SQLite: only the caller, which holds the library lock, can be running
        free = session.scalar(text("SELECT pg_try_advisory_lock(:key, :run)"), {"key": RUN_LOCK, "run": run_id})
        if free:
            session.execute(text("SELECT pg_advisory_unlock(:key, :run)"), {"key": RUN_LOCK, "run": run_id})
        return bool(free)

    def _migrate(self, create: bool) -> None:
        with self.session.begin() as s:
            self.serialized(s)  # two processes opening a new PostgreSQL catalog create it once
            if not self.engine.dialect.has_table(s.connection(), "meta"):
                if not create:
                    raise CatalogError(f"{self.url} is not a MuQ Search catalog (no meta table)")
                Base.metadata.create_all(s.connection())
                s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            version = int(s.get(Meta, "schema_version").value)
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"{self.url} has catalog schema {version}, newer than this muqsearch understands "
                    f"({SCHEMA_VERSION}): upgrade muqsearch"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](s)
                s.get(Meta, "schema_version").value = str(target)

    # ---- meta -------------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.session() as s:
            row = s.get(Meta, key)
            return row.value if row is not None else default

    def set_meta(self, session: Session, key: str, value: str) -> None:
        """Insert or replace (an upsert, so concurrent writers never collide on the key)."""
        insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        statement = insert(Meta).values(key=key, value=value)
        session.execute(statement.on_conflict_do_update(index_elements=[Meta.key], set_={"value": value}))

    @property
    def fingerprint(self) -> dict | None:
        """The model fingerprint every stored vector was made with (None for an empty library)."""
        value = self.get_meta("model_fingerprint")
        return json.loads(value) if value else None

    @property
    def generation(self) -> int:
        return int(self.get_meta("index_generation", "0"))

    def claim_fingerprint(self, fingerprint: dict, model_name: str, dim: int) -> None:
        """Record the model of a library's vectors, or refuse a model whose vectors would not match.

        The same weights loaded by another name (a moved directory, the hub cache) are the same model:
        the stored fingerprint keeps its first provenance and only the recorded name follows the user."""
        with self.session.begin() as s:
            self.serialized(s)  # two indexers starting on a new catalog agree on one model
            stored = s.get(Meta, "model_fingerprint")
            same = stored is not None and same_vectors(json.loads(stored.value), fingerprint)
            if stored is not None and not same:
                has_vectors = s.scalar(select(Track.id).limit(1)) is not None
                conflict = precision_conflict(json.loads(stored.value), made_in_precision(fingerprint))
                if has_vectors and conflict:
                    raise CatalogError(conflict)
                if has_vectors:
                    raise CatalogError(
                        f"this library's vectors were made by model {self.get_meta('model_name')!r} "
                        f"(fingerprint {json.loads(stored.value)}); model {model_name!r} has fingerprint "
                        f"{fingerprint}. Vectors of different models cannot be mixed: use another "
                        "--library for this model, or the library's own model."
                    )
            if not same:
                self.set_meta(s, "model_fingerprint", json.dumps(fingerprint, sort_keys=True))
            self.set_meta(s, "model_name", model_name)
            self.set_meta(s, "dim", str(dim))

    # ---- reading ----------------------------------------------------------------------------------

    def counts(self) -> dict:
        from sqlalchemy import func

        with self.session() as s:
            return {
                "tracks": s.scalar(select(func.count(Track.id))),
                "segments": s.scalar(select(func.count(Segment.id))),
                "errors": s.scalar(select(func.count(IndexError_.id))),
                "audio_seconds": float(s.scalar(select(func.coalesce(func.sum(Track.duration), 0.0)))),
            }

    def track_paths(self) -> list[str]:
        """Every track's file, in the order the tracks were first indexed."""
        with self.session() as s:
            return list(s.scalars(select(Track.path).order_by(Track.id)))

    def rows_held(self, track_ids: set[int], segment_ids: set[int]) -> HeldRows:
        """The rows of the given tracks and segments, their tags and the folders ever indexed, read in
        one session. Whole tables are read and then matched (an SQL ``IN`` over a large library's ids
        would exceed SQLite's bound-parameter limit)."""
        with self.session() as s:
            tracks = [r for r in s.execute(
                select(Track.id, Track.path, Track.title, Track.artist, Track.album, Track.year, Track.duration,
                       Track.audio_hash).order_by(Track.id)
            ) if r.id in track_ids]
            tags = [r for r in s.execute(select(TrackTag.track_id, TrackTag.tag, TrackTag.source, TrackTag.score))
                    if r.track_id in track_ids]
            segments = [r for r in s.execute(
                select(Segment.id, Segment.track_id, Segment.start, Segment.end).order_by(Segment.track_id, Segment.index)
            ) if r.id in segment_ids]
            roots = sorted({root for (value,) in s.execute(select(IndexRun.roots)) for root in json.loads(value or "[]")})
        return HeldRows(tracks, tags, segments, roots)

    def errors(self) -> list[IndexError_]:
        with self.session() as s:
            return list(s.scalars(select(IndexError_).order_by(IndexError_.path, IndexError_.stage)))

    # ---- errors -----------------------------------------------------------------------------------

    @staticmethod
    def record_error(
        session: Session, path: str, stage: str, message: str, run_id: int | None,
        size: int | None = None, mtime_ns: int | None = None,
    ) -> None:
        """Replace any earlier error of this file with this one."""
        session.execute(delete(IndexError_).where(IndexError_.path == path))
        session.add(IndexError_(path=path, stage=stage, message=message, run_id=run_id, size=size, mtime_ns=mtime_ns))

    @staticmethod
    def clear_errors(session: Session, paths: Iterable[str]) -> None:
        paths = list(paths)
        for start in range(0, len(paths), 500):
            session.execute(delete(IndexError_).where(IndexError_.path.in_(paths[start : start + 500])))


# Schema version -> function upgrading a catalog from the previous version (runs inside a transaction).
MIGRATIONS: dict[int, Callable[[Session], None]] = {}
