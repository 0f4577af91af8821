"""Precision modes on real-sounding audio: cosine to fp32 and retrieval agreement, with the demo model.

Every track of the demo eval set's pool (120 rendered pieces; with --library, every audio file of that
folder too) is embedded in each mode (muq_model.runtime.PRECISIONS that run on --device); per track, the
cosine of its vector to the fp32 vector. On the demo eval set (data/demo/eval_test.jsonl: captions against their tracks), each mode's
text -> music R@10 with its bootstrap 95 % CI, and the top-10 overlap: for each caption, the share of
the fp32 top 10 that the mode also ranks in its top 10 (1.0 = the same result lists).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Report, median, percentile

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"
AUDIO = (".opus", ".ogg", ".wav", ".flac", ".mp3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(DEMO / "model"))
    parser.add_argument("--library", default=None, help="a folder of more audio files for the cosines")
    parser.add_argument("--dataset", default=str(DEMO / "eval_test.jsonl"), help="eval set (retrieval)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", default=None, help="default: every mode the device runs")


def top_k_overlap(scores: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Mean over rows of |top-k(scores) & top-k(reference)| / k."""
    top = np.argsort(-scores, axis=1)[:, :k]
    ref = np.argsort(-reference, axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top, ref, strict=True)]))


def run(args: argparse.Namespace) -> Report:

    from evaluation.datasets import load_dataset
    from evaluation.metrics import evaluate_embeddings
    from indexer.audio import load_audio
    from muq_model import MuQMuLan
    from muq_model.runtime import PRECISIONS, check_precision, select_device

    device = select_device(args.device)
    modes = args.modes or [m for m in PRECISIONS if _runs_on(check_precision, m, device)]
    if "fp32" not in modes:
        modes.insert(0, "fp32")
    files = sorted(p for p in Path(args.library).iterdir() if p.suffix in AUDIO) if args.library else []
    dataset = load_dataset(args.dataset)
    captions = list(dict.fromkeys(p.text for p in dataset.pairs))
    pool = list(dict.fromkeys(p.audio.resolve() for p in dataset.pairs))
    relevant = np.zeros((len(captions), len(pool)), dtype=bool)
    for p in dataset.pairs:
        relevant[captions.index(p.text), pool.index(p.audio.resolve())] = True
    sample_rate = MuQMuLan.from_pretrained(args.model, precision="fp32").sample_rate
    waves = {path.resolve(): load_audio(path, sample_rate=sample_rate) for path in [*files, *pool]}

    track_vectors, text_vectors, seconds = {}, {}, {}
    for mode in modes:
        model = MuQMuLan.from_pretrained(args.model, device=device, precision=mode)
        start = time.perf_counter()
        track_vectors[mode] = {path: model.embed_audio([wave])[0].numpy() for path, wave in waves.items()}
        seconds[mode] = time.perf_counter() - start
        text_vectors[mode] = model.embed_text(captions).numpy()
        del model

    report = Report("precision", ["mode", "tracks", "cosine min", "cosine p1", "cosine median",
                                  "R@10 text->music (95% CI)", "top-10 overlap vs fp32", "embed s"])
    reference_scores = text_vectors["fp32"] @ np.stack([track_vectors["fp32"][p] for p in pool]).T
    figures = {}
    for mode in modes:
        cosines = [float(np.dot(track_vectors[mode][p], track_vectors["fp32"][p])
                         / np.linalg.norm(track_vectors[mode][p]) / np.linalg.norm(track_vectors["fp32"][p]))
                   for p in waves]
        audio = np.stack([track_vectors[mode][p] for p in pool])
        metrics = evaluate_embeddings(text_vectors[mode], audio, relevant)["text_to_music"]["r@10"]
        overlap = top_k_overlap(text_vectors[mode] @ audio.T, reference_scores)
        report.add_row(mode, len(cosines), min(cosines), percentile(cosines, 1), median(cosines),
                       f"{metrics['value']:.3f} ({metrics['ci_low']:.3f}-{metrics['ci_high']:.3f})", overlap,
                       seconds[mode])
        figures[mode] = {"cosine_min": min(cosines), "cosine_median": median(cosines), "r_at_10": metrics,
                         "top10_overlap": overlap, "embed_s": seconds[mode]}
    report.figures = {"modes": figures, "device": str(device), "tracks": len(waves), "captions": len(captions),
                      "pool": len(pool), "model": args.model}
    report.notes.append(f"{len(waves)} tracks (the eval pool, and {args.library}), {len(captions)} captions "
                        f"against a pool of {len(pool)}, model {args.model}, device {device}")
    return report


def _runs_on(check, mode: str, device) -> bool:
    try:
        check(mode, device)
        return True
    except ValueError:
        return False
