"""The evaluation report: a JSON document (the record) and a terminal table (for reading)."""

from __future__ import annotations

from evaluation.datasets import EvalSet
from evaluation.metrics import DIRECTIONS, METRICS, RECALL_KS
from evaluation.protocol import Evaluation

TIES = "pessimistic: a relevant candidate ranks below every candidate with an equal score"
RECALL = (
    "r@k = fraction of queries with at least one relevant candidate in the top k; mrr, mean_rank and "
    "median_rank use the rank of the first relevant candidate (1 = best); map@10 divides by "
    "min(relevant, 10)"
)
LABELS = {**{f"r@{k}": f"R@{k}" for k in RECALL_KS}, "mrr": "MRR", "mean_rank": "mean rank",
          "median_rank": "median rank", "map@10": "mAP@10"}
DIRECTION_TITLES = {"text_to_music": "text -> music", "music_to_text": "music -> text"}


def build_report(
    evaluation: Evaluation, dataset: EvalSet, fingerprint: dict, *, similarity: str, n_bootstrap: int, seed: int
) -> dict:
    """The JSON report: ``results[direction][field][metric] = {value, ci_low, ci_high}`` and its context."""
    return {
        "dataset": str(dataset.path),
        "dataset_format": dataset.format,
        "dataset_hash": evaluation.dataset_hash,
        "model_fingerprint": fingerprint,
        "pool_size": evaluation.pool_size,
        "fields": list(dataset.fields),
        "protocol": {
            "ties": TIES,
            "metrics": RECALL,
            "similarity": similarity,
            "bootstrap": {"samples": n_bootstrap, "seed": seed, "confidence": 0.95, "method": "percentile"},
        },
        "results": evaluation.results,
        "chance": evaluation.chance,
        "sizes": evaluation.sizes,
        "excluded": [{"item": e.item, "audio": e.audio, "reason": e.reason} for e in evaluation.excluded],
    }


def _number(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if metric.endswith("rank") else f"{value:.3f}"


def _cell(metric: str, entry: dict) -> str:
    value = _number(metric, entry["value"])
    if entry["ci_low"] is None:
        return value
    return f"{value} [{_number(metric, entry['ci_low'])}, {_number(metric, entry['ci_high'])}]"


def format_table(report: dict) -> str:
    """One block per direction: metrics down; per field a column 'value [95% CI]' and its chance level."""
    lines = [
        f"dataset {report['dataset']}  ({report['pool_size']} audio items, sha256 {report['dataset_hash'][:12]})",
        f"model   {report['model_fingerprint'].get('model_id')}  "
        f"(weights {str(report['model_fingerprint'].get('weights_hash'))[:12]})",
        f"ties broken pessimistically; {report['protocol']['similarity']} similarity; 95% CIs from "
        f"{report['protocol']['bootstrap']['samples']} bootstrap resamples of the queries "
        f"(seed {report['protocol']['bootstrap']['seed']})",
    ]
    for direction in DIRECTIONS:
        fields = list(report["results"][direction])
        if not fields:
            continue
        sizes = report["sizes"][direction]
        lines += ["", f"{DIRECTION_TITLES[direction]}   (queries x candidates: "
                  + ", ".join(f"{f} {sizes[f]['queries']}x{sizes[f]['candidates']}" for f in fields) + ")"]
        header = ["metric"] + [name for f in fields for name in (f, "chance")]
        rows = [
            [LABELS[metric]]
            + [
                cell
                for f in fields
                for cell in (
                    _cell(metric, report["results"][direction][f][metric]),
                    _number(metric, report["chance"][direction][f][metric]),
                )
            ]
            for metric in METRICS
        ]
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if report["excluded"]:
        lines += ["", f"excluded {len(report['excluded'])} item(s):"]
        lines += [f"  {e['item']}: {e['reason']}" + (f" ({e['audio']})" if e["audio"] else "")
                  for e in report["excluded"]]
    lines.append("")
    lines.append(f"R@k = hit rate in the top k (k in {', '.join(map(str, RECALL_KS))}); ranks are 1-based.")
    return "\n".join(lines)
