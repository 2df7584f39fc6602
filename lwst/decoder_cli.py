"""``lwst train-decoder``: train one feed-forward renderer decoder (docs/decoder_card.md)."""

from __future__ import annotations

import argparse
import dataclasses

from lwst.decoder_training import DecoderTrainConfig, train_decoder
from lwst.decoders import KINDS, LEVELS

_DEFAULTS = DecoderTrainConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-decoder`` on the ``lwst`` command."""
    p = subparsers.add_parser(
        "train-decoder",
        help="train a WCT or AdaIN decoder for the feed-forward renderers",
        description="Train the decoder that inverts VGG-19 at reluL_1 (wct) or decodes AdaIN "
        "targets at relu4_1 (adain) on a seeded bank of crops from --images (and --styles). "
        "Held-out images are skipped. Resumes from <out>.state when it exists.",
    )
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--level", type=int, choices=LEVELS, default=_DEFAULTS.level,
                   help="wct: the VGG tap reluL_1 to invert (adain is always 4)")
    p.add_argument("--images", action="append", required=True, metavar="DIR|MANIFEST",
                   help="content images: folder or manifest; repeatable")
    p.add_argument("--styles", action="append", default=[], metavar="DIR|MANIFEST",
                   help="style images (adain); repeatable")
    p.add_argument("--out", required=True, help="decoder checkpoint to write (.pt)")
    p.add_argument("--steps", type=int, default=_DEFAULTS.steps)
    p.add_argument("--max-seconds", type=float, default=None,
                   help="time box: the schedule ends after this much training time")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    p.add_argument("--crop", type=int, default=_DEFAULTS.crop, help="crop side in px")
    p.add_argument("--crops-per-image", type=int, default=_DEFAULTS.crops_per_image)
    p.add_argument("--width", type=float, default=_DEFAULTS.width,
                   help="decoder width relative to VGG's channels")
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr)
    p.add_argument("--style-weight", type=float, default=_DEFAULTS.style_weight,
                   help="adain: weight of the mean/std style loss")
    p.add_argument("--feature-weight", type=float, default=_DEFAULTS.feature_weight,
                   help="wct: lambda, weight of the feature reconstruction loss")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--device", default=_DEFAULTS.device, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"),
                   default=_DEFAULTS.precision,
                   help="auto: bfloat16 autocast where the device has it natively")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from this decoder's weights (e.g. adain from the wct relu4_1 one)")
    p.add_argument("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every)
    p.set_defaults(handler=cmd_train_decoder)


def cmd_train_decoder(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = {f.name for f in dataclasses.fields(DecoderTrainConfig)}
    config = DecoderTrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    train_decoder(config)
    return 0
