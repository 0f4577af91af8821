"""Read a track's descriptive tags with mutagen, falling back to what the file name says.

Tags are never a reason to fail a track: a file whose tags cannot be read is still indexed, with the
title (and, for "Artist - Title" names, the artist and track number) taken from its name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# mutagen's "easy" key -> ID3 frame, for ID3 tags embedded in WAV/AIFF (mutagen has no easy view there).
ID3_FRAMES = {
    "title": "TIT2",
    "artist": "TPE1",
    "album": "TALB",
    "albumartist": "TPE2",
    "date": "TDRC",
    "genre": "TCON",
    "tracknumber": "TRCK",
}
GENRE_SEPARATORS = re.compile(r"\s*[;/\x00|]\s*")
# "03 - Artist - Title", "03. Title", "03 Title", "Artist - Title", "Title"
FILENAME_PATTERN = re.compile(
    r"^(?:(?P<track>\d{1,3})(?:\s*[-._]\s*|\s+))?(?:(?P<artist>.+?)\s+-\s+)?(?P<title>.+)$"
)


@dataclass(frozen=True)
class TrackTags:
    title: str
    artist: str | None = None
    album: str | None = None
    albumartist: str | None = None
    year: int | None = None
    genres: list[str] = field(default_factory=list)
    tracknumber: int | None = None
    from_filename: bool = False  # True when the title came from the file name


def read_tags(path: str | os.PathLike) -> TrackTags:
    """The file's tags, with any missing title/artist/track number filled in from its name."""
    path = Path(path)
    raw = _read_raw(path)
    guessed = tags_from_filename(path)
    return TrackTags(
        title=raw.get("title") or guessed.title,
        artist=raw.get("artist") or guessed.artist,
        album=raw.get("album"),
        albumartist=raw.get("albumartist"),
        year=_parse_year(raw.get("date")),
        genres=_split_genres(raw.get("genre", [])),
        tracknumber=_parse_number(raw.get("tracknumber")) or guessed.tracknumber,
        from_filename=not raw.get("title"),
    )


def tags_from_filename(path: str | os.PathLike) -> TrackTags:
    """Guess title, artist and track number from a name like "03 - Artist - Title.mp3"."""
    stem = Path(path).stem.replace("_", " ").strip()
    match = FILENAME_PATTERN.match(stem)
    if not match or not match.group("title").strip():
        return TrackTags(title=stem or Path(path).name, from_filename=True)
    track = match.group("track")
    return TrackTags(
        title=match.group("title").strip(),
        artist=(match.group("artist") or "").strip() or None,
        tracknumber=int(track) if track else None,
        from_filename=True,
    )


def _read_raw(path: Path) -> dict:
    """{easy key: str} (genre: list of str) from whatever tag format the file has; {} when none."""
    import mutagen
    from mutagen.id3 import ID3

    try:
        audio = mutagen.File(str(path), easy=True)
    except Exception:  # noqa: BLE001 - mutagen raises many types on odd files; tags are optional
        return {}
    if audio is None or audio.tags is None:
        return {}
    out: dict = {}
    if isinstance(audio.tags, ID3):  # WAV/AIFF: no easy view, read frames
        for key, frame_id in ID3_FRAMES.items():
            frame = audio.tags.get(frame_id)
            if frame is not None:
                values = frame.genres if frame_id == "TCON" else [str(v) for v in frame.text]
                out[key] = values
    else:
        for key in ID3_FRAMES:
            try:
                values = audio.tags.get(key)
            except (KeyError, ValueError):
                values = None
            if values:
                out[key] = [str(v) for v in values]
    return {
        key: values if key == "genre" else _first(values)
        for key, values in out.items()
        if any(str(v).strip() for v in values)
    }


def _first(values: list[str]) -> str | None:
    for value in values:
        if str(value).strip():
            return str(value).strip()
    return None


def _parse_year(value: str | None) -> int | None:
    match = re.search(r"\b(\d{4})\b", value or "")
    return int(match.group(1)) if match else None


def _parse_number(value: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", value or "")  # "3", "03/12"
    return int(match.group(1)) if match else None


def _split_genres(values: list[str]) -> list[str]:
    genres: list[str] = []
    for value in values:
        for part in GENRE_SEPARATORS.split(str(value)):
            if part and part.lower() not in (g.lower() for g in genres):
                genres.append(part)
    return genres

