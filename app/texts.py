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
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.catalog import VOCABULARY_COLLECTION
from indexer.text_collections import (
    collection_counts,
    collection_heads,
    delete_collection,
    read_collection,
    write_collection,
)
from muq_model.identity import vector_space

RESERVED_PREFIX = "builtin:"
MAX_TEXTS = 20_000
MAX_TEXT_CHARS = 500


class TextsError(ValueError):
    """A collection file or name that cannot be used; the message names it."""


class TextsUnavailable(RuntimeError):
    """The running model cannot embed text (it has no tokenizer)."""


NO_TOKENIZER = (
    "The running model has no text tokenizer, so it cannot read text: text search, tags and descriptions "
    "are off (similar-track search still works). Load a model directory that includes its tokenizer files "
    "(`muqsearch model convert` writes one) or the hub model with network access once."
)


def require_tokenizer(model) -> None:
    """TextsUnavailable unless ``model`` can embed text: the one check, with the one message."""
    if not getattr(model, "has_tokenizer", False):
        raise TextsUnavailable(NO_TOKENIZER)


@dataclass
class TextBank:
    """One text collection's texts and embeddings, as matrices ready to score."""

    name: str
    texts: list[str]
    categories: list[str | None]
    vectors: np.ndarray  # (n, dim) unit rows


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
    if name in collection_heads(catalog) and not replace:
        raise TextsError(f"a collection named {name!r} exists already: remove it first or pass --replace")
    store_collection(catalog, model, name, texts, categories, description=str(Path(path).resolve()))
    return CollectionInfo(name, len(texts), str(Path(path).resolve()), True)


def remove_collection(catalog, name: str) -> None:
    if not delete_collection(catalog, _check_name(name)):
        raise TextsError(f"there is no text collection named {name!r} (see `muqsearch texts list`)")


def list_collections(catalog, fingerprint: dict | None = None) -> list[CollectionInfo]:
    wanted = None if fingerprint is None else vector_space(fingerprint)
    return [CollectionInfo(n, c, d, wanted is None or f == wanted) for n, d, f, c in collection_counts(catalog)]


def store_collection(catalog, model, name, texts, categories, *, description=None) -> np.ndarray:
    """Embed texts and (re)write the collection in one transaction; returns the (n, dim) embeddings."""
    vectors = _embed(model, texts)
    with catalog.session.begin() as s:
        write_collection(s, name, texts, categories, vectors, fingerprint=model.vector_space(), description=description)
    return vectors


class TextCollections:
    """The texts ``describe`` ranks for one running model: the vocabulary and the user's collections as
    TextBanks, kept until their catalog rows change. The search service owns one and shares its model
    lock with it (one forward pass at a time)."""

    def __init__(self, model, lock: threading.Lock):
        self.model = model
        self.lock = lock
        self._memo: dict[tuple, TextBank] = {}

    def banks(self, catalog) -> list[TextBank]:
        """The vocabulary and user collections as TextBanks (``catalog`` None: no library yet, the
        vocabulary is embedded in memory only).

        The vocabulary's embeddings are the indexer's auto-tagging cache (``AutoTagger.for_model``); a user
        collection embedded by another model is embedded again and stored.
        """
        from indexer.autotag import AutoTagger

        model, memo = self.model, self._memo
        require_tokenizer(model)
        fingerprint = model.vector_space()
        vocab_key = (VOCABULARY_COLLECTION, fingerprint)
        if vocab_key not in memo:
            with self.lock:
                if catalog is not None:
                    tagger = AutoTagger.for_model(model, catalog)
                else:
                    from indexer.autotag import vocabulary_for

                    vocabulary = vocabulary_for(model)
                    tagger = AutoTagger(vocabulary, _embed(model, vocabulary.texts))
            tags = tagger.vocabulary.tags
            memo[vocab_key] = TextBank(VOCABULARY_COLLECTION, [t.tag for t in tags], [t.category for t in tags],
                                       tagger.text_vectors)
        banks = [memo[vocab_key]]
        if catalog is None:
            return banks
        heads = {n: h for n, h in collection_heads(catalog).items() if not n.startswith(RESERVED_PREFIX)}
        for name, head in heads.items():
            if head[2] != fingerprint:  # a user collection embedded by another model
                texts, categories, _ = read_collection(catalog, head[0])
                with self.lock:
                    store_collection(catalog, model, name, texts, categories, description=head[4])
                heads[name] = collection_heads(catalog)[name]
        for name in sorted(heads):
            key = (name, *heads[name][:4])
            if key not in memo:
                texts, categories, vectors = read_collection(catalog, heads[name][0])
                memo[key] = TextBank(name, texts, categories, vectors)
            banks.append(memo[key])
        return banks


def _embed(model, texts) -> np.ndarray:
    require_tokenizer(model)
    return model.embed_text(list(texts)).numpy().astype(np.float32)
