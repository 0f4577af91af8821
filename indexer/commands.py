"""`muqsearch index` and `muqsearch status`.

Heavy imports (torch, faiss, the model) happen inside ``run_*`` so that ``muqsearch --help`` stays instant.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
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
    parser.formatter_class = _IndexHelp
    parser.add_argument("--optimize", action="store_true",
                        help="rebuild the vector indexes with the index type best for the library's size "
                        "({index_kinds})")
    parser.add_argument("--retry-errors", action="store_true",
                        help="try again files that failed before, even if they did not change")
    parser.add_argument("--commit-every", type=int, default=16, metavar="N",
                        help="tracks per catalog transaction: a killed run loses at most these (default 16)")
    parser.add_argument("--max-duration", type=float, default=None, metavar="SECONDS",
                        help="refuse files longer than this (default 4 hours)")
    parser.add_argument("--no-auto-tags", action="store_true", help="do not score tracks against the tag vocabulary")
    parser.add_argument("--gpu-index", action="store_true", help="build the vector indexes with faiss-gpu if available")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="where decoding and embedding run: decoder processes here (local, the default) or "
                        "Ray Data tasks and model actors (ray; needs `pip install muqsearch[ray]`)")
    parser.add_argument("--ray-address", metavar="ADDR", default=None,
                        help="with --engine ray: the cluster to join (host:port); default: start a Ray here")
    parser.add_argument("--ray-actors", type=int, default=1, metavar="N",
                        help="with --engine ray: model actors embedding in parallel (default 1)")


class _IndexHelp(argparse.HelpFormatter):
    """Fills in the index kinds' thresholds, read off the code only when help is shown (faiss loads then)."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        return text.replace("{index_kinds}", describe_index_kinds()) if "{index_kinds}" in text else text


def auto_index_kinds(limit: int = 10**12) -> list[tuple[str, int, int | None]]:
    """(kind, from n, below n or None) for each index kind ``ann.index_kind_for`` picks as a library grows,
    found by searching its thresholds, so that help and docs follow the code."""
    from indexer import ann

    spans, low, kind = [], 1, ann.index_kind_for(1)
    while True:
        high = low * 2
        while high <= limit and ann.index_kind_for(high) == kind:
            high *= 2
        if high > limit:
            return [*spans, (kind, low, None)]
        start = low
        while high - low > 1:  # the first n in (low, high] picking another kind
            middle = (low + high) // 2
            low, high = (middle, high) if ann.index_kind_for(middle) == kind else (low, middle)
        spans.append((kind, start, high))
        low, kind = high, ann.index_kind_for(high)


def describe_index_kinds() -> str:
    """"exact (flat) below 50,000 vectors, pq-refine from 50,000", from :func:`auto_index_kinds`."""
    parts = []
    for kind, low, high in auto_index_kinds():
        name = "exact (flat)" if kind == "flat" else kind
        if low == 1:
            parts.append(f"{name} below {high:,} vectors" if high else f"{name} at every size")
        else:
            parts.append(f"{name} from {low:,}" + (f" to {high - 1:,}" if high else ""))
    return ", ".join(parts)


def run_index(args: argparse.Namespace) -> int:
    from indexer.catalog import CatalogError
    from indexer.domain import check_library, declared_domain
    from indexer.pipeline import HOLD_ENV, Indexer, IndexOptions, default_workers
    from indexer.vectors import Library, LibraryError

    if args.engine == "ray" and importlib.util.find_spec("ray") is None:
        return _fail("--engine ray needs Ray: pip install 'muqsearch[ray]' (or -r requirements-ray.txt)")
    directory = _library_dir(args)
    # a library in a shared catalog ($MUQSEARCH_CATALOG, set by --catalog) exists there, whatever this folder holds
    created = None if os.environ.get("MUQSEARCH_CATALOG") else _new_entries(directory)
    if created is not None and not args.model:  # a new library needs a model: fail before creating it
        return _fail(f"no model: {directory} is a new library; {MODEL_HINT}")
    try:
        library = Library.open(directory, create=True)
    except LibraryError as exc:
        return _fail(str(exc))
    with library:
        name = args.model or library.catalog.get_meta("model_name")
        if not name:
            return _fail(f"no model: this library has none recorded yet; {MODEL_HINT}")
        name = canonical_model_name(name)
        try:
            precision = _precision(args, library.fingerprint)
        except ValueError as exc:
            return _fail(str(exc))

        def load_model():
            try:
                return _load_model(name, args.device, precision)
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
            hold_file=os.environ.get(HOLD_ENV),
        )
        if args.max_duration:
            options.max_seconds = args.max_duration
        try:
            engine = _engine(args, name, precision)
            summary = Indexer(library, load_model, name, options, engine).run(args.roots)
        except (LibraryError, CatalogError, ModelLoadError) as exc:
            failure = str(exc)
        except KeyboardInterrupt:
            print("interrupted: finished tracks are saved; run the same command again to resume", file=sys.stderr)
            return 130
        else:
            failure = None
        if failure is not None:
            if created is not None and library.catalog.counts()["tracks"] == 0:
                library.close()
                created()  # a library this run made and could not fill leaves nothing behind
            return _fail(failure)
        consistency = library.check()
        if not consistency.ok:  # e.g. an index damaged on disk: the catalog's vectors are the truth
            summary.generation = library.repair(use_gpu=args.gpu_index)
        domain = check_library(library.catalog, declared_domain(name))
        if args.json:
            print(json.dumps({**summary.to_json(), "domain": domain and domain.to_dict()}, ensure_ascii=False))
        else:
            _print_summary(summary, library, consistency)
        if domain is not None and not domain.ok:
            print(f"warning: {domain.warning()}", file=sys.stderr)
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
    from indexer.status import library_status
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
        if status["vocabulary"]:
            v = status["vocabulary"]
            print(f"tags:      the {v['name']} vocabulary ({v['tags']} tags, {v['path']})")
        if status["spelling_words"]:
            print(f"spelling:  misspelt query words are read as the nearest of {status['spelling_words']} caption words")
        if status["fingerprint"]:
            print("           " + ", ".join(f"{k}={v}" for k, v in status["fingerprint"].items()))
        print(f"index:     {status['index_type']} (tracks), {status['segment_index_type']} (segments), "
              f"generation {status['generation']}")
        sizes = status["sizes_bytes"]
        print("sizes:     " + ", ".join(f"{k} {_megabytes(v)}" for k, v in sizes.items()))
        if status["advice"]:
            print(f"advice:    {status['advice']}")
        print("consistent: yes" if status["consistent"] else "consistent: NO - " + "; ".join(status["problems"]))
        if status["domain"] and status["domain"]["warning"]:
            print(f"warning:   {status['domain']['warning']}")
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


# --------------------------------------------------------------------------------------------------
# shared


def _library_dir(args) -> Path:
    from indexer.layout import default_library_dir

    value = getattr(args, "library", None)
    return Path(value).expanduser().absolute() if value else default_library_dir()


def _new_entries(directory: Path):
    """None when ``directory`` already holds a catalog; else a function removing what gets made there
    from now on (the folder itself if it did not exist)."""
    from indexer.layout import has_catalog

    if has_catalog(directory):
        return None
    before = set(directory.iterdir()) if directory.is_dir() else None

    def remove() -> None:
        import shutil

        if before is None:
            shutil.rmtree(directory, ignore_errors=True)
            return
        for entry in set(directory.iterdir()) - before:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    return remove


def _engine(args, model_name: str, precision: str):
    """The engine that decodes and embeds: None for the local one, else a RayEngine."""
    if args.engine == "local":
        return None
    from indexer.ray_engine import RayEngine

    return RayEngine(functools.partial(_load_model, model_name, args.device, precision), address=args.ray_address,
                     actors=max(1, args.ray_actors))


class ModelLoadError(RuntimeError):
    """The model named by --model (or recorded in the library) cannot be loaded."""


def _precision(args, stored: dict | None) -> str:
    """The precision this run embeds in (see resolve_precision); refused before the model loads when the
    library's vectors were made in a precision whose vectors may not be mixed with it."""
    from muq_model.identity import made_in_precision, precision_conflict
    from muq_model.runtime import resolve_precision, select_device

    precision = resolve_precision(args.precision, select_device(args.device or "auto"),
                                  stored and made_in_precision(stored))
    conflict = precision_conflict(stored, precision)
    if conflict:
        raise ValueError(conflict)
    return precision


def _load_model(name: str, device: str | None, precision: str):
    from muq_model import MuQMuLan
    from muq_model.runtime import select_device

    return MuQMuLan.from_pretrained(name, device=select_device(device or "auto"), precision=precision).eval()


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
