"""`muqsearch pretrain rvq|ssl|iter`: MuQ self-supervised pretraining on folders of audio.

The composition root for muq_model.pretraining: it finds audio with the indexer's scanner and decodes it
with the indexer's decoder (every format and every bad file behaves as in `muqsearch index`), builds the
model and the task, and runs the loop in one process or under torchrun (gloo on CPU, NCCL on CUDA).

    muqsearch pretrain rvq AUDIO... --out RVQ_DIR [--config tiny|small|large|FILE]      # 1. the tokenizer
    muqsearch pretrain ssl AUDIO... --rvq RVQ_DIR --out MUQ_DIR                          # 2. MuQ
    muqsearch pretrain ssl AUDIO... --rvq RVQ_DIR --targets random-projection --out DIR  #    the baseline
    muqsearch pretrain iter AUDIO... --model MUQ_DIR --layer L --out ITER_DIR            # 3. MuQ-iter
    muqsearch --library LIB pretrain rvq --out RVQ_DIR                                    # a library's tracks
    torchrun --standalone --nproc_per_node 2 -m app pretrain ...

Every output directory is a MuQ checkpoint in the official layout (`MuQ.from_pretrained(DIR)`); a run
killed midway continues from DIR/pretrain_state.pt when started again with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from app.train_command import add_schedule_arguments, schedule_settings


def add_arguments_pretrain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=("rvq", "ssl", "iter"),
                        help="rvq: fit the Mel-RVQ tokenizer; ssl: masked-token pretraining; iter: a second "
                        "round on codes of a trained MuQ's layer (--model, --layer)")
    parser.add_argument("audio", nargs="*", help="audio files or folders (searched recursively); none: the tracks "
                        "of --library")
    parser.add_argument("--out", required=True, metavar="DIR", help="output: MuQ checkpoint, state, JSONL log")
    parser.add_argument("--config", default=None, metavar="tiny|small|large|FILE",
                        help="model size, or an official MuQ config.json (rvq: default tiny; ssl: --rvq's; "
                        "iter: --model's)")
    parser.add_argument("--rvq", metavar="DIR", help="ssl: the output of `pretrain rvq` (the Mel-RVQ tokenizer)")
    parser.add_argument("--targets", choices=("mel-rvq", "random-projection"), default="mel-rvq",
                        help="ssl: what the model predicts (random-projection = the BEST-RQ baseline)")
    parser.add_argument("--layer", type=int, help="iter: the hidden state of --model whose RVQ codes are the targets")
    parser.add_argument("--rvq-steps", type=int, default=None, help="iter: steps to fit the latent RVQ "
                        "(default: --steps)")
    parser.add_argument("--fresh", action="store_true", help="ignore DIR/pretrain_state.pt and start over")
    group = add_schedule_arguments(parser, batch_size=8, crop_seconds=4.0)
    group.add_argument("--log-every", type=int, default=10)
    group.add_argument("--checkpoint-every", type=int, default=100)


class UsageError(ValueError):
    """Arguments that do not fit together; the message says which."""


def run_pretrain(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from muq_model.checkpoint import CheckpointError
    from muq_model.runtime import select_device

    device = select_device(args.device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo" if device.type == "cpu" else "nccl")
    try:
        summary = run_stage(args, device)
    except (UsageError, CheckpointError, ValueError) as exc:
        print(f"muqsearch pretrain {args.stage}: {exc}", file=sys.stderr)
        return 2
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print(json.dumps(summary))
        else:
            print(f"{args.stage}: {summary['steps']} steps, loss {summary['loss_first']} -> {summary['loss_last']}; "
                  f"saved to {summary['out']}")
    return 0


def run_stage(args: argparse.Namespace, device) -> dict:
    import torch

    from muq_model.checkpoint import load_rvq, save_rvq
    from muq_model.encoder import MuQ
    from muq_model.pretraining import (
        MaskedPrediction,
        PretrainConfig,
        RVQFitting,
        iteration_targets,
        pretrain,
    )
    from muq_model.rvq import ResidualVectorQuantizer, RVQConfig

    config = PretrainConfig(**schedule_settings(args))
    out = Path(args.out)
    torch.manual_seed(args.seed)  # every rank builds the same initial weights

    def run(task, directory: Path, save, steps: int | None = None) -> dict:
        stage_config = config if steps is None else PretrainConfig(**{**config.__dict__, "steps": steps})
        result = pretrain(task, waves, directory, stage_config, save=save, sample_rate=muq.sample_rate,
                          samples_per_token=muq.samples_per_token, resume=not args.fresh, device=device)
        return result.summary(directory)

    if args.stage == "rvq":
        muq = build_muq(args.config or "tiny")
        waves = decode(audio_paths(args), muq.sample_rate)
        task = RVQFitting(muq.model.rvq, muq.to(device))
        return run(task, out, muq.save_pretrained)

    if args.stage == "ssl":
        if args.targets == "mel-rvq" and not args.rvq:
            raise UsageError("give --rvq DIR (the output of `muqsearch pretrain rvq`), or --targets random-projection")
        tokenizer = MuQ.from_pretrained(args.rvq) if args.rvq else None
        muq = build_muq(args.config, like=tokenizer, random_projection=args.targets == "random-projection")
        if tokenizer is not None and muq.config.use_rvq_target:
            muq.model.rvq.load_state_dict(tokenizer.model.rvq.state_dict())
        waves = decode(audio_paths(args), muq.sample_rate)
        return run(MaskedPrediction(muq), out, muq.save_pretrained)

    if args.model is None or args.layer is None:
        raise UsageError("iter needs --model DIR (a first-round MuQ) and --layer L")
    first_round = MuQ.from_pretrained(args.model).to(device)
    if not 0 <= args.layer <= first_round.config.encoder_depth:
        raise UsageError(f"--layer {args.layer} is out of range: {args.model} has hidden states 0.."
                         f"{first_round.config.encoder_depth}")
    muq = build_muq(args.config, like=first_round)
    if muq.config.use_rvq_target and first_round.config.use_rvq_target:
        muq.model.rvq.load_state_dict(first_round.model.rvq.state_dict())  # kept so the layout stays official
    waves = decode(audio_paths(args), muq.sample_rate)
    latent_dir = out / "latent_rvq"
    rvq = ResidualVectorQuantizer(RVQConfig(input_dim=first_round.config.encoder_dim,
                                            n_codebooks=max(muq.model.n_targets, 1)))
    fitted = run(RVQFitting(rvq, first_round, layer=args.layer), latent_dir, lambda d: save_rvq(rvq, d),
                 steps=args.rvq_steps or args.steps)
    rvq = load_rvq(latent_dir).to(device)
    targets = iteration_targets(first_round, args.layer, rvq, muq.model.n_targets)
    summary = run(MaskedPrediction(muq, targets), out, muq.save_pretrained)
    return {**summary, "layer": args.layer, "latent_rvq": fitted}


def build_muq(name: str | None, *, like=None, random_projection: bool = False):
    """A freshly initialised MuQ: a preset, an official config.json, or the architecture of `like`."""
    from muq_model.checkpoint import read_muq_config
    from muq_model.encoder import MuQ
    from muq_model.pretraining import preset

    if name is None and like is not None:
        config, ssl = like.config, like.ssl
    elif name is None or name in ("tiny", "small", "large"):
        config, ssl = preset(name or "tiny")
    else:
        path = Path(name)
        config, ssl = read_muq_config(path.parent if path.name == "config.json" else path)
    if like is not None and like.config.use_rvq_target:
        ssl = type(ssl)(**{**ssl.__dict__, "rvq_n_codebooks": like.ssl.rvq_n_codebooks})
    if random_projection:
        config = type(config)(**{**config.__dict__, "use_rvq_target": False})
    if config.use_rvq_target and config.codebook_size // 1024 > ssl.rvq_n_codebooks:
        raise UsageError(f"the model predicts {config.codebook_size // 1024} codebooks but the Mel-RVQ has only "
                         f"{ssl.rvq_n_codebooks}")
    return MuQ(config, ssl)


def audio_paths(args: argparse.Namespace) -> list[str]:
    """The audio files under the AUDIO arguments, or the tracks of --library when none are given."""
    from indexer.scan import scan

    if not args.audio:
        if not args.library:
            raise UsageError("give audio files or folders, or --library DIR to pretrain on a library's tracks")
        from indexer.vectors import Library, LibraryError

        try:
            with Library.open(args.library) as library:
                return library.catalog.track_paths()
        except LibraryError as exc:
            raise UsageError(str(exc)) from exc
    found = scan(args.audio)
    for path, reason in found.problems:
        print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)
    return [file.path for file in found.files]


def decode(paths: list[str], sample_rate: int) -> list:
    """Every decodable audio file as a float16 waveform; files that fail are reported by name and
    skipped, as `muqsearch index` does."""
    import torch

    from indexer.audio import AudioDecodeError, load_audio

    waves = []
    for path in paths:
        try:
            wave = load_audio(path, sample_rate=sample_rate)
        except AudioDecodeError as exc:
            print(f"skipped {exc}", file=sys.stderr, flush=True)
            continue
        if wave.size <= 2048:
            print(f"skipped {path}: shorter than 2048 samples", file=sys.stderr, flush=True)
            continue
        waves.append(torch.from_numpy(wave).to(torch.float16))
    if not waves:
        raise UsageError(f"none of the {len(paths)} audio files could be decoded")
    return waves
