"""Which library and model every command uses: the ones named, else the user's library, else the demo world.

With no ``--library`` and no ``--model``: the user's default library if they have indexed one, else the
bundled demo world (``data/demo``: generated, captioned music and a small MuQ-MuLan we trained on it),
whose library lives in a per-user folder: on first start it is the prebuilt one shipped in
``data/demo/prebuilt`` when that fits the demo model and clips (seconds), else indexed then (minutes). The page and ``muqsearch demo`` say
plainly which model runs and how to switch to the real one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from indexer.layout import has_catalog
from muq_model.identity import same_vectors

REAL_MODEL = "OpenMuQ/MuQ-MuLan-large"


class SetupError(RuntimeError):
    """No library/model combination can be used; the message says what to run."""


@dataclass(frozen=True)
class DemoWorld:
    music_dir: Path  # the rendered demo library (audio files)
    model_dir: Path  # the demo model checkpoint directory
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setup:
    library_dir: Path
    model: str  # hub id or local directory for MuQMuLan.from_pretrained
    demo: DemoWorld | None = None  # set when serving the bundled demo world
    index_roots: tuple[Path, ...] = field(default_factory=tuple)  # folders to index before serving


def demo_world() -> DemoWorld | None:
    """The bundled demo world, or None when this checkout does not have it (yet)."""
    import data.demo as bundled

    music_dir, model_dir = Path(bundled.DEMO_AUDIO_DIR), Path(bundled.DEMO_MODEL_DIR)
    if not (model_dir / "config.json").is_file() or not music_dir.is_dir():
        return None
    return DemoWorld(music_dir, model_dir, tuple(query for query, _ in bundled.EXAMPLE_QUERIES))


def demo_library_dir() -> Path:
    """Where the demo world's catalog and indexes live: per user, derived data, safe to delete."""
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "muqsearch" / "demo-library"


def library_model(library_dir: Path) -> str | None:
    """The model name a library's vectors were made with (as given to `muqsearch index`)."""
    if not has_catalog(library_dir):
        return None
    from indexer.vectors import Library

    with Library.open(library_dir) as library:
        return library.catalog.get_meta("model_name")


def library_fingerprint(library_dir: Path) -> dict | None:
    if not has_catalog(library_dir):
        return None
    from indexer.vectors import Library

    with Library.open(library_dir) as library:
        return library.fingerprint


def library_in_use(library: str | None) -> Path:
    """The library a command without --model reads: --library, else the user's default library once it
    holds a catalog, else the demo library (what `serve`, `search` and `status` all show)."""
    from indexer.layout import default_library_dir

    if library:
        return Path(library).expanduser()
    if has_catalog(default_library_dir()) or demo_world() is None:
        return default_library_dir()
    return demo_library_dir()


def resolve(library: str | None, model: str | None) -> Setup:
    """Pick the library and model for a command from --library/--model and what exists on disk."""
    from indexer.layout import default_library_dir

    world = demo_world()
    if library:
        library_dir = Path(library).expanduser()
        # read even when --model names one: opening a catalog in a database checks it before any model loads
        stored = library_model(library_dir)
        chosen = model or stored
        if chosen:
            return Setup(library_dir, chosen)
        if world is None:
            raise SetupError(f"no model for {library_dir}: pass --model {REAL_MODEL} (or a local checkpoint directory)")
        return Setup(library_dir, str(world.model_dir), world)
    library_dir = default_library_dir()
    stored = library_model(library_dir)
    if model:
        return Setup(library_dir, model)
    if stored:
        return Setup(library_dir, stored)
    if world is None:
        raise SetupError(
            "there is no library yet and this installation has no bundled demo world: index your music with "
            f"`muqsearch --model {REAL_MODEL} index ~/Music` (or a local checkpoint directory as --model)"
        )
    return Setup(demo_library_dir(), str(world.model_dir), world, (world.music_dir,))


def notice(setup: Setup, model_label: str) -> str:
    """Markdown telling the user which model runs and, for the demo model, what it can and cannot do."""
    if setup.demo is None:
        return f"Library: `{setup.library_dir}`."  # the page's title line names the model
    from data.demo.captions import ATTRIBUTES

    instruments = ", ".join(ATTRIBUTES["instrument"])
    return (
        f"Running the **demo model** (`{model_label}`), a small MuQ-MuLan trained here on the bundled demo "
        f"world: generated clips of {instruments}, slow to fast, major or minor, with or without drums. "
        "**It only knows that demo world**; it will not understand real "
        f"recordings. For your own music use the real model: `muqsearch --model {REAL_MODEL} index ~/Music` "
        f"then `muqsearch --model {REAL_MODEL} serve` (or give a local checkpoint directory as `--model`)."
    )


@dataclass(frozen=True)
class Prebuilt:
    """What installing the shipped demo library found: the clips it vouches for here, or why it did not fit."""

    tracks: int  # clips the prebuilt catalog holds
    verified: int  # of them, byte for byte a clip of this checkout (skipped by the indexer)
    reason: str | None = None  # why it was not installed (None: installed)


def install_prebuilt(setup: Setup, fingerprint: dict, model_name: str) -> Prebuilt:
    """Make the shipped demo catalog (``data/demo/prebuilt``, see ``data.demo.build_library``) the demo
    library, when it fits: the loaded model (its ``fingerprint``) makes the same vectors as the one that
    built it.

    The catalog is copied and its relative paths rebased onto this checkout's clips; each clip whose size
    and SHA-256 are the manifest's gets its file's mtime, so the indexer run that follows skips it without
    calling the model. Any other clip the indexer treats as changed (a re-rendered clip is embedded again,
    a missing one pruned, a new one indexed), and the vector indexes are built from the stored vectors.
    """
    from sqlalchemy import literal, select, update

    import data.demo as bundled
    from data.demo.build_library import CATALOG, clip_files, read_manifest
    from indexer.catalog import Catalog, CatalogError, Track
    from indexer.layout import catalog_file

    prebuilt_dir = Path(bundled.DEMO_PREBUILT_DIR)
    manifest = read_manifest(prebuilt_dir)
    if manifest is None:
        return Prebuilt(0, 0, f"this checkout has no prebuilt demo library in {prebuilt_dir}")
    listed = manifest["clips"]
    if not same_vectors(manifest.get("fingerprint"), fingerprint):
        return Prebuilt(len(listed), 0, "it was made with another build of the demo model")
    music_dir = Path(os.path.abspath(setup.demo.music_dir))
    mtimes = {p.name: p.stat().st_mtime_ns for p in music_dir.iterdir() if p.is_file()}  # stat, then hash
    here = clip_files(music_dir)
    verified = {name: mtimes[name] for name, facts in listed.items() if name in mtimes and here.get(name) == facts}
    if not verified:
        return Prebuilt(len(listed), 0, "none of its clips is byte for byte a clip of this checkout")
    shutil.rmtree(setup.library_dir, ignore_errors=True)
    setup.library_dir.mkdir(parents=True)
    staged = setup.library_dir / f"staged-{CATALOG}"
    shutil.copyfile(prebuilt_dir / CATALOG, staged)
    try:
        with Catalog(staged, create=False) as catalog, catalog.session.begin() as s:
            ids = dict(s.execute(select(Track.path, Track.id)).all())
            s.execute(update(Track), [{"id": ids[name], "mtime_ns": mtime} for name, mtime in verified.items()
                                      if name in ids])
            s.execute(update(Track).values(path=literal(str(music_dir) + os.sep) + Track.path))
            catalog.set_meta(s, "model_name", model_name)
            catalog.set_meta(s, "model_fingerprint", json.dumps(fingerprint, sort_keys=True))
    except CatalogError as exc:  # e.g. a catalog schema newer than this code
        shutil.rmtree(setup.library_dir)
        return Prebuilt(len(listed), 0, str(exc))
    os.replace(staged, catalog_file(setup.library_dir))
    return Prebuilt(len(listed), len(verified))


def demo_library_fits(setup: Setup, stored: dict | None, model) -> bool:
    """Whether the setup's demo library exists and holds this model's vectors (its ``stored`` fingerprint,
    :func:`library_fingerprint`; True for any other setup): the read commands set the demo library up only
    when it does not, the indexer's check costs seconds."""
    return setup.demo is None or (stored is not None and same_vectors(stored, model.fingerprint()))


def index_if_needed(setup: Setup, model, model_name: str, *, progress: bool = True, notes=None):
    """Bring the setup's library up to date with its folders (the demo music) and return the run's
    IndexSummary (None without folders). The demo library starts from the prebuilt one when it fits
    (seconds), else from a full run (minutes); afterwards the run is a quick no-op check (the indexer
    skips unchanged files). What it says goes to ``notes`` (default stdout; stderr for commands whose
    stdout is their answer)."""
    if not setup.index_roots:
        return None
    from indexer.pipeline import Indexer, IndexOptions
    from indexer.vectors import Library

    prebuilt = None
    if setup.demo is not None:
        fingerprint = model.fingerprint()  # hashes every weight: once
        stored = library_fingerprint(setup.library_dir)
        if stored is not None and not same_vectors(stored, fingerprint):
            # the demo library is derived data: made by another build of the demo model, it is rebuilt
            shutil.rmtree(setup.library_dir)
            stored = None
        if stored is None:
            prebuilt = install_prebuilt(setup, fingerprint, model_name)
    with Library.open(setup.library_dir, create=True) as library:
        if progress and prebuilt is not None:
            print(_prebuilt_note(setup, prebuilt), file=notes or sys.stdout, flush=True)
        elif progress and library.generation == 0:
            print(f"Indexing the demo library into {setup.library_dir} (first start only)…", file=notes or sys.stdout,
                  flush=True)
        options = IndexOptions(prune=True, progress=progress)
        return Indexer(library, model, model_name, options).run(list(setup.index_roots))


def _prebuilt_note(setup: Setup, prebuilt: Prebuilt) -> str:
    if prebuilt.reason:
        return (f"Indexing the demo library into {setup.library_dir} (first start only; minutes): the prebuilt "
                f"demo library does not fit: {prebuilt.reason}.")
    note = (f"Demo library: the prebuilt catalog of {prebuilt.tracks} clips, checked against the demo model and "
            f"the clips, installed in {setup.library_dir}")
    if prebuilt.verified < prebuilt.tracks:
        note += f"; {prebuilt.tracks - prebuilt.verified} of its clips are not byte for byte here: re-examined"
    return note + "."
