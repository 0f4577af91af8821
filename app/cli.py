"""The `muqsearch` command line: global options, then one subcommand per job.

Each subcommand lives in the package that owns its concern: its module defines
``add_arguments_<name>(parser)`` and ``run_<name>(args) -> int`` (exit code). Command modules import
torch and friends inside ``run_<name>`` so that ``muqsearch --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass

LIBRARY_ENV = "MUQSEARCH_LIBRARY"
MODEL_ENV = "MUQSEARCH_MODEL"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    module: str

    def load(self):
        """The module implementing this command, or None while it is not implemented yet."""
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name and self.module.startswith(exc.name):
                return None
            raise
        return module if hasattr(module, f"run_{self.name}") else None


COMMANDS: tuple[Command, ...] = (
    Command("index", "scan folders and add their tracks to the library", "indexer.commands"),
    Command("status", "show what the library holds: counts, errors, model, index", "indexer.commands"),
    Command("search", "find tracks that match a text description", "app.commands"),
    Command("similar", "find library tracks that sound like a file or a track id", "app.commands"),
    Command("describe", "list the tags and descriptions that fit a file or a track id", "app.commands"),
    Command("texts", "manage the text collections that `describe` ranks", "app.commands"),
    Command("serve", "run the web UI and API", "app.commands"),
    Command("demo", "show the bundled demo world and run example queries", "app.commands"),
    Command("eval", "measure Recall@k / MRR of text<->music retrieval on a labelled set", "evaluation.commands"),
    Command("train", "train or fine-tune MuQ-MuLan on (audio, caption) pairs", "app.train_command"),
    Command("model", "download, convert or inspect MuQ-MuLan checkpoints", "muq_model.commands"),
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
        module = command.load()
        if module is not None:
            getattr(module, f"add_arguments_{command.name}")(p)
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
        "--model",
        metavar="NAME_OR_PATH",
        default=default(os.environ.get(MODEL_ENV)),
        help="hub id or local directory of a MuQ-MuLan checkpoint; default: the library's model, "
        "else the bundled demo model",
    )
    group.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=default("auto"),
        help="where the model runs (default: auto = CUDA when available)",
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
    module = command.load()
    if module is None:
        print(f"muqsearch {command.name}: not implemented yet", file=sys.stderr)
        return 3
    from muq_model.runtime import configure_threads

    configure_threads()
    return int(getattr(module, f"run_{command.name}")(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
