"""Metadata filters (artist, album, year range, duration range, tags) shared by the CLI, UI and API.

A filter turns into a boolean mask over the tracks of one index generation; the search service then
ranks only the tracks the mask lets through, so filtering never costs recall (see ``app.search``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

FILTER_KEYS = ("artist", "album", "year", "duration", "tag")


class FilterError(ValueError):
    """A filter expression that cannot be parsed; the message names the expression."""


@dataclass(frozen=True)
class Filters:
    """Every set field must hold; text fields match case-insensitively as substrings."""

    artist: str | None = None
    album: str | None = None
    year_min: int | None = None
    year_max: int | None = None
    duration_min: float | None = None  # seconds
    duration_max: float | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)  # all of them, exact tag names (case-insensitive)

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) not in (None, "", ()) for f in fields(self))

    @classmethod
    def parse(cls, expressions: Iterable[str]) -> Filters:
        """Build from CLI/API expressions: ``artist=Bach``, ``album=...``, ``year=1990..1999``,
        ``duration=60..300`` (seconds, either end optional, ``-`` also separates), ``tag=piano``."""
        values: dict = {"tags": []}
        for expression in expressions:
            key, sep, value = (part.strip() for part in str(expression).partition("="))
            key = key.lower()
            if not sep or not value:
                raise FilterError(f"filter {expression!r}: expected KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
            if key in ("artist", "album"):
                values[key] = value
            elif key in ("tag", "tags"):
                values["tags"].extend(t.strip() for t in value.split(",") if t.strip())
            elif key == "year":
                low, high = _parse_range(expression, value)
                values["year_min"] = None if low is None else int(low)
                values["year_max"] = None if high is None else int(high)
            elif key == "duration":
                values["duration_min"], values["duration_max"] = _parse_range(expression, value)
            else:
                raise FilterError(f"filter {expression!r}: unknown key {key!r} (use {', '.join(FILTER_KEYS)})")
        values["tags"] = tuple(values["tags"])
        return cls(**values)

    def describe(self) -> str:
        parts = [f"{name}={value}" for name, value in (("artist", self.artist), ("album", self.album)) if value]
        if self.year_min is not None or self.year_max is not None:
            parts.append(f"year={_fmt(self.year_min)}..{_fmt(self.year_max)}")
        if self.duration_min is not None or self.duration_max is not None:
            parts.append(f"duration={_fmt(self.duration_min)}..{_fmt(self.duration_max)}")
        parts += [f"tag={tag}" for tag in self.tags]
        return ", ".join(parts)

    def parts(self) -> list[Filters]:
        """One Filters per condition that is set (a range counts as one, each tag as one)."""
        out = [Filters(artist=self.artist)] if self.artist else []
        out += [Filters(album=self.album)] if self.album else []
        if self.year_min is not None or self.year_max is not None:
            out.append(Filters(year_min=self.year_min, year_max=self.year_max))
        if self.duration_min is not None or self.duration_max is not None:
            out.append(Filters(duration_min=self.duration_min, duration_max=self.duration_max))
        return out + [Filters(tags=(tag,)) for tag in self.tags]

    def explain_empty(self, tracks: TrackColumns, *, max_tags: int = 40) -> str:
        """Why no track passes: each condition that no track meets on its own (an unknown tag with the
        tags the library has), or that the conditions, each met by some tracks, are never met together."""
        reasons = []
        for part in self.parts():
            if part.mask(tracks).any():
                continue
            if part.tags:
                known = sorted({t for ts in tracks.tags for t in ts}, key=str.casefold)
                listed = ", ".join(known[:max_tags]) + (f" and {len(known) - max_tags} more" if len(known) > max_tags else "")
                reasons.append(f"no track has the tag {part.tags[0]!r} (tags in this library: {listed or 'none'})")
            elif part.year_min is not None or part.year_max is not None:
                known = int(np.isfinite(tracks.years).sum())
                reasons.append(f"no track is from {part.describe().removeprefix('year=')}"
                               + ("" if known else " (no track in this library has a year)"))
            else:
                reasons.append(f"no track has {part.describe()}")
        if not reasons:
            return f"No tracks match all of {self.describe()} together (each matches some tracks on its own)."
        return "No tracks match: " + "; ".join(reasons) + "."

    def mask(self, tracks: TrackColumns) -> np.ndarray:
        """(n_tracks,) bool: which tracks pass. Unknown years/durations fail a range on that field."""
        keep = np.ones(len(tracks.ids), dtype=bool)
        for needle, column in ((self.artist, tracks.artists), (self.album, tracks.albums)):
            if needle:
                needle = needle.casefold()
                keep &= np.fromiter((needle in value.casefold() for value in column), bool, len(column))
        for low, high, column in (
            (self.year_min, self.year_max, tracks.years),
            (self.duration_min, self.duration_max, tracks.durations),
        ):
            with np.errstate(invalid="ignore"):  # NaN (unknown) compares False: filtered out
                if low is not None:
                    keep &= column >= low
                if high is not None:
                    keep &= column <= high
        if self.tags:
            wanted = {tag.casefold() for tag in self.tags}
            keep &= np.fromiter((wanted <= have for have in tracks.tag_sets), bool, len(tracks.tag_sets))
        return keep


@dataclass(frozen=True)
class TrackColumns:
    """The catalog's track metadata for one index generation, as columns the filters can scan fast."""

    ids: np.ndarray  # (n,) int64 track ids
    paths: Sequence[str]
    titles: Sequence[str]
    artists: Sequence[str]
    albums: Sequence[str]
    years: np.ndarray  # (n,) float64, NaN = unknown
    durations: np.ndarray  # (n,) float64 seconds, NaN = unknown
    tags: Sequence[tuple[str, ...]]  # display order: auto-tags by score, then file genres
    tag_sets: Sequence[frozenset[str]]  # casefolded, for filtering


def _parse_range(expression: str, value: str) -> tuple[float | None, float | None]:
    # Years and durations are never negative, so "-" can separate like "..": 1990-1999, -300, 60-.
    sep = ".." if ".." in value else "-" if "-" in value else None
    if sep is None:
        low = high = value
    else:
        low, _, high = value.partition(sep)
    try:
        bounds = tuple(float(v) if v.strip() else None for v in (low, high))
    except ValueError as exc:
        raise FilterError(f"filter {expression!r}: expected a number or a range like 1990..1999") from exc
    if any(b is not None and not math.isfinite(b) for b in bounds):
        raise FilterError(f"filter {expression!r}: bounds must be finite numbers")
    if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise FilterError(f"filter {expression!r}: the lower bound is above the upper bound")
    return bounds


def _fmt(value) -> str:
    return "" if value is None else f"{value:g}"
