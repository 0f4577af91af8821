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
                  "classical piano", "ivories", "baby grand", "felt piano", "pianist", "88 keys", "steinway",
                  "parlour piano", "piano chords and keys"),
        "strings": ("violin", "viola", "cello", "cellos", "string quartet", "string orchestra", "bowed strings",
                    "string section", "chamber strings", "fiddle", "fiddles", "violins with cellos",
                    "symphonic strings", "string players", "bowed violin", "orchestra strings", "string trio"),
        "organ": ("organ", "pipe organ", "tonewheel organ", "B3 organ", "gospel organ", "reed organ",
                  "organ keys", "hammond", "hammond organ", "church organ", "cathedral organ", "organist",
                  "farfisa", "harmonium", "theatre organ"),
        "guitar": ("guitar", "classical guitar", "spanish guitar", "steel-string guitar", "folk guitar",
                   "nylon guitar", "guitar picking", "six-string", "guitarist", "flamenco guitar",
                   "fingerstyle guitar", "twelve-string guitar", "picked guitar", "unplugged guitar"),
        "flute": ("flute", "flutes", "alto flute", "piccolo", "silver flute", "bamboo flute", "flute solo",
                  "flautist", "fife", "recorder", "pan flute", "panpipes", "woodwind", "tin whistle",
                  "breathy woodwind"),
        "pad": ("synth", "synthesizer", "pad", "analog synth pad", "ambient synth", "electronic pad",
                "dreamy synth", "lush pad", "synth pads", "atmospheric synth", "analog synthesizer",
                "synthwave pad", "electronic keyboard pad", "synthesised wash", "pad sound", "keyboard synth"),
        "bells": ("bell", "celesta", "tubular bells", "handbells", "metallophone", "mallet percussion",
                  "chiming bells", "glock", "music box", "celeste", "carillon", "church bells", "tinkling bells",
                  "mallets", "chimes ringing", "toy bells"),
        "brass": ("trumpet", "trombones", "french horns", "brass ensemble", "cornet", "flugelhorn", "tuba and horns",
                  "horn section", "trombone", "fanfare", "bugle", "brass band", "big band horns", "brassy horns",
                  "trumpeter", "sousaphone"),
    },
    "tempo": {
        "slow": ("slow tempo", "laid-back", "lento", "downtempo", "slow-moving", "sluggish", "ballad pace",
                 "adagio", "largo", "grave tempo", "larghetto", "crawling", "dragging", "plodding", "languid",
                 "lazy", "sleepy", "glacial", "low bpm", "very slow", "slow as molasses", "70 bpm", "65 bpm",
                 "unrushed", "drowsy"),
        "medium": ("moderato", "medium tempo", "moderately paced", "mid-paced", "even pace", "comfortable tempo",
                   "andante", "allegretto", "walking pace", "moderate", "medium speed", "middle tempo",
                   "not too fast or slow", "easygoing pace", "100 bpm", "105 bpm", "moderate speed",
                   "a relaxed walking tempo", "in between tempo"),
        "fast": ("rapid", "high tempo", "racing", "hurried", "vivace", "uptempo", "fast tempo",
                 "presto", "allegro", "prestissimo", "frantic", "frenetic", "breakneck", "speedy", "zippy",
                 "high bpm", "150 bpm", "145 bpm", "quick-paced", "hasty", "swift", "very fast", "lightning fast",
                 "fast-paced", "fast-moving"),
    },
    "mode": {
        "major": ("playful", "hopeful", "merry", "lighthearted", "carefree", "jolly", "major-mode", "feel-good",
                  "glad", "elated", "euphoric", "gleeful", "joyous", "optimistic", "content", "delighted",
                  "triumphant", "radiant", "cheery", "blissful", "happy-sounding", "sunny-sounding"),
        "minor": ("melancholy", "wistful", "bleak", "tragic", "moody", "grieving", "forlorn", "doleful",
                  "minor-mode", "sorrowful", "heartbroken", "heavy-hearted", "blue", "despairing", "brooding",
                  "lamenting", "tearful", "weepy", "sombre", "unhappy", "sad-sounding", "depressing", "mournful tune"),
    },
    "loudness": {
        "quiet": ("softly played", "muted", "faint", "mellow", "tender", "understated", "restrained", "low-key",
                  "pianissimo", "whisper-quiet", "barely audible", "low volume", "subdued", "delicate", "hushed tones",
                  "soft-spoken", "turned down", "gently played", "quietly played"),
        "loud": ("full volume", "bold", "punchy", "roaring", "cranked up", "heavy", "at full blast", "strong",
                 "fortissimo", "thunderous", "booming", "blaring", "deafening", "forte", "high volume",
                 "blasting", "full-throttle", "very loud", "turned up", "noisy", "explosive"),
    },
    "rhythm": {
        "none": ("drum-free", "no rhythm section", "without a drummer", "no kit", "percussion-free",
                 "without drums", "no groove, just the instrument", "beatless", "no percussion", "unaccompanied",
                 "free time", "no beat at all", "without a beat", "drumless", "no drum machine"),
        "four_on_the_floor": ("four to the floor", "4/4 kick", "dancefloor beat", "edm beat", "pumping kick drum",
                              "steady bass drum pulse", "electronic dance beat", "house beat", "techno kick",
                              "disco beat", "club drums", "thumping kick", "dance music drums", "house music groove",
                              "kick on every quarter note"),
        "waltz": ("a waltz", "waltz rhythm", "3/4 meter", "triple time", "one-two-three lilt", "waltz feel",
                  "waltz", "three-four time", "ballroom waltz", "viennese waltz", "three beats to the bar",
                  "waltzing", "3/4"),
        "march": ("martial snare", "marching rhythm", "snare rolls", "military cadence", "a march",
                  "march drums", "military march", "marching band", "marching snare drum", "parade snare",
                  "drum corps", "march", "military drums", "quickstep march"),
        "breakbeat": ("breakbeat", "breakbeats", "syncopated groove", "boom-bap drums", "broken rhythm",
                      "choppy drums", "chopped drum loop", "hip-hop beat", "hip hop drums", "drum and bass",
                      "jungle breaks", "amen break", "funky drums", "breaks", "b-boy beat", "sampled break"),
    },
    "register": {
        "low": ("low notes", "lower octaves", "low range", "low pitch", "down low", "deep notes",
                "low-pitched", "deep register", "bottom octaves", "baritone range", "deep low notes", "low end of the keys"),
        "middle": ("middle octaves", "medium pitch", "central register", "mid pitch", "mid-range", "midrange",
                   "middle register", "mid-register notes", "centre of the range", "tenor range", "middle pitch",
                   "neither high nor low"),
        "high": ("high notes", "upper register", "treble range", "up high", "upper octaves", "high-pitched",
                 "soprano range", "top octaves", "treble", "very high notes", "piercing high notes", "top of the range"),
    },
    "texture": {
        "arpeggio": ("arpeggio", "arpeggio patterns", "cascading notes", "spread chords", "rolling notes",
                     "arpeggiated", "arpeggiated figures", "broken-chord patterns", "rippling notes",
                     "harp-style figures", "chords played one note at a time", "running arpeggios",
                     "picked-out chord tones", "flowing broken chords"),
        "chords": ("chords", "chord progression", "pulsing chords", "block harmonies", "full chords", "chord hits",
                   "chordal", "comping", "stabs", "strummed chords", "harmonies", "triads", "chord changes",
                   "struck chords", "stacked chords", "rhythmic chords", "chords played together"),
        "melody": ("lead melody", "a melody", "solo melody", "melodic phrase", "one voice singing out a line",
                   "a tune", "a single line", "a theme", "lead line", "solo line", "hummable melody", "catchy tune",
                   "one note at a time tune", "a melodic theme", "singing lead", "melody line"),
        "drone": ("droning", "drone notes", "a steady drone", "an unchanging tone", "pedal tones",
                  "held note", "one long note", "long tones", "pedal point", "bagpipe-like drone", "static tone",
                  "a hum", "sustained tone", "a single sustained note", "long held notes", "drone-based"),
    },
    "bass": {"bassline": ("bass", "a bass part", "bass line below", "bassline", "bass groove", "bass guitar",
                          "electric bass", "low end", "sub bass", "bass underneath", "backed by bass",
                          "a bass player", "with bass", "a groovy bass", "synth bass"),
             "none": ("no bass", "without bass", "bass-free", "no low end", "without a bass line", "no bass part",
                      "no bass player")},
}
# Whole sentences around a list of fragments ({}); the fragments themselves come in random order.
PARAPHRASE_FRAMES: tuple[str, ...] = (
    "{}", "{}", "{}", "{}", "some {}", "play me {}", "find me {}", "i want {}", "music: {}", "{} please",
    "a piece with {}", "background music, {}", "give me something with {}", "{}, that kind of sound",
    "put on {}", "an instrumental with {}", "i'm in the mood for {}", "can you find {}", "{} for my playlist",
    "need {}", "a song with {}", "{} vibes", "{} for a film scene", "any {}?",
)
# How often a caption names each attribute: the instrument mostly, the others now and then
QUERY_WEIGHTS: dict[str, float] = {"loudness": 0.3, "mode": 0.45, "tempo": 0.45, "instrument": 0.75, "texture": 0.35,
                                   "register": 0.3, "rhythm": 0.4, "bass": 0.25}  # in the usual spoken order


def paraphrase(attributes: dict[str, str], rng: np.random.Generator, typo_rate: float = 0.2,
               must: tuple[str, ...] = ()) -> str:
    """One free-worded, training-only caption: 1-4 of the clip's attributes (by QUERY_WEIGHTS, always the
    `must` ones), each in a random PARAPHRASES or template phrase, in random order, in a random frame; with
    `typo_rate`, a typo in one of those phrases (a slip in the frame's words would teach nothing)."""
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
    if rng.random() < typo_rate:
        slipped = int(rng.integers(len(fragments)))
        fragments[slipped] = typo(fragments[slipped], rng)
    joiner = ((", ", " and ") if shuffled else (" ", ", "))[int(rng.integers(2))]
    return PARAPHRASE_FRAMES[int(rng.integers(len(PARAPHRASE_FRAMES)))].format(joiner.join(fragments))


# Letters a typing or spelling slip puts in another's place: QWERTY neighbours and sound-alikes
SLIPS = {"a": "sqe", "b": "vn", "c": "kxs", "d": "sf", "e": "wra", "f": "dg", "g": "fh", "h": "gj", "i": "uoy",
         "j": "hk", "k": "jlc", "l": "k", "m": "n", "n": "mb", "o": "ipu", "p": "o", "q": "w", "r": "et", "s": "azc",
         "t": "ry", "u": "yio", "v": "bc", "w": "qe", "x": "zc", "y": "ti", "z": "sx"}


def typo(text: str, rng: np.random.Generator) -> str:
    """`text` with one slip in one word of 4+ letters, anywhere but its first letter: a letter dropped,
    doubled, swapped with its neighbour or replaced by a neighbouring key or a sound-alike (SLIPS)."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long:
        return text
    i = long[int(rng.integers(len(long)))]
    w = words[i]
    at = int(rng.integers(1, len(w)))  # the slipped letter
    # swapped with its left or right neighbour (the second letter's left neighbour is the first: its right)
    swap = max(1, at - 1 if at == len(w) - 1 or rng.random() < 0.5 else at)
    options = SLIPS.get(w[at].lower(), w[at])
    words[i] = (w[:at] + w[at + 1:], w[:at] + w[at] + w[at:], w[:swap] + w[swap + 1] + w[swap] + w[swap + 2:],
                w[:at] + options[int(rng.integers(len(options)))] + w[at + 1:])[int(rng.integers(4))]
    return " ".join(words)
