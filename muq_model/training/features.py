"""Each item's frozen work, done once before the loop: the audio tower's features of the whole track and,
with a frozen text encoder, its hidden states per caption (the towers' `features`). With a cache folder
the features are kept on disk under a digest of everything they are computed from, so another run on
the same data (a new stage from the same parent, a rerun with other settings, a resumed run) reads them
instead of spending the minutes again."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
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
    cache: Path | None = None,
) -> tuple[list[TrainItem], Features]:
    """Decode every item (skipping, and reporting, the ones that fail) and compute its features, in the
    model's current mode (eval: cached stem output uses BatchNorm running statistics, as at inference).
    With `cache` (a folder), read them from there when an earlier run computed the same ones, else
    compute them and write them there (`progress` also marks the process that writes)."""
    if cache is None:
        return compute_features(model, items, load_audio, frozen_stem=frozen_stem, progress=progress)
    path = Path(cache) / f"features-{feature_key(model, items, frozen_stem=frozen_stem)}.pt"
    if path.exists():
        kept, features = read_features(path, items)
        if progress:
            print(f"features: {len(kept)} items read from {path}", flush=True)
        return kept, features
    kept, features = compute_features(model, items, load_audio, frozen_stem=frozen_stem, progress=progress)
    if progress:
        write_features(path, kept, features)
        print(f"features: written to {path} for later runs", flush=True)
    return kept, features


def compute_features(
    model, items: Sequence[TrainItem], load_audio: Callable[[Path], np.ndarray], *, frozen_stem: bool,
    progress: bool,
) -> tuple[list[TrainItem], Features]:
    """The feature pass itself (see :func:`prepare_features`)."""
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


FEATURES_VERSION = 1  # raise when the features of the same inputs change, so older caches are not read


def feature_key(model, items: Sequence[TrainItem], *, frozen_stem: bool) -> str:
    """Digest of what the features are computed from: each item's audio file (path, size, modification
    time) and captions in order, the mel settings, the stem's weights when its output is cached, the text
    encoder's weights when it is frozen, the tokenizer's vocabulary. Trained parts of the model are not
    in it: the mel and a frozen encoder's states do not depend on them."""
    from muq_model.checkpoint import state_dict_hash

    digest = hashlib.sha256(f"features v{FEATURES_VERSION} stem={frozen_stem}".encode())
    digest.update(json.dumps(dataclasses.asdict(model.config.muq), sort_keys=True, default=str).encode())
    if frozen_stem:
        digest.update(state_dict_hash(model.audio.model.conv.state_dict()).encode())
    if model.text.frozen_encoder:
        digest.update(state_dict_hash(model.text.model.state_dict()).encode())
    vocabulary = model.tokenizer.get_vocab() if hasattr(model.tokenizer, "get_vocab") else {}
    digest.update(json.dumps(sorted(vocabulary.items())).encode())
    for item in items:
        stat = Path(item.audio).stat() if Path(item.audio).exists() else None
        digest.update(json.dumps([str(item.audio), stat and stat.st_size, stat and stat.st_mtime_ns,
                                  item.captions]).encode())
    return digest.hexdigest()[:24]


def write_features(path: Path, kept: Sequence[TrainItem], features: Features) -> None:
    """Tensors, strings and numbers only (read back with weights_only=True), written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    torch.save({"kept": [str(item.audio) for item in kept], "audio": features.audio, "texts": features.texts,
                "frames_per_second": features.frames_per_second,
                "skipped": [list(pair) for pair in features.skipped]}, partial)
    os.replace(partial, path)


def read_features(path: Path, items: Sequence[TrainItem]) -> tuple[list[TrainItem], Features]:
    """The items a cached pass kept, in order, and their features."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    by_audio = {str(item.audio): item for item in items}
    kept = [by_audio[audio] for audio in saved["kept"]]
    skipped = [(audio, reason) for audio, reason in saved["skipped"]]
    for audio, reason in skipped:
        print(f"skipped {audio}: {reason}", flush=True)
    return kept, Features(saved["audio"], saved["texts"], float(saved["frames_per_second"]), skipped)


def pad_texts(texts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (L, ...) tensors to (B, L_max, ...) and return the (B, L_max) bool mask of real tokens."""
    longest = max(t.shape[0] for t in texts)
    batch = torch.zeros((len(texts), longest, *texts[0].shape[1:]), dtype=texts[0].dtype)
    mask = torch.zeros(len(texts), longest, dtype=torch.bool)
    for i, t in enumerate(texts):
        batch[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return batch, mask
