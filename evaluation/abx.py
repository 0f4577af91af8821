"""Similarity agreement (ABX): does an embedding put X nearer the side a listener (or a label) says?

Input: JSONL, one triplet a line, ``{"x": PATH, "a": PATH, "b": PATH, "closer": "a"|"b", "category": TEXT}``
(paths relative to the audio root, ``category`` optional). For each triplet the cosine similarity of X to
A and to B is computed; the triplet agrees when X is more similar to the ``closer`` side (a tie counts
half). Agreement is reported overall ("all") and per category, with bootstrap CIs over triplets and the
chance level 0.5. Rows that cannot be used (bad JSON, a missing field or file, ``closer`` not "a"/"b")
are listed by line and skipped; the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.metrics import ABX_CHANCE, abx_outcomes, bootstrap_interval
from muq_model.pairs import Excluded, read_records

OVERALL = "all"


@dataclass(frozen=True)
class Triplet:
    where: str  # "file:line"
    x: Path
    a: Path
    b: Path
    closer: str  # "a" | "b"
    category: str | None


def load_triplets(path: Path, audio_root: Path) -> tuple[list[Triplet], list[Excluded]]:
    records, excluded = read_records(Path(path))
    triplets = []
    for where, row in records:
        values = {key: row.get(key) for key in ("x", "a", "b")}
        missing = [key for key, value in values.items() if not isinstance(value, str) or not value.strip()]
        if missing:
            excluded.append(Excluded(where, "", f"missing or empty field(s): {', '.join(missing)}"))
            continue
        if row.get("closer") not in ("a", "b"):
            excluded.append(Excluded(where, "", f'"closer" must be "a" or "b", got {row.get("closer")!r}'))
            continue
        files = {key: audio_root / value.strip() for key, value in values.items()}
        absent = [str(file) for file in files.values() if not file.is_file()]
        if absent:
            excluded.append(Excluded(where, absent[0], "audio file not found"))
            continue
        category = row.get("category")
        category = str(category).strip() if category not in (None, "") else None
        triplets.append(Triplet(where, files["x"], files["a"], files["b"], row["closer"], category))
    return triplets, excluded


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def triplet_similarities(triplets: list[Triplet], vectors: dict[Path, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of X to A and to B for every triplet (all three must be in `vectors`)."""
    sim_a = np.array([float(_unit(vectors[t.x]) @ _unit(vectors[t.a])) for t in triplets])
    sim_b = np.array([float(_unit(vectors[t.x]) @ _unit(vectors[t.b])) for t in triplets])
    return sim_a, sim_b


def abx_results(
    closer: np.ndarray, categories: np.ndarray, sim_a: np.ndarray, sim_b: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0
) -> tuple[dict, dict, dict]:
    """(results, chance, sizes) keyed by category ("all" first): what the report and a recomputation share."""
    closer = np.asarray(closer)
    near = np.where(closer == "a", sim_a, sim_b)
    far = np.where(closer == "a", sim_b, sim_a)
    outcomes = abx_outcomes(near, far)
    groups = {OVERALL: np.arange(len(outcomes))}
    for category in sorted({str(c) for c in categories if c}):
        groups[category] = np.flatnonzero(np.asarray(categories) == category)
    results, chance, sizes = {}, {}, {}
    for name, rows in groups.items():
        values = outcomes[rows]
        results[name] = {"agreement": bootstrap_interval(lambda r, v=values: float(v[r].mean()), len(values),
                                                         n_bootstrap=n_bootstrap, seed=seed)}
        chance[name] = {"agreement": ABX_CHANCE}
        sizes[name] = {"triplets": int(len(values))}
    return results, chance, sizes


def evaluate_abx(triplets: list[Triplet], vectors: dict[Path, np.ndarray], *, n_bootstrap: int = 1000, seed: int = 0):
    """(results, chance, sizes, scores): scores holds everything --dump-scores writes."""
    sim_a, sim_b = triplet_similarities(triplets, vectors)
    scores = {
        "where": np.array([t.where for t in triplets]),
        "x": np.array([str(t.x) for t in triplets]), "a": np.array([str(t.a) for t in triplets]),
        "b": np.array([str(t.b) for t in triplets]),
        "closer": np.array([t.closer for t in triplets]),
        "category": np.array([t.category or "" for t in triplets]),
        "sim_a": sim_a, "sim_b": sim_b,
    }
    results, chance, sizes = abx_results(scores["closer"], scores["category"], sim_a, sim_b, n_bootstrap=n_bootstrap, seed=seed)
    return results, chance, sizes, scores
