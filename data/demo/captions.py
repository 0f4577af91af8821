"""Captions for the demo world: attribute values -> phrases (with synonyms) -> sentences from templates.

Templates are split: the TRAIN templates caption the training clips, the held-out TEST templates caption
only the test clips, so evaluation measures wording the model never saw, not memorised sentences.
"""

from __future__ import annotations

import re

import numpy as np

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "instrument": ("piano", "strings", "organ", "guitar", "flute", "pad", "bells", "brass"),
    "tempo": ("slow", "medium", "fast"),
    "mode": ("major", "minor"),
    "loudness": ("quiet", "loud"),
    "rhythm": ("none", "four_on_the_floor", "waltz", "march", "breakbeat"),
    "register": ("low", "middle", "high"),
    "texture": ("arpeggio", "chords", "melody", "drone"),
    "bass": ("bassline", "none"),
}

# Slot name -> attribute it renders -> value -> synonyms. A slot renders one attribute in one grammatical role.
SLOTS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "instrument": (
        "instrument",
        {
            "piano": ("piano", "grand piano", "acoustic piano", "solo piano"),
            "strings": ("strings", "string ensemble", "violins", "orchestral strings"),
            "organ": ("organ", "electric organ", "drawbar organ", "combo organ"),
            "guitar": ("plucked guitar", "acoustic guitar", "nylon-string guitar", "fingerpicked guitar"),
            "flute": ("flute", "breathy flute", "wooden flute", "concert flute"),
            "pad": ("synth pad", "ambient pad", "warm synthesizer pad", "soft synth pad"),
            "bells": ("bells", "glockenspiel", "chimes", "mallet bells"),
            "brass": ("brass", "horns", "brass section", "trumpets"),
        },
    ),
    "tempo": (
        "tempo",
        {
            "slow": ("slow", "leisurely", "unhurried", "slow-paced"),
            "medium": ("mid-tempo", "moderate-tempo", "medium-paced", "steady mid-tempo"),
            "fast": ("fast", "quick", "up-tempo", "brisk"),
        },
    ),
    "mood": (
        "mode",
        {
            "major": ("happy", "cheerful", "joyful", "uplifting", "bright", "sunny"),
            "minor": ("sad", "melancholic", "dark", "gloomy", "somber", "mournful"),
        },
    ),
    "key": ("mode", {"major": ("in a major key", "in major"), "minor": ("in a minor key", "in minor")}),
    "loudness": (
        "loudness",
        {
            "quiet": ("quiet", "soft", "gentle", "hushed"),
            "loud": ("loud", "powerful", "forceful", "intense"),
        },
    ),
    "rhythm": (
        "rhythm",
        {
            "none": ("with no drums", "without percussion", "with no beat", "without any drums"),
            "four_on_the_floor": (
                "over a four-on-the-floor beat",
                "with a steady kick on every beat",
                "over a dance beat",
                "with a four-on-the-floor kick drum",
            ),
            "waltz": ("in waltz time", "in 3/4 time", "with a waltz beat", "in triple meter"),
            "march": ("with a marching snare", "over a march beat", "with military snare drums", "in march time"),
            "breakbeat": (
                "over a breakbeat",
                "with syncopated breakbeat drums",
                "over broken-beat drums",
                "with a funky breakbeat",
            ),
        },
    ),
    "register": (
        "register",
        {
            "low": ("in a low register", "pitched low", "in the low range"),
            "middle": ("in the middle register", "in a mid register", "in the middle range"),
            "high": ("in a high register", "pitched high", "in the high range"),
        },
    ),
    "texture": (
        "texture",
        {
            "arpeggio": ("arpeggios", "arpeggiated chords", "broken chords", "rolling arpeggios"),
            "chords": ("block chords", "repeated chords", "chord stabs", "sustained chords"),
            "melody": ("melody", "single-note melody", "simple tune", "melodic line"),
            "drone": ("drone", "droning pedal tones", "drone with a sparse tune", "held drone notes"),
        },
    ),
    "bass": ("bass", {"bassline": ("with a bassline", "backed by a bass line"), "none": ("",)}),
}

# Every template names the instrument and at least three other attributes.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "{tempo} {mood} {instrument} {texture} {rhythm}",
    "a {loudness} {mood} piece for {instrument}, {tempo}, {rhythm}",
    "{instrument} playing {texture} {register}, {tempo} and {mood}, {rhythm} {bass}",
    "{mood} {instrument} music {key}, {tempo}, {rhythm}",
    "{loudness} {tempo} {instrument} {texture} {register} {rhythm}",
    "{tempo} {instrument} {texture} {key} {rhythm} {bass}",
    "a {mood} tune on {instrument} {rhythm}, {tempo} and {loudness}",
    "{instrument}: {texture}, {tempo}, {mood}, {rhythm}",
    "{loudness} {mood} {instrument} {register}, {tempo}, {texture} {rhythm}",
    "music with {instrument} {texture} {rhythm}, {tempo} and {mood} {bass}",
    "{tempo} {loudness} {instrument} {key} {rhythm}",
    "{mood} {texture} on {instrument}, {tempo} {rhythm}",
    "an instrumental of {instrument} {texture} {register}, {mood}, {tempo} {rhythm}",
    "{tempo} {mood} {instrument} {rhythm} {bass}",
)
TEST_TEMPLATES: tuple[str, ...] = (
    "looking for {mood} {instrument} music that is {tempo} {rhythm}",
    "{instrument} {texture} {rhythm}; the mood is {mood} and the pace {tempo}",
    "something {loudness} and {mood}: {tempo} {instrument} {rhythm}",
    "a track where {instrument} plays {texture} {register}, {tempo}, {rhythm}",
    "{tempo}, {mood} and {loudness}, featuring {instrument} {rhythm}",
)

# Short, query-like captions ("slow sad piano"), added to the training-only variant sets (`plan_variants`):
# people type queries like these, and the long templates alone leave them out of the text tower's reach.
SHORT_TEMPLATES: tuple[str, ...] = (
    "{instrument}",
    "{mood} {instrument}",
    "{tempo} {instrument}",
    "{tempo} {mood} {instrument}",
    "{instrument} {rhythm}",
    "{loudness} {instrument} {texture}",
)


def caption(template: str, attributes: dict[str, str], rng: np.random.Generator) -> str:
    """Fill `template` with a randomly chosen synonym for each slot, then tidy spaces and punctuation."""

    def fill(match: re.Match) -> str:
        attribute, phrases = SLOTS[match.group(1)]
        options = phrases[attributes[attribute]]
        return options[int(rng.integers(len(options)))]

    text = re.sub(r"\{(\w+)\}", fill, template)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,;:])", r"\1", text)
    text = re.sub(r",\s*$", "", text)
    text = re.sub(r"\ba ([aeiou])", r"an \1", text)
    return text


def captions_for(
    attributes: dict[str, str], templates: tuple[str, ...], count: int, rng: np.random.Generator
) -> list[tuple[int, str]]:
    """`count` distinct (template index, caption) pairs for one clip, templates drawn without repeats."""
    order = rng.permutation(len(templates))[: min(count, len(templates))]
    return [(int(i), caption(templates[i], attributes, rng)) for i in order]
