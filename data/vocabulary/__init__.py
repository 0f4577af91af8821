"""The built-in tag vocabulary: genre, mood, instrument, era and scene tags, each with the text the model
embeds for it (``vocabulary.json``; the category's template unless the tag gives its own text).

The indexer scores every track against these texts to store its top tags per category (``top_k``);
the app can rank them for ``describe``. :attr:`Vocabulary.hash` changes whenever the file does, so
cached text embeddings are recomputed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

VOCABULARY_PATH = Path(__file__).resolve().parent / "vocabulary.json"


class VocabularyError(ValueError):
    """A vocabulary file that does not follow the format; the message names the file and entry."""


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    top_k: int  # auto-tags kept per track in this category
    template: str  # "{} music": how a tag becomes the text that is embedded


@dataclass(frozen=True)
class VocabularyTag:
    tag: str
    category: str
    text: str  # what the model embeds


@dataclass(frozen=True)
class Vocabulary:
    categories: dict[str, Category]
    tags: tuple[VocabularyTag, ...]
    hash: str  # of the file's content

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.tags]

    def in_category(self, category: str) -> list[int]:
        """Positions (into ``tags``) of the tags of one category."""
        return [i for i, t in enumerate(self.tags) if t.category == category]


def load_vocabulary(path: str | Path = VOCABULARY_PATH) -> Vocabulary:
    path = Path(path)
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
        categories = {
            name: Category(name, c["description"], int(c["top_k"]), c["template"])
            for name, c in data["categories"].items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise VocabularyError(f"{path}: malformed vocabulary header ({exc})") from exc
    tags, seen, texts = [], set(), set()
    for n, entry in enumerate(data.get("tags", [])):
        try:
            tag, category = str(entry["tag"]).strip(), entry["category"]
        except (KeyError, TypeError) as exc:
            raise VocabularyError(f"{path}: tag #{n} needs 'tag' and 'category' ({entry!r})") from exc
        if category not in categories:
            raise VocabularyError(f"{path}: tag {tag!r} has unknown category {category!r}")
        if not tag or (tag, category) in seen:
            raise VocabularyError(f"{path}: tag #{n} ({tag!r}) is empty or repeated in {category}")
        seen.add((tag, category))
        text = entry.get("text") or categories[category].template.format(tag)
        if text in texts:
            raise VocabularyError(f"{path}: tag {tag!r} would embed the same text as another tag: {text!r}")
        texts.add(text)
        tags.append(VocabularyTag(tag, category, text))
    return Vocabulary(categories, tuple(tags), hashlib.sha256(raw).hexdigest()[:16])
