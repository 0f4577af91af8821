"""Labelled music-text sets: WikiMT-X style records and generic (audio, text) pairs, as one list of pairs.

Both formats become :class:`Pair` rows (one text describing one audio file, under a text field) plus a
list of what was left out and why. A record that cannot be used (bad JSON, no audio, audio file missing,
no text) is reported in ``excluded`` with a reason naming the file, line and field, and the run goes on:
nothing is dropped silently.

- **WikiMT-X style** JSONL: one record per item with text fields (``background``, ``analysis``,
  ``description``, ``scene`` by default) and the audio found through ``audio`` or ``audio_path``
  (a path), else ``id`` (a file ``<id>.<ext>`` under the audio root).
- **Pairs** CSV or JSONL, read by the reader training uses too (muq_model.pairs): the audio in
  ``audio_path`` (or ``audio``, ``path``, ``file``), the text in ``text`` (or ``caption``, or a ``captions``
  list), and optionally ``group`` and ``field``. A text and an audio are relevant to each other when they
  share a row, or a non-empty ``group`` (e.g. several recordings of one piece, several wordings of one
  brief). ``field`` names the text field the row is reported under (default ``text``).

Relative audio paths resolve against the audio root, by default the dataset file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from muq_model.identity import file_sha256
from muq_model.pairs import Excluded, is_pair_record, pair_rows, read_records

WIKIMT_FIELDS = ("background", "analysis", "description", "scene")
AUDIO_PATH_KEYS = ("audio", "audio_path")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".wma")
PAIRS_FIELD = "text"
FORMATS = ("auto", "wikimt", "pairs")


@dataclass(frozen=True)
class Pair:
    """One text describing one audio file."""

    item: str  # the record it came from: its id, else "file:line"
    audio: Path
    field: str
    text: str
    group: str | None = None


@dataclass
class EvalSet:
    path: Path
    format: str  # "wikimt" or "pairs"
    pairs: list[Pair]  # every usable pair; the audio of all of them is the candidate pool
    fields: tuple[str, ...]  # the text fields to evaluate
    excluded: list[Excluded]
    file_hash: str  # sha256 of the dataset file's bytes


def load_dataset(
    path: str | Path,
    *,
    audio_root: str | Path | None = None,
    fields: list[str] | tuple[str, ...] | None = None,
    format: str = "auto",
) -> EvalSet:
    """Read a dataset file; ``fields`` selects the text fields to evaluate (default: all the file has).

    The audio pool does not depend on ``fields``: every item with usable audio and some text is a candidate.
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}: use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    root = Path(audio_root) if audio_root is not None else path.parent
    if audio_root is not None and not root.is_dir():
        raise FileNotFoundError(f"audio root is not a folder: {root}")
    records, excluded = read_records(path)
    if format == "auto":
        format = "pairs" if path.suffix.lower() == ".csv" or any(is_pair_record(r) for _, r in records) else "wikimt"
    if format == "pairs":
        pairs = _pairs_from_rows(records, root, excluded)
    else:
        pairs = _pairs_from_wikimt(records, root, excluded, tuple(dict.fromkeys([*(fields or ()), *WIKIMT_FIELDS])))
    if not pairs:
        raise ValueError(f"{path}: no usable (audio, text) pairs; {len(excluded)} records excluded")
    present = list(dict.fromkeys(p.field for p in pairs))
    if format == "wikimt":
        present.sort(key=lambda f: WIKIMT_FIELDS.index(f) if f in WIKIMT_FIELDS else len(WIKIMT_FIELDS))
    unknown = [f for f in fields or () if f not in present]
    if unknown:
        raise ValueError(
            f"{path}: no usable text in field(s) {', '.join(unknown)}; fields with text: {', '.join(present)}"
        )
    selected = tuple(fields) if fields else tuple(present)
    return EvalSet(path, format, pairs, selected, excluded, file_sha256(path))


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _pairs_from_rows(records: list[tuple[str, dict]], root: Path, excluded: list[Excluded]) -> list[Pair]:
    rows, bad = pair_rows(records, root)
    excluded.extend(bad)
    pairs = []
    for row in rows:
        if not row.audio.is_file():
            excluded.append(Excluded(row.where, str(row.audio), "audio file not found"))
            continue
        field = _text(row.record.get("field")) or PAIRS_FIELD
        group = _text(row.record.get("group")) or None
        pairs.extend(Pair(row.where, row.audio, field, text, group) for text in row.texts)
    return pairs


def _pairs_from_wikimt(
    records: list[tuple[str, dict]], root: Path, excluded: list[Excluded], fields: tuple[str, ...] | list[str]
) -> list[Pair]:
    pairs = []
    for where, record in records:
        item = str(record["id"]) if record.get("id") not in (None, "") else where
        audio, problem = _wikimt_audio(record, root)
        if audio is None:
            excluded.append(Excluded(item, "", f"{where}: {problem}"))
            continue
        if not audio.is_file():
            excluded.append(Excluded(item, str(audio), f"{where}: audio file not found"))
            continue
        texts = [(field, _text(record.get(field))) for field in fields]
        texts = [(field, text) for field, text in texts if text]
        if not texts:
            excluded.append(Excluded(item, str(audio), f"{where}: no text in field(s) {', '.join(fields)}"))
            continue
        pairs.extend(Pair(item, audio, field, text) for field, text in texts)
    return pairs


def _wikimt_audio(record: dict, root: Path) -> tuple[Path | None, str]:
    """The record's audio file (possibly not existing), or None and why."""
    for key in AUDIO_PATH_KEYS:
        value = _text(record.get(key))
        if value:
            return root / value, ""
    item_id = record.get("id")
    if item_id in (None, ""):
        return None, f"no audio: the record has none of the fields {', '.join(AUDIO_PATH_KEYS)}, id"
    candidates = [root / f"{item_id}{ext}" for ext in AUDIO_EXTENSIONS] + [root / str(item_id)]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        return None, f"audio file not found: no {root / str(item_id)}.<{'|'.join(e[1:] for e in AUDIO_EXTENSIONS)}>"
    return found, ""
