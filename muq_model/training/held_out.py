"""The periodic held-out evaluation during training: decoded once, scored through the inference API
(embed_audio / embed_text) with the injected metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muq_model.training.data import TrainItem


@dataclass
class HeldOut:
    """Held-out waveforms and their captions."""

    waves: list[np.ndarray]
    captions: list[str]
    caption_item: list[int]  # caption -> index of its item

    def relevant(self) -> np.ndarray:
        rel = np.zeros((len(self.captions), len(self.waves)), dtype=bool)
        rel[np.arange(len(self.captions)), self.caption_item] = True
        return rel


def load_held_out(items: Sequence[TrainItem], load_audio: Callable[[Path], np.ndarray]) -> HeldOut:
    """Decode the held-out items, skipping (and reporting) the ones that fail."""
    waves, captions, owner = [], [], []
    for item in items:
        try:
            wave = load_audio(item.audio)
        except Exception as exc:
            print(f"eval: skipped {item.audio}: {type(exc).__name__}: {exc}", flush=True)
            continue
        waves.append(wave)
        captions.extend(item.captions)
        owner.extend([len(waves) - 1] * len(item.captions))
    return HeldOut(waves, captions, owner)


def evaluate_model(model, held_out: HeldOut, evaluate: Callable) -> dict:
    """Embed the held-out audio and captions with the inference API and score them with `evaluate`
    ((text (Q, d), audio (N, d), relevant (Q, N)) -> metrics)."""
    was_training = model.training
    model.eval()
    audio = model.embed_audio(held_out.waves, model.sample_rate).numpy()
    text = model.embed_text(held_out.captions).numpy()
    model.train(was_training)
    return evaluate(text, audio, held_out.relevant())


def summarize(metrics: dict) -> str:
    """'text_to_music r@1 0.31 r@10 0.80 | music_to_text ...' from {direction: {metric: {value}}}."""
    parts = []
    for direction, values in metrics.items():
        shown = " ".join(f"{m} {values[m]['value']:.3f}" for m in ("r@1", "r@10") if m in values)
        parts.append(f"{direction} {shown}")
    return " | ".join(parts)
