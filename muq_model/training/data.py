"""Training items: the rows of (audio, caption) pair files (muq_model.pairs), one item per audio file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from muq_model.pairs import Excluded, pair_rows, read_records, record_field


@dataclass
class TrainItem:
    """One audio file and every caption that describes it."""

    audio: Path
    captions: list[str]
    group: str | None = None  # with --group-by: items of one group are drawn together as hard negatives
    labels: dict[str, str] | None = None  # with --labels: {kind: value} for the auxiliary label loss


class DataError(ValueError):
    """Training data that cannot be used at all; the message names the file (and the rows left out)."""


def read_pairs(path: str | Path, split: str | None = None, group_by: str | None = None,
               labels: str | None = None) -> list[TrainItem]:
    """(audio, caption) pairs from JSONL or CSV (see muq_model.pairs), grouped by audio file.

    Relative audio paths resolve against the data file's folder. With `split`, rows whose `split` field
    differs are left out. With `group_by`, each row's value of that field (dotted for nested objects)
    becomes its item's group. With `labels`, that field must hold a {kind: value} object (e.g. the demo
    world's `attributes`), kept as the item's labels. A row without audio, text, the group or the labels
    field is skipped and printed with its file and line; a file with no usable row raises DataError naming
    them.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training data file {path} does not exist")
    records, excluded = read_records(path)
    rows, bad = pair_rows(records, path.parent, split)
    excluded += bad
    items: dict[Path, TrainItem] = {}
    for row in rows:
        group = None
        if group_by is not None:
            group = record_field(row.record, group_by)
            if group is None:
                excluded.append(Excluded(row.where, str(row.audio), f"no value for the --group-by field {group_by!r}"))
                continue
            group = str(group)
        values = None
        if labels is not None:
            values = record_field(row.record, labels)
            if not isinstance(values, dict):
                excluded.append(Excluded(row.where, str(row.audio), f"no {{kind: value}} object in the --labels "
                                                                    f"field {labels!r}"))
                continue
            values = {str(k): str(v) for k, v in values.items()}
        audio = row.audio.resolve()
        item = items.setdefault(audio, TrainItem(audio=audio, captions=[], group=group, labels=values))
        item.captions.extend(row.texts)
    excluded.sort(key=lambda e: int(e.item.rpartition(":")[2]))  # file order; every item is "file:line" here
    for skipped in excluded:
        print(f"skipped {skipped.item}: {skipped.reason}", flush=True)
    if not items:
        reasons = "; ".join(f"{e.item}: {e.reason}" for e in excluded[:3])
        raise DataError(f"{path}: no usable (audio, caption) rows{f' in split {split!r}' if split else ''}"
                        + (f" ({len(excluded)} left out: {reasons}{', ...' if len(excluded) > 3 else ''})" if excluded else ""))
    return list(items.values())
