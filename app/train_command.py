"""`muqsearch train`: the composition root for MuLan training.

muq_model.training owns the loop but sits at the bottom of the import graph, so this thin layer injects
what lives above it: the indexer's decoder (any format, resampled to 24 kHz) and the evaluation
package's retrieval metrics for the periodic held-out evaluation.

    muqsearch train PAIRS.jsonl --out DIR --model OpenMuQ/MuQ-MuLan-large       # fine-tune
    muqsearch train data/demo/captions.jsonl --init-config CONFIG.json --out DIR  # train from scratch
    muqsearch train ... --init-config CONFIG.json --audio-from MUQ_DIR --out DIR  # MuLan on a pretrained MuQ
    torchrun --standalone --nproc_per_node 2 -m app train ...                     # DDP (gloo on CPU)
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields


def add_arguments_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="JSONL or CSV of (audio_path, text) rows, or a captions.jsonl with "
                        "`file` + `captions` per record (the demo format); several files are trained on together")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory: model, checkpoint, log")
    parser.add_argument("--split", default=None, help="use only rows whose `split` field has this value")
    parser.add_argument("--eval-data", metavar="FILE", help="held-out pairs for periodic evaluation")
    parser.add_argument("--eval-split", default=None, help="use only eval rows with this `split` value")
    parser.add_argument("--init-config", metavar="CONFIG_JSON",
                        help="train a fresh model with this config.json instead of fine-tuning --model")
    parser.add_argument("--audio-from", metavar="MUQ_DIR",
                        help="with --init-config: start the audio tower's MuQ from this standalone MuQ checkpoint "
                        "(`muqsearch pretrain` output) of the same architecture; the rest starts fresh")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/training_state.pt if present")
    parser.add_argument("--feature-cache", metavar="DIR",
                        help="keep the feature pass in DIR and reuse it when a later run has the same data, mel "
                             "settings and frozen parts (a few GB for thousands of tracks)")
    group = add_schedule_arguments(parser, batch_size=32, crop_seconds=5.0)
    group.add_argument("--captions-per-step", type=int, default=1,
                       help="captions drawn per audio crop; the loss averages over them")
    group.add_argument("--group-by", metavar="FIELD", default=None,
                       help="a data field (dotted for nested, e.g. attributes.instrument) whose equal values are "
                            "batched together as hard negatives")
    group.add_argument("--group-size", type=int, default=0, help="with --group-by: items per group in a batch")
    group.add_argument("--labels", metavar="FIELD", default=None,
                       help="a data field holding a {kind: value} object per row (e.g. attributes): a classifier per "
                            "kind on the audio latents adds its loss, so the audio tower keeps every kind apart")
    group.add_argument("--label-weight", type=float, default=0.5, help="with --labels: the weight of that loss")
    group.add_argument("--label-kind-weight", metavar="KIND=W", action="append", default=[],
                       help="with --labels: weigh this label kind W times within that loss (others 1; repeatable), "
                            "e.g. bass=4 for a kind the audio vectors barely hold")
    group = parser.add_argument_group("what to train")
    group.add_argument("--freeze-audio", action="store_true", help="keep the audio tower fixed")
    group.add_argument("--add-mel-summary", type=int, metavar="BANDS",
                       help="give the audio tower a clip-level summary of the mel in BANDS bands (level, spread "
                       "and change per band), added to its pooled output; it starts at zero, so a fine-tuned "
                       "model starts from the vectors it made")
    group.add_argument("--add-rhythm-summary", type=int, metavar="GROUPS",
                       help="give the audio tower the autocorrelations of its onsets and spectral shape in GROUPS "
                       "groups of mels (beat period, note rate, texture), added to its pooled output; starts at "
                       "zero like --add-mel-summary")
    group.add_argument("--freeze-stem", action="store_true",
                       help="keep the Conv2d stem fixed and cache its output: several times faster on a CPU")
    group.add_argument("--freeze-text", action="store_true", help="keep the MuLan text transformer fixed")
    group.add_argument("--train-text-encoder", action="store_true",
                       help="also fine-tune the pretrained text encoder (frozen by default, as upstream)")
    group = parser.add_argument_group("reporting")
    group.add_argument("--log-every", type=int, default=10)
    group.add_argument("--eval-every", type=int, default=200)
    group.add_argument("--checkpoint-every", type=int, default=200)


def add_schedule_arguments(parser: argparse.ArgumentParser, *, batch_size: int, crop_seconds: float):
    """The flags of muq_model.training.schedule.Schedule, which `train` and `pretrain` share; returns their
    group for the command's own schedule flags."""
    group = parser.add_argument_group("schedule")
    group.add_argument("--steps", type=int, default=1000)
    group.add_argument("--batch-size", type=int, default=batch_size, help="global batch (split over torchrun ranks)")
    group.add_argument("--lr", type=float, default=1e-3)
    group.add_argument("--weight-decay", type=float, default=0.01)
    group.add_argument("--warmup-steps", type=int, default=50)
    group.add_argument("--crop-seconds", type=float, default=crop_seconds, help="length of the random training crops")
    group.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    group.add_argument("--seed", type=int, default=0)
    return group


def schedule_settings(args: argparse.Namespace) -> dict:
    """The Schedule fields, as the command line set them (log and checkpoint intervals included)."""
    from muq_model.training.schedule import Schedule

    return {f.name: getattr(args, f.name) for f in fields(Schedule)}


def parse_kind_weights(pairs: list[str]) -> dict[str, float]:
    """["bass=4", ...] -> {"bass": 4.0}; a malformed pair is an error naming it."""
    weights = {}
    for pair in pairs:
        kind, sep, value = pair.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not (sep and kind.strip() and weight >= 0):
            raise ValueError(f"{pair!r}: expected KIND=W with a weight >= 0, e.g. bass=4")
        weights[kind.strip()] = weight
    return weights


def run_train(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from evaluation.metrics import evaluate_embeddings
    from indexer.audio import load_audio
    from muq_model.checkpoint import CheckpointError, load_muq_into_audio_tower
    from muq_model.model import MuQMuLan
    from muq_model.runtime import resolve_precision, select_device
    from muq_model.training import TrainConfig, initial_model, read_pairs, summarize, train

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    is_main = int(os.environ.get("RANK", "0")) == 0
    if distributed:
        dist.init_process_group("gloo" if select_device(args.device).type == "cpu" else "nccl")
    try:
        if args.audio_from and not args.init_config:
            print("muqsearch train: --audio-from initialises a fresh model: give --init-config CONFIG_JSON too",
                  file=sys.stderr)
            return 2
        if bool(args.group_by) != bool(args.group_size):
            print("muqsearch train: --group-by and --group-size go together", file=sys.stderr)
            return 2
        try:
            kind_weights = parse_kind_weights(args.label_kind_weight)
        except ValueError as exc:
            print(f"muqsearch train: --label-kind-weight: {exc}", file=sys.stderr)
            return 2
        if kind_weights and not args.labels:
            print("muqsearch train: --label-kind-weight weighs the --labels loss: give --labels FIELD too", file=sys.stderr)
            return 2
        precision = resolve_precision(args.precision, select_device(args.device))
        if precision == "int8":
            print("muqsearch train: precision int8 is for inference only (it quantises the audio tower); train in "
                  "fp32, tf32 (CUDA) or bf16", file=sys.stderr)
            return 2
        items = [item for path in args.data for item in read_pairs(path, args.split, args.group_by, args.labels)]
        eval_items = read_pairs(args.eval_data, args.eval_split) if args.eval_data else []
        torch.manual_seed(args.seed)  # every rank must start from the same weights
        if args.init_config:
            model = initial_model(args.init_config)
            if args.audio_from:
                try:
                    load_muq_into_audio_tower(model, args.audio_from)
                except CheckpointError as exc:
                    print(f"muqsearch train: --audio-from {args.audio_from}: {exc}", file=sys.stderr)
                    return 2
                model.model_id += f"+audio-from:{args.audio_from}"
        elif args.model:
            model = MuQMuLan.from_pretrained(args.model)
        else:
            print("muqsearch train: give --model NAME_OR_PATH to fine-tune, or --init-config CONFIG_JSON",
                  file=sys.stderr)
            return 2
        for flag, parts, grow in (("--add-mel-summary", args.add_mel_summary, model.add_mel_summary),
                                  ("--add-rhythm-summary", args.add_rhythm_summary, model.add_rhythm_summary)):
            if parts is None:
                continue
            try:
                grow(parts)
                model.audio.check_features(args.freeze_stem)
            except ValueError as exc:
                print(f"muqsearch train: {flag} {parts}: {exc}", file=sys.stderr)
                return 2
        config = TrainConfig(
            **schedule_settings(args), captions_per_step=args.captions_per_step, group_size=args.group_size,
            label_weight=args.label_weight if args.labels else 0.0, label_kind_weights=kind_weights,
            train_audio=not args.freeze_audio, train_stem=not args.freeze_stem, train_text=not args.freeze_text,
            train_text_encoder=args.train_text_encoder, eval_every=args.eval_every, precision=precision,
        )
        model.to(select_device(args.device)).set_precision(precision)
        result = train(
            model, items, args.out, config,
            lambda path: load_audio(path, sample_rate=model.sample_rate),
            eval_items=eval_items,
            evaluate=lambda text, audio, relevant: evaluate_embeddings(text, audio, relevant, n_bootstrap=0),
            resume=args.resume, feature_cache=args.feature_cache,
        )
    except ValueError as exc:  # bad data (DataError), or a setting the model or data cannot train with
        print(f"muqsearch train: {exc}", file=sys.stderr)
        return 2
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    if is_main:
        print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; model saved to {args.out}")
        if result.evaluations:
            print("last eval: " + summarize({k: v for k, v in result.evaluations[-1].items() if k != "step"}))
    return 0
