"""FAISS vector indexes of a library, derived from the catalog and persisted generation by generation.

Two inner-product indexes over unit-norm vectors, both answering with catalog ids:

- tracks:   one vector per track, the renormalised mean of its clip embeddings (the catalog stores the
            plain mean, as the model defines a track embedding);
- segments: one vector per 10 s clip (catalog ``segments`` rows).

Layout: ``DIR/vectors/gen-00000007/{tracks.faiss, segments.faiss, manifest.json}``, plus
``{tracks,segments}.vectors`` (float32 rows, memory-mapped) for an index of kind ``pq-disk``. A generation is
written into a temporary directory, every file fsynced, then renamed into place, and only then recorded
in the catalog's ``meta.index_generation``; a reader therefore only ever opens a complete generation.
The previous generation is kept so that a reader that has just read the old number can still open it.

Read API (for the search service, UI and API)::

    library = Library.open(directory)            # existing library; LibraryError if there is none
    indexes = library.load(use_gpu=False)        # VectorIndexes of the current generation
    scores, ids = indexes.search_tracks(queries, k, allowed_ids=None)    # (n, k) each; ids = track ids
    indexes.track_vectors(ids) / indexes.segment_vectors(ids)  # (n, dim) stored unit vectors
    library.rows_held(indexes) -> catalog.HeldRows   # catalog rows of the tracks/segments indexes hold
    library.generation                           # reload when the indexer has written a newer one
    library.fingerprint                          # the model every vector was made with
    library.catalog                              # the catalog.Catalog (counts, errors, meta, collections)

The status of a library (counts, errors, model, index, consistency) is ``indexer.status.library_status``.

Write API (for the indexer): ``library.sync()`` brings the indexes up to date with the catalog
(incrementally when the index kind allows it), ``library.check()`` compares them, ``library.repair()``
rebuilds them from the catalog's stored vectors, ``library.sync(optimize=True)`` rebuilds with the
index kind :func:`indexer.ann.index_kind_for` picks for the library's size (``Library.open(...,
exact_limit=N, in_memory_limit=M)`` moves its size thresholds, e.g. for tests on small libraries). A
``pq-disk`` index is built from the catalog a batch at a time (its vectors file is written as they pass)
and is rebuilt on any change: the previous generation's readers may still map its file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from indexer import ann
from indexer.catalog import (
    Catalog,
    CatalogError,
    HeldRows,
    Segment,
    Track,
    stack_blobs,
)
from indexer.layout import CACHE_DIRNAME, CATALOG_ENV, VECTORS_DIRNAME, catalog_file, default_library_dir
from muq_model.identity import same_vectors

GENERATION_PREFIX = "gen-"
KINDS = ("tracks", "segments")
READ_BATCH = 20_000  # vectors read from the catalog per query when building
CHECK_SAMPLE = 256  # stored vectors compared value by value in a consistency check


class LibraryError(RuntimeError):
    """A library directory that cannot be used as asked; the message says what to do."""


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# --------------------------------------------------------------------------------------------------
# Loaded indexes (read side)


@dataclass
class VectorIndexes:
    """The track and segment indexes of one generation, searched by inner product."""

    generation: int
    fingerprint: dict
    dim: int
    tracks: faiss.Index
    segments: faiss.Index

    def search_tracks(self, queries: np.ndarray, k: int, allowed_ids=None) -> tuple[np.ndarray, np.ndarray]:
        return ann.search(self.tracks, queries, k, allowed_ids=allowed_ids)

    def track_vectors(self, ids) -> np.ndarray:
        return _reconstruct(self.tracks, ids, self.dim)

    def segment_vectors(self, ids) -> np.ndarray:
        return _reconstruct(self.segments, ids, self.dim)


def _reconstruct(index: faiss.Index, ids, dim: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    return index.reconstruct_batch(ids) if ids.size else np.zeros((0, dim), np.float32)


def index_ids(index: faiss.Index) -> np.ndarray:
    """The catalog ids an index holds (every index here is an IndexIDMap2)."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Consistency


@dataclass
class Consistency:
    """What a catalog/index comparison found; ``ok`` when nothing."""

    generation: int
    problems: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)  # kind -> ids in the catalog, not the index
    extra: dict[str, int] = field(default_factory=dict)  # kind -> ids in the index, not the catalog
    mismatched: dict[str, int] = field(default_factory=dict)  # kind -> sampled vectors that differ

    @property
    def ok(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------------------------------
# The library


class Library:
    """A library directory: its catalog, its vector index generations, and a cache."""

    def __init__(self, directory: str | os.PathLike, catalog: Catalog, *, exact_limit: int | None = None,
                 in_memory_limit: int | None = None):
        self.directory = Path(directory)
        self.catalog = catalog
        self.exact_limit = exact_limit  # None: ann.EXACT_LIMIT, the measured threshold
        self.in_memory_limit = in_memory_limit  # None: ann.IN_MEMORY_LIMIT
        self.vectors_dir = self.directory / VECTORS_DIRNAME
        self.cache_dir = self.directory / CACHE_DIRNAME

    @classmethod
    def open(cls, directory: str | os.PathLike | None = None, *, create: bool = False,
             catalog_url: str | None = None, exact_limit: int | None = None,
             in_memory_limit: int | None = None) -> Library:
        """Open (or with create=True, make) the library in ``directory`` (default: default_library_dir())."""
        directory = Path(directory).expanduser() if directory else default_library_dir()
        catalog_url = catalog_url or os.environ.get(CATALOG_ENV)  # a shared catalog (PostgreSQL), if set
        if not create and catalog_url is None and not catalog_file(directory).exists():
            raise LibraryError(
                f"no library at {directory}: create one with `muqsearch index MUSIC_FOLDER --library {directory}`"
            )
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        try:
            catalog = Catalog(catalog_url or directory, create=create)
        except CatalogError as exc:
            raise LibraryError(str(exc)) from exc
        except DBAPIError as exc:  # e.g. the PostgreSQL server is down, or the database is not there
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
            where = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", str(catalog_url or directory))  # no password shown
            raise LibraryError(f"cannot open the catalog {where}: {reason}") from exc
        return cls(directory, catalog, exact_limit=exact_limit, in_memory_limit=in_memory_limit)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- facts ------------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The generation the catalog currently points readers at (0 = none written yet)."""
        return self.catalog.generation

    @property
    def fingerprint(self) -> dict | None:
        return self.catalog.fingerprint

    @property
    def dim(self) -> int | None:
        value = self.catalog.get_meta("dim")
        return int(value) if value else None

    def generation_dir(self, generation: int) -> Path:
        return self.vectors_dir / f"{GENERATION_PREFIX}{generation:08d}"

    def manifest(self, generation: int | None = None) -> dict | None:
        path = self.generation_dir(self.generation if generation is None else generation) / "manifest.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def rows_held(self, indexes: VectorIndexes) -> HeldRows:
        """The catalog rows of the tracks and segments ``indexes`` hold (rows the index lacks are left out)."""
        return self.catalog.rows_held(set(index_ids(indexes.tracks).tolist()), set(index_ids(indexes.segments).tolist()))

    # ---- loading ----------------------------------------------------------------------------------

    def load(self, *, use_gpu: bool = False) -> VectorIndexes:
        """The current generation's indexes. Raises LibraryError when they are missing or do not belong."""
        generation = self.generation
        fingerprint, dim = self.fingerprint, self.dim
        if fingerprint is None or dim is None:
            raise LibraryError(f"library {self.directory} is empty: run `muqsearch index MUSIC_FOLDER` first")
        if generation == 0:
            raise LibraryError(f"library {self.directory} has no vector index yet: run `muqsearch index`")
        directory = self.generation_dir(generation)
        manifest = self.manifest(generation)
        if manifest is None:
            raise LibraryError(
                f"vector index generation {generation} is missing from {directory}: "
                "run `muqsearch index` to repair it from the catalog"
            )
        if not same_vectors(manifest.get("fingerprint"), fingerprint):
            raise LibraryError(
                f"vector index generation {generation} was built with another model than the catalog's: "
                "run `muqsearch index` to repair it"
            )
        indexes = {}
        for kind in KINDS:
            index = ann.read_index(directory / f"{kind}.faiss")
            ann.configure_search(index)
            indexes[kind] = ann.to_gpu(index) if use_gpu else index
        return VectorIndexes(generation, fingerprint, dim, indexes["tracks"], indexes["segments"])

    def _load_for_update(self) -> dict[str, faiss.Index] | None:
        """The current generation as CPU indexes, or None when it is absent, unreadable or of another model."""
        try:
            loaded = self.load()
        except (LibraryError, RuntimeError):
            return None
        return {"tracks": loaded.tracks, "segments": loaded.segments}

    # ---- catalog vectors --------------------------------------------------------------------------

    def _catalog_ids(self, kind: str) -> np.ndarray:
        table = Track if kind == "tracks" else Segment
        with self.catalog.session() as s:
            return np.fromiter(s.scalars(select(table.id)), dtype=np.int64)

    def _catalog_vectors(self, kind: str, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) unit-norm vectors in the order of ids, read in batches."""
        table = Track if kind == "tracks" else Segment
        dim = self.dim
        out = np.empty((len(ids), dim), dtype=np.float32)
        position = {int(i): n for n, i in enumerate(ids)}
        with self.catalog.session() as s:
            for start in range(0, len(ids), READ_BATCH):
                batch = [int(i) for i in ids[start : start + READ_BATCH]]
                rows = s.execute(select(table.id, table.embedding).where(table.id.in_(batch))).all()
                if len(rows) != len(batch):
                    raise CatalogError(f"{kind}: {len(batch) - len(rows)} ids vanished from the catalog while reading")
                vectors = stack_blobs((row.embedding for row in rows), dim)
                out[[position[row.id] for row in rows]] = vectors
        return normalized(out)

    # ---- writing ----------------------------------------------------------------------------------

    def sync(self, *, optimize: bool = False, use_gpu: bool = False) -> int:
        """Make the indexes match the catalog; returns the generation readers should use.

        Adds and removes ids in place when the index kind supports it; otherwise (or with optimize=True)
        rebuilds from the catalog. Writes no new generation when nothing changed.
        """
        if self.dim is None:
            return self.generation  # nothing was ever indexed
        current = None if optimize else self._load_for_update()
        updated, changed = {}, optimize or current is None
        for kind in KINDS:
            catalog_ids = self._catalog_ids(kind)
            if current is None:
                updated[kind] = self._build(kind, catalog_ids, "auto", use_gpu)
                continue
            index = current[kind]
            held = index_ids(index)
            to_remove = np.setdiff1d(held, catalog_ids)
            to_add = np.setdiff1d(catalog_ids, held)
            if to_remove.size or to_add.size:
                changed = True
                updated[kind] = self._updated(kind, index, catalog_ids, to_add, to_remove, use_gpu)
            else:
                updated[kind] = index
        if not changed:
            return self.generation
        return self._write_generation(updated)

    def repair(self, *, use_gpu: bool = False) -> int:
        """Rebuild both indexes from the catalog's stored vectors, keeping their kinds; returns the generation."""
        if self.dim is None:
            return self.generation
        manifest = self.manifest() or {}
        updated = {}
        for kind in KINDS:
            index_kind = manifest.get(kind, {}).get("kind", "auto")
            updated[kind] = self._build(kind, self._catalog_ids(kind), index_kind, use_gpu)
        return self._write_generation(updated)

    def _build(self, kind: str, ids: np.ndarray, index_kind: str, use_gpu: bool) -> faiss.Index:
        index_kind = ann.buildable_kind(index_kind, len(ids), exact_limit=self.exact_limit,
                                        in_memory_limit=self.in_memory_limit)
        if index_kind == "pq-disk":  # never every vector in RAM: a training sample, then batch by batch
            sampled = np.random.default_rng(0).choice(len(ids), size=ann.disk_train_size(len(ids)), replace=False)
            batches = (self._catalog_vectors(kind, ids[start : start + READ_BATCH])
                       for start in range(0, len(ids), READ_BATCH))
            self.vectors_dir.mkdir(parents=True, exist_ok=True)
            staging = self.vectors_dir / f".staging-{os.getpid()}-{kind}{ann.VECTORS_SUFFIX}"
            return ann.build_disk_index(ids, batches, self._catalog_vectors(kind, ids[sampled]), staging,
                                        sample_positions=sampled)
        return ann.build_index(self._catalog_vectors(kind, ids), ids, index_kind, use_gpu=use_gpu)

    def _updated(self, kind, index, catalog_ids, to_add, to_remove, use_gpu) -> faiss.Index:
        """index with to_remove taken out and to_add put in; a rebuild of the same kind if it cannot."""
        if ann.index_kind(index) == "pq-disk" or (to_remove.size and not ann.remove_ids(index, to_remove)):
            # HNSW and IVF-with-direct-map cannot remove, pq-disk changes nothing in place: rebuild, same kind
            return self._build(kind, catalog_ids, ann.index_kind(index), use_gpu)
        if to_add.size:
            index.add_with_ids(self._catalog_vectors(kind, to_add), to_add)
        return index

    def _write_generation(self, indexes: dict[str, faiss.Index]) -> int:
        """Persist indexes as a new generation (write, fsync, rename), then point the catalog at it."""
        self.vectors_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        previous = self.generation
        existing = [previous] + [_generation_of(p) for p in self.vectors_dir.glob(f"{GENERATION_PREFIX}*")]
        generation = max(g for g in existing if g is not None) + 1
        final = self.generation_dir(generation)
        temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        temporary.mkdir()
        manifest = {"generation": generation, "fingerprint": self.fingerprint, "dim": self.dim}
        for kind, index in indexes.items():
            cpu = faiss.index_gpu_to_cpu(index) if _is_gpu(index) else index
            for path in ann.write_index(cpu, temporary / f"{kind}.faiss"):
                _fsync(path)
            manifest[kind] = {"kind": ann.index_kind(cpu), "count": int(cpu.ntotal)}
        manifest_path = temporary / "manifest.json"
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _fsync(manifest_path)
        _fsync(temporary)
        os.rename(temporary, final)
        _fsync(self.vectors_dir)
        with self.catalog.session.begin() as s:
            self.catalog.set_meta(s, "index_generation", str(generation))
            self.catalog.set_meta(s, "index_type", manifest["tracks"]["kind"])
            self.catalog.set_meta(s, "segment_index_type", manifest["segments"]["kind"])
        self._remove_old_generations(keep=(generation, previous))
        self._remove_stale_temporaries(ours_too=True)  # our pq-disk staging files live on under the generation
        return generation

    def _remove_stale_temporaries(self, *, ours_too: bool = False) -> None:
        """Leftovers of killed writes; this process's pq-disk staging files only once they are linked."""
        for path in self.vectors_dir.glob(f".{GENERATION_PREFIX}*.tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.vectors_dir.glob(".staging-*"):
            if ours_too or not path.name.startswith(f".staging-{os.getpid()}-"):
                path.unlink(missing_ok=True)

    def _remove_old_generations(self, keep: tuple[int, ...]) -> None:
        for path in self.vectors_dir.glob(f"{GENERATION_PREFIX}*"):
            generation = _generation_of(path)
            if generation is not None and generation not in keep:
                shutil.rmtree(path, ignore_errors=True)

    # ---- checking ---------------------------------------------------------------------------------

    def check(self, *, sample: int = CHECK_SAMPLE, seed: int = 0) -> Consistency:
        """Compare the current generation with the catalog: fingerprint, id sets, a sample of vectors."""
        report = Consistency(self.generation)
        if self.dim is None:
            return report  # empty library: nothing to compare
        try:
            loaded = self.load()
        except (LibraryError, RuntimeError) as exc:
            report.problems.append(str(exc))
            return report
        rng = np.random.default_rng(seed)
        for kind in KINDS:
            index = getattr(loaded, kind)
            held, catalog_ids = index_ids(index), self._catalog_ids(kind)
            missing, extra = np.setdiff1d(catalog_ids, held), np.setdiff1d(held, catalog_ids)
            if missing.size:
                report.missing[kind] = int(missing.size)
                report.problems.append(f"{kind}: {missing.size} catalog vectors are not in the index")
            if extra.size:
                report.extra[kind] = int(extra.size)
                report.problems.append(f"{kind}: {extra.size} index vectors are not in the catalog")
            common = np.intersect1d(held, catalog_ids)
            if common.size:
                picked = rng.choice(common, size=min(sample, common.size), replace=False)
                stored = index.reconstruct_batch(picked)
                expected = self._catalog_vectors(kind, picked)
                differ = int((np.abs(stored - expected).max(axis=1) > 1e-4).sum())
                if differ:
                    report.mismatched[kind] = differ
                    report.problems.append(f"{kind}: {differ} of {picked.size} sampled vectors differ from the catalog")
        return report


def _generation_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith(GENERATION_PREFIX):
        return None
    try:
        return int(name[len(GENERATION_PREFIX) :])
    except ValueError:
        return None


def _is_gpu(index: faiss.Index) -> bool:
    return "Gpu" in type(index).__name__


def _fsync(path: Path) -> None:
    """Flush a file's data, or make a directory's new entries durable (skipped where dirs cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
