"""Helpers for tests only. Synthetic audio files come from benchmarks.audio_files, which benchmarks share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import data.demo
from indexer.tags import ID3_FRAMES

needs_demo = pytest.mark.skipif(not (Path(data.demo.DEMO_MODEL_DIR) / "config.json").is_file(),
                                reason="the demo model is not in data/demo/model")


def write_tags(path: str | os.PathLike, **tags: str) -> None:
    """Set text tags (title, artist, album, albumartist, date, genre, tracknumber) with mutagen's easy API."""
    import mutagen
    from mutagen import id3

    audio = mutagen.File(str(path), easy=True)
    if audio is None:
        raise ValueError(f"mutagen cannot tag {path}")
    if audio.tags is None:
        audio.add_tags()
    for key, value in tags.items():
        if isinstance(audio.tags, id3.ID3):  # WAV/AIFF carry raw ID3 frames
            frame_id = ID3_FRAMES[key]
            audio.tags.add(getattr(id3, frame_id)(encoding=id3.Encoding.UTF8, text=[value]))
        else:
            audio[key] = value
    audio.save()
