"""`muqsearch eval --abx | --tagging | --probe`: the representation evaluations, end to end.

Each mode loads its set (bad rows listed by line and skipped), embeds every audio file once with the
chosen embedder (evaluation.embedders; decoded by the indexer's decoder and cached by fingerprint and
content hash, as the retrieval protocol does), computes its figures and writes a report in the retrieval
report's shape: ``results[task][group][metric] = {value, ci_low, ci_high}``, with ``chance`` and ``sizes``
beside it. ``--dump-scores DIR`` writes TASK.npz, from which every figure can be recomputed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from evaluation.datasets import Excluded, file_sha256
from evaluation.embedders import HiddenStates, MelStatistics, load_embedder, pick_layer
from evaluation.protocol import EmbeddingCache, default_cache_dir, embed_audio_files, embed_texts

TASKS = ("abx", "tagging", "probe")
METRIC_LABELS = {"agreement": "agreement", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "accuracy": "accuracy", "macro_f1": "macro-F1"}


def embed(embedder, paths: list[Path], args: argparse.Namespace) -> tuple[dict[Path, np.ndarray], list[tuple[Path, str]]]:
    cache = None
    if not args.no_cache:
        cache = EmbeddingCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir(), embedder.fingerprint())
    vectors, _, failed = embed_audio_files(embedder, list(dict.fromkeys(paths)), cache=cache)
    return vectors, failed


def describe(embedder, layer: int | None) -> dict:
    kind = "mel-statistics" if isinstance(embedder, MelStatistics) else "hidden-states" if isinstance(embedder, HiddenStates) else "muq-mulan-audio"
    return {"kind": kind, "layer": layer, "fingerprint": embedder.fingerprint()}


def _failed_rows(rows: list[tuple[str, list[Path]]], failed: list[tuple[Path, str]]) -> list[Excluded]:
    """An Excluded per set row that uses a file which could not be decoded."""
    reasons = dict(failed)
    out = []
    for where, files in rows:
        bad = next((f for f in files if f in reasons), None)
        if bad is not None:
            out.append(Excluded(where, str(bad), reasons[bad]))
    return out


# --- the three modes: (results, chance, sizes, excluded, scores, extra) -----------------------------------


def run_abx(args, path: Path, root: Path, embedder):
    from evaluation.abx import evaluate_abx, load_triplets

    triplets, excluded = load_triplets(path, root)
    vectors, failed = embed(embedder, [f for t in triplets for f in (t.x, t.a, t.b)], args)
    excluded += _failed_rows([(t.where, [t.x, t.a, t.b]) for t in triplets], failed)
    triplets = [t for t in triplets if all(f in vectors for f in (t.x, t.a, t.b))]
    if not triplets:
        raise ValueError(f"{path}: no usable triplets; {len(excluded)} rows excluded")
    vectors = {p: pick_layer(v, args.layer) for p, v in vectors.items()}
    results, chance, sizes, scores = evaluate_abx(triplets, vectors, n_bootstrap=args.bootstrap, seed=args.seed)
    return results, chance, sizes, excluded, scores, {}


def run_tagging(args, path: Path, root: Path, embedder, model):
    from evaluation.tagging import (
        DEFAULT_PROMPTS,
        evaluate_tagging,
        load_tag_set,
        prompts_for,
        read_vocabulary,
        tag_scores,
        truth_matrix,
    )

    if model is None or args.layer is not None:
        raise ValueError("zero-shot tagging needs a text tower: use a MuQ-MuLan model's audio vector (no --baseline, no --layer)")
    tag_set = load_tag_set(path, root)
    vocabulary = read_vocabulary(Path(args.vocabulary)) if args.vocabulary else tag_set.vocabulary()
    templates = tuple(args.prompt) if args.prompt else DEFAULT_PROMPTS
    prompts = prompts_for(vocabulary, templates)
    vectors, failed = embed(embedder, tag_set.audio, args)
    excluded = tag_set.excluded + _failed_rows([(w, [p]) for w, p in zip(tag_set.rows, tag_set.audio, strict=True)], failed)
    keep = [i for i, p in enumerate(tag_set.audio) if p in vectors]
    if not keep or not vocabulary:
        raise ValueError(f"{path}: no usable clips or no tags; {len(excluded)} rows excluded")
    cache = None if args.no_cache else EmbeddingCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir(), model.fingerprint())
    text = embed_texts(model, [p for tag in prompts for p in tag], cache=cache)
    scores = tag_scores(np.stack([vectors[tag_set.audio[i]] for i in keep]), [np.stack([text[p] for p in tag]) for tag in prompts])
    truth = truth_matrix([tag_set.tags[i] for i in keep], vocabulary)
    results, per_tag, chance, sizes = evaluate_tagging(scores, truth, vocabulary, n_bootstrap=args.bootstrap, seed=args.seed)
    dump = {"scores": scores.astype(np.float32), "truth": truth, "tags": np.array(vocabulary),
            "audio": np.array([str(tag_set.audio[i]) for i in keep])}
    return results, chance, sizes, excluded, dump, {"per_tag": per_tag, "prompts": list(templates)}


def run_probe(args, path: Path, root: Path, embedder):
    from evaluation.probe import evaluate_probe, load_probe_set

    probe_set = load_probe_set(path, root, args.task)
    vectors, failed = embed(embedder, probe_set.audio, args)
    excluded = probe_set.excluded + _failed_rows([(w, [p]) for w, p in zip(probe_set.rows, probe_set.audio, strict=True)], failed)
    keep = [i for i, p in enumerate(probe_set.audio) if p in vectors]
    stacked = np.stack([vectors[probe_set.audio[i]] for i in keep])
    if isinstance(embedder, HiddenStates):
        layers = [args.layer] if args.layer is not None else range(stacked.shape[1])
        features = {f"layer {layer}": np.stack([pick_layer(v, layer) for v in stacked]) for layer in layers}
    else:
        features = {"mel-statistics" if isinstance(embedder, MelStatistics) else "embedding": stacked}
    labels = [probe_set.labels[i] for i in keep]
    results, chance, sizes, scores, rare = evaluate_probe(features, labels, seed=args.seed, n_bootstrap=args.bootstrap)
    excluded += [Excluded(f"label {label!r}", "", "fewer than two examples: cannot be split") for label in rare]
    scores["audio"] = np.array([str(probe_set.audio[i]) for i in keep])
    return results, chance, sizes, excluded, scores, {"task_labels": args.task or "label"}


# --- report -----------------------------------------------------------------------------------------------


def build_report(task: str, path: Path, embedding: dict, outcome, args) -> dict:
    results, chance, sizes, excluded, _, extra = outcome
    return {
        "task": task,
        "dataset": str(path),
        "dataset_hash": file_sha256(path),
        "embedding": embedding,
        "protocol": {
            "similarity": "cosine",
            "bootstrap": {"samples": args.bootstrap, "seed": args.seed, "confidence": 0.95, "method": "percentile"},
        },
        "results": {task: results},
        "chance": {task: chance},
        "sizes": {task: sizes},
        **extra,
        "excluded": [{"item": e.item, "audio": e.audio, "reason": e.reason} for e in excluded],
    }


def _cell(entry: dict) -> str:
    if entry["value"] is None:
        return "-"
    text = f"{entry['value']:.3f}"
    return text if entry["ci_low"] is None else f"{text} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def format_table(report: dict) -> str:
    task = report["task"]
    e = report["embedding"]
    layer = f", layer {e['layer']}" if e["layer"] is not None else ""
    lines = [
        f"{task} on {report['dataset']}  (sha256 {report['dataset_hash'][:12]})",
        f"embedding {e['kind']}{layer}: {e['fingerprint'].get('model_id')}",
        f"95% CIs from {report['protocol']['bootstrap']['samples']} bootstrap resamples (seed {report['protocol']['bootstrap']['seed']})",
        "",
    ]
    rows = [["group", "metric", "value [95% CI]", "chance", "size"]]
    for group, metrics in report["results"][task].items():
        size = ", ".join(f"{k} {v}" for k, v in report["sizes"][task][group].items())
        for metric, entry in metrics.items():
            chance = report["chance"][task][group][metric]
            rows.append([group, METRIC_LABELS.get(metric, metric), _cell(entry), "-" if chance is None else f"{chance:.3f}", size])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows[:1]]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows[1:]]
    if report["excluded"]:
        lines += ["", f"excluded {len(report['excluded'])} row(s):"]
        lines += [f"  {x['item']}: {x['reason']}" + (f" ({x['audio']})" if x["audio"] else "") for x in report["excluded"]]
    return "\n".join(lines)


def run_representation(args: argparse.Namespace, model_name: str | None) -> int:
    modes = [(task, getattr(args, task)) for task in TASKS if getattr(args, task)]
    task, value = modes[0]
    path = Path(value)
    if not path.is_file():
        print(f"muqsearch eval: {task} set not found: {path}", file=sys.stderr)
        return 2
    root = Path(args.audio_root) if args.audio_root else path.parent
    hidden = args.layer is not None or (task == "probe" and args.baseline is None)
    try:
        embedder, model = load_embedder(model_name, baseline=args.baseline, hidden_states=hidden, device=args.device,
                                        precision=args.precision)
        if task == "abx":
            outcome = run_abx(args, path, root, embedder)
        elif task == "tagging":
            outcome = run_tagging(args, path, root, embedder, model)
        else:
            outcome = run_probe(args, path, root, embedder)
            if model is not None and args.layer is None:  # the audio vector too, beside every layer
                vector = run_probe(args, path, root, model)
                for part in (0, 1, 2, 4):  # results, chance, sizes, scores
                    outcome[part].update(vector[part])
    except (OSError, ValueError) as exc:
        print(f"muqsearch eval: {exc}", file=sys.stderr)
        return 2
    report = build_report(task, path, describe(embedder, args.layer), outcome, args)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.dump_scores:
        Path(args.dump_scores).mkdir(parents=True, exist_ok=True)
        np.savez(Path(args.dump_scores) / f"{task}.npz", **outcome[4])
    print(text if args.json else format_table(report))
    return 0
