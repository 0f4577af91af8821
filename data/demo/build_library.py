"""The demo library, prebuilt: what `muqsearch serve` would index on a first start, shipped so that a fresh
clone answers its first query in seconds instead of minutes.

    python -m data.demo.build_library            # rewrites data/demo/prebuilt/ (after retraining the
                                                 # demo model or re-rendering the clips)
    python -m data.demo.build_library --refresh  # recomputes only what derives from the stored vectors
                                                 # (auto-tags, the confidence calibration's text banks):
                                                 # after a vocabulary or calibration change, no audio embedded

indexes the demo clips with the demo model through the ordinary indexer (``indexer.pipeline.Indexer``,
auto-tags included, one decoder so tracks are stored in file order), embeds the confidence calibration's
text banks (``indexer.calibration.null_bank``) and writes two files that hold no trace of the machine that
built them:

    prebuilt/catalog.sqlite   the catalog: track paths relative to the clips' folder, file mtimes 0,
                              fixed timestamps, no run history, no vector index generation (FAISS
                              indexes are derived: the library builds them from the stored vectors)
    prebuilt/manifest.json    the model's vector space (its fingerprint) and each clip's size and SHA-256

``app.choose`` installs it only for a model that makes the same vectors, and vouches only for the clips
whose bytes are those listed; the indexer then handles the rest as for any library (see
``app.choose.install_prebuilt``). The same clips, model and machine give the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import data.demo
from indexer.autotag import retag
from indexer.calibration import null_bank

CATALOG = "catalog.sqlite"
MANIFEST = "manifest.json"
FIXED_TIME = "2000-01-01 00:00:00.000000"  # every timestamp in the shipped catalog
# meta keys of one machine's library, not of the vectors: the vector index generation and its kinds
PAGE_SIZE = 16384  # a 2 KiB vector fits in its row: with 4 KiB pages each spills to half-empty overflow pages
LOCAL_META = ("index_generation", "index_type", "segment_index_type")


def clip_files(music_dir: Path) -> dict[str, dict]:
    """name -> {size, sha256} of every file directly in ``music_dir`` (the demo clips), in name order."""
    files = {}
    for path in sorted(Path(music_dir).iterdir()):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            files[path.name] = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
    return files


def read_manifest(prebuilt_dir: Path) -> dict | None:
    """The prebuilt library's manifest, or None when this checkout has no (readable) prebuilt library."""
    try:
        manifest = json.loads((Path(prebuilt_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if (Path(prebuilt_dir) / CATALOG).is_file() else None


@contextmanager
def prebuilt_catalog_copy(prebuilt_dir: Path | None = None) -> Iterator:
    """The shipped demo catalog opened on a temporary copy, for measurements that read its stored vectors
    and tags (the shipped file itself is never opened for writing)."""
    from indexer.catalog import Catalog

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(Path(prebuilt_dir or data.demo.DEMO_PREBUILT_DIR) / CATALOG, Path(tmp) / CATALOG)
        with Catalog(Path(tmp) / CATALOG, create=False) as catalog:
            yield catalog


def build(out_dir: Path, music_dir: Path, model_dir: Path, *, progress: bool = True) -> dict:
    """Index ``music_dir`` with the model in ``model_dir`` and write the prebuilt library to ``out_dir``."""
    from indexer.pipeline import Indexer, IndexOptions
    from indexer.vectors import Library
    from muq_model import MuQMuLan

    model = MuQMuLan.from_pretrained(model_dir).eval()
    music_dir = Path(os.path.abspath(music_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="muqsearch-prebuilt-") as tmp:
        with Library.open(Path(tmp) / "library", create=True) as library:
            summary = Indexer(library, model, "data/demo/model",
                              IndexOptions(workers=1, progress=progress)).run([music_dir])
            null_bank(model, library.catalog)
        if summary.failed:
            raise RuntimeError(f"{summary.failed} demo clips failed to index: {summary.errors[:3]}")
        catalog = Path(tmp) / "library" / CATALOG
        _make_portable(catalog, music_dir, model.fingerprint())
        _write_compact(catalog, out_dir)
    fingerprint = dict(model.fingerprint(), model_id="data/demo/model")
    manifest = {
        "built_by": "python -m data.demo.build_library",
        "fingerprint": fingerprint,
        "tracks": summary.indexed,
        "clips": clip_files(music_dir),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def refresh(out_dir: Path, model_dir: Path) -> None:
    """Recompute, in the prebuilt catalog, what derives from its stored vectors and the model's texts:
    every track's auto-tags (``indexer.autotag``) and the calibration banks. No audio is decoded."""
    from indexer.autotag import AutoTagger
    from indexer.catalog import Catalog
    from muq_model import MuQMuLan

    model = MuQMuLan.from_pretrained(model_dir).eval()
    with tempfile.TemporaryDirectory(prefix="muqsearch-prebuilt-") as tmp:
        catalog_path = Path(tmp) / CATALOG
        shutil.copyfile(out_dir / CATALOG, catalog_path)
        with Catalog(catalog_path, create=False) as catalog:
            tagger = AutoTagger.for_model(model, catalog)
            retag(catalog, tagger)
            null_bank(model, catalog)
        with closing(sqlite3.connect(catalog_path)) as db:
            with db:
                db.execute("UPDATE text_collections SET created = ?", (FIXED_TIME,))
            db.execute("PRAGMA journal_mode=DELETE")  # opening it set WAL; the shipped file has none
        _write_compact(catalog_path, out_dir)


def _write_compact(catalog: Path, out_dir: Path) -> None:
    """Write ``catalog`` to ``out_dir`` as one compact file (fixed page size, no free pages)."""
    staged = out_dir / f".{CATALOG}.tmp"
    staged.unlink(missing_ok=True)
    with closing(sqlite3.connect(catalog)) as db:
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("VACUUM INTO ?", (str(staged),))
    os.replace(staged, out_dir / CATALOG)


def _make_portable(catalog: Path, music_dir: Path, fingerprint: dict) -> None:
    """Strip what ties a freshly indexed catalog to this machine and this moment."""
    prefix = str(music_dir) + os.sep
    with closing(sqlite3.connect(catalog)) as db, db:
        outside = db.execute("SELECT path FROM tracks WHERE substr(path, 1, ?) != ?", (len(prefix), prefix)).fetchall()
        if outside:
            raise RuntimeError(f"tracks outside {music_dir}: {outside[:3]}")
        db.execute("UPDATE tracks SET path = substr(path, ?), mtime_ns = 0, indexed_at = ?, run_id = NULL",
                   (len(prefix) + 1, FIXED_TIME))
        db.execute("UPDATE text_collections SET created = ?", (FIXED_TIME,))
        db.execute("DELETE FROM errors")
        db.execute("DELETE FROM index_runs")
        db.execute("DELETE FROM sqlite_sequence WHERE name IN ('index_runs', 'errors')")
        db.execute(f"DELETE FROM meta WHERE key IN ({', '.join('?' * len(LOCAL_META))})", LOCAL_META)
        db.execute("UPDATE meta SET value = ? WHERE key = 'model_fingerprint'",
                   (json.dumps(dict(fingerprint, model_id="data/demo/model"), sort_keys=True),))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=data.demo.DEMO_PREBUILT_DIR,
                        help="output directory (default: %(default)s)")
    parser.add_argument("--music", type=Path, default=data.demo.DEMO_AUDIO_DIR, help="the clips (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=data.demo.DEMO_MODEL_DIR, help="the model (default: %(default)s)")
    parser.add_argument("--refresh", action="store_true",
                        help="only recompute auto-tags and calibration banks from the stored vectors")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.refresh:
        refresh(args.out, args.model)
        print(f"refreshed {args.out / CATALOG} in {time.monotonic() - started:.0f} s")
        return 0
    manifest = build(args.out, args.music, args.model)
    size = sum((args.out / name).stat().st_size for name in (CATALOG, MANIFEST)) / 1e6
    print(f"wrote {args.out} ({manifest['tracks']} tracks, {size:.1f} MB) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
