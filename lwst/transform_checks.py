"""What `lwst.transforms.RandomStylize` refuses, and why, in one line each: input images and
style tensors of the wrong shape, size, dtype or range (0..255 floats, ``Normalize``'d input),
and the constructor's arguments (``alpha``, ``p``, ``seed``, ``device``, ``style_size``,
``cache_bytes``, ...), each an `lwst.errors.InputError` naming the argument. Images are checked
whatever ``p`` draws: a refusal on every call is found at once, one only when the draw applies
is found mid-epoch."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lwst.config import SEED_RANGE, VGG_WEIGHT_SOURCES, described, size_refusal
from lwst.devices import DeviceError, device_problem
from lwst.errors import InputError
from lwst.image_io import MIN_SIDE

# Float input may overshoot [0, 1] by this much; it is clamped before rendering. Measured on
# the 325 photos and 136 styles of /work/shared/data: torchvision bicubic resizing (antialiased
# down, RandomResizedCrop up) overshoots by up to 0.19, 0.13 at the 99th percentile, and 2-D
# bicubic cannot exceed 0.45 on any data. 0..255 floats (max > 1.25 unless all but black) and
# ImageNet-Normalize'd input (min < -0.25 once any pixel is darker than 0.43) stay refused.
OVERSHOOT = 0.25
# Above this, an out-of-range float image is 0..255 data rather than Normalize'd (whose
# ImageNet maximum is (1 - 0.406) / 0.225 = 2.64).
BYTE_RANGE_HINT = 3.0
INPUT_SHAPES = "(3, H, W) or (B, 3, H, W), or grey (1, H, W) or (B, 1, H, W)"
STYLE_SHAPES = "(3, H, W) or (1, 3, H, W), or grey (1, H, W) or (1, 1, H, W)"


def refusal(subject: str | None, what: str, got: str) -> str:
    """One line: ``RandomStylize expects <what>, got <got>`` for an input image, ``RandomStylize:
    <subject> must be <what>, got <got>`` for a style tensor."""
    if subject is None:
        return f"RandomStylize expects {what}, got {got}"
    return f"RandomStylize: {subject} must be {what}, got {got}"


def shape_hint(shape: tuple[int, ...]) -> str:
    if len(shape) in (3, 4) and shape[-1] in (1, 3, 4) and shape[-3] not in (1, 3, 4):
        return " (channels last? use .permute(2, 0, 1))"
    if len(shape) in (3, 4) and shape[-3] == 4:
        return " (RGBA? drop the alpha channel)"
    return ""


def check_image(image: Tensor, subject: str | None = None) -> None:
    """Refuse, whatever ``p`` draws, what would be stylised wrongly: failing on every call is
    found at once, failing only when the draw applies is found mid-epoch. ``subject``: a style
    tensor (one image, named in the message); None: an input image or batch."""
    shape = tuple(image.shape)
    channels_ok = len(shape) in (3, 4) and shape[-3] in (1, 3)
    if not channels_ok or (subject is not None and len(shape) == 4 and shape[0] != 1):
        shapes = INPUT_SHAPES if subject is None else STYLE_SHAPES
        raise InputError(refusal(subject, shapes, f"{shape}{shape_hint(shape)}"))
    if min(shape[-2:]) < MIN_SIDE:
        name = "the image" if subject is None else subject
        raise InputError(f"RandomStylize: {name} is {shape[-1]}x{shape[-2]} px; its sides must "
                         f"be at least {MIN_SIDE} px")
    check_range(image, subject)


def check_range(image: Tensor, subject: str | None = None) -> None:
    """Float input must be [0, 1] data, give or take resampling overshoot (`OVERSHOOT`): 0..255
    floats or Normalize'd input would be squashed into [0, 1] when stylised but returned as is
    when not."""
    if image.dtype == torch.uint8:
        return
    what = "float images in [0, 1] or uint8" if subject is None else "float in [0, 1] or uint8"
    dtype = str(image.dtype).removeprefix("torch.")
    if not image.is_floating_point():
        raise InputError(refusal(subject, what, dtype))
    if image.numel() == 0:
        return
    if not bool(torch.isfinite(image).all()):
        raise InputError(refusal(subject, what, f"{dtype} with NaN or infinite values"))
    low, high = image.min().item(), image.max().item()
    if low >= -OVERSHOOT and high <= 1.0 + OVERSHOOT:
        return
    if high > BYTE_RANGE_HINT:
        cause = ("0..255 data? divide by 255, or use v2.ToDtype(torch.float32, scale=True) "
                 "on uint8")
    elif low < -OVERSHOOT:
        cause = "Normalize'd? put RandomStylize before Normalize"
    else:
        cause = "0..255 data or Normalize'd? put RandomStylize before Normalize"
    raise InputError(refusal(subject, what, f"{dtype} values in [{low:.4g}, {high:.4g}] "
                                             f"({cause}; resampling overshoot up to "
                                             f"{OVERSHOOT} is taken and clamped)"))


def check_style_size(style_size: int | None) -> int | None:
    """``style_size`` as an int (numpy integers taken), or None."""
    if style_size is None:
        return None
    refusal = size_refusal(style_size, whole=True)
    if refusal:
        raise InputError(f"RandomStylize: style_size {refusal} (None: the image's longest side)")
    return int(style_size)


def argument_refusal(argument: str, rule: str, value: Any) -> InputError:
    """``RandomStylize: p must be a number within 0..1, got '0.5' (a str)``."""
    return InputError(f"RandomStylize: {argument} must be {rule}, got {described(value)}")


def real_number(value: Any) -> float | None:
    """``value`` as a float where it is one real number of any numeric type (int, float, a
    numpy scalar, a 0-d tensor or array, as ``torch.rand(())`` or ``np.float32`` give), else
    None; a bool is not a number here."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Tensor | np.ndarray) and value.ndim == 0:
        kind = value.dtype
        real = (kind.is_floating_point or not (kind.is_complex or kind == torch.bool)) \
            if isinstance(value, Tensor) else kind.kind in "iuf"
        return float(value.item()) if real else None
    return None


ALPHA_RULE = "a number or a (low, high) pair within 0..1 with low <= high"


def check_alpha(alpha: Any) -> tuple[float, float]:
    """``alpha`` as ``(low, high)``: one number (any numeric type) or a pair of them."""
    one = real_number(alpha)
    if one is not None:
        pair: list[float | None] = [one, one]
    elif isinstance(alpha, Tensor | np.ndarray) and alpha.ndim == 1 and len(alpha) == 2 \
            or isinstance(alpha, Sequence) and not isinstance(alpha, str | bytes) \
            and len(alpha) == 2:
        pair = [real_number(a) for a in alpha]
    else:
        raise argument_refusal("alpha", ALPHA_RULE, alpha)
    low, high = pair
    if low is None or high is None or not 0.0 <= low <= high <= 1.0:
        raise argument_refusal("alpha", ALPHA_RULE, alpha)
    return low, high


def check_probability(p: Any) -> float:
    value = real_number(p)
    if value is None or not 0.0 <= value <= 1.0:
        raise argument_refusal("p", "a number within 0..1", p)
    return value


def check_seed(seed: Any) -> int | None:
    """None (a random base seed per process) or an integer in `lwst.config.SEED_RANGE`."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise argument_refusal("seed", "None or an integer within 0..2**63-1", seed)
    return int(seed)


def check_device(device: Any) -> str:
    """The device's name, refused as `lwst.devices` refuses it for ``stylize`` (a
    `lwst.devices.DeviceError`), except whether CUDA is present: asking initialises the
    driver, so that is left to the first call, in the process that computes."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise argument_refusal("device", "a string (cpu, cuda or cuda:N) or a torch.device",
                               device)
    try:
        cuda = torch.device(device).type == "cuda"
    except (RuntimeError, TypeError, ValueError):
        cuda = False
    problem = None if cuda else device_problem(device, probe=False)
    if problem:
        raise DeviceError(f"RandomStylize: device {device!r}: {problem}")
    return device


def check_cache_bytes(cache_bytes: Any) -> int:
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, numbers.Integral) \
            or cache_bytes < 0:
        raise argument_refusal("cache_bytes", "an integer >= 0 (bytes of styles kept per "
                               "process)", cache_bytes)
    return int(cache_bytes)


def check_flag(argument: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise argument_refusal(argument, "True or False", value)
    return bool(value)


def check_choice(argument: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise argument_refusal(argument, f"one of {tuple(choices)}", value)
    return value


def check_vgg_weights(weights: Any) -> str:
    return check_choice("vgg_weights", weights, VGG_WEIGHT_SOURCES)
