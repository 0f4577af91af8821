"""Generate the real-instrument world: pieces rendered stem by stem with a General MIDI SoundFont.

    python -m data.instruments.generate --seed 13 --pieces 128 --out DIR

writes, for piece NNNN, DIR/audio/piece-NNNN/mix.opus and one DIR/audio/piece-NNNN/S-ROLE.opus per stem
(mono Ogg/Opus at 24 kHz), DIR/labels.jsonl (one record per piece: source, key and mode, tempo, meter,
and per stem the GM program and family or the drum kit and pattern, and the pitch range), and the
evaluation sets derived from the labels (data.instruments.sets): ABX triplets, a tagging set, probe sets.
Piece i depends only on (seed, i), so more pieces never change the first ones; the same seed gives the
same notes, labels and waveforms (the Opus encoder runs on identical input).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from data.demo.generate import OPUS_COMPRESSION
from data.instruments import WORLD_PIECES, WORLD_SEED
from data.instruments.compose import Piece, compose
from data.instruments.render import SAMPLE_RATE, render_piece, soundfont_path
from data.instruments.sets import write_eval_sets

CLIP_SECONDS = 10.0


def piece_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def piece_id(index: int) -> str:
    return f"piece-{index + 1:04d}"


def compose_piece(seed: int, index: int, seconds: float = CLIP_SECONDS) -> Piece:
    return compose(np.random.default_rng(piece_seed(seed, index)), seconds)


def label_record(piece: Piece, index: int, seed: int, seconds: float) -> dict:
    """The piece's labels, with file names relative to the output folder."""
    folder = f"audio/{piece_id(index)}"
    stems = [
        {"file": f"{folder}/{i}-{stem.role}.opus", **stem.label()} for i, stem in enumerate(piece.stems, 1)
    ]
    return {
        "id": piece_id(index), "source": piece.source, "reference": piece.reference,
        "key": piece.key, "mode": piece.mode, "bpm": round(piece.bpm, 1), "meter": piece.meter,
        "seconds": seconds, "seed": piece_seed(seed, index), "mix": f"{folder}/mix.opus",
        "stems": stems, "attributes": piece.attributes,
    }


def write_piece(seed: int, index: int, out: Path, seconds: float = CLIP_SECONDS) -> dict:
    """Compose, render and encode one piece; returns its label record."""
    import soundfile as sf

    piece = compose_piece(seed, index, seconds)
    record = label_record(piece, index, seed, seconds)
    mix, stems = render_piece(piece, seconds)
    (out / record["mix"]).parent.mkdir(parents=True, exist_ok=True)
    for file, wave in [(record["mix"], mix)] + [(s["file"], w) for s, w in zip(record["stems"], stems, strict=True)]:
        sf.write(out / file, wave, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_COMPRESSION)
    return record


def generate(seed: int, pieces: int, out: Path, *, jobs: int = 1, seconds: float = CLIP_SECONDS) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    soundfont_path()  # fail before forking workers
    started = time.monotonic()
    records = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = pool.map(write_piece, [seed] * pieces, range(pieces), [out] * pieces, [seconds] * pieces)
        for done, record in enumerate(futures, 1):
            records.append(record)
            if done % 10 == 0 or done == pieces:
                print(f"rendered {done}/{pieces} pieces ({time.monotonic() - started:.0f} s)", flush=True)
    with open(out / "labels.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    write_eval_sets(records, out, seed)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=WORLD_SEED, help="master seed (default: %(default)s)")
    parser.add_argument("--pieces", type=int, default=WORLD_PIECES, help="number of pieces (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seconds", type=float, default=CLIP_SECONDS, help="length of every clip (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel render processes (default: %(default)s)")
    args = parser.parse_args(argv)
    records = generate(args.seed, args.pieces, args.out, jobs=args.jobs, seconds=args.seconds)
    files = [args.out / r["mix"] for r in records] + [args.out / s["file"] for r in records for s in r["stems"]]
    size = sum(f.stat().st_size for f in files) / 1e6
    print(f"wrote {len(records)} pieces, {len(files)} files ({size:.1f} MB) and {args.out / 'labels.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
