"""The bundled demo world: a generated, captioned music library and a small MuQ-MuLan trained on it.

Paths point into the installed package, so they work from a fresh clone or a wheel. The library is
regenerated bit-for-bit in attributes and captions (and in audio before Opus encoding) by
`python -m data.demo.generate --seed DEMO_SEED --out DIR`.
"""

from __future__ import annotations

import json
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_AUDIO_DIR = DEMO_DIR / "library"
DEMO_CAPTIONS = DEMO_DIR / "captions.jsonl"  # one record per clip: id, file, split, attributes, captions
DEMO_EVAL_SET = DEMO_DIR / "eval_test.jsonl"  # the held-out test split as (audio_path, text, group) rows
DEMO_MODEL_DIR = DEMO_DIR / "model"
DEMO_PREBUILT_DIR = DEMO_DIR / "prebuilt"  # the demo library indexed ahead (python -m data.demo.build_library)
DEMO_SEED = 20260
DEMO_CLIPS = 720
DEMO_TEST_CLIPS = 120

# Queries worded unlike any caption template, with the attributes the top results should have
# (attribute names and values as in captions.ATTRIBUTES).
EXAMPLE_QUERIES: tuple[tuple[str, dict[str, str]], ...] = (
    ("slow sad piano", {"instrument": "piano", "tempo": "slow", "mode": "minor"}),
    ("fast happy flute", {"instrument": "flute", "tempo": "fast", "mode": "major"}),
    ("organ in waltz time", {"instrument": "organ", "rhythm": "waltz"}),
    ("strings with a breakbeat", {"instrument": "strings", "rhythm": "breakbeat"}),
    ("quiet bells with no drums", {"instrument": "bells", "loudness": "quiet", "rhythm": "none"}),
    ("dance beat with brass", {"instrument": "brass", "rhythm": "four_on_the_floor"}),
)


def load_records(split: str | None = None, path: Path = DEMO_CAPTIONS) -> list[dict]:
    """The caption records (optionally one split: "train" or "test"), with `path` made absolute."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if split is None or record["split"] == split:
                record["path"] = str(path.parent / record["file"])
                records.append(record)
    return records
