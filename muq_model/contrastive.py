"""MuLan's contrastive objective (spec section 7), with the training-side bugs of the official code fixed.

The released config trains with the *decoupled rank-softmax* loss: for n (audio, text) pairs with
unit-norm latents a, t and similarities s_ij = tau * a_i . t_j,

    L = (1/n) sum_i [ -s_ii + 1/2 log sum_{j != i} exp(s_ij) + 1/2 log sum_{k != i} exp(s_ki) ]

("decoupled": the positive is left out of both normalisers). With decoupled=False the sums include the
positive and L is the usual symmetric InfoNCE. Fixes against the official module (spec 8.5):

* Q-T1: one process works; the gather is skipped when torch.distributed is not initialised.
* Q-T2: the positive of local row i is located at its *global* column (rank * B + i).
* Q-T3: logits and logsumexp run in fp32 whatever the latents' dtype, and tau = exp(theta) is
  clamped to [min_temperature, max_temperature].
* Q-T4: negatives come from torch.distributed.nn.functional.all_gather, whose backward sums every
  rank's gradient for the local slice. Each rank takes the loss over its own rows only; DDP then
  averages the ranks, and that average is exactly the gradient of the global loss above.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from muq_model.distributed import distributed_world, gather_with_grad


def contrastive_loss(
    audio: torch.Tensor,
    text_all: torch.Tensor,
    text: torch.Tensor,
    audio_all: torch.Tensor,
    temperature: torch.Tensor,
    offset: int = 0,
    decoupled: bool = True,
) -> torch.Tensor:
    """Mean loss over the local pairs (audio[i], text[i]), whose partners sit at row offset + i of the
    gathered `text_all` / `audio_all` (n, D). The remaining rows of the gathered batch are negatives."""
    b, n = audio.shape[0], text_all.shape[0]
    if n < 2 and decoupled:
        raise ValueError("the decoupled contrastive loss needs at least 2 pairs in the (gathered) batch")
    tau = temperature.float().reshape(())
    audio_to_text = tau * (audio.float() @ text_all.float().T)  # (B, n): s_{i, j}
    text_to_audio = tau * (text.float() @ audio_all.float().T)  # (B, n): s_{k, i} seen from text i
    rows = torch.arange(b, device=audio.device)
    positives = offset + rows
    positive = audio_to_text[rows, positives]  # (B,) s_ii
    if decoupled:
        is_positive = torch.zeros(b, n, dtype=torch.bool, device=audio.device)
        is_positive[rows, positives] = True
        audio_to_text = audio_to_text.masked_fill(is_positive, float("-inf"))
        text_to_audio = text_to_audio.masked_fill(is_positive, float("-inf"))
    per_pair = -positive + 0.5 * torch.logsumexp(audio_to_text, dim=1) + 0.5 * torch.logsumexp(text_to_audio, dim=1)
    return per_pair.mean()


class ContrastiveLoss(nn.Module):
    """The loss with its learnable log-temperature, usable in one process or under torchrun DDP.

    `temperatures` has the official name and shape ([1, 1, 1], initialised to ln 10) so a trained value
    can be stored as `mulan.contrast.temperatures`; it is only used in training.
    """

    def __init__(
        self,
        init_temperature: float = 10.0,
        min_temperature: float = 1.0,
        max_temperature: float = 100.0,
        decoupled: bool = True,
    ):
        super().__init__()
        if not 0 < min_temperature <= init_temperature <= max_temperature:
            raise ValueError(
                f"need 0 < min_temperature <= init_temperature <= max_temperature, got "
                f"{min_temperature}, {init_temperature}, {max_temperature}"
            )
        self.temperatures = nn.Parameter(torch.full((1, 1, 1), math.log(init_temperature)))
        self.min_temperature, self.max_temperature = min_temperature, max_temperature
        self.decoupled = decoupled

    @property
    def temperature(self) -> torch.Tensor:
        """tau = exp(theta), clamped (spec Q-T3); differentiable inside the bounds."""
        return self.temperatures.float().exp().clamp(self.min_temperature, self.max_temperature)

    def forward(self, audio: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """audio, text: (B, D) unit-norm latents of this rank's pairs. Returns this rank's mean loss."""
        if audio.shape != text.shape or audio.dim() != 2:
            raise ValueError(f"audio and text latents must both be (batch, dim), got {tuple(audio.shape)} and {tuple(text.shape)}")
        rank, _ = distributed_world()
        audio_all, text_all = gather_with_grad(audio), gather_with_grad(text)  # every rank gives B pairs
        return contrastive_loss(
            audio, text_all, text, audio_all, self.temperature, offset=rank * audio.shape[0], decoupled=self.decoupled
        )
