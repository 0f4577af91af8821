"""Query spelling: a word the text side never met, one slip away from a word it was trained on, is read as
that word.

A small text side learns its words from its training captions; "gitar" or "trumptes" is, to it, a different
string of word pieces, and the search drifts to another instrument. So the words of the training captions are
kept with the model (``caption_words.json``, word -> count, written by training; slips that the captions' own
typo augmentation wrote are left out, see :func:`drop_slips`) and a query word is corrected only when all of
this holds:

- it has at least ``MIN_LETTERS`` letters (short words are too often something else);
- it is neither a training-caption word nor a whole word of the tokenizer's vocabulary (a real word the
  tokenizer knows is left as typed, even when it sits one slip from a caption word: "quite" stays "quite");
- a training-caption word lies one edit away (a letter inserted, deleted, replaced, or two neighbours swapped).
  The most frequent such word wins; ties go to the alphabetically first.

A model without the word list (the official checkpoints) is never corrected. The search says what it searched
for, so a correction is never silent.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CAPTION_WORDS_FILE = "caption_words.json"
MIN_LETTERS = 4
SLIP_RATIO = 10  # a caption word this many times rarer than a word one edit away is a slip of it
WORD = re.compile(r"[^\W\d_]+")


def count_words(texts: Iterable[str]) -> Counter:
    """Lower-case word counts over `texts` (words: runs of letters)."""
    return Counter(word.lower() for text in texts for word in WORD.findall(text))


def drop_slips(counts: Mapping[str, int]) -> dict[str, int]:
    """`counts` without the words that are slips of a caption word: those one edit away from a word at least
    ``SLIP_RATIO`` times as frequent ("bss" beside "bass"). Augmented captions misspell on purpose, so that
    the text side learns to read slips; the speller must not take them for words."""
    return {word: count for word, count in counts.items()
            if not any(counts.get(other, 0) >= SLIP_RATIO * count for other in one_edit(word))}


def read_caption_words(directory: str | Path) -> dict[str, int]:
    """The model directory's caption word counts; {} when it has none. A malformed file is an error naming it."""
    path = Path(directory) / CAPTION_WORDS_FILE
    if not path.is_file():
        return {}
    try:
        words = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(words, dict) or not all(isinstance(c, int) for c in words.values()):
            raise ValueError("expected an object of word -> count")
    except ValueError as exc:
        raise ValueError(f"{path}: not a caption word list ({exc})") from exc
    return {str(w): int(c) for w, c in words.items()}


def write_caption_words(directory: str | Path, words: Mapping[str, int]) -> None:
    path = Path(directory) / CAPTION_WORDS_FILE
    path.write_text(json.dumps(dict(sorted(words.items())), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


def tokenizer_words(tokenizer) -> set[str]:
    """Whole words of a tokenizer's vocabulary, lower case: WordPiece entries that do not continue a word
    ('##') and SentencePiece entries that start one ('▁')."""
    if tokenizer is None:
        return set()
    words = set()
    for piece in tokenizer.get_vocab():
        if piece.startswith("##"):
            continue
        piece = piece.removeprefix("▁")
        if piece.isalpha():
            words.add(piece.lower())
    return words


def one_edit(word: str) -> set[str]:
    """Every string one insertion, deletion, replacement or neighbour swap away from `word` (a-z edits)."""
    letters = string.ascii_lowercase
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return ({a + b[1:] for a, b in splits if b}
            | {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
            | {a + c + b[1:] for a, b in splits if b for c in letters}
            | {a + c + b for a, b in splits for c in letters}) - {word}


@dataclass(frozen=True)
class Correction:
    typed: str
    read_as: str

    def to_dict(self) -> dict:
        return {"typed": self.typed, "read_as": self.read_as}


class Speller:
    """Corrects query words against a model's training-caption words (see the module docstring)."""

    def __init__(self, caption_words: Mapping[str, int], known_words: Iterable[str] = ()):
        self.counts = {w.lower(): int(c) for w, c in caption_words.items()}
        self.known = set(self.counts) | {w.lower() for w in known_words}

    @classmethod
    def for_model(cls, model) -> Speller | None:
        """The speller of a loaded model (its ``caption_words``), None when it has no caption word list."""
        words = getattr(model, "caption_words", None)
        return cls(words, tokenizer_words(model.tokenizer)) if words else None

    def word(self, word: str) -> str:
        """The caption word `word` is read as (lower case), or `word` itself."""
        lower = word.lower()
        if len(lower) < MIN_LETTERS or lower in self.known:
            return word
        candidates = [w for w in one_edit(lower) if w in self.counts]
        if not candidates:
            return word
        best = min(candidates, key=lambda w: (-self.counts[w], w))
        return best.upper() if word.isupper() else best.capitalize() if word[0].isupper() else best

    def correct(self, text: str) -> tuple[str, list[Correction]]:
        """(the text with its misspelt words replaced, what was replaced), the rest of the text unchanged."""
        corrections: list[Correction] = []

        def replace(match: re.Match) -> str:
            typed = match.group()
            read_as = self.word(typed)
            if read_as != typed:
                corrections.append(Correction(typed, read_as))
            return read_as

        return WORD.sub(replace, text), corrections
