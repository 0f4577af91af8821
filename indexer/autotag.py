"""Auto-tagging: score each track against the model's vocabulary and keep the best tags per category that
pass a calibrated bar.

A tag is stored only when it is among its category's ``top_k`` on the track *and* its score beats
``PASS_SHARE`` of the null bank's unrelated texts on that same track (``indexer.calibration``): a
per-track null, so a clip that every text lands near does not collect tags, and a category whose best
tag fits no better than "a recipe for lasagna" gets none. Measured on the demo world's held-out test
split (``python -m evaluation.demo_tags``): see the README.

The vocabulary follows the model (:func:`vocabulary_for`): a model that declares a domain it was trained
on (``config.json`` ``domain``) tags with that domain's own vocabulary (the demo model: the demo world's
attribute words, ``data/demo/vocabulary.json``); any other model with the built-in one (``data/vocabulary``).

The vocabulary's texts are embedded once per model fingerprint and vocabulary version, and cached in
the catalog as the text collection ``builtin:vocabulary`` (which the app can also rank for ``describe``).
A model without a tokenizer cannot embed text, so it gets no auto-tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select

from data.vocabulary import VOCABULARY_PATH, Vocabulary, load_vocabulary
from indexer.catalog import (
    VOCABULARY_COLLECTION,
    Catalog,
    Text_,
    TextCollection,
    Track,
    TrackTag,
    from_blob,
    stack_blobs,
)
from indexer.text_collections import write_collection


def domain_vocabularies() -> dict[str, Path]:
    """Declared domain -> the vocabulary file its models were trained to hear."""
    import data.demo

    return {"MuQ Search demo world": data.demo.DEMO_DIR / "vocabulary.json"}


def vocabulary_path(model) -> Path:
    """The vocabulary file for a loaded model (or a model name, read as ``indexer.domain`` reads it)."""
    from indexer.domain import declared_domain

    return domain_vocabularies().get(declared_domain(model) or "", VOCABULARY_PATH)


def vocabulary_for(model) -> Vocabulary:
    return load_vocabulary(vocabulary_path(model))


def vocabulary_label(path: Path) -> str:
    """How `status` and the page name a vocabulary file."""
    return "built-in" if Path(path) == VOCABULARY_PATH else f"{Path(path).parent.name} world's own"


def vocabulary_info(model) -> dict:
    """What `status` and the page say about the vocabulary a model (or model name) tags with."""
    path = vocabulary_path(model)
    return {"name": vocabulary_label(path), "path": str(path), "tags": len(load_vocabulary(path).tags)}


@dataclass(frozen=True)
class AutoTag:
    tag: str
    category: str
    score: float  # cosine similarity between the track and the tag's text


PASS_SHARE = 0.95  # a stored tag outscores this share of the null bank's texts on its track


class AutoTagger:
    def __init__(self, vocabulary: Vocabulary, text_vectors: np.ndarray, null_vectors: np.ndarray | None = None):
        self.vocabulary = vocabulary
        self.text_vectors = np.ascontiguousarray(text_vectors, dtype=np.float32)  # (n_tags, dim), unit rows
        # (n_null, dim) unit rows; None: no bar (only describe's ranking uses a tagger without one)
        self.null_vectors = None if null_vectors is None else np.ascontiguousarray(null_vectors, dtype=np.float32)
        self._positions = {
            name: np.array(vocabulary.in_category(name), dtype=np.int64) for name in vocabulary.categories
        }

    @classmethod
    def for_model(cls, model, catalog: Catalog, vocabulary: Vocabulary | None = None) -> AutoTagger | None:
        """The tagger for this model, embedding the vocabulary (and the null bank) only if the catalog has no
        matching cache."""
        from indexer.calibration import null_bank

        if not model.has_tokenizer:
            return None
        null_vectors = null_bank(model, catalog).vectors
        vocabulary = vocabulary or vocabulary_for(model)
        fingerprint = model.vector_space()
        with catalog.session.begin() as s:
            collection = s.scalar(select(TextCollection).where(TextCollection.name == VOCABULARY_COLLECTION))
            if (
                collection is not None
                and collection.fingerprint == fingerprint
                and collection.source_hash == vocabulary.hash
            ):
                rows = s.scalars(select(Text_).where(Text_.collection_id == collection.id).order_by(Text_.id)).all()
                return cls(vocabulary, stack_blobs((r.embedding for r in rows), model.dim), null_vectors)
            vectors = model.embed_text(vocabulary.texts).numpy()  # (n_tags, dim)
            write_collection(s, VOCABULARY_COLLECTION, vocabulary.texts, [t.category for t in vocabulary.tags], vectors,
                             fingerprint=fingerprint, source_hash=vocabulary.hash,
                             description=f"tag vocabulary ({vocabulary_label(vocabulary_path(model))}), used for auto-tags")
        return cls(vocabulary, vectors, null_vectors)

    def bar(self, unit_vector: np.ndarray) -> float:
        """The score a tag must beat on this track: the ``PASS_SHARE`` quantile of the null texts' scores."""
        if self.null_vectors is None or len(self.null_vectors) == 0:
            return -np.inf
        null = np.sort(self.null_vectors @ unit_vector)
        return float(null[min(len(null) - 1, int(np.ceil(PASS_SHARE * len(null))) - 1)])

    def tags_for(self, track_vector: np.ndarray) -> list[AutoTag]:
        """The ``top_k`` best-scoring tags of every category for one track vector (any norm), those that
        beat the track's bar."""
        vector = np.asarray(track_vector, dtype=np.float32)
        unit = vector / max(float(np.linalg.norm(vector)), 1e-12)
        scores = self.text_vectors @ unit  # (n_tags,)
        bar = self.bar(unit)
        out = []
        for name, category in self.vocabulary.categories.items():
            positions = self._positions[name]
            if positions.size == 0:
                continue
            best = positions[np.argsort(-scores[positions], kind="stable")[: category.top_k]]
            out.extend(AutoTag(self.vocabulary.tags[i].tag, name, float(scores[i])) for i in best if scores[i] > bar)
        return out


def retag(catalog: Catalog, tagger: AutoTagger) -> int:
    """Replace every track's auto-tags with ``tagger``'s, from the stored track vectors (no audio read);
    returns the number of tracks tagged. For a vocabulary or threshold change on an indexed library."""
    with catalog.session.begin() as s:
        s.execute(delete(TrackTag).where(TrackTag.source == "auto"))
        rows = s.execute(select(Track.id, Track.embedding).order_by(Track.id)).all()
        s.add_all(TrackTag(track_id=track_id, tag=t.tag, category=t.category, score=t.score, source="auto")
                  for track_id, blob in rows for t in tagger.tags_for(from_blob(blob)))
    return len(rows)
