"""The demo world generator: reproducible, clean splits, and attributes that are really audible."""

from __future__ import annotations

import numpy as np
import pytest

from data.demo import DEMO_CLIPS, DEMO_SEED, DEMO_TEST_CLIPS
from data.demo.captions import ATTRIBUTES, SHORT_TEMPLATES, TEST_TEMPLATES, TRAIN_TEMPLATES, caption
from data.demo.generate import generate, plan, plan_variants
from data.demo.synth import SAMPLE_RATE, ClipSpec, render

BASE = {
    "instrument": "piano", "tempo": "medium", "mode": "major", "loudness": "loud",
    "rhythm": "none", "register": "middle", "texture": "chords", "bass": "none",
}


def spec(seconds: float = 6.0, bpm: float = 100.0, tonic: int = 0, seed: int = 1, **attributes) -> ClipSpec:
    return ClipSpec(attributes={**BASE, **attributes}, bpm=bpm, tonic=tonic, seconds=seconds, seed=seed)


# ---- reproducibility ------------------------------------------------------------------------------------


def test_same_seed_same_plan_and_captions():
    first, second = plan(7, 40, 8), plan(7, 40, 8)
    assert [c.record() for c in first] == [c.record() for c in second]
    assert [c.record() for c in plan(8, 40, 8)] != [c.record() for c in first]


def test_same_spec_same_audio_and_seed_matters():
    clip = plan(7, 3, 1)[0].spec
    short = ClipSpec(clip.attributes, clip.bpm, clip.tonic, 3.0, clip.seed)
    np.testing.assert_array_equal(render(short), render(short))
    other = ClipSpec(clip.attributes, clip.bpm, clip.tonic, 3.0, clip.seed + 1)
    assert not np.array_equal(render(short), render(other))


def test_generated_files_decode_with_tags(tmp_path):
    import json

    import soundfile as sf
    from mutagen.oggopus import OggOpus

    clips = generate(plan(3, clips=3, test_clips=1), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [c.id for c in clips]
    for record in records:
        audio, sr = sf.read(tmp_path / record["file"], dtype="float32")
        assert sr == SAMPLE_RATE and audio.ndim == 1
        assert abs(len(audio) / sr - record["seconds"]) < 0.05
        tags = OggOpus(tmp_path / record["file"])
        assert tags["demo_instrument"] == [record["attributes"]["instrument"]]
        assert tags["description"] == [record["captions"][0]]
    rows = [json.loads(line) for line in (tmp_path / "eval_test.jsonl").read_text().splitlines()]
    test = [r for r in records if r["split"] == "test"]
    assert {row["group"] for row in rows} == {r["id"] for r in test}
    assert len(rows) == sum(len(r["captions"]) for r in test)


# ---- splits ---------------------------------------------------------------------------------------------


def test_committed_captions_are_the_seeded_plan():
    """The shipped captions.jsonl is exactly what the recorded seed produces."""
    from data.demo import load_records

    committed = load_records()
    for record in committed:
        record.pop("path")
    assert committed == [c.record() for c in plan(DEMO_SEED, DEMO_CLIPS, DEMO_TEST_CLIPS)]


def test_splits_hold_out_clips_and_templates():
    clips = plan(DEMO_SEED, DEMO_CLIPS, DEMO_TEST_CLIPS)
    train = [c for c in clips if c.split == "train"]
    test = [c for c in clips if c.split == "test"]
    assert len(test) == DEMO_TEST_CLIPS and len(train) + len(test) == DEMO_CLIPS
    assert not {c.id for c in train} & {c.id for c in test}
    assert not {c.spec.seed for c in train} & {c.spec.seed for c in test}
    assert {t for c in train for t in c.template_ids} <= {f"train/{i}" for i in range(len(TRAIN_TEMPLATES))}
    assert {t for c in test for t in c.template_ids} <= {f"test/{i}" for i in range(len(TEST_TEMPLATES))}
    assert not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)
    assert not {s for c in train for s in c.captions} & {s for c in test for s in c.captions}
    # every attribute value occurs in both splits
    for name, values in ATTRIBUTES.items():
        for split in (train, test):
            assert {c.spec.attributes[name] for c in split} == set(values), name


def test_variant_sets_differ_only_in_the_varied_attributes():
    """Training-only hard negatives: each set shares a render seed and everything but mode and instrument,
    covers both values of each, and is captioned from the training and short templates only."""
    clips = plan_variants(7, 5)
    assert [c.record() for c in clips] == [c.record() for c in plan_variants(7, 5)]
    assert len(clips) == 5 * 4 and {c.split for c in clips} == {"train"}
    assert {t for c in clips for t in c.template_ids} <= {f"train/{i}" for i in range(len(TRAIN_TEMPLATES))} | {
        f"short/{i}" for i in range(len(SHORT_TEMPLATES))}
    assert not set(SHORT_TEMPLATES) & set(TEST_TEMPLATES)
    for start in range(0, len(clips), 4):
        group = clips[start : start + 4]
        assert len({c.spec.seed for c in group}) == 1 and len({c.id for c in group}) == 4
        assert len({(c.spec.bpm, c.spec.tonic, c.spec.seconds) for c in group}) == 1
        fixed = [{k: v for k, v in c.spec.attributes.items() if k not in ("mode", "instrument")} for c in group]
        assert all(f == fixed[0] for f in fixed)
        assert {(c.spec.attributes["mode"], c.spec.attributes["instrument"]) for c in group} == {
            (m, i) for m in {c.spec.attributes["mode"] for c in group} for i in {c.spec.attributes["instrument"] for c in group}
        }
        assert len({c.spec.attributes["instrument"] for c in group}) == 2
        assert {c.spec.attributes["mode"] for c in group} == {"major", "minor"}
    with pytest.raises(ValueError, match="tempi"):
        plan_variants(7, 1, ("tempi",))


def test_tempo_variants_play_at_their_own_tempo():
    """A set that varies tempo moves the bpm into the new tempo's range (same place in it), so a "fast"
    variant is not the slow piece relabelled."""
    from data.demo.generate import TEMPO_BPM

    clips = plan_variants(3, 20, ("tempo", "loudness"))
    for clip in clips:
        low, high = TEMPO_BPM[clip.spec.attributes["tempo"]]
        assert low <= clip.spec.bpm <= high, (clip.id, clip.spec.attributes["tempo"], clip.spec.bpm)
    for start in range(0, len(clips), 4):
        group = clips[start : start + 4]
        place = {round((c.spec.bpm - TEMPO_BPM[c.spec.attributes["tempo"]][0])
                       / (TEMPO_BPM[c.spec.attributes["tempo"]][1] - TEMPO_BPM[c.spec.attributes["tempo"]][0]), 9) for c in group}
        assert len(place) == 1 and len({c.spec.attributes["tempo"] for c in group}) == 2


def test_every_template_names_the_instrument_and_three_more_attributes():
    for template in TRAIN_TEMPLATES + TEST_TEMPLATES:
        slots = {s for s in ("tempo", "mood", "key", "loudness", "rhythm", "register", "texture") if "{" + s + "}" in template}
        assert "{instrument}" in template and len(slots) >= 3, template


def test_caption_tidies_grammar():
    rng = np.random.default_rng(0)
    text = caption("a {mood} tune, {bass}", {**BASE, "mode": "major", "bass": "none"}, np.random.default_rng(0))
    assert not text.endswith(",") and "  " not in text
    assert caption("a {mood} piece", {**BASE, "mode": "major"}, rng).split()[0] in ("a", "an")


# ---- audibility -----------------------------------------------------------------------------------------


def onset_envelope(x: np.ndarray, hop: int = 240) -> np.ndarray:
    """Half-wave rectified spectral flux of the log magnitude spectrogram, 100 frames per second."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::hop] * np.hanning(1024)
    log_mag = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
    return np.maximum(np.diff(log_mag, axis=0), 0).sum(axis=1)


def beat_period(x: np.ndarray) -> float:
    """Seconds between beats: the autocorrelation peak of the onset envelope within 0.3-1.2 s."""
    env = onset_envelope(x)
    env = env - env.mean()
    ac = np.correlate(env, env, mode="full")[len(env) - 1 :]
    lags = np.arange(30, 120)  # 0.3-1.2 s at 100 frames per second
    return lags[np.argmax(ac[lags])] / 100.0


@pytest.mark.parametrize(
    "attributes, bpm",
    [
        ({"rhythm": "four_on_the_floor", "texture": "melody"}, 124.0),
        ({"rhythm": "none", "texture": "chords", "instrument": "piano"}, 88.0),
        ({"rhythm": "march", "texture": "drone", "instrument": "strings"}, 70.0),
    ],
)
def test_tempo_is_detectable_from_the_onset_envelope(attributes, bpm):
    """The strongest onset periodicity is a metrical level of the true tempo: half a beat, a beat or two
    beats (the usual octave ambiguity of tempo estimation), never a period off that grid."""
    period = beat_period(render(spec(seconds=8.0, bpm=bpm, **attributes)))
    beats = period / (60.0 / bpm)
    assert min(abs(beats - level) / level for level in (0.5, 1, 2)) < 0.04, beats


def pitch_class_profile(x: np.ndarray) -> np.ndarray:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    keep = (freqs > 80) & (freqs < 2000)
    classes = np.round(12 * np.log2(freqs[keep] / 261.63)).astype(int) % 12
    return np.bincount(classes, weights=spectrum[keep], minlength=12)


@pytest.mark.parametrize("instrument", ["piano", "strings", "guitar"])
@pytest.mark.parametrize("texture", ["chords", "arpeggio", "melody"])
def test_major_and_minor_differ_in_the_third(instrument, texture):
    """With the tonic known (C), major clips carry E and no Eb, minor clips Eb and no E. A melody's random
    walk may touch the minor third rarely while the tonic's fifth harmonic is always an E, so a melody
    only has to lean the right way."""
    margin = 1.5 if texture == "melody" else 5
    for tonic in (0, 7):
        major = np.roll(pitch_class_profile(render(spec(mode="major", tonic=tonic, instrument=instrument, texture=texture))), -tonic)
        minor = np.roll(pitch_class_profile(render(spec(mode="minor", tonic=tonic, instrument=instrument, texture=texture))), -tonic)
        assert major[4] > margin * major[3], (tonic, major.round(2))
        assert minor[3] > margin * minor[4], (tonic, minor.round(2))


def test_major_sounds_brighter_than_minor():
    """The moods' "bright" and "dark" are audible as timbre too: the same piece in minor has a much lower
    spectral centroid than in major, on every instrument."""
    for instrument in ("piano", "guitar", "bells", "strings"):
        major, minor = (spectral_centroid(render(spec(mode=m, instrument=instrument))) for m in ("major", "minor"))
        assert major > 1.5 * minor, (instrument, major, minor)


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x**2)))


def test_loud_is_much_louder_than_quiet():
    assert rms_db(render(spec(loudness="loud"))) - rms_db(render(spec(loudness="quiet"))) > 12


def spectral_centroid(x: np.ndarray, max_hz: float = SAMPLE_RATE / 2) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    spectrum, freqs = spectrum[freqs <= max_hz], freqs[freqs <= max_hz]
    return float((freqs * spectrum).sum() / spectrum.sum())


@pytest.mark.parametrize("instrument", ["piano", "flute", "organ"])
def test_register_moves_the_pitch_up(instrument):
    """Measured below 3 kHz, where the notes and their first harmonics are (the flute's breath noise and
    the major mood's treble lift sit above)."""
    low, middle, high = (spectral_centroid(render(spec(register=r, instrument=instrument)), 3000.0)
                         for r in ("low", "middle", "high"))
    assert low < middle < high


def test_drums_only_when_the_rhythm_asks_for_them():
    """Percussive noise shows up as broadband energy above 6 kHz, absent from a drumless flute clip."""

    def high_band_share(x):
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        return spectrum[np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE) > 6000].sum() / spectrum.sum()

    drumless = high_band_share(render(spec(instrument="flute", rhythm="none")))
    for rhythm in ("four_on_the_floor", "waltz", "march", "breakbeat"):
        assert high_band_share(render(spec(instrument="flute", rhythm=rhythm))) > 20 * drumless, rhythm


def test_instruments_have_distinct_spectra():
    """Average log spectra of the same part on different instruments are far apart (timbre is audible)."""

    def log_spectrum(x):
        bands = np.array_split(np.abs(np.fft.rfft(x)) ** 2, 64)
        return np.log10(np.array([b.mean() for b in bands]) + 1e-12)

    spectra = {name: log_spectrum(render(spec(instrument=name, texture="chords"))) for name in ATTRIBUTES["instrument"]}
    names = list(spectra)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(spectra[a] - spectra[b]).mean() > 0.3, (a, b)


def test_committed_library_is_the_seeded_render():
    """Two shipped clips decode to what their recorded spec renders (up to Opus coding loss)."""
    import soundfile as sf

    from data.demo import load_records

    planned = {c.id: c for c in plan(DEMO_SEED, DEMO_CLIPS, DEMO_TEST_CLIPS)}
    for record in sorted(load_records(), key=lambda r: r["seconds"])[:2]:
        decoded, sr = sf.read(record["path"], dtype="float32")
        rendered = render(planned[record["id"]].spec)
        assert sr == SAMPLE_RATE and abs(len(decoded) - len(rendered)) < SAMPLE_RATE // 100
        n = min(len(decoded), len(rendered))
        assert np.corrcoef(decoded[:n], rendered[:n])[0, 1] > 0.9, record["id"]
