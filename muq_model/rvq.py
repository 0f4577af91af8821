"""Mel-RVQ: the residual vector quantiser whose codes are MuQ's SSL targets (spec section 5).

Input: the folded, normalised mel (four 100 Hz frames -> one 512-d vector at 25 Hz), or for MuQ-iter a
Conformer layer's hidden states. Each of the K stages projects the residual to a small space with a
weight-normalised linear map, picks the codebook row with the highest cosine similarity, projects the
(straight-through) code back and subtracts it from the residual. Trained with the three-term loss
(commitment, codebook, L1 reconstruction); codes unused for `stale_tolerance` batches are restarted on
random inputs of the current batch.

Parameter names follow the official checkpoint (`quantizers.{i}.in_proj.weight_g`, ...), so an RVQ saved
here loads into the official package and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from muq_model.distributed import distributed_world


@dataclass
class RVQConfig:
    input_dim: int = 512  # 128 mels x 4 folded frames; the encoder width for a MuQ-iter RVQ
    n_codebooks: int = 8
    codebook_size: int = 1024
    codebook_dim: int = 16
    stale_tolerance: int = 100  # batches a code may go unused before it is restarted
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0

    def validate(self) -> None:
        for name in ("input_dim", "n_codebooks", "codebook_size", "codebook_dim", "stale_tolerance"):
            if getattr(self, name) < 1:
                raise ValueError(f"RVQConfig.{name} must be positive, got {getattr(self, name)}")


def fold_frames(mel: torch.Tensor, n_fold: int) -> torch.Tensor:
    """(B, n_mels, T_mel) -> (B, T_mel / n_fold, n_fold * n_mels), frame-major (index = s * n_mels + f)."""
    b, f, t = mel.shape
    if t % n_fold:
        raise ValueError(f"{t} mel frames do not fold into groups of {n_fold}: crop the audio to a multiple of "
                         f"{n_fold} hops")
    return mel.view(b, f, t // n_fold, n_fold).permute(0, 2, 3, 1).reshape(b, t // n_fold, n_fold * f)


class WeightNormLinear(nn.Module):
    """A per-frame linear map kept as the official weight-normalised Conv1d(k=1): weight = g * v / |v|,
    the norm taken per output row. Keys `weight_g` (O, 1, 1), `weight_v` (O, I, 1), `bias` (O)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        v = torch.empty(out_features, in_features, 1)
        nn.init.kaiming_uniform_(v, a=5**0.5)  # Conv1d's default initialisation
        bound = 1 / in_features**0.5
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(1, 2), keepdim=True))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(1, 2), keepdim=True))
        return F.linear(x, weight.squeeze(-1), self.bias)


class QuantizerStage(nn.Module):
    """One residual stage: in_proj -> cosine-nearest code -> out_proj."""

    def __init__(self, config: RVQConfig):
        super().__init__()
        self.stale_tolerance = config.stale_tolerance
        self.in_proj = WeightNormLinear(config.input_dim, config.codebook_dim)
        self.out_proj = WeightNormLinear(config.codebook_dim, config.input_dim)
        self.codebook = nn.Embedding(config.codebook_size, config.codebook_dim)
        self.register_buffer("stale_counter", torch.zeros(config.codebook_size))  # batches since last use

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T) codes: the smallest squared distance between unit vectors (= 2 - 2 cos),
        written out as the official code does so that near-ties break the same way."""
        e = F.normalize(z_e.reshape(-1, z_e.shape[-1]).float())
        c = F.normalize(self.codebook.weight.float())
        distance = e.pow(2).sum(1, keepdim=True) - 2 * e @ c.t() + c.pow(2).sum(1, keepdim=True).t()
        return (-distance).max(1)[1].view(z_e.shape[:-1])

    def forward(self, residual: torch.Tensor):
        """(B, T, D) -> (reconstruction (B, T, D), codes (B, T), commitment (B,), codebook loss (B,))."""
        z_e = self.in_proj(residual)
        codes = self.nearest(z_e)
        z_q = self.codebook(codes)
        commitment = (z_e - z_q.detach()).pow(2).mean((1, 2))
        codebook_loss = (z_q - z_e.detach()).pow(2).mean((1, 2))
        if self.training:
            self.restart_dead_codes(z_e.detach(), codes)
        return self.out_proj(z_e + (z_q - z_e).detach()), codes, commitment, codebook_loss

    @torch.no_grad()
    def restart_dead_codes(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """Count batches each code went unused; a code that reaches stale_tolerance gets a random
        L2-normalised input of this batch. Under torchrun usage is summed over ranks and rank 0 draws the
        replacements, so every rank keeps the same codebook."""
        used = torch.bincount(codes.flatten(), minlength=self.stale_counter.numel()).float()
        _, world = distributed_world()
        if world > 1:
            torch.distributed.all_reduce(used)
        unused = (used == 0).float()
        self.stale_counter.mul_(unused).add_(unused)
        dead = self.stale_counter >= self.stale_tolerance
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        inputs = F.normalize(z_e.reshape(-1, z_e.shape[-1]).float())
        picks = torch.randint(inputs.shape[0], (n_dead,), device=inputs.device)
        replacement = inputs[picks].to(self.codebook.weight.dtype)
        if world > 1:
            torch.distributed.broadcast(replacement, 0)
        self.codebook.weight[dead] = replacement
        self.stale_counter[dead] = 0


@dataclass
class RVQOutput:
    reconstruction: torch.Tensor  # (B, T, D): sum of the stages' outputs
    codes: torch.Tensor  # (B, K, T)
    commitment: torch.Tensor  # scalar: per-stage batch means, summed over stages
    codebook_loss: torch.Tensor  # scalar, likewise
    loss: torch.Tensor  # the three-term training loss


class ResidualVectorQuantizer(nn.Module):
    """K QuantizerStages, each quantising what the previous ones left over."""

    def __init__(self, config: RVQConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.quantizers = nn.ModuleList(QuantizerStage(config) for _ in range(config.n_codebooks))

    def forward(self, x: torch.Tensor) -> RVQOutput:
        """x (B, T, D) -> RVQOutput; in training mode dead codes are restarted."""
        residual, reconstruction = x, torch.zeros_like(x)
        codes, commitment, codebook_loss = [], 0.0, 0.0
        for stage in self.quantizers:
            out, stage_codes, stage_commitment, stage_codebook = stage(residual)
            reconstruction = reconstruction + out
            residual = residual - out
            codes.append(stage_codes)
            commitment = commitment + stage_commitment.mean()
            codebook_loss = codebook_loss + stage_codebook.mean()
        cfg = self.config
        loss = cfg.commitment_weight * commitment + cfg.codebook_weight * codebook_loss \
            + (x - reconstruction).abs().mean()
        return RVQOutput(reconstruction, torch.stack(codes, dim=1), commitment, codebook_loss, loss)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> codes (B, K, T), without touching the dead-code counters."""
        codes, residual = [], x
        for stage in self.quantizers:
            stage_codes = stage.nearest(stage.in_proj(residual))
            codes.append(stage_codes)
            residual = residual - stage.out_proj(stage.codebook(stage_codes))
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K', T), K' <= K -> reconstruction (B, T, D) from the first K' stages."""
        return sum(stage.out_proj(stage.codebook(codes[:, i])) for i, stage in enumerate(self.quantizers[: codes.shape[1]]))


def code_perplexity(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """(B, K, T) codes -> (K,) perplexity exp(entropy) of each stage's code distribution: the number of
    equally used codes it corresponds to (codebook_size at best, 1 when collapsed)."""
    counts = torch.stack([torch.bincount(stage.flatten(), minlength=codebook_size) for stage in codes.transpose(0, 1)])
    p = counts.float() / counts.sum(1, keepdim=True)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(1))


class RandomProjectionQuantizer(nn.Module):
    """The BEST-RQ / MusicFM target quantiser, the paper's baseline: a frozen random projection (xavier
    normal) to codebook_dim and a frozen N(0, 1) codebook; the code is the nearest codebook row after both
    are L2-normalised. Buffers `random_projection` (D, d) and `codebook` (C, d), as in the checkpoint.
    Seeded with its own generator: building it leaves torch's global RNG alone (spec Q-T6 fix)."""

    def __init__(self, input_dim: int, codebook_dim: int, codebook_size: int, seed: int = 142):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        std = (2.0 / (input_dim + codebook_dim)) ** 0.5
        self.register_buffer("random_projection", torch.randn(input_dim, codebook_dim, generator=generator) * std)
        self.register_buffer("codebook", torch.randn(codebook_size, codebook_dim, generator=generator))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> codes (B, T)."""
        projected = F.normalize((x.float() @ self.random_projection.float()).flatten(0, 1), dim=1)
        distance = torch.cdist(F.normalize(self.codebook.float(), dim=1), projected)  # (C, B T)
        return distance.argmin(0).view(x.shape[:2])
