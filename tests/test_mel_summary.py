"""The audio tower's clip-level mel and rhythm summaries: each starts at zero when a model gains it, the
training fast path equals the model with them, they round-trip through config.json, the statistics carry what
they are for (level; beat period), and what cannot work is refused by name."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from data.demo.synth import SAMPLE_RATE, ClipSpec, render
from muq_model.config import MuQMuLanConfig
from muq_model.model import MuQMuLan
from muq_model.mulan import RhythmSummary

ATTRIBUTES = {"instrument": "piano", "tempo": "medium", "mode": "major", "rhythm": "none", "register": "middle",
              "texture": "chords", "bass": "none"}


def clips(seconds: float = 2.0) -> torch.Tensor:
    """The same piece loud and quiet: what a summary's level statistics tell apart."""
    return torch.stack([
        torch.as_tensor(render(ClipSpec({**ATTRIBUTES, "loudness": level}, bpm=100.0, tonic=0, seconds=seconds,
                                        seed=1)))
        for level in ("loud", "quiet")
    ])


def grown_model(bands: int = 8) -> MuQMuLan:
    torch.manual_seed(0)
    return MuQMuLan(MuQMuLanConfig.tiny()).eval().add_mel_summary(bands)


def test_a_model_that_gains_a_summary_makes_the_vectors_it_made():
    torch.manual_seed(0)
    model = MuQMuLan(MuQMuLanConfig.tiny()).eval()
    before = model.embed_clips(clips())
    model.add_mel_summary(8).add_rhythm_summary(4)
    assert (model.config.audio_model.mel_summary_bands, model.config.audio_model.rhythm_summary_groups) == (8, 4)
    torch.testing.assert_close(model.embed_clips(clips()), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="already has a mel summary"):
        model.add_mel_summary(8)
    with pytest.raises(ValueError, match="already has a rhythm summary"):
        model.add_rhythm_summary(4)


@pytest.mark.parametrize("attribute", ["summary", "rhythm"])
def test_a_trained_summary_moves_the_vectors_and_the_fast_path_equals_the_model(tmp_path, attribute):
    model = grown_model().add_rhythm_summary(4)
    audio = clips()
    before = model.embed_clips(audio)
    with torch.no_grad():  # as training would: the last layer leaves zero
        torch.nn.init.normal_(getattr(model.audio, attribute).net[-1].weight, std=0.5)
    after = model.embed_clips(audio)
    assert (after - before).abs().max() > 1e-3
    with torch.no_grad():
        mel = model.audio.features(audio)
        torch.testing.assert_close(model.encode_audio_features(mel), model.encode_audio(audio))
    reloaded = MuQMuLan.from_pretrained(model.save_pretrained(tmp_path / "model"))
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["audio_model"]
    assert (saved["mel_summary_bands"], saved["rhythm_summary_groups"]) == (8, 4)
    torch.testing.assert_close(reloaded.eval().embed_clips(audio), after, rtol=0, atol=0)


def test_the_summary_sees_the_level_that_a_quiet_copy_drops():
    """20 dB quieter: every band's mean falls by about 19 dB / mel_std, the spread stays."""
    model = grown_model(bands=4)
    mel = model.audio.features(clips())  # (2, T, n_mels), normalised
    model.audio.summary.net = torch.nn.Identity()  # read the statistics themselves
    stats = model.audio.summary(mel)  # (2, 3 * bands): mean | spread | change
    level = (stats[0, :4] - stats[1, :4]).mean().item()
    assert level > 0.5, stats  # -13 vs -32 dBFS over a mel_std of 18.4 dB is ~1.0


def rhythm_statistics(model: MuQMuLan, spec: ClipSpec, frames: int | None = None) -> torch.Tensor:
    """(2 * groups + 1, lags): onset correlations per group and over all mels, then spectral-shape ones."""
    model.audio.rhythm.net = torch.nn.Identity()  # read the correlations themselves
    mel = model.audio.features(torch.as_tensor(render(spec))[None])
    return model.audio.rhythm(mel[:, :frames]).reshape(2 * model.audio.rhythm.groups + 1, -1)


@pytest.mark.parametrize("bpm", [75.0, 140.0])
def test_the_rhythm_summary_peaks_at_the_beat_period(bpm):
    """Chords struck on every beat, no drums: the onsets over all mels correlate at one beat's lag and not
    at half or three quarters of it; a 4 s crop gives the correlations of the whole 8 s clip."""
    model = MuQMuLan(MuQMuLanConfig.tiny()).eval().add_rhythm_summary(4)
    spec = ClipSpec({**ATTRIBUTES, "loudness": "loud"}, bpm=bpm, tonic=0, seconds=8.0, seed=1)
    whole, crop = rhythm_statistics(model, spec), rhythm_statistics(model, spec, frames=400)
    onsets = whole[4]  # over all mels
    beat = 6000 / bpm  # frames of 10 ms

    def lag(frames: float) -> int:
        return min(range(len(RhythmSummary.LAGS)), key=lambda i: abs(RhythmSummary.LAGS[i] - frames))

    assert onsets[lag(beat)] > 0.5 and onsets[lag(beat / 2)] < 0.1 and onsets[lag(beat * 3 / 4)] < 0.1, onsets
    assert (whole - crop).abs().mean() < 0.03
    # means over each lag's overlap: a sum over it would shrink the crop's value by lag / 400 (0.08 at 75 BPM)
    assert abs(whole[4, lag(beat)] - crop[4, lag(beat)]) < 0.05


@pytest.mark.parametrize("seed", [1, 2])
def test_the_rhythm_summary_tells_a_re_struck_chord_from_an_arpeggio(seed):
    """The same chords, struck together on every beat or broken into eighth notes: the chord's spectral
    shape comes back at every lag, the arpeggio's changes with each note."""
    model = MuQMuLan(MuQMuLanConfig.tiny()).eval().add_rhythm_summary(4)
    shape = {texture: rhythm_statistics(model, ClipSpec({**ATTRIBUTES, "loudness": "loud", "texture": texture},
                                                        bpm=100.0, tonic=0, seconds=8.0, seed=seed))[5:].mean()
             for texture in ("chords", "arpeggio")}
    assert shape["chords"] > shape["arpeggio"] + 0.2, shape


@pytest.mark.parametrize("field", ["mel_summary_bands", "rhythm_summary_groups"])
def test_official_configs_have_no_summary_and_bad_band_counts_are_refused(field):
    assert field not in MuQMuLanConfig().to_dict()["audio_model"]
    config = MuQMuLanConfig.tiny()
    setattr(config.audio_model, field, 7)
    with pytest.raises(ValueError, match=f"{field}=7"):
        config.validate()
    setattr(config.audio_model, field, None)
    setattr(config.text_model, field, 4)
    with pytest.raises(ValueError, match=f"text_model.{field}"):
        config.validate()


@pytest.mark.parametrize(("flag", "parts", "attribute", "field"),
                         [("--add-mel-summary", "8", "summary", "mel_summary_bands"),
                          ("--add-rhythm-summary", "4", "rhythm", "rhythm_summary_groups")])
def test_train_grows_a_summary_and_refuses_it_with_a_frozen_stem(tmp_path, tiny_model_dir, capsys, flag, parts,
                                                                 attribute, field):
    from app.cli import main

    sf.write(tmp_path / "a.wav", clips(3.0)[0].numpy(), SAMPLE_RATE)
    sf.write(tmp_path / "b.wav", clips(3.0)[1].numpy(), SAMPLE_RATE)
    (tmp_path / "pairs.jsonl").write_text(
        json.dumps({"audio_path": "a.wav", "captions": ["loud piano"]}) + "\n"
        + json.dumps({"audio_path": "b.wav", "captions": ["quiet piano"]}) + "\n"
    )
    common = ["train", str(tmp_path / "pairs.jsonl"), "--model", str(tiny_model_dir), flag, parts,
              "--steps", "2", "--batch-size", "2", "--crop-seconds", "2", "--log-every", "1", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "frozen"), "--freeze-stem"]) == 2
    assert "--freeze-stem" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "out")]) == 0
    trained = MuQMuLan.from_pretrained(tmp_path / "out")
    assert getattr(trained.config.audio_model, field) == int(parts)
    assert getattr(trained.audio, attribute).net[-1].weight.abs().max() > 0  # it trained from zero
    # a text-side stage on top: the frozen tower caches the mel (not the stem's output) for its summary
    text_stage = [*common[:3], str(tmp_path / "out"), *common[6:], "--freeze-audio", "--out", str(tmp_path / "text")]
    assert main(text_stage) == 0
    audio = clips()
    torch.testing.assert_close(MuQMuLan.from_pretrained(tmp_path / "text").embed_clips(audio),
                               trained.eval().embed_clips(audio), rtol=0, atol=0)
