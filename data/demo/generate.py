"""Generate the demo world: captioned synthetic music, reproducible from a seed.

    python -m data.demo.generate --seed 20260 --out data/demo

writes OUT/library/demo-NNNN.opus (mono Ogg/Opus at 24 kHz, tagged with Vorbis comments),
OUT/captions.jsonl, one record per clip: id, file (relative to OUT), split, seconds, bpm, key,
attributes, captions and the template ids they came from, and OUT/eval_test.jsonl, the test split as
(audio_path, text, group) rows for `muqsearch eval`. The same seed gives the same attributes,
captions and waveforms (the Opus encoder runs on identical input).

    python -m data.demo.generate --seed 8 --variants 600 --out VARIANTS

writes training-only clips instead (captions.jsonl, no test split): 600 pieces, each rendered once per
combination of two values of mode and instrument, for hard-negative batches (`plan_variants`). That is
the demo model's extra training data (data/demo/model/MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data.demo.captions import ATTRIBUTES, SHORT_TEMPLATES, TEST_TEMPLATES, TRAIN_TEMPLATES, captions_for
from data.demo.synth import SAMPLE_RATE, ClipSpec, render

TEMPO_BPM = {"slow": (62.0, 78.0), "medium": (96.0, 114.0), "fast": (138.0, 160.0)}
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
OPUS_COMPRESSION = 0.94  # libsndfile's 0..1 scale; about 22 kbit/s for mono 24 kHz
TRAIN_CAPTIONS_PER_CLIP = 8
TEST_CAPTIONS_PER_CLIP = 3
SHORT_CAPTIONS_PER_VARIANT = 4


@dataclass(frozen=True)
class DemoClip:
    id: str
    split: str  # "train" | "test"
    spec: ClipSpec
    captions: list[str]
    template_ids: list[str]  # "train/3", "test/1": which template list, which entry

    @property
    def file(self) -> str:
        return f"library/{self.id}.opus"

    @property
    def key(self) -> str:
        return f"{PITCH_NAMES[self.spec.tonic]} {self.spec.attributes['mode']}"

    def record(self) -> dict:
        return {
            "id": self.id,
            "file": self.file,
            "split": self.split,
            "seconds": round(self.spec.seconds, 3),
            "bpm": round(self.spec.bpm, 1),
            "key": self.key,
            "attributes": dict(self.spec.attributes),
            "captions": self.captions,
            "template_ids": self.template_ids,
            "seed": self.spec.seed,
        }


def draw_spec(rng: np.random.Generator) -> ClipSpec:
    """One clip's attributes (uniform and independent), tempo, key, length and render seed."""
    attributes = {name: str(values[rng.integers(len(values))]) for name, values in ATTRIBUTES.items()}
    low, high = TEMPO_BPM[attributes["tempo"]]
    seconds = rng.uniform(10.0, 16.0) if rng.random() < 0.85 else rng.uniform(16.0, 30.0)
    return ClipSpec(
        attributes=attributes,
        bpm=float(rng.uniform(low, high)),
        tonic=int(rng.integers(12)),
        seconds=float(seconds),
        seed=int(rng.integers(2**31)),
    )


def plan(seed: int, clips: int, test_clips: int) -> list[DemoClip]:
    """Draw every clip's attributes, tempo, key, length, split and captions from one seed (no audio)."""
    if not 0 < test_clips < clips:
        raise ValueError(f"test_clips must be between 1 and clips-1, got {test_clips} of {clips}")
    rng = np.random.default_rng(seed)
    test_ids = set(rng.choice(clips, size=test_clips, replace=False).tolist())
    planned = []
    for i in range(clips):
        spec = draw_spec(rng)
        split = "test" if i in test_ids else "train"
        templates, count = (
            (TEST_TEMPLATES, TEST_CAPTIONS_PER_CLIP) if split == "test" else (TRAIN_TEMPLATES, TRAIN_CAPTIONS_PER_CLIP)
        )
        pairs = captions_for(spec.attributes, templates, count, rng)
        planned.append(
            DemoClip(
                id=f"demo-{i + 1:04d}",
                split=split,
                spec=spec,
                captions=[text for _, text in pairs],
                template_ids=[f"{split}/{index}" for index, _ in pairs],
            )
        )
    return planned


def plan_variants(seed: int, pieces: int, vary: tuple[str, ...] = ("mode", "instrument")) -> list[DemoClip]:
    """Training-only sets of clips that differ in nothing but the `vary` attributes.

    Each piece is drawn as in `plan`, then rendered once per combination of its own and one other
    (random) value of every varied attribute: 2 ** len(vary) clips sharing the render seed, so the same
    timing and notes where the attribute allows. Batched together (`muqsearch train --group-by seed`),
    they are negatives that only the varied attributes tell apart: what random batches never ask for.
    Captions come from the training templates plus a few short, query-like ones (SHORT_TEMPLATES); the
    held-out test templates stay unseen.
    """
    unknown = sorted(set(vary) - set(ATTRIBUTES))
    if unknown or not vary:
        raise ValueError(f"vary must name attributes among {', '.join(ATTRIBUTES)}, got {list(vary)}")
    rng, caption_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    planned = []
    for i in range(pieces):
        spec = draw_spec(rng)
        swaps = {}
        for name in vary:
            others = [v for v in ATTRIBUTES[name] if v != spec.attributes[name]]
            swaps[name] = str(others[rng.integers(len(others))])
        for v in range(2**len(vary)):
            attributes = dict(spec.attributes)
            attributes.update({name: swaps[name] for bit, name in enumerate(vary) if v >> bit & 1})
            pairs = captions_for(attributes, TRAIN_TEMPLATES, TRAIN_CAPTIONS_PER_CLIP, caption_rng)
            short = captions_for(attributes, SHORT_TEMPLATES, SHORT_CAPTIONS_PER_VARIANT, caption_rng)
            planned.append(
                DemoClip(
                    id=f"variant-{i + 1:05d}-{v}",
                    split="train",
                    spec=replace(spec, attributes=attributes, bpm=bpm_for(spec, attributes["tempo"])),
                    captions=[text for _, text in pairs + short],
                    template_ids=[f"train/{index}" for index, _ in pairs] + [f"short/{index}" for index, _ in short],
                )
            )
    return planned


def bpm_for(spec: ClipSpec, tempo: str) -> float:
    """The spec's bpm moved to `tempo`'s range at the same relative place (unchanged for its own tempo)."""
    low, high = TEMPO_BPM[spec.attributes["tempo"]]
    new_low, new_high = TEMPO_BPM[tempo]
    return new_low + (spec.bpm - low) / (high - low) * (new_high - new_low)


def title(clip: DemoClip) -> str:
    a = clip.spec.attributes
    return f"{a['tempo'].title()} {a['mode']} {a['instrument']} {a['texture']} ({clip.id})"


def write_clip(clip: DemoClip, out: Path) -> None:
    """Render, encode to Opus and tag one clip."""
    import soundfile as sf
    from mutagen.oggopus import OggOpus

    path = out / clip.file
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = render(clip.spec)
    sf.write(path, audio, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_COMPRESSION)
    tags = OggOpus(path)
    tags["title"] = title(clip)
    tags["artist"] = "MuQ Search demo world"
    tags["album"] = "Generated demo library"
    tags["genre"] = "Demo"
    tags["bpm"] = str(round(clip.spec.bpm))
    tags["initialkey"] = clip.key
    tags["description"] = clip.captions[0]
    for name, value in clip.spec.attributes.items():
        tags[f"demo_{name}"] = value
    tags.save()


def generate(planned: list[DemoClip], out: Path, jobs: int = 1) -> list[DemoClip]:
    """Render, encode and tag every planned clip into OUT/library, then write the caption files."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for done, _ in enumerate(pool.map(write_clip, planned, [out] * len(planned), chunksize=4), 1):
            if done % 50 == 0 or done == len(planned):
                print(f"rendered {done}/{len(planned)} clips ({time.monotonic() - started:.0f} s)", flush=True)
    write_index(planned, out)
    return planned


def write_index(planned: list[DemoClip], out: Path) -> None:
    """captions.jsonl (every clip) and eval_test.jsonl (test captions as audio_path, text, group rows)."""
    with open(out / "captions.jsonl", "w", encoding="utf-8") as f:
        for clip in planned:
            f.write(json.dumps(clip.record(), ensure_ascii=False) + "\n")
    if any(c.split == "test" for c in planned):
        with open(out / "eval_test.jsonl", "w", encoding="utf-8") as f:
            for clip in (c for c in planned if c.split == "test"):
                for text in clip.captions:
                    f.write(json.dumps({"audio_path": clip.file, "text": text, "group": clip.id}) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20260, help="master seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (library/ + captions.jsonl)")
    parser.add_argument("--clips", type=int, default=720, help="number of clips (default: %(default)s)")
    parser.add_argument("--test-clips", type=int, default=120, help="held-out test clips (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel render processes (default: %(default)s)")
    parser.add_argument("--variants", type=int, metavar="PIECES", default=0,
                        help="instead of the library: PIECES training-only sets of clips that differ only in the "
                             "--vary attributes (hard negatives for `muqsearch train --group-by seed`)")
    parser.add_argument("--vary", nargs="+", default=["mode", "instrument"], choices=sorted(ATTRIBUTES),
                        help="with --variants: the attributes a set varies (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.variants:
        planned = plan_variants(args.seed, args.variants, tuple(args.vary))
    else:
        planned = plan(args.seed, args.clips, args.test_clips)
    generate(planned, args.out, args.jobs)
    size = sum((args.out / c.file).stat().st_size for c in planned) / 1e6
    print(f"wrote {len(planned)} clips ({size:.1f} MB) and {args.out / 'captions.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
