"""Calibrated confidence: how a query's answer compares with what unrelated texts get on this library.

Raw cosine scores are not comparable across queries: on a small model, "a podcast interview about
politics" can score 0.92 on a brass clip while "slow sad piano" scores 0.81 on the right piano clip. So
every answer is judged against a null distribution, made from a bank of texts about things no such
library contains plus non-music sentences (``indexer/null_texts.txt``), embedded with the running
model once per library and model fingerprint and cached in the catalog (text collection ``builtin:null``).

Two questions, each answered against the null bank:

1. Does the model know the words? In the frozen pretrained text encoder's sentence space (mean of its
   last hidden states: a general-purpose sentence embedding that still tells "podcast" from "piano"),
   ``knownness(x) = max cos(x, vocabulary texts) - max cos(x, null texts)``, the vocabulary being the one
   the model tags with (``indexer.autotag.vocabulary_for``). ``known(q)`` is the share of null texts
   (each scored leave-one-out) whose knownness is below the query's: an empirical p-value.
2. Does the track fit better than unrelated texts do? For result track ``t`` with score ``s``,
   ``beats(q, t)`` is the share of null texts that score below ``s`` on that very track (per-track
   null, which also discounts hub tracks that every text lands near).

``confidence(q, t) = known(q) * beats(q, t)`` in [0, 1]. The answer's verdict comes from the best
confidence ``c``: ``strong`` when ``c >= STRONG``, ``weak`` when ``c >= WEAK``, else ``none`` ("no good
match"). With a bank of n texts, a null text reaches ``c >= WEAK`` with probability about ``1 - WEAK``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NULL_TEXTS_PATH = Path(__file__).resolve().parent / "null_texts.txt"
NULL_COLLECTION = "builtin:null"  # the null bank's shared-space vectors
NULL_SENTENCE_COLLECTION = "builtin:null-sentence"  # its text-encoder sentence vectors
VOCABULARY_SENTENCE_COLLECTION = "builtin:vocabulary-sentence"  # the vocabulary's sentence vectors
STRONG, WEAK = 0.975, 0.9  # p-values: share of unrelated texts the answer must beat
VERDICTS = ("strong", "weak", "none")


def load_null_texts(path: Path = NULL_TEXTS_PATH) -> list[str]:
    """The null bank: one text a line, blank lines and ``#`` comments skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")))


def embed_texts(model, texts) -> tuple[np.ndarray, np.ndarray]:
    """((n, dim) shared-space unit vectors, (n, width) unit sentence vectors of the frozen text encoder),
    from one encoder pass per text (unpadded, like ``model.embed_text``, whose vectors these equal)."""
    import torch

    from muq_model.runtime import precision_context

    shared, sentence = [], []
    with torch.inference_mode(), precision_context(model.precision, model.device):
        for tokens in model.tokenize(list(texts)):
            ids = torch.tensor([tokens], dtype=torch.long, device=model.device)
            mask = torch.ones_like(ids)
            hidden = model.text.features(ids, mask)  # (1, L, width)
            shared.append(model.encode_text_features(hidden, mask)[0].float().cpu().numpy())
            sentence.append(hidden[0].float().mean(0).cpu().numpy())
    return _unit(np.stack(shared)), _unit(np.stack(sentence))


@dataclass(frozen=True)
class NullBank:
    """The null bank and the vocabulary, embedded with one model."""

    vectors: np.ndarray  # (n_null, dim) shared-space
    sentences: np.ndarray  # (n_null, width) text-encoder sentence vectors
    known_sentences: np.ndarray  # (n_vocabulary, width)


def null_bank(model, catalog=None) -> NullBank:
    """The null bank and vocabulary for ``model``: read from the catalog's text collections when they were
    embedded by this model from these files, else embedded now (seconds to a minute on a CPU) and stored
    there, so each library pays once per model (``catalog`` None: in memory only)."""
    import hashlib

    from indexer.autotag import vocabulary_for
    from indexer.text_collections import collection_heads, read_collection, write_collection

    null_texts, vocabulary = load_null_texts(), vocabulary_for(model)
    null_hash = hashlib.sha256("\n".join(null_texts).encode()).hexdigest()[:16]
    fingerprint = model.vector_space()
    wanted = {NULL_COLLECTION: null_hash, NULL_SENTENCE_COLLECTION: null_hash,
              VOCABULARY_SENTENCE_COLLECTION: vocabulary.hash}
    if catalog is not None:
        heads = collection_heads(catalog)
        if all(name in heads and heads[name][2] == fingerprint and heads[name][3] == source
               for name, source in wanted.items()):
            return NullBank(*(read_collection(catalog, heads[name][0])[2] for name in wanted))
    vectors, sentences = embed_texts(model, null_texts)
    _, known = embed_texts(model, vocabulary.texts)
    if catalog is not None:
        with catalog.session.begin() as s:
            for name, texts, rows in ((NULL_COLLECTION, null_texts, vectors),
                                      (NULL_SENTENCE_COLLECTION, null_texts, sentences),
                                      (VOCABULARY_SENTENCE_COLLECTION, vocabulary.texts, known)):
                write_collection(s, name, texts, [None] * len(texts), rows, fingerprint=fingerprint,
                                 source_hash=wanted[name], description="confidence calibration (indexer/calibration.py)")
    return NullBank(vectors, sentences, known)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Calibration:
    """The null distributions of one model's null bank: nothing per track is stored, a result's per-track
    null is its vector against the bank's (n_null dot products), so memory does not grow with the library."""

    null_vectors: np.ndarray  # (n_null, dim) shared-space
    null_sentences: np.ndarray  # (n_null, width)
    known_sentences: np.ndarray  # (n_vocabulary, width)
    null_knownness: np.ndarray  # (n_null,) sorted, each null text scored leave-one-out

    @classmethod
    def build(cls, bank: NullBank) -> Calibration:
        own = bank.sentences @ bank.sentences.T
        np.fill_diagonal(own, -np.inf)  # leave-one-out: a null text is not its own neighbour
        null_knownness = (bank.sentences @ bank.known_sentences.T).max(1) - own.max(1)
        return cls(bank.vectors, bank.sentences, bank.known_sentences, np.sort(null_knownness))

    def known(self, sentence: np.ndarray) -> float:
        """Share of null texts less vocabulary-like than this query (its sentence vector)."""
        k = float((self.known_sentences @ sentence).max() - (self.null_sentences @ sentence).max())
        return _share_below(self.null_knownness, k)

    def confidences(self, known: float, track_vectors: np.ndarray, scores) -> np.ndarray:
        """confidence in [0, 1] of each (track, score) of one query whose ``known`` is given; track_vectors:
        (n, dim) unit vectors of those tracks."""
        vectors = np.asarray(track_vectors, np.float32).reshape(len(scores), self.null_vectors.shape[1])
        null_scores = np.sort(vectors @ self.null_vectors.T, axis=1)
        return np.array([known * _share_below(row, float(s)) for row, s in zip(null_scores, scores, strict=True)],
                        np.float64)


def _share_below(sorted_values: np.ndarray, value: float) -> float:
    """Share of ``sorted_values`` below ``value`` (ties count half)."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    lo = np.searchsorted(sorted_values, value, side="left")
    hi = np.searchsorted(sorted_values, value, side="right")
    return float(lo + 0.5 * (hi - lo)) / n


def verdict(best_confidence: float | None) -> str:
    """strong | weak | none for the best result's confidence (None: no result at all)."""
    if best_confidence is None or best_confidence < WEAK:
        return "none"
    return "strong" if best_confidence >= STRONG else "weak"
