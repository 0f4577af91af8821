"""MuQ self-supervised pretraining: the Mel-RVQ tokenizer, masked-token prediction, and MuQ-iter.

Reading order: presets -> masking -> the three tasks (each an nn.Module whose forward returns the loss,
so the loop calls the model, never its insides) -> AudioCrops (batches) -> pretrain (the loop).

* `RVQFitting`: fit a ResidualVectorQuantizer on features of clean audio: the folded mel (Mel-RVQ, the
  tokenizer of the paper) or, for MuQ-iter, a chosen Conformer layer of a trained first-round MuQ.
* `MaskedPrediction`: MuQ's objective (spec section 6). Mask the waveform in 0.4 s blocks, each with
  probability 0.6, filled with N(0, 0.1^2) noise; predict the clean audio's target codes at the masked
  tokens with one cross-entropy over the K codebooks. Targets come from a callable: the model's own
  Mel-RVQ or random-projection quantiser, or codes of another model (MuQ-iter, external labels).

Under torchrun every rank draws the same global batch (crops and masks) from the same seeded generator
and keeps its own slice; BatchNorm statistics are summed over the ranks (muq_model.distributed), so two
ranks follow one process step for step. muq_model sits at the bottom of the import graph: audio arrives
as decoded waveforms, the `muqsearch pretrain` command decodes the files.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from muq_model.config import MuQConfig
from muq_model.distributed import distributed_world, mean_over_ranks, sync_batch_norms
from muq_model.encoder import MuQ, SSLConfig
from muq_model.rvq import ResidualVectorQuantizer, code_perplexity
from muq_model.training.schedule import Clock, Schedule, announce, optimize

STATE_FILE = "pretrain_state.pt"
LOG_FILE = "pretrain_log.jsonl"


# ---- model sizes ---------------------------------------------------------------------------------------


def preset(name: str) -> tuple[MuQConfig, SSLConfig]:
    """tiny: tests and CPU smoke runs (~0.1 M encoder parameters, 2 of the 8 Mel-RVQ levels predicted);
    small: the CPU reproduction size (4 Conformer layers of 256, 8 levels); large: MuQ-large-msd-iter."""
    if name == "tiny":
        return MuQConfig(conv_dim=8, encoder_dim=32, encoder_depth=2, num_heads=2, ffn_dim=64,
                         codebook_size=2048), SSLConfig()
    if name == "small":
        return MuQConfig(conv_dim=32, encoder_dim=256, encoder_depth=4, num_heads=4, ffn_dim=1024,
                         codebook_size=8192), SSLConfig()
    if name == "large":
        return MuQConfig.large(), SSLConfig()
    raise ValueError(f"unknown model size {name!r}: use tiny, small, large or an official config.json")


# ---- masking -------------------------------------------------------------------------------------------


def mask_waveform(wave: torch.Tensor, block_samples: int, tokens_per_block: int, n_tokens: int, prob: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) clean audio -> (masked audio, (B, n_tokens) bool token mask). Each whole block of
    block_samples is masked independently with probability `prob` and replaced by N(0, 0.1^2) noise;
    its tokens_per_block tokens are the masked tokens. Trailing samples past the last block stay clean."""
    b, n = wave.shape
    n_blocks = n // block_samples
    blocks = torch.rand(b, n_blocks, generator=generator) < prob  # (B, n_blocks)
    noise = torch.randn(b, n_blocks * block_samples, generator=generator) * 0.1
    sample_mask = blocks.repeat_interleave(block_samples, dim=1).to(wave.device)
    masked = wave.clone()
    masked[:, : n_blocks * block_samples] = torch.where(sample_mask, noise.to(wave.device, wave.dtype),
                                                        wave[:, : n_blocks * block_samples])
    token_mask = torch.zeros(b, n_tokens, dtype=torch.bool)
    covered = min(n_tokens, n_blocks * tokens_per_block)
    token_mask[:, :covered] = blocks.repeat_interleave(tokens_per_block, dim=1)[:, :covered]
    return masked, token_mask.to(wave.device)


# ---- tasks ---------------------------------------------------------------------------------------------


class RVQFitting(nn.Module):
    """Fit `rvq` on features(clean audio): the folded mel of `muq` (Mel-RVQ), or hidden state `layer` of a
    frozen first-round `muq` (MuQ-iter)."""

    def __init__(self, rvq: ResidualVectorQuantizer, muq: MuQ, layer: int | None = None):
        super().__init__()
        self.rvq, self.layer = rvq, layer
        self.source = [muq]  # a list, so the frozen feature model is not a submodule DDP would track

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        muq = self.source[0]
        if self.layer is None:
            return muq.model.folded_mel(wave)
        with torch.no_grad():
            return muq(wave).hidden_states[self.layer].float()

    def draw(self, clean: torch.Tensor, generator: torch.Generator) -> dict:
        return {"wave": clean}

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, dict]:
        x = self.features(wave)
        out = self.rvq(x)
        return out.loss, {"reconstruction_l1": (x - out.reconstruction).abs().mean().detach(), "codes": out.codes}


class MaskedPrediction(nn.Module):
    """MuQ's masked-token prediction with targets(clean audio) -> (B, K, T') codes."""

    def __init__(self, muq: MuQ, targets: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.muq = muq
        self.targets = targets or muq.tokenize
        ssl = muq.ssl
        self.block_samples = round(ssl.mask_hop * muq.sample_rate)
        self.tokens_per_block = round(ssl.mask_hop * muq.config.label_rate)
        # Never trained by this objective: the target quantisers and the unused cls_token (left out of
        # the optimiser and of DDP's gradient bookkeeping).
        for name, parameter in muq.named_parameters():
            if name.startswith("model.rvq.") or name == "model.cls_token":
                parameter.requires_grad_(False)

    def draw(self, clean: torch.Tensor, generator: torch.Generator) -> dict:
        n_tokens = self.muq.config.n_frames(clean.shape[1])
        masked, mask = mask_waveform(clean, self.block_samples, self.tokens_per_block, n_tokens,
                                     self.muq.ssl.mask_prob, generator)
        return {"clean": clean, "masked": masked, "mask": mask}

    def forward(self, clean: torch.Tensor, masked: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        codes = self.targets(clean)
        recon = self.muq.model.folded_mel(clean) if self.muq.ssl.recon_loss_ratio else None
        out = self.muq(masked, output_hidden_states=False, targets=codes, mask=mask, recon_target=recon)
        share = masked_share(mask)
        return out.loss * share, {"accuracy": out.accuracy.detach() * share}


def masked_share(mask: torch.Tensor) -> torch.Tensor:
    """This rank's masked tokens x world size / every rank's masked tokens (1 in one process). Scaling the
    rank's mean loss by it makes DDP's average over ranks the mean over all masked tokens, as one process
    with the global batch computes it, however the masked blocks fall between the ranks."""
    _, world = distributed_world()
    local = mask.sum().float()
    if world == 1:
        return torch.ones((), device=mask.device)
    total = local.clone()
    torch.distributed.all_reduce(total)
    return local * world / total.clamp_min(1)


def iteration_targets(first_round: MuQ, layer: int, rvq: ResidualVectorQuantizer, n_targets: int):
    """MuQ-iter targets: the first n_targets codes of `rvq` on hidden state `layer` of the frozen
    first-round model."""
    first_round.eval().requires_grad_(False)
    rvq.eval().requires_grad_(False)

    @torch.no_grad()
    def targets(clean: torch.Tensor) -> torch.Tensor:
        return rvq.encode(first_round(clean).hidden_states[layer].float())[:, :n_targets]

    return targets


# ---- batches -------------------------------------------------------------------------------------------


class AudioCrops:
    """Global batches of random crops (crop_samples each; shorter tracks are tiled) from tracks drawn with
    probability proportional to their length; every rank draws the same batch and keeps its slice."""

    def __init__(self, waves: Sequence[torch.Tensor], global_batch: int, crop_samples: int, seed: int):
        if not waves:
            raise ValueError("no training audio")
        self.waves, self.global_batch, self.crop_samples = list(waves), global_batch, crop_samples
        self.weights = torch.tensor([float(w.numel()) for w in self.waves])
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> torch.Tensor:
        """(global_batch, crop_samples) float32."""
        picks = torch.multinomial(self.weights, self.global_batch, replacement=True, generator=self.generator)
        crops = []
        for i in picks.tolist():
            wave = self.waves[i]
            if wave.numel() < self.crop_samples:
                wave = wave.repeat(math.ceil(self.crop_samples / wave.numel()))
            start = int(torch.randint(0, wave.numel() - self.crop_samples + 1, (1,), generator=self.generator))
            crops.append(wave[start : start + self.crop_samples].float())
        return torch.stack(crops)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# ---- the loop ------------------------------------------------------------------------------------------


@dataclass
class PretrainConfig(Schedule):
    batch_size: int = 8
    crop_seconds: float = 4.0  # rounded down to whole tokens (960 samples)
    mixed_precision: bool = True  # bf16 autocast, on CUDA only


@dataclass
class PretrainResult:
    steps: int
    seconds: float
    records: list[dict] = field(default_factory=list)  # the logged windows

    def summary(self, out: Path) -> dict:
        first, last = (self.records[0], self.records[-1]) if self.records else ({}, {})
        return {"steps": self.steps, "seconds": round(self.seconds, 1), "loss_first": first.get("loss"),
                "loss_last": last.get("loss"), "accuracy_last": last.get("accuracy"),
                "reconstruction_l1_last": last.get("reconstruction_l1"), "perplexity_last": last.get("perplexity"),
                "out": str(out)}


def pretrain(task: nn.Module, waves: Sequence[torch.Tensor], out: str | Path, config: PretrainConfig, *,
             save: Callable[[Path], None], sample_rate: int, samples_per_token: int, resume: bool = True,
             device: torch.device | str = "cpu") -> PretrainResult:
    """Train `task` (RVQFitting or MaskedPrediction) in place; checkpoints, a JSONL log and `save(out)`.

    Resumes from out/pretrain_state.pt when present (and `resume`). Under torchrun, call after
    init_process_group; rank 0 writes the files.
    """
    out, device = Path(out), torch.device(device)
    rank, world = distributed_world()
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} must be divisible by the {world} ranks")
    crop_samples = int(config.crop_seconds * sample_rate) // samples_per_token * samples_per_token
    if crop_samples < samples_per_token * 4:
        raise ValueError(f"crop of {config.crop_seconds} s is too short: at least {4 * samples_per_token} samples")
    torch.manual_seed(config.seed)
    task.to(device)
    if world > 1:
        sync_batch_norms(task)
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sampler = AudioCrops(waves, config.batch_size, crop_samples, config.seed)
    step, result = 0, PretrainResult(steps=0, seconds=0.0)
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        task.load_state_dict(state["task"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        step, result.records = int(state["step"]), list(json.loads(state["records"]))
        if rank == 0:  # the log keeps what the checkpoint knows: windows logged after it come again
            (out / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in result.records), encoding="utf-8")
            print(f"resumed from {state_path} at step {step}", flush=True)
    runner = nn.parallel.DistributedDataParallel(task) if world > 1 else task
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.mixed_precision and device.type == "cuda"
                else nullcontext())
    minutes = sum(w.numel() for w in waves) / sample_rate / 60
    announce(out, rank, "pretraining", params, f"{len(waves)} tracks ({minutes:.1f} min)", crop_samples / sample_rate,
             config, world)

    task.train()
    clock = Clock(config, step)
    window: list[dict] = []
    local = slice(rank * config.batch_size // world, (rank + 1) * config.batch_size // world)
    try:
        while step < config.steps:
            before_step = (sampler.state_dict(), torch.get_rng_state())  # what an interrupted step resumes from
            lr = clock.learning_rate(step)
            inputs = task.draw(sampler.next_batch(), sampler.generator)
            with autocast:
                loss, metrics = runner(**{k: v[local].to(device) for k, v in inputs.items()})
            optimize(optimizer, loss, lr)
            step += 1
            window.append(window_values(loss, metrics))
            elapsed, out_of_time, last = clock.after(step)
            if step % config.log_every == 0 or last:
                record = summarize_window(window, step, lr, elapsed)
                result.records.append(record)
                window = []
                if rank == 0:
                    report(record, config.steps, clock.seconds_per_step(step, elapsed))
                    with open(out / LOG_FILE, "a", encoding="utf-8") as log:
                        log.write(json.dumps(record) + "\n")
            if rank == 0 and (step % config.checkpoint_every == 0 or last):
                save_state(out, task, optimizer, (sampler.state_dict(), torch.get_rng_state()), step, result, config)
            if out_of_time:
                break
    except KeyboardInterrupt:
        if rank == 0:
            print(f"interrupted at step {step}: saving the checkpoint", flush=True)
            save_state(out, task, optimizer, before_step, step, result, config)
        raise
    if rank == 0:
        task.eval()
        save(out)
    result.steps, result.seconds = step, time.monotonic() - clock.started
    return result


def window_values(loss: torch.Tensor, metrics: dict) -> dict:
    """One step's loggable values, averaged over the ranks; codes are kept for the perplexity."""
    values = {"loss": mean_over_ranks(loss.detach().float())}
    for key, value in metrics.items():
        values[key] = value if key == "codes" else mean_over_ranks(value.float())
    return values


def summarize_window(window: list[dict], step: int, lr: float, elapsed: float) -> dict:
    record = {"step": step}
    for key in window[0]:
        if key == "codes":  # per-stage perplexity over this rank's codes of the window
            codes = torch.cat([w["codes"].cpu() for w in window], dim=2)
            size = int(codes.max()) + 1
            record["perplexity"] = [round(float(p), 1) for p in code_perplexity(codes, size)]
        else:
            record[key] = sum(w[key] for w in window) / len(window)
    record.update(lr=lr, seconds=round(elapsed, 1))
    return record


def report(record: dict, steps: int, per_step: float) -> None:
    parts = [f"step {record['step']}/{steps}", f"loss {record['loss']:.4f}"]
    if "accuracy" in record:
        parts.append(f"accuracy {record['accuracy']:.3f}")
    if "reconstruction_l1" in record:
        parts.append(f"recon L1 {record['reconstruction_l1']:.4f}")
    if "perplexity" in record:
        parts.append("perplexity " + "/".join(f"{p:.0f}" for p in record["perplexity"]))
    remaining = per_step * (steps - record["step"])
    parts += [f"{per_step:.2f} s/step", f"eta {remaining / 60:.1f} min"]
    print("  ".join(parts), flush=True)


def save_state(out: Path, task: nn.Module, optimizer, generators: tuple[dict, torch.Tensor], step: int,
               result: PretrainResult, config: PretrainConfig) -> None:
    """Everything needed to resume after `step` steps, written atomically; `generators` are the sampler's and
    torch's random states as they were after that step."""
    tmp = out / (STATE_FILE + ".tmp")
    torch.save({"task": task.state_dict(), "optimizer": optimizer.state_dict(), "sampler": generators[0],
                "torch_rng": generators[1], "step": step, "records": json.dumps(result.records),
                "config": asdict(config)}, tmp)
    os.replace(tmp, out / STATE_FILE)
