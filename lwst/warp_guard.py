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
- **share of the reachable alignment**: that cosine after the warp divided by the mean, over
  exemplar cells, of each cell's best cosine to any content cell (what the best unconstrained
  warp could reach). The ratio compares across domains: a painting exemplar's features never
  match a photo's as well as a photo's do, so the cosine alone ranks domains, not warps;
- **torn field**: the share of the estimator's own field (before it is made fold-free) with
  ``det <= 0``, counted only beyond `TORN_FOLDS_START`: every large warp folds a little at the
  borders (10-17 % on good fields), only a field that tore folds more;
- **hypothesis disagreement** (learned network): the two starts of the vote (the network's own
  global match and the matched affine) refined to different fields that the vote could hardly
  tell apart, i.e. the evidence is ambiguous;
- **melted field**: the spread of the local area change of the field (after it is made
  fold-free) where it samples inside the image (`lwst.warp_safety.area_spread`), counted only
  beyond `MELT_START`: a field that swirls the content into streaks raises the alignment figure
  (streaks of the content's features land on many exemplar cells) while it ruins the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lwst import feature_cache
from lwst.correlation import ALIGNMENT_TAP, normalised_features, softmax_alignment_loss
from lwst.flow import warp_image
from lwst.vgg import VGG19Features

# Confidence = gain term x reached term x torn term x ambiguity term, each in [0, 1] (model
# card, "Warp safety"). Scales set by hand from the signals' ranges on real and synthetic pairs
# (docs/benchmarks.md, "Confidence and fallback"): a gain of GAIN_SCALE (cosine) is a clear
# alignment; reaching REACHED_LOW of the reachable cosine is none, REACHED_HIGH full (warped
# bilinearly, a field can beat the cell-by-cell best match); raw folds from TORN_FOLDS_START to
# TORN_FOLDS_END mark a torn field; two refined starts AMBIGUOUS_PX apart whose agreement differs
# by < AMBIGUOUS_COS are an ambiguous match.
GAIN_SCALE = 0.06
REACHED_LOW, REACHED_HIGH = 0.5, 1.2
TORN_FOLDS_START, TORN_FOLDS_END = 0.18, 0.25
AMBIGUOUS_PX = 16.0
AMBIGUOUS_COS = 0.01
# A fold-free field whose log area change spreads from MELT_START to MELT_END (standard
# deviation, inside the image) has melted the content (docs/benchmarks.md, "Melted fields").
MELT_START, MELT_END = 0.45, 0.65
DAMP = 0.5  # the damped fallback's share of the field


@dataclass(frozen=True)
class AlignmentFigures:
    """What one VGG pass over content, warped content and exemplar tells about a warp."""

    loss_before: float  # the shared weak softmax objective (lwst.correlation), identity
    loss_after: float  # ... under the flow
    cos_before: float  # mean relu4_1 cosine, content vs exemplar
    cos_after: float  # ... warped content vs exemplar
    cos_ceiling: float  # mean over exemplar cells of their best cosine to any content cell

    @property
    def gain(self) -> float:
        return self.cos_after - self.cos_before

    @property
    def reached(self) -> float:
        """The share of the reachable alignment the warp reached (cos_after / cos_ceiling)."""
        return self.cos_after / self.cos_ceiling if self.cos_ceiling > 0 else 0.0


def view_features(vgg: VGG19Features, content: Tensor, exemplar: Tensor,
                  ) -> tuple[Tensor, Tensor]:
    """The normalised `ALIGNMENT_TAP` features (float) of ``(B, 3, S, S)`` content and exemplar
    views with ``vgg``: `alignment_figures`' ``known``, for when the estimator matched
    features of another precision. Contents are encoded in one pass, the exemplar views not
    seen before in another (`lwst.feature_cache.remembered_rows`: remembered across batches by
    their bytes, as a dataset bends many contents into few exemplars)."""
    def encode(views: Tensor) -> Tensor:
        with torch.no_grad():
            return normalised_features(vgg, views, (ALIGNMENT_TAP,))[ALIGNMENT_TAP].float()

    targets = feature_cache.remembered_rows(vgg, exemplar, ("guard-view", ALIGNMENT_TAP),
                                            lambda views: {"f": encode(views)})
    return encode(content), torch.cat([t["f"] for t in targets])


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
        best = torch.einsum("bce,bck->bek", target.flatten(2), plain.flatten(2)).amax(2)
        ceiling = best.mean(1).tolist()
    return [AlignmentFigures(*v)
            for v in zip(before, after, cos_before, cos_after, ceiling, strict=True)]


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


def warp_confidence(gain: float, raw_fold_frac: float, ambiguous: float = 0.0,
                    reached: float = 1.0, area_spread: float = 0.0) -> float:
    """Confidence in [0, 1]: ``clip(gain / GAIN_SCALE) x clip((reached - REACHED_LOW) /
    (REACHED_HIGH - REACHED_LOW)) x clip(1 - (folds - TORN_FOLDS_START) / (TORN_FOLDS_END -
    TORN_FOLDS_START)) x (1 - ambiguous / 2) x clip(1 - (area_spread - MELT_START) / (MELT_END
    - MELT_START))``, ``reached`` = cos_after / cos_ceiling; no gain, no reached alignment, a
    torn field or a melted one give 0."""
    if not all(math.isfinite(v) for v in (gain, reached, area_spread)):
        return 0.0
    gain_term = _unit(gain / GAIN_SCALE)
    reached_term = _unit((reached - REACHED_LOW) / (REACHED_HIGH - REACHED_LOW))
    torn_term = _unit(1.0 - (raw_fold_frac - TORN_FOLDS_START)
                      / (TORN_FOLDS_END - TORN_FOLDS_START))
    melt_term = _unit(1.0 - (area_spread - MELT_START) / (MELT_END - MELT_START))
    return gain_term * reached_term * torn_term * (1.0 - 0.5 * ambiguous) * melt_term


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)
