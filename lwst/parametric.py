"""Parametric warps (affine, thin-plate spline) expressed as dense backward flows.

They serve two jobs: the gentle, global GST-style warp mode, and the generator of synthetic
training pairs for the learned network (docs/method.md: random affine composed with a TPS on a 3x3
control grid). All maps work in normalised coordinates ([-1, 1], ``align_corners=True``) and
send an output location to the content location it samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lwst.flow import base_grid
from lwst.kornia_ops import get_tps_transform, warp_points_tps


def normalised_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """``(1, H*W, 2)`` output locations in normalised (x, y)."""
    grid = base_grid(height, width, device, dtype)[0].flatten(1).t()
    scale = torch.tensor([max(width - 1, 1), max(height - 1, 1)], device=device, dtype=dtype)
    return (2.0 * grid / scale - 1.0).unsqueeze(0)


def flow_from_sampling(points: Tensor, height: int, width: int) -> Tensor:
    """Sampled content locations ``(B, H*W, 2)``, normalised -> backward flow ``(B, 2, H, W)``."""
    base = normalised_grid(height, width, points.device, points.dtype)
    scale = torch.tensor(
        [max(width - 1, 1) / 2.0, max(height - 1, 1) / 2.0],
        device=points.device,
        dtype=points.dtype,
    )
    disp = (points - base) * scale
    return disp.transpose(1, 2).reshape(points.shape[0], 2, height, width)


def apply_affine(matrix: Tensor, points: Tensor) -> Tensor:
    """``matrix (B, 2, 3)`` applied to ``points (B, N, 2)``."""
    return points @ matrix[:, :, :2].transpose(1, 2) + matrix[:, :, 2].unsqueeze(1)


def affine_flow(matrix: Tensor, height: int, width: int) -> Tensor:
    """Backward flow of the normalised affine map ``output -> content`` given as ``(B, 2, 3)``."""
    grid = normalised_grid(height, width, matrix.device, matrix.dtype).expand(
        matrix.shape[0], -1, -1
    )
    return flow_from_sampling(apply_affine(matrix, grid), height, width)


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
    lin = torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)
    ys, xs = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1).unsqueeze(0).expand(batch, -1, -1)


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
    """``(B, 2, 3)`` random affines: rotation @ shear @ anisotropic scale, plus translation."""

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

    The output location p samples the content at ``A(T(p))``: T bends locally, A moves globally.
    """
    ranges = ranges or SyntheticWarpRanges()
    src = control_grid(ranges.tps_grid, batch)
    jitter = (torch.rand(src.shape, generator=generator) * 2 - 1) * ranges.tps_jitter
    grid = normalised_grid(height, width).expand(batch, -1, -1)
    bent = tps_points(src.contiguous(), (src + jitter).contiguous(), grid)
    sampled = apply_affine(random_affine(batch, ranges, generator), bent)
    return flow_from_sampling(sampled, height, width)


def rotation_matrix(degrees: float, scale: float = 1.0) -> Tensor:
    """``(1, 2, 3)`` normalised rotation+scale about the centre (handy for tests and demos)."""
    rad = math.radians(degrees)
    c, s = math.cos(rad) * scale, math.sin(rad) * scale
    return torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]])
