"""Warp estimation front door: pick an estimator, measure the objective before and after.

Every estimator sees the same square analysis views (256x256 by default) and returns a
backward flow at that resolution; the shared alignment objective (lwst.correlation) is
evaluated at identity and at the estimate, so ``warp_loss_before/after`` compare across methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from lwst.config import WarpConfig
from lwst.correlation import alignment_loss, analysis_view
from lwst.vgg import VGG19Features


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
        return content.new_zeros(1, 2, size, size), None
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


def estimate_warp(
    content: Tensor, exemplar: Tensor, config: WarpConfig, vgg: VGG19Features, seed: int = 0
) -> WarpEstimate:
    """Estimate the content->exemplar warp on analysis views of two ``(1, 3, H, W)`` images."""
    started = time.perf_counter()
    dtype = vgg.mean.dtype
    content_v = analysis_view(content.to(vgg.mean.device, dtype), config.analysis_size)
    exemplar_v = analysis_view(exemplar.to(vgg.mean.device, dtype), config.analysis_size)
    flow, warpnet_id = _estimate_flow(content_v, exemplar_v, config, vgg, seed)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        before = float(alignment_loss(vgg, content_v, exemplar_v, None)[0])
        after = float(alignment_loss(vgg, content_v, exemplar_v, flow.detach())[0])
    return WarpEstimate(flow.detach(), before, after, seconds, warpnet_id)
