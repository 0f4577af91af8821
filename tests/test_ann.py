"""indexer.ann: every index kind returns catalog ids by inner product, with recall against exact search,
id-restricted (filtered) search, in-place removal, and the size threshold injected small so the chosen
kinds are exercised."""

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


def test_auto_kind_follows_the_documented_thresholds(data):
    vectors, ids, _, _ = data
    assert ann.index_kind_for(ann.EXACT_LIMIT - 1) == "flat"
    assert ann.index_kind_for(ann.EXACT_LIMIT) == "pq-refine"
    assert ann.index_kind_for(ann.IN_MEMORY_LIMIT - 1) == "pq-refine"
    assert ann.index_kind_for(ann.IN_MEMORY_LIMIT) == "pq-disk"
    assert ann.index_kind_for(10**8) == "pq-disk"
    assert ann.index_kind(ann.build_index(vectors[:1000], ids[:1000], exact_limit=10, in_memory_limit=1000)) == "pq-disk"
    assert ann.index_kind(ann.build_index(vectors[:999], ids[:999], exact_limit=1000)) == "flat"
    assert ann.index_kind(ann.build_index(vectors[:1000], ids[:1000], exact_limit=1000)) == "pq-refine"
    assert ann.index_kind(ann.build_index(vectors[:1000], ids[:1000])) == "flat"  # the real threshold is 50 k


def test_kinds_that_need_training_fall_back_to_flat_on_too_few_vectors():
    assert ann.buildable_kind("auto", 5, exact_limit=2) == "pq-refine"  # a PQ trains on repeated vectors
    assert ann.buildable_kind("ivf", ann.IVF_TRAIN_POINTS_PER_LIST - 1) == "flat"
    assert ann.buildable_kind("pq-refine", 0) == "flat"
    tiny = clustered(5, seed=3)
    index = ann.build_index(tiny, np.arange(5), "pq-refine")
    scores, found = ann.search(index, tiny, 3)
    assert (found[:, 0] == np.arange(5)).all() and np.allclose(scores[:, 0], 1.0, atol=1e-5)


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pq_refine_reaches_the_recall_target_on_random_vectors_where_a_short_shortlist_does_not():
    # Uniformly random vectors have no clusters to exploit: the hard case the chosen kind is tuned on.
    vectors, queries = random_unit(20_000, 64, seed=0), random_unit(200, 64, seed=1)
    ids = np.arange(len(vectors)) * 3
    _, positions = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    index = ann.build_index(vectors, ids, "pq-refine")
    assert faiss.downcast_index(index.index).k_factor == ann.DEFAULT_K_FACTOR
    assert recall(ann.search(index, queries, 10)[1], ids[positions]) >= 0.95
    ann.configure_search(index, k_factor=1)  # PQ codes alone, no re-ranking to speak of
    assert recall(ann.search(index, queries, 10)[1], ids[positions]) < 0.8


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


@pytest.mark.parametrize("kind", ["hnsw", "pq-refine"])
def test_filter_with_unknown_or_no_ids(data, kind, monkeypatch):
    vectors, ids, queries, _ = data
    index = ann.build_index(vectors, ids, kind)
    unknown = np.array([-5, 10**7], dtype=np.int64)  # not in the catalog (e.g. a stale filter)
    scores, found = ann.search(index, queries[:3], 5, allowed_ids=np.concatenate([unknown, ids[:2]]))
    assert set(found[:, :2].ravel()) == set(ids[:2].tolist()) and (found[:, 2:] == -1).all()
    scores, found = ann.search(index, queries[:3], 5, allowed_ids=np.array([], dtype=np.int64))
    assert (found == -1).all() and np.isneginf(scores).all()
    monkeypatch.setattr(ann, "EXACT_FILTER_LIMIT", 1)  # the same through the selector / over-fetch path
    scores, found = ann.search(index, queries[:3], 5, allowed_ids=np.concatenate([unknown, ids[:2]]))
    assert set(found[:, :2].ravel()) == set(ids[:2].tolist()) and (found[:, 2:] == -1).all()
    scores, found = ann.search(index, queries[:3], 5, allowed_ids=unknown)
    assert (found == -1).all() and np.isneginf(scores).all()


def test_pq_refine_filter_keeps_recall_with_a_short_shortlist_even_if_it_avoids_the_query(data, monkeypatch):
    vectors, ids, queries, _ = data
    monkeypatch.setattr(ann, "EXACT_FILTER_LIMIT", 100)  # the selector path
    index = ann.build_index(vectors, ids, "pq-refine")
    ann.configure_search(index, k_factor=10)  # 100 candidates: only a shortlist of allowed ones can do
    for share in (0.05, 0.5):
        allowed = np.random.default_rng(7).choice(ids, size=int(share * len(ids)), replace=False)
        found = ann.search(index, queries, 10, allowed_ids=allowed)[1]
        assert np.isin(found, allowed).all()
        assert recall(found, exact_among(vectors, ids, queries, allowed)) >= 0.95
    # Allowed: the half of the catalog least like the query. Its best matches crowd around the median
    # score, where PQ cannot rank them: the shortlist cannot vouch for them, and the set is scanned exactly.
    query = queries[:1]
    allowed = ids[np.argsort(vectors @ query[0])[: len(ids) // 2]]
    scores, found = ann.search(index, query, 10, allowed_ids=allowed)
    np.testing.assert_array_equal(found, exact_among(vectors, ids, query, allowed))
    row_of = {int(i): r for r, i in enumerate(ids)}
    np.testing.assert_allclose(scores[0], vectors[[row_of[int(i)] for i in found[0]]] @ query[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "pq-refine"])
def test_removal_in_place_keeps_ids_vectors_and_search_aligned(data, kind, tmp_path):
    vectors, ids, queries, _ = data
    index = ann.build_index(vectors, ids, kind)
    gone = np.random.default_rng(8).choice(len(ids), size=1500, replace=False)
    assert ann.remove_ids(index, ids[gone])
    kept = np.setdiff1d(np.arange(len(ids)), gone)
    assert index.ntotal == kept.size
    np.testing.assert_array_equal(np.sort(faiss.vector_to_array(index.id_map)), np.sort(ids[kept]))
    np.testing.assert_array_equal(index.reconstruct_batch(ids[kept]), vectors[kept])
    _, positions = faiss.knn(queries, vectors[kept], 10, metric=faiss.METRIC_INNER_PRODUCT)
    found = ann.search(index, queries, 10)[1]
    assert not np.isin(found, ids[gone]).any()
    assert recall(found, ids[kept][positions]) >= 0.95
    index.add_with_ids(vectors[gone[:10]], ids[gone[:10]])  # a replaced track comes back under a new row
    assert (ann.search(index, vectors[gone[:10]], 1)[1][:, 0] == ids[gone[:10]]).all()
    faiss.write_index(index, str(tmp_path / "after-removal.faiss"))
    loaded = faiss.read_index(str(tmp_path / "after-removal.faiss"))
    np.testing.assert_array_equal(ann.search(loaded, queries, 10)[1], ann.search(index, queries, 10)[1])


def test_kinds_that_cannot_remove_in_place_say_so(data):
    vectors, ids, _, _ = data
    index = ann.build_index(vectors[:500], ids[:500], "hnsw")
    assert not ann.remove_ids(index, ids[:3])
    assert index.ntotal == 500


def test_index_survives_a_write_and_read(data, tmp_path):
    vectors, ids, queries, _ = data
    for kind in ann.KINDS:
        index = ann.build_index(vectors, ids, kind)
        written = ann.write_index(index, tmp_path / f"{kind}.faiss")
        assert [p.name for p in written] == [f"{kind}.vectors", f"{kind}.faiss"][kind != "pq-disk" :]
        loaded = ann.read_index(tmp_path / f"{kind}.faiss")
        ann.configure_search(loaded)
        assert ann.index_kind(loaded) == kind
        np.testing.assert_array_equal(ann.search(loaded, queries, 10)[1], ann.search(index, queries, 10)[1])
        np.testing.assert_array_equal(loaded.reconstruct_batch(ids[7:8])[0], vectors[7])


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
    for kind in ("flat", "ivf", "pq-refine"):
        index = ann.build_index(vectors, ids, kind)
        with_bitmap = ann.search(index, queries, 10, allowed_ids=np.concatenate([allowed, allowed[:10]]))
        monkeypatch.setattr(ann, "MAX_BITMAP_ID", 10)  # every catalog id counts as huge
        with_hash_set = ann.search(index, queries, 10, allowed_ids=allowed)
        monkeypatch.undo()
        monkeypatch.setattr(ann, "EXACT_FILTER_LIMIT", 100)
        np.testing.assert_array_equal(with_bitmap[1], with_hash_set[1])
        assert np.isin(with_bitmap[1], allowed).all()


def test_pq_disk_probes_every_list_on_random_vectors_and_few_on_clustered_ones(tmp_path):
    # Random vectors have no clusters: only a scan of every list's codes finds their neighbours.
    vectors, queries = random_unit(20_000, 64, seed=0), random_unit(200, 64, seed=1)
    ids = np.arange(len(vectors)) * 3
    _, positions = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    index = ann.build_index(vectors, ids, "pq-disk", path=tmp_path / "random.vectors")
    assert index.calibrated_nprobe == index.base.nlist > 1
    assert recall(ann.search(index, queries, 10)[1], ids[positions]) >= 0.95
    ann.configure_search(index, nprobe=1)
    assert recall(ann.search(index, queries, 10)[1], ids[positions]) < 0.5
    # Well separated clusters: a few lists hold a query's neighbours.
    centres = random_unit(64, 64, seed=2)
    rng = np.random.default_rng(3)
    def blobs(n):
        x = centres[rng.integers(0, 64, n)] + 0.05 * rng.standard_normal((n, 64)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    vectors, queries = blobs(20_000), blobs(200)
    _, positions = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    index = ann.build_index(vectors, ids, "pq-disk", path=tmp_path / "clustered.vectors")
    assert index.calibrated_nprobe < index.base.nlist
    assert recall(ann.search(index, queries, 10)[1], ids[positions]) >= 0.95


def test_pq_disk_keeps_codes_in_ram_and_exact_vectors_in_its_file(data, tmp_path):
    vectors, ids, queries, _ = data
    index = ann.build_index(vectors, ids, "pq-disk", path=tmp_path / "built.vectors")
    assert (tmp_path / "built.vectors").stat().st_size == vectors.nbytes
    written = ann.write_index(index, tmp_path / "segments.faiss")
    # what is read into RAM: 4-bit codes (DIM / 4 bytes), ids, centroids, block padding; no vectors
    assert written[1].stat().st_size < vectors.nbytes / 4
    assert (tmp_path / "segments.vectors").samefile(tmp_path / "built.vectors")  # linked, not copied
    np.testing.assert_array_equal(index.reconstruct_batch(ids[[5, 0, 77]]), vectors[[5, 0, 77]])
    with pytest.raises(RuntimeError, match="not in the index"):
        index.reconstruct_batch(np.array([-3]))
    assert not ann.remove_ids(index, ids[:3])  # its file is shared with readers: a change rebuilds it
    with open(tmp_path / "segments.vectors", "r+b") as file:  # a torn or foreign vectors file is refused
        file.truncate(vectors.nbytes - 4)
    with pytest.raises(ann.IndexFileError, match="segments.vectors"):
        ann.read_index(tmp_path / "segments.faiss")


def test_pq_disk_streamed_build_matches_and_refuses_chunks_that_do_not_fit(data, tmp_path):
    vectors, ids, queries, _ = data
    sample_positions = np.random.default_rng(0).choice(len(ids), size=ann.disk_train_size(len(ids)), replace=False)
    streamed = ann.build_disk_index(ids, (vectors[s : s + 1000] for s in range(0, len(ids), 1000)),
                                    vectors[sample_positions], tmp_path / "streamed.vectors",
                                    sample_positions=sample_positions)
    whole = ann.build_index(vectors, ids, "pq-disk")
    np.testing.assert_array_equal(ann.search(streamed, queries, 10)[1], ann.search(whole, queries, 10)[1])
    with pytest.raises(ValueError, match="arrived for"):
        ann.build_disk_index(ids, iter([vectors[:1000]]), vectors[:500], tmp_path / "short.vectors")
    with pytest.raises(ValueError, match="does not fit"):
        ann.build_disk_index(ids[:10], iter([vectors[:11]]), vectors[:10], tmp_path / "long.vectors")
