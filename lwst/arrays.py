"""Images between torch and the uint8 ``(H, W, C)`` numpy arrays OpenCV and PIL take.

One pair, so every conversion rounds the same way: clamp to [0, 1], then ``x * 255`` in float32
rounded to nearest (ties to even) on the way out; ``x / 255`` in the target dtype on the way in.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_uint8_hwc(image: Tensor) -> np.ndarray:
    """``(C, H, W)`` float in [0, 1], any dtype and device -> C-contiguous ``(H, W, C)`` uint8."""
    arr = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray((arr * 255).round().astype(np.uint8))


def from_uint8_hwc(arr: np.ndarray, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """``(H, W, C)`` uint8 -> ``(C, H, W)`` in [0, 1] as ``dtype`` on ``device``."""
    return torch.from_numpy(arr).permute(2, 0, 1).to(device, dtype) / 255.0
