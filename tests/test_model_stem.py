"""The Conv2d stem's eval-time fast path (BatchNorm folded, conv1 + conv3 as one im2col matmul, conv2 by
Winograd F(4x4, 3x3)) against the plain modules and against float64 direct convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muq_model import fast_stem
from muq_model.config import MuQConfig
from muq_model.fast_stem import (
    conv3x3_im2col,
    strided_winograd_matrices,
    winograd_conv3x3,
    winograd_matrices,
    winograd_weights,
)
from muq_model.muq import Conv2dSubsampling


def small_config(label_rate: int = 25) -> MuQConfig:
    return MuQConfig(conv_dim=8, encoder_dim=32, encoder_depth=1, num_heads=2, ffn_dim=64, label_rate=label_rate)


def randomise_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorms far from identity (statistics and affine), so a wrong fold cannot hide."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_()
                module.running_var.uniform_(0.3, 3.0)
                module.weight.normal_()
                module.bias.normal_()
    return model


def randomised_stem(config: MuQConfig, seed: int = 0) -> Conv2dSubsampling:
    torch.manual_seed(seed)
    return randomise_batch_norms(Conv2dSubsampling(config)).eval()


def float64_reference(stem: Conv2dSubsampling, config: MuQConfig, mel: torch.Tensor) -> torch.Tensor:
    """The plain modules in float64 on a copy (gradients on, so the fast path is never taken)."""
    copy = Conv2dSubsampling(config).double().eval()
    copy.load_state_dict(stem.state_dict())
    with torch.enable_grad():
        return copy(mel.double()).detach()


def test_winograd_matrices_compute_a_3_tap_correlation():
    a_t, g, b_t = winograd_matrices()
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        d = torch.randn(6, dtype=torch.float64, generator=generator)
        taps = torch.randn(3, dtype=torch.float64, generator=generator)
        expected = torch.stack([(taps * d[i : i + 3]).sum() for i in range(4)])
        assert torch.allclose(a_t @ ((g @ taps) * (b_t @ d)), expected, rtol=0, atol=1e-12)


def test_strided_winograd_matrices_compute_a_stride_2_correlation():
    a_t, g, b_t = strided_winograd_matrices()
    assert a_t.shape == (4, 9) and g.shape == (9, 3) and b_t.shape == (9, 9)  # 9 products for 4 outputs, not 12
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        d = torch.randn(9, dtype=torch.float64, generator=generator)
        taps = torch.randn(3, dtype=torch.float64, generator=generator)
        expected = torch.stack([(taps * d[2 * i : 2 * i + 3]).sum() for i in range(4)])
        assert torch.allclose(a_t @ ((g @ taps) * (b_t @ d)), expected, rtol=0, atol=1e-12)


@pytest.fixture(params=["default bands", "small bands"])
def chunking(request, monkeypatch):
    """Run a test with the default chunk size, and with 113 KB chunks: every image below with more than
    two rows of output (or of Winograd tiles) is then cut into several bands, with a ragged last band."""
    if request.param == "small bands":
        monkeypatch.setattr(fast_stem, "STEM_CHUNK_BYTES", 113 * 1024)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("relu_input", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (16, 125), (40, 201), (64, 500)])  # ragged edges
def test_winograd_conv_equals_direct_conv_in_float64(shape, relu_input, stride, chunking):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, 5, dtype=torch.float64, generator=generator)  # (H, W, C) channels last
    weight = torch.randn(6, 5, 3, 3, dtype=torch.float64, generator=generator)
    conv_input = x.relu() if relu_input else x
    expected = F.conv2d(conv_input.permute(2, 0, 1)[None], weight, stride=stride, padding=1)[0].permute(1, 2, 0)
    out = winograd_conv3x3(x, winograd_weights(weight, stride=stride), stride=stride, relu_input=relu_input)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("stride", [(2, 2), (2, 1)])
@pytest.mark.parametrize("shape", [(1, 1), (9, 13), (64, 501)])
def test_im2col_conv_equals_direct_conv(stride, shape, chunking):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(*shape, 4, dtype=torch.float64, generator=generator)
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=generator)
    bias = torch.randn(6, dtype=torch.float64, generator=generator)
    expected = F.conv2d(x.permute(2, 0, 1)[None], weight, bias, stride=stride, padding=1)[0].permute(1, 2, 0)
    matrix = weight.permute(2, 3, 1, 0).reshape(36, 6)  # rows (kh, kw, c)
    assert torch.allclose(conv3x3_im2col(x, matrix, bias, stride), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("label_rate", [25, 50])
@pytest.mark.parametrize("frames", [1000, 37, 5])
def test_folded_stem_matches_the_plain_stem(label_rate, frames, chunking):
    config = small_config(label_rate)
    stem = randomised_stem(config)
    mel = torch.randn(2, config.n_mels, frames, generator=torch.Generator().manual_seed(3))
    assert stem.uses_folded_path(mel) is False  # gradients are on by default
    with torch.no_grad():
        assert stem.uses_folded_path(mel)
        fast = stem(mel)
    with torch.enable_grad():
        slow = stem(mel)
    expected = float64_reference(stem, config, mel)
    first, second = stem.folded.weights(stem.conv)
    assert first.strided_winograd is None  # one input channel: im2col
    assert (second.strided_winograd is not None) == (tuple(stem.conv[1].stride) == (2, 2))  # else im2col
    assert fast.shape == expected.shape == (2, config.n_frames(frames * config.hop_length), config.encoder_dim)
    scale = expected.abs().max()
    # float32 rounding on both paths: the fast one within a few times the plain one's error
    assert (fast - expected).abs().max() <= 5e-6 * scale
    assert (slow - expected).abs().max() <= 5e-6 * scale


def test_folded_weights_follow_training_steps_and_loaded_weights():
    config = small_config()
    stem = randomised_stem(config)
    mel = torch.randn(2, config.n_mels, 200, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = stem(mel)

    stem.train()  # one step: moves the weights and the BatchNorm running statistics
    optimizer = torch.optim.SGD(stem.parameters(), lr=0.1)
    stem(mel).square().mean().backward()
    optimizer.step()
    stem.eval()
    with torch.no_grad():
        after_step = stem(mel)
    assert (after_step - before).abs().max() > 1e-3
    assert torch.allclose(after_step, float64_reference(stem, config, mel).float(), rtol=0, atol=1e-4)

    stem.load_state_dict(randomised_stem(config, seed=5).state_dict())
    with torch.no_grad():
        loaded = stem(mel)
    assert torch.allclose(loaded, float64_reference(stem, config, mel).float(), rtol=0, atol=1e-4)


def test_training_and_gradients_run_the_plain_modules():
    config = small_config()
    stem = randomised_stem(config).train()
    mel = torch.randn(2, config.n_mels, 100, generator=torch.Generator().manual_seed(6))
    stem(mel).sum().backward()
    assert stem.conv[0].conv2.weight.grad is not None
    assert stem.conv[1].bn2.num_batches_tracked.item() == 1  # training mode: batch statistics, updated
    stem.eval().zero_grad()
    stem(mel).sum().backward()  # eval with gradients on: still differentiable
    assert stem.conv[1].conv1.weight.grad.abs().sum() > 0


def test_int8_stem_quantises_the_wide_block_only_and_stays_close(chunking):
    config = small_config()
    stem = randomised_stem(config)
    mel = torch.randn(2, config.n_mels, 300, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        exact = stem(mel)
        stem.quantise()
        quantised = stem(mel)
    first, second = stem.folded.weights(stem.conv)
    assert first.strided_int8 is None and second.strided_int8 is not None  # one input channel: stays float
    error = (quantised - exact).norm() / exact.norm()
    assert 0 < error < 0.02  # int8 rounding of the second block's patches and weights: close, not exact
    assert F.cosine_similarity(quantised.flatten(1), exact.flatten(1)).min() > 0.999


def test_kept_buffers_give_the_same_result_across_calls_and_shapes(chunking):
    """The stem keeps its large intermediates from call to call (fast_stem.Scratch): a call after one of
    another shape, or of the same shape, gives what a fresh stem gives."""
    config = small_config()
    stem, fresh = randomised_stem(config), randomised_stem(config)
    generator = torch.Generator().manual_seed(8)
    long, short = (torch.randn(2, config.n_mels, frames, generator=generator) for frames in (300, 37))
    with torch.no_grad():
        first = stem(long)
        between = stem(short)
        again = stem(long)
        assert torch.equal(first, again) and torch.equal(between, fresh(short))
        assert torch.equal(first, randomised_stem(config)(long))


def test_concurrent_calls_do_not_share_buffers():
    """Only one call at a time uses the kept buffers; another one, in another thread, allocates its own."""
    from concurrent.futures import ThreadPoolExecutor

    config = small_config()
    stem = randomised_stem(config)
    mels = [torch.randn(1, config.n_mels, frames, generator=torch.Generator().manual_seed(frames))
            for frames in (300, 301, 200, 150) * 3]
    with torch.no_grad():
        expected = [randomised_stem(config)(mel) for mel in mels]

    def run(mel):
        with torch.no_grad():
            return stem(mel)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, mels))
    assert all(torch.equal(a, b) for a, b in zip(results, expected, strict=True))


def test_buffers_kept_from_an_inference_call_do_not_break_a_later_plain_call():
    """Buffers made under torch.inference_mode cannot be written outside it; the stem replaces them (a
    training run's feature pass after an inference call failed on this)."""
    config = small_config()
    stem = randomised_stem(config)
    mel = torch.randn(1, config.n_mels, 300, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        first = stem(mel).clone()
    with torch.no_grad():
        again = stem(mel)
    assert torch.equal(first, again)
