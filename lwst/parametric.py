"""Parametric warps (affine, thin-plate spline) expressed as dense backward flows.

They serve three jobs: the gentle, global GST-style warp mode, the generator of synthetic
training pairs for the learned network (docs/method.md: random affine composed with a TPS on a 3x3
control grid), and the robust affine part of an estimated field (`affine_part`: the warp
network's global prior, the fold-free repair's factored-out affine).

Affine convention, the one lwst uses everywhere: a matrix ``(B, 2, 3)`` ``[A | t]`` sending an
output location ``p`` to the content location ``A p + t`` it samples (the flow's backward sense,
so its flow is ``A p + t - p``), in pixel coordinates (`lwst.flow`). This is OpenCV's
``estimateAffine2D`` form. Only the synthetic generator draws its affines in normalised
coordinates (``theta``, as ``torch.nn.functional.affine_grid`` with ``align_corners=True``),
so that its ranges do not depend on the image size; `pixel_affine` converts a ``theta``. TPS
control points are normalised as kornia's TPS expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.flow import base_grid, normalised_to_pixel, pixel_to_normalised
from lwst.kornia_ops import get_tps_transform, warp_points_tps


def normalised_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """``(1, H*W, 2)`` output locations in normalised (x, y)."""
    grid = base_grid(height, width, device, dtype).flatten(2).mT
    return pixel_to_normalised(grid, height, width)


def flow_from_sampling(points: Tensor, height: int, width: int) -> Tensor:
    """Sampled content locations ``(B, H*W, 2)``, normalised -> backward flow ``(B, 2, H, W)``."""
    base = normalised_grid(height, width, points.device, points.dtype)
    disp = normalised_to_pixel(points - base, height, width, displacement=True)
    return disp.transpose(1, 2).reshape(points.shape[0], 2, height, width)


def apply_affine(matrix: Tensor, points: Tensor) -> Tensor:
    """``matrix (B, 2, 3)`` applied to ``points (B, N, 2)``: ``A p + t`` for each point."""
    return points @ matrix[:, :, :2].mT + matrix[:, :, 2].unsqueeze(1)


def invert_affine(matrix: Tensor) -> Tensor:
    """The inverse map ``[A^-1 | -A^-1 t]`` of ``matrix (B, 2, 3)``."""
    # Inverts the transposed linear part, the one `apply_affine` multiplies by: LAPACK rounds
    # A and A^T differently, and this way the fold-free fields stay those docs/benchmarks.md
    # measured, bit for bit.
    inverse_t = torch.linalg.inv(matrix[:, :, :2].mT)
    return torch.cat([inverse_t, -(matrix[:, :, 2:].mT @ inverse_t)], 1).mT


def identity_affine(batch: int, device=None, dtype=torch.float32) -> Tensor:
    """``(B, 2, 3)`` identity maps."""
    return torch.eye(2, 3, device=device, dtype=dtype).expand(batch, 2, 3)


def pixel_affine(theta: Tensor, height: int, width: int) -> Tensor:
    """A normalised ``theta (B, 2, 3)`` as the pixel matrix of the same map on a ``height`` x
    ``width`` image: with ``p = D (n + 1)``, ``D = diag((W - 1) / 2, (H - 1) / 2)``, the
    linear part is ``D A D^-1`` and the translation is where the top-left pixel (``n = -1``)
    goes."""
    ones = torch.ones(1, 1, 2, device=theta.device, dtype=theta.dtype)
    half = normalised_to_pixel(ones, height, width, displacement=True)  # (1, 1, 2): D
    linear = theta[:, :, :2] * half.mT / half
    shift = normalised_to_pixel(apply_affine(theta, -ones), height, width)  # (B, 1, 2)
    return torch.cat([linear, shift.mT], 2)


def compose_affine(matrix: Tensor, flow: Tensor) -> Tensor:
    """The backward flow of ``x -> A (x + flow(x)) + t``: the pixel ``matrix (B, 2, 3)`` applied
    after ``flow (B, 2, H, W)``."""
    b, _, height, width = flow.shape
    grid = base_grid(height, width, flow.device, flow.dtype)
    mapped = apply_affine(matrix, (grid + flow).flatten(2).mT)
    return mapped.mT.reshape(b, 2, height, width) - grid


def affine_flow(matrix: Tensor, height: int, width: int) -> Tensor:
    """Backward flow ``(B, 2, H, W)`` of the pixel affine ``matrix (B, 2, 3)``."""
    return compose_affine(matrix, matrix.new_zeros(matrix.shape[0], 2, height, width))


def affine_part(flow: Tensor, confidence: Tensor | None = None, iters: int = 5,
                scale: float = 4.0, grid: int | None = None, ridge: float = 1e-6) -> Tensor:
    """The robust affine part ``(B, 2, 3)`` of a backward ``flow (B, 2, H, W)`` in pixels.

    Least squares of ``x + u(x) ~ A x + t``, reweighted ``iters`` times by a Cauchy weight of
    each point's residual (``scale`` px: about where a point stops counting), so that a minority
    of wrong vectors cannot drag the fit far. ``confidence (B, 1, h, w)``: prior weights of the
    fitted points (default: all 1); ``grid``: fit a ``grid`` x ``grid`` bilinear subsample of
    the field (default: every pixel), ``confidence`` then at that size; ``ridge``: Tikhonov
    term keeping the normal equations solvable when few points carry weight.
    """
    b, _, height, width = flow.shape
    span = None
    if grid is not None:
        flow = F.interpolate(flow, size=(grid, grid), mode="bilinear", align_corners=True)
        span = (height, width)
    src = base_grid(*flow.shape[-2:], flow.device, flow.dtype, span=span).flatten(2).mT
    src = src.expand(b, -1, -1)
    tgt = src + flow.flatten(2).mT
    design = torch.cat([src, torch.ones_like(src[..., :1])], -1)  # (B, N, 3)
    prior = torch.ones_like(design[..., 0]) if confidence is None else confidence.flatten(1)
    weights = prior
    regulariser = ridge * torch.eye(3, device=flow.device, dtype=flow.dtype)
    for _ in range(iters):
        wx = weights.unsqueeze(-1) * design
        coef = torch.linalg.solve(design.mT @ wx + regulariser, wx.mT @ tgt)  # (B, 3, 2)
        residual = (design @ coef - tgt).norm(dim=-1)
        weights = prior / (1 + (residual / scale) ** 2)
    return coef.mT


def tps_points(src: Tensor, dst: Tensor, points: Tensor) -> Tensor:
    """Thin-plate spline through control points ``src -> dst`` ``(B, K, 2)``, applied to points.

    kornia's fit is exact at the control points when its kernel centres are ``dst`` (checked in
    tests/test_parametric.py), which is the convention it documents for `warp_points_tps`.
    """
    kernel, affine = get_tps_transform(src, dst)
    return warp_points_tps(points, dst, kernel, affine)


def tps_flow(src: Tensor, dst: Tensor, height: int, width: int) -> Tensor:
    """Backward flow of the TPS that sends output control points ``src`` to content ``dst``."""
    grid = normalised_grid(height, width, src.device, src.dtype).expand(src.shape[0], -1, -1)
    return flow_from_sampling(tps_points(src, dst, grid), height, width)


def control_grid(n: int = 3, batch: int = 1, device=None, dtype=torch.float32) -> Tensor:
    """``(B, n*n, 2)`` regular control points spanning [-1, 1]."""
    return normalised_grid(n, n, device, dtype).expand(batch, -1, -1)


@dataclass(frozen=True)
class SyntheticWarpRanges:
    """Ranges of the random warp used for synthetic supervision (docs/method.md defaults)."""

    scale: tuple[float, float] = (0.75, 1.25)
    rotation_deg: float = 15.0
    shear_deg: float = 15.0
    translation: float = 0.4
    tps_jitter: float = 0.1
    tps_grid: int = 3


def random_affine(batch: int, ranges: SyntheticWarpRanges, generator: torch.Generator) -> Tensor:
    """``(B, 2, 3)`` random normalised affines (``theta``): rotation @ shear @ anisotropic
    scale, plus translation."""

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    sx, sy = uniform(*ranges.scale), uniform(*ranges.scale)
    rot = torch.deg2rad(uniform(-ranges.rotation_deg, ranges.rotation_deg))
    shear = torch.tan(torch.deg2rad(uniform(-ranges.shear_deg, ranges.shear_deg)))
    tx, ty = (
        uniform(-ranges.translation, ranges.translation),
        uniform(-ranges.translation, ranges.translation),
    )
    cos, sin = torch.cos(rot), torch.sin(rot)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear_m = torch.stack(
        [
            torch.stack([torch.ones_like(shear), shear], -1),
            torch.stack([torch.zeros_like(shear), torch.ones_like(shear)], -1),
        ],
        -2,
    )
    scale_m = torch.diag_embed(torch.stack([sx, sy], -1))
    linear = rotation @ shear_m @ scale_m
    return torch.cat([linear, torch.stack([tx, ty], -1).unsqueeze(-1)], dim=-1)


def random_warp_flow(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    ranges: SyntheticWarpRanges | None = None,
) -> Tensor:
    """Random backward flows ``(B, 2, H, W)``: affine composed with a jittered-grid TPS.

    The output location p samples the content at ``A(T(p))``: T bends locally, A moves globally
    (both in normalised coordinates: A is `random_affine`'s ``theta``).
    """
    ranges = ranges or SyntheticWarpRanges()
    src = control_grid(ranges.tps_grid, batch)
    jitter = (torch.rand(src.shape, generator=generator) * 2 - 1) * ranges.tps_jitter
    grid = normalised_grid(height, width).expand(batch, -1, -1)
    bent = tps_points(src.contiguous(), (src + jitter).contiguous(), grid)
    sampled = apply_affine(random_affine(batch, ranges, generator), bent)
    return flow_from_sampling(sampled, height, width)


def rotation_matrix(degrees: float, scale: float = 1.0) -> Tensor:
    """``(1, 2, 3)`` normalised ``theta`` of a rotation+scale about the centre (tests, demos)."""
    rad = math.radians(degrees)
    c, s = math.cos(rad) * scale, math.sin(rad) * scale
    return torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]])
