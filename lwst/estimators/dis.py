"""OpenCV DIS optical flow as a warp estimator: the classical photometric baseline.

Dense Inverse Search (Kroeger et al. 2016) assumes brightness constancy and small, locally
smooth motion, so it shows what the feature-based estimators buy on re-textured exemplars.
``calc(I0, I1)`` returns ``f`` with ``I0(x) ~ I1(x + f(x))``; with ``I0`` = exemplar and
``I1`` = content that is exactly our backward flow, ``warped(x) = content(x + f(x))``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from lwst.arrays import to_uint8_hwc


def _grey_uint8(image: Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` RGB in [0, 1] -> ``(H, W)`` uint8 luminance, as DIS wants."""
    return cv2.cvtColor(to_uint8_hwc(image[0]), cv2.COLOR_RGB2GRAY)


def dis_flow(
    content: Tensor, exemplar: Tensor, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    init: Tensor | None = None,
) -> Tensor:
    """Backward flow ``(1, 2, H, W)`` in pixels from two same-size ``(1, 3, H, W)`` images.

    ``init`` ``(1, 2, H, W)``: a field DIS starts from instead of zero (OpenCV takes a
    same-size float32 flow passed in as the initial estimate), so it refines a field found by
    another estimator rather than searching from scratch."""
    if content.shape != exemplar.shape:
        raise ValueError(f"content {tuple(content.shape)} != exemplar {tuple(exemplar.shape)}")
    estimator = cv2.DISOpticalFlow_create(preset)
    start = None
    if init is not None and not torch.isfinite(init).all():
        # OpenCV DIS dies with a segmentation fault on a NaN start, taking the process along.
        raise ValueError("DIS: the initial flow holds NaN or infinite values")
    if init is not None:  # a copy: OpenCV writes its result into the initial flow's memory
        start = np.array(init[0].detach().float().permute(1, 2, 0).cpu().numpy(), order="C",
                         copy=True)
    flow = estimator.calc(_grey_uint8(exemplar), _grey_uint8(content), start)  # (H, W, 2)
    return torch.from_numpy(flow).permute(2, 0, 1).unsqueeze(0).to(content.device, content.dtype)
