"""Audio embedding: ours against the official muq package, paired in one process, with a per-part breakdown.

Both sides load the same random full-size MuQ-MuLan-large checkpoint (written once by a subprocess), run
in this process on the same torch build with the same threads, and embed the same waveforms: a 10 s clip,
a 30 s track and a 3-min track (--workloads). Each pair times one call of each side, alternating the
order (A B, then B A: ABBA), so that drift on a shared machine hits both sides alike, after one untimed
warm-up call of each side on the same workload; the ratio
official / ours is taken per pair and reported as the median with its quartiles and min-max over the
pairs. Forward hooks split each call into mel, stem, Conformer and heads (everything else: clip
splitting, the MuLan transformer, projections). The official package is only importable in the oracle
venv: run `PYTHONPATH=$PWD /work/oracle-venv/bin/python -m benchmarks embed`; elsewhere the baseline is
our own fp32 model, which is how --precision modes are compared with fp32 in the project venv.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Report, median, percentile

REPO = Path(__file__).resolve().parent.parent
SR = 24000
PARTS = ("mel", "stem", "conformer", "heads")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=5, help="ABBA-alternated pairs of calls per workload")
    parser.add_argument("--workloads", type=float, nargs="+", default=[10.0, 30.0, 180.0],
                        help="track lengths in seconds")
    parser.add_argument("--precision", default="fp32", help="our side's precision mode (muq_model.runtime.PRECISIONS)")


class PartTimer:
    """Accumulates wall time spent inside given methods, each wrapped in place on its object."""

    def __init__(self, parts: dict):
        self.seconds = dict.fromkeys(parts, 0.0)
        for name, (owner, attribute) in parts.items():
            setattr(owner, attribute, self._timed(name, getattr(owner, attribute)))

    def _timed(self, name, method):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
        return timed

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


class Side:
    """One embedder with its part timers: `call(wave)` -> ((1, dim) vector, total s, {part: s}).
    mel: the named method of the MuQ module (ours `features`, official `preprocessing`)."""

    def __init__(self, name: str, embed, muq_module, mel_method: str):
        self.name, self.embed = name, embed
        self.timer = PartTimer({"mel": (muq_module, mel_method), "stem": (muq_module.conv, "forward"),
                                "conformer": (muq_module.conformer, "forward")})

    def call(self, wave):
        self.timer.reset()
        start = time.perf_counter()
        vector = self.embed(wave)
        total = time.perf_counter() - start
        parts = dict(self.timer.seconds)
        parts["heads"] = total - sum(parts.values())
        return vector, total, parts


def official_side(checkpoint: Path) -> Side:
    """The official MuQMuLan built offline (as in tests/fixtures/make_official_golden.py) with our weights;
    its text tower is dropped before loading (memory), the audio keys load strictly."""
    import torch
    from safetensors.torch import load_file

    from muq_model.checkpoint import IGNORED_KEYS

    fixtures = REPO / "tests" / "fixtures"
    sys.path.insert(0, str(fixtures))  # the oracle script imports its neighbour official_common
    spec = importlib.util.spec_from_file_location("golden", fixtures / "make_official_golden.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    model = golden.build_official(golden.LARGE_MUQ_CONFIG, golden.LARGE_W2V2_OVERRIDES, golden.LARGE_XLMR_CONFIG,
                                  golden.LARGE_MULAN_CONFIG, perturb_all=False)
    mulan = model.mulan_module
    mulan.text = torch.nn.Identity()
    state = {k: v for k, v in load_file(str(checkpoint / "model.safetensors")).items()
             if not k.startswith(("mulan.text.", "mulan.text_to_latents."))}
    result = model.load_state_dict(state, strict=False)
    text_keys = ("mulan.text.", "mulan.text_to_latents.")
    used_missing = [k for k in result.missing_keys
                    if not k.startswith(text_keys) and not any(p.fullmatch(k) for p in IGNORED_KEYS)]
    if used_missing or result.unexpected_keys:
        raise RuntimeError(f"official model: missing {used_missing}, unexpected {result.unexpected_keys}")
    model.eval()
    muq = next(m for m in model.modules() if hasattr(m, "conformer") and hasattr(m, "preprocessor_melspec_2048"))

    def embed(wave):
        with torch.inference_mode():
            return model(wavs=[wave])

    return Side("official", embed, muq, "preprocessing")


def our_side(checkpoint: Path, precision: str) -> Side:
    import torch

    from muq_model import MuQMuLan

    model = MuQMuLan.from_pretrained(checkpoint, tokenizer=None, precision=precision)
    model.text = torch.nn.Identity()  # memory: only audio is measured
    muq = model.audio.model
    return Side(f"ours {precision}", lambda wave: model.embed_audio([wave]), muq, "features")


def _write_random_checkpoint(directory: Path) -> None:
    """In a subprocess, so that the 2.6 GB of the random model is returned to the system afterwards."""
    code = ("import torch; from muq_model import MuQMuLan, MuQMuLanConfig; torch.manual_seed(0); "
            f"MuQMuLan(MuQMuLanConfig.large(), tokenizer=None).eval().save_pretrained({str(directory)!r})")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=env)


def _official_available() -> bool:
    return importlib.util.find_spec("muq") is not None


def spread(values: list[float]) -> str:
    return (f"{percentile(values, 25):.3g}-{percentile(values, 75):.3g} "
            f"(min-max {min(values):.3g}-{max(values):.3g})")


def run(args: argparse.Namespace) -> Report:
    import torch

    args.threads = args.threads or 2
    torch.set_num_threads(args.threads)
    if args.pairs < 1:
        raise SystemExit("--pairs must be at least 1")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="muq-embed-bench-") as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        _write_random_checkpoint(checkpoint)
        baseline = official_side(checkpoint) if _official_available() else our_side(checkpoint, "fp32")
        ours = our_side(checkpoint, args.precision)
    generator = torch.Generator().manual_seed(0)
    waves = {seconds: 0.1 * torch.randn(int(seconds * SR), generator=generator) for seconds in args.workloads}
    report = Report("embed", ["workload", "part", f"{baseline.name} s", f"{ours.name} s", "ratio (median)",
                              "ratio IQR (min-max)"])
    figures = {"pairs": args.pairs, "threads": args.threads, "baseline": baseline.name, "ours": ours.name,
               "torch": torch.__version__, "torch_file": torch.__file__, "workloads": {}}
    for seconds, wave in waves.items():
        for side in (baseline, ours):  # warm-up on this workload: first-call allocations and oneDNN
            side.call(wave)  # primitives for its batch shapes, folded stem weights (a cold first 3-min call
            # of ours took 95 s against 64 s warm, which skewed the first pair)
        times = {side.name: [] for side in (baseline, ours)}
        vectors = {}
        for i in range(args.pairs):
            order = (baseline, ours) if i % 2 == 0 else (ours, baseline)  # ABBA
            for side in order:
                vector, total, parts = side.call(wave)
                vectors[side.name] = vector
                times[side.name].append({"total": total, **parts})
            print(f"{seconds:g} s pair {i + 1}/{args.pairs}: " + ", ".join(
                f"{name} {t[-1]['total']:.2f} s" for name, t in times.items()), file=sys.stderr, flush=True)
        a, b = vectors[baseline.name].float(), vectors[ours.name].float()
        delta = (a - b).abs().max().item()
        cosine = torch.nn.functional.cosine_similarity(a, b).min().item()
        label = f"{seconds:g} s"
        figures["workloads"][label] = {"max_abs_delta": delta, "cosine": cosine, "times": times}
        for part in ("total", *PARTS):
            base_s = [t[part] for t in times[baseline.name]]
            our_s = [t[part] for t in times[ours.name]]
            ratios = [x / y for x, y in zip(base_s, our_s, strict=True) if y > 0]
            report.add_row(label, part, median(base_s), median(our_s), median(ratios) if ratios else float("nan"),
                           spread(ratios) if ratios else "")
        report.notes.append(f"{label}: max |d| {delta:.2g}, cosine {cosine:.6f} ({ours.name} vs {baseline.name})")
    load_after = os.getloadavg()
    figures["loadavg_before"], figures["loadavg_after"] = load_before, load_after
    report.figures = figures
    report.notes.append(f"{args.pairs} ABBA pairs per workload, {args.threads} threads, torch {torch.__version__}; "
                        f"ratio = {baseline.name} s / {ours.name} s per pair; load average (1/5/15 min) "
                        f"before {'/'.join(f'{v:.2f}' for v in load_before)}, "
                        f"after {'/'.join(f'{v:.2f}' for v in load_after)}")
    if baseline.name != "official":
        report.notes.append("official muq package not importable here: the baseline is our fp32 model "
                            "(run in the oracle venv to measure against the official package)")
    return report
