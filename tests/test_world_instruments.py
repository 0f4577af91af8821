"""The real-instrument world: reproducible from its seed, labels complete and true, instruments audible."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from data.instruments import WORLD_DIR, WORLD_SEED, load_labels
from data.instruments.compose import Note, Stem
from data.instruments.generate import compose_piece, generate, label_record
from data.instruments.gm import DRUM_KITS, FAMILIES, PROGRAMS
from data.instruments.render import (
    SAMPLE_RATE,
    SoundFontMissingError,
    render_piece,
    render_stem,
    soundfont_path,
)


def _has_soundfont() -> bool:
    try:
        soundfont_path()
        return True
    except SoundFontMissingError:
        return False


needs_soundfont = pytest.mark.skipif(not _has_soundfont(), reason="no GM SoundFont (scripts/install.sh --dev installs it)")


def test_committed_labels_are_complete_and_consistent():
    records = load_labels()
    assert len(records) >= 40 and {r["source"] for r in records} == {"demo", "bach", "folk"}
    for r in records:
        assert r["mode"] in ("major", "minor") and r["key"].endswith(r["mode"]) and 40 <= r["bpm"] <= 200
        assert (WORLD_DIR / r["mix"]).is_file(), r["mix"]
        for s in r["stems"]:
            assert (WORLD_DIR / s["file"]).is_file(), s["file"]
            if s["is_drum"]:
                assert DRUM_KITS[s["kit"]] == s["kit_name"] and s["pattern"]
            else:
                program = PROGRAMS[s["program"]]
                assert (program.name, program.family) == (s["program_name"], s["family"])
                assert FAMILIES[s["program"] // 8] == s["family"]
                assert program.low <= s["pitch_low"] <= s["pitch_high"] <= program.high


def test_committed_audio_is_ten_second_clips_at_24k():
    record = load_labels()[0]
    for file in [record["mix"]] + [s["file"] for s in record["stems"]]:
        audio, rate = sf.read(WORLD_DIR / file, dtype="float32")
        assert rate == SAMPLE_RATE and audio.ndim == 1 and abs(len(audio) / rate - record["seconds"]) < 0.05
        assert np.sqrt(np.mean(audio**2)) > 1e-3  # not silent


def test_labels_reproduce_from_the_seed():
    """The committed labels are what the seed composes: demo plans and both corpora (music21)."""
    records = load_labels()
    seen = set()
    for index, record in enumerate(records):
        if record["source"] in seen:
            continue
        seen.add(record["source"])
        assert label_record(compose_piece(WORLD_SEED, index), index, WORLD_SEED, record["seconds"]) == record
    assert seen == {"demo", "bach", "folk"}


def test_seed_changes_the_pieces():
    first = [label_record(compose_piece(1, i), i, 1, 10.0) for i in range(4)]
    assert first == [label_record(compose_piece(1, i), i, 1, 10.0) for i in range(4)]
    assert first != [label_record(compose_piece(2, i), i, 2, 10.0) for i in range(4)]


def _log_spectrum(wave: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(wave, 2048)[::512]
    return np.log(np.abs(np.fft.rfft(frames * np.hanning(2048), axis=1)).mean(axis=0) + 1e-6)


@needs_soundfont
def test_rendering_is_deterministic_and_the_program_is_audible():
    notes = [Note(0.25 * i, 0.4, 60 + (0, 4, 7, 12)[i % 4], 100) for i in range(12)]
    piano = render_stem(Stem("lead", notes, PROGRAMS[0]), 3.0)
    np.testing.assert_array_equal(piano, render_stem(Stem("lead", notes, PROGRAMS[0]), 3.0))
    softer = render_stem(Stem("lead", [Note(n.start, n.duration, n.pitch, 90) for n in notes], PROGRAMS[0]), 3.0)
    flute = render_stem(Stem("lead", notes, PROGRAMS[73]), 3.0)
    organ = render_stem(Stem("lead", notes, PROGRAMS[16]), 3.0)
    same = np.abs(_log_spectrum(piano) - _log_spectrum(softer)).mean()
    for other in (flute, organ):  # another instrument on the same notes: a far larger change of timbre
        assert np.abs(_log_spectrum(piano) - _log_spectrum(other)).mean() > 3 * same


@needs_soundfont
def test_drum_kits_differ_and_mix_is_the_sum_of_stems():
    hits = [Note(0.25 * i, 0.2, (36, 42, 38, 42)[i % 4], 110) for i in range(12)]
    standard = render_stem(Stem("drums", hits, kit=0, pattern="x"), 3.0)
    electronic = render_stem(Stem("drums", hits, kit=25, pattern="x"), 3.0)
    assert np.abs(_log_spectrum(standard) - _log_spectrum(electronic)).mean() > 0.5
    mix, stems = render_piece(compose_piece(5, 0, seconds=3.0), 3.0)
    np.testing.assert_allclose(mix, np.sum(stems, axis=0), atol=1e-5)
    assert 0.8 < np.abs(mix).max() <= 0.9


@needs_soundfont
def test_generator_writes_mix_stems_labels_and_sets(tmp_path):
    records = generate(3, 2, tmp_path, seconds=3.0)
    assert [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()] == records
    for r in records:
        mix, rate = sf.read(tmp_path / r["mix"], dtype="float32")
        stems = [sf.read(tmp_path / s["file"], dtype="float32")[0] for s in r["stems"]]
        assert rate == SAMPLE_RATE and all(len(s) == len(mix) for s in stems)
    tagging = [json.loads(line) for line in (tmp_path / "tagging.jsonl").read_text().splitlines()]
    assert [row["audio"] for row in tagging] == [r["mix"] for r in records]
    assert all(r["mode"] in row["tags"] for r, row in zip(records, tagging, strict=True))


def test_committed_triplets_hold_what_their_split_says():
    stems = {s["file"]: dict(s, piece=r["id"]) for r in load_labels() for s in r["stems"]}
    for split in ("xab", "xyc"):
        rows = [json.loads(line) for line in (WORLD_DIR / f"abx_{split}.jsonl").read_text().splitlines()]
        assert {row["category"] for row in rows} == {"instruments", "drums"}
        assert 0.3 < np.mean([row["closer"] == "a" for row in rows]) < 0.7
        for row in rows:
            x, near, far = (stems[row[k]] for k in ("x", row["closer"], "b" if row["closer"] == "a" else "a"))
            assert len({x["piece"], near["piece"], far["piece"]}) == 3
            drums = row["category"] == "drums"
            instrument, group = ("kit", "kit_kind") if drums else ("program", "family")
            assert all(s["is_drum"] == drums for s in (x, near, far))
            if split == "xab":
                assert len({x[instrument], near[instrument], far[instrument]}) == 3
                assert near[group] == x[group] != far[group]
            else:
                assert near[instrument] == x[instrument] != far[instrument]
