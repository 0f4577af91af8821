"""Result lists as M3U playlists, CSV sheets or JSON, the same bytes from the CLI and the web UI."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from app.search import Result

FORMATS = ("m3u", "csv", "json")
CSV_COLUMNS = ("rank", "track_id", "score", "title", "artist", "album", "year", "duration", "tags", "start", "end", "path")


def to_json(results: Sequence[Result]) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False) + "\n"


def to_m3u(results: Sequence[Result]) -> str:
    """Extended M3U; a moment becomes VLC's start-time option so the player jumps to it."""
    lines = ["#EXTM3U"]
    for r in results:
        seconds = -1 if r.duration is None else round(r.duration)
        label = f"{r.artist} - {r.title}" if r.artist else r.title
        lines.append(f"#EXTINF:{seconds},{_one_line(label)}")
        if r.moment is not None:
            lines.append(f"#EXTVLCOPT:start-time={r.moment.start:g}")
        lines.append(r.path)
    return "\n".join(lines) + "\n"


def to_csv(results: Sequence[Result]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rank, r in enumerate(results, 1):
        row = r.to_dict()
        row.update(rank=rank, tags=";".join(r.tags))
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in CSV_COLUMNS})
    return out.getvalue()


WRITERS = {"m3u": to_m3u, "csv": to_csv, "json": to_json}


def write(results: Sequence[Result], path: str | Path, fmt: str | None = None) -> Path:
    """Write in the format the extension names (or ``fmt``); UTF-8, so M3U is really M3U8."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    fmt = "m3u" if fmt == "m3u8" else fmt
    if fmt not in WRITERS:
        raise ValueError(f"cannot export to {path.name}: use one of .{', .'.join(FORMATS)}")
    path.write_text(WRITERS[fmt](results), encoding="utf-8")
    return path


def _one_line(text: str) -> str:
    return " ".join(text.split())
