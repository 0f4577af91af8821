"""Are the demo world's auto-tags true? Zero-shot tagging figures on its held-out test split.

    python -m evaluation.demo_tags [--split test] [--out report.json]

The demo model tags with the demo world's own vocabulary (``data/demo/vocabulary.json``, chosen by
``indexer.autotag.vocabulary_for``). Each clip's truth is its generated attributes (``captions.jsonl``).
Reported, from the prebuilt library's stored track vectors and the model's embedded vocabulary: the
macro ROC-AUC of the tag scores (``evaluation.tagging``), and the precision of the tags the indexer
stores and the UI shows (``AutoTagger.tags_for``: best of its category and above the track's null bar),
both with bootstrap 95 % CIs over clips.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# attribute value -> the demo vocabulary's tag (values not listed are the tag itself; None: no tag)
TAG_OF = {"instrument": {"pad": "synth pad"}, "tempo": {"medium": "mid-tempo"},
          "rhythm": {"none": "no drums", "four_on_the_floor": "four-on-the-floor"},
          "register": {"low": "low register", "middle": "middle register", "high": "high register"},
          "texture": {"arpeggio": "arpeggios"}, "bass": {"none": None}}


def clip_tags(attributes: dict[str, str]) -> set[str]:
    """The demo vocabulary's tags that are true of a clip with these attributes."""
    tags = {TAG_OF.get(a, {}).get(v, v) for a, v in attributes.items()}
    return {t for t in tags if t}


def evaluate(model, catalog, records: list[dict], *, n_bootstrap: int = 1000) -> dict:
    from sqlalchemy import select

    from evaluation.tagging import evaluate_tagging, shown_precision
    from indexer.autotag import AutoTagger
    from indexer.catalog import Track, from_blob

    tagger = AutoTagger.for_model(model, catalog)
    names = [t.tag for t in tagger.vocabulary.tags]
    unknown = {t for r in records for t in clip_tags(r["attributes"])} - set(names)
    if unknown:
        raise ValueError(f"attribute tags missing from the vocabulary: {sorted(unknown)}")
    with catalog.session() as s:
        by_name = {Path(p).name: from_blob(b) for p, b in s.execute(select(Track.path, Track.embedding))}
    vectors = np.stack([by_name[Path(r["file"]).name] for r in records]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = np.array([[n in clip_tags(r["attributes"]) for n in names] for r in records], bool)
    scores = vectors @ tagger.text_vectors.T
    shown = np.zeros_like(truth)
    for row, vector in enumerate(vectors):
        for tag in tagger.tags_for(vector):
            shown[row, names.index(tag.tag)] = True
    results, per_tag, chance, sizes = evaluate_tagging(scores, truth, names, n_bootstrap=n_bootstrap)
    return {"clips": len(records), "roc_auc": results["macro"]["roc_auc"], "chance": chance["macro"],
            "shown": shown_precision(shown, truth, n_bootstrap=n_bootstrap), "per_tag": per_tag}


def main(argv: list[str] | None = None) -> int:
    import data.demo
    from data.demo.build_library import prebuilt_catalog_copy
    from muq_model import MuQMuLan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    model = MuQMuLan.from_pretrained(data.demo.DEMO_MODEL_DIR).eval()
    with prebuilt_catalog_copy() as catalog:
        report = evaluate(model, catalog, data.demo.load_records(args.split))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    auc, p = report["roc_auc"], report["shown"]["precision"]
    print(f"{args.split} split, {report['clips']} clips: tag ROC-AUC {auc['value']:.3f} [{auc['ci_low']:.3f}, "
          f"{auc['ci_high']:.3f}]; shown tags precision {p['value']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}], "
          f"{report['shown']['shown_per_clip']:.2f} per clip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
