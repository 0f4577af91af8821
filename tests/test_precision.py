"""Precision modes (muq_model.runtime): which mode runs where, what each does to the model and its
vectors, and the fingerprint rules that keep vectors of different precisions apart."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muq_model import MuQMuLan
from muq_model.identity import precision_conflict, same_vectors, vector_space
from muq_model.runtime import Int8Linear, check_precision, default_precision, precision_context

SR = 24000


def clips(n: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, 10 * SR, generator=generator)


def test_defaults_and_checks_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_precision(cpu) == check_precision(None, cpu) == "fp32"
    assert default_precision(cuda) == check_precision(None, cuda) == "tf32"
    assert check_precision("int8", cpu) == "int8"
    assert check_precision("bf16", cuda) == "bf16"
    with pytest.raises(ValueError, match="tf32 needs a CUDA device"):
        check_precision("tf32", cpu)
    with pytest.raises(ValueError, match="int8 runs on CPU only"):
        check_precision("int8", cuda)
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        check_precision("fp16", cpu)


def test_int8_linear_approximates_the_float_one():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(3, 7, 64)
    quantised = Int8Linear(linear)
    assert dict(quantised.state_dict()) == {}  # no float weights kept beside the int8 ones
    out, expected = quantised(x), linear(x).detach()
    assert out.shape == expected.shape == (3, 7, 48)
    error = (out - expected).abs().max() / expected.abs().max()
    assert 0 < error < 0.03  # int8 rounding: not exact, but close


def test_int8_mode_quantises_the_audio_tower_and_keeps_its_identity(tiny_model_dir):
    fp32 = MuQMuLan.from_pretrained(tiny_model_dir)
    int8 = MuQMuLan.from_pretrained(tiny_model_dir, precision="int8")
    assert fp32.precision == "fp32" and int8.precision == "int8"
    assert not any(type(m) is torch.nn.Linear for m in int8.audio.modules())
    assert any(type(m) is torch.nn.Linear for m in int8.text.modules())  # text stays fp32
    a, b = fp32.embed_clips(clips()), int8.embed_clips(clips())
    stem = int8.audio.model.conv
    assert [w.strided_int8 is not None for w in stem.folded.weights(stem.conv)] == [False, True]  # stem too
    cosine = F.cosine_similarity(a, b)
    assert (cosine > 0.99).all() and (cosine < 1 - 1e-7).any()
    assert torch.equal(fp32.embed_text(["calm piano"]), int8.embed_text(["calm piano"]))
    fp, fq = fp32.fingerprint(), int8.fingerprint()
    assert (fp["precision"], fq["precision"]) == ("fp32", "int8")
    assert fq["weights_hash"] == fp["weights_hash"]  # the weights it was quantised from
    assert not same_vectors(fp, fq)
    before_stem = {k: v for k, v in fq.items() if k != "numerics_version"}  # int8 vectors of a float stem
    assert fq["numerics_version"] == 2 and not same_vectors(fq, before_stem)
    assert "numerics version 1; this one is version 2" in precision_conflict(before_stem, "int8")
    assert precision_conflict(fq, "int8") is None
    assert "numerics_version" not in fp and same_vectors(fp, dict(fp, numerics_version=1))
    with pytest.raises(ValueError, match="quantised to int8"):
        int8.set_precision("fp32")


def test_bf16_mode_autocasts_and_gets_its_own_vector_space(tiny_model_dir):
    fp32 = MuQMuLan.from_pretrained(tiny_model_dir)
    bf16 = MuQMuLan.from_pretrained(tiny_model_dir, precision="bf16")
    assert bf16.dtype == torch.float32  # weights stay float32; autocast computes in bfloat16
    a, b = fp32.embed_clips(clips()), bf16.embed_clips(clips())
    assert b.dtype == torch.float32
    cosine = F.cosine_similarity(a, b)
    assert (cosine > 0.98).all() and (cosine < 1 - 1e-6).any()
    text_cosine = F.cosine_similarity(fp32.embed_text(["calm piano"]), bf16.embed_text(["calm piano"]))
    assert 0.98 < text_cosine.item() < 1 - 1e-7
    assert not same_vectors(fp32.fingerprint(), bf16.fingerprint())


def test_precision_context_is_scoped():
    cpu = torch.device("cpu")
    with precision_context("bf16", cpu):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    with precision_context("fp32", cpu):
        assert not torch.is_autocast_enabled("cpu")


def test_vector_space_rules_per_precision(tiny_model):
    fingerprint = tiny_model.fingerprint()
    assert fingerprint["precision"] == "fp32"
    legacy = {k: v for k, v in fingerprint.items() if k != "precision"}  # recorded before precision modes
    tf32 = dict(fingerprint, precision="tf32")
    assert vector_space(legacy) == vector_space(fingerprint) == vector_space(tf32)
    assert same_vectors(legacy, tf32)
    spaces = {vector_space(dict(fingerprint, precision=p)) for p in ("fp32", "bf16", "int8")}
    assert len(spaces) == 3
    assert not same_vectors(fingerprint, dict(fingerprint, precision="fp8"))  # unknown: never the same
