"""The decode stage: worker processes that turn files into model-ready clips while the model runs.

Each worker owns one duplex pipe to the indexer. It receives :class:`DecodeJob` s (the indexer keeps at
most two outstanding per worker) and answers each, in order, with a ``ClipMessage`` for every clip of
the file, then one ``DoneMessage`` carrying the file's facts and tags, or an ``ErrorMessage`` naming the
stage that failed. Clips follow the model's clip policy (:func:`muq_model.clips.iter_clips`) and stream:
a worker decodes at most ``prefetch`` clips ahead of what the indexer has read, so memory stays bounded
for a 60-minute file and the model always finds clips waiting.

One pipe per worker (no queue shared between workers) means a decoder that crashes -- a segfault in a
codec library, a kill -- takes nothing down with it: no shared lock is left held, no half-written
message reaches another reader. The indexer sees end-of-file on that pipe and reports the file.
Likewise a worker sees end-of-file when the indexer dies, and exits.

A job for a file whose audio is already in the catalog (``known_audio_hash``; the file changed on disk,
e.g. re-tagged) is first decoded once just to hash its audio; when the hash matches, the worker answers
``DoneMessage(same_audio=True)`` without any clips, so only the tags are refreshed.

This module imports only what decoding needs, so workers start fast and small.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import sys
import threading
from dataclasses import dataclass

import numpy as np

from indexer.audio import AudioDecodeError, probe, stream_audio
from indexer.tags import read_tags


@dataclass(frozen=True)
class DecodeJob:
    task_id: int
    path: str
    known_audio_hash: str | None = None


@dataclass(frozen=True)
class ClipMessage:
    task_id: int
    index: int  # clip number within the track
    start_sample: int
    clip: np.ndarray  # (samples,) float32 at the model rate


@dataclass(frozen=True)
class DoneMessage:
    task_id: int
    facts: dict  # duration, sample_rate, channels, codec, container, audio_hash, size, mtime_ns
    tags: object  # indexer.tags.TrackTags
    n_clips: int
    same_audio: bool = False


@dataclass(frozen=True)
class ErrorMessage:
    task_id: int
    stage: str  # "read" (cannot open/probe), "decode" (fails while decoding)
    message: str


@dataclass(frozen=True)
class DecodeSettings:
    sample_rate: int
    policy: object  # muq_model.clips.ClipPolicy
    max_seconds: float
    stderr_path: str | None = None  # where decoder libraries' chatter goes (keeps the progress bar clean)


class AudioHasher:
    """Hashes decoded audio as it streams past: unchanged by tag edits, changed by any audio edit."""

    def __init__(self):
        self._digest = hashlib.blake2b(digest_size=16)
        self.samples = 0

    def wrap(self, chunks):
        for chunk in chunks:
            self._digest.update(chunk.tobytes())
            self.samples += len(chunk)
            yield chunk

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def decode_file(job: DecodeJob, settings: DecodeSettings, emit) -> None:
    """Decode one file and ``emit`` its messages (the worker loop sends them; tests may collect them)."""
    from muq_model.clips import iter_clips

    try:
        stat = os.stat(job.path)
        info = probe(job.path)
    except (AudioDecodeError, OSError) as exc:
        emit(ErrorMessage(job.task_id, "read", _reason(exc)))
        return
    tags = read_tags(job.path)
    rate = settings.sample_rate

    def chunks():
        return stream_audio(job.path, rate, settings.policy.clip_samples, max_seconds=settings.max_seconds)

    try:
        if job.known_audio_hash is not None:
            hasher = AudioHasher()
            for _ in hasher.wrap(chunks()):
                pass
            if hasher.hexdigest() == job.known_audio_hash:
                facts = _facts(info, stat, hasher, rate)
                emit(DoneMessage(job.task_id, facts, tags, n_clips=0, same_audio=True))
                return
        hasher = AudioHasher()
        n_clips = 0
        for start, clip in iter_clips(hasher.wrap(chunks()), settings.policy):
            emit(ClipMessage(job.task_id, n_clips, start, np.ascontiguousarray(clip.numpy(), dtype=np.float32)))
            n_clips += 1
    except (AudioDecodeError, ValueError, OSError, MemoryError) as exc:
        emit(ErrorMessage(job.task_id, "decode", _reason(exc)))
        return
    emit(DoneMessage(job.task_id, _facts(info, stat, hasher, rate), tags, n_clips))


def _facts(info, stat: os.stat_result, hasher: AudioHasher, rate: int) -> dict:
    return {
        "duration": hasher.samples / rate,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "codec": info.codec,
        "container": info.container,
        "audio_hash": hasher.hexdigest(),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, AudioDecodeError):
        return exc.reason
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Worker process


def worker_main(connection, settings: DecodeSettings, prefetch: int) -> None:
    """Process entry point: decode the jobs that arrive on ``connection`` until a None job.

    The main thread decodes into a bounded outbox; a sender thread writes the outbox to the pipe, so
    decoding runs ahead of the indexer by up to ``prefetch`` messages and no further.
    """
    import torch

    # Ctrl-C or a SIGTERM to the process group is for the indexer, which stops us by closing the pipe;
    # dying here first would make the file in hand look like it crashed its decoder.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)  # the clip policy uses torch; the cores belong to the model
    if settings.stderr_path:
        _redirect_stderr(settings.stderr_path)
    outbox: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    sender = threading.Thread(target=_send_all, args=(outbox, connection), daemon=True)
    sender.start()
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            os._exit(0)  # the indexer is gone
        if job is None:
            break
        try:
            decode_file(job, settings, outbox.put)
        except Exception as exc:  # noqa: BLE001 - a surprise in one file must not end the others
            outbox.put(ErrorMessage(job.task_id, "decode", f"unexpected {type(exc).__name__}: {exc}"))
    outbox.put(None)
    sender.join()


def _send_all(outbox: queue.Queue, connection) -> None:
    while (message := outbox.get()) is not None:
        try:
            connection.send(message)
        except (EOFError, OSError):
            os._exit(0)  # the indexer is gone: nobody will read the rest


def _redirect_stderr(path: str) -> None:
    """Send file descriptor 2 (where libmpg123 and FFmpeg print warnings) to a log file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)
