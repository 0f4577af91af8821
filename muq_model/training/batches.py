"""Training batches: seeded global batches of distinct items, a random crop and random captions each,
identical on every rank (each keeps its own slice)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from muq_model.training.features import Features, pad_texts


def crop(features: torch.Tensor, frames: int, generator: torch.Generator) -> torch.Tensor:
    """A random window of `frames` time steps of (T, ...) features; a shorter track is tiled first (as
    the clip policy wraps)."""
    if features.shape[0] < frames:
        features = features.repeat(math.ceil(frames / features.shape[0]), 1)
    start = int(torch.randint(0, features.shape[0] - frames + 1, (1,), generator=generator))
    return features[start : start + frames]


class BatchSampler:
    """Global batches of distinct items, a random crop and `captions` random captions each; every rank
    draws the same global batch and keeps its own slice.

    By default a batch is the next slice of a shuffled epoch. With `groups` (one label per item) and
    `group_size` k, a batch is k random items from each of several random groups: negatives then share
    the group's attribute, so the loss rewards telling apart what the group does not fix (with random
    batches, a few coarse attributes already separate every pair and the finer ones go unlearned).
    """

    def __init__(self, features: Features, global_batch: int, crop_frames: int, seed: int, captions: int = 1,
                 groups: Sequence[str | None] | None = None, group_size: int = 0):
        if global_batch > len(features.audio):
            raise ValueError(f"batch size {global_batch} is larger than the {len(features.audio)} training items")
        self.features, self.global_batch, self.crop_frames = features, global_batch, crop_frames
        self.captions = captions
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.group_size = group_size
        self.groups: list[list[int]] = []
        if group_size:
            if groups is None or any(g is None for g in groups):
                raise ValueError("group_size needs a group for every item (--group-by)")
            members: dict[str, list[int]] = {}
            for i, group in enumerate(groups):
                members.setdefault(group, []).append(i)
            self.groups = [m for _, m in sorted(members.items())]

    def next_indices(self) -> list[int]:
        if self.group_size:
            return self._grouped_indices()
        if len(self.order) < self.global_batch:  # a new epoch; the leftover tail is dropped
            self.order = torch.randperm(len(self.features.audio), generator=self.generator).tolist()
        batch, self.order = self.order[: self.global_batch], self.order[self.global_batch :]
        return batch

    def _grouped_indices(self) -> list[int]:
        batch: list[int] = []
        for g in torch.randperm(len(self.groups), generator=self.generator).tolist():
            members = self.groups[g]
            take = min(self.group_size, len(members), self.global_batch - len(batch))
            batch += [members[j] for j in torch.randperm(len(members), generator=self.generator)[:take].tolist()]
            if len(batch) == self.global_batch:
                break
        return batch

    def next_batch(self, rank: int, world: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], list[int]]:
        """This rank's (audio (B, T, features), [(text, mask)] * captions, item indices)."""
        indices = self.next_indices()
        crops, draws = [], [[] for _ in range(self.captions)]
        for i in indices:  # draw for the whole global batch so every rank's generator stays in step
            crops.append(crop(self.features.audio[i], self.crop_frames, self.generator))
            options = self.features.texts[i]
            for draw in draws:
                draw.append(options[int(torch.randint(len(options), (1,), generator=self.generator))])
        local = slice(rank * len(indices) // world, (rank + 1) * len(indices) // world)
        texts = []
        for draw in draws:
            text, mask = pad_texts(draw[local])
            texts.append((text if text.dtype == torch.long else text.float(), mask))
        return torch.stack(crops[local]).float(), texts, indices[local]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": torch.tensor(self.order, dtype=torch.long)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].tolist()
