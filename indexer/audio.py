"""Decode any audio file to float32 mono at the model's rate, whole or as a bounded-memory stream.

libsndfile (via soundfile) reads wav/aiff/flac/ogg/opus/mp3 fast and exactly, so it goes first; PyAV
(FFmpeg) reads everything else (m4a/aac, wma, ...). Both paths downmix to mono by averaging channels and
resample with soxr's streaming resampler (HQ), the same high-quality filter librosa uses. Everything that
goes wrong surfaces as one exception type, :class:`AudioDecodeError`, whose message names the file.

``stream_audio`` yields fixed-size chunks, so a 60-minute file costs the memory of one chunk plus the
decoder's block; ``load_audio`` is the same stream concatenated.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

DEFAULT_SAMPLE_RATE = 24000
DEFAULT_CHUNK_SAMPLES = 240000  # 10 s at 24 kHz: one model clip
READ_BLOCK_FRAMES = 1 << 16  # frames read from the decoder per step (source rate)
# A declared length longer than what decodes by more than this is a truncated file, not rounding.
TRUNCATION_TOLERANCE_SECONDS = 0.5


class AudioDecodeError(Exception):
    """A file that cannot be decoded; ``str()`` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file, before decoding it."""

    sample_rate: int
    channels: int
    duration: float | None  # seconds; None when the container does not say
    codec: str  # e.g. "PCM_16", "VORBIS", "aac"
    container: str  # e.g. "WAV", "OGG", "mov,mp4,m4a,3gp,3g2,mj2"
    decoder: str  # "soundfile" or "pyav"


# --------------------------------------------------------------------------------------------------
# Probing


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read the header: rate, channels, duration, codec. Raises AudioDecodeError."""
    path = _check_file(path)
    if not _soundfile_reads_quietly(path):
        return _probe_pyav(path)
    try:
        info = sf.info(str(path))
        if info.samplerate > 0 and info.channels > 0:
            return AudioInfo(
                sample_rate=int(info.samplerate),
                channels=int(info.channels),
                duration=info.frames / info.samplerate if info.frames > 0 else 0.0,
                codec=info.subtype,
                container=info.format,
                decoder="soundfile",
            )
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    return _probe_pyav(path)


def _probe_pyav(path: Path) -> AudioInfo:
    import av

    try:
        with av.open(str(path)) as container:
            stream = _first_audio_stream(container, path)
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            return AudioInfo(
                sample_rate=int(stream.codec_context.sample_rate or stream.rate or 0),
                channels=int(stream.codec_context.channels or 0),
                duration=duration,
                codec=stream.codec_context.name,
                container=container.format.name,
                decoder="pyav",
            )
    except AudioDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg errors come in many types; all mean "cannot read"
        raise AudioDecodeError(path, _describe(exc, "not audio, or a format FFmpeg cannot read")) from exc


# --------------------------------------------------------------------------------------------------
# Decoding


def stream_audio(
    path: str | os.PathLike,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield float32 mono chunks of exactly ``chunk_samples`` at ``sample_rate`` (the last may be shorter).

    Memory is bounded by one chunk plus one decoder block whatever the file's length. A file with no
    samples, more than ``max_seconds`` of audio, or fewer samples than its header declares raises
    AudioDecodeError (possibly after some chunks were yielded: a consumer must not keep partial results).
    """
    if chunk_samples <= 0:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    path = _check_file(path)
    blocks, info = _open_blocks(path)
    yield from _rechunk(_resampled(blocks, info, sample_rate, path, max_seconds), chunk_samples)


def load_audio(
    path: str | os.PathLike, sample_rate: int = DEFAULT_SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """The whole file as one float32 mono array at ``sample_rate``. Raises AudioDecodeError."""
    chunks = list(stream_audio(path, sample_rate, DEFAULT_CHUNK_SAMPLES, max_seconds))
    return np.concatenate(chunks)


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot read: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise AudioDecodeError(path, "not a regular file")
    if st.st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(path, "cannot read: permission denied")
    return path


def _open_blocks(path: Path) -> tuple[Iterator[tuple[np.ndarray, int]], AudioInfo]:
    """(iterator of (mono float32 block, its sample rate), header info) from the first decoder that opens it."""
    try:
        handle = sf.SoundFile(str(path)) if _soundfile_reads_quietly(path) else None
    except (sf.LibsndfileError, RuntimeError, TypeError):
        handle = None
    if handle is not None and handle.samplerate > 0 and handle.channels > 0:
        info = AudioInfo(
            sample_rate=int(handle.samplerate),
            channels=int(handle.channels),
            duration=_declared_frames(handle) / handle.samplerate,
            codec=handle.subtype,
            container=handle.format,
            decoder="soundfile",
        )
        if info.container == "OGG" and not _ogg_has_end_page(path):
            handle.close()
            raise AudioDecodeError(path, "truncated: the Ogg stream has no end-of-stream page")
        return _soundfile_blocks(handle, path), info
    if handle is not None:
        handle.close()
    info = _probe_pyav(path)
    return _pyav_blocks(path), info


# libsndfile recognises its formats by these first bytes; anything else it hands to mpg123, which prints
# "Illegal Audio-MPEG-Header ... Trying to resync" on stderr while it hunts a non-MP3 file for frames.
SOUNDFILE_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"riff", b"FORM", b"fLaC", b"OggS", b"caff", b".snd", b"ID3")


def _soundfile_reads_quietly(path: Path) -> bool:
    """Whether the file starts like a format libsndfile knows (an MP3 starts with an ID3 tag or a frame
    sync); other files go to FFmpeg, which probes them without printing."""
    with open(path, "rb") as f:
        head = f.read(4)
    mpeg_sync = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    return mpeg_sync or head.startswith(SOUNDFILE_MAGIC)


def _declared_frames(handle: sf.SoundFile) -> int:
    """Frames the header promises. libsndfile quietly shortens a truncated WAV/AIFF to what is on disk,
    noting "data : <declared> (should be <actual>)" in its log; the declared size is what we compare to."""
    frames = max(int(handle.frames), 0)
    match = _SHORT_CHUNK.search(handle.extra_info or "")
    if match and frames:
        declared, actual = int(match.group(1)), int(match.group(2))
        if declared > actual > 0:
            return int(frames * declared / actual)
    return frames


_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _ogg_has_end_page(path: Path, tail_bytes: int = 1 << 16) -> bool:
    """An Ogg stream ends with a page flagged end-of-stream; a cut-off file (no length header) lacks it."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - tail_bytes))
        tail = f.read()
    last_page = tail.rfind(b"OggS")
    return last_page >= 0 and len(tail) > last_page + 5 and bool(tail[last_page + 5] & 0x04)


def _soundfile_blocks(handle: sf.SoundFile, path: Path) -> Iterator[tuple[np.ndarray, int]]:
    with handle:
        rate = int(handle.samplerate)
        while True:
            try:
                block = handle.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioDecodeError(path, _describe(exc, "decoding failed")) from exc
            if block.shape[0] == 0:
                return
            yield _downmix(block), rate  # (frames, channels) -> (frames,)


def _pyav_blocks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    import av

    try:
        with av.open(str(path)) as container:
            stream = _first_audio_stream(container, path)
            # Convert sample format only (to planar float); layout and rate stay as decoded.
            to_float = av.AudioResampler(format="fltp")
            for frame in container.decode(stream):
                for converted in to_float.resample(frame):
                    planes = converted.to_ndarray()  # (channels, samples)
                    if planes.size:
                        yield _downmix(planes.T), int(converted.sample_rate)
    except AudioDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - see _probe_pyav
        raise AudioDecodeError(path, _describe(exc, "decoding failed")) from exc


def _first_audio_stream(container, path: Path):
    if not container.streams.audio:
        raise AudioDecodeError(path, "no audio stream in the file")
    return container.streams.audio[0]


def _downmix(block: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32 by averaging channels (keeps loudness of mono sources)."""
    mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _resampled(
    blocks: Iterator[tuple[np.ndarray, int]],
    info: AudioInfo,
    sample_rate: int,
    path: Path,
    max_seconds: float | None,
) -> Iterator[np.ndarray]:
    """Mono blocks at ``sample_rate``; checks emptiness, the length limit and truncation on the way."""
    if max_seconds is not None and info.duration is not None and info.duration > max_seconds:
        raise AudioDecodeError(path, f"too long: {info.duration:.0f} s (limit {max_seconds:.0f} s)")
    resampler, rate = None, None
    decoded_seconds = 0.0
    for block, block_rate in blocks:
        if block_rate != rate:  # first block, or a stream that changes rate midway
            if resampler is not None:
                yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            resampler = None if block_rate == sample_rate else soxr.ResampleStream(
                block_rate, sample_rate, 1, dtype="float32", quality="HQ"
            )
            rate = block_rate
        decoded_seconds += len(block) / block_rate
        if max_seconds is not None and decoded_seconds > max_seconds:
            raise AudioDecodeError(path, f"too long: more than {max_seconds:.0f} s of audio")
        if not np.isfinite(block).all():
            block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
        yield block if resampler is None else resampler.resample_chunk(block)
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
    if decoded_seconds == 0.0:
        raise AudioDecodeError(path, "no audio samples could be decoded")
    if info.duration and info.duration - decoded_seconds > TRUNCATION_TOLERANCE_SECONDS:
        raise AudioDecodeError(
            path, f"truncated: header says {info.duration:.2f} s, only {decoded_seconds:.2f} s decodable"
        )


def _rechunk(blocks: Iterator[np.ndarray], chunk_samples: int) -> Iterator[np.ndarray]:
    """Regroup variable-size blocks into chunks of exactly ``chunk_samples`` (last one shorter)."""
    buffer = np.empty(chunk_samples, dtype=np.float32)
    filled = 0
    for block in blocks:
        pos = 0
        while pos < len(block):
            take = min(chunk_samples - filled, len(block) - pos)
            buffer[filled : filled + take] = block[pos : pos + take]
            filled += take
            pos += take
            if filled == chunk_samples:
                yield buffer.copy()
                filled = 0
    if filled:
        yield buffer[:filled].copy()


def _describe(exc: BaseException, fallback: str) -> str:
    # FFmpeg errors carry a clean strerror; their str() repeats the errno and the path.
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return f"{fallback}: {text}" if text else fallback
