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


# ---- paraphrase augmentation (training only) ------------------------------------------------------------
# The templates above give the text tower about four words per value in a few fixed sentence shapes, so it
# learns those words, not what they mean. These captions add, for training only, the wider vocabulary a
# musician would use (value -> phrases as list fragments), loose word order, one to four attributes per
# caption, whole sentences, and the odd typo. The held-out TEST_TEMPLATES stay unseen; none of these
# shapes copies theirs.
PARAPHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "instrument": {
        "piano": ("piano", "upright piano", "concert grand", "pianoforte", "piano keys", "keys", "piano solo",
                  "classical piano"),
        "strings": ("violin", "viola", "cello", "cellos", "string quartet", "string orchestra", "bowed strings",
                    "string section", "chamber strings"),
        "organ": ("organ", "pipe organ", "tonewheel organ", "B3 organ", "gospel organ", "reed organ",
                  "organ keys"),
        "guitar": ("guitar", "classical guitar", "spanish guitar", "steel-string guitar", "folk guitar",
                   "nylon guitar", "guitar picking"),
        "flute": ("flute", "flutes", "alto flute", "piccolo", "silver flute", "bamboo flute", "flute solo"),
        "pad": ("synth", "synthesizer", "pad", "analog synth pad", "ambient synth", "electronic pad",
                "dreamy synth", "lush pad"),
        "bells": ("bell", "celesta", "tubular bells", "handbells", "metallophone", "mallet percussion",
                  "chiming bells"),
        "brass": ("trumpet", "trombones", "french horns", "brass ensemble", "cornet", "flugelhorn", "tuba and horns"),
    },
    "tempo": {
        "slow": ("slow tempo", "laid-back", "lento", "downtempo", "slow-moving", "sluggish", "ballad pace"),
        "medium": ("moderato", "medium tempo", "moderately paced", "mid-paced", "even pace", "comfortable tempo"),
        "fast": ("rapid", "high tempo", "racing", "hurried", "vivace", "uptempo", "fast tempo"),
    },
    "mode": {
        "major": ("playful", "hopeful", "merry", "lighthearted", "carefree", "jolly", "major-mode", "feel-good"),
        "minor": ("melancholy", "wistful", "bleak", "tragic", "moody", "grieving", "forlorn", "doleful",
                  "minor-mode"),
    },
    "loudness": {
        "quiet": ("softly played", "muted", "faint", "mellow", "tender", "understated", "restrained", "low-key"),
        "loud": ("full volume", "bold", "punchy", "roaring", "cranked up", "heavy", "at full blast", "strong"),
    },
    "rhythm": {
        "none": ("drum-free", "no rhythm section", "without a drummer", "no kit", "percussion-free",
                 "without drums", "no groove, just the instrument"),
        "four_on_the_floor": ("four to the floor", "4/4 kick", "dancefloor beat", "edm beat", "pumping kick drum",
                              "steady bass drum pulse", "electronic dance beat"),
        "waltz": ("a waltz", "waltz rhythm", "3/4 meter", "triple time", "one-two-three lilt", "waltz feel"),
        "march": ("martial snare", "marching rhythm", "snare rolls", "military cadence", "a march",
                  "march drums"),
        "breakbeat": ("breakbeat", "breakbeats", "syncopated groove", "boom-bap drums", "broken rhythm",
                      "choppy drums", "chopped drum loop"),
    },
    "register": {
        "low": ("low notes", "lower octaves", "low range", "low pitch", "down low"),
        "middle": ("middle octaves", "medium pitch", "central register", "mid pitch"),
        "high": ("high notes", "upper register", "treble range", "up high", "upper octaves"),
    },
    "texture": {
        "arpeggio": ("arpeggio", "arpeggio patterns", "cascading notes", "spread chords", "rolling notes"),
        "chords": ("chords", "chord progression", "pulsing chords", "block harmonies", "full chords", "chord hits"),
        "melody": ("lead melody", "a melody", "solo melody", "melodic phrase", "one voice singing out a line"),
        "drone": ("droning", "drone notes", "a steady drone", "an unchanging tone", "pedal tones"),
    },
    "bass": {"bassline": ("bass", "a bass part", "bass line below", "bassline", "bass groove"),
             "none": ("no bass", "without bass")},
}
# Whole sentences around a list of fragments ({}); the fragments themselves come in random order.
PARAPHRASE_FRAMES: tuple[str, ...] = (
    "{}", "{}", "{}", "{}", "some {}", "play me {}", "find me {}", "i want {}", "music: {}", "{} please",
    "a piece with {}", "background music, {}", "give me something with {}", "{}, that kind of sound",
    "put on {}", "an instrumental with {}",
)
# How often a caption names each attribute: the instrument mostly, the others now and then
QUERY_WEIGHTS: dict[str, float] = {"loudness": 0.2, "mode": 0.45, "tempo": 0.45, "instrument": 0.75, "texture": 0.2,
                                   "register": 0.15, "rhythm": 0.4, "bass": 0.1}  # in the usual spoken order


def paraphrase(attributes: dict[str, str], rng: np.random.Generator, typo_rate: float = 0.2,
               must: tuple[str, ...] = ()) -> str:
    """One free-worded, training-only caption: 1-4 of the clip's attributes (by QUERY_WEIGHTS, always the
    `must` ones), each in a random PARAPHRASES or template phrase, in random order, in a random frame; a
    typo with `typo_rate`."""
    drawn = [name for name, p in QUERY_WEIGHTS.items() if rng.random() < p or name in must]
    if not drawn:
        drawn = [str(rng.choice(list(QUERY_WEIGHTS)))]
    required = [i for i, name in enumerate(drawn) if name in must]
    optional = [i for i, name in enumerate(drawn) if name not in must]
    kept = required + [optional[i] for i in rng.permutation(len(optional))[: max(0, 4 - len(required))]]
    chosen = [drawn[i] for i in sorted(kept)]
    shuffled = rng.random() < 0.5  # else in the order people usually say them ("slow sad piano, no drums")
    if shuffled:
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    fragments = []
    for name in chosen:
        options = PARAPHRASES[name][attributes[name]]
        if name == "bass" and attributes[name] == "none" and name not in must and rng.random() < 0.5:
            continue
        fragments.append(options[int(rng.integers(len(options)))])
    if not fragments:
        fragments = [PARAPHRASES["instrument"][attributes["instrument"]][0]]
    joiner = ((", ", " and ") if shuffled else (" ", ", "))[int(rng.integers(2))]
    text = PARAPHRASE_FRAMES[int(rng.integers(len(PARAPHRASE_FRAMES)))].format(joiner.join(fragments))
    return typo(text, rng) if rng.random() < typo_rate else text


def typo(text: str, rng: np.random.Generator) -> str:
    """`text` with one typing slip in one word of 4+ letters: a letter dropped, doubled or swapped."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long:
        return text
    i = long[int(rng.integers(len(long)))]
    w, at = words[i], int(rng.integers(1, len(words[i]) - 1))
    kind = int(rng.integers(3))
    words[i] = (w[:at] + w[at + 1:], w[:at] + w[at] + w[at:], w[:at - 1] + w[at] + w[at - 1] + w[at + 1:])[kind]
    return " ".join(words)
