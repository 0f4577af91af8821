"""Shared test setup: offline hub, bounded threads, and a guard that fails any non-loopback connection."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkAccessError(RuntimeError):
    """Raised when a test tries to reach anything but this machine."""


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS: not allowed


def _guarded(real):
    def connect(self, address):
        if not _is_local(address):
            raise NetworkAccessError(f"test tried to open a network connection to {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))
    yield


@pytest.fixture(scope="session")
def tiny_model():
    """A small random MuQ-MuLan (seeded, eval mode, tokenizer from the bundled all-MiniLM-L6-v2 files).
    Shared by the whole session: do not modify its weights; build your own for training tests."""
    import torch

    from muq_model import MuQMuLan, MuQMuLanConfig

    torch.manual_seed(0)
    return MuQMuLan(MuQMuLanConfig.tiny()).eval()


class AppLibrary:
    """A small tagged music library indexed with the tiny model, for the app's service/UI/API tests.

    Eight tracks of 6-32 s by three artists over 1995-2015; ``add_file`` indexes one more file as a new
    index generation (what `muqsearch index` does), for hot-reload tests.
    """

    TRACKS = (  # (seconds, seed, tags)
        (32.0, 1, dict(title="Rain Piano", artist="Ada", album="First", date="1995", genre="Classical")),
        (12.0, 2, dict(title="Night Drive", artist="Ada", album="First", date="1999", genre="Electronic")),
        (25.0, 3, dict(title="Sunday Strings", artist="Ada Lovelace Band", album="Second", date="2003")),
        (8.0, 4, dict(title="Drum Loop", artist="Bob", album="Second", date="2004", genre="Rock")),
        (18.0, 5, dict(title="Waltz", artist="Bob", album="Third", date="2008", genre="Rock; Folk")),
        (6.0, 6, dict(title="Short Bell", artist="Cleo", album="Third", date="2010")),
        (28.0, 7, dict(title="Long Pad", artist="Cleo", album="Fourth", date="2015", genre="Ambient")),
        (15.0, 8, dict(title="Untagged Year", artist="Bob", album="Fourth")),
    )

    def __init__(self, directory, root, model):
        from indexer.testing import write_audio, write_tags

        self.directory, self.root, self.model = directory, root, model
        root.mkdir(parents=True, exist_ok=True)
        self.paths = []
        for n, (seconds, seed, tags) in enumerate(self.TRACKS):
            path = write_audio(root / f"{n:02d} {tags['title']}.wav", seconds=seconds, seed=seed)
            write_tags(path, **tags)
            self.paths.append(str(path))
        self.index(root, self.paths)

    def add_file(self, folder, *, seed, seconds, title):
        from indexer.testing import write_audio, write_tags

        path = write_audio(folder / f"{title}.wav", seconds=seconds, seed=seed)
        write_tags(path, title=title, artist="Newcomer")
        self.index(folder, [str(path)])
        return path

    def index(self, root, paths):
        """Decode, embed, tag and store the files, then write a new vector index generation."""
        import hashlib
        import json

        from indexer.audio import load_audio, probe
        from indexer.autotag import AutoTagger
        from indexer.catalog import IndexRun, Segment, Track, TrackTag, to_blob
        from indexer.tags import read_tags
        from indexer.vectors import Library

        model = self.model
        with Library.open(self.directory, create=True) as lib:
            lib.catalog.claim_fingerprint(model.fingerprint(), model.model_id, model.dim)
            tagger = AutoTagger.for_model(model, lib.catalog)
            with lib.catalog.session.begin() as s:
                s.add(IndexRun(roots=json.dumps([str(root)]), status="done", model=model.model_id))
                for path in paths:
                    wave = load_audio(path, model.sample_rate)
                    vectors, (clips,) = model.embed_audio([wave], return_clips=True)
                    info, tags, duration = probe(path), read_tags(path), len(wave) / model.sample_rate
                    stat = os.stat(path)
                    track = Track(
                        path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                        audio_hash=hashlib.sha256(wave.tobytes()).hexdigest(), duration=duration,
                        sample_rate=info.sample_rate, channels=info.channels, codec=info.codec,
                        container=info.container, title=tags.title, artist=tags.artist, album=tags.album,
                        year=tags.year, genre="; ".join(tags.genres) or None, n_segments=len(clips.starts),
                        embedding=to_blob(vectors[0].numpy()),
                    )
                    track.segments = [
                        Segment(index=i, start=float(start), end=min(float(start) + 10.0, duration),
                                embedding=to_blob(v.numpy()))
                        for i, (start, v) in enumerate(zip(clips.starts, clips.embeddings, strict=True))
                    ]
                    track.tags = [TrackTag(tag=g, category="genre", score=None, source="file") for g in tags.genres]
                    track.tags += [TrackTag(tag=t.tag, category=t.category, score=t.score, source="auto")
                                   for t in tagger.tags_for(vectors[0].numpy())
                                   if t.tag.casefold() not in {g.casefold() for g in tags.genres}]
                    s.add(track)
            lib.sync()


@pytest.fixture(scope="session")
def app_library(tiny_model, tmp_path_factory):
    """The app tests' library (session-wide: tests must not change it; copy it with `fresh_app_library`)."""
    base = tmp_path_factory.mktemp("app-library")
    return AppLibrary(base / "library", base / "music", tiny_model)


@pytest.fixture
def fresh_app_library(app_library, tmp_path):
    """A private copy of the app library's catalog and indexes (same music files) that a test may change."""
    import shutil

    copy = AppLibrary.__new__(AppLibrary)
    copy.__dict__.update(app_library.__dict__, directory=tmp_path / "library", paths=list(app_library.paths))
    shutil.copytree(app_library.directory, copy.directory)
    return copy


@pytest.fixture
def service(app_library, tiny_model):
    from app.search import SearchService

    service = SearchService(app_library.directory, tiny_model)
    yield service
    service.close()


def pytest_configure(config):
    from muq_model.runtime import configure_threads

    configure_threads()
