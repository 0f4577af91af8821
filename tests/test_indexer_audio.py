"""Decoding: every format, rate and channel layout comes out as float32 mono 24 kHz; bad files fail clearly."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from benchmarks.audio_files import synth, write_audio
from indexer.audio import AudioDecodeError, load_audio, probe, stream_audio

RATE = 24000


def reference(seconds, sample_rate, channels=1, seed=0):
    """What a perfect decoder returns for write_audio(...) with these arguments."""
    mono = synth(seconds, sample_rate, channels, seed).mean(axis=1)
    return soxr.resample(mono, sample_rate, RATE, quality="HQ").astype(np.float32)


def spectrum_similarity(a, b):
    """Cosine of magnitude spectra: 1.0 for the same sound, robust to codec delay and lossy artefacts."""
    n = min(len(a), len(b))
    fa, fb = np.abs(np.fft.rfft(a[:n])), np.abs(np.fft.rfft(b[:n]))
    return float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb)))


LOSSLESS = [
    ("pcm_u8.wav", "PCM_U8", 8000, 1, 2e-2),
    ("pcm16.wav", "PCM_16", 22050, 2, 1e-3),
    ("pcm24.wav", "PCM_24", 96000, 2, 1e-4),
    ("float.wav", "FLOAT", 44100, 1, 1e-4),
    ("six_channels.wav", "PCM_16", 48000, 6, 1e-3),
    ("hi.flac", "PCM_24", 96000, 2, 1e-4),
    ("lo.flac", "PCM_16", 8000, 1, 1e-3),
    ("surround.flac", "PCM_16", 44100, 6, 1e-3),
    ("a.aiff", "PCM_16", 44100, 2, 1e-3),
    ("b.aiff", "PCM_24", 32000, 1, 1e-4),
    ("c.aiff", "FLOAT", 24000, 1, 1e-5),
]


@pytest.mark.parametrize("name,subtype,rate,channels,tolerance", LOSSLESS)
def test_lossless_formats_decode_to_the_exact_mono_24k_signal(tmp_path, name, subtype, rate, channels, tolerance):
    path = write_audio(tmp_path / name, 2.0, rate, channels, seed=3, subtype=subtype)
    wave = load_audio(path)
    expected = reference(2.0, rate, channels, seed=3)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == len(expected)
    assert np.max(np.abs(wave - expected)) < tolerance


LOSSY = [
    ("v.ogg", 44100, 2),
    ("v8k.ogg", 8000, 1),
    ("o.opus", 48000, 2),
    ("o16.opus", 16000, 1),
    ("m.mp3", 44100, 2),
    ("m22.mp3", 22050, 1),
    ("aac.m4a", 44100, 2),
    ("aac48.m4a", 48000, 1),
]


@pytest.mark.parametrize("name,rate,channels", LOSSY)
def test_lossy_formats_decode_to_the_same_sound(tmp_path, name, rate, channels):
    path = write_audio(tmp_path / name, 3.0, rate, channels, seed=5)
    wave = load_audio(path)
    expected = reference(3.0, rate, channels, seed=5)
    assert wave.dtype == np.float32 and wave.ndim == 1
    # Encoders add priming/padding; a decoded length within 0.1 s of the true one is right.
    assert abs(len(wave) - len(expected)) < 0.1 * RATE
    assert spectrum_similarity(wave, expected) > 0.9
    # A different tune must not look the same: the check above can fail.
    assert spectrum_similarity(wave, reference(3.0, rate, channels, seed=6)) < 0.5


def test_m4a_goes_through_pyav_and_the_rest_through_soundfile(tmp_path):
    assert probe(write_audio(tmp_path / "x.m4a", 1.0, 44100, 2)).decoder == "pyav"
    info = probe(write_audio(tmp_path / "x.flac", 1.0, 44100, 2))
    assert (info.decoder, info.sample_rate, info.channels) == ("soundfile", 44100, 2)
    assert info.duration == pytest.approx(1.0)


def test_multichannel_downmix_is_the_channel_mean(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(-0.5, 0.5, size=(RATE, 4)).astype(np.float32)
    sf.write(tmp_path / "quad.wav", data, RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "quad.wav"), data.mean(axis=1), atol=1e-6)


def test_unicode_and_odd_file_names(tmp_path):
    for name in ["Ünïcødé — 音楽.flac", "space and 'quote'.mp3", "日本語.m4a", "emoji 🎵.ogg"]:
        wave = load_audio(write_audio(tmp_path / name, 1.0, 44100, 1))
        assert abs(len(wave) - RATE) < 0.1 * RATE


def test_stream_yields_fixed_size_chunks_that_concatenate_to_the_whole(tmp_path):
    path = write_audio(tmp_path / "long.flac", 7.3, 44100, 2, seed=1)
    chunks = list(stream_audio(path, chunk_samples=30000))
    assert all(len(c) == 30000 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 30000
    np.testing.assert_array_equal(np.concatenate(chunks), load_audio(path))
    assert len(np.concatenate(chunks)) == round(7.3 * RATE)


def test_streaming_a_long_file_uses_bounded_memory(tmp_path):
    # 20 minutes at 8 kHz: decoding it whole at 24 kHz would take 115 MB of float32.
    path = tmp_path / "twenty_minutes.wav"
    block = synth(60.0, 8000, 1)
    with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as out:
        for _ in range(20):
            out.write(block)
    tracemalloc.start()
    try:
        total = sum(len(chunk) for chunk in stream_audio(path, chunk_samples=RATE * 10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 20 * 60 * RATE
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB while streaming"


def test_rate_equal_to_target_is_passed_through_unchanged(tmp_path):
    data = synth(1.5, RATE, 1, seed=2)[:, 0]
    sf.write(tmp_path / "same.wav", data, RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "same.wav"), data)


def test_other_target_rates(tmp_path):
    path = write_audio(tmp_path / "x.wav", 2.0, 44100, 1)
    assert len(load_audio(path, sample_rate=16000)) == 32000
    assert len(load_audio(path, sample_rate=48000)) == 96000


# ---------------------------------------------------------------------------------------------------
# Bad input: one exception type, naming the file and the reason.


def expect_error(path, reason_part, **kwargs):
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, **kwargs)
    assert str(path) in str(info.value)
    assert reason_part in info.value.reason.lower()
    return info.value


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    expect_error(tmp_path / "empty.mp3", "empty")


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.wav", "no such file")


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "dir.flac").mkdir()
    expect_error(tmp_path / "dir.flac", "not a regular file")


@pytest.mark.parametrize("name,reason", [
    ("notes.mp3", "not audio, or a format ffmpeg cannot read"),
    ("readme.flac", "no audio samples could be decoded"),  # FFmpeg opens it, and finds nothing to decode
    ("fake.m4a", "not audio, or a format ffmpeg cannot read"),
    ("text.wav", "not audio, or a format ffmpeg cannot read"),
])
def test_text_file_with_audio_extension(tmp_path, name, reason):
    (tmp_path / name).write_text("this is not audio at all\n" * 200)
    expect_error(tmp_path / name, reason)


@pytest.mark.parametrize("name", ["notes.mp3", "text.wav", "noise.ogg"])
def test_a_file_that_is_not_audio_fails_without_decoder_chatter(tmp_path, capfd, name):
    """libsndfile's mpg123 printed "Illegal Audio-MPEG-Header ... Trying to resync" before the clean error."""
    (tmp_path / name).write_text("this is not audio at all\n" * 200)
    expect_error(tmp_path / name, "")
    with pytest.raises(AudioDecodeError):
        probe(tmp_path / name)
    out, err = capfd.readouterr()  # file-descriptor level: catches what C libraries write
    assert "MPEG" not in err + out and "resync" not in err + out, err


def test_random_bytes(tmp_path):
    (tmp_path / "noise.ogg").write_bytes(np.random.default_rng(0).bytes(50_000))
    expect_error(tmp_path / "noise.ogg", "not audio, or a format ffmpeg cannot read")


@pytest.mark.parametrize("name,reason", [
    ("t.wav", "truncated: header says 4.00 s, only 2.00 s decodable"),
    ("t.aiff", "truncated: header says 4.00 s, only 2.00 s decodable"),
    ("t.flac", "decoding failed"),  # libsndfile loses the frame sync at the cut
    ("t.mp3", "truncated: header says 4.00 s"),
    ("t.m4a", "not audio, or a format ffmpeg cannot read"),  # the index (moov atom) was at the end
    ("t.ogg", "truncated: the ogg stream has no end-of-stream page"),
])
def test_truncated_files(tmp_path, name, reason):
    full = write_audio(tmp_path / f"full_{name}", 4.0, 44100, 2)
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, reason)


def test_too_long(tmp_path):
    path = write_audio(tmp_path / "x.flac", 3.0, 8000, 1)
    expect_error(path, "too long", max_seconds=2.0)
    assert len(load_audio(path, max_seconds=5.0)) == 3 * RATE


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    path = write_audio(tmp_path / "locked.wav", 1.0)
    path.chmod(0)
    expect_error(path, "permission")


def test_a_file_without_an_audio_stream(tmp_path):
    import av

    path = tmp_path / "video_only.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    expect_error(path, "no audio stream")
