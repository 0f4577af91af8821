"""A moment is a playable span: a whole clip inside the track, never the half-second tail of a wrapped
last clip (issue 17: "0:10-0:10.5" of an 11 s track). Tracks of 3, 11, 25 and 60 s, every clip as the
best one in turn."""

from __future__ import annotations

import pytest

from app.search import SearchService, best_moment

DURATIONS = (3.0, 11.0, 25.0, 60.0)
CLIP = 10.0


@pytest.fixture(scope="module")
def moment_service(tiny_model, tmp_path_factory):
    from benchmarks.audio_files import write_audio
    from indexer.pipeline import Indexer, IndexOptions
    from indexer.vectors import Library

    base = tmp_path_factory.mktemp("moments")
    for n, seconds in enumerate(DURATIONS):
        write_audio(base / "music" / f"{seconds:g} s.wav", seconds=seconds, seed=n)
    with Library.open(base / "library", create=True) as library:
        summary = Indexer(library, tiny_model, "tiny", IndexOptions(workers=1, progress=False)).run([base / "music"])
    assert summary.indexed == len(DURATIONS)
    service = SearchService(base / "library", tiny_model)
    yield service
    service.close()


@pytest.mark.parametrize("seconds", DURATIONS)
def test_every_clip_of_a_track_is_a_playable_moment(moment_service, seconds):
    snapshot = moment_service.snapshot()
    (row,) = [i for i, d in enumerate(snapshot.tracks.durations) if abs(d - seconds) < 0.05]
    track_id = int(snapshot.tracks.ids[row])
    duration = float(snapshot.tracks.durations[row])
    segment_ids, _, _ = snapshot.segments_of[track_id]
    assert len(segment_ids) == -(-seconds // CLIP)  # 1, 2, 3 and 6 clips
    spans = []
    for vector in snapshot.indexes.segment_vectors(segment_ids):  # each clip as the query: it is the best
        moment = best_moment(snapshot, track_id, vector)
        assert 0.0 <= moment.start < moment.end <= duration + 1e-3
        assert moment.end - moment.start == pytest.approx(min(CLIP, duration), abs=1e-3)
        spans.append((moment.start, moment.end))
    if seconds < CLIP:
        assert spans == [(0.0, pytest.approx(duration, abs=1e-3))]  # a short track's moment is the track
    elif seconds % CLIP:
        assert spans[-1] == (pytest.approx(duration - CLIP, abs=1e-3), pytest.approx(duration, abs=1e-3))
    else:
        assert spans == [(k * CLIP, (k + 1) * CLIP) for k in range(int(seconds // CLIP))]


def test_search_results_carry_playable_moments(moment_service):
    for result in moment_service.search("slow sad piano", k=len(DURATIONS), moments=True):
        assert result.moment.end - result.moment.start == pytest.approx(min(CLIP, result.duration), abs=1e-3)
        assert 0.0 <= result.moment.start and result.moment.end <= result.duration + 1e-3
