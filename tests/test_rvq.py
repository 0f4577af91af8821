"""Mel-RVQ: residual quantisation, the three-term loss, dead-code restart, perplexity, and the key layout."""

from __future__ import annotations

import pytest
import torch

from muq_model.checkpoint import load_rvq, save_rvq
from muq_model.rvq import ResidualVectorQuantizer, RVQConfig, code_perplexity, fold_frames


def clustered_data(n: int = 2048, dim: int = 32, clusters: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * 3
    return centres[torch.randint(clusters, (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g)


def test_fold_frames_is_frame_major():
    mel = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)  # (B, n_mels=3, T_mel=8)
    folded = fold_frames(mel, 4)
    assert folded.shape == (2, 2, 12)
    # token 1 of clip 0 holds frames 4..7; index s * n_mels + f is mel bin f of frame 4 + s
    for s in range(4):
        for f in range(3):
            assert folded[0, 1, s * 3 + f] == mel[0, f, 4 + s]
    with pytest.raises(ValueError, match="do not fold"):
        fold_frames(mel[..., :7], 4)


def test_stages_quantise_the_residual_and_losses_add_up():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(RVQConfig(input_dim=32, n_codebooks=3, codebook_size=64, codebook_dim=4)).eval()
    x = clustered_data(64).view(2, 32, 32)
    out = rvq(x)
    assert out.codes.shape == (2, 3, 32)
    assert torch.equal(rvq.encode(x), out.codes)
    torch.testing.assert_close(rvq.decode(out.codes), out.reconstruction)
    # each stage sees what the previous stages left: decoding fewer stages reconstructs less
    errors = [(x - rvq.decode(out.codes[:, :k])).abs().mean() for k in (1, 2, 3)]
    assert torch.allclose(errors[-1], (x - out.reconstruction).abs().mean())
    expected = 0.25 * out.commitment + out.codebook_loss + (x - out.reconstruction).abs().mean()
    torch.testing.assert_close(out.loss, expected)
    # the codes are the cosine-nearest codebook rows of the projected residual
    stage = rvq.quantizers[0]
    z = stage.in_proj(x)
    cosine = torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(stage.codebook.weight, dim=-1).T
    assert torch.equal(cosine.argmax(-1), out.codes[:, 0])


def test_training_on_cpu_lowers_reconstruction_error_and_uses_codes():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(RVQConfig(input_dim=32, n_codebooks=4, codebook_size=64, codebook_dim=8,
                                            stale_tolerance=5))
    data = clustered_data(4096).view(16, 256, 32)
    optimizer = torch.optim.Adam(rvq.parameters(), lr=3e-3)
    rvq.eval()
    before = (data - rvq(data).reconstruction).abs().mean()
    perplexity_before = code_perplexity(rvq.encode(data), 64)
    rvq.train()
    for step in range(300):
        loss = rvq(data[step % 16][None]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rvq.eval()
    after = (data - rvq(data).reconstruction).abs().mean()
    perplexity_after = code_perplexity(rvq.encode(data), 64)
    assert after < 0.5 * before
    assert perplexity_after[0] > perplexity_before[0]  # dead-code restarts spread the first stage's codes
    assert perplexity_after[0] >= 12  # 16 clusters in the data


def test_dead_codes_restart_on_batch_inputs():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(RVQConfig(input_dim=8, n_codebooks=1, codebook_size=32, codebook_dim=4,
                                            stale_tolerance=3)).train()
    stage = rvq.quantizers[0]
    x = torch.randn(1, 10, 8)
    before = stage.codebook.weight.detach().clone()
    for _ in range(2):
        rvq(x)
    used = set(stage.nearest(stage.in_proj(x)).flatten().tolist())
    assert torch.equal(stage.codebook.weight, before)  # nothing stale for long enough yet
    assert all(stage.stale_counter[c] == 0 for c in used)
    assert all(stage.stale_counter[c] == 2 for c in set(range(32)) - used)
    rvq(x)  # third batch without them: the unused codes restart
    changed = (stage.codebook.weight != before).any(1)
    assert set(changed.nonzero().flatten().tolist()) == set(range(32)) - used
    inputs = torch.nn.functional.normalize(stage.in_proj(x).detach().view(-1, 4), dim=-1)
    for row in stage.codebook.weight[changed]:  # each restarted code is one of the batch's normalised inputs
        assert torch.isclose(inputs, row, atol=1e-6).all(1).any()
    assert (stage.stale_counter[changed] == 0).all()


def test_perplexity_counts_equally_used_codes():
    codes = torch.tensor([[[0, 1, 2, 3], [5, 5, 5, 5]]])  # (B=1, K=2, T=4)
    torch.testing.assert_close(code_perplexity(codes, 8), torch.tensor([4.0, 1.0]))


def test_save_uses_the_official_key_names_and_loads_strictly(tmp_path):
    rvq = ResidualVectorQuantizer(RVQConfig(input_dim=32, n_codebooks=2, codebook_size=16, codebook_dim=4))
    save_rvq(rvq, tmp_path)
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert keys == {f"quantizers.{i}.{name}" for i in range(2) for name in (
        "in_proj.weight_g", "in_proj.weight_v", "in_proj.bias", "out_proj.weight_g", "out_proj.weight_v",
        "out_proj.bias", "codebook.weight", "stale_counter")}
    again = load_rvq(tmp_path)
    x = torch.randn(1, 5, 32)
    assert torch.equal(again.encode(x), rvq.eval().encode(x))
