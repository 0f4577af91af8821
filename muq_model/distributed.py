"""What training needs from torch.distributed beyond DDP: the rank, differentiable gathers, and BatchNorm
whose batch statistics span every rank.

DDP averages gradients but leaves BatchNorm per rank: two ranks with B clips each would normalise with
statistics of B clips, not of the 2B clips one process sees, and their loss curves drift apart.
torch's SyncBatchNorm fixes that on GPUs only, so `sync_batch_norms` swaps in `RankSyncedBatchNorm`, which
sums the statistics with torch.distributed.nn's differentiable all_reduce (its backward sums every rank's
gradient, as the all_gather of the contrastive loss does). Outside a distributed job, or in eval mode, it is
plain BatchNorm; its state_dict keys are BatchNorm's, so checkpoints do not change.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def distributed_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a distributed job."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate (B, D) tensors from every rank along dim 0 in rank order, keeping gradients."""
    _, world = distributed_world()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `x` over every rank, keeping gradients."""
    _, world = distributed_world()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x.contiguous())


def mean_over_ranks(value: torch.Tensor) -> float:
    """A scalar averaged over the ranks (for logging)."""
    _, world = distributed_world()
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


class RankSyncedBatchNorm(_BatchNorm):
    """BatchNorm (any input rank >= 2, channels on dim 1) whose training statistics cover all ranks."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected input with a channel dimension, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or distributed_world()[1] == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = sum_with_grad(x.new_tensor(float(x.numel() // x.shape[1])))
        mean = sum_with_grad(x.sum(dims)) / count  # two passes: E[(x - mean)^2] is exact where E[x^2] - mean^2 is not
        centred = x - mean.view(shape)
        var = sum_with_grad((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1), momentum)  # unbiased, as BatchNorm
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out


def sync_batch_norms(module: nn.Module) -> int:
    """Replace every BatchNorm1d/2d inside `module` by a RankSyncedBatchNorm with the same state; returns
    how many were replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
                synced = RankSyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                             child.track_running_stats)
                synced.load_state_dict(child.state_dict())
                synced.to(device=next(child.buffers()).device).train(child.training)
                synced.requires_grad_(any(p.requires_grad for p in child.parameters()))
                setattr(parent, name, synced)
                replaced += 1
    return replaced
