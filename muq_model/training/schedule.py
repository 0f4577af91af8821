"""The optimisation schedule both loops share (MuLan training in `loop`, MuQ pretraining in
muq_model.pretraining): its settings, the learning rate at each step, the clock that ends a run on time,
and the optimiser step."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Schedule:
    steps: int = 1000
    batch_size: int = 32  # global: split over the ranks under torchrun
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    crop_seconds: float = 5.0
    log_every: int = 10
    checkpoint_every: int = 200
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall time
    seed: int = 0


def learning_rate(step: int, config: Schedule, elapsed_seconds: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak. With a time budget (max_minutes) the decay
    follows whichever runs out first, steps or time, so a run cut short by the clock still anneals."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.max_minutes:
        progress = max(progress, elapsed_seconds / (config.max_minutes * 60))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Clock:
    """A run's wall time against its schedule, from the step it started (or resumed) at."""

    def __init__(self, schedule: Schedule, first_step: int):
        self.schedule, self.first_step, self.started = schedule, first_step, time.monotonic()

    def learning_rate(self, step: int) -> float:
        return learning_rate(step, self.schedule, time.monotonic() - self.started)

    def after(self, step: int) -> tuple[float, bool, bool]:
        """Once `step` steps are done: (seconds elapsed, time budget spent, last step)."""
        elapsed = time.monotonic() - self.started
        out_of_time = self.schedule.max_minutes is not None and elapsed > self.schedule.max_minutes * 60
        return elapsed, out_of_time, step == self.schedule.steps or out_of_time

    def seconds_per_step(self, step: int, elapsed: float) -> float:
        return elapsed / (step - self.first_step)


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
    """One optimiser step on `loss` at learning rate `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def announce(out: Path, rank: int, action: str, params: list[torch.nn.Parameter], data: str, crop_seconds: float,
             config: Schedule, world: int) -> None:
    """Rank 0 makes the output directory and says what the run trains, on what, and how."""
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"{action} {sum(p.numel() for p in params) / 1e6:.2f} M parameters on {data}, batch "
              f"{config.batch_size} of {crop_seconds:.2f} s over {world} rank(s), {config.steps} steps", flush=True)
