"""General MIDI names the world labels its stems with: the 16 program families, the palette of programs
the generator plays, their comfortable pitch ranges, and the drum kits.

Program numbers are 0-based (MIDI user interfaces show them 1-128). Two to four programs per family, so
an ABX triplet can always find a different instrument of the same family.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)  # GM family of program p is FAMILIES[p // 8]

# The word a tag or a prompt uses for each family ("{tag} music").
FAMILY_TAGS = {
    "piano": "piano", "chromatic percussion": "mallet percussion", "organ": "organ", "guitar": "guitar",
    "bass": "bass", "strings": "solo strings", "ensemble": "ensemble", "brass": "brass", "reed": "reed",
    "pipe": "flute", "synth lead": "synth lead", "synth pad": "synth pad",
}


@dataclass(frozen=True)
class Program:
    number: int  # 0-based GM program
    name: str  # General MIDI name
    low: int  # comfortable MIDI pitch range: a stem is moved by octaves to sit inside it
    high: int

    @property
    def family(self) -> str:
        return FAMILIES[self.number // 8]


PALETTE = tuple(
    Program(*row)
    for row in (
        (0, "Acoustic Grand Piano", 36, 96), (4, "Electric Piano 1", 36, 91),
        (11, "Vibraphone", 53, 89), (12, "Marimba", 45, 96),
        (16, "Drawbar Organ", 36, 96), (19, "Church Organ", 36, 96),
        (24, "Acoustic Guitar (nylon)", 40, 84), (27, "Electric Guitar (clean)", 40, 86),
        (32, "Acoustic Bass", 28, 55), (33, "Electric Bass (finger)", 28, 60),
        (34, "Electric Bass (pick)", 28, 60), (38, "Synth Bass 1", 28, 60),
        (40, "Violin", 55, 100), (42, "Cello", 36, 76),
        (48, "String Ensemble 1", 36, 96), (52, "Choir Aahs", 48, 79),
        (56, "Trumpet", 54, 86), (60, "French Horn", 41, 77),
        (65, "Alto Sax", 49, 81), (71, "Clarinet", 50, 91),
        (73, "Flute", 60, 96), (75, "Pan Flute", 60, 96),
        (80, "Lead 1 (square)", 48, 96), (81, "Lead 2 (sawtooth)", 48, 96),
        (88, "Pad 1 (new age)", 36, 96), (89, "Pad 2 (warm)", 36, 96),
    )
)
PROGRAMS = {p.number: p for p in PALETTE}
BASS_PROGRAMS = tuple(p for p in PALETTE if p.family == "bass")
MELODIC_PROGRAMS = tuple(p for p in PALETTE if p.family != "bass")

# GM drum kits (bank 128 presets) and the broad kind each belongs to.
DRUM_KITS = {0: "Standard", 8: "Room", 16: "Power", 24: "Electronic", 25: "TR-808", 32: "Jazz", 40: "Brush"}
KIT_KIND = {0: "acoustic", 8: "acoustic", 16: "acoustic", 32: "acoustic", 40: "acoustic", 24: "electronic", 25: "electronic"}
# The demo composer's drum voices as GM percussion keys.
DRUM_KEYS = {"kick": 36, "snare": 38, "hat": 42, "open_hat": 46}
