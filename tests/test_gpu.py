"""CUDA checks: CPU/CUDA parity of audio and text embeddings, each precision mode on CUDA, and one
mixed-precision training step. Marked `gpu` and skipped where torch sees no CUDA device
(scripts/gpu_check.sh runs them with the throughput figures on a GPU machine)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muq_model import MuQMuLan, MuQMuLanConfig
from muq_model.contrastive import contrastive_loss
from muq_model.runtime import precision_context

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SR = 24000
TEXTS = ["calm solo piano", "loud rock with distorted guitars", "a slow sad waltz"]


def clips(n: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, 10 * SR, generator=generator)


@pytest.fixture(scope="module")
def cpu_vectors(tiny_model_dir):
    model = MuQMuLan.from_pretrained(tiny_model_dir)
    return model.embed_clips(clips()), model.embed_text(TEXTS)


def test_default_cuda_precision_is_tf32(tiny_model_dir):
    model = MuQMuLan.from_pretrained(tiny_model_dir, device="cuda")
    assert model.device.type == "cuda" and model.precision == "tf32"
    assert model.fingerprint()["precision"] == "tf32"


def test_strict_fp32_on_cuda_matches_cpu(tiny_model_dir, cpu_vectors):
    model = MuQMuLan.from_pretrained(tiny_model_dir, device="cuda", precision="fp32")
    audio, text = model.embed_clips(clips()), model.embed_text(TEXTS)
    assert audio.device.type == text.device.type == "cpu"
    assert (audio - cpu_vectors[0]).abs().max() < 1e-4
    assert (text - cpu_vectors[1]).abs().max() < 1e-4


@pytest.mark.parametrize("precision, min_cosine", [("tf32", 0.9999), ("bf16", 0.98)])
def test_fast_modes_stay_close_to_cpu_fp32(tiny_model_dir, cpu_vectors, precision, min_cosine):
    """tf32 shares fp32's vector space (muq_model.identity): this is the tolerance that claim rests on."""
    model = MuQMuLan.from_pretrained(tiny_model_dir, device="cuda", precision=precision)
    assert F.cosine_similarity(model.embed_clips(clips()), cpu_vectors[0]).min() >= min_cosine
    assert F.cosine_similarity(model.embed_text(TEXTS), cpu_vectors[1]).min() >= min_cosine


def test_int8_is_refused_on_cuda(tiny_model_dir):
    with pytest.raises(ValueError, match="int8 runs on CPU only"):
        MuQMuLan.from_pretrained(tiny_model_dir, device="cuda", precision="int8")


def test_precision_context_sets_and_restores_tf32():
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    with precision_context("fp32", torch.device("cuda")):
        assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "ieee"
    with precision_context("tf32", torch.device("cuda")):
        assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before


def test_one_mixed_precision_training_step():
    torch.manual_seed(0)
    model = MuQMuLan(MuQMuLanConfig.tiny()).cuda().train()
    ids = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    temperature = torch.tensor(10.0, device="cuda")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = model.audio_to_latents.weight.detach().clone()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        audio = model.encode_audio(clips().cuda())
        text = model.encode_text_ids(ids["input_ids"], ids["attention_mask"])
        loss = contrastive_loss(audio, text, text, audio, temperature)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is None or torch.isfinite(g).all() for g in grads)
    assert model.audio.model.conv.conv[0].conv1.weight.grad.abs().sum() > 0  # gradients reach the stem
    optimizer.step()
    assert not torch.equal(model.audio_to_latents.weight.detach(), before)
