"""`muqsearch model download|convert|info`: get a checkpoint onto a machine as a self-contained
directory (config.json + model.safetensors + tokenizer files) and inspect it.

torch and transformers are imported inside run_model only, so `muqsearch --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_MODEL = "OpenMuQ/MuQ-MuLan-large"
DEFAULT_TOKENIZER = "xlm-roberta-base"


def add_arguments_model(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION", required=True)
    download = actions.add_parser(
        "download", help="fetch a hub checkpoint and its tokenizer, write a self-contained directory"
    )
    download.add_argument("name", nargs="?", default=DEFAULT_MODEL, help=f"hub id (default {DEFAULT_MODEL})")
    _add_out(download)
    download.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer hub id or directory")
    convert = actions.add_parser(
        "convert", help="rewrite a local checkpoint (pytorch_model.bin or safetensors) as a self-contained directory"
    )
    convert.add_argument("source", help="model directory or cached hub id")
    _add_out(convert)
    convert.add_argument("--tokenizer", help="tokenizer directory or cached hub id (default: found automatically)")
    info = actions.add_parser("info", help="show a checkpoint's architecture, size, tokenizer and fingerprint")
    info.add_argument("source", nargs="?", help="model directory or hub id (default: --model)")


def _add_out(parser: argparse.ArgumentParser) -> None:
    """The directory to write: `--out DIR` (as the README writes it) or a second positional argument."""
    parser.add_argument("out", nargs="?", metavar="DIR", help="directory to write (or --out DIR)")
    parser.add_argument("--out", dest="out_option", metavar="DIR", help="directory to write")


def _out_dir(args: argparse.Namespace) -> str | None:
    """The one output directory given, or None after saying what is wrong."""
    if args.out and args.out_option and args.out != args.out_option:
        problem = f"two output directories given ({args.out}, --out {args.out_option}); give one"
    elif not (args.out or args.out_option):
        problem = "where to write? add --out DIR"
    else:
        return args.out or args.out_option
    print(f"muqsearch model {args.model_action}: {problem}", file=sys.stderr)
    return None


def run_model(args: argparse.Namespace) -> int:
    from muq_model.checkpoint import CheckpointError

    try:
        if args.model_action in ("download", "convert"):
            return _write_directory(args)
        return _info(args)
    except CheckpointError as exc:
        print(f"muqsearch model {args.model_action}: {exc}", file=sys.stderr)
        return 1


def _write_directory(args: argparse.Namespace) -> int:
    from muq_model.checkpoint import load_tokenizer
    from muq_model.model import MuQMuLan

    source = args.name if args.model_action == "download" else args.source
    out_dir = _out_dir(args)  # before any loading: a missing --out costs nothing
    if out_dir is None:
        return 2
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    model = MuQMuLan.from_pretrained(source, tokenizer=tokenizer)
    if not model.has_tokenizer:
        print(
            "warning: no tokenizer found; the directory will embed audio only. Pass --tokenizer DIR to include one.",
            file=sys.stderr,
        )
    out = model.save_pretrained(out_dir)
    summary = {"source": source, "out": str(out), "tokenizer": model.has_tokenizer, **model.fingerprint()}
    print(json.dumps(summary) if getattr(args, "json", False) else f"wrote {out} ({summary})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from muq_model.model import MuQMuLan

    source = args.source or getattr(args, "model", None)
    if not source:
        print("muqsearch model info: give a model directory or hub id (or --model)", file=sys.stderr)
        return 2
    model = MuQMuLan.from_pretrained(source)
    config = model.config
    details = {
        "source": str(source),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dim": model.dim,
        "sample_rate": model.sample_rate,
        "clip_seconds": config.mulan.clip_secs,
        "audio_encoder": {"name": config.audio_model.name, "layers": config.muq.encoder_depth,
                          "width": config.muq.encoder_dim},
        "text_encoder": {"name": config.text_model.name,
                         "type": config.text_encoder_config.get("model_type"),
                         "external_weights": config.text_model.external_weights},
        "tokenizer": model.has_tokenizer,
        "fingerprint": model.fingerprint(),
    }
    if getattr(args, "json", False):
        print(json.dumps(details, indent=2))
    else:
        for key, value in details.items():
            print(f"{key:>14}: {value}")
    return 0
