"""The indexing pipeline end to end with the tiny model: rows, vectors, tags, errors, incremental re-runs."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from sqlalchemy import func, select

from benchmarks.audio_files import write_audio
from indexer.audio import load_audio
from indexer.catalog import CATALOG_ENV, CatalogError, IndexError_, Segment, Track, TrackTag
from indexer.pipeline import Indexer, IndexLocked, IndexOptions, library_lock
from indexer.vectors import Library, index_ids
from tests.helpers import write_tags

# name, seconds, rate, channels, seed: every format, 8-48 kHz, mono/stereo, unicode, a track under 5 s
GOOD = [
    ("01 - Alpha - Opening.wav", 12.0, 44100, 2, 1),
    ("Ünïcødé 音楽.flac", 6.0, 96000, 1, 2),
    ("mp3/Beta - Third.mp3", 11.0, 22050, 2, 3),
    ("aac.m4a", 3.0, 48000, 1, 4),
    ("vorbis.ogg", 7.5, 8000, 1, 5),
    ("voice.opus", 4.0, 48000, 2, 6),
    ("six.aiff", 2.0, 32000, 1, 7),
]


def make_music(root):
    paths = []
    for name, seconds, rate, channels, seed in GOOD:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        paths.append(str(write_audio(root / name, seconds, rate, channels, seed=seed)))
    write_tags(paths[0], title="Opening Theme", artist="Alpha", album="First", date="2001", genre="Jazz; Ambient")
    (root / "broken").mkdir()
    (root / "broken" / "empty.flac").write_bytes(b"")
    (root / "broken" / "text.mp3").write_text("not audio\n" * 50)
    whole = (root / paths[0]).read_bytes()
    (root / "broken" / "cut.wav").write_bytes(whole[: len(whole) // 3])
    return paths


def index(library, model, roots, **options):
    options.setdefault("workers", 1)
    options.setdefault("progress", False)
    return Indexer(library, model, "tiny", IndexOptions(**options)).run(roots)


def tracks_by_path(library):
    with library.catalog.session() as s:
        return {t.path: t for t in s.scalars(select(Track))}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request):
    """Every test here runs on both catalog backends."""
    return request.param


@pytest.fixture(autouse=True)
def catalog_database(backend, request, monkeypatch):
    """On PostgreSQL, the test's libraries use a database of their own: a copy of the indexed library's
    when the test uses it, else an empty one (``$MUQSEARCH_CATALOG``, which ``Library.open`` follows)."""
    if backend == "postgresql":
        template = None
        if {"indexed", "library"} & set(request.fixturenames):
            request.getfixturevalue("indexed")
            template = INDEXED_DATABASE
        url = request.getfixturevalue("postgres_server").database(f"pipeline_{abs(hash(request.node.nodeid))}", template)
        monkeypatch.setenv(CATALOG_ENV, url)


INDEXED_DATABASE = "pipeline_indexed"


@pytest.fixture(scope="module")
def indexed(backend, tiny_model, tmp_path_factory, request):
    """A library indexed once from the GOOD files plus three broken ones (tests copy it before changing it)."""
    base = tmp_path_factory.mktemp("pipeline")
    paths = make_music(base / "music")
    url = request.getfixturevalue("postgres_server").database(INDEXED_DATABASE) if backend == "postgresql" else None
    with Library.open(base / "library", create=True, catalog_url=url) as library:
        summary = index(library, tiny_model, [base / "music"])
    return base, paths, summary


@pytest.fixture
def library(indexed, tmp_path):
    """A private copy of the indexed library (same music folder, copied too so tests may edit files)."""
    base, _, _ = indexed
    shutil.copytree(base / "music", tmp_path / "music", symlinks=True)
    shutil.copytree(base / "library", tmp_path / "library")
    lib = Library.open(tmp_path / "library")
    # Re-point the catalog at the copied files.
    with lib.catalog.session.begin() as s:
        for track in s.scalars(select(Track)):
            track.path = track.path.replace(str(base), str(tmp_path))
        for error in s.scalars(select(IndexError_)):
            error.path = error.path.replace(str(base), str(tmp_path))
    yield lib
    lib.close()


def test_first_run_indexes_every_readable_file_and_reports_every_bad_one(indexed):
    base, paths, summary = indexed
    assert (summary.indexed, summary.failed, summary.skipped, summary.removed) == (len(GOOD), 3, 0, 0)
    reasons = {os.path.basename(e["path"]): (e["stage"], e["message"]) for e in summary.errors}
    assert reasons["empty.flac"] == ("read", "empty file (0 bytes)")
    assert reasons["text.mp3"][0] == "read"
    assert reasons["cut.wav"][0] == "decode" and "truncated" in reasons["cut.wav"][1]
    with Library.open(base / "library") as library:
        assert sorted(e.path for e in library.catalog.errors()) == sorted(e["path"] for e in summary.errors)
        assert set(tracks_by_path(library)) == set(paths)
        assert library.check().ok


def test_rows_hold_file_facts_tags_and_segments(indexed):
    base, paths, _ = indexed
    with Library.open(base / "library") as library, library.catalog.session() as s:
        tagged = s.scalar(select(Track).where(Track.path == paths[0]))
        assert (tagged.title, tagged.artist, tagged.album, tagged.year, tagged.genre) == (
            "Opening Theme", "Alpha", "First", 2001, "Jazz; Ambient"
        )
        assert (tagged.sample_rate, tagged.channels, tagged.codec, tagged.container) == (44100, 2, "PCM_16", "WAV")
        assert tagged.duration == pytest.approx(12.0) and tagged.size == os.path.getsize(paths[0])
        assert [(seg.index, seg.start, seg.end) for seg in tagged.segments] == [(0, 0.0, 10.0), (1, 10.0, 12.0)]
        untagged = s.scalar(select(Track).where(Track.path == paths[2]))
        assert (untagged.title, untagged.artist, untagged.title_from_filename) == ("Third", "Beta", True)
        short = s.scalar(select(Track).where(Track.path == paths[6]))  # 2 s: one clip of twice its length
        assert [(seg.start, seg.end) for seg in short.segments] == [(0.0, 2.0)]
        unicode = s.scalar(select(Track).where(Track.path == paths[1]))
        assert unicode.title == "Ünïcødé 音楽" and unicode.sample_rate == 96000


def test_vectors_are_what_the_model_gives_for_the_decoded_file(indexed, tiny_model):
    base, paths, _ = indexed
    with Library.open(base / "library") as library:
        rows = tracks_by_path(library)
        indexes = library.load()
        for path in paths:
            tracks, clips = tiny_model.embed_audio([load_audio(path)], return_clips=True)
            row = rows[path]
            np.testing.assert_allclose(row.vector(), tracks[0].numpy(), atol=1e-5)
            with library.catalog.session() as s:
                stored = np.stack([seg.vector() for seg in s.get(Track, row.id).segments])
            np.testing.assert_allclose(stored, clips[0].embeddings.numpy(), atol=1e-5)
            expected = tracks[0].numpy() / np.linalg.norm(tracks[0].numpy())
            np.testing.assert_allclose(indexes.track_vectors([row.id])[0], expected, atol=1e-5)


def test_file_genres_and_auto_tags_are_stored(indexed, tiny_model):
    from data.vocabulary import load_vocabulary
    from indexer.autotag import AutoTagger

    base, paths, _ = indexed
    vocabulary = load_vocabulary()
    with Library.open(base / "library") as library, library.catalog.session() as s:
        track = s.scalar(select(Track).where(Track.path == paths[0]))
        file_tags = sorted(t.tag for t in track.tags if t.source == "file")
        assert file_tags == ["Ambient", "Jazz"]
        auto = [t for t in track.tags if t.source == "auto"]
        per_category = {c: sum(t.category == c for t in auto) for c in vocabulary.categories}
        assert all(per_category[c] <= spec.top_k for c, spec in vocabulary.categories.items())
        # Stored: each category's best tags (cosine of the track with the tag's text) that beat the track's
        # null bar (indexer.autotag.PASS_SHARE of the null bank's scores on it).
        track_vector = track.vector() / np.linalg.norm(track.vector())
        tagger = AutoTagger.for_model(tiny_model, library.catalog)
        bar = tagger.bar(track_vector)
        texts = tiny_model.embed_text(vocabulary.texts).numpy() @ track_vector
        expected = []
        for category, spec in vocabulary.categories.items():
            positions = vocabulary.in_category(category)
            best = sorted(positions, key=lambda i: -texts[i])[: spec.top_k]
            expected += [(vocabulary.tags[i].tag, category) for i in best if texts[i] > bar]
        assert sorted((t.tag, t.category) for t in auto) == sorted(expected)
        for t in auto:
            assert t.score == pytest.approx(float(texts[vocabulary.texts.index(
                next(v.text for v in vocabulary.tags if v.tag == t.tag and v.category == t.category))]), abs=1e-5)


def test_second_run_is_a_no_op(library, tiny_model, tmp_path):
    before = {p: t.id for p, t in tracks_by_path(library).items()}
    generation = library.generation
    summary = index(library, tiny_model, [tmp_path / "music"])
    assert (summary.indexed, summary.retagged, summary.failed) == (0, 0, 0)
    assert summary.skipped == len(GOOD) + 3  # unchanged bad files are not retried either
    assert library.generation == generation
    assert {p: t.id for p, t in tracks_by_path(library).items()} == before


def test_modified_deleted_and_added_files_are_detected(library, tiny_model, tmp_path):
    music = tmp_path / "music"
    before = tracks_by_path(library)
    changed = str(music / "vorbis.ogg")
    write_audio(changed, 9.0, 8000, 1, seed=50)  # new audio
    retagged = str(music / "aac.m4a")
    write_tags(retagged, title="Renamed In Tags", genre="Bossa Nova")  # same audio, new tags
    os.utime(retagged, ns=(1, 1))
    deleted = str(music / "voice.opus")
    os.remove(deleted)
    added = str(write_audio(music / "new" / "added.flac", 5.0, 44100, 2, seed=60))

    summary = index(library, tiny_model, [music])
    assert (summary.indexed, summary.retagged, summary.missing, summary.removed) == (2, 1, 1, 0)
    after = tracks_by_path(library)
    assert after[changed].id != before[changed].id and after[changed].duration == pytest.approx(9.0)
    assert after[retagged].id == before[retagged].id  # same audio: same id, same vectors
    assert after[retagged].title == "Renamed In Tags"
    np.testing.assert_array_equal(after[retagged].vector(), before[retagged].vector())
    with library.catalog.session() as s:
        tags = s.scalars(select(TrackTag.tag).where(TrackTag.track_id == after[retagged].id,
                                                    TrackTag.source == "file")).all()
        assert tags == ["Bossa Nova"]
        assert s.scalar(select(func.count()).where(Segment.track_id == before[changed].id)) == 0
    assert added in after and deleted in after  # deleted stays until --prune
    assert library.check().ok

    summary = index(library, tiny_model, [music], prune=True)
    assert (summary.indexed, summary.removed) == (0, 1)
    assert deleted not in tracks_by_path(library)
    assert set(index_ids(library.load().tracks)) == {t.id for t in tracks_by_path(library).values()}


def test_a_fixed_bad_file_is_indexed_and_its_error_cleared(library, tiny_model, tmp_path):
    music = tmp_path / "music"
    broken = music / "broken" / "empty.flac"
    write_audio(broken, 3.0, 44100, 1, seed=70)
    summary = index(library, tiny_model, [music])
    assert summary.indexed == 1 and summary.failed == 0
    assert str(broken) in tracks_by_path(library)
    assert str(broken) not in {e.path for e in library.catalog.errors()}
    assert len(library.catalog.errors()) == 2


def test_retry_errors_decodes_unchanged_bad_files_again(library, tiny_model, tmp_path):
    summary = index(library, tiny_model, [tmp_path / "music"], retry_errors=True)
    assert summary.failed == 3 and summary.skipped == len(GOOD)
    assert len(library.catalog.errors()) == 3  # replaced, not duplicated


def test_absurdly_long_files_are_refused(tmp_path, tiny_model):
    (tmp_path / "music").mkdir()
    write_audio(tmp_path / "music" / "long.wav", 8.0, 8000)
    with Library.open(tmp_path / "library", create=True) as library:
        summary = index(library, tiny_model, [tmp_path / "music"], max_seconds=5.0)
        assert summary.failed == 1 and "too long" in summary.errors[0]["message"]


def test_a_model_with_another_fingerprint_is_refused(library, tmp_path):
    import torch

    from muq_model import MuQMuLan, MuQMuLanConfig

    torch.manual_seed(1)
    other = MuQMuLan(MuQMuLanConfig.tiny()).eval()
    assert index(library, other, [tmp_path / "music"]).skipped == len(GOOD) + 3  # nothing to embed: fine
    write_audio(tmp_path / "music" / "new.flac", 3.0, 44100, 1, seed=80)
    with pytest.raises(CatalogError, match="cannot be mixed"):
        index(library, other, [tmp_path / "music"])
    assert str(tmp_path / "music" / "new.flac") not in tracks_by_path(library)


def test_only_one_indexer_at_a_time(library, tiny_model, tmp_path):
    with library_lock(library.directory), pytest.raises(IndexLocked, match="another"):
        index(library, tiny_model, [tmp_path / "music"])
    assert index(library, tiny_model, [tmp_path / "music"]).skipped == len(GOOD) + 3  # released


def test_empty_folder_indexes_nothing(tmp_path, tiny_model):
    (tmp_path / "music").mkdir()
    with Library.open(tmp_path / "library", create=True) as library:
        summary = index(library, tiny_model, [tmp_path / "music"])
        assert (summary.indexed, summary.skipped, summary.failed) == (0, 0, 0)


def test_a_crashing_decoder_fails_only_its_file(tmp_path, tiny_model):
    import signal
    import threading

    import soundfile as sf

    from benchmarks.audio_files import synth

    music = tmp_path / "music"
    long_file = music / "00 long.wav"  # decoded first, and long enough to be in the decoder when it dies
    music.mkdir()
    with sf.SoundFile(long_file, "w", 8000, 1, subtype="PCM_16") as out:
        for minute in range(20):
            out.write(synth(60.0, 8000, 1, seed=minute))
    for n in range(3):
        write_audio(music / f"{n + 1:02d} short.flac", 3.0, 44100, 1, seed=n)
    killed = []

    def kill_the_decoder_holding_the_long_file():
        for _ in range(1200):
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
                try:
                    targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
                except OSError:
                    continue
                if str(long_file) in targets:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            threading.Event().wait(0.1)

    killer = threading.Thread(target=kill_the_decoder_holding_the_long_file, daemon=True)
    killer.start()
    with Library.open(tmp_path / "library", create=True) as library:
        summary = index(library, tiny_model, [music])
        killer.join()
        assert killed, "never saw a decoder with the long file open"
        assert (summary.indexed, summary.failed) == (3, 1)
        assert summary.errors == [{"path": str(long_file), "stage": "decode",
                                   "message": "decoder process crashed (exit code -9)"}]
        assert str(long_file) not in tracks_by_path(library) and library.check().ok
