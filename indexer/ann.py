"""FAISS indexes over unit-norm embeddings: searched by inner product, answering with catalog ids.

The catalog is the source of truth; these indexes are rebuilt from its vectors (``indexer/vectors.py``
persists them). Every in-memory index is an ``IndexIDMap2`` around one of four searchers, so any index
returns catalog ids, can hand back a stored vector by id, and is written to disk by ``faiss.write_index``
as one file; ``pq-disk`` (:class:`DiskRefinedIndex`) offers the same, from a faiss file of codes and a
file of float32 vectors (:func:`write_index` / :func:`read_index` handle both).

Which kind for which size (:func:`index_kind_for`, the only place the rule lives; the figures come from
``python -m benchmarks search`` on a quiet 2-core machine: one query at a time, 2 threads, 512-d unit
vectors, recall@10 against exact search):

- ``flat`` below :data:`EXACT_LIMIT` vectors: exact ``IndexFlatIP``. A query costs about 0.2 ms per
  1,000 vectors (20 ms at 100 k, 205 ms at 1 M), so up to 50 k it stays near 10 ms with perfect recall
  and no build time.
- ``pq-refine`` from :data:`EXACT_LIMIT` to :data:`IN_MEMORY_LIMIT`: ``IndexRefineFlat`` over an ``IndexIVFPQFastScan`` with one
  4-bit sub-quantizer per :data:`PQ_DIMS_PER_CODE` dimensions (PQ256x4fs at 512-d, 128 bytes of codes a
  vector). Every query scans all codes with SIMD fast-scan and re-ranks the best ``k * k_factor`` by
  exact inner product from the stored float32 vectors. It probes all of its :data:`PQ_REFINE_LISTS`
  lists: they are there so that one query's scan runs on every thread (fast-scan ``implem`` 14; a flat
  ``IndexPQFastScan`` scans on one thread, 12-14 ms at 1 M against ~9 ms on two), not to prune. Because
  it scans everything, its recall does not depend on the data having clusters: uniformly random vectors,
  which defeat IVF and HNSW, are the case it is tuned on. At 1 M (two quiet runs): 8.6-11.8 ms p50
  (p99 10-16 ms), recall 0.999 on random vectors, 8.7-9.1 ms and 1.0 on clustered ones, 17-25x faster
  than exact search; at 100 k 1.2-1.6 ms, recall 1.0. Built in 10-11 s at 1 M (2.3 s at 100 k), it adds incrementally, removes in
  place (:func:`remove_ids`) and takes 2,192 bytes a vector on disk (the float32 vectors it re-ranks
  from, 128 bytes of codes, the id), about what IVF-Flat (2,076) and HNSW (2,328) take. faiss-gpu has no
  fast-scan, so it stays on the CPU.
- ``pq-disk`` from :data:`IN_MEMORY_LIMIT` (2 M) up, where pq-refine's vectors would take more than
  4.4 GB of RAM: the same 4-bit codes in ~sqrt(n) IVF lists (at most :data:`DISK_MAX_LISTS`), ~145 bytes a
  vector in RAM with the ids, and the float32 vectors in a memory-mapped file beside them that the
  shortlist (``k * DISK_K_FACTOR``) is re-ranked from, a page per candidate, prefetched together. Its
  build (:func:`build_disk_index`) streams: vectors arrive in chunks and are written and encoded as they
  pass. It also chooses how many lists to probe: the fewest with which sampled vectors find 98 % of
  their exact top 10. Clustered data needs few; vectors without clusters need all (a full scan of the
  codes, whose cost grows with n). Measured on a busy 2-core machine (load average 4.5-20, 2026-11-30):
  10 M random vectors, all 1,024 lists probed: recall@10 0.975, p50 103 ms wall / 89 ms CPU; 3 M
  clustered ones, 1 of 1,024 lists probed: recall 0.988, p50 9.9 ms wall / 7.5 ms CPU; 144-145 bytes a
  vector in RAM, 2,192 on disk; built in 28 min at 10 M (16 min at 3 M) from streamed chunks, peak RSS
  4.1 GB. Re-ranking from float16 copies would cost 0.001 of recall and halve the file. Filters over
  10 M random vectors keep recall 1.0 but take ~390 ms of CPU (0.1 % and 1 % of the ids), probably
  because the translated selector looks up every scanned position's id.
- ``hnsw`` (``IndexHNSWFlat``) and ``ivf`` (``IndexIVFFlat``, ~2 sqrt(n) lists) are still built on request
  (and loaded from older libraries), but never chosen: on clustered data they are faster (IVF nprobe 16:
  1.8 ms at 1 M, recall 1.0), but on random vectors their recall collapses (1 M: IVF 0.33 at nprobe
  256/2000 in 23 ms; HNSW 0.31 at efSearch 2048 in 113 ms, 0.90 already at 100 k) and HNSW takes 27
  minutes to build at 1 M. IVF also runs on faiss-gpu; ``muqsearch index --optimize`` moves a library
  to the kind chosen for its size.

Metadata filters: :func:`search` with ``allowed_ids`` restricts results to a set of catalog ids without
losing recall to the filter. A small set (up to :data:`EXACT_FILTER_LIMIT`) is scored exactly from its
stored vectors. A larger one goes through a faiss ``IDSelector``: pq-refine's fast-scan skips the
vectors it rejects, so its shortlist holds allowed vectors only and needs no widening; HNSW and IVF
widen their search as the set's share s of the index shrinks (efSearch / s, nprobe / sqrt(s)).
pq-refine on 1 M vectors, random or clustered: 0.1 % / 1 % / 10 % / 50 % of the ids answer in 0.75 /
3.0 / 13 / 15 ms p50, recall@10 1.0 against exact search among them; a filter that keeps the half of
the ids least like the query (its shortlist cannot vouch for itself) is scanned exactly: 150-170 ms.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

KINDS = ("flat", "pq-refine", "pq-disk", "hnsw", "ivf")
# Size thresholds of the automatic choice (index_kind_for): exact below EXACT_LIMIT, pq-refine below
# IN_MEMORY_LIMIT (its float32 vectors in RAM: 4.4 GB at 2 M), pq-disk from there on.
EXACT_LIMIT = 50_000
IN_MEMORY_LIMIT = 2_000_000
PQ_DIMS_PER_CODE = 2  # 4 bits per 2 dims: at 512-d, 128 bytes of codes; 4 dims per code lost too much recall
PQ_BITS = 4  # fast-scan codes are 4-bit
PQ_TRAIN_SAMPLE = 20_000  # faiss uses at most 256 points per centroid (4,096 for 16 centroids) anyway
PQ_REFINE_LISTS = 64  # all probed: lists let one query's scan run on every thread, they prune nothing
DEFAULT_K_FACTOR = 100  # re-ranked shortlist = k * k_factor
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE = 64
EXACT_FILTER_LIMIT = 20_000
MAX_WIDENED_EF_SEARCH = 4096
MAX_BITMAP_ID = 1 << 28  # a 32 MiB bitmap; larger catalog ids use a hash set instead
IVF_TRAIN_POINTS_PER_LIST = 50  # faiss warns below 39 points per centroid
DISK_MAX_LISTS = 1024  # pq-disk lists: ~sqrt(n) up to this (assigning 10 M vectors to them: 10 TFLOP)
DISK_K_FACTOR = 50  # pq-disk shortlist = k * 50: each candidate costs a page read when not in the page cache
CALIBRATION_QUERIES = 64  # pq-disk: sampled vectors whose exact top 10 choose the lists probed
CALIBRATION_RECALL = 0.98  # ... the fewest lists that find this share of it
VECTORS_SUFFIX = ".vectors"  # pq-disk's float32 rows beside its .faiss file


class IndexFileError(RuntimeError):
    """An index file that does not match its companion (a pq-disk vectors file of the wrong size)."""


def index_kind_for(n: int, *, exact_limit: int | None = None, in_memory_limit: int | None = None) -> str:
    """The kind ``build_index(kind="auto")`` picks for n vectors (the limits override :data:`EXACT_LIMIT`
    and :data:`IN_MEMORY_LIMIT`)."""
    if n < (EXACT_LIMIT if exact_limit is None else exact_limit):
        return "flat"
    return "pq-refine" if n < (IN_MEMORY_LIMIT if in_memory_limit is None else in_memory_limit) else "pq-disk"


def buildable_kind(kind: str, n: int, *, exact_limit: int | None = None, in_memory_limit: int | None = None) -> str:
    """``kind`` ("auto" resolved for n vectors), or ``flat`` when n vectors are too few to train it on."""
    if kind == "auto":
        kind = index_kind_for(n, exact_limit=exact_limit, in_memory_limit=in_memory_limit)
    if n == 0 or (kind == "ivf" and n < IVF_TRAIN_POINTS_PER_LIST):
        return "flat"
    return kind


def build_index(
    vectors: np.ndarray, ids: np.ndarray, kind: str = "auto", *, use_gpu: bool = False, seed: int = 0,
    exact_limit: int | None = None, in_memory_limit: int | None = None, path: str | os.PathLike | None = None,
):
    """An inner-product index over ``vectors`` (float32 (n, d), unit-norm rows) answering with ``ids``.

    ``use_gpu=True`` moves flat and IVF indexes to the first GPU when faiss-gpu is importable and sees one
    (HNSW and the PQ kinds have no GPU version and stay on the CPU); otherwise the CPU index is returned,
    with a warning. ``pq-disk`` writes its vectors to ``path`` (default: an unnamed temporary file);
    :func:`build_disk_index` builds it from chunks without holding every vector.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or ids.shape != (vectors.shape[0],):
        raise ValueError(f"vectors must be (n, d) with one id per row; got {vectors.shape} and ids {ids.shape}")
    if np.unique(ids).size != ids.size:
        raise ValueError("ids must be unique")
    n, dim = vectors.shape
    if kind == "auto":
        kind = index_kind_for(n, exact_limit=exact_limit, in_memory_limit=in_memory_limit)
    if kind == "pq-disk":
        sample_positions = np.random.default_rng(seed).choice(n, size=min(n, disk_train_size(n)), replace=False)
        chunks = (vectors[start : start + 65536] for start in range(0, n, 65536))
        return build_disk_index(ids, chunks, vectors[sample_positions], path, sample_positions=sample_positions,
                                seed=seed)
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif kind == "pq-refine":
        inner = _trained_pq_refine(vectors, seed=seed)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif kind == "ivf":
        inner = _trained_ivf(vectors, seed=seed)
    else:
        raise ValueError(f"unknown index kind {kind!r}: use auto or one of {', '.join(KINDS)}")
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vectors, ids)
    if kind == "ivf":
        inner.make_direct_map()  # lets the id map reconstruct stored vectors (filters, re-ranking)
    configure_search(index)
    return to_gpu(index) if use_gpu else index


def _trained_pq_refine(vectors: np.ndarray, *, seed: int) -> faiss.IndexRefineFlat:
    n, dim = vectors.shape
    codes = dim // PQ_DIMS_PER_CODE if dim % PQ_DIMS_PER_CODE == 0 else dim
    nlist = max(1, min(PQ_REFINE_LISTS, n // IVF_TRAIN_POINTS_PER_LIST))
    base = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, nlist, codes, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
    base.cp.seed = seed
    base.cp.niter = 10
    sample = vectors[np.random.default_rng(seed).choice(n, size=min(n, PQ_TRAIN_SAMPLE), replace=False)]
    # k-means wants 39 points per centroid; a smaller library repeats its few vectors. Its shortlist
    # (k * k_factor) then holds every vector anyway, so the ranking is exact whatever the codes are.
    base.train(np.resize(sample, (max(len(sample), 39 * 2**PQ_BITS), dim)))
    return faiss.IndexRefineFlat(base)  # stores the float32 vectors it re-ranks from (and keeps base alive)


def _trained_ivf(vectors: np.ndarray, *, seed: int) -> faiss.IndexIVFFlat:
    n, dim = vectors.shape
    nlist = max(1, min(int(2 * math.sqrt(n)), n // IVF_TRAIN_POINTS_PER_LIST))
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.cp.niter = 10  # the default 25 k-means rounds would cost 2.5x the training time on 2 cores
    sample_size = min(n, nlist * IVF_TRAIN_POINTS_PER_LIST)
    sample = vectors[np.random.default_rng(seed).choice(n, size=sample_size, replace=False)]
    ivf.train(sample)
    return ivf


def _disk_lists(n: int) -> int:
    """pq-disk's IVF lists: the power of two nearest sqrt(n), at most DISK_MAX_LISTS, each trainable."""
    lists = 2 ** round(math.log2(max(math.sqrt(n), 1)))
    return max(1, min(lists, DISK_MAX_LISTS, n // IVF_TRAIN_POINTS_PER_LIST))


def disk_train_size(n: int) -> int:
    """How many sampled vectors pq-disk trains on (its lists' k-means and the PQ)."""
    return min(n, max(PQ_TRAIN_SAMPLE, _disk_lists(n) * IVF_TRAIN_POINTS_PER_LIST))


class DiskRefinedIndex:
    """``pq-disk``: 4-bit PQ fast-scan codes in IVF lists (in RAM, ~144 bytes a vector with ids) pick a
    shortlist of ``k * k_factor``, re-ranked by exact inner product with the float32 vectors memory-mapped
    from a file beside the codes (row = position in the id map). The file is read a page per candidate
    (prefetched together), so RAM holds the codes, not the vectors.

    The lists probed were chosen at build time (:func:`build_disk_index`): the fewest with which sampled
    vectors of the index find :data:`CALIBRATION_RECALL` of their exact top 10. Clustered data needs a
    few; vectors without clusters need all of them (a full scan of the codes, as pq-refine does).
    It offers what the library and search use of a faiss index: ``ntotal``, ``d``, ``id_map``,
    ``search`` and ``reconstruct_batch`` (exact, from the file).
    """

    def __init__(self, codes: faiss.IndexIDMap, path: str | os.PathLike | None, vectors_file=None):
        self.codes = codes
        self.base = faiss.downcast_index(codes.index)
        self.path = Path(path) if path is not None else None
        self.calibrated_nprobe = self.base.nprobe
        self.k_factor = DISK_K_FACTOR
        n, dim = codes.ntotal, codes.d
        with open(self.path, "rb") if vectors_file is None else vectors_file as file:
            size = os.fstat(file.fileno()).st_size
            if size != n * dim * 4:
                raise IndexFileError(f"{self.path}: {size} bytes, but {n} vectors of {dim} float32 take {n * dim * 4}")
            self._map = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) if size else None
        if self._map is not None:
            self._map.madvise(mmap.MADV_RANDOM)  # no read-ahead around a candidate: its neighbours are not wanted
        self.vectors = (np.frombuffer(self._map, dtype=np.float32) if self._map is not None
                        else np.zeros(0, np.float32)).reshape(n, dim)
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None  # (sorted ids, their positions), made on demand

    ntotal = property(lambda self: self.codes.ntotal)
    d = property(lambda self: self.codes.d)
    id_map = property(lambda self: self.codes.id_map)

    def ids_at(self) -> np.ndarray:
        """position -> catalog id, a view of the id map (no copy)."""
        return faiss.rev_swig_ptr(self.codes.id_map.data(), self.ntotal) if self.ntotal else np.zeros(0, np.int64)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The stored vectors at ``positions``, their pages asked for all at once before they are read."""
        if self._map is not None and positions.size:
            row_bytes = self.d * 4
            for start in np.unique(positions * row_bytes // mmap.PAGESIZE):
                self._map.madvise(mmap.MADV_WILLNEED, int(start) * mmap.PAGESIZE, mmap.PAGESIZE + row_bytes)
        return self.vectors[positions]

    def positions_of(self, ids: np.ndarray) -> np.ndarray:
        """Positions of catalog ``ids``; RuntimeError (as faiss raises) if one is not in the index."""
        if self._by_id is None:
            order = np.argsort(self.ids_at(), kind="stable")
            self._by_id = (self.ids_at()[order], order)
        held, order = self._by_id
        at = np.minimum(np.searchsorted(held, ids), max(held.size - 1, 0))
        if held.size == 0 or (held[at] != ids).any():
            raise RuntimeError("some ids are not in the index")
        return order[at]

    def reconstruct_batch(self, ids) -> np.ndarray:
        return self.rows(self.positions_of(np.asarray(ids, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int, params: faiss.SearchParametersIVF | None = None):
        """Top-k (scores, ids): the codes' shortlist re-ranked exactly from the file."""
        shortlist = max(k, math.ceil(k * self.k_factor))
        _, positions = self.base.search(queries, shortlist, params=params)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        id_at = self.ids_at()
        for row, query in enumerate(queries):
            candidates = np.sort(positions[row][positions[row] >= 0])
            if candidates.size:
                top = min(k, candidates.size)
                scores, order = faiss.knn(query[None], self.rows(candidates), top, metric=faiss.METRIC_INNER_PRODUCT)
                out_scores[row, :top], out_ids[row, :top] = scores[0], id_at[candidates[order[0]]]
        return out_scores, out_ids


def build_disk_index(
    ids: np.ndarray, chunks: Iterable[np.ndarray], sample: np.ndarray, path: str | os.PathLike | None, *,
    sample_positions: np.ndarray | None = None, seed: int = 0,
) -> DiskRefinedIndex:
    """pq-disk over vectors that arrive in ``chunks`` (rows in the order of ``ids``), each written to
    ``path`` and encoded as it passes, so no more than a chunk of vectors is ever in RAM.

    ``sample`` (unit rows drawn from the same vectors; ``sample_positions`` says where, so that a
    sampled vector does not count itself as its neighbour) trains the lists and the PQ, and its first
    :data:`CALIBRATION_QUERIES` choose the lists probed. ``path=None``: an unnamed temporary file.
    """
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    n, dim = len(ids), sample.shape[1]
    codes_per_vector = dim // PQ_DIMS_PER_CODE if dim % PQ_DIMS_PER_CODE == 0 else dim
    base = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, _disk_lists(n), codes_per_vector, PQ_BITS,
                                    faiss.METRIC_INNER_PRODUCT)
    base.cp.seed = seed
    base.cp.niter = 10
    base.train(np.resize(sample, (max(len(sample), 39 * 2**PQ_BITS), dim)))  # see _trained_pq_refine
    base.implem = 14
    codes = faiss.IndexIDMap(base)
    queries = sample[:CALIBRATION_QUERIES]
    query_positions = (np.full(len(queries), -1) if sample_positions is None
                       else np.asarray(sample_positions[: len(queries)], dtype=np.int64))
    best = np.full((len(queries), 11), -np.inf, dtype=np.float32), np.full((len(queries), 11), -1, dtype=np.int64)
    file = open(path, "wb+") if path is not None else tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    try:
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=np.float32)
            start = codes.ntotal
            if chunk.ndim != 2 or chunk.shape[1] != dim or start + len(chunk) > n:
                raise ValueError(f"chunk of shape {chunk.shape} at row {start} does not fit {n} vectors of {dim}")
            file.write(chunk.tobytes())
            codes.add_with_ids(chunk, ids[start : start + len(chunk)])
            scores, positions = faiss.knn(queries, chunk, min(11, len(chunk)), metric=faiss.METRIC_INNER_PRODUCT)
            best = merged_top(best, (scores, positions + start))
        if codes.ntotal != n:
            raise ValueError(f"{codes.ntotal} vectors arrived for {n} ids")
        file.flush()
        os.fsync(file.fileno())
        file.seek(0)
        index = DiskRefinedIndex(codes, path, vectors_file=file if path is None else None)
    finally:
        file.close()
    own = best[1] == query_positions[:, None]  # a sampled vector is not its own neighbour
    truth = [row[~mine][:10] for row, mine in zip(best[1], own, strict=True)]
    _calibrate(index, queries, truth)
    return index


def merged_top(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The best a.shape[1] of two (scores, positions) lists per query, best first."""
    scores, positions = np.concatenate([a[0], b[0]], axis=1), np.concatenate([a[1], b[1]], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, : a[0].shape[1]]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)


def _calibrate(index: DiskRefinedIndex, queries: np.ndarray, truth: list[np.ndarray]) -> None:
    """Probe the fewest lists (powers of two) with which ``queries`` find CALIBRATION_RECALL of ``truth``."""
    nlist = index.base.nlist
    wanted = sum(t.size for t in truth)
    for nprobe in [p for p in (2**i for i in range(nlist.bit_length())) if p < nlist] + [nlist]:
        index.base.nprobe = nprobe
        found = index.search(queries, 11)[1] if wanted else None  # 11: a sampled vector finds itself too
        if not wanted or sum(np.isin(index.ids_at()[t], f).sum() for t, f in zip(truth, found, strict=True)) >= (
                CALIBRATION_RECALL * wanted):
            break
    index.calibrated_nprobe = index.base.nprobe


def write_index(index, path: str | os.PathLike) -> list[Path]:
    """Write ``index`` to ``path`` (faiss's format) and, for pq-disk, its vectors beside it
    (``path`` with suffix :data:`VECTORS_SUFFIX`: a hard link to the built file when one can be made);
    returns the files written, for the caller to fsync."""
    path = Path(path)
    if not isinstance(index, DiskRefinedIndex):
        faiss.write_index(index, str(path))
        return [path]
    vectors_path = path.with_suffix(VECTORS_SUFFIX)
    try:
        if index.path is None:
            raise FileNotFoundError("no file name to link")
        os.link(index.path, vectors_path)
    except OSError:  # unnamed, gone, or a file system without hard links: copy the mapped rows
        with open(vectors_path, "wb") as out:
            for start in range(0, index.ntotal, 65536):
                out.write(index.vectors[start : start + 65536].tobytes())
    faiss.write_index(index.codes, str(path))
    return [vectors_path, path]


def read_index(path: str | os.PathLike):
    """An index written by :func:`write_index` (pq-disk when its vectors file lies beside it)."""
    path = Path(path)
    index = faiss.read_index(str(path))
    vectors_path = path.with_suffix(VECTORS_SUFFIX)
    return DiskRefinedIndex(index, vectors_path) if vectors_path.exists() else index


def to_gpu(index: faiss.Index) -> faiss.Index:
    """The index on the first GPU when faiss-gpu sees one, else the same CPU index (with a warning).

    HNSW and PQ fast-scan have no faiss GPU version, so those kinds always stay on the CPU.
    """
    if index_kind(index) in ("hnsw", "pq-refine", "pq-disk"):
        return index
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        log.warning("use_gpu asked for, but faiss-gpu with a visible GPU is not available: staying on CPU")
        return index
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_objects = [resources]  # keep the resources alive as long as the index
    return gpu_index


def index_kind(index: faiss.Index) -> str:
    """One of :data:`KINDS`: what an index built by :func:`build_index` searches with."""
    if isinstance(index, DiskRefinedIndex):
        return "pq-disk"
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexRefine):
        return "pq-refine"
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF) or faiss.try_extract_index_ivf(inner) is not None:
        return "ivf"
    return "flat"


def configure_search(
    index: faiss.Index, *, ef_search: int | None = None, nprobe: int | None = None, k_factor: float | None = None
) -> None:
    """Set the search breadth: HNSW efSearch / IVF nprobe / pq-refine and pq-disk k_factor (defaults give
    recall@10 >= 0.95).

    pq-refine takes nprobe too, but probes all its lists by default: fewer would make its recall depend
    on the data forming clusters. pq-disk probes by default the lists its build calibrated on its data.
    """
    kind = index_kind(index)
    if kind == "pq-disk":
        index.k_factor = k_factor or DISK_K_FACTOR
        index.base.nprobe = min(nprobe or index.calibrated_nprobe, index.base.nlist)
        return
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = ef_search or DEFAULT_EF_SEARCH
    elif kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(nprobe or DEFAULT_NPROBE, ivf.nlist)
    elif kind == "pq-refine":
        refine = faiss.downcast_index(index.index)
        refine.k_factor = k_factor or DEFAULT_K_FACTOR
        base = faiss.downcast_index(refine.base_index)
        base.nprobe = min(nprobe or base.nlist, base.nlist)  # every list unless told: see PQ_REFINE_LISTS
        base.implem = 14  # fast-scan that splits a query's lists over the threads (the others: one thread)


def remove_ids(index: faiss.Index, ids: np.ndarray) -> bool:
    """Take catalog ``ids`` out of ``index`` in place; False when its kind cannot (HNSW, IVF with a direct
    map, pq-disk).

    ``IndexRefineFlat`` has no ``remove_ids`` of its own. Its stored vectors and the id map compact in
    order; its fast-scan codes are then encoded again from the kept vectors with the trained quantizers
    (~7 s a million on 2 cores): faiss 1.15's fast-scan ``remove_ids`` leaves the freed slots of its
    last code block dirty, and a later ``add`` ORs new codes into them.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if index_kind(index) == "pq-disk":
        return False  # its vectors file may be mapped by readers of the generation it belongs to
    if index_kind(index) != "pq-refine":
        try:
            index.remove_ids(faiss.IDSelectorBatch(ids))
        except RuntimeError:
            return False
        return True
    held = faiss.vector_to_array(index.id_map)
    gone = np.isin(held, ids)
    if gone.any():
        refine = faiss.downcast_index(index.index)
        base, stored = faiss.downcast_index(refine.base_index), faiss.downcast_index(refine.refine_index)
        stored.remove_ids(faiss.IDSelectorBatch(np.flatnonzero(gone).astype(np.int64)))
        base.reset()
        base.add(faiss.rev_swig_ptr(stored.get_xb(), stored.ntotal * stored.d).reshape(-1, stored.d))
        refine.ntotal = index.ntotal = stored.ntotal
        faiss.copy_array_to_vector(held[~gone], index.id_map)
        index.construct_rev_map()
    return True


def search(
    index: faiss.Index, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ``(scores, ids)``, each (n_queries, k); ``allowed_ids`` restricts results to those catalog ids.

    Missing places (fewer than k allowed vectors) hold score -inf and id -1, as faiss does.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if allowed_ids is None:
        scores, ids = index.search(queries, k)
    else:
        scores, ids = _filtered_search(index, queries, k, np.asarray(allowed_ids, dtype=np.int64))
    scores[ids < 0] = -np.inf  # faiss fills missing places with -FLT_MAX
    return scores, ids


def _filtered_search(
    index: faiss.Index, queries: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    allowed, bitmap = _id_set(allowed)
    kind = index_kind(index)
    # pq-disk reads a set's vectors from its file: exact scoring only for sets no larger than a shortlist
    exact_limit = math.ceil(k * index.k_factor) if kind == "pq-disk" else EXACT_FILTER_LIMIT
    if kind != "flat" and allowed.size <= exact_limit:
        return _exact_search_among(index, queries, k, allowed)
    share = max(allowed.size / max(index.ntotal, 1), 1e-9)
    # A bitmap is built in well under a millisecond and tested in one load; a hash set of 100 k ids costs
    # ~10 ms to build per query. The bitmap must outlive the search: it is a local until we return.
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)) if bitmap is not None else (
        faiss.IDSelectorBatch(allowed))
    if kind in ("pq-refine", "pq-disk"):
        return _certified_search(index, queries, k, allowed, faiss.IDSelectorTranslated(index.id_map, selector), share)
    if kind == "hnsw":
        ef = faiss.downcast_index(index.index).hnsw.efSearch
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=min(MAX_WIDENED_EF_SEARCH, math.ceil(ef / share)))
    elif kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        # IVF skips filtered-out vectors inside the probed lists, so it needs fewer extra lists than HNSW,
        # which must walk its graph through them: sqrt keeps recall at 1.0 for 10% of 1 M ids.
        params = faiss.SearchParametersIVF(sel=selector, nprobe=min(ivf.nlist, math.ceil(ivf.nprobe / math.sqrt(share))))
    else:
        params = faiss.SearchParameters(sel=selector)
    return index.search(queries, k, params=params)


def _certified_search(
    index, queries: np.ndarray, k: int, allowed: np.ndarray, by_position: faiss.IDSelector, share: float
) -> tuple[np.ndarray, np.ndarray]:
    """pq-refine or pq-disk restricted by a selector over positions: a shortlist of allowed vectors,
    re-ranked exactly, or an exact scan of the allowed vectors when the shortlist cannot vouch for its top k.

    The fast-scan skips rejected vectors, so the shortlist (k * k_factor) holds allowed ones only, at the
    unfiltered cost. An allowed vector left out scored at most tau (the shortlist's lowest PQ score) by
    PQ, so about tau + e at most exactly, with e the largest PQ error seen on the shortlist (in absolute
    value: picked for high estimates, the shortlist's errors lean negative). When the k-th exact score
    clears that bound the answer stands; when it does not (a filter that keeps only vectors far from the
    query, whose scores crowd together), the allowed vectors are scanned exactly. pq-disk probes only
    some lists on clustered data: it widens them as the filter's share s shrinks (nprobe / sqrt(s), as
    IVF does), and the bound vouches for the lists probed.
    """
    if isinstance(index, DiskRefinedIndex):
        base, k_factor, rows, id_at = index.base, index.k_factor, index.rows, index.ids_at()
        nprobe = min(base.nlist, math.ceil(base.nprobe / math.sqrt(share)))

        def scan_allowed(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            positions = np.flatnonzero(np.isin(id_at, allowed))
            best = np.full((1, k), -np.inf, np.float32), np.full((1, k), -1, np.int64)
            for start in range(0, positions.size, 65536):
                part = positions[start : start + 65536]
                scores, order = faiss.knn(query[None], rows(part), min(k, part.size), metric=faiss.METRIC_INNER_PRODUCT)
                best = merged_top(best, (scores, part[order]))
            return best[0][0], best[1][0]
    else:
        refine = faiss.downcast_index(index.index)
        base, stored, k_factor = faiss.downcast_index(refine.base_index), faiss.downcast_index(refine.refine_index), refine.k_factor
        id_at = faiss.rev_swig_ptr(index.id_map.data(), index.ntotal)  # position -> catalog id, without a copy
        vectors = faiss.rev_swig_ptr(stored.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
        nprobe = base.nprobe

        def rows(positions: np.ndarray) -> np.ndarray:
            return vectors[positions]

        def scan_allowed(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            scanned, positions = stored.search(query[None], k, params=faiss.SearchParameters(sel=by_position))
            return scanned[0], positions[0]
    shortlist = max(k, math.ceil(k * k_factor))
    estimates, positions = base.search(queries, shortlist, params=faiss.SearchParametersIVF(sel=by_position, nprobe=nprobe))
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, query in enumerate(queries):
        found = positions[row] >= 0
        candidates, estimate = positions[row][found], estimates[row][found]
        if candidates.size == 0:  # no allowed vector in the probed lists
            continue
        # faiss's kernel scores one query on one thread (numpy's would wake a BLAS thread pool)
        exact, order = faiss.knn(query[None], rows(candidates), candidates.size, metric=faiss.METRIC_INNER_PRODUCT)
        exact, order = exact[0], order[0]
        scores, best_positions = exact[:k], candidates[order[:k]]
        shortlist_full = candidates.size == shortlist  # else it already holds every allowed vector probed
        if shortlist_full and scores[-1] < estimate.min() + np.abs(exact - estimate[order]).max():
            scores, best_positions = scan_allowed(query)
            keep = best_positions >= 0
            scores, best_positions = scores[keep], best_positions[keep]
        out_scores[row, : scores.size], out_ids[row, : scores.size] = scores, id_at[best_positions]
    return out_scores, out_ids


def _id_set(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(sorted unique ids, a little-endian membership bitmap over 0..max id, or None for huge ids).

    A boolean mask dedups and sorts in O(max id), far cheaper than np.unique's sort for catalog ids.
    """
    ids = ids[ids >= 0]  # faiss ids are non-negative; -1 means "no result"
    if ids.size == 0 or ids.max() >= MAX_BITMAP_ID:
        return np.unique(ids), None
    mask = np.zeros(int(ids.max()) + 1, dtype=bool)
    mask[ids] = True
    return np.flatnonzero(mask).astype(np.int64), np.packbits(mask, bitorder="little")


def _exact_search_among(
    index: faiss.Index, queries: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Score the allowed ids' stored vectors directly: exact, and cheap for a small set."""
    try:
        vectors = index.reconstruct_batch(allowed)
    except RuntimeError:  # some ids are not in the index (e.g. a stale filter): keep those that are
        allowed = allowed[np.isin(allowed, faiss.vector_to_array(index.id_map))]
        vectors = index.reconstruct_batch(allowed) if allowed.size else np.zeros((0, index.d), np.float32)
    top = min(k, allowed.size)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    if top:
        # faiss's own kernel: one query is scored on one thread, with no BLAS thread pool to wake up.
        scores, positions = faiss.knn(queries, vectors, top, metric=faiss.METRIC_INNER_PRODUCT)
        out_scores[:, :top], out_ids[:, :top] = scores, allowed[positions]
    return out_scores, out_ids
