"""The clip policy: how a track of any length becomes fixed-length clips, and how clip embeddings
become one track embedding (spec 4.1).

Official behaviour (`ClipPolicy(official_compat=True)`, the default):
  * non-overlapping clips of `clip_samples` (10 s at 24 kHz);
  * a trailing partial clip of r samples is completed with the first `clip_samples - r` samples of
    the *same track* (wrap-around, Q-M1);
  * a track shorter than half a clip therefore gives a single clip of length 2L (Q-M2);
  * track embedding = mean of the unit-norm clip embeddings, NOT renormalised (Q-N8).
With `official_compat=False` a short track is tiled to a full clip instead of giving a 2L clip.

`iter_clips` works on a stream of sample chunks and keeps only the track start plus one clip in
memory, so a 60-minute file can be embedded clip by clip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ClipPolicy:
    clip_samples: int = 240_000
    official_compat: bool = True

    def describe(self) -> str:
        mode = "official" if self.official_compat else "tiled-short"
        return f"clips={self.clip_samples}:wrap:{mode}:mean-unit-clips"


@dataclass
class ClipEmbeddings:
    """One track's per-clip embeddings (n, dim) and each clip's start time in seconds (n,)."""

    embeddings: torch.Tensor
    starts: torch.Tensor


def _as_tensor(chunk) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(chunk) if not isinstance(chunk, torch.Tensor) else chunk)
    if tensor.dim() != 1:
        raise ValueError(f"waveform chunks must be 1-D (mono samples), got shape {tuple(tensor.shape)}")
    return tensor.float()


def iter_clips(chunks: Iterable, policy: ClipPolicy = ClipPolicy()) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start_sample, clip) for a track given as an iterable of 1-D sample chunks.

    Raises ValueError for an empty track.
    """
    size = policy.clip_samples
    head: list[torch.Tensor] = []  # the first `size` samples, kept for the wrap-around
    head_len = 0
    pending: list[torch.Tensor] = []
    pending_len = 0
    start = 0
    for chunk in chunks:
        chunk = _as_tensor(chunk)
        if head_len < size and chunk.numel():
            head.append(chunk[: size - head_len])
            head_len += head[-1].numel()
        pending.append(chunk)
        pending_len += chunk.numel()
        if pending_len >= size:
            buffer = torch.cat(pending)
            n_full = buffer.numel() // size
            for k in range(n_full):
                yield start, buffer[k * size : (k + 1) * size]
                start += size
            rest = buffer[n_full * size :]
            pending, pending_len = [rest], rest.numel()
    total = start + pending_len
    if total == 0:
        raise ValueError("cannot embed an empty track (0 samples)")
    if pending_len == 0:
        return
    remainder = torch.cat(pending)
    track_head = torch.cat(head)
    if start == 0 and not policy.official_compat:
        # Tile the whole (short) track to a full clip.
        repeats = -(-size // remainder.numel())
        yield 0, remainder.repeat(repeats)[:size]
        return
    # Official: remainder + the first (size - r) samples; for a track under size/2 that is just 2L.
    yield start, torch.cat((remainder, track_head[: size - pending_len]))


def split_clips(wave, policy: ClipPolicy = ClipPolicy()) -> tuple[list[torch.Tensor], list[int]]:
    """All clips of an in-memory track and their start samples."""
    clips, starts = [], []
    for start, clip in iter_clips([wave], policy):
        starts.append(start)
        clips.append(clip)
    return clips, starts


def track_embedding(clip_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of the unit-norm clip embeddings (n, dim) -> (dim,), not renormalised (official)."""
    return clip_embeddings.mean(dim=0)
