"""Catalog schema and FAISS generations: atomic writes, incremental sync, consistency check and repair."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from sqlalchemy import delete, select

from indexer import ann
from indexer.catalog import SCHEMA_VERSION, Catalog, CatalogError, Meta, Segment, Track, TrackTag, to_blob
from indexer.vectors import Library, LibraryError, index_ids

DIM = 16
FINGERPRINT = {"model_id": "test", "config_hash": "c", "weights_hash": "w", "clip_policy": "p"}


def add_tracks(library, n, seed=0, segments_per_track=3):
    """Insert n tracks with random unit clip vectors straight into the catalog; returns their ids."""
    rng = np.random.default_rng(seed)
    ids = []
    with library.catalog.session.begin() as s:
        for i in range(n):
            clips = rng.standard_normal((segments_per_track, DIM)).astype(np.float32)
            clips /= np.linalg.norm(clips, axis=1, keepdims=True)
            track = Track(
                path=f"/music/{seed}-{i}.flac", size=1, mtime_ns=1, audio_hash=f"{seed}-{i}", duration=30.0,
                sample_rate=44100, channels=2, codec="PCM_16", container="FLAC", title=f"t{i}",
                n_segments=segments_per_track, embedding=to_blob(clips.mean(axis=0)),
            )
            track.segments = [
                Segment(index=k, start=10.0 * k, end=10.0 * (k + 1), embedding=to_blob(v)) for k, v in enumerate(clips)
            ]
            track.tags = [TrackTag(tag="jazz", category="genre", score=None, source="file")]
            s.add(track)
            s.flush()
            ids.append(track.id)
    return ids


@pytest.fixture
def library(tmp_path):
    lib = Library.open(tmp_path / "lib", create=True)
    lib.catalog.claim_fingerprint(FINGERPRINT, "test-model", DIM)
    yield lib
    lib.close()


def test_new_catalog_is_wal_sqlite_with_schema_version(library):
    assert library.catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
    con = sqlite3.connect(library.directory / "catalog.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "tracks", "segments", "track_tags", "errors", "index_runs", "text_collections", "texts"} <= tables


def test_opening_a_missing_library_says_how_to_make_one(tmp_path):
    with pytest.raises(LibraryError, match="muqsearch index"):
        Library.open(tmp_path / "nothing")


def test_catalog_newer_than_the_code_is_refused(library, tmp_path):
    with library.catalog.session.begin() as s:
        s.get(Meta, "schema_version").value = str(SCHEMA_VERSION + 1)
    with pytest.raises(CatalogError, match="newer"):
        Catalog(library.directory)


def test_a_different_model_fingerprint_is_refused_once_vectors_exist(library):
    other = dict(FINGERPRINT, weights_hash="other")
    library.catalog.claim_fingerprint(other, "other", DIM)  # empty library: may switch model
    library.catalog.claim_fingerprint(FINGERPRINT, "test-model", DIM)
    add_tracks(library, 1)
    with pytest.raises(CatalogError, match="cannot be mixed"):
        library.catalog.claim_fingerprint(other, "other", DIM)
    library.catalog.claim_fingerprint(FINGERPRINT, "test-model", DIM)  # the same model is fine


def test_the_same_weights_under_another_name_share_the_library(library):
    library.catalog.claim_fingerprint(FINGERPRINT, "test-model", DIM)
    add_tracks(library, 1)
    moved = dict(FINGERPRINT, model_id="/new/place/of/the/model")
    library.catalog.claim_fingerprint(moved, "/new/place/of/the/model", DIM)
    assert library.catalog.get_meta("model_name") == "/new/place/of/the/model"
    assert library.catalog.fingerprint == FINGERPRINT  # provenance of the stored vectors is kept


def test_deleting_a_track_cascades_to_segments_and_tags(library):
    ids = add_tracks(library, 2)
    with library.catalog.session.begin() as s:
        s.execute(delete(Track).where(Track.id == ids[0]))
    with library.catalog.session() as s:
        assert s.scalars(select(Segment.track_id)).all() == [ids[1]] * 3
        assert s.scalars(select(TrackTag.track_id)).all() == [ids[1]]


def test_sync_writes_a_generation_matching_the_catalog(library):
    ids = add_tracks(library, 5)
    generation = library.sync()
    assert generation == library.generation == 1
    indexes = library.load()
    assert sorted(index_ids(indexes.tracks)) == ids
    assert indexes.segments.ntotal == 15
    # Track index holds the renormalised mean; the catalog keeps the plain mean.
    with library.catalog.session() as s:
        mean = s.get(Track, ids[2]).vector()
    np.testing.assert_allclose(indexes.track_vectors([ids[2]])[0], mean / np.linalg.norm(mean), atol=1e-6)
    scores, found = indexes.search_tracks(mean / np.linalg.norm(mean), 1)
    assert found[0, 0] == ids[2] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    manifest = json.loads((library.generation_dir(1) / "manifest.json").read_text())
    assert manifest["tracks"] == {"kind": "flat", "count": 5}
    assert library.check().ok


def test_sync_without_changes_writes_nothing(library):
    add_tracks(library, 3)
    assert library.sync() == 1
    assert library.sync() == 1
    assert library.load().generation == library.generation


def test_sync_adds_and_removes_incrementally_and_keeps_one_old_generation(library):
    ids = add_tracks(library, 4)
    library.sync()
    old = library.load()
    with library.catalog.session.begin() as s:
        s.execute(delete(Track).where(Track.id == ids[0]))
    new_ids = add_tracks(library, 2, seed=1)
    assert library.sync() == 2
    assert library.generation > old.generation
    assert sorted(index_ids(library.load().tracks)) == sorted(ids[1:] + new_ids)
    assert library.load().segments.ntotal == 5 * 3
    add_tracks(library, 1, seed=2)
    assert library.sync() == 3
    kept = sorted(p.name for p in library.vectors_dir.iterdir())
    assert kept == ["gen-00000002", "gen-00000003"]


def test_restricted_search_only_returns_allowed_ids(library):
    ids = add_tracks(library, 20)
    library.sync()
    indexes = library.load()
    query = np.ones((1, DIM), np.float32) / np.sqrt(DIM)
    _, found = indexes.search_tracks(query, 5, allowed_ids=ids[:3])
    assert set(found[0][found[0] >= 0]) <= set(ids[:3])
    assert (found[0] >= 0).sum() == 3


def test_check_detects_and_repair_fixes_an_index_that_disagrees(library):
    ids = add_tracks(library, 6)
    library.sync()
    # Rows added behind the index's back (e.g. a run killed before its final sync) ...
    add_tracks(library, 2, seed=1)
    # ... and a vector tampered with in the catalog.
    with library.catalog.session.begin() as s:
        s.get(Track, ids[0]).embedding = to_blob(-np.ones(DIM, np.float32))
    report = library.check(sample=100)
    assert not report.ok
    assert report.missing == {"tracks": 2, "segments": 6}
    assert report.mismatched == {"tracks": 1}
    library.repair()
    assert library.check(sample=100).ok


def test_check_reports_a_missing_generation_directory_and_sync_repairs_it(library):
    add_tracks(library, 3)
    library.sync()
    import shutil

    shutil.rmtree(library.generation_dir(1))
    assert "missing" in library.check().problems[0]
    with pytest.raises(LibraryError, match="repair"):
        library.load()
    assert library.sync() == 2
    assert library.check().ok


@pytest.mark.parametrize("tracks", [3, 40])
def test_interrupted_write_leaves_the_current_generation_readable(library, monkeypatch, tracks):
    if tracks == 40:  # pq-disk, whose vectors file is built in a staging file first
        pq_disk_library(library, tracks)
    else:
        add_tracks(library, tracks)
        library.sync()
    add_tracks(library, 1, seed=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr("indexer.vectors.os.rename", crash)
    with pytest.raises(KeyboardInterrupt):
        library.sync()
    monkeypatch.undo()
    assert library.generation == 1 and library.load().tracks.ntotal == tracks  # readers unaffected
    report = library.check(sample=200)
    assert report.missing == {"tracks": 1, "segments": 3} and not report.mismatched and not report.extra
    assert library.sync() == 2 and library.load().tracks.ntotal == tracks + 1
    assert not list(library.vectors_dir.glob(".*"))  # no half-written directory nor staging file left


def test_optimize_rebuilds_with_the_kind_chosen_for_the_size(library, monkeypatch):
    add_tracks(library, 30)
    library.sync()
    assert library.catalog.get_meta("index_type") == "flat"
    library.exact_limit = 10  # as if 30 tracks were a large library
    assert library.sync() == 1  # no change, no rebuild: the kind only changes on --optimize
    library.sync(optimize=True)
    assert library.catalog.get_meta("index_type") == "pq-refine"
    assert library.catalog.get_meta("segment_index_type") == "pq-refine"
    assert library.check().ok


def test_pq_refine_library_removes_and_replaces_vectors_in_place(library, monkeypatch):
    ids = add_tracks(library, 40)
    library.exact_limit = 10
    library.sync(optimize=True)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("removal should not rebuild the index")

    monkeypatch.setattr(ann, "build_index", no_rebuild)
    # A changed file is a deletion plus a new row (a new id); --prune is a deletion.
    with library.catalog.session.begin() as s:
        s.execute(delete(Track).where(Track.id.in_(ids[:5])))
    new_ids = add_tracks(library, 3, seed=1)
    assert library.sync() == 2
    assert library.check(sample=100).ok
    indexes = library.load()
    assert ann.index_kind(indexes.tracks) == "pq-refine"
    assert sorted(index_ids(indexes.tracks)) == sorted(ids[5:] + new_ids)
    for track_id in new_ids:  # each new vector is its own nearest neighbour, exactly scored
        vector = indexes.track_vectors([track_id])
        scores, found = indexes.search_tracks(vector, 3)
        assert found[0, 0] == track_id and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    _, found = indexes.search_tracks(indexes.track_vectors([new_ids[0]]), 5, allowed_ids=ids[5:15])
    assert set(found[0]) <= set(ids[5:15]) and (found[0] >= 0).all()


def test_kinds_that_cannot_remove_rebuild_on_deletion_keeping_their_kind(library, monkeypatch):
    # Libraries written before pq-refine was chosen may hold HNSW (or IVF) indexes.
    add_tracks(library, 30)
    monkeypatch.setattr(ann, "index_kind_for", lambda n, **limits: "hnsw")
    library.sync(optimize=True)
    monkeypatch.undo()
    assert library.catalog.get_meta("index_type") == "hnsw"
    with library.catalog.session.begin() as s:
        s.execute(delete(Track).where(Track.id == 1))
    library.sync()
    assert library.catalog.get_meta("index_type") == "hnsw"
    assert library.check().ok


def test_a_generation_of_another_model_is_not_loaded(library):
    add_tracks(library, 2)
    library.sync()
    manifest_path = library.generation_dir(1) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fingerprint"] = dict(FINGERPRINT, weights_hash="other")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(LibraryError, match="another model"):
        library.load()


def pq_disk_library(library, tracks=40):
    """A library past both (lowered) size thresholds: its indexes are pq-disk."""
    ids = add_tracks(library, tracks)
    library.exact_limit, library.in_memory_limit = 5, 10
    library.sync()
    return ids


def test_the_kind_follows_the_library_size(library):
    add_tracks(library, 8)
    library.exact_limit, library.in_memory_limit = 5, 20
    library.sync()
    assert library.manifest()["tracks"]["kind"] == "pq-refine"  # 8 tracks
    assert library.manifest()["segments"]["kind"] == "pq-disk"  # 24 segments
    add_tracks(library, 12, seed=1)  # 20 tracks
    library.sync(optimize=True)
    assert library.catalog.get_meta("index_type") == library.catalog.get_meta("segment_index_type") == "pq-disk"


def test_pq_disk_library_maps_its_vectors_file_and_searches_with_filters(library):
    ids = pq_disk_library(library)
    directory = library.generation_dir(library.generation)
    assert sorted(p.name for p in directory.iterdir()) == [
        "manifest.json", "segments.faiss", "segments.vectors", "tracks.faiss", "tracks.vectors"]
    assert (directory / "tracks.vectors").stat().st_size == len(ids) * DIM * 4
    assert not list(library.vectors_dir.glob(".staging-*"))  # linked into the generation, then let go
    assert library.check(sample=200).ok  # every stored vector equals the catalog's
    indexes = library.load()
    assert ann.index_kind(indexes.tracks) == "pq-disk"
    vector = indexes.track_vectors([ids[3]])
    scores, found = indexes.search_tracks(vector, 5)
    assert found[0, 0] == ids[3] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    _, found = indexes.search_tracks(vector, 5, allowed_ids=ids[10:30])
    assert set(found[0]) <= set(ids[10:30]) and (found[0] >= 0).all()


def test_pq_disk_deletion_rebuilds_the_vectors_file_from_the_catalog(library):
    ids = pq_disk_library(library)
    old = library.load()
    with library.catalog.session.begin() as s:
        s.execute(delete(Track).where(Track.id.in_(ids[:5])))
    new_ids = add_tracks(library, 2, seed=1)
    assert library.sync() == 2
    indexes = library.load()
    assert ann.index_kind(indexes.tracks) == ann.index_kind(indexes.segments) == "pq-disk"
    assert sorted(index_ids(indexes.tracks)) == sorted(ids[5:] + new_ids)
    assert (library.generation_dir(2) / "tracks.vectors").stat().st_size == (len(ids) - 3) * DIM * 4
    assert library.check(sample=200).ok
    _, found = indexes.search_tracks(old.track_vectors(ids[:5]), 10)
    assert not np.isin(found, ids[:5]).any()
    # the reader of the previous generation still searches its own mapped file
    assert old.search_tracks(old.track_vectors([ids[0]]), 1)[1][0, 0] == ids[0]


def test_a_lost_or_torn_vectors_file_is_rebuilt_from_the_catalog(library):
    pq_disk_library(library)
    (library.generation_dir(1) / "segments.vectors").unlink()
    with open(library.generation_dir(1) / "tracks.vectors", "r+b") as file:
        file.truncate(100)
    report = library.check()
    assert not report.ok and "tracks.vectors" in report.problems[0]
    assert library.sync() == 2
    assert library.check(sample=200).ok
    assert ann.index_kind(library.load().segments) == "pq-disk"
