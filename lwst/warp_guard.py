"""Per-item warp confidence and the fallback policy (issue 11; docs/method.md, "Warp safety").

The learned warp sometimes tears a content apart instead of bending it (few, repeated or
differently arranged features). In a run of thousands of items nobody looks at every one, so
each estimate gets a confidence in [0, 1] from what the estimator saw, and below
``min_confidence`` the item gets a safer warp: the matched affine or a damped field. Every step
is recorded (``warp_confidence``, ``warp_applied``) so failures can be found afterwards.

Signals (all from the two 256x256 views and the field, no ground truth):
- **alignment gain**: mean cosine of L2-normalised relu4_1 features between the warped content
  and the exemplar, minus the same unwarped: a warp that does not make the content's features
  sit where the exemplar's are has not found the correspondence;
- **raw fold share**: the share of the estimator's own field (before it is made fold-free) with
  ``det <= 0``: tearing shows up as folds;
- **hypothesis disagreement** (learned network): the two starts of the vote (the network's own
  global match and the matched affine) refined to different fields that the vote could hardly
  tell apart, i.e. the evidence is ambiguous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lwst.correlation import ALIGNMENT_TAP, normalised_features, softmax_alignment_loss
from lwst.flow import warp_image
from lwst.vgg import VGG19Features

# Confidence = gain term x fold term x ambiguity term, each in [0, 1] (model card, "Warp
# safety"). Scales set once by hand from the ranges the signals take on real pairs (not fitted):
# a gain of GAIN_SCALE (cosine) is a clear alignment; FOLD_SCALE of raw folds is a torn field;
# two refined starts AMBIGUOUS_PX apart whose agreement differs by < AMBIGUOUS_COS are an
# ambiguous match.
GAIN_SCALE = 0.06
FOLD_SCALE = 0.25
AMBIGUOUS_PX = 16.0
AMBIGUOUS_COS = 0.01
DAMP = 0.5  # the damped fallback's share of the field


@dataclass(frozen=True)
class AlignmentFigures:
    """What one VGG pass over content, warped content and exemplar tells about a warp."""

    loss_before: float  # the shared weak softmax objective (lwst.correlation), identity
    loss_after: float  # ... under the flow
    cos_before: float  # mean relu4_1 cosine, content vs exemplar
    cos_after: float  # ... warped content vs exemplar

    @property
    def gain(self) -> float:
        return self.cos_after - self.cos_before


def alignment_figures(
    vgg: VGG19Features, content: Tensor, exemplar: Tensor, flow: Tensor,
    known: tuple[Tensor, Tensor] | None = None,
) -> list[AlignmentFigures]:
    """Per item of ``(B, 3, S, S)`` views and ``(B, 2, S, S)`` flows, one VGG pass in all.

    ``known``: the views' own normalised `ALIGNMENT_TAP` features (content, exemplar), float,
    when the estimator already computed them with ``vgg`` (the learned network does): only the
    warped content is then encoded."""
    with torch.no_grad():
        if known is None:
            views = torch.cat([content, warp_image(content, flow), exemplar])
            plain, warped, target = normalised_features(vgg, views, (ALIGNMENT_TAP,))[
                ALIGNMENT_TAP].float().chunk(3)
        else:
            plain, target = known
            warped = normalised_features(vgg, warp_image(content, flow), (ALIGNMENT_TAP,))[
                ALIGNMENT_TAP].float()
        before = softmax_alignment_loss(plain, target).tolist()
        after = softmax_alignment_loss(warped, target).tolist()
        cos_before = (plain * target).sum(1).mean((1, 2)).tolist()
        cos_after = (warped * target).sum(1).mean((1, 2)).tolist()
    return [AlignmentFigures(*v) for v in zip(before, after, cos_before, cos_after, strict=True)]


def ambiguity(details: dict[str, Tensor] | None, item: int) -> float:
    """1 when the vote's two refined starts disagree in place but not in agreement, else 0
    (smoothly in between); 0 without a vote (other estimators, a single start)."""
    if not details or details["agreement"].shape[1] < 2:
        return 0.0
    scores = details["agreement"][item]
    if not torch.isfinite(scores).all():
        return 0.0
    apart = min(float(details["gap"][item, 1:].max()) / AMBIGUOUS_PX, 1.0)
    close = max(0.0, 1.0 - float((scores[0] - scores[1]).abs()) / AMBIGUOUS_COS)
    return apart * close


def warp_confidence(gain: float, raw_fold_frac: float, ambiguous: float = 0.0) -> float:
    """Confidence in [0, 1]: ``clip(gain / GAIN_SCALE) * (1 - folds / FOLD_SCALE) *
    (1 - ambiguous / 2)``; no gain or a torn field give 0."""
    if not math.isfinite(gain):
        return 0.0
    gain_term = min(max(gain / GAIN_SCALE, 0.0), 1.0)
    fold_term = max(0.0, 1.0 - raw_fold_frac / FOLD_SCALE)
    return gain_term * fold_term * (1.0 - 0.5 * ambiguous)
