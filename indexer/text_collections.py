"""The catalog's text collections (the tag vocabulary and the user's descriptions), each stored with its
embeddings and the vector space of the model that made them: the one writer of their rows and the reads
that tell whether a stored collection is still fresh."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from indexer.catalog import Catalog, Text_, TextCollection, stack_blobs, to_blob


def write_collection(
    session: Session, name: str, texts: Sequence[str], categories: Sequence[str | None], vectors: np.ndarray, *,
    fingerprint: str, description: str | None = None, source_hash: str | None = None,
) -> None:
    """Replace the collection ``name`` with these texts and embeddings (inside the caller's transaction)."""
    session.execute(delete(TextCollection).where(TextCollection.name == name))
    collection = TextCollection(name=name, description=description, fingerprint=fingerprint, source_hash=source_hash)
    collection.texts = [
        Text_(text=t, category=c, embedding=to_blob(v)) for t, c, v in zip(texts, categories, vectors, strict=True)
    ]
    session.add(collection)


def delete_collection(catalog: Catalog, name: str) -> bool:
    """Remove the collection ``name``; False when there is none."""
    with catalog.session.begin() as s:
        return s.execute(delete(TextCollection).where(TextCollection.name == name)).rowcount > 0


def collection_heads(catalog: Catalog) -> dict[str, tuple]:
    """name -> (id, created, fingerprint, source_hash, description): enough to tell whether a row changed."""
    with catalog.session() as s:
        rows = s.execute(select(TextCollection.name, TextCollection.id, TextCollection.created,
                                TextCollection.fingerprint, TextCollection.source_hash, TextCollection.description))
        return {r.name: tuple(r)[1:] for r in rows}


def collection_counts(catalog: Catalog) -> list[tuple[str, str | None, str, int]]:
    """(name, description, fingerprint, number of texts) of every collection, by name."""
    with catalog.session() as s:
        return [tuple(r) for r in s.execute(
            select(TextCollection.name, TextCollection.description, TextCollection.fingerprint, func.count(Text_.id))
            .join(Text_, isouter=True)
            .group_by(TextCollection.id)
            .order_by(TextCollection.name)
        )]


def read_collection(catalog: Catalog, collection_id: int) -> tuple[list[str], list[str | None], np.ndarray]:
    """(texts, categories, (n, dim) embeddings) of one collection, in stored order."""
    with catalog.session() as s:
        rows = s.execute(
            select(Text_.text, Text_.category, Text_.embedding)
            .where(Text_.collection_id == collection_id).order_by(Text_.id)
        ).all()
    dim = len(rows[0].embedding) // 4 if rows else 0
    vectors = stack_blobs((r.embedding for r in rows), dim) if rows else np.zeros((0, 0), np.float32)
    return [r.text for r in rows], [r.category for r in rows], vectors
