"""Evaluation sets derived from the world's labels: ABX triplets, a tagging set and probe sets.

Paths in every set are relative to the world's folder (``muqsearch eval --audio-root WORLD``).

- ``abx_xab.jsonl`` ("XAB all-different"): X, A and B are three different instruments from three
  different pieces; ``closer`` is the one sharing X's GM family (for drums: three different kits, the
  one of X's kind, acoustic or electronic).
- ``abx_xyc.jsonl`` ("XYC one-shared"): X and one of the pair play the same GM program (drums: kit) in
  different pieces; the other plays another program.
  Which side holds the right answer is drawn at random; categories are "instruments" and "drums".
- ``tagging.jsonl``: every mix with its tags: the family tag of each pitched stem, "drums", and the mode.
- ``probe_family.jsonl`` (pitched stems, label = GM family) and ``probe_mode.jsonl`` (mixes, label = mode).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from data.instruments.gm import FAMILY_TAGS, KIT_KIND

TRIPLETS_PER_CATEGORY = 300


def _stems(records: list[dict]) -> list[dict]:
    return [dict(stem, piece=r["id"]) for r in records for stem in r["stems"]]


def _draw(rng: np.random.Generator, pool: list[dict], avoid_pieces: set[str], keep, x: dict) -> dict | None:
    candidates = [s for s in pool if s["piece"] not in avoid_pieces and keep(s, x)]
    return candidates[rng.integers(len(candidates))] if candidates else None


def _rules(kind: str, instrument: str, group: str):
    """(near, far) predicates on (stem, x) for a split; `instrument` is the program or kit key, `group`
    the family or kind of kit."""
    if kind == "xab":  # all different: the closer one shares X's family (kind of kit)
        return (lambda s, x: s[group] == x[group] and s[instrument] != x[instrument],
                lambda s, x: s[group] != x[group])
    return (lambda s, x: s[instrument] == x[instrument],  # one shared: the closer one plays X's instrument
            lambda s, x: s[instrument] != x[instrument])


def triplets(records: list[dict], kind: str, seed: int, per_category: int = TRIPLETS_PER_CATEGORY) -> list[dict]:
    """`kind` "xab" or "xyc": up to `per_category` distinct triplets for instruments and for drums each."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0 if kind == "xab" else 1]))
    stems = _stems(records)
    pools = {
        "instruments": ([s for s in stems if not s["is_drum"]], "program", "family"),
        "drums": ([s for s in stems if s["is_drum"]], "kit", "kit_kind"),
    }
    out, seen = [], set()
    for category, (pool, instrument, group) in pools.items():
        near_rule, far_rule = _rules(kind, instrument, group)
        made, tries = 0, 0
        while pool and made < per_category and tries < 20 * per_category:
            tries += 1
            x = pool[rng.integers(len(pool))]
            near = _draw(rng, pool, {x["piece"]}, near_rule, x)
            far = near and _draw(rng, pool, {x["piece"], near["piece"]}, far_rule, x)
            if not far or (x["file"], near["file"], far["file"]) in seen:
                continue
            seen.add((x["file"], near["file"], far["file"]))
            closer = "a" if rng.random() < 0.5 else "b"
            a, b = (near, far) if closer == "a" else (far, near)
            out.append({"x": x["file"], "a": a["file"], "b": b["file"], "closer": closer, "category": category})
            made += 1
    return out


def tags_of(record: dict) -> list[str]:
    tags = {FAMILY_TAGS[s["family"]] for s in record["stems"] if not s["is_drum"]}
    if any(s["is_drum"] for s in record["stems"]):
        tags.add("drums")
    tags.add(record["mode"])
    return sorted(tags)


def probe_rows(records: list[dict], task: str) -> list[dict]:
    """(audio, label) rows for a probe task read from the world's labels: "family" and "program" over
    pitched stems, "kit_kind" over drum stems, "mode" and "source" over mixes."""
    if task in ("family", "program", "program_name"):
        return [{"audio": s["file"], "label": str(s["program_name" if task != "family" else "family"])}
                for r in records for s in r["stems"] if not s["is_drum"]]
    if task == "kit_kind":
        return [{"audio": s["file"], "label": KIT_KIND[s["kit"]]} for r in records for s in r["stems"] if s["is_drum"]]
    if task in ("mode", "source"):
        return [{"audio": r["mix"], "label": r[task]} for r in records]
    raise ValueError(f"unknown probe task {task!r}: use family, program, kit_kind, mode or source")


PROBE_TASKS = ("family", "program", "kit_kind", "mode", "source")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_eval_sets(records: list[dict], out: Path, seed: int) -> None:
    write_jsonl(out / "abx_xab.jsonl", triplets(records, "xab", seed))
    write_jsonl(out / "abx_xyc.jsonl", triplets(records, "xyc", seed))
    write_jsonl(out / "tagging.jsonl", [{"audio": r["mix"], "tags": tags_of(r)} for r in records])
    counts = defaultdict(int)
    for r in records:
        for t in tags_of(r):
            counts[t] += 1
    (out / "tagging_vocabulary.txt").write_text("".join(f"{t}\n" for t in sorted(counts)))
    write_jsonl(out / "probe_family.jsonl", probe_rows(records, "family"))
    write_jsonl(out / "probe_mode.jsonl", probe_rows(records, "mode"))
