"""Training-only paraphrase captions for the demo library's train clips (`captions.paraphrase`).

    python -m data.demo.augment --out AUG/captions.jsonl [--per-clip 24] [--seed 1]

writes one record per train clip: its file (relative to the output's folder), its other fields (split,
attributes, seed, ...) and its captions followed by `--per-clip` free-worded ones, so that `muqsearch train
AUG/captions.jsonl` trains on both (one item per clip; two files naming one clip would make two items,
each the other's false negative). Test clips are never captioned here, so the held-out split keeps its
unseen templates and clips.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from data.demo import DEMO_CAPTIONS, load_records
from data.demo.captions import paraphrase


def varied_attributes(records: list[dict]) -> dict[int, tuple[str, ...]]:
    """Per render seed shared by several records (a variant set, `generate --variants`), the attributes
    that differ inside the set: every paraphrase of its clips names them, else the set's other clips
    would be false negatives for that caption."""
    sets: dict[int, list[dict]] = {}
    for record in records:
        if "seed" in record:
            sets.setdefault(record["seed"], []).append(record["attributes"])
    return {seed: tuple(name for name in members[0] if len({m[name] for m in members}) > 1)
            for seed, members in sets.items() if len(members) > 1}


def augment(records: list[dict], per_clip: int, seed: int) -> list[dict]:
    """Every train record with its captions plus `per_clip` distinct new paraphrases (fewer only if the
    draws keep repeating)."""
    rng = np.random.default_rng(seed)
    varied = varied_attributes(records)
    out = []
    for record in records:
        if record["split"] != "train":
            continue
        captions: list[str] = list(record["captions"])
        must = varied.get(record.get("seed"), ())
        for _ in range(per_clip * 4):
            text = paraphrase(record["attributes"], rng, must=must)
            if text not in captions:
                captions.append(text)
            if len(captions) == len(record["captions"]) + per_clip:
                break
        kept = {k: v for k, v in record.items() if k not in ("file", "captions", "template_ids")}
        out.append({**kept, "captions": captions})  # seed stays, for `--group-by seed` on variant sets
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSONL to write")
    parser.add_argument("--captions", type=Path, default=DEMO_CAPTIONS, help="the library (default: %(default)s)")
    parser.add_argument("--per-clip", type=int, default=24, help="paraphrases per train clip (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rows = augment(load_records(path=args.captions), args.per_clip, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            path = row.pop("path")
            f.write(json.dumps({"file": os.path.relpath(path, args.out.parent), **row}, ensure_ascii=False) + "\n")
    print(f"wrote {sum(len(r['captions']) for r in rows)} captions for {len(rows)} train clips to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
