"""GST-style parametric warps fitted to VGG feature matches (no training, no optimisation).

Geometric Style Transfer regresses an affine or thin-plate-spline warp from feature
correlations; here the same two families are fitted directly: mutual nearest neighbours of
L2-normalised VGG features give point matches (exemplar cell -> content cell), OpenCV's RANSAC
keeps the ones a single affine explains, and for ``tps`` a spline on a regular control grid
bends the affine towards the inliers. Both come out as dense backward flows, so they are a warp
mode of their own and the starting point of the optimisation estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from lwst.correlation import normalised_features
from lwst.flow import base_grid, normalised_to_pixel, pixel_to_normalised
from lwst.parametric import (
    affine_flow,
    apply_affine,
    control_grid,
    normalised_grid,
    tps_points,
)
from lwst.vgg import VGG19Features

MATCH_TAPS: tuple[str, ...] = ("relu4_1", "relu5_1")
KINDS = ("affine", "tps")
RANSAC_THRESHOLD = 0.05  # inlier distance as a fraction of the image side (~13 px at 256)
MIN_INLIERS = 8  # fewer than this: the match is not trusted and the fit falls back to identity
SCALE_RANGE = (0.2, 5.0)  # singular values of a plausible affine; outside: identity
MIN_COVERAGE = 0.4  # least fraction of the output a plausible affine samples inside the content
TPS_GRID = 5  # control points per side of the spline
TPS_PRIOR = 3.0  # pseudo-count pulling each control point towards the affine (regularisation)


@dataclass(frozen=True)
class FeatureMatches:
    """Point matches in pixels at the analysis size: exemplar ``(N, 2)`` -> content ``(N, 2)``."""

    exemplar_xy: np.ndarray
    content_xy: np.ndarray


@dataclass(frozen=True)
class AffineFit:
    """Pixel affine ``(2, 3)`` sending exemplar locations to content locations (OpenCV's form,
    `lwst.parametric`'s convention for one item), and its inliers."""

    matrix: np.ndarray
    inliers: np.ndarray  # (N,) bool over the matches
    matches: FeatureMatches
    size: int  # side of the square analysis views, pixels

    @property
    def coverage(self) -> float:
        """Fraction of the output whose sample lands inside the content (on a 32x32 lattice)."""
        lattice = base_grid(32, 32, dtype=torch.float64, span=(self.size, self.size))
        mapped = self.apply(lattice.flatten(2).mT[0].numpy())
        inside = (mapped >= -0.5) & (mapped <= self.size - 0.5)
        return float(inside.all(axis=1).mean())

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Pixel points ``(N, 2)`` (exemplar) -> where the affine sends them (content)."""
        points = torch.from_numpy(np.asarray(xy, dtype=np.float64))[None]
        return apply_affine(torch.from_numpy(self.matrix)[None], points)[0].numpy()

    def flow(self, device=None, dtype=torch.float32) -> Tensor:
        """Backward flow ``(1, 2, S, S)`` of the affine at the analysis size."""
        matrix = torch.as_tensor(self.matrix, device=device, dtype=dtype)[None]
        return affine_flow(matrix, self.size, self.size)

    @property
    def trusted(self) -> bool:
        """Enough inliers, no collapse or blow-up, most of the output inside the content: RANSAC
        on unrelated images still finds a consensus among a few chance matches (measured: a
        sailboat onto a face gave a 0.06x squash; coffee onto a portrait a 160 px shift)."""
        scales = np.linalg.svd(self.matrix[:, :2], compute_uv=False)
        plausible = SCALE_RANGE[0] <= scales.min() and scales.max() <= SCALE_RANGE[1]
        return (
            int(self.inliers.sum()) >= MIN_INLIERS and bool(plausible)
            and self.coverage >= MIN_COVERAGE
        )


def _cell_centres(height: int, width: int, stride: float) -> np.ndarray:
    """``(H*W, 2)`` pixel centres (x, y) of a feature map's cells, row-major."""
    centres = base_grid(height, width).flatten(2).mT[0].numpy()
    return (centres + 0.5) * stride - 0.5


def mutual_matches(
    content_feats: dict[str, Tensor], exemplar_feats: dict[str, Tensor], size: int
) -> FeatureMatches:
    """Mutual nearest neighbours per tap of L2-normalised ``(1, C, h, w)`` features, pooled."""
    found = []
    for tap, fe in exemplar_feats.items():
        fc = content_feats[tap]
        sim = torch.einsum("ck,cl->kl", fe[0].flatten(1), fc[0].flatten(1))  # exemplar x content
        found.append(matches_from_similarity(sim, fe.shape[-2:], size))
    return FeatureMatches(np.concatenate([f.exemplar_xy for f in found]),
                          np.concatenate([f.content_xy for f in found]))


def matches_from_similarity(sim: Tensor, grid: tuple[int, int], size: int) -> FeatureMatches:
    """Mutual nearest neighbours of an exemplar x content similarity ``(h*w, h*w)`` of one
    ``grid``-sized feature map (e.g. the warp network's all-pairs volume, reused)."""
    h, w = grid
    best_c = sim.argmax(1)
    best_e = sim.argmax(0)
    mutual = best_e[best_c] == torch.arange(h * w, device=sim.device)
    idx_e = torch.nonzero(mutual).flatten().cpu().numpy()
    idx_c = best_c[mutual].cpu().numpy()
    centres = _cell_centres(h, w, size / w)
    return FeatureMatches(centres[idx_e], centres[idx_c])


def opencv_seed(seed: int) -> int:
    """An item's seed (0..2**63-1, `lwst.config.SEED_RANGE`) as the non-negative 32-bit int
    `cv2.setRNGSeed` takes (a wider one overflows). Seeds that fit are used as they are (the
    draws of every seed below 2**31 are unchanged); wider ones go through SplitMix64's
    finaliser, so 2**31 + 1 and 1 draw unrelated streams instead of sharing their low bits."""
    if 0 <= seed <= 0x7FFFFFFF:
        return seed
    mask = (1 << 64) - 1
    z = (seed + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) & 0x7FFFFFFF


def robust_affine(matches: FeatureMatches, size: int, seed: int = 0) -> AffineFit:
    """RANSAC affine through the matches; identity with no inliers when it is not trusted."""
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    none = np.zeros(len(matches.exemplar_xy), dtype=bool)
    if len(matches.exemplar_xy) < 3:
        return AffineFit(identity, none, matches, size)
    cv2.setRNGSeed(opencv_seed(seed))  # OpenCV's RANSAC draws from its global generator
    matrix, inliers = cv2.estimateAffine2D(
        matches.exemplar_xy, matches.content_xy, method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_THRESHOLD * size, maxIters=4000, confidence=0.999,
        refineIters=20,
    )
    if matrix is None:
        return AffineFit(identity, none, matches, size)
    fit = AffineFit(matrix.astype(np.float64), inliers.ravel().astype(bool), matches, size)
    return fit if fit.trusted else AffineFit(identity, none, matches, size)


def tps_from_fit(fit: AffineFit, size: int, device=None, dtype=torch.float32) -> Tensor:
    """Regularised TPS flow ``(1, 2, S, S)``: the affine composed with a spline on a regular
    control grid, each control point moved by the inliers' mean residual near it, shrunk by a
    pseudo-count so that sparsely supported points stay affine (GST's grid parametrisation,
    fitted rather than regressed). The spline bends before the affine, as in
    ``random_warp_flow``: kornia's TPS is only well behaved for near-identity point moves."""
    if not fit.trusted:
        return fit.flow(device, dtype)
    src_norm = control_grid(TPS_GRID, dtype=torch.float64)  # (1, K, 2) in [-1, 1]
    src_px = normalised_to_pixel(src_norm, size, size)[0].numpy()
    exemplar_xy = fit.matches.exemplar_xy[fit.inliers].astype(np.float64)
    residual = fit.matches.content_xy[fit.inliers] - fit.apply(exemplar_xy)
    spacing = (size - 1) / (TPS_GRID - 1)
    # Bilinear ("tent") weights of every inlier on every control point.
    dist = np.abs(exemplar_xy[:, None, :] - src_px[None, :, :]) / spacing
    weight = np.clip(1.0 - dist, 0.0, None).prod(axis=2)  # (N, K)
    shift = (weight.T @ residual) / (weight.sum(0)[:, None] + TPS_PRIOR)  # content pixels
    before = torch.from_numpy(shift @ np.linalg.inv(fit.matrix[:, :2]).T)  # before the affine
    src = src_norm.to(device)
    dst = src + pixel_to_normalised(before, size, size, displacement=True).to(device)[None]
    bent = tps_points(src, dst, normalised_grid(size, size, device, torch.float64))
    matrix = torch.as_tensor(fit.matrix, dtype=torch.float64, device=device)[None]
    sampled = apply_affine(matrix, normalised_to_pixel(bent, size, size))  # content pixels
    grid = base_grid(size, size, device, torch.float64).flatten(2).mT
    return (sampled - grid).mT.reshape(1, 2, size, size).to(dtype)


def fit_from_features(
    content_feats: dict[str, Tensor],
    exemplar_feats: dict[str, Tensor],
    size: int,
    kind: str = "affine",
    seed: int = 0,
) -> Tensor:
    """Parametric flow from already extracted L2-normalised features (shared with ``optim``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    some = next(iter(content_feats.values()))
    fit = robust_affine(mutual_matches(content_feats, exemplar_feats, size), size, seed)
    if kind == "affine":
        return fit.flow(some.device, some.dtype)
    return tps_from_fit(fit, size, some.device, some.dtype)


@torch.no_grad()
def fit_parametric_warp(
    content: Tensor, exemplar: Tensor, vgg: VGG19Features, kind: str = "affine", seed: int = 0
) -> Tensor:
    """Backward flow ``(1, 2, S, S)`` warping square ``content (1, 3, S, S)`` onto ``exemplar``."""
    size = content.shape[-1]
    # Matched in float32 whatever precision VGG ran in: near-ties decide mutual neighbours.
    content_feats, exemplar_feats = (
        {t: f.float() for t, f in normalised_features(vgg, image, MATCH_TAPS).items()}
        for image in (content, exemplar)
    )
    return fit_from_features(content_feats, exemplar_feats, size, kind, seed).to(content.dtype)
