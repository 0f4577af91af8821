"""MuQ pretraining: training steps/s and peak memory of a small config, and the full-size architecture's
forward+backward against the official package's MuQModel forward, paired in one run.

Part 1 trains the chosen preset (default `small`, the CPU reproduction size) for --steps masked-prediction
steps with its own Mel-RVQ targets through `muq_model.pretraining.pretrain` (the loop `muqsearch pretrain
ssl` runs) on synthetic audio, and reports steps/s after the first (warm-up) step and the peak memory
(process RSS on CPU, torch's peak allocation on CUDA).

Part 2 builds the full-size MuQ (MuQ-large-msd-iter's architecture, random weights) and times one
training step's forward+backward on a batch of --batch clips of --seconds against a forward without
gradients of the official `muq.MuQ` holding the same weights (ABBA-alternated pairs, so drift hits both).
The official package is only importable in the oracle venv (`PYTHONPATH=$PWD /work/oracle-venv/bin/python
-m benchmarks pretrain`); elsewhere the baseline is our own inference forward, which still shows what a
training step costs over embedding.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time

from benchmarks.harness import Report, median, peak_rss_mb, percentile

SR = 24000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="small", choices=["tiny", "small"], help="preset trained in part 1")
    parser.add_argument("--steps", type=int, default=12, help="training steps in part 1 (the first is warm-up)")
    parser.add_argument("--train-batch", type=int, default=8, help="global batch of part 1")
    parser.add_argument("--crop", type=float, default=4.0, help="crop seconds of part 1")
    parser.add_argument("--batch", type=int, default=1, help="clips per full-size step in part 2")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length of part 2")
    parser.add_argument("--pairs", type=int, default=3, help="ABBA pairs in part 2 (0 skips part 2)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def synthetic_audio(n_tracks: int, seconds: float, seed: int = 0):
    """Tones with vibrato over noise: enough structure for the Mel-RVQ to give varied codes."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    waves = []
    for _ in range(n_tracks):
        f0 = 110 * 2 ** (4 * torch.rand(1, generator=generator))
        tone = torch.sin(2 * torch.pi * f0 * t + 3 * torch.sin(2 * torch.pi * 5 * t))
        waves.append(0.3 * tone + 0.05 * torch.randn(t.numel(), generator=generator))
    return waves


def train_small(args: argparse.Namespace, device) -> dict:
    """Part 1: steps/s of the pretraining loop (first step excluded) and peak memory."""
    import torch

    from muq_model.encoder import MuQ
    from muq_model.pretraining import MaskedPrediction, PretrainConfig, preset, pretrain

    config, ssl = preset(args.size)
    config.use_rvq_target = True
    torch.manual_seed(0)
    muq = MuQ(config, ssl)
    task = MaskedPrediction(muq)
    waves = synthetic_audio(8, 30.0)
    step_ends: list[float] = []
    real_step = task.forward

    def timed_forward(*a, **k):  # the loop calls the task once per step: mark each step's start
        step_ends.append(time.perf_counter())
        return real_step(*a, **k)

    task.forward = timed_forward
    train = PretrainConfig(steps=args.steps, batch_size=args.train_batch, crop_seconds=args.crop, warmup_steps=1,
                           log_every=args.steps, checkpoint_every=10**9)
    with tempfile.TemporaryDirectory(prefix="muq-pretrain-bench-") as out:
        started = time.perf_counter()
        pretrain(task, waves, out, train, save=lambda _: None, sample_rate=muq.sample_rate,
                 samples_per_token=muq.samples_per_token, resume=False, device=device)
        total = time.perf_counter() - started
    steady = (step_ends[-1] - step_ends[1]) / (len(step_ends) - 2) if len(step_ends) > 2 else total / args.steps
    params = sum(p.numel() for p in task.parameters() if p.requires_grad)
    return {"size": args.size, "parameters_m": params / 1e6, "steps": args.steps, "batch": args.train_batch,
            "crop_s": args.crop, "steps_per_s": 1 / steady, "seconds": total,
            "peak_memory_mb": peak_memory_mb(device)}


def full_size_sides(device):
    """(baseline name, baseline call, our training-step call) on the full-size architecture, same weights."""
    import torch

    from muq_model.config import MuQConfig
    from muq_model.encoder import MuQ, SSLConfig
    from muq_model.pretraining import MaskedPrediction

    torch.manual_seed(0)
    config = MuQConfig.large()
    ours = MuQ(config, SSLConfig()).to(device)
    task = MaskedPrediction(ours).train()

    def training_step(batch):
        inputs = task.draw(batch.cpu(), torch.Generator().manual_seed(1))
        loss, _ = task(**{k: v.to(device) for k, v in inputs.items()})
        loss.backward()
        task.zero_grad(set_to_none=True)

    if importlib.util.find_spec("muq") is not None:
        from muq import MuQ as OfficialMuQ
        from safetensors.torch import load_file

        from muq_model.checkpoint import MUQ_IGNORED_KEYS

        official = OfficialMuQ(json.loads(ours.config_json()))
        with tempfile.TemporaryDirectory(prefix="muq-pretrain-bench-") as directory:
            ours.save_pretrained(directory)  # the official key layout
            result = official.load_state_dict(load_file(f"{directory}/model.safetensors"), strict=False)
        used_missing = [k for k in result.missing_keys if not any(p.fullmatch(k) for p in MUQ_IGNORED_KEYS)]
        if result.unexpected_keys or used_missing:
            raise RuntimeError(f"official MuQ: missing {used_missing}, unexpected {result.unexpected_keys}")
        official = official.to(device).eval()

        def official_forward(batch):
            with torch.no_grad():
                official(batch)
        return "official forward", official_forward, training_step

    inference = MuQ(config, SSLConfig()).to(device).eval()
    inference.load_state_dict(ours.state_dict())

    def our_forward(batch):
        with torch.no_grad():
            inference(batch, output_hidden_states=False)
    return "our forward", our_forward, training_step


def run(args: argparse.Namespace) -> Report:
    import torch

    if args.steps < 3:
        raise SystemExit("--steps must be at least 3 (the first is warm-up)")
    device = torch.device(args.device)
    report = Report("pretrain", ["what", "value", "detail"])
    small = train_small(args, device)
    report.add_row(f"{small['size']} steps/s", small["steps_per_s"],
                   f"{small['parameters_m']:.2f} M trainable, batch {small['batch']} x {small['crop_s']:g} s, "
                   f"{small['steps']} steps in {small['seconds']:.1f} s")
    report.add_row(f"{small['size']} peak memory MiB", small["peak_memory_mb"],
                   "torch peak allocation" if device.type == "cuda" else "process peak RSS")
    figures = {"small": small, "device": str(device), "threads": torch.get_num_threads()}
    if args.pairs > 0:
        baseline_name, baseline, step = full_size_sides(device)
        batch = 0.1 * torch.randn(args.batch, int(args.seconds * SR), generator=torch.Generator().manual_seed(0))
        batch = batch.to(device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        times = {baseline_name: [], "ours forward+backward": []}
        calls = {baseline_name: baseline, "ours forward+backward": step}
        for fn in calls.values():  # warm-up
            fn(batch)
        for i in range(args.pairs):
            order = list(calls) if i % 2 == 0 else list(reversed(calls))
            for name in order:
                sync()
                start = time.perf_counter()
                calls[name](batch)
                sync()
                times[name].append(time.perf_counter() - start)
            print(f"pair {i + 1}/{args.pairs}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()),
                  file=sys.stderr, flush=True)
        ratios = [a / b for a, b in zip(times["ours forward+backward"], times[baseline_name], strict=True)]
        for name, values in times.items():
            report.add_row(f"full size {name} s", median(values), f"batch {args.batch} x {args.seconds:g} s")
        report.add_row("ratio fwd+bwd / baseline", median(ratios),
                       f"IQR {percentile(ratios, 25):.3g}-{percentile(ratios, 75):.3g} over {args.pairs} pairs")
        figures["full_size"] = {"baseline": baseline_name, "times": times, "ratios": ratios}
        if baseline_name != "official forward":
            report.notes.append("official muq package not importable here: the baseline is our own inference "
                                "forward (run in the oracle venv to compare with the official MuQModel)")
    report.notes.append(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    report.figures = figures
    return report
