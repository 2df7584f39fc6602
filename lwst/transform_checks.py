"""What `lwst.transforms.RandomStylize` refuses, and why, in one line each: input images and
style tensors of the wrong shape, size, dtype or range (0..255 floats, ``Normalize``'d input),
and a bad ``style_size``. Checked whatever ``p`` draws: a refusal on every call is found at
once, one only when the draw applies is found mid-epoch."""

from __future__ import annotations

import torch
from torch import Tensor

from lwst.config import size_refusal
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


def check_style_size(style_size: int | None) -> None:
    if style_size is None:
        return
    refusal = size_refusal(style_size, whole=True)
    if refusal:
        raise InputError(f"RandomStylize: style_size {refusal} (None: the image's longest side)")
