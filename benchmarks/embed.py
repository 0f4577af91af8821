"""Audio embedding throughput and memory of the full-size MuQ-MuLan-large architecture (random weights).

Workloads: one 10 s clip, and one track of --track-seconds (default 3 min = 18 clips). Modes, each in
its own subprocess so that peak RSS is its own:
  official-serial  the official muq package (only when importable, e.g. in the oracle venv), clip by clip
  ours-serial      our model, one clip per forward pass: the straightforward path (baseline in CI)
  ours             embed_audio as shipped (stem clip by clip, Conformer batched over clips)
  ours-int8        opt-in (--fast): dynamic int8 quantisation of the audio tower's Linears (in place),
                   reported with its cosine against ours
Every mode loads the same random checkpoint (written once by the parent). Figures: medians; speed as
a ratio against the baseline measured in the same run; max |d| of the track embedding against the
baseline; executed FLOPs per clip (the stem's Winograd convolutions execute fewer than the direct ones)
and achieved GFLOP/s against benchmarks.matmul.roofline_gflops().
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Report, median

REPO = Path(__file__).resolve().parent.parent
SR = 24000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--track-seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the 1-clip workload")
    parser.add_argument("--track-repeats", type=int, default=1, help="timed runs of the track workload")
    parser.add_argument("--fast", action="store_true", help="also measure the int8 dynamic-quantisation mode")


# ---- worker (runs in a subprocess) -------------------------------------------------------------------

def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def _official_embedder(checkpoint: Path):
    """The official MuQMuLan built offline (as in tests/fixtures/make_official_golden.py), our weights."""
    import importlib.util

    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("golden", REPO / "tests" / "fixtures" / "make_official_golden.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    model = golden.build_official(golden.LARGE_MUQ_CONFIG, golden.LARGE_W2V2_OVERRIDES, golden.LARGE_XLMR_CONFIG,
                                  golden.LARGE_MULAN_CONFIG, perturb_all=False)
    from muq_model.checkpoint import IGNORED_KEYS

    result = model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
    # Our checkpoint holds every tensor the features use; only the dead modules keep their random init.
    used_missing = [k for k in result.missing_keys if not any(p.fullmatch(k) for p in IGNORED_KEYS)]
    if used_missing or result.unexpected_keys:
        raise RuntimeError(f"official model: missing {used_missing}, unexpected {result.unexpected_keys}")
    model.eval()

    def embed(wave):
        with torch.inference_mode():
            return model(wavs=[wave], parallel_processing=False)

    return embed


def _our_embedder(checkpoint: Path, mode: str):
    import torch

    from muq_model import MuQMuLan

    model = MuQMuLan.from_pretrained(checkpoint, tokenizer=None)
    if mode == "ours-serial":
        model.clip_batch_samples = model.clip_samples  # one clip per forward pass
    if mode == "ours-int8":  # in place: the int8 Linears replace the fp32 ones instead of sitting beside them
        torch.ao.quantization.quantize_dynamic(model.audio, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return lambda wave: model.embed_audio([wave])


def worker(mode: str, checkpoint: str, out: str, threads: int, track_seconds: float, repeats: int,
           track_repeats: int) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from muq_model.runtime import configure_threads

    configure_threads(threads)
    start = time.perf_counter()
    embed = _official_embedder(Path(checkpoint)) if mode == "official-serial" else _our_embedder(Path(checkpoint), mode)
    result = {"mode": mode, "load_s": time.perf_counter() - start, "rss_loaded_mb": _rss_mb("VmRSS")}
    generator = torch.Generator().manual_seed(0)
    clip = 0.1 * torch.randn(10 * SR, generator=generator)
    track = 0.1 * torch.randn(int(track_seconds * SR), generator=generator)

    _reset_peak_rss()
    with FlopCounterMode(display=False) as counter:  # the warm-up run also counts the FLOPs of one clip
        embed(clip)
    result["clip_gflop"] = counter.get_total_flops() / 1e9
    clip_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        clip_vector = embed(clip)
        clip_times.append(time.perf_counter() - t0)
    result["clip_s"] = clip_times
    result["peak_rss_clip_mb"] = _rss_mb("VmHWM")

    _reset_peak_rss()
    track_times = []
    for _ in range(track_repeats):
        t0 = time.perf_counter()
        track_vector = embed(track)
        track_times.append(time.perf_counter() - t0)
    result["track_s"] = track_times
    result["peak_rss_track_mb"] = _rss_mb("VmHWM")
    torch.save({"clip": clip_vector.cpu(), "track": track_vector.cpu()}, out)
    print(json.dumps(result))


# ---- parent ------------------------------------------------------------------------------------------

def _official_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("muq") is not None


def _write_random_checkpoint(directory: Path) -> None:
    import torch

    from muq_model import MuQMuLan, MuQMuLanConfig

    torch.manual_seed(0)
    MuQMuLan(MuQMuLanConfig.large(), tokenizer=None).eval().save_pretrained(directory)


def _run_worker(mode: str, checkpoint: Path, out: Path, args: argparse.Namespace) -> dict:
    call = (f"from benchmarks.embed import worker; worker({mode!r}, {str(checkpoint)!r}, {str(out)!r}, "
            f"{args.threads}, {args.track_seconds}, {args.repeats}, {args.track_repeats})")
    proc = subprocess.run([sys.executable, "-c", call], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"embed benchmark worker {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> Report:
    import torch

    from benchmarks.matmul import roofline_gflops

    args.threads = args.threads or 2

    roofline = roofline_gflops(threads=args.threads)
    modes = (["official-serial"] if _official_available() else []) + ["ours-serial", "ours"]
    if args.fast:
        modes.append("ours-int8")
    baseline = modes[0]
    results, vectors = {}, {}
    with tempfile.TemporaryDirectory(prefix="muq-embed-bench-") as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        _write_random_checkpoint(checkpoint)
        for mode in modes:
            out = Path(tmp) / f"{mode}.pt"
            results[mode] = _run_worker(mode, checkpoint, out, args)
            vectors[mode] = torch.load(out, weights_only=True)

    n_clips = -(-int(args.track_seconds * SR) // (10 * SR))
    report = Report("embed", [
        "mode", "workload", "clips/s", "vs " + baseline, "GFLOP/clip", "GFLOP/s", "of roofline", "peak RSS MB",
        "max|d| vs base", "cosine vs fp32",
    ])
    base = results[baseline]
    base_rate = {"1 clip": 1 / median(base["clip_s"]), "track": n_clips / median(base["track_s"])}
    for mode in modes:
        r = results[mode]
        for workload, seconds, clips, rss, key in (
            ("1 clip", median(r["clip_s"]), 1, r["peak_rss_clip_mb"], "clip"),
            (f"{args.track_seconds:g} s track", median(r["track_s"]), n_clips, r["peak_rss_track_mb"], "track"),
        ):
            rate = clips / seconds
            gflops = r["clip_gflop"] * clips / seconds
            delta = (vectors[mode][key] - vectors[baseline][key]).abs().max().item()
            cosine = "" if mode != "ours-int8" else torch.nn.functional.cosine_similarity(
                vectors[mode][key], vectors["ours"][key]).min().item()
            report.add_row(mode, workload, rate, rate / base_rate["1 clip" if clips == 1 else "track"],
                           r["clip_gflop"], gflops, gflops / roofline, rss, delta, cosine)
    report.figures = {
        "roofline_gflops_fp32": roofline, "threads": args.threads, "baseline": baseline,
        "clip_gflop": {m: r["clip_gflop"] for m, r in results.items()}, "track_clips": n_clips,
        "load_s": {m: r["load_s"] for m, r in results.items()},
        "rss_loaded_mb": {m: r["rss_loaded_mb"] for m, r in results.items()},
    }
    report.notes.append(f"baseline: {baseline}; full-size random weights, fp32, {args.threads} threads; "
                        f"roofline {roofline:.1f} GFLOP/s")
    report.notes.append("GFLOP/clip: what each mode executes per 10 s clip (FlopCounterMode). Our stem's Winograd "
                        "convolutions execute fewer FLOPs than the official direct ones, and int8 matmuls are not "
                        "counted, so compare speed by clips/s; GFLOP/s says how busy the cores are")
    if baseline != "official-serial":
        report.notes.append("official muq package not importable here: baseline is our own serial path")
    return report
