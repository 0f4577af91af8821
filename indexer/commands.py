"""`muqsearch index` and `muqsearch status`.

Heavy imports (torch, faiss, the model) happen inside ``run_*`` so that ``muqsearch --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from muq_model.identity import canonical_model_name

MODEL_HINT = (
    "pass --model NAME_OR_PATH (a Hugging Face id such as OpenMuQ/MuQ-MuLan-large, or a local checkpoint "
    "directory) or set $MUQSEARCH_MODEL"
)


# --------------------------------------------------------------------------------------------------
# index


def add_arguments_index(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("roots", nargs="+", metavar="ROOT", help="folders (or files) to index, scanned recursively")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="decoder processes (default: half the cores, 1 to 4)")
    parser.add_argument("--prune", action="store_true", help="remove tracks whose files are gone from disk")
    parser.add_argument("--optimize", action="store_true",
                        help="rebuild the vector indexes with the index type best for the library's size "
                        "(exact below the measured threshold, HNSW above)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="try again files that failed before, even if they did not change")
    parser.add_argument("--commit-every", type=int, default=16, metavar="N",
                        help="tracks per catalog transaction: a killed run loses at most these (default 16)")
    parser.add_argument("--max-duration", type=float, default=None, metavar="SECONDS",
                        help="refuse files longer than this (default 4 hours)")
    parser.add_argument("--no-auto-tags", action="store_true", help="do not score tracks against the tag vocabulary")
    parser.add_argument("--gpu-index", action="store_true", help="build the vector indexes with faiss-gpu if available")


def run_index(args: argparse.Namespace) -> int:
    from indexer.catalog import CatalogError
    from indexer.pipeline import Indexer, IndexOptions, default_workers
    from indexer.vectors import Library, LibraryError

    directory = _library_dir(args)
    try:
        library = Library.open(directory, create=True)
    except LibraryError as exc:
        return _fail(str(exc))
    with library:
        name = args.model or library.catalog.get_meta("model_name")
        if not name:
            return _fail(f"no model: this library has none recorded yet; {MODEL_HINT}")
        name = canonical_model_name(name)

        def load_model():
            try:
                return _load_model(name, args.device)
            except Exception as exc:  # noqa: BLE001 - any loading problem ends the command with its message
                raise ModelLoadError(f"cannot load model {name!r}: {exc}") from exc
        options = IndexOptions(
            workers=args.workers or default_workers(),
            prune=args.prune,
            optimize=args.optimize,
            retry_errors=args.retry_errors,
            commit_every=max(1, args.commit_every),
            auto_tags=not args.no_auto_tags,
            use_gpu=args.gpu_index,
            progress=True,
        )
        if args.max_duration:
            options.max_seconds = args.max_duration
        try:
            summary = Indexer(library, load_model, name, options).run(args.roots)
        except (LibraryError, CatalogError, ModelLoadError) as exc:
            return _fail(str(exc))
        except KeyboardInterrupt:
            print("interrupted: finished tracks are saved; run the same command again to resume", file=sys.stderr)
            return 130
        consistency = library.check()
        if not consistency.ok:  # e.g. an index damaged on disk: the catalog's vectors are the truth
            summary.generation = library.repair(use_gpu=args.gpu_index)
        if args.json:
            print(json.dumps(summary.to_json(), ensure_ascii=False))
        else:
            _print_summary(summary, library, consistency)
    return 1 if summary.nothing_indexed else 0


def _print_summary(summary, library, consistency) -> None:
    hours = summary.audio_seconds / 3600
    print(
        f"indexed {summary.indexed}, retagged {summary.retagged}, skipped {summary.skipped} unchanged, "
        f"failed {summary.failed}, removed {summary.removed} "
        f"({hours:.2f} h of audio in {summary.seconds:.1f} s, model busy {summary.model_busy:.0%})"
    )
    for error in summary.errors:
        print(f"failed [{error['stage']}] {error['path']}: {error['message']}")
    if summary.missing:
        print(f"{summary.missing} tracks' files are gone from disk: run with --prune to remove them")
    if not consistency.ok:
        print("vector index disagreed with the catalog (" + "; ".join(consistency.problems) + "): rebuilt")
    index_type = library.catalog.get_meta("index_type") or "none"
    print(f"library {library.directory}: generation {library.generation}, {index_type} index")
    if summary.nothing_indexed:
        print("nothing could be indexed", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# status


def add_arguments_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--errors", type=int, default=20, metavar="N",
                        help="list at most N errors in the text output (default 20; --json lists all)")


def run_status(args: argparse.Namespace) -> int:
    from indexer.vectors import Library, LibraryError

    try:
        library = Library.open(_library_dir(args))
    except LibraryError as exc:
        return _fail(str(exc))
    with library:
        status = library_status(library)
        if args.json:
            print(json.dumps(status, ensure_ascii=False))
            return 0
        print(f"library:   {status['library']}")
        print(f"tracks:    {status['tracks']} ({status['audio_hours']:.2f} h of audio), segments: {status['segments']}")
        print(f"model:     {status['model'] or '(none yet)'}")
        if status["fingerprint"]:
            print("           " + ", ".join(f"{k}={v}" for k, v in status["fingerprint"].items()))
        print(f"index:     {status['index_type']} (tracks), {status['segment_index_type']} (segments), "
              f"generation {status['generation']}")
        sizes = status["sizes_bytes"]
        print("sizes:     " + ", ".join(f"{k} {_megabytes(v)}" for k, v in sizes.items()))
        if status["advice"]:
            print(f"advice:    {status['advice']}")
        print("consistent: yes" if status["consistent"] else "consistent: NO - " + "; ".join(status["problems"]))
        if status["last_run"]:
            run = status["last_run"]
            print(f"last run:  {run['status']} {run['started']}: indexed {run['indexed']}, skipped {run['skipped']}, "
                  f"failed {run['failed']}, removed {run['removed']}")
        print(f"errors:    {status['errors']}")
        for error in status["error_list"][: args.errors]:
            print(f"  [{error['stage']}] {error['path']}: {error['message']}")
        if status["errors"] > args.errors:
            print(f"  ... and {status['errors'] - args.errors} more (--errors N, or --json)")
    return 0


def library_status(library) -> dict:
    """Everything `muqsearch status` reports, as a JSON-ready dict."""
    from sqlalchemy import select

    from indexer import ann
    from indexer.catalog import IndexRun

    catalog = library.catalog
    counts = catalog.counts()
    consistency = library.check()
    generation_dir = library.generation_dir(library.generation)
    sizes = {"catalog": _size(Path(catalog.url.removeprefix("sqlite:///")))}
    for kind in ("tracks", "segments"):
        sizes[f"{kind}_index"] = _size(generation_dir / f"{kind}.faiss")
    index_type = catalog.get_meta("index_type")
    advised = ann.index_kind_for(counts["tracks"])
    advice = None
    if index_type and index_type != advised:
        advice = f"{counts['tracks']} tracks: a {advised} index would suit better; run `muqsearch index --optimize`"
    with catalog.session() as s:
        run = s.scalar(select(IndexRun).order_by(IndexRun.id.desc()).limit(1))
        last_run = None if run is None else {
            "id": run.id, "status": run.status, "started": run.started.isoformat(timespec="seconds"),
            "indexed": run.indexed, "skipped": run.skipped, "failed": run.failed, "removed": run.removed,
        }
    errors = [e.to_dict() for e in catalog.errors()]
    return {
        "library": str(library.directory),
        "tracks": counts["tracks"],
        "segments": counts["segments"],
        "audio_hours": round(counts["audio_seconds"] / 3600, 4),
        "errors": len(errors),
        "error_list": errors,
        "model": catalog.get_meta("model_name"),
        "fingerprint": catalog.fingerprint,
        "index_type": index_type,
        "segment_index_type": catalog.get_meta("segment_index_type"),
        "generation": library.generation,
        "sizes_bytes": sizes,
        "consistent": consistency.ok,
        "problems": consistency.problems,
        "advice": advice,
        "last_run": last_run,
    }


# --------------------------------------------------------------------------------------------------
# shared


def _library_dir(args) -> Path:
    from indexer.vectors import default_library_dir

    value = getattr(args, "library", None)
    return Path(value).expanduser().absolute() if value else default_library_dir()


class ModelLoadError(RuntimeError):
    """The model named by --model (or recorded in the library) cannot be loaded."""


def _load_model(name: str, device: str | None):
    from muq_model import MuQMuLan
    from muq_model.runtime import select_device

    return MuQMuLan.from_pretrained(name, device=select_device(device or "auto")).eval()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
