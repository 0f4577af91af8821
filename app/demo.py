"""Out of the box: which library and model a command uses when the user names neither.

With no ``--library`` and no ``--model``: the user's default library if they have indexed one, else the
bundled demo world (``data/demo``: generated, captioned music and a small MuQ-MuLan we trained on it),
indexed on first start into a per-user folder and reused afterwards. The page and ``muqsearch demo`` say
plainly which model runs and how to switch to the real one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
    if not (library_dir / "catalog.sqlite").exists():
        return None
    from indexer.vectors import Library

    with Library.open(library_dir) as library:
        return library.catalog.get_meta("model_name")


def library_fingerprint(library_dir: Path) -> dict | None:
    if not (library_dir / "catalog.sqlite").exists():
        return None
    from indexer.vectors import Library

    with Library.open(library_dir) as library:
        return library.fingerprint


def resolve(library: str | None, model: str | None) -> Setup:
    """Pick the library and model for a command from --library/--model and what exists on disk."""
    from indexer.vectors import default_library_dir

    world = demo_world()
    if library:
        library_dir = Path(library).expanduser()
        chosen = model or library_model(library_dir)
        if chosen:
            return Setup(library_dir, chosen)
        if world is None:
            raise SetupError(f"no model for {library_dir}: pass --model {REAL_MODEL} (or a local checkpoint directory)")
        return Setup(library_dir, str(world.model_dir), world)
    library_dir = default_library_dir()
    if model:
        return Setup(library_dir, model)
    if (library_dir / "catalog.sqlite").exists() and library_model(library_dir):
        return Setup(library_dir, library_model(library_dir))
    if world is None:
        raise SetupError(
            "there is no library yet and this installation has no bundled demo world: index your music with "
            f"`muqsearch --model {REAL_MODEL} index ~/Music` (or a local checkpoint directory as --model)"
        )
    return Setup(demo_library_dir(), str(world.model_dir), world, (world.music_dir,))


def notice(setup: Setup, model_label: str) -> str:
    """Markdown telling the user which model runs and, for the demo model, what it can and cannot do."""
    if setup.demo is None:
        return f"Model: **{model_label}** · library: `{setup.library_dir}`."
    from data.demo.captions import ATTRIBUTES

    instruments = ", ".join(ATTRIBUTES["instrument"])
    return (
        f"Running the **demo model** (`{model_label}`), a small MuQ-MuLan trained here on the bundled demo "
        f"world: generated clips of {instruments}, slow to fast, major or minor, with or without drums. "
        "**It only knows that demo world**; it will not understand real "
        f"recordings. For your own music use the real model: `muqsearch --model {REAL_MODEL} index ~/Music` "
        f"then `muqsearch --model {REAL_MODEL} serve` (or give a local checkpoint directory as `--model`)."
    )


def index_if_needed(setup: Setup, model, model_name: str, *, progress: bool = True) -> None:
    """Index the setup's folders (the demo music) into its library: a full run the first time, a quick
    no-op check afterwards (the indexer skips unchanged files)."""
    if not setup.index_roots:
        return
    from indexer.pipeline import Indexer, IndexOptions
    from indexer.vectors import Library

    stored = library_fingerprint(setup.library_dir) if setup.demo is not None else None
    if stored is not None and not same_vectors(stored, model.fingerprint()):
        # the demo library is derived data: made by another build of the demo model, it is rebuilt
        import shutil

        shutil.rmtree(setup.library_dir)
    with Library.open(setup.library_dir, create=True) as library:
        first = library.generation == 0
        if first and progress:
            print(f"Indexing the demo library into {setup.library_dir} (first start only)…", flush=True)
        Indexer(library, model, model_name, IndexOptions(prune=True, progress=progress)).run(list(setup.index_roots))
