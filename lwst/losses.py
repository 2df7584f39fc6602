"""Gatys losses (content, Gram style) and the shared style yardstick `gram_distance`.

Conventions (docs/method.md, "Texture rendering"):

- Gram matrix of a ``(B, C, H, W)`` activation: ``G = F F^T / (C * H * W)`` ("normalised by
  the feature size", as in neural-style / neural-style-pt), so it does not grow with the image.
- Style loss of one layer: mean squared difference of the two Gram matrices (``C x C``
  entries); the style loss is the sum over ``STYLE_LAYERS`` (relu1_1 .. relu5_1).
- Content loss: mean squared difference of relu4_2 activations.

`gram_distance` is *not* a training loss: it is the one number every benchmark uses to say how
close an image's texture is to an exemplar, whatever produced the image (lwst, pastiche, WCT,
...). It is relative and scale-free: per style layer ``||G(image) - G(exemplar)||_F^2 /
||G(exemplar)||_F^2``, averaged over the five layers (0 = identical Gram statistics; the
original content photo is typically around 1 or more).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.image_io import resize_longest
from lwst.vgg import CONTENT_LAYER, STYLE_LAYERS, VGG19Features


def gram_matrix(features: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, C)``, normalised by ``C * H * W``."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / float(c * h * w)


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference of (relu4_2) activations."""
    return F.mse_loss(features, target)


def style_loss(
    features: Mapping[str, Tensor],
    target_grams: Mapping[str, Tensor],
    layers: Iterable[str] = STYLE_LAYERS,
    layer_weights: Sequence[float] | None = None,
) -> Tensor:
    """Sum over ``layers`` of the mean squared Gram difference (targets precomputed)."""
    total: Tensor | None = None
    for i, name in enumerate(layers):
        weight = 1.0 if layer_weights is None else layer_weights[i]
        term = weight * F.mse_loss(gram_matrix(features[name]), target_grams[name])
        total = term if total is None else total + term
    if total is None:
        raise ValueError("style_loss needs at least one layer")
    return total


@torch.no_grad()
def style_targets(
    vgg: VGG19Features, exemplar: Tensor, layers: Iterable[str] = STYLE_LAYERS
) -> dict[str, Tensor]:
    """Gram matrices of the exemplar at ``layers`` (no gradient)."""
    layers = list(layers)
    feats = vgg(exemplar, layers)
    return {name: gram_matrix(feats[name]).detach() for name in layers}


@torch.no_grad()
def content_target(vgg: VGG19Features, content: Tensor, layer: str = CONTENT_LAYER) -> Tensor:
    return vgg(content, [layer])[layer].detach()


@torch.no_grad()
def gram_distance(
    vgg: VGG19Features,
    image: Tensor,
    exemplar: Tensor,
    layers: Iterable[str] = STYLE_LAYERS,
) -> float:
    """How far ``image``'s texture statistics are from ``exemplar``'s (lower is closer).

    Both are ``(1, 3, H, W)`` RGB in [0, 1] (any sizes). The exemplar is first resized
    (antialiased, aspect kept) so that its longest side equals the image's, so two images of
    the same size are always compared against the very same exemplar tensor. Returns the mean
    over ``layers`` of ``||G(image) - G(exemplar)||^2 / ||G(exemplar)||^2``.
    """
    layers = list(layers)
    dtype = vgg.mean.dtype
    device = vgg.mean.device
    image = image.to(device=device, dtype=dtype).clamp(0.0, 1.0)
    exemplar = resize_longest(exemplar.to(device=device, dtype=dtype), max(image.shape[-2:]))
    exemplar = exemplar.clamp(0.0, 1.0)
    got = vgg(image, layers)
    want = vgg(exemplar, layers)
    total = 0.0
    for name in layers:
        g_img = gram_matrix(got[name].double())
        g_ex = gram_matrix(want[name].double())
        total += float(((g_img - g_ex) ** 2).sum() / (g_ex**2).sum().clamp_min(1e-30))
    return total / len(layers)


@torch.no_grad()
def content_distance(vgg: VGG19Features, image: Tensor, content: Tensor) -> float:
    """Relative relu4_2 distance ``||F(image) - F(content)||^2 / ||F(content)||^2`` (same size)."""
    dtype = vgg.mean.dtype
    device = vgg.mean.device
    image = image.to(device=device, dtype=dtype).clamp(0.0, 1.0)
    content = content.to(device=device, dtype=dtype).clamp(0.0, 1.0)
    if content.shape[-2:] != image.shape[-2:]:
        content = F.interpolate(content, size=image.shape[-2:], mode="bilinear",
                                align_corners=False, antialias=True)
    a = vgg(image, [CONTENT_LAYER])[CONTENT_LAYER].double()
    b = vgg(content, [CONTENT_LAYER])[CONTENT_LAYER].double()
    return float(((a - b) ** 2).sum() / (b**2).sum().clamp_min(1e-30))
