"""Fill the holes a warp opens (pixels sampled from outside the content).

The paper fills them "with pixels nearby"; OpenCV's Telea (fast marching) and Navier-Stokes
inpainting do exactly that and are well kept, so we use them. Only hole pixels change: the
rest of the image keeps its full float precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from lwst.arrays import from_uint8_hwc, to_uint8_hwc
from lwst.errors import InputError

METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


@dataclass(frozen=True)
class InpaintResult:
    image: Tensor  # (B, 3, H, W) in [0, 1]
    inpainted_frac: float  # fraction of pixels that were holes, pooled over the batch


def inpaint_holes(
    image: Tensor, holes: Tensor, method: str = "telea", radius: int = 5
) -> InpaintResult:
    """Fill ``holes (B, 1, H, W)`` bool in ``image (B, 3, H, W)``; other pixels are untouched."""
    if method not in METHODS:
        raise InputError(f"unknown inpainting method {method!r}; choose from {sorted(METHODS)}")
    holes = holes.bool()
    frac = float(holes.float().mean())
    if not holes.any():
        return InpaintResult(image, 0.0)
    out = image.clone()
    for b in range(image.shape[0]):
        mask = holes[b, 0].cpu().numpy().astype(np.uint8) * 255
        if not mask.any():
            continue
        filled = cv2.inpaint(to_uint8_hwc(image[b]), mask, radius, METHODS[method])
        filled_t = from_uint8_hwc(filled, image.device, image.dtype)
        out[b] = torch.where(holes[b], filled_t, image[b])
    return InpaintResult(out, frac)
