"""Pure-numpy synthesis of the demo world's music: instruments, drum patterns and a clip renderer.

Every attribute a caption can name must be plainly audible, so each one maps onto a blunt musical
decision: the instrument is a distinct synthesis recipe, the tempo sets the note and drum grid, the mode
picks major or natural-minor triads over a tonic-heavy progression and colours the lead bright or dark
(the captions' moods say both), the rhythm is a fixed drum pattern,
the register moves the lead by octaves, the texture decides how chords are voiced in time, and the
loudness sets the final RMS level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 24000

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor: every tonic, subdominant and dominant triad is minor
# Progressions as scale degrees (0 = tonic). Tonic-heavy so the key centre, hence the mode, is unambiguous.
PROGRESSIONS = ((0, 3, 0, 4), (0, 5, 3, 0), (0, 4, 3, 0), (0, 3, 4, 0))
REGISTER_BASE_MIDI = {"low": 48, "middle": 60, "high": 74}
BASS_BASE_MIDI = 36
LOUDNESS_DBFS = {"quiet": -32.0, "loud": -13.0}  # target RMS of the final mix


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip; rendering is a pure function of it."""

    attributes: dict[str, str]  # instrument, tempo, mode, loudness, rhythm, register, texture, bass
    bpm: float
    tonic: int  # pitch class 0..11 (0 = C)
    seconds: float
    seed: int


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


# --------------------------------------------------------------------------------------------------
# Instruments: note(freq, seconds, velocity, rng) -> mono float32 waveform (may ring past `seconds`)
# --------------------------------------------------------------------------------------------------


def _partials(
    freq: float,
    n: int,
    ratios: np.ndarray,
    amps: np.ndarray,
    decays: np.ndarray | None = None,
    vibrato: tuple[float, float, float] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Sum of sinusoids at freq·ratios with per-partial exponential decay and optional shared vibrato.

    vibrato = (rate Hz, depth as a frequency fraction, onset seconds).
    """
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    keep = freq * ratios < SAMPLE_RATE / 2 * 0.95  # drop partials above Nyquist
    ratios, amps = ratios[keep], amps[keep]
    decays = None if decays is None else decays[keep]
    if vibrato is None:
        base_phase = 2 * np.pi * freq * t
    else:
        rate, depth, onset = vibrato
        ramp = np.clip((t - onset) / 0.3, 0.0, 1.0)
        inst = freq * (1.0 + depth * ramp * np.sin(2 * np.pi * rate * t))
        base_phase = 2 * np.pi * np.cumsum(inst) / SAMPLE_RATE
    phases = (rng.uniform(0, 2 * np.pi, len(ratios)) if rng is not None else np.zeros(len(ratios)))[:, None]
    waves = np.sin(ratios[:, None] * base_phase[None, :] + phases)  # (P, n)
    if decays is not None:
        waves *= np.exp(-decays[:, None] * t[None, :])
    return (amps @ waves).astype(np.float32)


def _envelope(n: int, attack: float, release: float, held: float) -> np.ndarray:
    """Linear attack, hold until `held` seconds, then an exponential release to silence."""
    t = np.arange(n) / SAMPLE_RATE
    env = np.minimum(1.0, t / max(attack, 1e-4))
    tail = t > held
    env[tail] *= np.exp(-(t[tail] - held) / max(release / 4, 1e-4))
    return env.astype(np.float32)


def piano(freq, seconds, velocity, rng):
    n = int((seconds + 0.25) * SAMPLE_RATE)
    k = np.arange(1, 17, dtype=np.float64)
    ratios = k * np.sqrt(1 + 2e-4 * k**2)  # slight string inharmonicity
    amps = velocity / k**1.1 / 3
    decays = (1.0 + 0.5 * k) * (freq / 260.0) ** 0.4
    # Three slightly detuned strings per note: the slow beating that sets a piano apart from struck bars.
    x = sum(_partials(freq * 2 ** (cents / 1200), n, ratios, amps, decays, rng=rng) for cents in (-1.5, 0.0, 1.5))
    return x * _envelope(n, 0.003, 0.2, seconds)


def guitar(freq, seconds, velocity, rng):
    n = int((min(seconds, 1.2) + 0.15) * SAMPLE_RATE)
    k = np.arange(1, 16, dtype=np.float64)
    amps = velocity * np.abs(np.sin(np.pi * k * 0.18)) / k**1.05  # plucked near the bridge
    decays = 3.0 + 1.6 * k
    x = _partials(freq, n, k, amps, decays, rng=rng)
    click = rng.standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / (0.004 * SAMPLE_RATE))
    return (x + 0.15 * velocity * click) * _envelope(n, 0.001, 0.1, min(seconds, 1.2))


def bells(freq, seconds, velocity, rng):
    n = int(max(seconds, 1.5) * SAMPLE_RATE)
    ratios = np.array([1.0, 2.76, 5.40, 8.93, 13.34])  # free-bar (glockenspiel / marimba-like) modes
    amps = velocity * np.array([1.0, 0.55, 0.35, 0.2, 0.1])
    decays = np.array([1.6, 3.0, 5.0, 7.0, 9.0])
    return _partials(freq, n, ratios, amps, decays, rng=rng) * _envelope(n, 0.001, 0.1, n / SAMPLE_RATE)


def organ(freq, seconds, velocity, rng):
    n = int((seconds + 0.05) * SAMPLE_RATE)
    ratios = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 8.0])  # drawbars 8', 4', 2 2/3', 2', 1 1/3', 1'
    amps = velocity * np.array([1.0, 0.75, 0.5, 0.45, 0.3, 0.25])
    x = _partials(freq, n, ratios, amps, rng=rng)
    tremolo = 1.0 + 0.12 * np.sin(2 * np.pi * 6.5 * np.arange(n) / SAMPLE_RATE)
    return x * tremolo.astype(np.float32) * _envelope(n, 0.008, 0.04, seconds)


def strings(freq, seconds, velocity, rng):
    n = int((seconds + 0.3) * SAMPLE_RATE)
    k = np.arange(1, 17, dtype=np.float64)
    amps = velocity / k * np.exp(-k / 9.0)  # bowed, sawtooth-like but mellow
    x = sum(
        _partials(freq * 2 ** (cents / 1200), n, k, amps, vibrato=(5.5, 0.004, 0.15), rng=rng)
        for cents in (-7.0, 7.0)  # two detuned desks: ensemble chorus
    )
    return x * _envelope(n, 0.18, 0.3, seconds)


def flute(freq, seconds, velocity, rng):
    n = int((seconds + 0.12) * SAMPLE_RATE)
    ratios = np.array([1.0, 2.0, 3.0, 4.0])
    amps = velocity * np.array([1.0, 0.22, 0.08, 0.03])
    x = _partials(freq, n, ratios, amps, vibrato=(5.0, 0.006, 0.2), rng=rng)
    # Breath: slow random noise ring-modulated up to the note frequency.
    noise = np.convolve(rng.standard_normal(n), np.ones(24) / 24, mode="same")
    breath = noise * np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE)
    return (x + 0.6 * velocity * breath.astype(np.float32)) * _envelope(n, 0.07, 0.12, seconds)


def pad(freq, seconds, velocity, rng):
    n = int((seconds + 0.7) * SAMPLE_RATE)
    k = np.arange(1, 11, dtype=np.float64)
    amps = velocity / k * np.exp(-k / 3.5)  # dark, filtered synth
    x = sum(_partials(freq * 2 ** (cents / 1200), n, k, amps, rng=rng) for cents in (-12.0, 0.0, 12.0))
    return x * _envelope(n, 0.5, 0.7, seconds)


def brass(freq, seconds, velocity, rng):
    n = int((seconds + 0.12) * SAMPLE_RATE)
    k = np.arange(1, 15, dtype=np.float64)
    t = np.arange(n) / SAMPLE_RATE
    x = np.zeros(n, dtype=np.float32)
    for harmonic in k:  # higher harmonics swell in later: the brassy "blat" at each attack
        if freq * harmonic >= SAMPLE_RATE / 2 * 0.95:
            break
        swell = np.minimum(1.0, t / (0.02 + 0.012 * harmonic)).astype(np.float32)
        x += (velocity / harmonic**0.9) * swell * np.sin(2 * np.pi * freq * harmonic * t + rng.uniform(0, 6.28)).astype(np.float32)
    return x * _envelope(n, 0.02, 0.1, seconds)


def bass(freq, seconds, velocity, rng):
    n = int((seconds + 0.1) * SAMPLE_RATE)
    k = np.arange(1, 7, dtype=np.float64)
    amps = velocity * np.array([1.0, 0.5, 0.3, 0.2, 0.1, 0.05])
    return _partials(freq, n, k, amps, 1.2 + 0.8 * k, rng=rng) * _envelope(n, 0.005, 0.08, seconds)


INSTRUMENTS = {
    "piano": piano,
    "strings": strings,
    "organ": organ,
    "guitar": guitar,
    "flute": flute,
    "pad": pad,
    "bells": bells,
    "brass": brass,
}


# --------------------------------------------------------------------------------------------------
# Drums
# --------------------------------------------------------------------------------------------------


def kick(rng):
    n = int(0.35 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f = 45.0 + 90.0 * np.exp(-t / 0.035)
    body = np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * np.exp(-t / 0.22)
    return body.astype(np.float32)


def snare(rng, length=0.22):
    n = int(length * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    noise = np.diff(rng.standard_normal(n + 1)) * 0.5 * np.exp(-t / 0.09)
    tone = np.sin(2 * np.pi * 185.0 * t) * np.exp(-t / 0.05)
    return (0.7 * noise + 0.5 * tone).astype(np.float32)


def hat(rng, open_=False):
    n = int((0.25 if open_ else 0.06) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    noise = np.diff(rng.standard_normal(n + 2), n=2) * 0.25
    return (noise * np.exp(-t / (0.09 if open_ else 0.018))).astype(np.float32)


# Patterns on a 16th-note grid: (voice, step, velocity). Waltz bars have 12 steps, the others 16.
DRUM_PATTERNS = {
    "four_on_the_floor": [("kick", s, 1.0) for s in (0, 4, 8, 12)]
    + [("snare", s, 0.7) for s in (4, 12)]
    + [("open_hat", s, 0.5) for s in (2, 6, 10, 14)],
    "waltz": [("kick", 0, 1.0), ("snare", 4, 0.45), ("snare", 8, 0.45), ("hat", 4, 0.4), ("hat", 8, 0.4)],
    "march": [("kick", s, 0.9) for s in (0, 8)]
    + [("snare", s, 0.9 if s % 4 == 0 else 0.5) for s in (0, 2, 4, 6, 8, 10, 12, 13, 14, 15)],
    "breakbeat": [("kick", s, 1.0) for s in (0, 10)]
    + [("kick", 3, 0.6)]
    + [("snare", s, 0.95) for s in (4, 12)]
    + [("snare", s, 0.35) for s in (7, 9, 15)]
    + [("hat", s, 0.45) for s in range(0, 16, 2)],
}


def _add(out: np.ndarray, sound: np.ndarray, start: int, gain: float) -> None:
    if start >= len(out):
        return
    end = min(len(out), start + len(sound))
    out[start:end] += gain * sound[: end - start]


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2)))
    return x / rms if rms > 0 else x


# --------------------------------------------------------------------------------------------------
# Clip rendering
# --------------------------------------------------------------------------------------------------


def mood_tilt(x: np.ndarray, mode: str) -> np.ndarray:
    """Colour the lead by mood, so "bright" and "dark" captions are true: minor is low-passed (12 dB per
    octave above 1 kHz), major gets up to 8 dB more treble. Harmony alone is a subtle cue; timbre is blunt."""
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    if mode == "minor":
        gain = 1.0 / (1.0 + (freqs / 1000.0) ** 2)
    else:
        gain = np.minimum(2.5, np.sqrt(1.0 + (freqs / 2500.0) ** 2))
    return np.fft.irfft(np.fft.rfft(x) * gain, n=len(x)).astype(np.float32)


def render(spec: ClipSpec) -> np.ndarray:
    """Render one clip to a mono float32 waveform at SAMPLE_RATE, fully determined by `spec`."""
    a = spec.attributes
    rng = np.random.default_rng(spec.seed)
    n = int(spec.seconds * SAMPLE_RATE)
    beats_per_bar = 3 if a["rhythm"] == "waltz" else 4
    beat = 60.0 / spec.bpm
    bar = beats_per_bar * beat
    n_bars = int(np.ceil(spec.seconds / bar)) + 1
    scale = MAJOR_SCALE if a["mode"] == "major" else MINOR_SCALE
    progression = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    base = REGISTER_BASE_MIDI[a["register"]] + (spec.tonic + 6) % 12 - 6  # tonic nearest the register centre
    instrument = INSTRUMENTS[a["instrument"]]

    def pitch(degree: int, octave_base: int) -> int:
        octave, step = divmod(degree, 7)
        return octave_base + 12 * octave + scale[step]

    lead = np.zeros(n + SAMPLE_RATE * 2, dtype=np.float32)

    def play(midi: int, start: float, seconds: float, velocity: float) -> None:
        jitter = float(rng.uniform(0.85, 1.0))
        _add(lead, instrument(midi_to_hz(midi), seconds, velocity * jitter, rng), int(start * SAMPLE_RATE), 1.0)

    melody_degree = 2
    for b in range(n_bars):
        root = progression[b % len(progression)]
        triad = [root, root + 2, root + 4]
        t0 = b * bar
        if a["texture"] == "chords":
            for k in range(beats_per_bar):  # the chord re-struck on every beat
                for d in triad:
                    play(pitch(d, base), t0 + k * beat, beat * 0.95, 0.6)
        elif a["texture"] == "arpeggio":
            cycle = [triad[0], triad[1], triad[2], triad[0] + 7, triad[2], triad[1]]
            for k in range(2 * beats_per_bar):  # eighth notes up and down the chord
                play(pitch(cycle[k % len(cycle)], base), t0 + k * beat / 2, beat / 2 * 0.95, 0.8)
        elif a["texture"] == "melody":
            k = 0.0
            while k < beats_per_bar:
                length = 0.5 if rng.random() < 0.35 else 1.0
                if k == 0:  # land on a chord tone at each bar line
                    melody_degree = int(rng.choice(triad)) + 7 * (melody_degree // 7)
                else:
                    melody_degree += int(rng.choice([-2, -1, 1, 2]))
                melody_degree = int(np.clip(melody_degree, 0, 11))
                play(pitch(melody_degree, base), t0 + k * beat, length * beat * 0.9, 0.9)
                k += length
        elif a["texture"] == "drone":
            for d in (0, 4):  # tonic + fifth held under everything, re-struck each bar
                play(pitch(d, base - 12 if a["register"] != "low" else base), t0, bar, 0.55)
            for k in range(0, beats_per_bar, 2 if beats_per_bar == 4 else 3):  # sparse tune above
                play(pitch(int(rng.choice(triad)) + 7, base), t0 + k * beat, beat * 1.8, 0.7)

    mix = _unit_rms(mood_tilt(lead[:n], a["mode"]))

    if a["bass"] == "bassline":
        line = np.zeros(n + SAMPLE_RATE, dtype=np.float32)
        hits = (0, 2) if beats_per_bar == 4 else (0,)
        for b in range(n_bars):
            root = progression[b % len(progression)]
            for k in hits:
                note = bass(midi_to_hz(pitch(root, BASS_BASE_MIDI + spec.tonic)), beat * 1.9, 1.0, rng)
                _add(line, note, int((b * bar + k * beat) * SAMPLE_RATE), 1.0)
        mix = mix + 0.6 * _unit_rms(line[:n])

    if a["rhythm"] != "none":
        kit = {"kick": kick(rng), "snare": snare(rng), "hat": hat(rng), "open_hat": hat(rng, open_=True)}
        drums = np.zeros(n + SAMPLE_RATE, dtype=np.float32)
        for b in range(n_bars):
            for voice, step, velocity in DRUM_PATTERNS[a["rhythm"]]:
                start = b * bar + step * beat / 4
                _add(drums, kit[voice], int(start * SAMPLE_RATE), velocity)
        mix = mix + 0.8 * _unit_rms(drums[:n])

    # Loudness: scale to the target RMS (with a little jitter); loud mixes are soft-clipped.
    target = 10 ** ((LOUDNESS_DBFS[a["loudness"]] + rng.uniform(-1.5, 1.5)) / 20)
    mix = _unit_rms(mix) * target
    mix = np.tanh(mix * 1.5) / 1.5 if a["loudness"] == "loud" else mix
    fade = min(n // 4, int(0.02 * SAMPLE_RATE))
    mix[:fade] *= np.linspace(0, 1, fade, dtype=np.float32)
    mix[n - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
    return mix.astype(np.float32)
