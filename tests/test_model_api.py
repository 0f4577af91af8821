"""The embedding API on the tiny random model: shapes, clip policy, batch invariance, determinism,
tokenizer handling, save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from muq_model import ClipPolicy, MuQMuLan, MuQMuLanConfig, TokenizerMissingError
from muq_model.clips import iter_clips, split_clips
from muq_model.muq import MelFrontEnd

SR = 24000


def noise(seconds: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * SR), generator=generator)


# ---- mel front end ---------------------------------------------------------------------------------

def test_mel_matches_torchaudio_and_drops_last_frame():
    config = MuQMuLanConfig.tiny().muq
    wave = noise(2.0, 1)[None]
    ours = MelFrontEnd(config)(wave, normalize=False)
    reference = torchaudio.transforms.AmplitudeToDB()(
        torchaudio.transforms.MelSpectrogram(sample_rate=SR, n_fft=2048, hop_length=240, n_mels=128)(wave)
    )
    assert ours.shape == (1, 128, 200)  # floor(48000 / 240); the centred STFT's 201st frame is dropped
    assert reference.shape[-1] == 201
    assert (ours - reference[..., :-1]).abs().max() < 1e-4


def test_mel_normalisation_uses_global_scalars():
    config = MuQMuLanConfig.tiny().muq
    front = MelFrontEnd(config)
    wave = noise(1.0, 2)[None]
    db = front(wave, normalize=False)
    assert torch.allclose(front(wave), (db - 6.768444971712967) / 18.417922652295623)


# ---- clip policy -----------------------------------------------------------------------------------

def test_clip_split_wraps_last_clip_to_track_start():
    wave = torch.arange(25 * SR, dtype=torch.float32)
    clips, starts = split_clips(wave)
    assert starts == [0, 10 * SR, 20 * SR]
    assert [c.numel() for c in clips] == [10 * SR] * 3
    assert torch.equal(clips[2], torch.cat((wave[20 * SR :], wave[: 5 * SR])))


def test_short_track_gives_one_double_length_clip():
    wave = torch.arange(3 * SR, dtype=torch.float32)
    clips, starts = split_clips(wave)
    assert starts == [0] and clips[0].numel() == 6 * SR
    assert torch.equal(clips[0], torch.cat((wave, wave)))


def test_track_between_half_and_full_clip_is_completed_from_its_start():
    wave = torch.arange(7 * SR, dtype=torch.float32)
    (clip,), _ = split_clips(wave)
    assert torch.equal(clip, torch.cat((wave, wave[: 3 * SR])))


def test_exact_multiple_has_no_extra_clip():
    clips, starts = split_clips(torch.zeros(20 * SR))
    assert starts == [0, 10 * SR] and len(clips) == 2


def test_tiled_short_track_when_not_official():
    wave = torch.arange(3 * SR, dtype=torch.float32)
    (clip,), _ = split_clips(wave, ClipPolicy(official_compat=False))
    assert clip.numel() == 10 * SR
    assert torch.equal(clip[: 9 * SR], wave.repeat(3))


def test_streaming_split_equals_in_memory_split():
    wave = noise(37.3, 3)
    chunks = torch.split(wave, 12_345)
    streamed = list(iter_clips(chunks))
    clips, starts = split_clips(wave)
    assert [s for s, _ in streamed] == starts
    assert all(torch.equal(a, b) for (_, a), b in zip(streamed, clips, strict=True))


def test_empty_track_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        split_clips(torch.zeros(0))


# ---- audio embeddings ------------------------------------------------------------------------------

def test_embed_audio_shapes_norms_and_clip_starts(tiny_model):
    waves = [noise(25, 4), noise(3, 5), noise(10, 6)]
    tracks, per_track = tiny_model.embed_audio(waves, return_clips=True)
    assert tracks.shape == (3, tiny_model.dim) and tracks.dtype == torch.float32
    assert [len(c.starts) for c in per_track] == [3, 1, 1]
    assert per_track[0].starts.tolist() == [0.0, 10.0, 20.0]
    for clips, track in zip(per_track, tracks, strict=True):
        assert torch.allclose(clips.embeddings.norm(dim=1), torch.ones(len(clips.starts)), atol=1e-5)
        assert torch.equal(track, clips.embeddings.mean(dim=0))  # mean of unit vectors, not renormalised


def test_embed_audio_is_independent_of_batching(tiny_model):
    waves = [noise(25, 7), noise(12, 8), noise(3, 9), noise(10, 10)]
    together = tiny_model.embed_audio(waves)
    alone = torch.cat([tiny_model.embed_audio([w]) for w in waves])
    assert torch.equal(together, alone)
    previous = tiny_model.clip_batch_samples
    try:
        tiny_model.clip_batch_samples = 1  # one clip per forward pass
        assert torch.equal(tiny_model.embed_audio(waves), together)
    finally:
        tiny_model.clip_batch_samples = previous


def test_embed_audio_is_deterministic_and_accepts_numpy(tiny_model):
    wave = noise(11, 11)
    first = tiny_model.embed_audio([wave])
    assert torch.equal(first, tiny_model.embed_audio([wave.numpy()]))
    assert torch.equal(first, tiny_model.embed_audio(wave))


def test_embed_audio_resamples_other_rates(tiny_model):
    wave = noise(4, 12)
    at_48k = torchaudio.functional.resample(wave, SR, 48000)
    direct = tiny_model.embed_audio([wave])
    resampled = tiny_model.embed_audio([at_48k], sample_rate=48000)
    assert torch.nn.functional.cosine_similarity(direct, resampled).item() > 0.99


def test_embed_clips_rows_are_unit_norm(tiny_model):
    clips = torch.stack([noise(10, 13), noise(10, 14)])
    out = tiny_model.embed_clips(clips)
    assert out.shape == (2, tiny_model.dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.equal(out[1:], tiny_model.embed_clips(clips[1:]))


def test_bad_audio_input_errors_name_the_problem(tiny_model):
    with pytest.raises(ValueError, match="waveform 1 must be 1-D"):
        tiny_model.embed_audio([noise(2, 1), torch.zeros(2, 100)])
    with pytest.raises(ValueError, match="waveform 0 is empty"):
        tiny_model.embed_audio([np.zeros(0, dtype=np.float32)])
    with pytest.raises(ValueError, match="too short"):
        tiny_model.embed_clips(torch.zeros(1, 500))


# ---- text embeddings -------------------------------------------------------------------------------

TEXTS = ["calm piano", "a very energetic electric guitar solo with heavy drums and bass", "x", "sad violin"]


def test_embed_text_is_batch_invariant(tiny_model):
    together = tiny_model.embed_text(TEXTS)
    assert together.shape == (len(TEXTS), tiny_model.dim)
    for i, text in enumerate(TEXTS):
        assert torch.equal(tiny_model.embed_text([text])[0], together[i])
    assert torch.allclose(together.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)


def test_official_padded_batch_depends_on_batch_but_ours_does_not(tiny_model):
    tok = tiny_model.tokenizer([TEXTS[0], TEXTS[1]], padding=True, return_tensors="pt")
    with torch.no_grad():
        official = tiny_model.encode_text_ids(tok["input_ids"], tok["attention_mask"], pad_aware=False)
        alone = tiny_model.encode_text_ids(tiny_model.tokenizer([TEXTS[0]], return_tensors="pt")["input_ids"])
    assert not torch.allclose(official[0], alone[0], atol=1e-4)  # spec Q-N7: padding changes the vector
    ours = tiny_model.embed_text_ids(tok["input_ids"], tok["attention_mask"])
    assert torch.equal(ours[0], tiny_model.embed_text([TEXTS[0]])[0])


def test_long_text_is_truncated_with_a_warning(tiny_model):
    long_text = "music " * 2000
    with pytest.warns(UserWarning, match="truncated to 512"):
        out = tiny_model.embed_text([long_text])
    assert out.shape == (1, tiny_model.dim) and torch.isfinite(out).all()


def test_missing_tokenizer_fails_text_but_audio_works():
    torch.manual_seed(0)
    model = MuQMuLan(MuQMuLanConfig.tiny(), tokenizer=None).eval()
    assert not model.has_tokenizer
    with pytest.raises(TokenizerMissingError, match="tokenizer="):
        model.embed_text(["calm piano"])
    assert model.embed_audio([noise(2, 1)]).shape == (1, model.dim)


def test_embed_text_rejects_a_bare_string(tiny_model):
    with pytest.raises(TypeError, match="list of strings"):
        tiny_model.embed_text("calm piano")


def test_similarity_is_a_dot_product(tiny_model):
    a = tiny_model.embed_audio([noise(3, 2), noise(12, 3)])
    t = tiny_model.embed_text(TEXTS)
    assert torch.allclose(tiny_model.similarity(a, t), a @ t.T)
    assert torch.allclose(tiny_model.similarity(a[0], t[0]), (a[0] * t[0]).sum())


def test_facts_and_fingerprint(tiny_model):
    assert (tiny_model.sample_rate, tiny_model.clip_samples, tiny_model.dim) == (24000, 240000, 16)
    fp = tiny_model.fingerprint()
    assert set(fp) == {"model_id", "config_hash", "weights_hash", "clip_policy", "precision"}
    assert fp == tiny_model.fingerprint()
    other = MuQMuLan(MuQMuLanConfig.tiny(), tokenizer=None)
    assert other.fingerprint()["weights_hash"] != fp["weights_hash"]
    assert other.fingerprint()["config_hash"] == fp["config_hash"]


def test_weights_are_hashed_once_per_set_of_weights(monkeypatch):
    """fingerprint() runs per request (describe, status): the costly hash runs only when a weight changed."""
    import muq_model.checkpoint as checkpoint

    calls = []
    real_hash = checkpoint.state_dict_hash
    monkeypatch.setattr(checkpoint, "state_dict_hash", lambda state: calls.append(1) or real_hash(state))
    torch.manual_seed(0)
    model = MuQMuLan(MuQMuLanConfig.tiny(), tokenizer=None).eval()
    first = model.fingerprint()
    for _ in range(3):
        assert model.fingerprint() == first
        assert model.vector_space()
    model.embed_clips(noise(2, 1)[None])  # inference changes no weight
    assert model.fingerprint() == first
    assert len(calls) == 1


def test_the_weights_hash_follows_every_change_of_the_weights():
    """Cached, yet equal after each kind of change to a hash computed afresh from the weights."""
    from muq_model.checkpoint import state_dict_hash

    def fresh(model):
        return state_dict_hash(model.state_dict())

    torch.manual_seed(0)
    model = MuQMuLan(MuQMuLanConfig.tiny(), tokenizer=None)
    torch.manual_seed(1)
    other = MuQMuLan(MuQMuLanConfig.tiny(), tokenizer=None)
    seen = {model.weights_hash()}

    model.load_state_dict(other.state_dict())  # load_state_dict
    assert model.weights_hash() == fresh(model) == other.weights_hash()
    seen.add(model.weights_hash())

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # a training step
    model.train()
    model.encode_audio(torch.stack([noise(2, 3), noise(2, 4)])).sum().backward()
    optimizer.step()
    assert model.weights_hash() == fresh(model)
    seen.add(model.weights_hash())

    model.eval()
    model.embed_clips(noise(2, 5)[None])  # an in-place edit after a cached hash (the stem's folded cache too)
    with torch.no_grad():
        model.audio_to_latents.bias.add_(1.0)
    assert model.weights_hash() == fresh(model)
    seen.add(model.weights_hash())

    buffer = next(b for name, b in model.named_buffers() if name.endswith("running_mean"))  # buffers count too
    buffer.add_(0.5)
    assert model.weights_hash() == fresh(model)
    seen.add(model.weights_hash())

    model.to(torch.float64)  # new storage
    assert model.weights_hash() == fresh(model)
    seen.add(model.weights_hash())
    assert len(seen) == 6


# ---- training hooks --------------------------------------------------------------------------------

def test_encode_paths_have_gradients_and_freeze_switches_them():
    torch.manual_seed(1)
    model = MuQMuLan(MuQMuLanConfig.tiny()).train()
    clips = torch.stack([noise(10, 1), noise(10, 2)])
    ids = model.tokenizer(["calm piano", "rock"], padding=True, return_tensors="pt")
    audio = model.encode_audio(clips)
    text = model.encode_text_ids(ids["input_ids"], ids["attention_mask"])
    assert torch.allclose(audio.norm(dim=1), torch.ones(2), atol=1e-5)
    (audio * text).sum().backward()
    assert model.audio.model.conv.linear.weight.grad is not None
    assert model.text.transformer.layers[0][0].to_q.weight.grad is not None
    assert model.text.model.embeddings.word_embeddings.weight.grad is None  # encoder frozen by default

    model.zero_grad(set_to_none=True)
    model.freeze(audio=True, text_encoder=False)
    audio = model.encode_audio(clips)
    text = model.encode_text_ids(ids["input_ids"], ids["attention_mask"])
    assert not audio.requires_grad
    (text.sum()).backward()
    assert model.text.model.embeddings.word_embeddings.weight.grad is not None


# ---- save / load -----------------------------------------------------------------------------------

def test_save_and_load_round_trip(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded = MuQMuLan.from_pretrained(tmp_path)
    assert loaded.has_tokenizer
    waves = [noise(13, 20)]
    assert torch.equal(loaded.embed_audio(waves), tiny_model.embed_audio(waves))
    assert torch.equal(loaded.embed_text(TEXTS), tiny_model.embed_text(TEXTS))
    assert loaded.fingerprint()["weights_hash"] == tiny_model.fingerprint()["weights_hash"]


def test_bfloat16_model_embeds_audio(tiny_model):
    """Spec Q-D1/Q-D2 fixes: the mel is computed in fp32 with tables that model.to() cannot round, and cast
    to the model's dtype (upstream crashes)."""
    torch.manual_seed(0)
    model = MuQMuLan(MuQMuLanConfig.tiny(), tokenizer=None).eval()
    model.load_state_dict(tiny_model.state_dict())
    model.to(torch.bfloat16)
    clips = torch.stack([noise(10, 30)])
    assert torch.equal(model.audio.model.mel(clips), tiny_model.audio.model.mel(clips))
    out = model.embed_clips(clips)
    assert out.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(out, tiny_model.embed_clips(clips)).item() > 0.98


def test_vector_space_ignores_the_name_a_model_was_loaded_by(tiny_model):
    from muq_model.identity import same_vectors, vector_space

    fp = tiny_model.fingerprint()
    moved = dict(fp, model_id="/somewhere/else")
    assert vector_space(moved) == tiny_model.vector_space()
    assert same_vectors(fp, moved)
    assert not same_vectors(fp, dict(fp, weights_hash="0" * 16))
    assert not same_vectors(fp, None) and not same_vectors(fp, {"model_id": "x"})
    with pytest.raises(ValueError, match="lacks"):
        vector_space({"model_id": "x"})
