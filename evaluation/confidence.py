"""How well the search's verdict tells "the library has this" from "it does not" (indexer.calibration).

    python -m evaluation.confidence [--queries evaluation/sets/confidence_queries.jsonl] [--out report.json]

On the demo world (the demo model and its prebuilt library, whose stored track vectors are what the
service searches): every query of the set (JSONL ``{"query", "in_world"}``: 50 naming what the demo world
contains, 50 naming what it does not; written apart from the calibration's null bank) is ranked against
all tracks exactly, as the service ranks them, and its verdict score is the best calibrated confidence
of its top ``k`` results. Reported: the AUROC of that score for in-world against out-of-world queries,
with a seeded bootstrap 95 % CI over queries, and how the verdicts fall on each side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

QUERIES = Path(__file__).resolve().parent / "sets" / "confidence_queries.jsonl"


def read_queries(path: Path) -> list[tuple[str, bool]]:
    """(query, in_world) pairs; a malformed line is an error naming the file and line."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((str(row["query"]), bool(row["in_world"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: expected {{\"query\": TEXT, \"in_world\": true|false}} ({exc})") from exc
    return out


def evaluate(model, catalog, queries: list[tuple[str, bool]], *, k: int = 10, n_bootstrap: int = 1000) -> dict:
    """The report for ``queries`` on the tracks of ``catalog`` (its stored vectors) with ``model``."""
    from sqlalchemy import select

    from evaluation.metrics import bootstrap_interval, roc_auc
    from indexer.calibration import Calibration, embed_texts, null_bank, verdict
    from indexer.catalog import Track, from_blob

    with catalog.session() as s:
        blobs = s.execute(select(Track.embedding).order_by(Track.id)).scalars().all()
    vectors = np.stack([from_blob(b) for b in blobs]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    calibration = Calibration.build(null_bank(model, catalog))
    shared, sentences = embed_texts(model, [q for q, _ in queries])
    best, verdicts = [], []
    for vector, sentence in zip(shared, sentences, strict=True):
        scores = vectors @ vector
        top = np.argsort(-scores, kind="stable")[:k]
        confidence = float(calibration.confidences(calibration.known(sentence), vectors[top], scores[top]).max())
        best.append(confidence)
        verdicts.append(verdict(confidence))
    truth = np.array([inside for _, inside in queries], bool)
    best_arr = np.array(best)
    auroc = bootstrap_interval(lambda i: roc_auc(truth[i], best_arr[i]) if 0 < truth[i].sum() < len(i) else np.nan,
                               len(queries), n_bootstrap=n_bootstrap)
    split = {side: {v: sum(1 for (_, inside), got in zip(queries, verdicts, strict=True)
                          if inside == want and got == v) for v in ("strong", "weak", "none")}
             for side, want in (("in_world", True), ("out_of_world", False))}
    return {"queries": len(queries), "k": k, "auroc": auroc, "verdicts": split,
            "per_query": [{"query": q, "in_world": inside, "confidence": round(c, 4), "verdict": v}
                          for (q, inside), c, v in zip(queries, best, verdicts, strict=True)]}


def main(argv: list[str] | None = None) -> int:
    import data.demo
    from data.demo.build_library import prebuilt_catalog_copy
    from muq_model import MuQMuLan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, default=QUERIES, help="the query set (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    queries = read_queries(args.queries)
    model = MuQMuLan.from_pretrained(data.demo.DEMO_MODEL_DIR).eval()
    with prebuilt_catalog_copy() as catalog:
        report = evaluate(model, catalog, queries)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    a = report["auroc"]
    print(f"verdict AUROC {a['value']:.3f} [95% CI {a['ci_low']:.3f}, {a['ci_high']:.3f}] over {len(queries)} queries")
    for side, counts in report["verdicts"].items():
        print(f"  {side}: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
