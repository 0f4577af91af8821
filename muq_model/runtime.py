"""Compute settings: thread count, device choice and precision modes.

Two cores oversubscribed turn a 0.1 s query into 2 s, so every entry point (CLI, app, benchmarks,
tests) calls :func:`configure_threads` once before doing tensor work.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn

from muq_model.identity import PRECISION_VECTOR_SPACES

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


def serve_numpy_blas_on_one_thread() -> None:
    """numpy's BLAS on one thread, for a process that answers queries: its products there are small (a
    query against thousands of vectors), and after each one an OpenBLAS thread pool spin-waits on the cores
    the next query's text encoder needs (on 2 cores, `SearchService.search` p50 32 ms with the pool, 11-14
    ms without). Only numpy's library: faiss's and torch's keep their threads."""
    from threadpoolctl import ThreadpoolController

    for library in ThreadpoolController().lib_controllers:
        if library.user_api == "blas" and f"{os.sep}numpy" in library.filepath:
            library.set_num_threads(1)


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


# ---- precision modes ---------------------------------------------------------------------------------
# fp32: strict float32 everywhere (CUDA: no TF32). tf32 (CUDA only): float32 tensors, matmuls and
# convolutions on TF32 tensor cores. bf16: autocast to bfloat16 (weights stay float32; LayerNorm and
# softmax run in float32). int8 (CPU only): the audio tower's Linear layers and the stem's second-block
# strided convolutions dynamically quantised (int8 weights per output channel, activations quantised per
# call; fast_stem.FoldedStem.quantise). README "Precision modes" has the
# measured cosines, retrieval agreement and speed of each.
PRECISIONS = ("fp32", "tf32", "bf16", "int8")


def default_precision(device: torch.device) -> str:
    """CPU: fp32. CUDA: tf32, ~5x strict fp32's throughput and, unlike bf16, vectors compatible with
    fp32's (muq_model.identity.PRECISION_VECTOR_SPACES), so a library indexed on one device searches on
    the other."""
    return "tf32" if torch.device(device).type == "cuda" else "fp32"


def check_precision(precision: str | None, device: torch.device) -> str:
    """The precision mode to use on `device` (None: its default), failing clearly for a wrong pair."""
    device = torch.device(device)
    if precision is None:
        return default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError("precision tf32 needs a CUDA device (TF32 is a tensor-core format); on CPU use fp32")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision int8 runs on CPU only, but the model is on {device}; use bf16 or tf32 there")
    return precision


def resolve_precision(requested: str | None, device: torch.device, made_in: str | None = None) -> str:
    """The precision a command runs in: the one asked for (checked against the device); else the device's
    default, unless the library's vectors were `made_in` a precision of another vector space that runs
    here too: that one is kept, so a library indexed with --precision searches and grows without the flag."""
    device = torch.device(device)
    if requested is not None:
        return check_precision(requested, device)
    default = default_precision(device)
    if made_in is None or PRECISION_VECTOR_SPACES.get(made_in) == PRECISION_VECTOR_SPACES[default]:
        return default
    try:
        return check_precision(made_in, device)
    except ValueError:  # e.g. an int8 library on CUDA: the conflict is reported where the vectors meet
        return default


@contextmanager
def precision_context(precision: str, device: torch.device):
    """The numerics of `precision` for the calls inside (restored afterwards): on CUDA strict fp32 or
    TF32 matmuls and convolutions, and bfloat16 autocast for bf16."""
    device = torch.device(device)
    with _cuda_tf32(precision != "fp32") if device.type == "cuda" else _nothing(), \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


@contextmanager
def _cuda_tf32(allowed: bool):
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = "tf32" if allowed else "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


@contextmanager
def _nothing():
    yield


class Int8Linear(nn.Module):
    """Inference-only Linear with int8 weights (symmetric, one scale per output channel), computed by
    the fbgemm/onednn dynamic-quantisation kernel: activations are quantised per call, the product is
    accumulated in int32 and returned in float32. ~2.7x an fp32 GEMM on 2 cores of this machine."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._packed = pack_int8(linear.weight.detach(), None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = int8_matmul(x.reshape(-1, shape[-1]), self._packed)
        return out.view(*shape[:-1], self.out_features)


def pack_int8(weight: torch.Tensor, bias: torch.Tensor | None):
    """A float (out, in) weight quantised to int8 (symmetric, one scale per output channel) and packed,
    with its float bias, for `int8_matmul`."""
    weight = weight.float()
    scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    quantised = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(quantised, None if bias is None else bias.float())


def int8_matmul(x: torch.Tensor, packed) -> torch.Tensor:
    """(N, in) float rows @ a `pack_int8` weight^T + bias -> (N, out) float32: the rows are quantised per
    call (one scale for the whole matrix), the products accumulated in int32 (fbgemm/onednn)."""
    return torch.ops.quantized.linear_dynamic(x.float().contiguous(), packed, True)


def quantise_int8(module: nn.Module) -> nn.Module:
    """The int8 mode of `module`, in place: every nn.Linear inside becomes an Int8Linear (the float weights
    are freed), and every part with an int8 mode of its own (a `quantise()` method: the MuQ stem's strided
    convolutions) switches to it."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            quantise_int8(child)
    if hasattr(module, "quantise"):
        module.quantise()
    return module
