"""Render a piece's stems with a sampled General MIDI SoundFont (TinySoundFont), as Slakh2100 was made.

Each stem is played alone on a fresh channel state, dry (no reverb), brought to its role's level (RMS),
and the mix is the sum of the stems, scaled with them by one gain so that mix == sum(stems) before
encoding. Levelling keeps every instrument audible in the mix: SoundFont presets differ by 20 dB. The SoundFont is found at
$MUQSEARCH_SOUNDFONT, else Debian's fluid-soundfont-gm (FluidR3_GM.sf2, MIT licence).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np

from data.instruments.compose import Piece, Stem

SAMPLE_RATE = 24000
SOUNDFONT_ENV = "MUQSEARCH_SOUNDFONT"
DEFAULT_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
PEAK = 0.89  # -1 dBFS: the mix's peak after scaling
DRUM_CHANNEL = 9
ROLE_LEVEL = {"lead": 1.0, "melody": 1.0, "soprano": 1.0, "bass": 0.8, "drums": 0.9}  # others 0.7
RELEASE_SECONDS = 0.3  # rendered past the clip end so releases are not cut mid-sample, then trimmed


class SoundFontMissingError(RuntimeError):
    pass


def soundfont_path() -> Path:
    candidates = [os.environ[SOUNDFONT_ENV]] if os.environ.get(SOUNDFONT_ENV) else list(DEFAULT_SOUNDFONTS)
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    raise SoundFontMissingError(
        f"no General MIDI SoundFont at {', '.join(candidates)}: install Debian's fluid-soundfont-gm "
        f"(scripts/install.sh --dev does) or set ${SOUNDFONT_ENV}"
    )


@cache
def _synth(path: Path):
    """One synthesizer per process with the SoundFont loaded (loading takes seconds)."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
    return synth, synth.sfload(str(path))


def render_stem(stem: Stem, seconds: float, soundfont: Path | None = None) -> np.ndarray:
    """One stem as mono float32 at SAMPLE_RATE, `seconds` long."""
    synth, sfid = _synth(soundfont or soundfont_path())
    synth.sounds_off()
    synth.generate(SAMPLE_RATE // 2)  # let every voice of the previous stem finish its quick release
    if stem.kit is not None:
        channel = DRUM_CHANNEL
        synth.program_select(channel, sfid, 128, stem.kit, True)
    else:
        channel = 0
        synth.program_select(channel, sfid, 0, stem.program.number)
    total = int(round((seconds + RELEASE_SECONDS) * SAMPLE_RATE))
    events = []  # (sample, order, key, velocity): note-offs (order 0) before note-ons at the same sample
    for n in stem.notes:
        on = int(round(n.start * SAMPLE_RATE))
        if on >= total:
            continue
        events.append((on, 1, n.pitch, n.velocity))
        events.append((min(total, on + max(1, int(round(n.duration * SAMPLE_RATE)))), 0, n.pitch, 0))
    events.sort()
    out = np.zeros((total, 2), dtype=np.float32)
    position = 0
    for sample, order, key, velocity in events + [(total, 0, -1, 0)]:
        if sample > position:
            out[position:sample] = np.frombuffer(synth.generate(sample - position), dtype=np.float32).reshape(-1, 2)
            position = sample
        if key < 0:
            break
        if order:
            synth.noteon(channel, key, velocity)
        else:
            synth.noteoff(channel, key)
    synth.sounds_off()
    mono = out.mean(axis=1)[: int(round(seconds * SAMPLE_RATE))]
    fade = int(0.02 * SAMPLE_RATE)
    mono[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return mono


def render_piece(piece: Piece, seconds: float, soundfont: Path | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """(mix, stems): every stem rendered alone at its role's level, all scaled by the one gain that puts
    the mix peak at PEAK."""
    stems = []
    for stem in piece.stems:
        wave = render_stem(stem, seconds, soundfont)
        rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
        stems.append(wave * (ROLE_LEVEL.get(stem.role, 0.7) / rms if rms > 0 else 1.0))
    mix = np.sum(stems, axis=0)
    gain = PEAK / max(float(np.abs(mix).max()), 1e-6)
    return (mix * gain).astype(np.float32), [(s * gain).astype(np.float32) for s in stems]
