"""``lwst train-warp``: train the warp network from folders or manifests of images.

The options are added when the command is used (`defer_options`), and quote the recipe's
defaults from `lwst.warpnet.recipe`, which imports no torch: ``--help`` must answer without it
(tests/test_cli_startup.py). The trainer is imported by the handler.
"""

from __future__ import annotations

import argparse
import sys

from lwst.cli_options import DefaultsHelpFormatter, defer_options
from lwst.config import RENDERERS
from lwst.warpnet.recipe import TIERS, option_defaults

EXIT_INTERRUPTED = 130



def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-warp`` on the ``lwst`` command."""
    p = subparsers.add_parser(
        "train-warp",
        formatter_class=DefaultsHelpFormatter,
        help="train the learned warp network on synthetic pairs",
        description="Encode the training images (held-out ones are skipped) into a VGG feature "
        "cache, then train the warp network on synthetic pairs drawn from it. Writes a resumable "
        "training checkpoint to --out and, with --export, the slim one lwst ships.",
    )
    defer_options(p, _add_options)
    p.set_defaults(handler=cmd_train_warp)


def _add_options(p: argparse.ArgumentParser) -> None:
    defaults = argparse.Namespace(**option_defaults())
    p.add_argument(
        "--images",
        action="append",
        required=True,
        metavar="DIR|MANIFEST",
        help="folder of images or manifest (CSV/Parquet/JSONL); repeatable",
    )
    p.add_argument("--out", required=True, help="training checkpoint (model, optimiser, step, rng)")
    p.add_argument("--export", help="also write the slim inference checkpoint here")
    p.add_argument("--cache-dir", default=defaults.cache_dir, help="VGG feature cache folder")
    p.add_argument(
        "--no-build-cache",
        action="store_true",
        help="train on what the cache holds; do not encode missing images",
    )
    p.add_argument("--painted-bank",
                   help="folder of painted copies, <image>__<style>[.<renderer>].png")
    p.add_argument(
        "--paint-images",
        type=int,
        default=defaults.paint_images,
        help="first paint N training images (seeded choice) into --painted-bank with the "
        "project's renderer, one random training style each (existing copies are kept)",
    )
    p.add_argument("--paint-styles", help="folder of styles to paint with (held-out ones skipped)")
    p.add_argument("--paint-size", type=int, default=defaults.paint_size,
                   help="painting resolution in px")
    p.add_argument("--paint-renderer", default=defaults.paint_renderer,
                   choices=RENDERERS,
                   help="renderer of the painted copies: gatys (cheap 2-level schedule, seconds a "
                   "copy) or a feed-forward one (a fraction of a second a copy)")
    p.add_argument(
        "--tiers",
        nargs="+",
        default=list(defaults.tiers),
        choices=TIERS,
        help="re-texturing of the cached exemplar variants, one variant each",
    )
    p.add_argument("--steps", type=int, default=defaults.steps,
                   help="training steps; the learning-rate schedule runs over them")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="pairs per step")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak AdamW learning rate")
    p.add_argument("--warmup", type=int, default=defaults.warmup,
                   help="linear warm-up steps (at most a tenth of --steps)")
    p.add_argument(
        "--weak-weight",
        type=float,
        default=defaults.weak_weight,
        help="weight of the paper's weak softmax loss",
    )
    p.add_argument(
        "--original-content",
        type=float,
        default=defaults.original_content,
        help="share of pairs whose content side is the untouched image",
    )
    p.add_argument(
        "--cross-pairs",
        type=float,
        default=defaults.cross_pairs,
        help="share of each batch drawn from pairs of different, similar-looking images, "
        "trained by the weak loss alone (0: synthetic pairs only)",
    )
    p.add_argument(
        "--cross-neighbours",
        type=int,
        default=defaults.cross_neighbours,
        help="exemplar candidates per image for --cross-pairs (nearest by mean relu4_1 feature)",
    )
    p.add_argument(
        "--cross-weight",
        type=float,
        default=defaults.cross_weight,
        help="weak-loss weight of the --cross-pairs items (the others use --weak-weight)",
    )
    p.add_argument(
        "--melt-weight",
        type=float,
        default=defaults.melt_weight,
        help="weight of the melt penalty (spread of the log area change) on the --cross-pairs "
        "items' fields (0: none)",
    )
    p.add_argument("--max-images", type=int, help="encode only N training images (seeded shuffle)")
    p.add_argument("--until", type=int, help="stop at this step; the schedule runs over --steps")
    p.add_argument("--seed", type=int, default=defaults.seed, help="data order and sampling")
    p.add_argument("--device", default=defaults.device, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (same settings; --steps and --until may "
                   "change); without it an existing --out is refused")
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="fine-tune: start from these weights (training or slim checkpoint) with a fresh "
        "optimiser and schedule",
    )
    p.add_argument(
        "--refine-steps",
        type=int,
        nargs=2,
        metavar=("RELU4_1", "RELU3_1"),
        help="refinement steps to train with (default: the architecture's, 3 and 2)",
    )
    p.add_argument(
        "--global-relu5",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the global stage also matches relu5_1 features (default: the architecture's; "
        "off for a new network); needs a cache written with relu5_1",
    )
    p.add_argument("--log", help="append per-step losses to this CSV")
    p.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                   help="steps between checkpoints (Ctrl-C also saves the last completed step)")


def cmd_train_warp(args: argparse.Namespace) -> int:
    from lwst.warpnet.train import TrainConfig, TrainingStopped, train

    cfg = TrainConfig(
        images=list(args.images),
        out=args.out,
        export=args.export,
        cache_dir=args.cache_dir,
        build_cache=not args.no_build_cache,
        painted_bank=args.painted_bank,
        paint_images=args.paint_images,
        paint_styles=args.paint_styles,
        paint_size=args.paint_size,
        paint_renderer=args.paint_renderer,
        tiers=tuple(args.tiers),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        weak_weight=args.weak_weight,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        resume=args.resume,
        init=args.init,
        refine_steps=tuple(args.refine_steps) if args.refine_steps else None,
        global_relu5=args.global_relu5,
        log=args.log,
        checkpoint_every=args.checkpoint_every,
        original_content=args.original_content,
        cross_pairs=args.cross_pairs,
        cross_neighbours=args.cross_neighbours,
        cross_weight=args.cross_weight,
        melt_weight=args.melt_weight,
        max_images=args.max_images,
        until=args.until,
    )
    try:
        train(cfg)
    except TrainingStopped as stop:
        print(f"lwst train-warp: {stop}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
