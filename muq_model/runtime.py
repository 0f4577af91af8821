"""Process-wide compute settings: thread count and device choice.

Two cores oversubscribed turn a 0.1 s query into 2 s, so every entry point (CLI, app, benchmarks,
tests) calls :func:`configure_threads` once before doing tensor work.
"""

from __future__ import annotations

import os

import torch

THREADS_ENV = "MUQSEARCH_THREADS"


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity / cgroup pinning)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads from the argument, $MUQSEARCH_THREADS, $OMP_NUM_THREADS or the core count."""
    if threads is None:
        for var in (THREADS_ENV, "OMP_NUM_THREADS"):
            value = os.environ.get(var, "").strip()
            if value:
                try:
                    threads = int(value)
                except ValueError as exc:
                    raise ValueError(f"${var} must be a whole number of threads, got {value!r}") from exc
                break
    if threads is None:
        threads = available_cores()
    if threads < 1:
        raise ValueError(f"thread count must be at least 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def select_device(name: str | torch.device | None = "auto") -> torch.device:
    """Resolve 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a torch.device, failing clearly when CUDA is absent."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} was asked for, but torch sees no CUDA device on this machine")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(name)
