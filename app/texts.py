"""Text collections that ``describe`` ranks: the built-in vocabulary plus collections a user adds.

Both live in the catalog's ``text_collections``/``texts`` tables with their embeddings and the
fingerprint of the model that made them, so a restart does not re-embed them; a collection embedded
by another model (or a vocabulary file that changed) is embedded again on first use.

A collection file is plain text, one description per line (blank lines and ``#`` comments skipped),
or JSON: a list of strings or of ``{"text": ..., "category": ...}`` objects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select

from indexer.catalog import VOCABULARY_COLLECTION, Text_, TextCollection, stack_blobs, to_blob
from muq_model.identity import vector_space

RESERVED_PREFIX = "builtin:"
MAX_TEXTS = 20_000
MAX_TEXT_CHARS = 500


class TextsError(ValueError):
    """A collection file or name that cannot be used; the message names it."""


class TextsUnavailable(RuntimeError):
    """Text collections cannot be embedded with the running model (it has no tokenizer)."""


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    count: int
    description: str | None
    up_to_date: bool  # embedded with the running model

    def to_dict(self) -> dict:
        return {"name": self.name, "count": self.count, "description": self.description, "up_to_date": self.up_to_date}


def read_collection_file(path: str | os.PathLike) -> tuple[list[str], list[str | None]]:
    """(texts, categories) from a .txt or .json collection file; duplicates dropped, order kept."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TextsError(f"cannot read {path}: {exc}") from exc
    entries: list[tuple[str, str | None]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise TextsError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, list):
            raise TextsError(f"{path}: expected a JSON list of strings or {{\"text\", \"category\"}} objects")
        for n, item in enumerate(data):
            if isinstance(item, str):
                entries.append((item, None))
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                entries.append((item["text"], item.get("category")))
            else:
                raise TextsError(f"{path}: entry #{n} is neither a string nor an object with a 'text'")
    else:
        entries = [(line, None) for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    texts, categories, seen = [], [], set()
    for n, (text, category) in enumerate(entries, 1):
        text = " ".join(text.split())
        if len(text) > MAX_TEXT_CHARS:
            raise TextsError(f"{path}: text #{n} is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
            categories.append(category)
    if not texts:
        raise TextsError(f"{path}: no texts found (one description per line, or a JSON list)")
    if len(texts) > MAX_TEXTS:
        raise TextsError(f"{path}: {len(texts)} texts; the limit is {MAX_TEXTS} per collection")
    return texts, categories


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or name.startswith(RESERVED_PREFIX) or len(name) > 128:
        raise TextsError(f"collection name {name!r} is empty, too long, or starts with {RESERVED_PREFIX!r}")
    return name


def add_collection(catalog, model, path: str | os.PathLike, name: str | None = None, *, replace: bool = False) -> CollectionInfo:
    """Embed a collection file's texts with ``model`` and store them under ``name`` (default: the file name)."""
    texts, categories = read_collection_file(path)
    name = _check_name(name or Path(path).stem)
    with catalog.session() as s:
        exists = s.scalar(select(TextCollection.id).where(TextCollection.name == name)) is not None
    if exists and not replace:
        raise TextsError(f"a collection named {name!r} exists already: remove it first or pass --replace")
    store_collection(catalog, model, name, texts, categories, description=str(Path(path).resolve()))
    return CollectionInfo(name, len(texts), str(Path(path).resolve()), True)


def remove_collection(catalog, name: str) -> None:
    name = _check_name(name)
    with catalog.session.begin() as s:
        if s.execute(delete(TextCollection).where(TextCollection.name == name)).rowcount == 0:
            raise TextsError(f"there is no text collection named {name!r} (see `muqsearch texts list`)")


def list_collections(catalog, fingerprint: dict | None = None) -> list[CollectionInfo]:
    from sqlalchemy import func

    wanted = None if fingerprint is None else vector_space(fingerprint)
    with catalog.session() as s:
        rows = s.execute(
            select(TextCollection.name, TextCollection.description, TextCollection.fingerprint, func.count(Text_.id))
            .join(Text_, isouter=True)
            .group_by(TextCollection.id)
            .order_by(TextCollection.name)
        ).all()
    return [CollectionInfo(n, c, d, wanted is None or f == wanted) for n, d, f, c in rows]


def store_collection(catalog, model, name, texts, categories, *, description=None, source_hash=None) -> np.ndarray:
    """Embed texts and (re)write the collection in one transaction; returns the (n, dim) embeddings."""
    vectors = _embed(model, texts)
    fingerprint = model.vector_space()
    with catalog.session.begin() as s:
        s.execute(delete(TextCollection).where(TextCollection.name == name))
        collection = TextCollection(name=name, description=description, fingerprint=fingerprint, source_hash=source_hash)
        collection.texts = [
            Text_(text=t, category=c, embedding=to_blob(v)) for t, c, v in zip(texts, categories, vectors, strict=True)
        ]
        s.add(collection)
    return vectors


def load_banks(service, memo: dict) -> list:
    """The vocabulary and user collections as TextBanks for the service's model.

    The vocabulary's embeddings are the indexer's auto-tagging cache (``AutoTagger.for_model``); a user
    collection embedded by another model is embedded again and stored. Fresh collections are read from
    the catalog once and then kept in ``memo`` until their row changes.
    """
    from app.search import TextBank
    from indexer.autotag import AutoTagger

    model = service.model
    if not getattr(model, "has_tokenizer", False):
        raise TextsUnavailable(
            "The running model has no text tokenizer, so it cannot score tags or descriptions "
            "(similar-track search still works). Load a model directory that includes its tokenizer files."
        )
    fingerprint = model.vector_space()
    has_catalog = (service.library_dir / "catalog.sqlite").exists()
    vocab_key = (VOCABULARY_COLLECTION, fingerprint)
    if vocab_key not in memo:
        with service._model_lock:
            if has_catalog:
                tagger = AutoTagger.for_model(model, service.library.catalog)
            else:  # no library yet: embed in memory only
                from data.vocabulary import load_vocabulary

                vocabulary = load_vocabulary()
                tagger = AutoTagger(vocabulary, _embed(model, vocabulary.texts))
        tags = tagger.vocabulary.tags
        memo[vocab_key] = TextBank(VOCABULARY_COLLECTION, [t.tag for t in tags], [t.category for t in tags],
                                   tagger.text_vectors)
    banks = [memo[vocab_key]]
    if not has_catalog:
        return banks
    catalog = service.library.catalog
    heads = {n: h for n, h in _collection_heads(catalog).items() if n != VOCABULARY_COLLECTION}
    for name, head in heads.items():
        if head[2] != fingerprint:  # a user collection embedded by another model
            texts, categories, _ = _read_collection(catalog, head[0])
            with service._model_lock:
                store_collection(catalog, model, name, texts, categories, description=head[4])
            heads[name] = _collection_heads(catalog)[name]
    for name in sorted(heads):
        key = (name, *heads[name][:4])
        if key not in memo:
            texts, categories, vectors = _read_collection(catalog, heads[name][0])
            memo[key] = TextBank(name, texts, categories, vectors)
        banks.append(memo[key])
    return banks


def _embed(model, texts) -> np.ndarray:
    if not getattr(model, "has_tokenizer", False):
        raise TextsUnavailable("the running model has no text tokenizer, so it cannot score descriptions")
    return model.embed_text(list(texts)).numpy().astype(np.float32)


def _collection_heads(catalog) -> dict[str, tuple]:
    """name -> (id, created, fingerprint, source_hash, description): enough to tell whether a row changed."""
    with catalog.session() as s:
        rows = s.execute(select(TextCollection.name, TextCollection.id, TextCollection.created,
                                TextCollection.fingerprint, TextCollection.source_hash, TextCollection.description))
        return {r.name: tuple(r)[1:] for r in rows}


def _read_collection(catalog, collection_id: int) -> tuple[list[str], list[str | None], np.ndarray]:
    with catalog.session() as s:
        rows = s.execute(
            select(Text_.text, Text_.category, Text_.embedding)
            .where(Text_.collection_id == collection_id).order_by(Text_.id)
        ).all()
    dim = len(rows[0].embedding) // 4 if rows else 0
    vectors = stack_blobs((r.embedding for r in rows), dim) if rows else np.zeros((0, 0), np.float32)
    return [r.text for r in rows], [r.category for r in rows], vectors
