"""Auto-tagging: score each track against the built-in vocabulary and keep its best tags per category.

The vocabulary's texts are embedded once per model fingerprint and vocabulary version, and cached in
the catalog as the text collection ``builtin:vocabulary`` (which the app can also rank for ``describe``).
A model without a tokenizer cannot embed text, so it gets no auto-tags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from data.vocabulary import Vocabulary, load_vocabulary
from indexer.catalog import VOCABULARY_COLLECTION, Catalog, Text_, TextCollection, stack_blobs
from indexer.text_collections import write_collection


@dataclass(frozen=True)
class AutoTag:
    tag: str
    category: str
    score: float  # cosine similarity between the track and the tag's text


class AutoTagger:
    def __init__(self, vocabulary: Vocabulary, text_vectors: np.ndarray):
        self.vocabulary = vocabulary
        self.text_vectors = np.ascontiguousarray(text_vectors, dtype=np.float32)  # (n_tags, dim), unit rows
        self._positions = {
            name: np.array(vocabulary.in_category(name), dtype=np.int64) for name in vocabulary.categories
        }

    @classmethod
    def for_model(cls, model, catalog: Catalog, vocabulary: Vocabulary | None = None) -> AutoTagger | None:
        """The tagger for this model, embedding the vocabulary only if the catalog has no matching cache."""
        if not model.has_tokenizer:
            return None
        vocabulary = vocabulary or load_vocabulary()
        fingerprint = model.vector_space()
        with catalog.session.begin() as s:
            collection = s.scalar(select(TextCollection).where(TextCollection.name == VOCABULARY_COLLECTION))
            if (
                collection is not None
                and collection.fingerprint == fingerprint
                and collection.source_hash == vocabulary.hash
            ):
                rows = s.scalars(select(Text_).where(Text_.collection_id == collection.id).order_by(Text_.id)).all()
                return cls(vocabulary, stack_blobs((r.embedding for r in rows), model.dim))
            vectors = model.embed_text(vocabulary.texts).numpy()  # (n_tags, dim)
            write_collection(s, VOCABULARY_COLLECTION, vocabulary.texts, [t.category for t in vocabulary.tags], vectors,
                             fingerprint=fingerprint, source_hash=vocabulary.hash,
                             description="built-in tag vocabulary (data/vocabulary), used for auto-tags")
        return cls(vocabulary, vectors)

    def tags_for(self, track_vector: np.ndarray) -> list[AutoTag]:
        """The ``top_k`` best-scoring tags of every category for one track vector (any norm)."""
        vector = np.asarray(track_vector, dtype=np.float32)
        scores = self.text_vectors @ (vector / max(float(np.linalg.norm(vector)), 1e-12))  # (n_tags,)
        out = []
        for name, category in self.vocabulary.categories.items():
            positions = self._positions[name]
            if positions.size == 0:
                continue
            best = positions[np.argsort(-scores[positions], kind="stable")[: category.top_k]]
            out.extend(AutoTag(self.vocabulary.tags[i].tag, name, float(scores[i])) for i in best)
        return out
