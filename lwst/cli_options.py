"""Option groups and the one-line error shared by every ``lwst`` command module.

They live apart from `lwst.cli` (the entry point) so the command modules (``run``,
``make-manifest``, ``train-*``) can use them without importing the entry point that registers
them: no import cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import tempfile
from collections.abc import Callable

from lwst import storage
from lwst.config import (
    IMAGE_FORMATS,
    INPAINT_METHODS,
    MAX_WARP_STRENGTH,
    MAX_WARP_VIEWS,
    OPTIMIZERS,
    QUALITY_RANGE,
    RENDER_PRECISIONS,
    RENDERERS,
    WARP_FALLBACKS,
    WARP_FIELDS,
    WARP_METHODS,
    WARP_PRECISIONS,
    WARP_REFINES,
    WCT_TOP_LEVELS,
    ConfigError,
    RenderConfig,
    StylizeConfig,
    WarpConfig,
)

# Help texts quote the defaults from the configuration itself, so they cannot drift from it.
_WARP, _RENDER, _ITEM = WarpConfig(), RenderConfig(), StylizeConfig()


class CommandError(Exception):
    """A user-facing failure with a one-line message."""


# The CLI option of each flat setting (`lwst.config.OVERRIDES`): ``--`` and the name with
# hyphens (``warp_strength`` -> ``--warp-strength``), but for these. The one map from a setting
# to its option: `option_error` uses it to say a refused setting as the user typed it.
OPTION_NAMES = {"measure_losses": "--no-losses", "side_outputs": "--no-side-outputs",
                "upscale": "--no-upscale"}


def option_for(setting: str) -> str:
    """The option that sets the flat setting ``setting`` (``--warp-strength``)."""
    return OPTION_NAMES.get(setting, "--" + setting.replace("_", "-"))


def option_error(exc: ConfigError) -> CommandError:
    """A refused setting (`lwst.config.ConfigError`) named by its option: ``--warp-strength
    must be within 0..4, got nan``, not the config field the library names."""
    message = str(exc)
    if exc.setting and message.startswith(exc.setting):
        message = option_for(exc.setting) + message[len(exc.setting):]
    return CommandError(message)


@contextlib.contextmanager
def settings_named_by_option():
    """Within it, a `lwst.config.ConfigError` leaves as a `CommandError` naming the option."""
    try:
        yield
    except ConfigError as exc:
        raise option_error(exc) from None


def defer_options(parser: argparse.ArgumentParser,
                  add_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``add_options(parser)``'s options when ``parser`` is first used (parsed, or its
    usage or help printed), not when it is registered: a training command's options quote
    its engine's defaults, and importing that engine (torch) for ``lwst --help`` or another
    command's run would cost seconds (tests/test_cli_startup.py)."""
    pending = [add_options]

    def first_use(method: Callable) -> Callable:
        def run(*args, **kwargs):
            while pending:
                pending.pop()(parser)
            return method(*args, **kwargs)
        return run

    for name in ("parse_known_args", "format_usage", "format_help"):
        setattr(parser, name, first_use(getattr(parser, name)))


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's `ArgumentDefaultsHelpFormatter` without the noise: no ``(default: None)``
    on a required option or one whose absence means none, no ``(default: False)`` on a
    switch."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or action.required or action.default is None \
                or action.default is False or action.default is argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


# Object stores lwst cannot write to: fsspec's http(s) filesystem only reads.
READ_ONLY_PROTOCOLS = ("http", "https")
_SPECIAL = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def check_output_location(option: str, uri: str | None, folder: bool = False) -> None:
    """Refuse (`CommandError`, one line naming ``option`` and ``uri``), before any work, an
    output that could not be written: an existing directory (or, for a ``folder``, an existing
    file), a device or pipe (an output is replaced whole, never written into), a parent that is
    a file, a folder lwst cannot create files in (read-only, ``/proc``, ``/sys``, no
    permission), a name too long for the filesystem, an ``http(s)://`` URL. Local paths only
    (and read-only protocols); an object store is probed by `lwst.s3.check_reachable`.

    The folder test is a real one: an empty temporary file named as `lwst.storage` names its
    own is created in the nearest existing folder (the one the write would create the rest
    in) and removed at once.
    """
    if not uri:
        return
    if storage.protocol(uri) in READ_ONLY_PROTOCOLS:
        raise CommandError(f"{option} {uri}: lwst cannot write to {storage.protocol(uri)} "
                           "URLs (use a local path, s3:// or another writable fsspec protocol)")
    if not storage.is_local(uri):
        return
    path = storage.local_path(uri)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # absent (or a parent is not a folder: found below)
    if mode is not None:
        if stat.S_ISDIR(mode) and not folder:
            raise CommandError(f"{option} {uri}: is an existing directory, not a file name")
        if stat.S_ISREG(mode) and folder:
            raise CommandError(f"{option} {uri}: is an existing file, not a folder")
        kind = next((k for test, k in _SPECIAL if test(mode)), None)
        if kind:
            raise CommandError(f"{option} {uri}: is a {kind}, not a regular file (lwst "
                               "replaces an output whole; name a file)")
    where = path if folder and mode is not None else path.parent
    while not os.path.lexists(where) and where != where.parent:
        where = where.parent
    if os.path.lexists(where) and not where.is_dir():
        what = "a broken symbolic link" if not where.exists() else "a file"
        raise CommandError(f"{option} {uri}: {where} is {what}, not a folder")
    # lwst.storage writes through ".lwst-<owner>.<name>.<random>.tmp" beside the output: that
    # name, not only the output's, must fit the filesystem's 255-byte limit.
    if not folder and len(f"{storage.TEMP_PREFIX}pid{os.getpid()}.{path.name}.12345678.tmp"
                          .encode()) > 255:
        raise CommandError(f"{option} {uri}: file name too long ({len(path.name.encode())} "
                           "bytes)")
    try:
        fd, probe = tempfile.mkstemp(dir=where, prefix=f"{storage.TEMP_PREFIX}pid{os.getpid()}.",
                                     suffix=".tmp")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CommandError(f"{option} {uri}: cannot create files in {where} ({reason})"
                           ) from None
    os.close(fd)
    os.unlink(probe)


def absolute_location(uri: str | None) -> str | None:
    """A local path made absolute (normalised, symlinks kept); URIs, ``file://`` ones included,
    unchanged. What the metadata records as an input or output."""
    if not uri or "://" in uri:
        return uri
    return os.path.abspath(uri)


def add_warp_options(parser: argparse.ArgumentParser) -> None:
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
        help=f"scale of the warp field: 0 = no warp, 1 = full (default {_WARP.strength:g}), up "
        f"to {MAX_WARP_STRENGTH:g}",
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
        "--optim-steps", type=int, default=None,
        help=f"iterations of the optimisation estimator (default {_WARP.optim_steps})"
    )
    parser.add_argument(
        "--warp-precision",
        choices=WARP_PRECISIONS,
        default=None,
        help="precision of the VGG features the warp is matched on: float32 (default: the same "
        "warps on every machine), auto (bfloat16 where the hardware has it natively), bfloat16",
    )
    parser.add_argument(
        "--warp-field",
        choices=WARP_FIELDS,
        default=None,
        help="diffeo: the estimate made fold-free by scaling and squaring (default); fitted: "
        "the same with the velocity fitted to the estimate where it does not fold (closer to "
        "it; ~0.09 s more for a lone item); raw: as estimated, folds and all",
    )
    parser.add_argument(
        "--warp-fallback",
        choices=WARP_FALLBACKS,
        default=None,
        help="what an item whose warp confidence is below --min-warp-confidence gets: the "
        "matched affine, the field damped to half (default), or none (keep it)",
    )
    parser.add_argument(
        "--warp-refine",
        choices=WARP_REFINES,
        default=None,
        help="dis: refine the field with OpenCV DIS where the warped content then matches the "
        "geometry exemplar pixel for pixel (a deformed copy of it; default); none: never",
    )
    parser.add_argument(
        "--warp-views",
        type=int,
        choices=range(1, MAX_WARP_VIEWS + 1),
        metavar=f"{{1..{MAX_WARP_VIEWS}}}",
        default=None,
        help="learned warp: estimate on this many views of the pair (itself, mirrored, upside "
        "down, transposed) and average the fields that agree with the pair's own (another "
        "view's where it aligns clearly better): less warp error, one more pass per view "
        "(default 2; 1 is the fastest)",
    )
    parser.add_argument(
        "--min-warp-confidence",
        type=float,
        default=None,
        help="warp confidence (0..1) below which the fallback applies and a warning is printed "
        f"(default {_WARP.min_confidence:g})",
    )


def add_side_output_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup
                           ) -> None:
    """``--no-side-outputs`` (the ``side_outputs`` setting off): a dataset run's items write
    their image only, no warped content, flow or flow picture (`lwst.item_files`)."""
    parser.add_argument(
        option_for("side_outputs"), dest="side_outputs", action="store_false", default=None,
        help="write each item's image only: no warped/, flow/ (.flo) or flow_vis/ files "
        "(~1.5 MB less per 512-px warped item; the metadata keeps every warp figure). An item "
        "finished with them stays finished; one finished without them is redone when a later "
        "run asks for them")


def add_image_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      formats: bool) -> None:
    """The output image's options: ``--image-format`` (``formats``: a dataset run; ``lwst
    stylize`` takes the format from its ``--out`` suffix), ``--image-quality`` and
    ``--no-upscale`` (the ``image_format``, ``image_quality`` and ``upscale`` settings)."""
    if formats:
        parser.add_argument(
            option_for("image_format"), dest="image_format", choices=IMAGE_FORMATS,
            default=None,
            help=f"how each item's image is encoded: images/<id>.png, .jpg or .webp (default "
            f"{_ITEM.image_format}; warped/ and flow_vis/ stay PNG). An item finished in "
            "another format, or at another quality of jpeg/webp, is redone")
    parser.add_argument(
        option_for("image_quality"), dest="image_quality", type=int, default=None,
        metavar=f"{{{QUALITY_RANGE[0]}..{QUALITY_RANGE[1]}}}",
        help=f"JPEG / WebP quality (default {_ITEM.image_quality}); PNG is lossless and has "
        "none")
    parser.add_argument(
        option_for("upscale"), dest="upscale", action="store_false", default=None,
        help="never enlarge: a content whose longest side is under --size is made at its own "
        "size (the metadata's width and height say which)")


def add_render_options(parser: argparse.ArgumentParser, default_renderer: str = _RENDER.renderer
                       ) -> None:
    """The texture stage's options; ``default_renderer`` is what the command renders with
    when ``--renderer`` is absent (`lwst run`: `lwst.config.PIPELINE_RENDERER`)."""
    group = parser.add_argument_group("texture rendering (quality / speed)")
    group.add_argument(
        "--renderer", choices=RENDERERS, default=None,
        help="gatys: multi-scale optimisation, the quality mode; wct / adain: one feed-forward "
        f"pass, tens of times faster (lwst.renderers). Default {default_renderer}")
    group.add_argument(
        "--style-strength", type=float, default=None,
        help="feed-forward renderers: blend of stylised and content features, 0..1 (default "
        f"{_RENDER.style_strength:g}); gatys has none (--style-weight is its lever)")
    group.add_argument(
        "--wct-top-level", type=int, choices=WCT_TOP_LEVELS, default=None,
        help="wct: the deepest level its cascade starts at, relu<N>_1 down to relu1_1 (default "
        f"{_RENDER.wct_top_level}; 5 is the method's full cascade, which with the shipped "
        "decoders loses more content and adds no style)")
    group.add_argument(
        "--decoder-dir", default=None,
        help="folder of decoder_adain.pt / decoder_wct1..5.pt (default: those shipped)")
    group.add_argument(
        "--render-precision", choices=RENDER_PRECISIONS, default=None,
        help="VGG/decoder passes of every renderer (gatys: its optimisation's, in autocast): "
        "auto (bfloat16 where the hardware has it natively, else float32; default), float32, "
        "bfloat16")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                       help=f"gatys (default {_RENDER.optimizer})")
    group.add_argument("--levels", type=int, default=None,
                       help=f"gatys: pyramid levels, coarse to fine (default {_RENDER.levels})")
    group.add_argument(
        "--iterations", default=None,
        help="gatys: iterations per level, coarsest first (default "
        f"{','.join(map(str, _RENDER.iterations))})")
    group.add_argument("--style-weight", type=float, default=None,
                       help=f"gatys (default {_RENDER.style_weight:g})")
    group.add_argument("--content-weight", type=float, default=None,
                       help=f"gatys (default {_RENDER.content_weight:g})")
    group.add_argument("--learning-rate", type=float, default=None,
                       help=f"gatys with Adam only (default {_RENDER.learning_rate:g})")
    group.add_argument(
        "--preserve-color", action="store_true", default=None, help="keep the content's colours"
    )
    group.add_argument(
        "--no-losses", dest="measure_losses", action="store_false", default=None,
        help="skip the loss yardstick after rendering (content/style/total_loss are NaN): "
        "about a fifth of a feed-forward item's time")
    group.add_argument(
        "--style-size",
        type=int,
        default=None,
        help="longest side of the texture exemplar (default: output size)",
    )
