"""The decoupled rank-softmax contrastive loss against a brute-force transcription of spec section 7."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from muq_model.contrastive import ContrastiveLoss, contrastive_loss


def unit(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)


def brute_force(a: torch.Tensor, t: torch.Tensor, tau: float, decoupled: bool = True) -> float:
    """L = (1/n) sum_i [-s_ii + 1/2 log sum_{j!=i} e^{s_ij} + 1/2 log sum_{k!=i} e^{s_ki}], plain Python."""
    a, t = a.double().tolist(), t.double().tolist()
    n = len(a)

    def s(i, j):
        return tau * sum(x * y for x, y in zip(a[i], t[j], strict=True))

    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i or not decoupled]
        row = math.log(sum(math.exp(s(i, j)) for j in others))
        col = math.log(sum(math.exp(s(k, i)) for k in others))
        total += -s(i, i) + 0.5 * row + 0.5 * col
    return total / n


@pytest.mark.parametrize("decoupled", [True, False])
def test_loss_matches_brute_force(decoupled):
    a, t = unit(7, 5, 0), unit(7, 5, 1)
    tau = torch.tensor(3.7, dtype=torch.float64)
    got = contrastive_loss(a, t, t, a, tau, decoupled=decoupled)
    assert got.item() == pytest.approx(brute_force(a, t, 3.7, decoupled), rel=1e-6)


def test_without_decoupling_is_symmetric_infonce():
    a, t = unit(6, 4, 2), unit(6, 4, 3)
    logits = 5.0 * a @ t.T
    labels = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    got = contrastive_loss(a, t, t, a, torch.tensor(5.0), decoupled=False)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_local_rows_with_gathered_negatives_average_to_the_global_loss():
    """What each rank computes (its rows at their global offset, all columns) averages to the full loss,
    for values and for gradients (the DDP mean of per-rank gradients)."""
    a = unit(8, 6, 4).requires_grad_()
    t = unit(8, 6, 5).requires_grad_()
    tau = torch.tensor(7.0, dtype=torch.float64)
    full = contrastive_loss(a, t, t, a, tau)
    full_grads = torch.autograd.grad(full, (a, t))

    world, b = 2, 4
    per_rank = [
        contrastive_loss(a[r * b : (r + 1) * b], t, t[r * b : (r + 1) * b], a, tau, offset=r * b) for r in range(world)
    ]
    mean = sum(per_rank) / world
    assert mean.item() == pytest.approx(full.item(), rel=1e-6)  # the loss runs in fp32 (Q-T3)
    for got, want in zip(torch.autograd.grad(mean, (a, t)), full_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_wrong_offset_changes_the_loss():
    """The positive must be looked up at its global column (spec Q-T2): offset 0 for rank 1 is wrong."""
    a, t = unit(8, 6, 6), unit(8, 6, 7)
    tau = torch.tensor(10.0)
    right = contrastive_loss(a[4:], t, t[4:], a, tau, offset=4)
    wrong = contrastive_loss(a[4:], t, t[4:], a, tau, offset=0)
    assert not torch.isclose(right, wrong)


def test_fp16_latents_at_maximum_temperature_stay_finite_and_exact():
    """exp(100 * s) overflows fp16 and fp32 (Q-T3); the fp32 logsumexp path must match a float64 result."""
    a, t = unit(16, 8, 8), unit(16, 8, 9)
    loss = ContrastiveLoss(init_temperature=100.0, max_temperature=100.0)
    got = loss(a.half(), t.half())
    assert got.dtype == torch.float32 and torch.isfinite(got)
    expected = contrastive_loss(a.half().double(), t.half().double(), t.half().double(), a.half().double(), torch.tensor(100.0))
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)


def test_temperature_is_clamped_and_learnable_inside_the_bounds():
    loss = ContrastiveLoss(init_temperature=10.0, max_temperature=100.0)
    assert loss.temperature.item() == pytest.approx(10.0)
    assert loss.temperatures.shape == (1, 1, 1)  # the official `contrast.temperatures` layout
    a, t = unit(4, 3, 10).float(), unit(4, 3, 11).float()
    loss(a, t).backward()
    assert loss.temperatures.grad is not None and loss.temperatures.grad.abs().item() > 0
    with torch.no_grad():
        loss.temperatures.fill_(math.log(1e6))
    assert loss.temperature.item() == pytest.approx(100.0)
    assert torch.isfinite(loss(a, t))


def test_decoupled_loss_needs_two_pairs_and_matching_shapes():
    loss = ContrastiveLoss()
    with pytest.raises(ValueError, match="at least 2 pairs"):
        loss(unit(1, 3, 0).float(), unit(1, 3, 1).float())
    with pytest.raises(ValueError, match="batch, dim"):
        loss(unit(3, 3, 0).float(), unit(2, 3, 1).float())


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    sys.path.insert(0, sys.argv[2])
    from test_training_contrastive import Pair, batch
    from muq_model.distributed import sync_batch_norms

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    pair = Pair()
    assert sync_batch_norms(pair) == 1
    x, y = batch()
    b = len(x) // world
    ddp = DistributedDataParallel(pair)  # keep a reference: its reducer must outlive backward()
    ddp(x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]).backward()  # DDP averages the gradients
    if rank == 0:
        state = {n: p.grad for n, p in pair.named_parameters()}
        state.update({n: b for n, b in pair.named_buffers()})
        torch.save(state, sys.argv[1])
    dist.destroy_process_group()
    """
)


class Pair(torch.nn.Module):
    """Two small 'towers' (one with BatchNorm, as the Conformer) and the loss: enough to check the gradient
    plumbing across ranks."""

    def __init__(self):
        super().__init__()
        self.audio = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4))
        self.text, self.loss = torch.nn.Linear(5, 4), ContrastiveLoss()

    def forward(self, x, y):
        return self.loss(F.normalize(self.audio(x), dim=-1), F.normalize(self.text(y), dim=-1))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=g), torch.randn(8, 5, generator=g)


def test_two_process_gloo_gradients_equal_single_process(tmp_path):
    """Under torchrun (2 CPU ranks, gloo) the rank-averaged gradients and the BatchNorm running statistics
    equal one process on the whole batch."""
    script = tmp_path / "ddp_loss.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "grads.pt"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(out), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)

    torch.manual_seed(0)
    pair = Pair()
    pair(*batch()).backward()
    for name, p in pair.named_parameters():
        torch.testing.assert_close(ddp[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)
    for name, b in pair.named_buffers():
        torch.testing.assert_close(ddp[name], b, rtol=1e-5, atol=1e-6, msg=name)


def test_rank_synced_batch_norm_is_plain_batch_norm_in_one_process():
    """Swapped in outside a distributed job, it computes what BatchNorm does and keeps its state_dict keys."""
    from muq_model.distributed import RankSyncedBatchNorm, sync_batch_norms

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv1d(3, 5, 1), torch.nn.BatchNorm1d(5), torch.nn.BatchNorm1d(5))
    synced = torch.nn.Sequential(torch.nn.Conv1d(3, 5, 1), torch.nn.BatchNorm1d(5), torch.nn.BatchNorm1d(5))
    synced.load_state_dict(plain.state_dict())
    assert sync_batch_norms(synced) == 2 and isinstance(synced[1], RankSyncedBatchNorm)
    assert synced.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(4, 3, 7)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced[1].running_var, plain[1].running_var)
