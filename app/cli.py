"""The `muqsearch` command line: global options, then one subcommand per job.

Each subcommand lives in the package that owns its concern: its module defines
``add_arguments_<name>(parser)`` and ``run_<name>(args) -> int`` (exit code). Command modules import
torch and friends inside ``run_<name>`` so that ``muqsearch --help`` stays instant.

Exit status, the same for every command (README "Exit status"): 0 done; 1 the command ran and found
nothing or failed on the data (no match, nothing indexable, a checkpoint or evaluation that fails);
2 the command cannot run as asked (a usage error, a missing file, library or model, a bad filter or
query), said in one line on stderr before any model loads where it can be; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

from indexer.layout import LIBRARY_ENV
from muq_model.identity import PRECISION_VECTOR_SPACES

MODEL_ENV = "MUQSEARCH_MODEL"
CATALOG_ENV = "MUQSEARCH_CATALOG"  # = indexer.catalog.CATALOG_ENV, which Library.open reads


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    module: str

    def load(self):
        """The module implementing this command."""
        return importlib.import_module(self.module)


COMMANDS: tuple[Command, ...] = (
    Command("index", "scan folders and embed new or changed tracks into the library (incremental, resumable)", "indexer.commands"),
    Command("status", "counts, errors, model and index of a library (default: the one `search` and `serve` use)", "indexer.commands"),
    Command("search", "tracks (and with --moments, the best 10 s of each) matching a text description", "app.commands"),
    Command("similar", "find library tracks that sound like a file or a track id", "app.commands"),
    Command("describe", "list the tags and descriptions that fit a file or a track id", "app.commands"),
    Command("texts", "manage the text collections that `describe` ranks", "app.commands"),
    Command("serve", "the web UI and API (binds 127.0.0.1 unless --host says otherwise)", "app.commands"),
    Command("demo", "describe the bundled demo world and run example queries", "app.commands"),
    Command("eval", "Recall@k / MRR / mAP@10 of text<->music retrieval on a labelled set, with confidence intervals", "evaluation.commands"),
    Command("train", "train or fine-tune MuQ-MuLan on (audio, caption) pairs", "app.train_command"),
    Command("model", "download, convert or inspect MuQ-MuLan checkpoints", "muq_model.commands"),
    Command("pretrain", "pretrain MuQ self-supervised: Mel-RVQ tokenizer, masked-token prediction, iteration", "app.pretrain_command"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muqsearch",
        description="Find music by describing it (MuQ-MuLan embeddings, FAISS + SQLite, Gradio).",
    )
    add_global_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        # Global options are also accepted after the subcommand (`muqsearch index --library L ROOT`).
        add_global_options(p, top_level=False)
        getattr(command.load(), f"add_arguments_{command.name}")(p)
        p.set_defaults(_command=command)
    return parser


def add_global_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # Sub-parsers use SUPPRESS defaults so a value given before the subcommand is not overwritten.
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--library",
        metavar="DIR",
        default=default(os.environ.get(LIBRARY_ENV)),
        help=f"library directory (catalog + vector index); env {LIBRARY_ENV}; default: the demo library",
    )
    group.add_argument(
        "--catalog",
        metavar="URL",
        default=default(os.environ.get(CATALOG_ENV)),
        help=f"keep the catalog in this database (postgresql://USER@HOST/DB) instead of the library's "
        f"SQLite file; env {CATALOG_ENV}",
    )
    group.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        default=default(os.environ.get(MODEL_ENV)),
        help="hub id or local directory of a MuQ-MuLan checkpoint; default: the model the library was "
        "indexed with; `index` of a new library and `train` need one, the other commands fall back to the "
        "bundled demo model",
    )
    group.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=default("auto"),
        help="where the model runs (default: auto = CUDA when available)",
    )
    group.add_argument(
        "--precision",
        choices=tuple(PRECISION_VECTOR_SPACES),
        default=default(None),
        help="the model's numerics: fp32, tf32 (CUDA), bf16 or int8 (CPU); default: the precision the library "
        "was indexed in, else fp32 on CPU and tf32 on CUDA (README \"Precision modes\")",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable JSON output"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return 2
    if command.name == "status":  # status reports the library search/serve would use, demo included
        from app.choose import demo_library_dir, library_in_use
        from indexer.layout import has_catalog

        with catalog_env(args.catalog):  # with a catalog URL the library is there, whatever the folder holds
            args.library, demo_indexed = str(library_in_use(args.library)), has_catalog(demo_library_dir())
        if args.library == str(demo_library_dir()) and not demo_indexed:
            print("muqsearch status: the demo library is not indexed yet: `muqsearch serve` or `muqsearch demo` "
                  f"indexes it into {args.library} on first start", file=sys.stderr)
            return 2
    from muq_model.runtime import check_precision, configure_threads, select_device

    if args.precision is not None:  # a mode this device cannot run fails before any model loads
        try:
            check_precision(args.precision, select_device(args.device))
        except (ValueError, RuntimeError) as exc:
            print(f"muqsearch {command.name}: {exc}", file=sys.stderr)
            return 2
    configure_threads()
    with catalog_env(args.catalog):
        return int(getattr(command.load(), f"run_{command.name}")(args) or 0)


@contextmanager
def catalog_env(url: str | None):
    """Every library the command opens uses this catalog (set for the command only)."""
    before = os.environ.get(CATALOG_ENV)
    if url:
        os.environ[CATALOG_ENV] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CATALOG_ENV, None)
        else:
            os.environ[CATALOG_ENV] = before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
