"""Feature-statistics transfer for the feed-forward renderers: WCT and AdaIN (docs/method.md).

Both work on batches ``(B, C, H, W)`` of content features with one style per batch entry, and
blend with the content by ``alpha`` (``alpha * f_cs + (1 - alpha) * f_c``).

WCT needs a ``C x C`` covariance eigendecomposition per image (C up to 512). VGG's features are
large (Caffe inputs are 0..255) and their covariances ill-conditioned, so the maths runs in
float64; eigenvalues below ``EIG_REL_FLOOR`` times the largest are treated as zero (their
directions are neither whitened nor coloured). A flat image has an all-zero covariance: every
direction is then below the floor, the whitened features are zero and the result is the
style's mean, never a NaN.

Whitening adds an epsilon to the content covariance's eigenvalues (method.md; Li et al.'s code
adds the identity to it, in the feature scale of their normalised VGG). Without it, pure
whitening gives the content's weakest directions (decoder noise, the last of 16 x 16 relu5_1
samples) the same variance as its layout, and colouring turns them into texture soup: each
finer level of the cascade then *raised* relu4_1 / relu5_1 Gram errors (docs/benchmarks.md).
lwst's epsilon is a multiple of the content's mean eigenvalue (``WHITEN_RIDGE`` for a bare
`wct` call, ``LEVEL_RIDGES`` per level in the renderer's cascade), so it is scale-free: it means
the same for both VGG weight sets; directions far above it are whitened as before, those below
it are damped, never amplified.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lwst.errors import InputError

EIG_REL_FLOOR = 1e-5  # relative to the largest eigenvalue of each covariance
EIG_ABS_FLOOR = 1e-8  # below this a covariance counts as zero (flat image)
STD_EPS = 1e-5
WHITEN_RIDGE = 2.0  # epsilon of the whitening, times the content's mean eigenvalue (benchmarks.md)
# The cascade's epsilon per VGG level (relu5_1 .. relu1_1), chosen on training pairs
# (benchmarks.md): the finest level's weakest directions are pixel noise and want more damping,
# relu3_1 / relu2_1 less. Read at call time so a benchmark can sweep it.
LEVEL_RIDGES: dict[int, float] = {5: 2.0, 4: 2.0, 3: 0.25, 2: 0.25, 1: 5.0}


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"style_strength must be within 0..1, got {alpha}")
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


def _with_ridge(cov: Tensor, ridge: float) -> Tensor:
    """``cov + eps * I`` with ``eps = ridge * trace(cov) / C`` per batch entry (0 for a flat
    image, whose covariance stays all-zero)."""
    if ridge < 0:
        raise InputError(f"wct: ridge must be >= 0, got {ridge}")
    if ridge == 0:
        return cov
    eps = ridge * torch.diagonal(cov, dim1=1, dim2=2).mean(dim=1)
    eye = torch.eye(cov.shape[1], dtype=cov.dtype, device=cov.device)
    return cov + eps[:, None, None] * eye


def wct(content: Tensor, style: Tensor | list[Tensor], alpha: float = 1.0,
        ridge: float | None = None) -> Tensor:
    """Whiten ``content`` features and colour them with each style's covariance and mean.

    ``content``: ``(B, C, H, W)``; ``style``: ``(B, C, h, w)`` or a list of B ``(1, C, h_i, w_i)``
    tensors (styles may differ in size). Returns ``(B, C, H, W)`` in ``content``'s dtype.
    ``ridge``: the whitening's epsilon relative to the content's mean eigenvalue (default
    `WHITEN_RIDGE`, read at call time so a benchmark can sweep it); at 0 the
    coloured features carry exactly the style's covariance, above 0 they carry at most it
    (the content's weak directions are damped by ``lambda / (lambda + eps)``).
    """
    alpha = _check_alpha(alpha)
    batch, channels, height, width = content.shape
    styles = list(style.split(1)) if isinstance(style, Tensor) else list(style)
    if len(styles) != batch:
        raise ValueError(f"wct: {batch} content features but {len(styles)} styles")
    fc = content.reshape(batch, channels, -1).double()
    _, centred_c, cov_c = _mean_cov(fc)
    _, whiten = _sqrt_factors(_with_ridge(cov_c, WHITEN_RIDGE if ridge is None else ridge))
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
