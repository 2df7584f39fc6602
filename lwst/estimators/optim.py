"""Per-pair optimisation warp estimator: no training, a smooth dense field fitted by Adam.

The field is a robust global affine (feature matches + RANSAC, ``parametric_fit``) plus a
coarse ``G x G`` grid of pixel displacements upsampled bilinearly. Adam minimises the paper's
weak softmax loss between the warped content features and the exemplar features, summed over
VGG taps coarse to fine (relu5_1's 16x16 cells see far, relu3_1's 64x64 cells place edges),
plus a smoothness term on the grid. The content features are extracted once and warped, as the
paper's network warps ``Fc``; re-running VGG on the warped image every step would cost ~1 s.
The global initialisation is what makes large moves (50 px, 15 degrees, 0.75x) recoverable:
the local objective alone only sees a few cells around the current estimate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.config import WarpConfig
from lwst.correlation import (
    NORM_EPS,
    normalised_features,
    softmax_alignment_loss,
    warp_features,
)
from lwst.estimators.parametric_fit import MATCH_TAPS, fit_from_features
from lwst.vgg import VGG19Features

# (tap, weight, search radius in cells, fraction of the steps after which the tap joins).
SCHEDULE: tuple[tuple[str, float, int, float], ...] = (
    ("relu5_1", 1.0, 4, 0.0),
    ("relu4_1", 1.0, 4, 0.0),
    ("relu3_1", 1.0, 2, 0.5),
)
PCA_DIMS = 64  # channels kept per tap: the 81-offset correlation dominates the cost
INIT_KIND = "affine"  # parametric fit the dense field starts from
LEARNING_RATE = 1.0  # pixels per Adam step at the start; cosine-decayed to 10%


def smoothness(grid: Tensor, spacing: float) -> Tensor:
    """Mean squared displacement gradient of a ``(1, 2, G, G)`` pixel grid (dimensionless)."""
    dx = (grid[..., :, 1:] - grid[..., :, :-1]) / spacing
    dy = (grid[..., 1:, :] - grid[..., :-1, :]) / spacing
    return dx.pow(2).mean() + dy.pow(2).mean()


def upsample_grid(grid: Tensor, size: int) -> Tensor:
    """Displacements ``(1, 2, G, G)`` at control points spanning the image -> ``(1, 2, S, S)``."""
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)


def project_pair(content: Tensor, exemplar: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """Both ``(1, C, h, w)`` feature maps on their joint top-``dims`` principal axes, centred and
    re-normalised: the correlations keep what distinguishes cells at a fraction of the cost."""
    c = content.shape[1]
    if dims >= c:
        return content, exemplar
    samples = torch.cat([content.flatten(2)[0], exemplar.flatten(2)[0]], dim=1).t()  # (N, C)
    mean = samples.mean(0)
    centred = samples - mean
    _, vectors = torch.linalg.eigh(centred.t() @ centred)  # ascending eigenvalues
    basis = vectors[:, -dims:]

    def project(features: Tensor) -> Tensor:
        flat = features.flatten(2)[0].t() - mean
        projected = (flat @ basis).t().reshape(1, dims, *features.shape[-2:])
        return F.normalize(projected, dim=1, eps=NORM_EPS)

    return project(content), project(exemplar)


def feature_objective(
    content_feats: dict[str, Tensor], exemplar_feats: dict[str, Tensor], flow: Tensor,
    taps: tuple[tuple[str, float, int], ...],
) -> Tensor:
    """Weighted sum over ``(tap, weight, radius)`` of the softmax alignment loss of the warped
    content features against the exemplar's."""
    total = flow.new_zeros(())
    for tap, weight, radius in taps:
        warped = warp_features(content_feats[tap], flow)
        total = total + weight * softmax_alignment_loss(warped, exemplar_feats[tap], radius).mean()
    return total


def optimise_warp(
    content: Tensor, exemplar: Tensor, vgg: VGG19Features, config: WarpConfig, seed: int = 0
) -> Tensor:
    """Backward flow ``(1, 2, S, S)`` in pixels warping square ``content (1, 3, S, S)`` onto
    ``exemplar``'s shapes; ``config.optim_steps`` Adam steps on ``config.optim_grid`` control
    points per side with ``config.optim_smoothness`` weighting the smoothness term. ``seed`` fixes
    RANSAC's draws; everything else is deterministic.

    Works under the caller's ``torch.no_grad()`` / ``torch.inference_mode()``: Adam needs
    gradients, so the fit runs with them re-enabled and outside inference mode (the features it
    fits are computed there, so none is an inference tensor)."""
    with torch.inference_mode(False), torch.enable_grad():
        return _optimise_warp(content, exemplar, vgg, config, seed)


def _optimise_warp(
    content: Tensor, exemplar: Tensor, vgg: VGG19Features, config: WarpConfig, seed: int
) -> Tensor:
    """`optimise_warp`'s work, with gradients enabled and outside inference mode."""
    size = content.shape[-1]
    taps = tuple(dict.fromkeys(MATCH_TAPS + tuple(t for t, *_ in SCHEDULE)))
    with torch.no_grad():
        # float32 whatever the network runs in: eigh and Adam want it, and the maps are small.
        content_feats = {t: f.float() for t, f in normalised_features(vgg, content, taps).items()}
        exemplar_feats = {t: f.float() for t, f in normalised_features(vgg, exemplar, taps).items()}
        start = fit_from_features(
            {t: content_feats[t] for t in MATCH_TAPS},
            {t: exemplar_feats[t] for t in MATCH_TAPS}, size, INIT_KIND, seed,
        )
        for tap in taps:
            content_feats[tap], exemplar_feats[tap] = project_pair(
                content_feats[tap], exemplar_feats[tap], PCA_DIMS
            )
        every_tap = tuple((t, w, r) for t, w, r, _ in SCHEDULE)
        identity = torch.zeros_like(start)
        at_identity = feature_objective(content_feats, exemplar_feats, identity, every_tap)
        if at_identity < feature_objective(content_feats, exemplar_feats, start, every_tap):
            start = identity  # the matches were misleading: start from no warp
    steps = max(int(config.optim_steps), 0)
    grid_n = max(int(config.optim_grid), 2)
    spacing = (size - 1) / (grid_n - 1)
    grid = torch.zeros(1, 2, grid_n, grid_n, device=start.device, dtype=start.dtype)
    grid.requires_grad_(True)
    optimiser = torch.optim.Adam([grid], lr=LEARNING_RATE)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=max(steps, 1), eta_min=0.1 * LEARNING_RATE
    )
    for step in range(steps):
        active = tuple((t, w, r) for t, w, r, joins in SCHEDULE if step >= joins * steps)
        flow = start + upsample_grid(grid, size)
        loss = feature_objective(content_feats, exemplar_feats, flow, active)
        loss = loss + config.optim_smoothness * smoothness(grid, spacing)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        decay.step()
    return (start + upsample_grid(grid, size)).detach().to(content.dtype)
