"""The Gatys objective (`GatysObjective`, what the renderer minimises) and the shared style
yardsticks `gram_distance` / `content_distance`.

Conventions (docs/method.md, "Texture rendering"):

- Gram matrix of a ``(B, C, H, W)`` activation: ``G = F F^T / (C * H * W)`` ("normalised by
  the feature size", as in neural-style / neural-style-pt), so it does not grow with the image.
- Style loss of one layer: mean squared difference of the two Gram matrices (``C x C``
  entries); the style loss is the sum over ``STYLE_LAYERS`` (relu1_1 .. relu5_1).
- Content loss: mean squared difference of relu4_2 activations.
- In the objective each is divided by the mean square of its target, so the objective's
  content loss equals `content_distance` and its style loss is five times `gram_distance`
  (same-size exemplar), up to float precision.

`gram_distance` is *not* a training loss: it is the one number every benchmark uses to say how
close an image's texture is to an exemplar, whatever produced the image (lwst, pastiche, WCT,
...). It is relative and scale-free: per style layer ``||G(image) - G(exemplar)||_F^2 /
||G(exemplar)||_F^2``, averaged over the five layers (0 = identical Gram statistics; the
original content photo is typically around 1 or more).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class StyleTargets:
    """An exemplar's Gram matrices at `STYLE_LAYERS` and their mean squares: what the objective
    needs of it, computed once and shared by every image measured against that exemplar (a
    dataset reuses few styles)."""

    grams: dict[str, Tensor]
    norms: dict[str, float]

    @classmethod
    def of_grams(cls, grams: dict[str, Tensor]) -> StyleTargets:
        return cls(grams, {k: float(g.pow(2).mean().clamp_min(1e-12)) for k, g in grams.items()})


def style_targets(vgg: VGG19Features, exemplar: Tensor) -> StyleTargets:
    """`StyleTargets` of an ``(1, 3|1, H, W)`` exemplar, at the size given."""
    with torch.no_grad():
        sfeat = vgg(as_rgb(exemplar), STYLE_LAYERS)
        grams = {k: gram_matrix(sfeat[k]).detach() for k in STYLE_LAYERS}
    return StyleTargets.of_grams(grams)


class GatysObjective:
    """The Gatys objective the renderer minimises (method.md): ``content_weight * C + style_weight
    * S``, each term divided by the squared norm of its own target.

    ``C`` = mean squared relu4_2 difference to ``content``; ``S`` = sum over `STYLE_LAYERS` of
    the mean squared Gram difference to ``exemplar``. Dividing by the targets' norms makes the
    weights mean the same thing for every exemplar, every pyramid level and both VGG weight sets
    (Caffe inputs are 0..255, torchvision's are standardised: absolute losses differ by orders
    of magnitude). Images are ``(1, 3, H, W)`` or, for luminance-only transfer, ``(1, 1, H, W)``
    (VGG sees the grey channel as RGB). The targets are computed once, without gradient.
    """

    def __init__(self, vgg: VGG19Features, content: Tensor, exemplar: Tensor | StyleTargets,
                 content_weight: float = 1.0, style_weight: float = 1.0,
                 autocast: torch.dtype | None = None):
        self.vgg = vgg
        # The VGG pass over the optimised image under this autocast dtype (bfloat16 where it is
        # native: ~1.9x faster per evaluation, the same figures; docs/benchmarks.md, "gatys in
        # bfloat16"); its features, the targets, the Grams and the losses stay in the
        # VGG's own dtype, so only the convolutions are rounded.
        self.autocast = autocast
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.taps = list(STYLE_LAYERS) + [CONTENT_LAYER]
        with torch.no_grad():
            self.content_target = vgg(as_rgb(content), [CONTENT_LAYER])[CONTENT_LAYER].detach()
            self.content_norm = float(self.content_target.pow(2).mean().clamp_min(1e-12))
        self.targets = (exemplar if isinstance(exemplar, StyleTargets)
                        else style_targets(vgg, exemplar))

    def __call__(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(content loss, style loss, weighted total) of ``image``, differentiable."""
        if self.autocast is None:
            features = self.vgg(as_rgb(image), self.taps)
        else:
            with torch.autocast(image.device.type, dtype=self.autocast):
                features = self.vgg(as_rgb(image), self.taps)
            features = {k: v.to(self.content_target.dtype) for k, v in features.items()}
        c, s = objective_terms(features, self.content_target, self.targets, self.content_norm)
        total = self.content_weight * c + self.style_weight * s
        return c, s, total


def objective_terms(features: dict[str, Tensor], content_target: Tensor, targets: StyleTargets,
                    content_norm: float | None = None) -> tuple[Tensor, Tensor]:
    """The objective's (content, style) terms of one image's features at `STYLE_LAYERS` and
    `CONTENT_LAYER`; shared by the optimiser and the yardstick so both mean the same.
    ``content_norm``: the target's mean square, when the caller already has it."""
    if content_norm is None:
        content_norm = float(content_target.pow(2).mean().clamp_min(1e-12))
    c = F.mse_loss(features[CONTENT_LAYER], content_target) / content_norm
    s = content_target.new_zeros(())
    for k in STYLE_LAYERS:
        s = s + F.mse_loss(gram_matrix(features[k]), targets.grams[k]) / targets.norms[k]
    return c, s


def as_rgb(images: Tensor) -> Tensor:
    """``(B, 1, H, W)`` grey -> ``(B, 3, H, W)`` (a view); RGB as it is."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


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
