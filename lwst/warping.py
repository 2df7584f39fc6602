"""Warp estimation front door: pick an estimator, make its field safe, measure it.

Every estimator sees the same square analysis views (256x256 by default) and returns a
backward flow at that resolution. By default the field is then made fold-free
(``lwst.warp_safety``), refined by DIS where the pair is a pixel-for-pixel match
(``lwst.photometric_refine``), its confidence is computed and, below the threshold, the
fallback policy replaces it (``lwst.warp_guard``). The shared alignment objective
(lwst.correlation) is evaluated at identity and at the applied field, so
``warp_loss_before/after`` compare across methods.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from lwst import storage
from lwst.config import WARP_VIEWS, WarpConfig
from lwst.correlation import analysis_view
from lwst.errors import InputError
from lwst.flow import read_flo, write_flo
from lwst.photometric_refine import refine_photometric
from lwst.vgg import VGG19Features, at_dtype, feature_dtype
from lwst.warp_guard import (
    DAMP,
    AlignmentFigures,
    alignment_figures,
    ambiguity,
    view_features,
    warp_confidence,
)
from lwst.warp_safety import area_spread, field_safety, fold_free


@dataclass
class WarpEstimate:
    flow: Tensor  # (1, 2, S, S) backward flow in pixels at the analysis size
    loss_before: float
    loss_after: float
    seconds: float
    warpnet_id: str | None = None
    confidence: float | None = None  # lwst.warp_guard.warp_confidence of the estimate
    applied: str | None = None  # the method's own field, "affine", "damp" or "none"
    raw_fold_frac: float | None = None  # folds of the estimator's field before any repair
    cos_before: float | None = None  # mean relu4_1 cosine to the exemplar, unwarped
    cos_after: float | None = None  # ... under the applied field
    ambiguity: float | None = None  # lwst.warp_guard.ambiguity of the vote (0: none or no vote)
    cos_ceiling: float | None = None  # AlignmentFigures.cos_ceiling: the best any warp could do
    refined: bool | None = None  # lwst.photometric_refine kept DIS's refinement of the field
    view: str | None = None  # the learned network's view whose field won (WARP_VIEWS)
    # lwst.warp_safety.area_spread of the field the confidence judged (before any fallback):
    # the applied field, or its fold-free form with ``--warp-field raw``
    area_spread: float | None = None
    # The estimator's own field before repair and fallback: for benchmarks, never saved.
    raw_flow: Tensor | None = dataclasses.field(default=None, repr=False)


def _estimate_flow(
    content: Tensor, exemplar: Tensor, config: WarpConfig, vgg: VGG19Features, seed: int,
    details: dict | None = None,
) -> tuple[Tensor, str | None]:
    size = content.shape[-1]
    if config.method == "none":
        return content.new_zeros(content.shape[0], 2, size, size), None
    if config.method == "optim":
        from lwst.estimators.optim import optimise_warp

        return optimise_warp(content, exemplar, vgg, config, seed=seed), None
    if config.method in ("affine", "tps"):
        from lwst.estimators.parametric_fit import fit_parametric_warp

        return fit_parametric_warp(content, exemplar, vgg, kind=config.method, seed=seed), None
    if config.method == "learned":
        from lwst.warpnet.inference import predict_warp

        return predict_warp(content, exemplar, vgg, checkpoint=config.checkpoint,
                            diagnostics=details, seed=seed, views=config.views)
    raise InputError(f"unknown warp method {config.method!r}")


# A fallback must align at least this much better than no warp (mean relu4_1 cosine) to be
# kept; below it the item gets no warp (also covers a matched affine that could not be fitted).
MIN_GAIN = 1e-3

# Methods whose estimator takes a whole batch in one pass (worth batching on a GPU).
BATCHED_METHODS = ("learned", "none")


def estimate_warps(
    contents: list[Tensor], exemplars: list[Tensor], config: WarpConfig, vgg: VGG19Features,
    seed: int = 0,
) -> list[WarpEstimate]:
    """Estimate many content->exemplar warps; images ``(1, 3, H, W)`` of any sizes.

    Analysis views are all ``S x S``, so they stack: the learned network (and ``none``) run the
    whole batch in one forward pass, and so does the objective; per-pair methods loop.
    ``seconds`` is the batch's estimation time shared equally among its pairs. Estimators match
    features of ``vgg``'s weights at ``config.precision``; the before/after objective is always
    measured with ``vgg`` itself, so it compares across precisions.
    """
    started = time.perf_counter()
    device, dtype = vgg.mean.device, vgg.mean.dtype
    features_vgg = at_dtype(vgg, feature_dtype(config.precision, device))

    def views(images: list[Tensor]) -> Tensor:
        return torch.cat([analysis_view(i.to(device, dtype), config.analysis_size) for i in images])

    content_v, exemplar_v = views(contents), views(exemplars)
    details: dict = {}
    if config.method in BATCHED_METHODS:
        flows, warpnet_id = _estimate_flow(content_v, exemplar_v, config, features_vgg, seed,
                                           details)
    else:
        pairs = [_estimate_flow(c[None], e[None], config, features_vgg, seed)
                 for c, e in zip(content_v, exemplar_v, strict=True)]
        flows, warpnet_id = torch.cat([f for f, _ in pairs]), pairs[0][1]
    flows = raw = flows.detach().to(dtype)
    views = [WARP_VIEWS[int(v)] for v in details["view"].tolist()] if "view" in details else [
        None] * len(flows)
    raw_folds = [s.fold_frac for s in field_safety(flows)]
    refined = [False] * len(flows)
    if config.method != "none":
        flows = fold_free(flows, config.field)
        if config.refine == "dis":
            flows, refined = refine_photometric(content_v, exemplar_v, flows,
                                                fold_free=config.field != "raw")
    # The views' own features once: the network's when it matched at ``vgg``'s precision, else
    # encoded here; the fallback below re-encodes only its warped views.
    known = _known_features(details, vgg) or view_features(vgg, content_v, exemplar_v)
    figures = alignment_figures(vgg, content_v, exemplar_v, flows, known)
    ambiguous = [ambiguity(details, i) for i in range(len(figures))]
    # The melt term's scale was set on fold-free fields; a raw field's folds (the torn term's
    # business) would read as melt on every item, so a raw field is judged by its fold-free form.
    judged = fold_free(flows, "diffeo") if config.field == "raw" else flows
    spreads = area_spread(judged).tolist()
    confidence = [warp_confidence(f.gain, raw_folds[i], ambiguous[i], f.reached, spreads[i])
                  for i, f in enumerate(figures)]
    applied = [config.method] * len(figures)
    if config.method != "none" and config.fallback != "none":
        low = [i for i, c in enumerate(confidence) if c < config.min_confidence]
        if low:
            flows, figures, applied = _fall_back(low, flows, figures, applied, content_v,
                                                 exemplar_v, config, vgg, features_vgg, details,
                                                 known, seed)
    seconds = (time.perf_counter() - started) / len(contents)
    return [WarpEstimate(flows[i : i + 1], f.loss_before, f.loss_after, seconds, warpnet_id,
                         confidence[i], applied[i], raw_folds[i], f.cos_before, f.cos_after,
                         ambiguous[i], f.cos_ceiling, refined[i], views[i], spreads[i],
                         raw[i : i + 1])
            for i, f in enumerate(figures)]


def _known_features(details: dict, vgg: VGG19Features) -> tuple[Tensor, Tensor] | None:
    """The views' relu4_1 features the learned network computed, when it did so with ``vgg``
    itself (same precision), so the warp guard need not encode them again."""
    found = details.get("relu4_1")
    if found is None or found[2] != vgg.mean.dtype:
        return None
    return found[0], found[1]


def _fall_back(
    low: list[int], flows: Tensor, figures: list[AlignmentFigures], applied: list[str],
    content_v: Tensor, exemplar_v: Tensor, config: WarpConfig, vgg: VGG19Features,
    features_vgg: VGG19Features, details: dict, known: tuple[Tensor, Tensor], seed: int = 0,
) -> tuple[Tensor, list[AlignmentFigures], list[str]]:
    """Replace the low-confidence items' fields by the policy's (matched affine, or the field
    damped to ``DAMP``), made fold-free as configured; a replacement that aligns no better
    than no warp becomes no warp (``none``), so a fallback never ends less aligned than that."""
    flows, figures, applied = flows.clone(), list(figures), list(applied)
    index = torch.tensor(low, device=flows.device)
    if config.fallback == "damp":
        alt = flows[index] * DAMP
    else:
        alt = _affine_fields(low, content_v, exemplar_v, features_vgg, details, seed).to(flows)
    alt = fold_free(alt, config.field)
    alt_figures = alignment_figures(vgg, content_v[index], exemplar_v[index], alt,
                                    (known[0][index], known[1][index]))
    for j, i in enumerate(low):
        if alt_figures[j].gain > MIN_GAIN and bool(alt[j].abs().amax() > 0):
            flows[i], figures[i], applied[i] = alt[j], alt_figures[j], config.fallback
        else:
            flows[i] = 0.0
            figures[i] = dataclasses.replace(figures[i], loss_after=figures[i].loss_before,
                                             cos_after=figures[i].cos_before)
            applied[i] = "none"
    return flows, figures, applied


def _affine_fields(low: list[int], content_v: Tensor, exemplar_v: Tensor,
                   features_vgg: VGG19Features, details: dict, seed: int = 0) -> Tensor:
    """The matched affine of each low item: the vote's own start when the learned network ran
    (free), else a fresh RANSAC affine fit (``--warp-method affine``); zero where none fits."""
    from lwst.estimators.parametric_fit import fit_parametric_warp

    fields = []
    for i in low:
        affine = details.get("affine")
        if affine is not None and torch.isfinite(affine[i]).all():
            fields.append(affine[i : i + 1])
        elif affine is not None:
            fields.append(torch.zeros_like(affine[i : i + 1]))
        else:
            fields.append(fit_parametric_warp(content_v[i : i + 1], exemplar_v[i : i + 1],
                                              features_vgg, "affine", seed))
    return torch.cat(fields)


def estimate_warp(
    content: Tensor, exemplar: Tensor, config: WarpConfig, vgg: VGG19Features, seed: int = 0
) -> WarpEstimate:
    """Estimate the content->exemplar warp on analysis views of two ``(1, 3, H, W)`` images."""
    return estimate_warps([content], [exemplar], config, vgg, seed)[0]


def save_estimate(estimate: WarpEstimate, uri: str, **storage_options: object) -> None:
    """Write an estimate as ``uri`` (.flo, analysis resolution) + ``uri.json`` (its figures).

    Lets a batched estimation task hand its results to per-item tasks as file paths.
    """
    figures = {f.name: getattr(estimate, f.name) for f in dataclasses.fields(estimate)
               if f.name not in ("flow", "raw_flow")}
    write_flo(estimate.flow, uri, **storage_options)
    storage.write_bytes_atomic(f"{uri}.json", json.dumps(figures).encode(), **storage_options)


def load_estimate(uri: str, **storage_options: object) -> WarpEstimate:
    figures = json.loads(storage.read_bytes(f"{uri}.json", **storage_options))
    return WarpEstimate(flow=read_flo(uri, **storage_options), **figures)
