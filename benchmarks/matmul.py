"""fp32 matmul GFLOP/s of this machine: the roofline every model benchmark reports itself against."""

from __future__ import annotations

import argparse

import torch

from benchmarks.harness import Report, median, time_call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048], help="square matrix sizes")
    parser.add_argument("--repeats", type=int, default=7)


def measure_gflops(n: int, *, repeats: int = 7, dtype: torch.dtype = torch.float32) -> float:
    """Median GFLOP/s of an n x n @ n x n product (2 n^3 flops)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    seconds = median(time_call(lambda: torch.mm(a, b, out=out), repeats=repeats, warmup=2))
    return 2 * n**3 / seconds / 1e9


def roofline_gflops(threads: int | None = None) -> float:
    """The best fp32 GFLOP/s over a large square matmul, with the current (or given) thread count."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return max(measure_gflops(n, repeats=5) for n in (1024, 2048))
    finally:
        torch.set_num_threads(previous)


def run(args: argparse.Namespace) -> Report:
    threads = torch.get_num_threads()
    report = Report("matmul", ["size", "threads", "GFLOP/s", "vs 1 thread"])
    best = 0.0
    for n in args.sizes:
        torch.set_num_threads(1)
        single = measure_gflops(n, repeats=args.repeats)
        torch.set_num_threads(threads)
        multi = measure_gflops(n, repeats=args.repeats)
        best = max(best, multi)
        report.add_row(n, 1, single, 1.0)
        report.add_row(n, threads, multi, multi / single)
    report.figures = {"roofline_gflops_fp32": best, "threads": threads}
    report.notes.append(f"roofline (best fp32 GFLOP/s at {threads} threads): {best:.1f}")
    return report
