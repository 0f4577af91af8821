"""Note events for the world's pieces, from two sources: the demo composer's plans and real scores.

A :class:`Piece` is a few :class:`Stem` s (one GM program or drum kit each, a list of notes) plus the
labels that hold for the whole piece (key, mode, tempo, meter). Composition is a pure function of an
``numpy`` generator, so a seed gives the same notes everywhere; rendering is a separate step (render.py).

- ``demo``: the demo world's plan (``data.demo.generate.draw_spec``: tempo, mode, rhythm, texture,
  register, bass) and its musical material (scales, progressions, drum patterns from ``data.demo.synth``),
  spread over a lead, an accompaniment, an optional bass line and optional drums.
- ``bach``: a four-part chorale from music21's corpus, one stem per voice.
- ``folk``: a tune from O'Neill's "Music of Ireland" (1903; music21's ``oneills1850`` ABC files), a
  melody over a tonic bass, with drums in the tune's meter half of the time. (Not the Essen collection:
  its encodings are licensed for non-commercial use only.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from data.demo.generate import PITCH_NAMES, draw_spec
from data.demo.synth import (
    BASS_BASE_MIDI,
    DRUM_PATTERNS,
    MAJOR_SCALE,
    MINOR_SCALE,
    PROGRESSIONS,
    REGISTER_BASE_MIDI,
)
from data.instruments.gm import BASS_PROGRAMS, DRUM_KEYS, DRUM_KITS, KIT_KIND, MELODIC_PROGRAMS, Program

SOURCES = ("demo", "bach", "folk")
SOURCE_WEIGHTS = (0.5, 0.3, 0.2)


@dataclass(frozen=True)
class Note:
    start: float  # seconds
    duration: float
    pitch: int  # MIDI key (a GM percussion key on a drum stem)
    velocity: int  # 1..127


@dataclass
class Stem:
    role: str  # lead, accompaniment, bass, drums, soprano, alto, tenor, melody
    notes: list[Note]
    program: Program | None = None  # None for drums
    kit: int | None = None  # GM drum kit (bank 128 preset) for drums
    pattern: str | None = None  # the drum pattern's name

    def label(self) -> dict:
        """What the labels file says about this stem (the file name is added by the generator)."""
        pitches = [n.pitch for n in self.notes]
        out = {"role": self.role, "is_drum": self.kit is not None, "notes": len(self.notes)}
        if self.kit is not None:
            out.update(kit=self.kit, kit_name=DRUM_KITS[self.kit], kit_kind=KIT_KIND[self.kit], pattern=self.pattern)
        else:
            out.update(
                program=self.program.number, program_name=self.program.name, family=self.program.family,
                pitch_low=min(pitches), pitch_high=max(pitches),
            )
        return out


@dataclass
class Piece:
    source: str  # demo | bach | folk
    reference: str  # where the notes came from: demo attributes or a corpus path and tune number
    stems: list[Stem]
    tonic: int  # pitch class
    mode: str  # major | minor
    bpm: float  # quarter notes per minute
    meter: str  # "4/4", "3/4", ...
    attributes: dict = field(default_factory=dict)  # the demo plan's attributes, when there is one

    @property
    def key(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"


# --- shared steps -------------------------------------------------------------------------------------


def fit_range(notes: list[Note], program: Program) -> list[Note]:
    """Move a line by octaves so its median sits nearest the program's range centre, then fold any
    note still outside the range in by octaves (an instrument plays where it sounds like itself)."""
    if not notes:
        return notes
    centre = (program.low + program.high) / 2
    shift = 12 * round((centre - float(np.median([n.pitch for n in notes]))) / 12)
    out = []
    for n in notes:
        pitch = n.pitch + shift
        while pitch < program.low:
            pitch += 12
        while pitch > program.high:
            pitch -= 12
        out.append(Note(n.start, n.duration, pitch, n.velocity))
    return out


def pick_programs(rng: np.random.Generator, count: int) -> list[Program]:
    """`count` different melodic programs."""
    return [MELODIC_PROGRAMS[i] for i in rng.choice(len(MELODIC_PROGRAMS), size=count, replace=False)]


def drum_stem(rng: np.random.Generator, pattern: str, bpm: float, seconds: float) -> Stem:
    """The demo composer's drum pattern on a random GM kit, repeated bar by bar."""
    steps = 12 if pattern == "waltz" else 16
    sixteenth = 60.0 / bpm / 4
    notes = []
    for bar in range(int(np.ceil(seconds / (steps * sixteenth)))):
        for voice, step, velocity in DRUM_PATTERNS[pattern]:
            start = (bar * steps + step) * sixteenth
            if start < seconds:
                jitter = float(rng.uniform(0.9, 1.0))
                notes.append(Note(start, sixteenth, DRUM_KEYS[voice], int(round(120 * velocity * jitter))))
    kit = int(rng.choice(sorted(DRUM_KITS)))
    return Stem("drums", sorted(notes, key=lambda n: n.start), kit=kit, pattern=pattern)


def _velocity(rng: np.random.Generator, level: float) -> int:
    return int(np.clip(round(127 * level * rng.uniform(0.85, 1.0)), 1, 127))


# --- demo: the demo composer's plans ------------------------------------------------------------------


def compose_demo(rng: np.random.Generator, seconds: float) -> Piece:
    spec = draw_spec(rng)
    a = spec.attributes
    beats_per_bar = 3 if a["rhythm"] == "waltz" else 4
    beat = 60.0 / spec.bpm
    bar = beats_per_bar * beat
    scale = MAJOR_SCALE if a["mode"] == "major" else MINOR_SCALE
    progression = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    base = REGISTER_BASE_MIDI[a["register"]] + (spec.tonic + 6) % 12 - 6

    def pitch(degree: int, octave_base: int) -> int:
        octave, step = divmod(degree, 7)
        return octave_base + 12 * octave + scale[step]

    lead, accompaniment, bass = [], [], []
    degree = 2
    for b in range(int(np.ceil(seconds / bar))):
        root = progression[b % len(progression)]
        triad = [root, root + 2, root + 4]
        t0 = b * bar
        k = 0.0  # the lead: a stepwise tune landing on a chord tone at each bar line
        while k < beats_per_bar:
            length = 0.5 if rng.random() < 0.35 else 1.0
            degree = int(rng.choice(triad)) + 7 * (degree // 7) if k == 0 else degree + int(rng.choice([-2, -1, 1, 2]))
            degree = int(np.clip(degree, 0, 11))
            lead.append(Note(t0 + k * beat, length * beat * 0.9, pitch(degree, base + 12), _velocity(rng, 0.85)))
            k += length
        if a["texture"] == "arpeggio":  # the accompaniment, by the plan's texture
            cycle = [triad[0], triad[1], triad[2], triad[0] + 7, triad[2], triad[1]]
            for k in range(2 * beats_per_bar):
                accompaniment.append(Note(t0 + k * beat / 2, beat / 2 * 0.95, pitch(cycle[k % 6], base), _velocity(rng, 0.6)))
        elif a["texture"] == "drone":
            accompaniment += [Note(t0, bar, pitch(d, base - 12), _velocity(rng, 0.55)) for d in (0, 4)]
        else:  # chords: re-struck on every beat ("chords") or held for the bar under a melody
            strikes = range(beats_per_bar) if a["texture"] == "chords" else (0,)
            length = beat * 0.95 if a["texture"] == "chords" else bar * 0.98
            accompaniment += [Note(t0 + k * beat, length, pitch(d, base), _velocity(rng, 0.55)) for k in strikes for d in triad]
        if a["bass"] == "bassline":
            for k in (0, 2) if beats_per_bar == 4 else (0,):
                bass.append(Note(t0 + k * beat, beat * 1.9, pitch(root, BASS_BASE_MIDI + spec.tonic), _velocity(rng, 0.8)))
    lead_program, accompaniment_program = pick_programs(rng, 2)
    stems = [
        Stem("lead", fit_range(_within(lead, seconds), lead_program), lead_program),
        Stem("accompaniment", fit_range(_within(accompaniment, seconds), accompaniment_program), accompaniment_program),
    ]
    if bass:
        program = BASS_PROGRAMS[rng.integers(len(BASS_PROGRAMS))]
        stems.append(Stem("bass", fit_range(_within(bass, seconds), program), program))
    if a["rhythm"] != "none":
        stems.append(drum_stem(rng, a["rhythm"], spec.bpm, seconds))
    reference = ", ".join(f"{k}={v}" for k, v in a.items())
    return Piece("demo", reference, stems, spec.tonic, a["mode"], spec.bpm, f"{beats_per_bar}/4", dict(a))


def _within(notes: list[Note], seconds: float) -> list[Note]:
    return [n for n in notes if n.start < seconds]


# --- real scores from music21's corpus ----------------------------------------------------------------


@cache
def chorale_paths() -> tuple[str, ...]:
    """Bach chorales with exactly four parts (sorted corpus paths, relative to the corpus)."""
    from music21 import corpus

    return tuple(sorted(_corpus_relative(p) for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".xml"))))


@cache
def folk_tunes() -> tuple[tuple[str, int], ...]:
    """(corpus path, tune number) for every tune of O'Neill's collection: X: numbers read from the ABC
    text, since parsing a whole file of tunes takes minutes."""
    from music21 import corpus

    tunes = []
    for path in sorted(corpus.getPaths(fileExtensions=("abc",))):
        if "oneills1850" in str(path):
            text = path.read_text(encoding="latin-1")
            tunes += [(_corpus_relative(path), int(x)) for x in re.findall(r"^X:\s*(\d+)", text, flags=re.M)]
    return tuple(tunes)


def _corpus_relative(path) -> str:
    parts = str(path).replace("\\", "/").split("/corpus/")
    return parts[-1]


def _score_notes(part, bpm: float, seconds: float, level: float, rng: np.random.Generator) -> list[Note]:
    quarter = 60.0 / bpm
    notes = []
    for element in part.stripTies().flatten().notes:
        start = float(element.offset) * quarter
        if start >= seconds:
            break
        duration = max(0.05, float(element.quarterLength) * quarter * 0.97)
        notes += [Note(start, duration, int(p.midi), _velocity(rng, level)) for p in element.pitches]
    return notes


def _key_and_meter(score) -> tuple[int, str, str, float]:
    """(tonic pitch class, mode, meter, bar length in quarters); a missing or degenerate time signature
    (some ABC files carry "1/16") reads as 4/4."""
    key = score.analyze("key")
    signatures = [t for t in score.flatten().getElementsByClass("TimeSignature") if t.barDuration.quarterLength >= 1.5]
    meter, bar = (signatures[0].ratioString, float(signatures[0].barDuration.quarterLength)) if signatures else ("4/4", 4.0)
    return int(key.tonic.pitchClass), str(key.mode), meter, bar


def compose_bach(rng: np.random.Generator, seconds: float) -> Piece:
    from music21 import corpus

    paths = chorale_paths()
    while True:  # a few chorales have more or fewer than four parts: draw again
        path = paths[rng.integers(len(paths))]
        score = corpus.parse(path)
        if len(score.parts) == 4:
            break
    bpm = float(rng.uniform(66.0, 100.0))
    tonic, mode, meter, _ = _key_and_meter(score)
    upper = pick_programs(rng, 3)
    bass_program = BASS_PROGRAMS[rng.integers(len(BASS_PROGRAMS))] if rng.random() < 0.5 else pick_programs(rng, 1)[0]
    stems = []
    for role, part, program in zip(("soprano", "alto", "tenor", "bass"), score.parts, upper + [bass_program], strict=True):
        notes = _score_notes(part, bpm, seconds, 0.7, rng)
        if notes:
            stems.append(Stem(role, fit_range(notes, program), program))
    return Piece("bach", path, stems, tonic, mode, bpm, meter)


def compose_folk(rng: np.random.Generator, seconds: float) -> Piece:
    from music21 import corpus

    tunes = folk_tunes()
    while True:  # skip tunes too short to fill a clip
        path, number = tunes[rng.integers(len(tunes))]
        score = corpus.parse(path, number=number)
        if score.flatten().highestTime >= 8:
            break
    bpm = float(rng.uniform(84.0, 132.0))
    tonic, mode, meter, bar = _key_and_meter(score)
    melody_program = pick_programs(rng, 1)[0]
    melody = _score_notes(score.parts[0] if score.parts else score, bpm, seconds, 0.85, rng)
    bar_seconds = bar * 60.0 / bpm
    bass_program = BASS_PROGRAMS[rng.integers(len(BASS_PROGRAMS))]
    bass = [Note(t, bar_seconds * 0.95, 36 + tonic, _velocity(rng, 0.7)) for t in np.arange(0.0, seconds, bar_seconds)]
    stems = [Stem("melody", fit_range(melody, melody_program), melody_program), Stem("bass", fit_range(bass, bass_program), bass_program)]
    if rng.random() < 0.5:
        pattern = "waltz" if meter.startswith("3/") else str(rng.choice(["march", "four_on_the_floor"]))
        stems.append(drum_stem(rng, pattern, bpm, seconds))
    return Piece("folk", f"{path}#{number}", stems, tonic, mode, bpm, meter)


COMPOSERS = {"demo": compose_demo, "bach": compose_bach, "folk": compose_folk}


def compose(rng: np.random.Generator, seconds: float) -> Piece:
    """One piece: its source drawn by SOURCE_WEIGHTS, then composed from the same generator."""
    source = SOURCES[rng.choice(len(SOURCES), p=SOURCE_WEIGHTS)]
    return COMPOSERS[source](rng, seconds)
