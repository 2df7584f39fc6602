"""Run the shipped (or a given) warp network: two 256x256 views in, a backward flow out.

The network is loaded once per process and checkpoint path; its id (``warpnet-`` + the first
12 hex digits of the checkpoint's sha256) goes into every output's metadata, so a result can be
traced to the exact weights that made it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import threading
from pathlib import Path

import torch
from torch import Tensor

from lwst import feature_cache
from lwst.config import ANALYSIS_SIZE
from lwst.correlation import CorrelationVolume, analysis_view
from lwst.estimators.parametric_fit import (
    matches_from_similarity,
    pixel_affine_flow,
    robust_affine,
)
from lwst.flow import resize_flow
from lwst.safety import BadCheckpointError, load_weights_only
from lwst.vgg import VGG19Features
from lwst.warpnet.bank import encode
from lwst.warpnet.model import WarpNet, WarpNetConfig, upsample_flow

CHECKPOINT_NAME = "warpnet.pt"
# Refinement steps at inference (relu4_1, relu3_1). Chosen on synthetic pairs other than the
# benchmark's as one more of each than the first 4000 training steps used (3 and 2); the shipped
# network was then fine-tuned with these counts (model card).
TEST_ITERS = (4, 3)

_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], tuple[WarpNet, str]] = {}


class MissingCheckpointError(FileNotFoundError):
    """The warp network's weights are not where they should be."""


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """A warp-network checkpoint's dict, loaded weights-only (`lwst.safety.load_weights_only`),
    or `BadCheckpointError` in one line."""
    state = load_weights_only(path, "warp network checkpoint", device)
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise BadCheckpointError(f"warp network checkpoint {path}: no 'model' and "
                                 "'model_config' entries")
    return state


def default_checkpoint() -> Path:
    """``lwst/checkpoints/warpnet.pt`` (package data)."""
    return Path(str(importlib.resources.files("lwst") / "checkpoints" / CHECKPOINT_NAME))


def checkpoint_id(path: Path) -> str:
    return "warpnet-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def load_warpnet(
    checkpoint: str | Path | None = None, device: torch.device | str = "cpu"
) -> tuple[WarpNet, str]:
    """The network in eval mode and its id; cached per (path, device)."""
    path = Path(checkpoint) if checkpoint else default_checkpoint()
    key = (str(path.resolve()), str(device))
    with _LOCK:
        if key not in _LOADED:
            if not path.is_file():
                raise MissingCheckpointError(
                    f"warp network checkpoint not found: {path} (train one with "
                    "`lwst train-warp`, or choose another --warp-method)"
                )
            state = read_checkpoint(path)
            try:
                model = WarpNet(WarpNetConfig.from_dict(state["model_config"]))
                model.load_state_dict(state["model"])
            except (TypeError, ValueError, KeyError, RuntimeError) as exc:
                reason = " ".join(str(exc).split())[:160]
                raise BadCheckpointError(f"warp network checkpoint {path}: does not fit the "
                                         f"warp network ({reason})") from None
            model.to(device).eval().requires_grad_(False)
            _LOADED[key] = (model, checkpoint_id(path))
        return _LOADED[key]


def matched_affine_starts(volume: CorrelationVolume, grid: int, seed: int = 0) -> Tensor:
    """A second global estimate per item, independent of the network's: mutual nearest
    neighbours of the full-resolution relu4_1 cells (32x32, where the network's global stage
    matches pooled 16x16 cells), read from the network's all-pairs ``volume``, through OpenCV's
    RANSAC affine, as ``--warp-method affine`` does with relu4_1. ``(B, 1, 2, grid, grid)`` in
    coarse-grid pixels, NaN where the fit is not trusted. About 1 ms per pair."""
    similarity = volume.similarity
    starts = []
    for sim in similarity:
        matches = matches_from_similarity(sim, volume.content_size, ANALYSIS_SIZE)
        fit = robust_affine(matches, ANALYSIS_SIZE, seed)
        if fit.inliers.any():
            flow = pixel_affine_flow(fit.matrix, ANALYSIS_SIZE, sim.device, sim.dtype)
            starts.append(resize_flow(flow, grid, grid))
        else:
            starts.append(sim.new_full((1, 2, grid, grid), float("nan")))
    return torch.cat(starts)[:, None]


def encode_views(vgg: VGG19Features, contents: Tensor, exemplars: Tensor,
                 ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Float `encode` features of ``(B, 3, S, S)`` content and exemplar views, as
    ``(content, exemplar)`` pairs of relu4_1 and of relu3_1 maps, in one VGG pass.

    A dataset bends many contents into few geometry exemplars, so an exemplar view's features
    are remembered across batches by its bytes (`lwst.feature_cache`); only the contents and
    the exemplars not seen before are encoded.
    """
    b = len(contents)
    content_pass: list[tuple[Tensor, Tensor]] = []

    def encode_float(views: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            coarse, fine = encode(vgg, views)
        return coarse.float(), fine.float()

    def with_contents(unseen: Tensor) -> dict[str, Tensor]:
        # the contents ride along in the unseen exemplars' pass: one VGG pass in all
        coarse, fine = encode_float(torch.cat([contents, unseen]))
        content_pass.append((coarse[:b], fine[:b]))
        return {"coarse": coarse[b:], "fine": fine[b:]}

    views = feature_cache.remembered_rows(vgg, exemplars, ("warp-view",), with_contents)
    coarse_c, fine_c = content_pass[0] if content_pass else encode_float(contents)
    return ((coarse_c, torch.cat([v["coarse"] for v in views])),
            (fine_c, torch.cat([v["fine"] for v in views])))


def predict_warp(
    content256: Tensor,
    exemplar256: Tensor,
    vgg: VGG19Features,
    checkpoint: str | Path | None = None,
    verify: bool = True,
    steps: tuple[int, int] | None = None,
    diagnostics: dict[str, Tensor] | None = None,
    seed: int = 0,
) -> tuple[Tensor, str]:
    """Backward flow ``(B, 2, S, S)`` (pixels) bending ``content256`` into ``exemplar256``'s shapes.

    Inputs ``(B, 3, S, S)`` RGB in [0, 1] (S = 256 is the analysis size the network was trained
    at; other sizes are resampled to it and the flow is rescaled back). Batched. ``verify``:
    also refine the matched-affine start and keep whichever aligns better
    (``WarpNet.estimate``); off, the network's own global estimate alone. ``steps``: relu4_1
    and relu3_1 refinement steps (default ``TEST_ITERS``). ``diagnostics``: a dict filled
    with what the vote saw (``WarpNet.estimate``'s ``details``) plus ``affine`` ``(B, 2, S, S)``,
    the matched-affine start as a flow (NaN where there is none), for the warp confidence and
    the affine fallback (``lwst.warp_safety``).
    """
    device = vgg.mean.device
    model, warpnet_id = load_warpnet(checkpoint, device)
    size = content256.shape[-1]
    contents, exemplars = (
        v if v.shape[-2:] == (ANALYSIS_SIZE, ANALYSIS_SIZE) else analysis_view(v, ANALYSIS_SIZE)
        for v in (content256.to(device), exemplar256.to(device)))
    resized = contents.shape[-2:] != content256.shape[-2:]
    coarse, fine = encode_views(vgg, contents, exemplars)
    if diagnostics is not None and not resized:  # the warp guard's before-view, free
        diagnostics["relu4_1"] = (coarse[0], coarse[1], vgg.mean.dtype)
    with torch.no_grad():
        volume = model.correlation(coarse[1], coarse[0])
        starts = matched_affine_starts(volume, model.cfg.coarse_size, seed) if verify else None
        iters, fine_iters = TEST_ITERS if steps is None else steps
        flow, _ = model.estimate(coarse[0], coarse[1], fine[0], fine[1], starts, volume,
                                 iters, fine_iters, details=diagnostics)
    if diagnostics is not None and starts is not None:
        diagnostics["affine"] = upsample_flow(starts[:, 0], size).to(content256.dtype)
    return upsample_flow(flow, size).to(content256.dtype), warpnet_id
