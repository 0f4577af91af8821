"""FAISS indexes over unit-norm embeddings: searched by inner product, answering with catalog ids.

The catalog is the source of truth; these indexes are rebuilt from its vectors (``indexer/vectors.py``
persists them). Every index is an ``IndexIDMap2`` around one of three searchers, so any index returns
catalog ids, can hand back a stored vector by id, and is written to disk by ``faiss.write_index`` as one
file:

- ``flat``: exact ``IndexFlatIP``, below :data:`EXACT_LIMIT` vectors. A scan costs about 0.14 ms of one
  core per 1,000 vectors (1.7 ms at 10 k, 16 ms at 100 k, 123-142 ms at 1 M), so up to 50 k it stays
  under ~8 ms with perfect recall and no build time; beyond that it outgrows a 20 ms budget.
- ``hnsw``: ``IndexHNSWFlat`` (M = :data:`HNSW_M`), from :data:`EXACT_LIMIT` to :data:`IVF_LIMIT`. On
  clustered vectors efSearch 128 gives recall@10 0.998 at 100 k (0.9 ms) and 0.953 at 300 k (0.36 ms),
  but only 0.81 at 1 M, and its build grows to 314 s at 300 k and 1,354 s at 1 M on one shared core.
- ``ivf``: ``IndexIVFFlat`` with about 2 sqrt(n) lists, from :data:`IVF_LIMIT` up: nprobe 16 already
  gives 0.997 at 300 k (0.9 ms) and 1.0 at 1 M (1.3 ms; nprobe 64: 4.7 ms), built in 19 s / 98 s. It
  also runs on faiss-gpu, unlike HNSW.

Uniformly random 512-d vectors (no neighbourhood structure) defeat both ANN kinds: at 1 M IVF reaches 0.33
at nprobe 256/2000 and HNSW 0.91 at efSearch 2048 already at 100 k. Only exact re-ranking of a long
PQ shortlist got there (0.95 with 5,000 candidates, 10 ms); music embeddings are clustered, so the kinds
are tuned for clustered data. The figures come from ``python -m benchmarks search`` (CPU time of one query
on one core; synthetic clustered data = a normalised mixture of 2,000 Gaussians).

Metadata filters: :func:`search` with ``allowed_ids`` restricts results to a set of catalog ids without
losing recall to the filter. A small set (up to :data:`EXACT_FILTER_LIMIT`) is scored exactly from its stored vectors;
a larger one goes through a faiss ``IDSelector`` with the search breadth widened as the set's share s of
the index shrinks (efSearch / s for HNSW, nprobe / sqrt(s) for IVF), so a filtered query still sees
enough candidates. Measured on
clustered 100 k (HNSW): exact scoring takes 1.3 ms for 1 k ids and 8 ms for 10 k; the selector path
~12 ms from 10 k ids up, with recall 0.93 at 10 k and 0.995 at 30 k, hence the 20 k crossover. On
clustered 1 M (IVF, nprobe 64): 0.1 % / 1 % / 10 % / 50 % of the ids answer in 0.7 / 12.5 / 12.3 /
14.9 ms, all with recall@10 1.0 against exact search among the allowed ids.
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivf")
EXACT_LIMIT = 50_000
IVF_LIMIT = 200_000  # measured crossover: HNSW ahead at 100 k, IVF ahead (and 16x faster to build) at 300 k
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE = 64
EXACT_FILTER_LIMIT = 20_000
MAX_WIDENED_EF_SEARCH = 4096
MAX_BITMAP_ID = 1 << 28  # a 32 MiB bitmap; larger catalog ids use a hash set instead
IVF_TRAIN_POINTS_PER_LIST = 50  # faiss warns below 39 points per centroid


def index_kind_for(n: int) -> str:
    """The kind ``build_index(kind="auto")`` picks for n vectors."""
    if n < EXACT_LIMIT:
        return "flat"
    return "hnsw" if n < IVF_LIMIT else "ivf"


def build_index(
    vectors: np.ndarray, ids: np.ndarray, kind: str = "auto", *, use_gpu: bool = False, seed: int = 0
) -> faiss.Index:
    """An inner-product index over ``vectors`` (float32 (n, d), unit-norm rows) answering with ``ids``.

    ``use_gpu=True`` moves flat and IVF indexes to the first GPU when faiss-gpu is importable and sees one
    (HNSW has no GPU version and stays on the CPU); otherwise the CPU index is returned, with a warning.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or ids.shape != (vectors.shape[0],):
        raise ValueError(f"vectors must be (n, d) with one id per row; got {vectors.shape} and ids {ids.shape}")
    if np.unique(ids).size != ids.size:
        raise ValueError("ids must be unique")
    n, dim = vectors.shape
    if kind == "auto":
        kind = index_kind_for(n)
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
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


def to_gpu(index: faiss.Index) -> faiss.Index:
    """The index on the first GPU when faiss-gpu sees one, else the same CPU index (with a warning).

    HNSW has no faiss GPU version, so an HNSW index always stays on the CPU.
    """
    if index_kind(index) == "hnsw":
        return index
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        log.warning("use_gpu asked for, but faiss-gpu with a visible GPU is not available: staying on CPU")
        return index
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_objects = [resources]  # keep the resources alive as long as the index
    return gpu_index


def index_kind(index: faiss.Index) -> str:
    """``flat``, ``hnsw`` or ``ivf``: what an index built by :func:`build_index` searches with."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF) or faiss.try_extract_index_ivf(inner) is not None:
        return "ivf"
    return "flat"


def configure_search(index: faiss.Index, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
    """Set the search breadth: HNSW efSearch / IVF nprobe (defaults give recall@10 >= 0.95); flat ignores it."""
    kind = index_kind(index)
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = ef_search or DEFAULT_EF_SEARCH
    elif kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(nprobe or DEFAULT_NPROBE, ivf.nlist)


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
    if kind != "flat" and allowed.size <= EXACT_FILTER_LIMIT:
        return _exact_search_among(index, queries, k, allowed)
    share = max(allowed.size / max(index.ntotal, 1), 1e-9)
    # A bitmap is built in well under a millisecond and tested in one load; a hash set of 100 k ids costs
    # ~10 ms to build per query. The bitmap must outlive the search: it is a local until we return.
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)) if bitmap is not None else (
        faiss.IDSelectorBatch(allowed))
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
