"""Zero-shot tagging: score every clip against a text prompt per tag, then rank clips per tag.

Input: JSONL ``{"audio": PATH, "tags": [TAG, ...]}``, or MagnaTagATune's published annotation file
(``annotations_final.csv``: tab-separated, a ``clip_id`` column, one 0/1 column per tag, ``mp3_path``),
read unchanged. A tag's score for a clip is the cosine similarity of the clip's audio vector and the
prompt's text vector, averaged over the prompt templates (``"{tag} music"`` by default). Reported: macro
ROC-AUC and PR-AUC over the vocabulary's tags that have both positives and negatives, per-tag figures,
bootstrap CIs over clips, chance levels. Unusable rows are listed by line and skipped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.metrics import tagging_metrics
from muq_model.pairs import Excluded, read_records

DEFAULT_PROMPTS = ("{tag} music",)
MTAT_ID, MTAT_PATH = "clip_id", "mp3_path"


@dataclass
class TagSet:
    audio: list[Path]
    tags: list[set[str]]  # per clip
    excluded: list[Excluded]
    rows: list[str]  # per clip: the "file:line" it came from

    def vocabulary(self) -> list[str]:
        return sorted(set().union(*self.tags)) if self.tags else []


def load_tag_set(path: Path, audio_root: Path) -> TagSet:
    """A JSONL tag set, or MagnaTagATune's CSV layout (recognised by its header)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle, delimiter="\t"), [])
    if header[:1] == [MTAT_ID]:  # the published file quotes every field; csv unquotes
        return load_magnatagatune(path, audio_root)
    records, excluded = read_records(Path(path))
    audio, tags, rows = [], [], []
    for where, row in records:
        value, row_tags = row.get("audio"), row.get("tags")
        if not isinstance(value, str) or not value.strip():
            excluded.append(Excluded(where, "", 'missing or empty field "audio"'))
            continue
        if not isinstance(row_tags, list) or not all(isinstance(t, str) for t in row_tags):
            excluded.append(Excluded(where, value, '"tags" must be a list of strings'))
            continue
        _keep(where, audio_root / value.strip(), {t.strip() for t in row_tags if t.strip()}, audio, tags, rows, excluded)
    return TagSet(audio, tags, excluded, rows)


def load_magnatagatune(path: Path, audio_root: Path) -> TagSet:
    """MagnaTagATune's annotations_final.csv: tab-separated; clip_id, 188 tag columns of 0/1, mp3_path."""
    excluded: list[Excluded] = []
    audio, tags, rows = [], [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = [c for c in reader.fieldnames or () if c not in (MTAT_ID, MTAT_PATH)]
        if MTAT_PATH not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: no {MTAT_PATH} column: not MagnaTagATune's annotation layout")
        for line, row in enumerate(reader, start=2):
            where = f"{path.name}:{line}"
            value = (row.get(MTAT_PATH) or "").strip()
            if not value:
                excluded.append(Excluded(where, "", f"missing or empty field {MTAT_PATH!r}"))
                continue
            bad = [c for c in columns if (row.get(c) or "").strip() not in ("0", "1")]
            if bad:
                excluded.append(Excluded(where, value, f"tag column {bad[0]!r} is not 0 or 1"))
                continue
            _keep(where, audio_root / value, {c for c in columns if row[c].strip() == "1"}, audio, tags, rows, excluded)
    return TagSet(audio, tags, excluded, rows)


def _keep(where, file: Path, row_tags: set[str], audio: list, tags: list, rows: list, excluded: list) -> None:
    if not file.is_file():
        excluded.append(Excluded(where, str(file), "audio file not found"))
        return
    rows.append(where)
    audio.append(file)
    tags.append(row_tags)


def read_vocabulary(path: Path) -> list[str]:
    """One tag a line; blank lines and lines starting with # are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")))


def prompts_for(vocabulary: list[str], templates: tuple[str, ...] | list[str]) -> list[list[str]]:
    """Per tag, one prompt per template ("{tag}" is replaced by the tag)."""
    bad = [t for t in templates if "{tag}" not in t]
    if bad:
        raise ValueError(f"prompt template {bad[0]!r} has no {{tag}} placeholder")
    return [[template.replace("{tag}", tag) for template in templates] for tag in vocabulary]


def tag_scores(audio_vectors: np.ndarray, prompt_vectors: list[np.ndarray]) -> np.ndarray:
    """(clips, tags): cosine of each clip's audio vector with each prompt, averaged over a tag's prompts."""
    audio = audio_vectors / np.linalg.norm(audio_vectors, axis=1, keepdims=True)
    columns = []
    for vectors in prompt_vectors:  # (templates, dim) per tag
        text = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        columns.append((audio @ text.T).mean(axis=1))
    return np.stack(columns, axis=1)


def truth_matrix(tags: list[set[str]], vocabulary: list[str]) -> np.ndarray:
    return np.array([[tag in clip for tag in vocabulary] for clip in tags], dtype=bool).reshape(len(tags), len(vocabulary))


def evaluate_tagging(scores: np.ndarray, truth: np.ndarray, vocabulary: list[str], *, n_bootstrap: int = 1000, seed: int = 0):
    """(results, per_tag, chance, sizes) in the report's shape (group "macro")."""
    results, per_tag, chance = tagging_metrics(scores, truth, vocabulary, n_bootstrap=n_bootstrap, seed=seed)
    scored = sum(1 for v in per_tag.values() if v["roc_auc"] is not None)
    return {"macro": results}, per_tag, {"macro": chance}, {"macro": {"clips": int(len(truth)), "tags": len(vocabulary), "tags_scored": scored}}


def shown_precision(shown: np.ndarray, truth: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Precision of the tags a tagger shows ((clips, tags) booleans): of all shown (clip, tag) pairs, the share
    that are true, bootstrapped over clips; with the mean number shown per clip."""
    from evaluation.metrics import bootstrap_interval

    shown, truth = np.asarray(shown, bool), np.asarray(truth, bool)

    def statistic(rows: np.ndarray) -> float:
        n = shown[rows].sum()
        return float((shown[rows] & truth[rows]).sum() / n) if n else float("nan")

    return {"precision": bootstrap_interval(statistic, len(shown), n_bootstrap=n_bootstrap, seed=seed),
            "shown_per_clip": float(shown.sum(axis=1).mean()) if len(shown) else 0.0}
