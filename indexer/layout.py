"""The layout of a library directory: the one place that knows where a library keeps its parts.

    DIR/catalog.sqlite        the catalog, the source of truth (SQLite; a catalog URL in $MUQSEARCH_CATALOG,
                              set by --catalog, puts it in a database instead: PostgreSQL)
    DIR/vectors/gen-N/        FAISS index generations derived from the catalog (``indexer.vectors``)
    DIR/cache/                derived data, safe to delete
"""

from __future__ import annotations

import os
from pathlib import Path

CATALOG_FILENAME = "catalog.sqlite"
VECTORS_DIRNAME = "vectors"
CACHE_DIRNAME = "cache"
LIBRARY_ENV = "MUQSEARCH_LIBRARY"
CATALOG_ENV = "MUQSEARCH_CATALOG"


def default_library_dir() -> Path:
    """$MUQSEARCH_LIBRARY, else $XDG_DATA_HOME/muqsearch/library (~/.local/share/muqsearch/library)."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "muqsearch" / "library"


def catalog_file(directory: str | os.PathLike) -> Path:
    """The SQLite catalog file of the library in ``directory``."""
    return Path(directory) / CATALOG_FILENAME


def has_catalog(directory: str | os.PathLike) -> bool:
    """True once ``directory`` holds a library (its catalog file exists), and always while a catalog URL is
    set: the library is then in that database, which opening it (``Library.open``) reaches and checks."""
    return bool(os.environ.get(CATALOG_ENV)) or catalog_file(directory).exists()
