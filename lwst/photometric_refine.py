"""Sub-pixel refinement of a warp where brightness constancy holds (issue 11, item 6).

The feature-based estimators read the exemplar through VGG cells of 4 px and more, so on a
pure-geometry pair (the exemplar is a deformed copy of the content) OpenCV DIS, which matches
pixels, is about twice as precise. DIS alone fails on large warps and on anything re-painted
(docs/benchmarks.md), so here it only *refines*: it starts from the estimator's (fold-free)
field, and its result is kept only when the warped content then explains the exemplar pixel
for pixel (a z-scored grey residual of at most `MAX_RESIDUAL`) and at most `MAX_RATIO` of the
field's own residual. A painted or re-coloured exemplar never gets there, so on those pairs
the field is returned unchanged. Thresholds measured on synthetic pairs (benchmarks.md,
"The network against DIS per displacement size").
"""

from __future__ import annotations

import torch
from torch import Tensor

from lwst.estimators.dis import dis_flow
from lwst.flow import hole_mask, warp_image
from lwst.warp_safety import make_fold_free

MAX_RESIDUAL = 0.05  # z-scored grey residual of the refined field: a pixel-for-pixel match
MAX_RATIO = 0.6  # ... and at most this share of the unrefined field's residual
MIN_SPREAD = 1e-3  # grey standard deviation below which an image counts as flat


def photometric_residual(content: Tensor, exemplar: Tensor, flow: Tensor) -> float:
    """Mean absolute difference of the z-scored grey exemplar and warped content, over the
    pixels the warp samples inside the content; z-scoring forgives a global brightness or
    contrast change, nothing else. ``inf`` when the warp samples nothing inside or either
    image is flat there (a flat picture matches any field, so it proves nothing)."""
    inside = ~hole_mask(flow)
    if not bool(inside.any()):
        return float("inf")
    warped = warp_image(content, flow).mean(1, keepdim=True)
    target = exemplar.mean(1, keepdim=True)
    spreads = [float(x[inside].std()) for x in (warped, target)]
    if not all(spread >= MIN_SPREAD for spread in spreads):  # also catches NaN (one pixel)
        return float("inf")

    def zscore(x: Tensor, spread: float) -> Tensor:
        return (x - x[inside].mean()) / spread

    return float((zscore(warped, spreads[0]) - zscore(target, spreads[1])).abs()[inside].mean())


def refine_photometric(contents: Tensor, exemplars: Tensor, flows: Tensor,
                       fold_free: bool = True) -> tuple[Tensor, list[bool]]:
    """Each item's field refined by DIS where the refinement is a pixel-for-pixel match (else
    unchanged), and which items were refined. Views and flows ``(B, ., S, S)``, flows in
    pixels; refined fields are made fold-free when ``fold_free``."""
    out, refined = flows.clone(), []
    for i in range(flows.shape[0]):
        content, exemplar, flow = contents[i : i + 1], exemplars[i : i + 1], flows[i : i + 1]
        if not torch.isfinite(flow).all():  # nothing to refine (and DIS would crash on it)
            refined.append(False)
            continue
        candidate = dis_flow(content, exemplar, init=flow).to(flow)
        if fold_free:
            candidate = make_fold_free(candidate)
        after = photometric_residual(content, exemplar, candidate)
        keep = after <= MAX_RESIDUAL and after <= MAX_RATIO * photometric_residual(
            content, exemplar, flow)
        if keep:
            out[i] = candidate[0]
        refined.append(keep)
    return out, refined
