"""Feature correlations between content and geometry exemplar, and the alignment objective.

Shared by every warp estimator so that their ``warp_loss_before`` / ``warp_loss_after`` figures
are the same quantity: the paper's weak softmax loss on L2-normalised relu4_1 features.

Frames: the warp field lives in the exemplar frame (the output is the content bent into the
exemplar's shapes), so correlations are indexed by exemplar location first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.flow import resize_flow, warp_image
from lwst.vgg import VGG19Features

ANALYSIS_SIZE = 256
ALIGNMENT_TAP = "relu4_1"


def l2_normalise(features: Tensor, eps: float = 1e-6) -> Tensor:
    """Unit-length feature vector at every location of ``(B, C, H, W)``."""
    return features / features.norm(dim=1, keepdim=True).clamp_min(eps)


def analysis_view(image: Tensor, size: int = ANALYSIS_SIZE) -> Tensor:
    """Resize ``(B, 3, H, W)`` to the square analysis resolution the warp is estimated at."""
    return F.interpolate(
        image, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def normalised_features(
    vgg: VGG19Features, image: Tensor, taps: tuple[str, ...]
) -> dict[str, Tensor]:
    """L2-normalised VGG activations of ``image (B, 3, S, S)`` at the requested taps."""
    return {name: l2_normalise(feat) for name, feat in vgg(image, taps).items()}


def global_correlation(exemplar: Tensor, content: Tensor) -> Tensor:
    """Paper's global correlation, ``(B, Hc*Wc, He, We)`` from ``(B, C, H, W)`` features.

    Channel k of exemplar cell (i, j) is the correlation with content cell k (row-major),
    divided by the root of the sum of squares over content cells (docs/method.md, "Correlation").
    """
    b, c, he, we = exemplar.shape
    corr = torch.einsum("bck,bcl->bkl", content.flatten(2), exemplar.flatten(2))
    corr = corr / corr.pow(2).sum(1, keepdim=True).sqrt().clamp_min(1e-6)
    return corr.view(b, -1, he, we)


def local_correlation(target: Tensor, source: Tensor, radius: int = 4) -> Tensor:
    """``(B, (2r+1)^2, H, W)``: ``<target(p), source(p + d)>`` for every offset d in the window.

    Computed offset by offset (no unfold) so memory stays at one window-sized map per item.
    """
    _, _, height, width = target.shape
    padded = F.pad(source, (radius, radius, radius, radius))
    maps = []
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            shifted = padded[:, :, dy : dy + height, dx : dx + width]
            maps.append((target * shifted).sum(1))
    return torch.stack(maps, dim=1)


def warp_features(features: Tensor, flow: Tensor) -> Tensor:
    """Sample content features under a backward flow given at any resolution (pixels)."""
    height, width = features.shape[-2:]
    return warp_image(features, resize_flow(flow, height, width))


def softmax_alignment_loss(
    warped_content: Tensor, exemplar: Tensor, radius: int = 4, temperature: float = 0.1
) -> Tensor:
    """Paper's weak loss, per batch item: ``-mean_m log softmax_n(corr(m, m+n))[centre]``.

    After a correct warp every exemplar feature best matches the warped content feature at the
    same place. Inputs are L2-normalised ``(B, C, H, W)``; lower is better.
    """
    corr = local_correlation(exemplar, warped_content, radius) / temperature
    centre = (2 * radius + 1) ** 2 // 2
    return -(corr.log_softmax(dim=1)[:, centre]).flatten(1).mean(1)


def alignment_loss(
    vgg: VGG19Features, content: Tensor, exemplar: Tensor, flow: Tensor | None = None
) -> Tensor:
    """The shared warp objective for square analysis views, re-reading warped content features.

    ``flow`` is at the analysis resolution (pixels); ``None`` means identity.
    """
    warped = content if flow is None else warp_image(content, flow)
    feats_w = normalised_features(vgg, warped, (ALIGNMENT_TAP,))[ALIGNMENT_TAP]
    feats_e = normalised_features(vgg, exemplar, (ALIGNMENT_TAP,))[ALIGNMENT_TAP]
    return softmax_alignment_loss(feats_w, feats_e)


def alignment_loss_before_after(
    vgg: VGG19Features, content: Tensor, exemplar: Tensor, flow: Tensor
) -> tuple[Tensor, Tensor]:
    """``alignment_loss`` at identity and at ``flow`` in one VGG pass over content, warped
    content and exemplar (the exemplar's features serve both), for the metadata columns."""
    views = torch.cat([content, warp_image(content, flow), exemplar])
    feats = normalised_features(vgg, views, (ALIGNMENT_TAP,))[ALIGNMENT_TAP]
    plain, warped, target = feats.chunk(3)
    return softmax_alignment_loss(plain, target), softmax_alignment_loss(warped, target)
