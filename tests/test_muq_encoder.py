"""The standalone MuQ encoder against the official muq==0.1.0 package (golden outputs made by
tests/fixtures/make_official_muq_golden.py) and against the full-size official key layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from muq_model import MuQ
from muq_model.checkpoint import CheckpointError, match_state_dict, muq_key
from muq_model.config import MuQConfig
from muq_model.encoder import SSLConfig, official_config, read_official_config

FIXTURE = Path(__file__).parent / "fixtures" / "official_muq_tiny"
LARGE_KEYS = Path(__file__).parent / "fixtures" / "muq_large_msd_iter_state_dict.tsv"  # spec 3.9, inferred layout


@pytest.fixture(scope="module")
def golden():
    return load_file(str(FIXTURE / "golden.safetensors"))


@pytest.fixture(scope="module")
def model():
    return MuQ.from_pretrained(FIXTURE)


def as_float(audio_i16: torch.Tensor) -> torch.Tensor:
    return audio_i16.float() / 32768.0


def test_hidden_states_match_official(model, golden):
    out = model(as_float(golden["audio_int16"]), output_hidden_states=True)
    expected = golden["hidden_states"]  # (B, depth + 1, T', D)
    assert len(out.hidden_states) == expected.shape[1] == model.config.encoder_depth + 1
    for i, h in enumerate(out.hidden_states):
        torch.testing.assert_close(h, expected[:, i], atol=1e-4, rtol=0, msg=f"hidden state {i}")
    assert out.last_hidden_state is out.hidden_states[-1]
    assert model(as_float(golden["audio_int16"]), output_hidden_states=False).hidden_states is None


def test_target_codes_match_official(model, golden):
    codes = model.tokenize(as_float(golden["audio_int16"]))
    assert codes.shape == golden["target_codes"].shape == (2, 2, 72)  # first codebook_size / 1024 of 3 levels
    assert torch.equal(codes, golden["target_codes"])


def test_masked_prediction_loss_matches_official(model, golden):
    clean, masked = as_float(golden["audio_int16"]), as_float(golden["masked_audio_int16"])
    out = model(masked, targets=model.tokenize(clean), mask=golden["token_mask"].bool())
    torch.testing.assert_close(out.loss.reshape(1), golden["loss"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.accuracy.reshape(1), golden["accuracy"])
    assert out.logits.shape == (2, 72, 2, 1024)


def test_rvq_losses_match_official(model, golden):
    out = model.model.rvq(model.model.folded_mel(as_float(golden["audio_int16"])))
    torch.testing.assert_close(out.commitment.reshape(1), golden["rvq_commitment"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.codebook_loss.reshape(1), golden["rvq_codebook_loss"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss.reshape(1), golden["rvq_loss"], atol=1e-5, rtol=1e-5)


def test_random_projection_codes_match_official(golden):
    data = json.loads((FIXTURE / "config.json").read_text())
    config, ssl = read_official_config(dict(data, use_rvq_target=False, codebook_size=64))
    model = MuQ(config, ssl).eval()
    model.model.quantizer_melspec_2048.random_projection.copy_(golden["random_projection"])
    model.model.quantizer_melspec_2048.codebook.copy_(golden["random_codebook"])
    codes = model.tokenize(as_float(golden["audio_int16"]))
    assert codes.shape == (2, 1, 72)
    assert torch.equal(codes[:, 0], golden["random_projection_codes"])


def test_save_pretrained_round_trip(model, golden, tmp_path):
    model.save_pretrained(tmp_path)
    again = MuQ.from_pretrained(tmp_path)
    wavs = as_float(golden["audio_int16"])
    assert torch.equal(again(wavs).last_hidden_state, model(wavs).last_hidden_state)
    assert torch.equal(again.tokenize(wavs), model.tokenize(wavs))
    assert json.loads((tmp_path / "config.json").read_text()) == official_config(model.config, model.ssl)


def test_new_weight_norm_spelling_loads(tmp_path, golden, model):
    """torch's parametrisation API names weight_g/weight_v `parametrizations.weight.original0/1`."""
    state = load_file(str(FIXTURE / "model.safetensors"))
    renamed = {k.replace("weight_g", "parametrizations.weight.original0").replace("weight_v", "parametrizations.weight.original1"): v
               for k, v in state.items()}
    assert any("rvq.quantizers.0.in_proj.parametrizations.weight.original0" in k for k in renamed)
    save_file(renamed, str(tmp_path / "model.safetensors"))
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    loaded = MuQ.from_pretrained(tmp_path)
    assert torch.equal(loaded.tokenize(as_float(golden["audio_int16"])), golden["target_codes"])


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"model.extra.weight": torch.zeros(1)}), "unexpected keys: model.extra.weight"),
    (lambda s: s.pop("model.rvq.quantizers.1.codebook.weight"), "missing keys: model.rvq.quantizers.1.codebook.weight"),
    (lambda s: s.pop("model.cls_token"), "missing keys: model.cls_token"),
    (lambda s: s.update({"model.linear.bias": torch.zeros(3)}), "shape mismatches: model.linear.bias"),
])
def test_strict_loading_names_bad_keys(tmp_path, change, message):
    state = load_file(str(FIXTURE / "model.safetensors"))
    change(state)
    save_file(state, str(tmp_path / "model.safetensors"))
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.")):
        MuQ.from_pretrained(tmp_path)


def test_a_muq_mulan_checkpoint_is_refused_with_a_pointer():
    with pytest.raises(CheckpointError, match="MuQMuLan.from_pretrained"):
        MuQ.from_pretrained(Path(__file__).parent / "fixtures" / "official_tiny")


def test_unsupported_config_is_refused(tmp_path):
    data = json.loads((FIXTURE / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(data, use_encodec_target=True)))
    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="use_encodec_target"):
        MuQ.from_pretrained(tmp_path)


def large_key_layout() -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in LARGE_KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        layout[key] = tuple(json.loads(shape))
    return layout


def test_full_size_official_layout_maps_strictly():
    """MuQ-large-msd-iter's 525 tensors map onto the full-size model with nothing missing or left over,
    built on the meta device (no weights)."""
    layout = large_key_layout()
    assert len(layout) == 525
    with torch.device("meta"):
        model = MuQ(MuQConfig.large(), SSLConfig())
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = {k: torch.empty(shape, device="meta") for k, shape in layout.items()}
    mapped = match_state_dict(expected, state, muq_key, lambda k: k)
    assert set(mapped) == set(expected)
    skipped = sorted(k for k in layout if muq_key(k) is None)
    assert skipped == [
        "model.conformer.embed_positions.inv_freq",
        "model.conformer.pos_conv_embed.conv.bias",
        "model.conformer.pos_conv_embed.conv.parametrizations.weight.original0",
        "model.conformer.pos_conv_embed.conv.parametrizations.weight.original1",
    ]
    assert model.model.n_targets == 8
    out_shape = (1, MuQConfig.large().n_frames(240000), 1024)
    assert out_shape == (1, 250, 1024)


def test_full_size_forward_shapes_on_meta():
    with torch.device("meta"):
        model = MuQ(MuQConfig.large(), SSLConfig()).train()  # train mode: the batched path meta tensors allow
        hidden = model.model.conformer(torch.empty(1, 250, 1024))
    assert len(hidden) == 13 and all(h.shape == (1, 250, 1024) for h in hidden)
