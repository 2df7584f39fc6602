"""Synthetic training pairs: a random geometric warp plus re-texturing of the exemplar side.

docs/method.md: the exemplar is the content bent by a random affine composed with a 3x3 TPS, so the
ground-truth backward flow is known. Re-texturing (colour, contrast, posterisation,
edge-preserving stylisation, or a painted copy) is applied *before* warping, so it changes
appearance and never geometry: ``exemplar ~ warp_image(retexture(content), flow)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from lwst.arrays import from_uint8_hwc, to_uint8_hwc
from lwst.flow import hole_mask, warp_image
from lwst.kornia_ops import enhance as KE
from lwst.kornia_ops import filters as KF
from lwst.parametric import SyntheticWarpRanges, random_warp_flow
from lwst.warpnet.recipe import TIERS


@dataclass
class SyntheticPair:
    """One training or benchmark pair, all ``(1, ., S, S)`` at the same size."""

    content: Tensor  # (1, 3, S, S) the untouched image
    exemplar: Tensor  # (1, 3, S, S) warped (and re-textured) copy; zeros where it saw no content
    flow: Tensor  # (1, 2, S, S) ground-truth backward flow, pixels
    valid: Tensor  # (1, 1, S, S) bool: the flow samples inside the content


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _choice(generator: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (), generator=generator))


def photometric(image: Tensor, generator: torch.Generator) -> Tensor:
    """Random colour, contrast, gamma, saturation, hue, blur and noise on ``(1, 3, H, W)``."""
    u = lambda lo, hi: _uniform(generator, lo, hi)  # noqa: E731
    out = image * torch.tensor([u(0.75, 1.25) for _ in range(3)]).view(1, 3, 1, 1).to(image)
    out = KE.adjust_gamma(out.clamp(0, 1), u(0.6, 1.6))
    out = KE.adjust_contrast_with_mean_subtraction(out, u(0.5, 1.5))
    out = KE.adjust_brightness(out, u(-0.15, 0.15))
    out = KE.adjust_saturation(out.clamp(0, 1), u(0.2, 1.6))
    out = KE.adjust_hue(out, u(-0.4, 0.4))
    if u(0, 1) < 0.3:
        sigma = u(0.5, 2.0)
        out = KF.gaussian_blur2d(out, (7, 7), (sigma, sigma))
    noise = torch.randn(out.shape, generator=generator).to(out) * u(0.0, 0.04)
    return (out + noise).clamp(0, 1)


def _posterise(arr: np.ndarray, levels: int) -> np.ndarray:
    step = 256 // levels
    return (arr // step * step + step // 2).clip(0, 255).astype(np.uint8)


def artistic_filter(image: Tensor, generator: torch.Generator) -> Tensor:
    """A painting-like copy of ``(1, 3, H, W)`` by one of OpenCV's non-photorealistic filters."""
    arr = to_uint8_hwc(image[0])
    kind = _choice(generator, 4)
    s_s, s_r = _uniform(generator, 20, 90), _uniform(generator, 0.15, 0.6)
    if kind == 0:
        out = cv2.stylization(arr, sigma_s=s_s, sigma_r=s_r)
    elif kind == 1:
        smooth = cv2.edgePreservingFilter(
            arr, flags=1 + _choice(generator, 2), sigma_s=s_s, sigma_r=s_r
        )
        out = _posterise(smooth, 3 + _choice(generator, 4))
    elif kind == 2:
        _, out = cv2.pencilSketch(arr, sigma_s=s_s, sigma_r=min(s_r, 0.1), shade_factor=0.05)
    else:
        out = _posterise(cv2.medianBlur(arr, 5), 2 + _choice(generator, 3))
    painted = from_uint8_hwc(out, image.device, image.dtype).unsqueeze(0)
    return photometric(painted, generator)


def make_pair(
    image: Tensor,
    generator: torch.Generator,
    tier: str = "geometry",
    painted: Tensor | None = None,
    ranges: SyntheticWarpRanges | None = None,
) -> SyntheticPair:
    """A synthetic pair from ``image (1, 3, S, S)``.

    ``tier``: "geometry" (warp only), "photometric" (warp + colour/contrast change) or
    "artistic" (warp + a painted copy: ``painted`` (1, 3, S, S) when given, e.g. rendered by
    ``lwst.render.render_texture`` from this same image, else an OpenCV stylisation).
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    _, _, height, width = image.shape
    flow = random_warp_flow(1, height, width, generator, ranges).to(image)
    if tier == "geometry":
        source = image
    elif tier == "photometric":
        source = photometric(image, generator)
    elif painted is not None:
        source = photometric(painted.to(image), generator)
    else:
        source = artistic_filter(image, generator)
    exemplar = warp_image(source, flow)
    return SyntheticPair(image, exemplar, flow, ~hole_mask(flow))
