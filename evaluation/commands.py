"""`muqsearch eval DATASET`: Recall@k / MRR / mAP of text<->music retrieval with CIs and chance levels;
`muqsearch eval --abx | --tagging | --probe SET`: the representation evaluations (evaluation.representation).

The model is --model (or $MUQSEARCH_MODEL), else the bundled demo model; the demo's held-out test split
ships as a pairs file (``data/demo/eval_test.jsonl``), so ``muqsearch eval data/demo/eval_test.jsonl``
measures the demo model out of the box.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", nargs="?",
                        help="retrieval: WikiMT-X style JSONL, or a CSV/JSONL of (audio_path, text[, group]) pairs")
    modes = parser.add_argument_group("representation evaluations (instead of DATASET)")
    modes.add_argument("--abx", metavar="TRIPLETS", help='similarity agreement on JSONL triplets {"x","a","b","closer":"a"|"b","category"}')
    modes.add_argument("--tagging", metavar="SET", help='zero-shot tagging on JSONL {"audio","tags"} or MagnaTagATune\'s annotations_final.csv')
    modes.add_argument("--probe", metavar="SET", help='linear probes on JSONL {"audio","label"} or the world\'s labels.jsonl (see --task)')
    modes.add_argument("--baseline", choices=("mel",), help="embed with the mel-statistics baseline instead of the model")
    modes.add_argument("--layer", type=int, metavar="L", help="embed with hidden state L of the model's MuQ encoder (mean over time)")
    modes.add_argument("--vocabulary", metavar="FILE", help="--tagging: the tags to score, one a line (default: every tag in the set)")
    modes.add_argument("--prompt", action="append", metavar="TEMPLATE",
                       help='--tagging: a prompt template with {tag}, repeatable, scores averaged (default: "{tag} music")')
    modes.add_argument("--task", choices=("family", "program", "kit_kind", "mode", "source"),
                       help="--probe on a world labels.jsonl: which label to probe (default: family)")
    parser.add_argument("--audio-root", metavar="DIR", help="folder that relative audio paths and ids resolve against (default: the dataset's folder)")
    parser.add_argument("--fields", metavar="A,B,...", help="text fields to evaluate (default: all the dataset has, e.g. background,analysis,description,scene)")
    parser.add_argument("--format", choices=("auto", "wikimt", "pairs"), default="auto", help="dataset layout (default: auto-detect)")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("--dump-scores", metavar="DIR", help="write DIRECTION.FIELD.npz (scores, relevant, query_ids, candidate_ids) "
                        "per pair; with --abx/--tagging/--probe, TASK.npz")
    parser.add_argument("--similarity", choices=("cosine", "dot"), default="cosine",
                        help="cosine = renormalised track vectors, as the library index searches (default); "
                        "dot = raw clip-mean dot product, as the official calc_similarity")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the 95%% CIs (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed, and the --probe split's (default 0)")
    parser.add_argument("--cache-dir", metavar="DIR", help="embedding cache (default: $MUQSEARCH_EVAL_CACHE or ~/.cache/muqsearch/eval)")
    parser.add_argument("--no-cache", action="store_true", help="embed everything afresh and store nothing")


def bundled_demo_model() -> str | None:
    """The demo model shipped in data/demo, the default when no --model is given (None if absent)."""
    from data.demo import DEMO_MODEL_DIR

    return str(DEMO_MODEL_DIR) if (DEMO_MODEL_DIR / "config.json").is_file() else None


def run_eval(args: argparse.Namespace) -> int:
    from evaluation.datasets import load_dataset
    from evaluation.protocol import EmbeddingCache, default_cache_dir, evaluate
    from evaluation.report import build_report, format_table
    from muq_model import MuQMuLan, TokenizerMissingError
    from muq_model.runtime import select_device

    modes = [flag for flag in ("abx", "tagging", "probe") if getattr(args, flag, None)]
    if len(modes) + (args.dataset is not None) != 1:
        print("muqsearch eval: give one of DATASET, --abx, --tagging, --probe", file=sys.stderr)
        return 2
    if modes:
        from evaluation.representation import run_representation

        return run_representation(args, args.model or bundled_demo_model())
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    try:
        dataset = load_dataset(args.dataset, audio_root=args.audio_root, fields=fields, format=args.format)
    except (OSError, ValueError) as exc:
        print(f"muqsearch eval: {exc}", file=sys.stderr)
        return 2
    model_name = args.model or bundled_demo_model()
    if model_name is None:
        print("muqsearch eval: name the model to evaluate with --model NAME_OR_PATH (or $MUQSEARCH_MODEL)",
              file=sys.stderr)
        return 2
    model = MuQMuLan.from_pretrained(model_name, device=select_device(args.device), precision=args.precision).eval()
    fingerprint = model.fingerprint()
    cache = None if args.no_cache else EmbeddingCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir(), fingerprint)
    try:
        evaluation = evaluate(
            dataset, model, cache=cache, similarity=args.similarity, n_bootstrap=args.bootstrap, seed=args.seed
        )
    except TokenizerMissingError as exc:
        print(f"muqsearch eval: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"muqsearch eval: {exc}", file=sys.stderr)
        return 1
    report = build_report(
        evaluation, dataset, fingerprint, similarity=args.similarity, n_bootstrap=args.bootstrap, seed=args.seed
    )
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.dump_scores:
        for matrix in evaluation.matrices:
            matrix.save(Path(args.dump_scores))
    print(text if args.json else format_table(report))
    return 0
