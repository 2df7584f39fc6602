"""Fold-free warp fields and their safety figures (docs/method.md, "Warp safety").

The warped image samples the content at ``m(x) = x + u(x)``. Where ``det(I + grad u) <= 0`` the
map folds over (content mirrored or smeared into streaks); a local area change beyond
``STRETCH`` either way is a stretch. A field is fold-free by construction when it is the
exponential of a smooth stationary velocity field, computed by scaling and squaring.

The warp network was trained to output displacements, not velocities, and ``exp(u) != u``
(for an affine ``u = A x`` it is ``(e^A - I) x``), so ``make_fold_free`` first fits the
velocity whose exponential best reproduces the estimate (a fixed-point "logarithm", as
displacement-to-velocity conversions in registration toolkits do), then exponentiates it:
where the estimate is a diffeomorphism already it is kept almost exactly; where it folds, the
result is the nearest field that does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.flow import hole_mask, resize_flow, sampling_grid
from lwst.parametric import affine_part, compose_affine, identity_affine, invert_affine

STRETCH = 4.0  # a local area change beyond this factor either way counts as a stretch
MIN_AREA_CHANGE = 1e-3  # determinants are clamped here before their log (`area_spread`)
SQUARINGS = 7  # scaling and squaring steps: the velocity is divided by 2^7 = 128
LOG_ITERS = 0  # fixed-point log iterations: 0 measured best (more diverge where a field folds)
# ``fitted`` fields (docs/benchmarks.md, "Fold-free repairs"): Adam steps, control grid, step
# size (px) and smoothness weight of the velocity fit; measured on the real and seed 2 pairs.
FIT_STEPS = 50
FIT_GRID = 48
FIT_LR = 0.5
FIT_SMOOTHNESS = 1.0
FIT_MIN_DET = 0.2  # only where the estimate neither folds nor nearly folds is it a target
# The factored-out affine (`lwst.parametric.affine_part`): reweighting rounds, Cauchy scale (px),
# fitted on a 64x64 subsample of the field; kept only if its determinant is clearly positive.
AFFINE_ITERS = 5
AFFINE_SCALE = 4.0
AFFINE_GRID = 64
AFFINE_MIN_DET = 0.05


def jacobian_determinant(flow: Tensor) -> Tensor:
    """``det(I + grad u)`` ``(B, 1, H, W)`` of a backward flow ``(B, 2, H, W)`` in pixels,
    by central differences (one-sided at the borders)."""
    flow = flow.float()
    du_dy, du_dx = torch.gradient(flow[:, 0], dim=(1, 2))
    dv_dy, dv_dx = torch.gradient(flow[:, 1], dim=(1, 2))
    return ((1 + du_dx) * (1 + dv_dy) - du_dy * dv_dx).unsqueeze(1)


@dataclass(frozen=True)
class FieldSafety:
    """Share of pixels that fold (det <= 0) and that stretch (0 < det outside [1/4, 4])."""

    fold_frac: float
    stretch_frac: float


def field_safety(flow: Tensor) -> list[FieldSafety]:
    """Fold and stretch shares per item of ``flow (B, 2, H, W)``."""
    det = jacobian_determinant(flow).flatten(1)
    folds = (det <= 0).float().mean(1)
    stretch = ((det > 0) & ((det > STRETCH) | (det < 1 / STRETCH))).float().mean(1)
    return [FieldSafety(float(f), float(s)) for f, s in zip(folds, stretch, strict=True)]


def area_spread(flow: Tensor) -> Tensor:
    """Per item ``(B,)``: the standard deviation of ``log det(I + grad u)`` over the pixels whose
    sample ``x + u(x)`` lies inside the image (determinants clamped at `MIN_AREA_CHANGE`).

    Why: a field that melts the content (streaks, swirls: docs/pairs' alps and skyline drawing)
    grows some regions and shrinks their neighbours, so the local area change varies wildly; a
    correct warp, however large, changes area smoothly (0.11-0.53 on the synthetic benchmark
    pairs, 0.29-0.40 on the real pairs that look right, 0.61-0.76 on melted ones:
    docs/benchmarks.md, "Melted fields"). Pixels that sample outside the image are holes the
    inpainting fills (`lwst.flow.hole_mask`, the inpainting's own definition); their
    extrapolated field says nothing about the content. Measured on the
    256x256 analysis field (`lwst.warping.estimate_warps`), not at output resolution.
    """
    flow = flow.float()
    inside = ~hole_mask(flow)
    variance = masked_variance(torch.log(jacobian_determinant(flow).clamp(min=MIN_AREA_CHANGE)),
                               inside)
    return torch.where(inside.flatten(1).sum(1) >= 2, variance.sqrt(), torch.zeros_like(variance))


def masked_variance(values: Tensor, mask: Tensor) -> Tensor:
    """Per item ``(B,)``: the sample variance of ``values (B, 1, H, W)`` where ``mask`` (same
    shape, bool) is True; shared by `area_spread` and its differentiable training twin
    (`lwst.warpnet.train.melt_loss`), so both read the same pixels the same way."""
    values, weights = values.flatten(1), mask.flatten(1).to(values.dtype)
    count = weights.sum(1).clamp(min=2)
    mean = (values * weights).sum(1) / count
    return ((values - mean[:, None]) ** 2 * weights).sum(1) / (count - 1)


def compose(a: Tensor, b: Tensor) -> Tensor:
    """Backward fields: ``(a o b)(x) = b(x) + a(x + b(x))``, ``a`` sampled bilinearly (border
    values continue outside the image, so a field that points outwards keeps pointing there)."""
    sampled = F.grid_sample(a, sampling_grid(b), mode="bilinear", padding_mode="border",
                            align_corners=True)
    return b + sampled


def exp_field(velocity: Tensor, squarings: int = SQUARINGS) -> Tensor:
    """``exp(v)`` by scaling and squaring: ``v / 2^N`` composed with itself N times."""
    field = velocity / 2**squarings
    for _ in range(squarings):
        field = compose(field, field)
    return field


def log_field(flow: Tensor, iters: int = LOG_ITERS, squarings: int = SQUARINGS) -> Tensor:
    """A velocity ``v`` with ``exp(v) ~ flow``: ``v <- v + (flow - exp(v))`` from ``v = flow``.

    Converges where ``flow`` is a diffeomorphism of moderate distortion; where it folds no
    velocity reproduces it and the iteration only moves ``v`` towards the closest one it can.
    """
    velocity = flow
    for _ in range(iters):
        velocity = velocity + (flow - exp_field(velocity, squarings))
    return velocity


def fit_velocity(residual: Tensor, determinant: Tensor, steps: int = FIT_STEPS,
                 grid: int = FIT_GRID, squarings: int = SQUARINGS) -> Tensor:
    """A smooth velocity ``(B, 2, H, W)`` whose exponential reproduces ``residual`` where the
    estimate's Jacobian ``determinant (B, 1, H, W)``, averaged over a control cell, exceeds
    `FIT_MIN_DET`; fitted by Adam on a ``grid`` x ``grid`` control grid from ``v = residual``
    (the plain step's velocity).

    Why: ``exp(r) != r``, so the plain step bends a large correct residual; the fixed-point
    logarithm that would undo this diverges where the estimate folds. Fitting only where it
    does not fold, with a smoothness term filling the rest, keeps the estimate's intent there.
    Items are independent (the loss is a sum of per-item means), so a batch fits as its items.
    """
    h, w = residual.shape[-2:]
    with torch.inference_mode(False), torch.enable_grad():
        target = resize_flow(residual.detach().float(), grid, grid).clone()
        cells = F.interpolate(determinant.detach().float(), size=(grid, grid), mode="area")
        mask = (cells > FIT_MIN_DET).float()
        velocity = target.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([velocity], lr=FIT_LR)
        for _ in range(steps):
            error = (exp_field(velocity, squarings) - target).pow(2).sum(1, keepdim=True)
            dx = velocity[..., :, 1:] - velocity[..., :, :-1]
            dy = velocity[..., 1:, :] - velocity[..., :-1, :]
            loss = ((error * mask).mean(dim=(1, 2, 3)) + FIT_SMOOTHNESS * (
                dx.pow(2).mean(dim=(1, 2, 3)) + dy.pow(2).mean(dim=(1, 2, 3)))).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        return resize_flow(velocity.detach(), h, w)


def make_fold_free(flow: Tensor, iters: int = LOG_ITERS, squarings: int = SQUARINGS,
                   fit_steps: int = 0) -> Tensor:
    """The diffeomorphic field nearest ``flow (B, 2, H, W)`` (pixels).

    The estimate's robust affine part ``A`` (`affine_part`; fold-free when its determinant is
    positive, and exact outside the image; the identity when it is not clearly positive) is
    factored out: ``x + u(x) = A(x + r(x))``; the residual ``r``
    is small where the estimate is good, so its logarithm converges and scaling and squaring
    reproduces it closely; the result is ``A(x + exp(log r)(x)) - x``. With ``fit_steps`` the
    velocity is instead fitted (`fit_velocity`) where the estimate does not fold.
    """
    work = flow.float()
    affine = affine_part(work, iters=AFFINE_ITERS, scale=AFFINE_SCALE, grid=AFFINE_GRID)
    kept = torch.linalg.det(affine[:, :, :2]) > AFFINE_MIN_DET
    affine = torch.where(kept.view(-1, 1, 1), affine,
                         identity_affine(len(affine), affine.device, affine.dtype))
    residual = compose_affine(invert_affine(affine), work)
    if fit_steps > 0:
        velocity = fit_velocity(residual, jacobian_determinant(work), fit_steps,
                                squarings=squarings)
    else:
        velocity = log_field(residual, iters, squarings)
    return compose_affine(affine, exp_field(velocity, squarings)).to(flow.dtype)


def fold_free(flow: Tensor, field: str) -> Tensor:
    """``flow`` as the ``warp_field`` setting applies it: ``raw`` unchanged, ``diffeo`` by the
    plain step, ``fitted`` with the velocity fitted (`make_fold_free`)."""
    if field == "raw":
        return flow
    return make_fold_free(flow, fit_steps=FIT_STEPS if field == "fitted" else 0)


def scaled_field(flow: Tensor, strength: float, field: str) -> Tensor:
    """``flow`` at ``warp_strength``: scaled, then made fold-free again by ``field``'s rule,
    since a scaled diffeomorphism need not be one (the product's and the benchmarks' one rule)."""
    if strength == 1.0:
        return flow
    return fold_free(flow * strength, field)
