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


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tmp_path_factory):
    """The tiny model saved with save_pretrained, for tests that run `muqsearch ... --model DIR`."""
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("tiny-model") / "model")


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
        from benchmarks.audio_files import write_audio
        from tests.helpers import write_tags

        self.directory, self.root, self.model = directory, root, model
        root.mkdir(parents=True, exist_ok=True)
        self.paths = []
        for n, (seconds, seed, tags) in enumerate(self.TRACKS):
            path = write_audio(root / f"{n:02d} {tags['title']}.wav", seconds=seconds, seed=seed)
            write_tags(path, **tags)
            self.paths.append(str(path))
        self.index(root, self.paths)

    def add_file(self, folder, *, seed, seconds, title):
        from benchmarks.audio_files import write_audio
        from tests.helpers import write_tags

        path = write_audio(folder / f"{title}.wav", seconds=seconds, seed=seed)
        write_tags(path, title=title, artist="Newcomer")
        self.index(folder, [str(path)])
        return path

    def index(self, root, paths):
        """Run the real indexing pipeline over ``root`` (which holds ``paths``): a new index generation."""
        from indexer.pipeline import Indexer, IndexOptions
        from indexer.vectors import Library

        with Library.open(self.directory, create=True) as lib:
            summary = Indexer(lib, self.model, "tiny-test-model", IndexOptions(workers=1, progress=False)).run([root])
        assert summary.failed == 0 and summary.indexed >= len(paths), summary


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


@pytest.fixture(scope="module")
def demo_library(tmp_path_factory):
    """The whole demo library installed from the prebuilt catalog (no clip embedded), and its model."""
    from app import choose
    from muq_model import MuQMuLan

    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("home")))
    patch.delenv("MUQSEARCH_LIBRARY", raising=False)
    patch.delenv("MUQSEARCH_MODEL", raising=False)
    setup = choose.resolve(None, None)
    model = MuQMuLan.from_pretrained(setup.model).eval()
    choose.index_if_needed(setup, model, setup.model, progress=False)
    yield setup, model
    patch.undo()


@pytest.fixture(scope="module")
def demo_api(demo_library):
    """The installed demo library's web app on a free local port: (a gradio client, the service behind it)."""
    from gradio_client import Client

    from app.search import SearchService
    from app.ui import app_info, launch

    setup, model = demo_library
    service = SearchService(setup.library_dir, model, model_name=setup.model)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app, url = launch(service, app_info(setup), port=port, block=False, quiet=True)
    yield Client(url, verbose=False, download_files=False), service
    app.close()
    service.close()


@pytest.fixture(scope="session")
def app_server(app_library, tiny_model):
    """The real web app (UI + API) on 127.0.0.1 at a free port, serving the app library: (url, service)."""
    from app.search import SearchService, ServiceLimits
    from app.ui import AppInfo, launch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = SearchService(app_library.directory, tiny_model, model_name="tiny test model",
                            limits=ServiceLimits(max_upload_bytes=2 * 2**20))
    demo, url = launch(service, AppInfo("tiny test model", notice="Test notice: tiny model."), port=port,
                       block=False, quiet=True)
    yield url.rstrip("/"), service
    demo.close()
    service.close()


def pytest_configure(config):
    from muq_model.runtime import configure_threads

    configure_threads()


# --------------------------------------------------------------------------------------------------
# PostgreSQL: a throw-away cluster for the catalog tests


def _postgres_bindir():
    """The PostgreSQL server binaries (Debian's postgresql package), newest version first."""
    import glob
    import shutil

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PostgresServer:
    """A running throw-away cluster: ``database(name)`` makes a fresh database and returns its URL."""

    def __init__(self, socket_dir: str, port: int):
        self.socket_dir, self.port = socket_dir, port

    def _admin(self):
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=self.port, user="postgres", dbname="postgres",
                               autocommit=True)

    def database(self, name: str, template: str | None = None) -> str:
        """A new database ``name`` (empty, or a copy of database ``template``), replacing any of that name."""
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            copy = f' TEMPLATE "{template}"' if template else ""
            connection.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://postgres@/{name}?host={self.socket_dir}&port={self.port}"


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL cluster made with initdb in a temporary folder, listening only on a unix socket there,
    stopped and removed after the session.

    initdb refuses to run as root, so when the tests run as root the cluster belongs to ``nobody``."""
    import pwd
    import shutil
    import subprocess
    import tempfile

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries not found: run `bash scripts/install.sh --dev`")
    base = tempfile.mkdtemp(prefix="muqsearch-pg-")
    as_owner = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        as_owner = ["runuser", "-u", "nobody", "--"]
    data, port = os.path.join(base, "data"), 5432  # the socket lives in base: no clash with any other server
    subprocess.run([*as_owner, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                    "--locale=C", "--no-sync"], check=True, capture_output=True, cwd=base)
    options = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off -c max_connections=100"
    subprocess.run([*as_owner, f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(base, "log"),
                    "-w", "start"], check=True, capture_output=True, cwd=base)
    try:
        yield PostgresServer(base, port)
    finally:
        subprocess.run([*as_owner, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_catalog(postgres_server, request):
    """The URL of a new, empty PostgreSQL database for one test."""
    import re

    return postgres_server.database("t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50])
