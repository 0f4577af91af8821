"""Each item's frozen work, done once before the loop: the audio tower's features of the whole track and,
with a frozen text encoder, its hidden states per caption (the towers' `features`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from muq_model.training.data import TrainItem


@dataclass
class Features:
    """What training needs per item. Audio, time first: the mel frames (T, n_mels) or, with a frozen
    stem, the stem's output before its linear layer (T', C * F/4). Text: with a frozen encoder its
    hidden states per caption (L, width), else the token ids (L,)."""

    audio: list[torch.Tensor]  # float16 per item
    texts: list[list[torch.Tensor]]  # per item, per caption
    frames_per_second: float  # of the audio features
    skipped: list[tuple[str, str]]  # (audio path, reason) for items that could not be decoded


def prepare_features(
    model,
    items: Sequence[TrainItem],
    load_audio: Callable[[Path], np.ndarray],
    *,
    frozen_stem: bool = False,
    progress: bool = True,
) -> tuple[list[TrainItem], Features]:
    """Decode every item (skipping, and reporting, the ones that fail) and compute its features, in the
    model's current mode (eval: cached stem output uses BatchNorm running statistics, as at inference)."""
    min_samples = model.config.muq.n_fft // 2
    kept, audio, texts, skipped = [], [], [], []
    started = time.monotonic()
    for i, item in enumerate(items, 1):
        try:
            wave = torch.as_tensor(load_audio(item.audio), dtype=torch.float32)
            if wave.dim() != 1 or wave.numel() <= min_samples:
                raise ValueError(f"needs a mono waveform of more than {min_samples} samples")
        except Exception as exc:  # a broken file must not stop the run: report it and go on
            skipped.append((str(item.audio), f"{type(exc).__name__}: {exc}"))
            continue
        audio.append(model.audio.features(wave[None].to(model.device), through_stem=frozen_stem)[0].cpu().half())
        ids = [torch.tensor(t) for t in model.tokenize(item.captions)]
        if model.text.frozen_encoder:
            padded, mask = pad_texts(ids)
            hidden = model.text.features(padded.to(model.device), mask.long().to(model.device)).cpu()  # (n, L, width)
            texts.append([h[: len(t)].half() for h, t in zip(hidden, ids, strict=True)])
        else:
            texts.append(ids)
        kept.append(item)
        if progress and (i % 100 == 0 or i == len(items)):
            print(f"features: {i}/{len(items)} items ({time.monotonic() - started:.0f} s)", flush=True)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", flush=True)
    frames_per_second = model.audio.features_per_second(through_stem=frozen_stem)
    return kept, Features(audio, texts, frames_per_second, skipped)


def pad_texts(texts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (L, ...) tensors to (B, L_max, ...) and return the (B, L_max) bool mask of real tokens."""
    longest = max(t.shape[0] for t in texts)
    batch = torch.zeros((len(texts), longest, *texts[0].shape[1:]), dtype=texts[0].dtype)
    mask = torch.zeros(len(texts), longest, dtype=torch.bool)
    for i, t in enumerate(texts):
        batch[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return batch, mask
