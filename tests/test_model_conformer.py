"""The Conformer's eval-time fast path (muq_model/fast_conformer.py) against the plain layers and against a
float64 reference, with padding masks, with and without oneDNN, and after the weights change."""

from __future__ import annotations

import pytest
import torch
from test_model_stem import randomise_batch_norms  # tests/ is on sys.path

from muq_model import fast_conformer
from muq_model.config import MuQConfig
from muq_model.muq import ConformerEncoder
from muq_model.runtime import quantise_int8


def small_config() -> MuQConfig:
    return MuQConfig(conv_dim=8, encoder_dim=32, encoder_depth=2, num_heads=2, ffn_dim=64)


def randomised_encoder(config: MuQConfig, seed: int = 0) -> ConformerEncoder:
    """BatchNorms and LayerNorms far from identity, so a wrong fold or a swapped norm cannot hide."""
    torch.manual_seed(seed)
    encoder = randomise_batch_norms(ConformerEncoder(config))
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_()
                module.bias.normal_()
    return encoder.eval()


def float64_reference(encoder: ConformerEncoder, config: MuQConfig, x, key_mask=None) -> list[torch.Tensor]:
    copy = ConformerEncoder(config).double().eval()
    copy.load_state_dict(encoder.state_dict())
    with torch.enable_grad():  # gradients on: the plain layers
        return [h.detach() for h in copy(x.double(), key_mask)]


def assert_close_to(hidden: list[torch.Tensor], expected: list[torch.Tensor], tolerance: float = 5e-6):
    assert len(hidden) == len(expected)
    for h, e in zip(hidden, expected, strict=True):
        assert h.shape == e.shape
        assert (h.double() - e).abs().max() <= tolerance * e.abs().max()


@pytest.fixture(params=["onednn", "F.linear"])
def backend(request, monkeypatch):
    if request.param == "F.linear":
        monkeypatch.setattr(fast_conformer, "ONEDNN_LINEAR", False)
    elif not fast_conformer.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN linear")


@pytest.mark.parametrize("masked", [False, True])
def test_fast_path_matches_the_plain_layers(masked, backend):
    config = small_config()
    encoder = randomised_encoder(config)
    x = torch.randn(3, 37, config.encoder_dim, generator=torch.Generator().manual_seed(1))
    key_mask = None
    if masked:
        key_mask = torch.ones(3, 37, dtype=torch.bool)
        key_mask[1, 30:] = key_mask[2, 5:] = False
    assert not encoder.uses_fast_path(x)  # gradients are on by default
    with torch.no_grad():
        assert encoder.uses_fast_path(x)
        fast = encoder(x, key_mask)
    with torch.enable_grad():
        plain = [h.detach() for h in encoder(x, key_mask)]
    expected = float64_reference(encoder, config, x, key_mask)
    assert_close_to(fast, expected)
    assert_close_to(plain, expected)


def test_prepared_weights_follow_training_steps_and_loaded_weights():
    config = small_config()
    encoder = randomised_encoder(config)
    x = torch.randn(2, 20, config.encoder_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = encoder(x)[-1]

    encoder.train()  # one step moves the weights and the BatchNorm running statistics
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    encoder(x)[-1].square().mean().backward()
    optimizer.step()
    encoder.eval()
    with torch.no_grad():
        after_step = encoder(x)
    assert (after_step[-1] - before).abs().max() > 1e-3
    assert_close_to(after_step, float64_reference(encoder, config, x))

    encoder.load_state_dict(randomised_encoder(config, seed=5).state_dict())
    with torch.no_grad():
        loaded = encoder(x)
    assert_close_to(loaded, float64_reference(encoder, config, x))


def test_training_autocast_and_other_dtypes_run_the_plain_layers():
    config = small_config()
    encoder = randomised_encoder(config)
    x = torch.randn(2, 10, config.encoder_dim)
    with torch.no_grad():
        assert encoder.uses_fast_path(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not encoder.uses_fast_path(x)
        assert not encoder.train().uses_fast_path(x)
        assert not encoder.eval().uses_fast_path(x.double())


def test_int8_layers_run_the_fast_path_as_the_plain_one(monkeypatch):
    config = small_config()
    encoder = quantise_int8(randomised_encoder(config))
    x = torch.randn(2, 25, config.encoder_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert encoder.uses_fast_path(x)
        fast = encoder(x)
        monkeypatch.setattr(ConformerEncoder, "uses_fast_path", lambda self, x: False)
        plain = encoder(x)
    for f, p in zip(fast, plain, strict=True):
        # both quantise activations per call, so a float32 difference could move a value by an int8 step;
        # with this seed none does (1e-7 relative), and int8 itself is ~5e-3 from float64
        assert (f - p).abs().max() <= 1e-4 * p.abs().max()
