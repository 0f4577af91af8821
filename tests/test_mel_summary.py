"""The audio tower's clip-level mel summary: it starts at zero when a model gains one, the training fast path
equals the model with it, it round-trips through config.json, and what cannot work is refused by name."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from data.demo.synth import SAMPLE_RATE, ClipSpec, render
from muq_model.config import MuQMuLanConfig
from muq_model.model import MuQMuLan

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
    model.add_mel_summary(8)
    assert model.config.audio_model.mel_summary_bands == 8
    torch.testing.assert_close(model.embed_clips(clips()), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="already has a mel summary"):
        model.add_mel_summary(8)


def test_a_trained_summary_moves_the_vectors_and_the_fast_path_equals_the_model(tmp_path):
    model = grown_model()
    audio = clips()
    before = model.embed_clips(audio)
    with torch.no_grad():  # as training would: the last layer leaves zero
        torch.nn.init.normal_(model.audio.summary.net[-1].weight, std=0.5)
    after = model.embed_clips(audio)
    assert (after - before).abs().max() > 1e-3
    with torch.no_grad():
        mel = model.audio.features(audio)
        torch.testing.assert_close(model.encode_audio_features(mel), model.encode_audio(audio))
    reloaded = MuQMuLan.from_pretrained(model.save_pretrained(tmp_path / "model"))
    assert json.loads((tmp_path / "model" / "config.json").read_text())["audio_model"]["mel_summary_bands"] == 8
    torch.testing.assert_close(reloaded.eval().embed_clips(audio), after, rtol=0, atol=0)


def test_the_summary_sees_the_level_that_a_quiet_copy_drops():
    """20 dB quieter: every band's mean falls by about 19 dB / mel_std, the spread stays."""
    model = grown_model(bands=4)
    mel = model.audio.features(clips())  # (2, T, n_mels), normalised
    model.audio.summary.net = torch.nn.Identity()  # read the statistics themselves
    stats = model.audio.summary(mel)  # (2, 3 * bands): mean | spread | change
    level = (stats[0, :4] - stats[1, :4]).mean().item()
    assert level > 0.5, stats  # -13 vs -32 dBFS over a mel_std of 18.4 dB is ~1.0


def test_official_configs_have_no_summary_and_bad_band_counts_are_refused():
    assert "mel_summary_bands" not in MuQMuLanConfig().to_dict()["audio_model"]
    config = MuQMuLanConfig.tiny()
    config.audio_model.mel_summary_bands = 7
    with pytest.raises(ValueError, match="mel_summary_bands=7"):
        config.validate()
    config.audio_model.mel_summary_bands = None
    config.text_model.mel_summary_bands = 4
    with pytest.raises(ValueError, match="text_model.mel_summary_bands"):
        config.validate()


def test_train_grows_a_summary_and_refuses_it_with_a_frozen_stem(tmp_path, tiny_model_dir, capsys):
    from app.cli import main

    sf.write(tmp_path / "a.wav", clips(3.0)[0].numpy(), SAMPLE_RATE)
    sf.write(tmp_path / "b.wav", clips(3.0)[1].numpy(), SAMPLE_RATE)
    (tmp_path / "pairs.jsonl").write_text(
        json.dumps({"audio_path": "a.wav", "captions": ["loud piano"]}) + "\n"
        + json.dumps({"audio_path": "b.wav", "captions": ["quiet piano"]}) + "\n"
    )
    common = ["train", str(tmp_path / "pairs.jsonl"), "--model", str(tiny_model_dir), "--add-mel-summary", "8",
              "--steps", "2", "--batch-size", "2", "--crop-seconds", "2", "--log-every", "1", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "frozen"), "--freeze-stem"]) == 2
    assert "--freeze-stem" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "out")]) == 0
    trained = MuQMuLan.from_pretrained(tmp_path / "out")
    assert trained.config.audio_model.mel_summary_bands == 8
    assert trained.audio.summary.net[-1].weight.abs().max() > 0  # it trained from zero
    # a text-side stage on top: the frozen tower caches the mel (not the stem's output) for its summary
    text_stage = [*common[:3], str(tmp_path / "out"), *common[6:], "--freeze-audio", "--out", str(tmp_path / "text")]
    assert main(text_stage) == 0
    audio = clips()
    torch.testing.assert_close(MuQMuLan.from_pretrained(tmp_path / "text").embed_clips(audio),
                               trained.eval().embed_clips(audio), rtol=0, atol=0)
