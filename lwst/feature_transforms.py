"""Feature-statistics transfer for the feed-forward renderers: WCT and AdaIN (docs/method.md).

Both work on batches ``(B, C, H, W)`` of content features with one style per batch entry, and
blend with the content by ``alpha`` (``alpha * f_cs + (1 - alpha) * f_c``).

WCT needs a ``C x C`` covariance eigendecomposition per image (C up to 512). VGG's features are
large (Caffe inputs are 0..255) and their covariances ill-conditioned, so the maths runs in
float64; eigenvalues below ``EIG_REL_FLOOR`` times the largest are treated as zero (their
directions are neither whitened nor coloured). A flat image has an all-zero covariance: every
direction is then below the floor, the whitened features are zero and the result is the
style's mean, never a NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

EIG_REL_FLOOR = 1e-5  # relative to the largest eigenvalue of each covariance
EIG_ABS_FLOOR = 1e-8  # below this a covariance counts as zero (flat image)
STD_EPS = 1e-5


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"style_strength must be within 0..1, got {alpha}")
    return alpha


def _mean_cov(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, C, N) float64 -> mean (B, C, 1), centred features, covariance (B, C, C)."""
    mean = features.mean(dim=2, keepdim=True)
    centred = features - mean
    n = max(features.shape[2] - 1, 1)
    return mean, centred, centred @ centred.transpose(1, 2) / n


def _sqrt_factors(cov: Tensor) -> tuple[Tensor, Tensor]:
    """``cov^(1/2)`` and ``cov^(-1/2)`` restricted to the eigenvalues above the floor."""
    eigvals, eigvecs = torch.linalg.eigh(cov)
    floor = torch.clamp(eigvals.amax(dim=1, keepdim=True) * EIG_REL_FLOOR, min=EIG_ABS_FLOOR)
    keep = eigvals > floor
    safe = torch.where(keep, eigvals, torch.ones_like(eigvals))
    root = torch.where(keep, safe.sqrt(), torch.zeros_like(safe))
    inv_root = torch.where(keep, safe.rsqrt(), torch.zeros_like(safe))
    sqrt_m = eigvecs @ torch.diag_embed(root) @ eigvecs.transpose(1, 2)
    inv_sqrt_m = eigvecs @ torch.diag_embed(inv_root) @ eigvecs.transpose(1, 2)
    return sqrt_m, inv_sqrt_m


def wct(content: Tensor, style: Tensor | list[Tensor], alpha: float = 1.0) -> Tensor:
    """Whiten ``content`` features and colour them with each style's covariance and mean.

    ``content``: ``(B, C, H, W)``; ``style``: ``(B, C, h, w)`` or a list of B ``(1, C, h_i, w_i)``
    tensors (styles may differ in size). Returns ``(B, C, H, W)`` in ``content``'s dtype.
    """
    alpha = _check_alpha(alpha)
    batch, channels, height, width = content.shape
    styles = list(style.split(1)) if isinstance(style, Tensor) else list(style)
    if len(styles) != batch:
        raise ValueError(f"wct: {batch} content features but {len(styles)} styles")
    fc = content.reshape(batch, channels, -1).double()
    _, centred_c, cov_c = _mean_cov(fc)
    _, whiten = _sqrt_factors(cov_c)
    mean_s, cov_s = [], []
    for s in styles:
        m, _, c = _mean_cov(s.reshape(1, channels, -1).double())
        mean_s.append(m)
        cov_s.append(c)
    colour, _ = _sqrt_factors(torch.cat(cov_s))
    coloured = colour @ (whiten @ centred_c) + torch.cat(mean_s)
    blended = alpha * coloured + (1.0 - alpha) * fc
    return blended.reshape(batch, channels, height, width).to(content.dtype)


def mean_std(features: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation, ``(B, C, 1, 1)`` each."""
    flat = features.reshape(*features.shape[:2], -1)
    mean = flat.mean(dim=2)
    std = (flat.var(dim=2, unbiased=False) + STD_EPS).sqrt()
    return mean[..., None, None], std[..., None, None]


def adain(content: Tensor, style: Tensor | list[Tensor], alpha: float = 1.0) -> Tensor:
    """``sigma(s) * (f_c - mu(c)) / sigma(c) + mu(s)`` per channel, blended by ``alpha``."""
    alpha = _check_alpha(alpha)
    styles = list(style.split(1)) if isinstance(style, Tensor) else list(style)
    if len(styles) != content.shape[0]:
        raise ValueError(f"adain: {content.shape[0]} content features but {len(styles)} styles")
    mean_c, std_c = mean_std(content.float())
    stats = [mean_std(s.float()) for s in styles]
    mean_s = torch.cat([m for m, _ in stats])
    std_s = torch.cat([s for _, s in stats])
    target = (content.float() - mean_c) / std_c * std_s + mean_s
    return (alpha * target + (1.0 - alpha) * content.float()).to(content.dtype)
