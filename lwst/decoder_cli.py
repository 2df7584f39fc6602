"""``lwst train-decoder``: train one feed-forward renderer decoder (docs/decoder_card.md).

Every default is `DecoderTrainConfig`'s (the shipped recipe) and ``--help`` prints it. Refusals
are one line and exit 2 (the entry point's handler); Ctrl-C saves the state and exits 130.
The options are added when the command is used (`defer_options`); their defaults come from
`lwst.decoder_training.config`, which imports no torch, so ``--help`` answers at once; the
trainer (torch) is imported by the handler.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from lwst.cli_options import defer_options

EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (refused by argparse, before any work)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_data_options(p: argparse.ArgumentParser) -> None:
    from lwst.decoder_training.config import KINDS, LEVELS, DecoderTrainConfig

    d = DecoderTrainConfig()
    p.add_argument("--kind", choices=KINDS, required=True,
                   help="wct: invert reluL_1; adain: decode AdaIN targets at relu4_1")
    p.add_argument("--level", type=int, choices=LEVELS, default=d.level,
                   help=f"wct: the VGG tap reluL_1 to invert; adain is always 4 "
                   f"(default {d.level})")
    p.add_argument("--images", action="append", required=True, metavar="DIR|MANIFEST",
                   help="content images: folder or manifest; repeatable")
    p.add_argument("--styles", action="append", default=[], metavar="DIR|MANIFEST",
                   help="style images (adain); repeatable")
    p.add_argument("--out", required=True,
                   help="decoder checkpoint to write (.pt); also <out>.state and <out>.log.csv")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from this decoder's weights (e.g. adain from the wct relu4_1 one); "
                   "refused when <out>.state holds a run that started otherwise")


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
    from lwst.decoder_training.config import DecoderTrainConfig

    d = DecoderTrainConfig()
    p.add_argument("--steps", type=int, default=d.steps,
                   help=f"training steps: the cosine schedule's length (default {d.steps})")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="time box: the schedule ends after this much training time "
                   "(default: none)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"crops per step (default {d.batch_size})")
    p.add_argument("--crop", type=int, default=d.crop,
                   help=f"crop side in px, a multiple of 16 (default {d.crop})")
    p.add_argument("--crops-per-image", type=int, default=d.crops_per_image,
                   help=f"crops per image in the bank (default {d.crops_per_image})")
    p.add_argument("--width", type=float, default=d.width,
                   help=f"decoder width relative to VGG's channels (default {d.width:g})")
    p.add_argument("--lr", type=float, default=d.lr,
                   help=f"peak Adam learning rate (default {d.lr:g}; warm-up {d.warmup} steps, "
                   "at most a tenth of --steps, then cosine decay)")
    p.add_argument("--style-weight", type=float, default=d.style_weight,
                   help=f"adain: weight of the mean/std style loss (default {d.style_weight:g})")
    p.add_argument("--feature-weight", type=float, default=d.feature_weight,
                   help=f"wct: lambda, weight of the feature reconstruction loss "
                   f"(default {d.feature_weight:g})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seeds the crop bank, the batches and the decoder (default {d.seed})")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    from lwst.decoder_training.config import PRECISIONS, DecoderTrainConfig

    d = DecoderTrainConfig()
    p.add_argument("--device", default=d.device,
                   help=f"cpu, cuda, cuda:1, ... (default {d.device})")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto: bfloat16 autocast where the device has it natively "
                   f"(default {d.precision})")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help=f"save <out> and <out>.state every N steps (default "
                   f"{d.checkpoint_every}; Ctrl-C saves too)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-decoder`` on the ``lwst`` command."""
    p = subparsers.add_parser(
        "train-decoder",
        help="train a WCT or AdaIN decoder for the feed-forward renderers",
        description="Train the decoder that inverts VGG-19 at reluL_1 (wct) or decodes AdaIN "
        "targets at relu4_1 (adain) on a seeded bank of crops from --images (and --styles). "
        "Held-out images are skipped, unreadable ones skipped with a warning. Resumes from "
        "<out>.state when it exists: the settings that define the run must be repeated; "
        "--steps, --max-seconds, --checkpoint-every, --device, --precision and --threads may "
        "change. Ctrl-C saves the state at the last finished step (exit 130).",
    )
    defer_options(p, _add_options)
    p.set_defaults(handler=cmd_train_decoder)


def _add_options(p: argparse.ArgumentParser) -> None:
    _add_data_options(p)
    _add_recipe_options(p)
    _add_run_options(p)


def _warn(message: str) -> None:
    print(f"lwst train-decoder: warning: {message}", file=sys.stderr)


def cmd_train_decoder(args: argparse.Namespace) -> int:
    from lwst.decoder_training import DecoderTrainConfig, TrainingInterrupted, train_decoder

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    names = {f.name for f in dataclasses.fields(DecoderTrainConfig)}
    config = DecoderTrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        train_decoder(config, warn_fn=_warn)
    except TrainingInterrupted as stop:
        print(f"lwst train-decoder: {stop}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
