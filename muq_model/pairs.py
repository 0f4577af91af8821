"""(audio, caption) pair files, JSONL or CSV: the one reader that training and evaluation share.

A row names its audio in one of AUDIO_KEYS (a path, relative to a root folder: by default the file's own)
and its text in one of TEXT_KEYS or in a `captions` list of strings; other fields (`id`, `split`,
`group`, ...) are the caller's. A row that cannot be used (not JSON, not an object, no audio, no text) is
reported as :class:`Excluded`, named by file and line, and skipped: one bad row never stops a run.
Whether the audio file exists and decodes is the caller's check (training skips it when decoding
fails, evaluation before embedding).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

AUDIO_KEYS = ("audio_path", "audio", "path", "file")
TEXT_KEYS = ("text", "caption")
CAPTIONS_KEY = "captions"
NO_AUDIO = f"no audio path (one of the fields {', '.join(AUDIO_KEYS)})"
NO_TEXT = "no caption (field 'text', 'caption' or a 'captions' list of strings)"


@dataclass(frozen=True)
class Excluded:
    """A row, record or audio file left out, and why."""

    item: str  # "file:line", or the record's id
    audio: str  # the audio it named, "" if none
    reason: str


@dataclass(frozen=True)
class PairRow:
    """One usable row: its audio and every text it gives for it."""

    where: str  # "file:line"
    audio: Path  # root / the row's audio path; not checked to exist
    texts: tuple[str, ...]  # stripped, non-empty
    record: dict  # the whole row, for the fields a caller reads itself


def read_records(path: Path) -> tuple[list[tuple[str, dict]], list[Excluded]]:
    """("file:line", row) for every row of a JSONL or CSV file (line numbers as an editor shows them:
    a CSV header is line 1), and the rows that are not JSON objects, as Excluded."""
    name = path.name
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return [(f"{name}:{i}", row) for i, row in enumerate(csv.DictReader(handle), start=2)], []
    records, excluded = [], []
    with open(path, encoding="utf-8") as handle:
        for i, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{name}:{i}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                excluded.append(Excluded(where, "", f"not valid JSON: {exc.msg} (column {exc.colno})"))
                continue
            if not isinstance(record, dict):
                excluded.append(Excluded(where, "", f"a record must be a JSON object, got {type(record).__name__}"))
                continue
            records.append((where, record))
    return records, excluded


def is_pair_record(record: dict) -> bool:
    """Whether a record carries its text the way pair files do (any of TEXT_KEYS or `captions`)."""
    return any(key in record for key in (*TEXT_KEYS, CAPTIONS_KEY))


def pair_rows(
    records: list[tuple[str, dict]], root: Path, split: str | None = None
) -> tuple[list[PairRow], list[Excluded]]:
    """The usable (audio, texts) rows of `records` and the excluded ones. With `split`, rows whose
    `split` field is another value are left out silently (they belong to another split, not wrong)."""
    rows, excluded = [], []
    for where, record in records:
        if split is not None and record.get("split", split) != split:
            continue
        audio = next((value.strip() for key in AUDIO_KEYS if isinstance(value := record.get(key), str) and value.strip()),
                     "")
        texts = row_texts(record)
        problems = [problem for problem, missing in ((NO_AUDIO, not audio), (NO_TEXT, not texts)) if missing]
        if problems:
            excluded.append(Excluded(where, audio, "; ".join(problems)))
            continue
        rows.append(PairRow(where, root / audio, texts, record))
    return rows, excluded


def row_texts(record: dict) -> tuple[str, ...]:
    """A row's texts: its `captions` list, else its TEXT_KEYS values; () when any is not a non-empty string."""
    texts = record.get(CAPTIONS_KEY) or [record[key] for key in TEXT_KEYS if record.get(key)]
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) and t.strip() for t in texts):
        return ()
    return tuple(t.strip() for t in texts)


def record_field(record: dict, name: str):
    """`name` in a record; a dotted name reaches into nested objects ("attributes.instrument"). None
    when absent or empty."""
    value = record
    for part in name.split("."):
        if not isinstance(value, dict) or value.get(part) in (None, ""):
            return None
        value = value[part]
    return value
