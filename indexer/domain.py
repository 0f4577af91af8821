"""A model's declared domain, and the library tracks outside it.

A model whose ``config.json`` declares a ``domain`` knows only that music (the demo model: "MuQ Search
demo world"). Used on anything else, its vectors mean nothing: every track "sounds like" every other and
tags are noise. The rule for "outside": a track is inside a domain when its file holds, byte for byte
(same size and SHA-256), one of the domain's own files, wherever the copy lives; every other track is
outside. Only sizes that match a domain file are hashed, so checking a large library costs one catalog
query. A domain whose files this installation does not have cannot vouch for any track: all are outside.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from indexer.catalog import Track
from muq_model.commands import DEFAULT_MODEL


def domain_folders() -> dict[str, Path]:
    """Domains whose files this installation holds: name -> folder of the files."""
    import data.demo

    return {"MuQ Search demo world": Path(data.demo.DEMO_AUDIO_DIR)}


def declared_domain(model) -> str | None:
    """The domain a loaded model, or a model named as a library records it, declares (None: any music).

    A name is read from the local directory's or the hub cache's config.json; nothing is downloaded.
    """
    if not isinstance(model, (str, os.PathLike)):
        return getattr(getattr(model, "config", None), "domain", None)
    config = Path(model) / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(model), "config.json")
        except Exception:  # noqa: BLE001 - not a hub id either: nothing declared that we can read
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("domain")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class DomainReport:
    """How many of a library's tracks lie outside its model's declared domain."""

    domain: str
    tracks: int
    outside: int
    examples: tuple[str, ...]  # a few paths outside

    @property
    def ok(self) -> bool:
        return self.outside == 0

    def warning(self) -> str:
        example = f" (for example {self.examples[0]})" if self.examples else ""
        return (
            f"this library's model only knows the {self.domain}, but {self.outside} of its {self.tracks} tracks "
            f"are other music{example}: their search results, similar tracks and tags mean nothing. For your "
            f"own music use the real model: muqsearch --model {DEFAULT_MODEL} --library DIR index FOLDER "
            "(see the README, \"Using the real MuQ-MuLan-large weights\")."
        )

    def to_dict(self) -> dict:
        return {"domain": self.domain, "tracks": self.tracks, "outside": self.outside,
                "examples": list(self.examples), "warning": None if self.ok else self.warning()}


def check_library(catalog, domain: str | None, *, examples: int = 3) -> DomainReport | None:
    """The tracks of ``catalog`` outside ``domain`` (None when the model declares no domain)."""
    if domain is None:
        return None
    with catalog.session() as s:
        rows = s.execute(select(Track.path, Track.size).order_by(Track.id)).all()
    known = _domain_files(str(domain_folders().get(domain, "")))
    outside = [path for path, size in rows if size not in known or _sha256(path) not in known[size]]
    return DomainReport(domain, len(rows), len(outside), tuple(outside[:examples]))


@functools.lru_cache(maxsize=4)
def _domain_files(folder: str) -> dict[int, frozenset[str]]:
    """size -> SHA-256s of the domain's files (empty for a domain without a folder here)."""
    by_size: dict[int, set[str]] = {}
    if folder and Path(folder).is_dir():
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                by_size.setdefault(path.stat().st_size, set()).add(_sha256(path))
    return {size: frozenset(hashes) for size, hashes in by_size.items()}


def _sha256(path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None  # gone or unreadable: cannot be shown to be a domain file
    return digest.hexdigest()
