"""The evaluation protocol: embed every audio and text once, score all pairs, rank both directions.

For each text field, text -> music ranks every text against every audio of the set (the pool), and
music -> text ranks every audio with at least one text in that field against all of the field's texts.
Identical texts within a field and repeated audio paths are merged, so the relevant set of a query is
explicit and duplicates never compete with each other. Audio is decoded with the indexer's decoder
(``indexer.audio.load_audio``) and embedded with the model's own clip policy, the same path a library's
tracks take.

Embeddings are cached on disk under a key made of the model fingerprint and a content hash (the audio
file's bytes, the text's characters), so a second run over the same set embeds nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.datasets import EvalSet
from evaluation.metrics import DIRECTIONS, chance_levels, retrieval_metrics
from indexer.audio import AudioDecodeError, load_audio
from muq_model.identity import file_sha256, vector_space
from muq_model.pairs import Excluded

CACHE_ENV = "MUQSEARCH_EVAL_CACHE"
SIMILARITIES = ("cosine", "dot")
TEXT_BATCH = 32


def default_cache_dir() -> Path:
    """$MUQSEARCH_EVAL_CACHE, else $XDG_CACHE_HOME/muqsearch/eval, else ~/.cache/muqsearch/eval."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "muqsearch" / "eval"


def fingerprint_key(fingerprint: dict) -> str:
    return hashlib.sha256(vector_space(fingerprint).encode()).hexdigest()[:24]


class EmbeddingCache:
    """One .npy per embedding under ROOT/<fingerprint key>/<kind>/<content hash>.npy.

    Derived data: an unreadable entry is recomputed, and entries are written atomically (temp + rename),
    so an interrupted run never leaves a half-written vector behind.
    """

    def __init__(self, root: Path, fingerprint: dict):
        self.directory = Path(root) / fingerprint_key(fingerprint)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "fingerprint.json").write_text(json.dumps(fingerprint, indent=2, default=str) + "\n")

    def _path(self, kind: str, key: str) -> Path:
        return self.directory / kind / f"{key}.npy"

    def load(self, kind: str, key: str) -> np.ndarray | None:
        try:
            return np.load(self._path(kind, key), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def save(self, kind: str, key: str, vector: np.ndarray) -> None:
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.npy")
        np.save(temporary, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        os.replace(temporary, path)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- embedding ------------------------------------------------------------------------------------


def embed_audio_files(
    model, paths: list[Path], *, cache: EmbeddingCache | None, progress: bool = True
) -> tuple[dict[Path, np.ndarray], dict[Path, str], list[tuple[Path, str]]]:
    """(vector per path, content hash per path, [(path, reason)] for files that could not be decoded)."""
    vectors, hashes, failed = {}, {}, []
    for path in tqdm(paths, desc="embedding audio", unit="file", disable=not progress, file=sys.stderr):
        try:
            digest = file_sha256(path)
        except OSError as exc:
            failed.append((path, f"cannot read: {exc.strerror or exc}"))
            continue
        vector = cache.load("audio", digest) if cache else None
        if vector is None:
            try:
                wave = load_audio(path, sample_rate=model.sample_rate)
            except AudioDecodeError as exc:
                failed.append((path, f"cannot decode: {exc.reason}"))
                continue
            vector = np.asarray(model.embed_audio([wave], sample_rate=model.sample_rate)[0], dtype=np.float32)
            if cache:
                cache.save("audio", digest, vector)
        vectors[path], hashes[path] = vector, digest
    return vectors, hashes, failed


def embed_texts(
    model, texts: Iterable[str], *, cache: EmbeddingCache | None, progress: bool = True
) -> dict[str, np.ndarray]:
    """A vector per distinct text; embed_text is batch-invariant, so batching changes nothing."""
    unique = list(dict.fromkeys(texts))
    vectors = {}
    if cache:
        for text in unique:
            vector = cache.load("text", text_sha256(text))
            if vector is not None:
                vectors[text] = vector
    todo = [t for t in unique if t not in vectors]
    with tqdm(total=len(todo), desc="embedding text", unit="text", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(todo), TEXT_BATCH):
            batch = todo[start : start + TEXT_BATCH]
            for text, vector in zip(batch, np.asarray(model.embed_text(batch), dtype=np.float32), strict=True):
                vectors[text] = vector
                if cache:
                    cache.save("text", text_sha256(text), vector)
            bar.update(len(batch))
    return vectors


# --- scoring ----------------------------------------------------------------------------------------


@dataclass
class ScoreMatrix:
    """Everything needed to recompute one (direction, field)'s figures: what ``--dump-scores`` writes."""

    direction: str
    field: str
    scores: np.ndarray  # (queries, candidates) float32
    relevant: np.ndarray  # same shape, bool
    query_ids: np.ndarray  # str
    candidate_ids: np.ndarray  # str

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.direction}.{self.field}.npz"
        np.savez(
            path, scores=self.scores.astype(np.float32), relevant=self.relevant.astype(bool),
            query_ids=self.query_ids, candidate_ids=self.candidate_ids,
        )
        return path


@dataclass
class Evaluation:
    results: dict  # direction -> field -> metric -> {value, ci_low, ci_high}
    chance: dict  # direction -> field -> metric -> float
    sizes: dict  # direction -> field -> {queries, candidates}
    matrices: list[ScoreMatrix]
    excluded: list[Excluded]
    pool_size: int
    dataset_hash: str


def field_matrices(
    dataset: EvalSet, audio_vectors: dict[Path, np.ndarray], text_vectors: dict[str, np.ndarray], *,
    similarity: str = "cosine",
) -> list[ScoreMatrix]:
    """Both directions' score and relevance matrices for every field, over the audio that embedded."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}: use {' or '.join(SIMILARITIES)}")
    pairs = [p for p in dataset.pairs if p.audio in audio_vectors]
    audio_paths = list(dict.fromkeys(p.audio for p in pairs))
    audio_column = {path: i for i, path in enumerate(audio_paths)}
    audio_item: dict[Path, str] = {}
    for p in pairs:
        audio_item.setdefault(p.audio, p.item)
    audio_ids = np.array([audio_item[path] for path in audio_paths])
    audio = np.stack([audio_vectors[path] for path in audio_paths])  # (n_audio, dim)
    if similarity == "cosine":  # the track index stores renormalised clip means; "dot" is the official score
        audio = audio / np.linalg.norm(audio, axis=1, keepdims=True)

    groups: dict[str, set[int]] = {}  # group -> audio columns
    for p in pairs:
        if p.group is not None:
            groups.setdefault(p.group, set()).add(audio_column[p.audio])

    matrices = []
    for field in dataset.fields:
        field_pairs = [p for p in pairs if p.field == field]
        texts = list(dict.fromkeys(p.text for p in field_pairs))
        if not texts:
            continue
        text_row = {text: i for i, text in enumerate(texts)}
        relevant = np.zeros((len(texts), len(audio_paths)), dtype=bool)  # (n_texts, n_audio)
        for p in field_pairs:
            relevant[text_row[p.text], audio_column[p.audio]] = True
            for column in groups.get(p.group, ()):
                relevant[text_row[p.text], column] = True
        text_item: dict[str, str] = {}
        for p in field_pairs:
            text_item.setdefault(p.text, p.item)
        text_ids = np.array([text_item[text] for text in texts])
        scores = np.stack([text_vectors[t] for t in texts]) @ audio.T  # (n_texts, n_audio)
        matrices.append(ScoreMatrix("text_to_music", field, scores, relevant, text_ids, audio_ids))
        has_text = relevant.any(axis=0)  # audio with at least one text in this field
        matrices.append(
            ScoreMatrix(
                "music_to_text", field, np.ascontiguousarray(scores.T[has_text]), relevant.T[has_text],
                audio_ids[has_text], text_ids,
            )
        )
    return matrices


def evaluate(
    dataset: EvalSet,
    model,
    *,
    cache: EmbeddingCache | None = None,
    similarity: str = "cosine",
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> Evaluation:
    """Run the whole protocol on a loaded dataset with a MuQMuLan-like model."""
    audio_paths = list(dict.fromkeys(p.audio for p in dataset.pairs))
    audio_vectors, audio_hashes, failed = embed_audio_files(model, audio_paths, cache=cache, progress=progress)
    excluded = list(dataset.excluded)
    for path, reason in failed:
        items = sorted({p.item for p in dataset.pairs if p.audio == path})
        excluded.extend(Excluded(item, str(path), reason) for item in items)
    if not audio_vectors:
        raise ValueError(f"{dataset.path}: none of the {len(audio_paths)} audio files could be embedded")
    kept_texts = [p.text for p in dataset.pairs if p.audio in audio_vectors and p.field in dataset.fields]
    text_vectors = embed_texts(model, kept_texts, cache=cache, progress=progress)

    matrices = field_matrices(dataset, audio_vectors, text_vectors, similarity=similarity)
    results = {d: {} for d in DIRECTIONS}
    chance = {d: {} for d in DIRECTIONS}
    sizes = {d: {} for d in DIRECTIONS}
    for m in matrices:
        results[m.direction][m.field] = retrieval_metrics(m.scores, m.relevant, n_bootstrap=n_bootstrap, seed=seed)
        chance[m.direction][m.field] = chance_levels(m.relevant)
        sizes[m.direction][m.field] = {"queries": int(m.scores.shape[0]), "candidates": int(m.scores.shape[1])}

    return Evaluation(
        results=results,
        chance=chance,
        sizes=sizes,
        matrices=matrices,
        excluded=excluded,
        pool_size=len(audio_vectors),
        dataset_hash=dataset_hash(dataset, audio_hashes),
    )


def dataset_hash(dataset: EvalSet, audio_hashes: dict[Path, str]) -> str:
    """Identifies exactly what was evaluated: the dataset file, the fields, and every embedded audio's bytes."""
    digest = hashlib.sha256(dataset.file_hash.encode())
    digest.update(json.dumps(list(dataset.fields)).encode())
    for path in sorted(audio_hashes, key=str):
        digest.update(f"\n{path.name}\t{audio_hashes[path]}".encode())
    return digest.hexdigest()
