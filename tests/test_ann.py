"""indexer.ann: every index kind returns catalog ids by inner product, with recall against exact search,
id-restricted (filtered) search, and the size threshold forced small so each kind is exercised."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer import ann

DIM = 32


def clustered(n: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Unit vectors in clusters, like music embeddings (random vectors have no neighbours worth finding)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).standard_normal((clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    vectors = clustered(6000, seed=0)
    ids = np.random.default_rng(1).permutation(10**6)[:6000].astype(np.int64)  # sparse catalog ids
    queries = clustered(200, seed=2)
    _, positions = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    return vectors, ids, queries, ids[positions]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("kind", ann.KINDS)
def test_each_kind_returns_catalog_ids_by_inner_product(data, kind):
    vectors, ids, queries, truth = data
    index = ann.build_index(vectors, ids, kind)
    assert ann.index_kind(index) == kind
    assert index.ntotal == len(ids)
    scores, found = ann.search(index, queries, 10)
    assert scores.shape == found.shape == (len(queries), 10)
    assert set(found.ravel()) <= set(ids.tolist())
    # scores are the inner products of the returned ids' vectors, best first
    row_of = {int(i): r for r, i in enumerate(ids)}
    expected = np.einsum("qd,qkd->qk", queries, vectors[[[row_of[int(i)] for i in row] for row in found]])
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    floor = 1.0 if kind == "flat" else 0.95
    assert recall(found, truth) >= floor


def test_default_search_breadth_reaches_the_recall_target_and_narrow_search_does_not(data):
    vectors, ids, queries, truth = data
    index = ann.build_index(vectors, ids, "hnsw")
    ann.configure_search(index, ef_search=1)
    narrow = recall(ann.search(index, queries, 10)[1], truth)
    ann.configure_search(index)
    assert faiss.downcast_index(index.index).hnsw.efSearch == ann.DEFAULT_EF_SEARCH
    assert recall(ann.search(index, queries, 10)[1], truth) >= 0.95 > narrow


def test_ivf_nprobe_is_configurable_and_capped_at_the_list_count(data):
    vectors, ids, _, _ = data
    index = ann.build_index(vectors, ids, "ivf")
    ivf = faiss.extract_index_ivf(index)
    ann.configure_search(index, nprobe=3)
    assert ivf.nprobe == 3
    ann.configure_search(index, nprobe=10**6)
    assert ivf.nprobe == ivf.nlist


def test_auto_kind_follows_the_measured_threshold(data, monkeypatch):
    vectors, ids, _, _ = data
    assert ann.index_kind_for(ann.EXACT_LIMIT - 1) == "flat"
    assert ann.index_kind_for(ann.EXACT_LIMIT) == "hnsw"
    assert ann.index_kind_for(ann.IVF_LIMIT - 1) == "hnsw"
    assert ann.index_kind_for(ann.IVF_LIMIT) == "ivf"
    monkeypatch.setattr(ann, "EXACT_LIMIT", 1000)
    monkeypatch.setattr(ann, "IVF_LIMIT", 3000)
    assert ann.index_kind(ann.build_index(vectors[:999], ids[:999])) == "flat"
    assert ann.index_kind(ann.build_index(vectors[:1000], ids[:1000])) == "hnsw"
    assert ann.index_kind(ann.build_index(vectors[:3000], ids[:3000])) == "ivf"


def exact_among(vectors, ids, queries, allowed, k=10):
    keep = np.isin(ids, allowed)
    scores = queries @ vectors[keep].T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[keep][order]


@pytest.mark.parametrize("kind", ann.KINDS)
@pytest.mark.parametrize("share", [0.002, 0.05, 0.5])
def test_filtered_search_only_returns_allowed_ids_without_losing_recall(data, kind, share, monkeypatch):
    vectors, ids, queries, _ = data
    # Force the selector path for the larger sets, as a big library would take it.
    monkeypatch.setattr(ann, "EXACT_FILTER_LIMIT", 100)
    allowed = np.random.default_rng(5).choice(ids, size=max(3, int(share * len(ids))), replace=False)
    index = ann.build_index(vectors, ids, kind)
    scores, found = ann.search(index, queries, 10, allowed_ids=allowed)
    real = found[found >= 0]
    assert np.isin(real, allowed).all()
    truth = exact_among(vectors, ids, queries, allowed)
    if len(allowed) < 10:  # fewer allowed than k: the rest are empty places
        assert (found[:, len(allowed):] == -1).all() and np.isneginf(scores[:, len(allowed):]).all()
        assert recall(found[:, : len(allowed)], truth) == 1.0
    else:
        assert recall(found, truth) >= 0.95


def test_filter_with_unknown_or_no_ids(data):
    vectors, ids, queries, _ = data
    index = ann.build_index(vectors, ids, "hnsw")
    unknown = np.array([-5, 10**7], dtype=np.int64)  # not in the catalog (e.g. a stale filter)
    scores, found = ann.search(index, queries[:3], 5, allowed_ids=np.concatenate([unknown, ids[:2]]))
    assert set(found[:, :2].ravel()) == set(ids[:2].tolist()) and (found[:, 2:] == -1).all()
    scores, found = ann.search(index, queries[:3], 5, allowed_ids=np.array([], dtype=np.int64))
    assert (found == -1).all() and np.isneginf(scores).all()


def test_index_survives_a_write_and_read(data, tmp_path):
    vectors, ids, queries, _ = data
    for kind in ann.KINDS:
        index = ann.build_index(vectors, ids, kind)
        faiss.write_index(index, str(tmp_path / f"{kind}.faiss"))
        loaded = faiss.read_index(str(tmp_path / f"{kind}.faiss"))
        assert ann.index_kind(loaded) == kind
        np.testing.assert_array_equal(ann.search(loaded, queries, 10)[1], ann.search(index, queries, 10)[1])
        np.testing.assert_array_equal(loaded.reconstruct(int(ids[7])), vectors[7])


def test_bad_input_is_refused(data):
    vectors, ids, _, _ = data
    with pytest.raises(ValueError, match="one id per row"):
        ann.build_index(vectors, ids[:-1])
    with pytest.raises(ValueError, match="unique"):
        ann.build_index(vectors[:2], np.array([4, 4]))
    with pytest.raises(ValueError, match="unknown index kind 'pq'"):
        ann.build_index(vectors, ids, "pq")


def test_use_gpu_without_a_gpu_falls_back_to_the_cpu_index(data, caplog):
    vectors, ids, queries, truth = data
    index = ann.build_index(vectors, ids, "flat", use_gpu=True)
    assert isinstance(index, faiss.IndexIDMap2)
    assert recall(ann.search(index, queries, 10)[1], truth) == 1.0
    assert "staying on CPU" in caplog.text


def test_filters_over_huge_ids_use_a_hash_set_with_the_same_results(data, monkeypatch):
    vectors, ids, queries, _ = data
    monkeypatch.setattr(ann, "EXACT_FILTER_LIMIT", 100)
    allowed = np.random.default_rng(6).choice(ids, size=1500, replace=False)
    for kind in ("flat", "ivf"):
        index = ann.build_index(vectors, ids, kind)
        with_bitmap = ann.search(index, queries, 10, allowed_ids=np.concatenate([allowed, allowed[:10]]))
        monkeypatch.setattr(ann, "MAX_BITMAP_ID", 10)  # every catalog id counts as huge
        with_hash_set = ann.search(index, queries, 10, allowed_ids=allowed)
        monkeypatch.undo()
        monkeypatch.setattr(ann, "EXACT_FILTER_LIMIT", 100)
        np.testing.assert_array_equal(with_bitmap[1], with_hash_set[1])
        assert np.isin(with_bitmap[1], allowed).all()
