"""The search service on a generated library indexed with the tiny model: ranking, filters, moments,
exclusion of the query track, the query cache, text collections, and hot reload under load."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
from sqlalchemy import select

from app.filters import FilterError, Filters
from app.search import SearchError, SearchService, ServiceLimits
from indexer.catalog import Segment, Track
from indexer.vectors import Library


def test_text_search_ranks_by_exact_similarity(service, app_library):
    results = service.search("calm piano for a rainy night", k=5)
    assert len(results) == 5
    query = service.embed_query("calm piano for a rainy night")
    with Library.open(app_library.directory) as lib:
        with lib.catalog.session() as s:
            ids = sorted(s.scalars(select(Track.id)))
        vectors = lib.load().track_vectors(ids)
    exact = vectors @ query
    expected = [ids[i] for i in np.argsort(-exact, kind="stable")[:5]]
    assert [r.track_id for r in results] == expected
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    np.testing.assert_allclose([r.score for r in results], np.sort(exact)[::-1][:5], rtol=1e-5, atol=1e-6)
    first = results[0].to_dict()
    assert {"track_id", "path", "title", "artist", "score", "tags"} <= first.keys()
    assert "start" not in first
    assert first["path"] in app_library.paths


def test_moments_are_the_best_segment_of_each_track(service, app_library):
    results = service.search("fast drums", k=len(app_library.paths), moments=True)
    query = service.embed_query("fast drums")
    long_track = next(r for r in results if r.duration > 20)  # three segments
    with Library.open(app_library.directory) as lib, lib.catalog.session() as s:
        rows = s.execute(select(Segment.start, Segment.end, Segment.embedding)
                         .where(Segment.track_id == long_track.track_id).order_by(Segment.index)).all()
    assert len(rows) >= 3
    scores = [np.frombuffer(r.embedding, np.float32) @ query for r in rows]
    best = rows[int(np.argmax(scores))]
    assert (long_track.moment.start, long_track.moment.end) == (pytest.approx(best.start), pytest.approx(best.end))
    assert long_track.moment.score == pytest.approx(max(scores), abs=1e-5)
    as_json = long_track.to_dict()
    assert as_json["start"] == long_track.moment.start and as_json["end"] == long_track.moment.end


def test_filters_equal_the_exact_filtered_ranking(service, app_library):
    """Filtering must not lose recall: the filtered top-k equals brute force over the allowed tracks."""
    query = service.embed_query("bright strings")
    everything = service.search("bright strings", k=len(app_library.paths))
    for expressions in (["artist=ada"], ["year=2001..2010"], ["duration=..20"], ["tag=rock"],
                        ["artist=bob", "year=1990-2005"], ["album=Second"]):
        filters = Filters.parse(expressions)
        got = service.search("bright strings", k=3, filters=filters)
        expected = [r for r in everything if _passes(r, filters)][:3]
        assert [r.track_id for r in got] == [r.track_id for r in expected], expressions
        assert all(_passes(r, filters) for r in got)
        np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], atol=1e-6)
    assert query.shape == (service.model.dim,)
    assert service.search("bright strings", filters=Filters.parse(["artist=nobody at all"])) == []


def _passes(result, filters: Filters) -> bool:
    return (
        (not filters.artist or filters.artist.casefold() in result.artist.casefold())
        and (not filters.album or filters.album.casefold() in result.album.casefold())
        and (filters.year_min is None or (result.year is not None and result.year >= filters.year_min))
        and (filters.year_max is None or (result.year is not None and result.year <= filters.year_max))
        and (filters.duration_min is None or result.duration >= filters.duration_min)
        and (filters.duration_max is None or result.duration <= filters.duration_max)
        and all(t.casefold() in {x.casefold() for x in result.tags} for t in filters.tags)
    )


def test_filter_expressions_parse_and_fail_clearly():
    f = Filters.parse(["artist=Ada", "year=1990..1999", "duration=60-", "tag=piano,calm", "album=X"])
    assert (f.artist, f.year_min, f.year_max, f.duration_min, f.duration_max, f.tags) == (
        "Ada", 1990, 1999, 60.0, None, ("piano", "calm"))
    assert f.active and not Filters().active
    for bad, message in (("colour=red", "unknown key"), ("year", "KEY=VALUE"), ("year=late", "number"),
                         ("year=2000..1990", "lower bound")):
        with pytest.raises(FilterError, match=message):
            Filters.parse([bad])


def test_similar_excludes_the_query_track_and_finds_a_copy_first(service, app_library, tmp_path):
    track_id = service.search("anything", k=1)[0].track_id
    results = service.similar(track_id, k=len(app_library.paths))
    assert track_id not in [r.track_id for r in results]
    assert len(results) == len(app_library.paths) - 1
    by_path = service.similar(service.snapshot().tracks.paths[0], k=3)
    assert service.snapshot().tracks.ids[0] not in [r.track_id for r in by_path]
    # a copy of a library file outside the library is recognised as that track (issue 17): it is not
    # listed as similar to itself, and the rest of the library still is
    original = app_library.paths[4]
    upload = shutil.copy(original, tmp_path / "upload.wav")
    like_copy = service.similar(upload, k=len(app_library.paths))
    assert original not in [r.path for r in like_copy] and len(like_copy) == len(app_library.paths) - 1
    with pytest.raises(SearchError, match="no track 999999"):
        service.similar(999999)


def test_describe_scores_vocabulary_and_user_collections(service, app_library, tmp_path):
    from app import texts

    collection = tmp_path / "briefs.txt"
    collection.write_text("# my briefs\nwarm analog synth pads\nlo-fi beats to study to\n\nwarm analog synth pads\n")
    with Library.open(app_library.directory) as lib:
        info = texts.add_collection(lib.catalog, service.model, collection)
        assert (info.name, info.count) == ("briefs", 2)
        with pytest.raises(texts.TextsError, match="exists already"):
            texts.add_collection(lib.catalog, service.model, collection)
    description = service.describe(app_library.paths[0], k=5)
    assert len(description.tags) == 5 and all(t.collection == "builtin:vocabulary" for t in description.tags)
    assert [t.score for t in description.tags] == sorted((t.score for t in description.tags), reverse=True)
    assert {d.text for d in description.descriptions} == {"warm analog synth pads", "lo-fi beats to study to"}
    expected = service.model.embed_text(["lo-fi beats to study to"]).numpy()[0] @ service.snapshot().indexes.track_vectors(
        [service.snapshot().tracks.ids[0]])[0]
    got = next(d for d in description.descriptions if d.text == "lo-fi beats to study to")
    assert got.score == pytest.approx(float(expected), abs=1e-5)
    assert service.snapshot().tracks.ids[0] not in [r.track_id for r in description.similar]
    with Library.open(app_library.directory) as lib:
        texts.remove_collection(lib.catalog, "briefs")
        with pytest.raises(texts.TextsError, match="no text collection"):
            texts.remove_collection(lib.catalog, "briefs")
    assert service.describe(app_library.paths[0], k=5).descriptions == []


def test_query_cache_makes_repeats_skip_the_model(service, monkeypatch):
    import app.search

    service.query_cache.clear()
    calls = []
    real = app.search.embed_texts

    def counting(model, texts):
        calls.append(list(texts))
        return real(model, texts)

    monkeypatch.setattr(app.search, "embed_texts", counting)
    first = service.search("  slow   sad piano ", k=3)
    again = service.search("slow sad piano", k=3)
    assert calls == [["slow sad piano"]]
    assert [r.track_id for r in first] == [r.track_id for r in again]
    assert service.query_cache.hits >= 1


def test_bad_questions_get_messages_not_tracebacks(service, tiny_model, app_library, tmp_path):
    with pytest.raises(SearchError, match="limit is 500"):
        service.search("x" * 501)
    with pytest.raises(SearchError, match="Type a description"):
        service.search("   ")
    with pytest.raises(SearchError, match="between 1 and"):
        service.search("piano", k=0)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio")
    with pytest.raises(SearchError, match="Cannot decode notes.wav"):
        service.similar(not_audio)
    small = SearchService(app_library.directory, tiny_model, limits=ServiceLimits(max_upload_bytes=1000))
    with pytest.raises(SearchError, match="the limit is"):
        small.similar(shutil.copy(app_library.paths[0], tmp_path / "big.wav"))
    empty = SearchService(tmp_path / "no-library", tiny_model)
    with pytest.raises(SearchError, match="no indexed tracks"):
        empty.search("piano")


def test_model_without_tokenizer_explains_itself(app_library, tiny_model):
    class NoTokenizer:
        has_tokenizer = False

        def __getattr__(self, name):
            return getattr(tiny_model, name)

    service = SearchService(app_library.directory, NoTokenizer())
    with pytest.raises(SearchError, match="no text tokenizer"):
        service.search("piano")
    assert len(service.similar(app_library.paths[1], k=2)) == 2  # audio still works
    description = service.describe(app_library.paths[1], k=3)
    assert description.tags == [] and "no text tokenizer" in description.note and len(description.similar) == 5


def test_library_file_only_names_indexed_tracks(service, app_library, tmp_path):
    inside = app_library.paths[0]
    assert service.library_file(inside) == inside
    root = app_library.root
    assert service.library_file(f"{root}/../{root.name}/{inside.rsplit('/', 1)[1]}") == inside
    (root / "secret.txt").write_text("not yours")
    assert service.library_file(root / "secret.txt") is None
    assert service.library_file("/etc/passwd") is None
    assert service.library_file(f"{root}/../../etc/passwd") is None


def test_reload_on_a_new_generation_while_queries_run(fresh_app_library, tiny_model, tmp_path):
    """The indexer commits a new generation; running queries never fail and then see the new track."""
    app_library = fresh_app_library
    service = SearchService(app_library.directory, tiny_model, reload_check_seconds=0.0)
    before = service.snapshot().generation
    n_before = len(service.snapshot().tracks.ids)
    errors, answered, stop = [], [0], threading.Event()

    def ask():
        while not stop.is_set():
            try:
                assert len(service.search("dreamy ambient pads", k=3)) == 3
                answered[0] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    workers = [threading.Thread(target=ask) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        new_file = app_library.add_file(tmp_path, seed=99, seconds=12.0, title="Brand New")
        deadline = time.monotonic() + 30
        while service.snapshot().generation == before and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not errors, errors[:3]
    assert answered[0] > 0
    assert service.snapshot().generation > before
    assert len(service.snapshot().tracks.ids) == n_before + 1
    assert service.library_file(new_file) == str(new_file)


def test_filtered_ann_search_keeps_recall():
    """On an HNSW index, filtered top-10 vs the exact filtered ranking: small allowed sets are ranked
    exactly (equal), large ones through a widened HNSW search (recall@10 >= 0.95, as unfiltered)."""
    from app.filters import TrackColumns
    from app.search import Snapshot, rank_tracks
    from indexer import ann
    from indexer.vectors import VectorIndexes

    rng = np.random.default_rng(0)
    n, dim = 60_000, 32
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, n + 1, dtype=np.int64)
    index = ann.build_index(vectors, ids, "hnsw")
    years = rng.integers(1950, 2025, n).astype(np.float64)
    artists = [("Ada", "Bob", "Cleo")[i % 3] for i in range(n)]
    tracks = TrackColumns(ids=ids, paths=[f"/m/{i}" for i in ids], titles=[""] * n, artists=artists,
                          albums=[""] * n, years=years, durations=np.full(n, 100.0), tags=[()] * n,
                          tag_sets=[frozenset()] * n)
    snapshot = Snapshot(VectorIndexes(1, {}, dim, index, index), tracks, {int(t): i for i, t in enumerate(ids)},
                        None, {}, (), {}, "hnsw", "hnsw")
    queries = rng.standard_normal((20, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for expressions, exact_path in ((["year=2000..2000"], True), (["artist=o"], False),
                                    (["year=1950..2012"], False)):
        filters = Filters.parse(expressions)
        mask = filters.mask(tracks)
        hits = 0
        for q in queries:
            got, scores = rank_tracks(snapshot, q, 10, filters)
            exact = ids[mask][np.argsort(-(vectors[mask] @ q), kind="stable")[:10]]
            assert mask[got - 1].all()
            if exact_path:
                assert list(got) == list(exact)
            hits += len(set(got) & set(exact))
        recall = hits / (10 * len(queries))
        print(f"{expressions}: {int(mask.sum())} allowed, recall@10 {recall:.3f}")
        assert recall >= (1.0 if exact_path else 0.95), (expressions, int(mask.sum()), recall)


def test_a_library_of_another_model_is_refused_with_a_reason(app_library):
    import torch

    from muq_model import MuQMuLan, MuQMuLanConfig

    torch.manual_seed(1)
    other = MuQMuLan(MuQMuLanConfig.tiny()).eval()
    service = SearchService(app_library.directory, other, model_name="another tiny model")
    with pytest.raises(SearchError, match="indexed with model 'tiny-test-model'.*another tiny model"):
        service.search("piano")
    assert "different models" in service.status()["problem"]


def test_a_service_runs_numpy_blas_on_one_thread_and_leaves_faiss_its_threads(app_library, tiny_model):
    """An OpenBLAS pool that spin-waits after each small product takes the cores from the next query's text
    encoder (README "Text-query latency"): the service puts numpy's BLAS on one thread, and only numpy's."""
    from threadpoolctl import ThreadpoolController

    def blas_threads() -> dict[str, int]:
        return {("numpy" if "numpy" in lib.filepath else "other"): lib.num_threads
                for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"}

    assert "other" in blas_threads()  # faiss's own OpenBLAS, loaded with the library code
    with ThreadpoolController().limit(limits=2, user_api="blas"):  # restores every BLAS pool on exit
        assert blas_threads() == {"numpy": 2, "other": 2}
        service = SearchService(app_library.directory, tiny_model)
        try:
            assert blas_threads() == {"numpy": 1, "other": 2}
            assert len(service.search("piano", 3)) == 3  # still answers
        finally:
            service.close()
