"""Linear probes on frozen features: how much of a label a representation makes linearly readable.

Input: JSONL ``{"audio": PATH, "label": TEXT}`` (one task a file), or the real-instrument world's
``labels.jsonl`` with a task (family, program, kit_kind, mode, source; see data.instruments.sets). The
split is fixed and seeded (stratified, ``test_share`` of each label held out); labels with fewer than
two examples cannot be split and are left out, listed. The classifier is scikit-learn's
LogisticRegression on standardised features; figures are test accuracy and macro-F1 with bootstrap CIs
over test items, against the majority-class predictor. A hidden-state embedding is probed per layer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.metrics import classification_metrics
from muq_model.pairs import Excluded, read_records

TEST_SHARE = 0.3


@dataclass
class ProbeSet:
    audio: list[Path]
    labels: list[str]
    excluded: list[Excluded]
    rows: list[str]  # per item: where it came from


def load_probe_set(path: Path, audio_root: Path, task: str | None = None) -> ProbeSet:
    """(audio, label) rows; a world labels file (rows with "stems") is turned into `task`'s rows first."""
    records, excluded = read_records(Path(path))
    if records and "stems" in records[0][1]:
        from data.instruments.sets import probe_rows

        rows = probe_rows([r for _, r in records], task or "family")
        records = [(f"{Path(path).name}:{task or 'family'}:{i}", row) for i, row in enumerate(rows, 1)]
    elif task is not None:
        raise ValueError(f"{path}: --task applies to the world's labels.jsonl; this file has its own labels")
    audio, labels, kept = [], [], []
    for where, row in records:
        value, label = row.get("audio"), row.get("label")
        if not isinstance(value, str) or not value.strip() or label in (None, ""):
            excluded.append(Excluded(where, str(value or ""), 'missing or empty field "audio" or "label"'))
            continue
        file = audio_root / value.strip()
        if not file.is_file():
            excluded.append(Excluded(where, str(file), "audio file not found"))
            continue
        audio.append(file)
        labels.append(str(label))
        kept.append(where)
    return ProbeSet(audio, labels, excluded, kept)


def split(labels: list[str], *, seed: int = 0, test_share: float = TEST_SHARE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train indices, test indices, labels left out for having fewer than two examples): stratified, seeded."""
    from sklearn.model_selection import train_test_split

    counts = Counter(labels)
    rare = sorted(label for label, n in counts.items() if n < 2)
    keep = np.array([i for i, label in enumerate(labels) if counts[label] >= 2])
    kept_labels = [labels[i] for i in keep]
    n_classes = len(set(kept_labels))
    test_size = max(int(round(test_share * len(keep))), n_classes)
    if n_classes < 2 or len(keep) - test_size < n_classes:
        raise ValueError(f"a probe needs at least two labels with two examples each; got {dict(counts)}")
    train, test = train_test_split(keep, test_size=test_size, random_state=seed, stratify=kept_labels)
    return np.sort(train), np.sort(test), rare


def fit_and_predict(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(features[train], labels[train])
    return probe.predict(features[test])


def evaluate_probe(
    features: dict[str, np.ndarray], labels: list[str], *, seed: int = 0, n_bootstrap: int = 1000, test_share: float = TEST_SHARE
):
    """features: group name ("embedding", "layer 0", ...) -> (items, dim). Returns (results, chance, sizes,
    scores, rare): one probe per group on the same split; scores holds every test prediction."""
    train, test, rare = split(labels, seed=seed, test_share=test_share)
    labels_array = np.array(labels)
    results, chance, sizes, scores = {}, {}, {}, {"test_index": test, "truth": labels_array[test]}
    for group, matrix in features.items():
        predicted = fit_and_predict(matrix, labels_array, train, test, seed)
        results[group], chance[group] = classification_metrics(labels_array[test], predicted, n_bootstrap=n_bootstrap, seed=seed)
        sizes[group] = {"train": int(len(train)), "test": int(len(test)), "classes": len(set(labels_array[test]))}
        scores[f"predicted/{group}"] = predicted
    return results, chance, sizes, scores, rare
