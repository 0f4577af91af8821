"""Write small synthetic audio files in every format the indexer reads, for benchmarks and tests (which
import it from here: benchmarks may not import tests).

The signal is a deterministic chord plus a little noise (``seed`` picks the notes), so two files with
different seeds embed differently and a file re-written with the same seed is byte-for-byte the same
audio. Formats libsndfile writes go through soundfile; m4a/aac is encoded with PyAV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

# extension -> (soundfile format, default subtype); m4a is written by PyAV instead.
SOUNDFILE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aiff": ("AIFF", "PCM_16"),
}
FORMATS = (*SOUNDFILE_FORMATS, ".m4a")


def synth(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(frames, channels) float32 in [-0.8, 0.8]: a seeded three-note chord with slow tremolo and noise."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * sample_rate))
    t = np.arange(frames, dtype=np.float64) / sample_rate
    notes = 110.0 * 2 ** (rng.integers(0, 36, size=3) / 12)  # A2..A5
    wave = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in notes) / 3
    wave *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
    wave += 0.02 * rng.standard_normal(frames)
    out = np.stack([wave * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    return (0.8 * out / max(1e-9, float(np.abs(out).max()))).astype(np.float32)


def write_audio(
    path: str | os.PathLike,
    seconds: float = 3.0,
    sample_rate: int = 24000,
    channels: int = 1,
    seed: int = 0,
    subtype: str | None = None,
) -> Path:
    """Write a synthetic file whose format follows the extension (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    data = synth(seconds, sample_rate, channels, seed)
    if ext == ".m4a":
        _write_m4a(path, data, sample_rate)
    elif ext in SOUNDFILE_FORMATS:
        fmt, default_subtype = SOUNDFILE_FORMATS[ext]
        with sf.SoundFile(str(path), "w", sample_rate, channels, format=fmt, subtype=subtype or default_subtype) as out:
            # One write per second: libsndfile 1.2's Vorbis encoder crashes on a minute-long single write.
            for start in range(0, len(data), sample_rate):
                out.write(data[start : start + sample_rate])
    else:
        raise ValueError(f"cannot write {path.name}: unknown audio extension {ext!r} (use one of {FORMATS})")
    return path


def _write_m4a(path: Path, data: np.ndarray, sample_rate: int) -> None:
    import av

    layout = {1: "mono", 2: "stereo"}.get(data.shape[1])
    if layout is None:
        raise ValueError(f"cannot write {path.name}: m4a writer supports 1 or 2 channels, got {data.shape[1]}")
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout=layout)
        frame_size = 1024
        for start in range(0, len(data), frame_size):
            planes = np.ascontiguousarray(data[start : start + frame_size].T)  # (channels, samples)
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
