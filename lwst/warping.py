"""Warp estimation front door: pick an estimator, measure the objective before and after.

Every estimator sees the same square analysis views (256x256 by default) and returns a
backward flow at that resolution; the shared alignment objective (lwst.correlation) is
evaluated at identity and at the estimate, so ``warp_loss_before/after`` compare across methods.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from lwst import storage
from lwst.config import WarpConfig
from lwst.correlation import alignment_loss_before_after, analysis_view
from lwst.flow import read_flo, write_flo
from lwst.vgg import VGG19Features, at_dtype, feature_dtype


@dataclass
class WarpEstimate:
    flow: Tensor  # (1, 2, S, S) backward flow in pixels at the analysis size
    loss_before: float
    loss_after: float
    seconds: float
    warpnet_id: str | None = None


def _estimate_flow(
    content: Tensor, exemplar: Tensor, config: WarpConfig, vgg: VGG19Features, seed: int
) -> tuple[Tensor, str | None]:
    size = content.shape[-1]
    if config.method == "none":
        return content.new_zeros(content.shape[0], 2, size, size), None
    if config.method == "optim":
        from lwst.estimators.optim import optimise_warp

        return optimise_warp(content, exemplar, vgg, config, seed=seed), None
    if config.method in ("affine", "tps"):
        from lwst.estimators.parametric_fit import fit_parametric_warp

        return fit_parametric_warp(content, exemplar, vgg, kind=config.method), None
    if config.method == "learned":
        from lwst.warpnet.inference import predict_warp

        return predict_warp(content, exemplar, vgg, checkpoint=config.checkpoint)
    raise ValueError(f"unknown warp method {config.method!r}")


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
    if config.method in BATCHED_METHODS:
        flows, warpnet_id = _estimate_flow(content_v, exemplar_v, config, features_vgg, seed)
    else:
        pairs = [_estimate_flow(c[None], e[None], config, features_vgg, seed)
                 for c, e in zip(content_v, exemplar_v, strict=True)]
        flows, warpnet_id = torch.cat([f for f, _ in pairs]), pairs[0][1]
    flows = flows.detach().to(dtype)
    seconds = (time.perf_counter() - started) / len(contents)
    with torch.no_grad():
        before, after = (
            v.tolist() for v in alignment_loss_before_after(vgg, content_v, exemplar_v, flows)
        )
    return [WarpEstimate(flows[i : i + 1], before[i], after[i], seconds, warpnet_id)
            for i in range(len(contents))]


def estimate_warp(
    content: Tensor, exemplar: Tensor, config: WarpConfig, vgg: VGG19Features, seed: int = 0
) -> WarpEstimate:
    """Estimate the content->exemplar warp on analysis views of two ``(1, 3, H, W)`` images."""
    return estimate_warps([content], [exemplar], config, vgg, seed)[0]


def save_estimate(estimate: WarpEstimate, uri: str, **storage_options: object) -> None:
    """Write an estimate as ``uri`` (.flo, analysis resolution) + ``uri.json`` (its figures).

    Lets a batched estimation task hand its results to per-item tasks as file paths.
    """
    figures = {k: v for k, v in dataclasses.asdict(estimate).items() if k != "flow"}
    write_flo(estimate.flow, uri, **storage_options)
    storage.write_bytes_atomic(f"{uri}.json", json.dumps(figures).encode(), **storage_options)


def load_estimate(uri: str, **storage_options: object) -> WarpEstimate:
    figures = json.loads(storage.read_bytes(f"{uri}.json", **storage_options))
    return WarpEstimate(flow=read_flo(uri, **storage_options), **figures)
