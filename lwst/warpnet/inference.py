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
from lwst.config import ANALYSIS_SIZE, MAX_WARP_VIEWS, WARP_VIEWS
from lwst.correlation import CorrelationVolume, analysis_view
from lwst.errors import InputError
from lwst.estimators.parametric_fit import matches_from_similarity, robust_affine
from lwst.failures import one_line
from lwst.flow import resize_flow, warp_image
from lwst.safety import BadCheckpointError, load_weights_only
from lwst.vgg import VGG19Features
from lwst.warpnet.bank import FEATURE_TAP, FINE_TAP, TOP_TAP, encode, encode_taps
from lwst.warpnet.model import WarpNet, WarpNetConfig

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
                raise BadCheckpointError(f"warp network checkpoint {path}: does not fit the "
                                         f"warp network ({one_line(exc, 160)})") from None
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
            starts.append(resize_flow(fit.flow(sim.device, sim.dtype), grid, grid))
        else:
            starts.append(sim.new_full((1, 2, grid, grid), float("nan")))
    return torch.cat(starts)[:, None]


Pair = tuple[Tensor, Tensor]  # (content, exemplar) maps of one tap


def encode_views(vgg: VGG19Features, contents: Tensor, exemplars: Tensor, top: bool = False,
                 ) -> tuple[Pair, Pair] | tuple[Pair, Pair, Pair]:
    """Float `encode` features of ``(B, 3, S, S)`` content and exemplar views, as
    ``(content, exemplar)`` pairs of relu4_1 and of relu3_1 maps (and of relu5_1 with
    ``top``, for a ``global_relu5`` network), in one VGG pass.

    A dataset bends many contents into few geometry exemplars, so an exemplar view's features
    are remembered across batches by its bytes (`lwst.feature_cache`); only the contents and
    the exemplars not seen before are encoded.
    """
    b = len(contents)
    names = [FEATURE_TAP, FINE_TAP] + ([TOP_TAP] if top else [])
    content_pass: list[dict[str, Tensor]] = []

    def encode_float(views: Tensor) -> dict[str, Tensor]:
        return {k: v.float() for k, v in encode_taps(vgg, views, top).items()}

    def with_contents(unseen: Tensor) -> dict[str, Tensor]:
        # the contents ride along in the unseen exemplars' pass: one VGG pass in all
        feats = encode_float(torch.cat([contents, unseen]))
        content_pass.append({k: v[:b] for k, v in feats.items()})
        return {k: v[b:] for k, v in feats.items()}

    views = feature_cache.remembered_rows(vgg, exemplars, ("warp-view", *names[2:]),
                                          with_contents)
    own = content_pass[0] if content_pass else encode_float(contents)
    return tuple((own[k], torch.cat([v[k] for v in views])) for k in names)


# The symmetric views the network estimates on are `lwst.config.WARP_VIEWS` (transposed needs
# square views, as analysis views are). Each is an involution on images; `view_flow` maps a
# flow of the viewed pair back.
# Views whose field lies within this mean distance (analysis px) of the best-aligned one agree
# with it and are averaged with it; farther ones are failed guesses and dropped. Chosen on the
# dev pairs of seed 1 among 1, 2, 4, 8 px and the two extremes (the best alone; all averaged):
# the best alone rescues failures but is noisy per pair, all averaged is precise but lets a
# failed view drag the field (docs/benchmarks.md, "Symmetric views").
CONSENSUS_PX = 8.0
# Another view's field replaces the pair's own as the anchor of the consensus only when it
# aligns clearly better: mean relu4_1 cosine higher by more than this. Closer calls are two
# guesses scored alike, and on real photo -> painting pairs switching to the higher score picked
# the more aggressive warp (a face dragged out of shape, Venice melted into streaks; looked at
# in docs/pairs), while on synthetic pairs it rescued a failed warp at a margin of +0.033 and
# lost one at +0.003 (seeds 1, 3, 4; docs/benchmarks.md, "Symmetric views").
SWITCH_MARGIN = 0.025


def view_image(x: Tensor, view: str) -> Tensor:
    """``x (..., H, W)`` seen in ``view``."""
    if view == "mirror":
        return x.flip(-1)
    if view == "flip":
        return x.flip(-2)
    if view == "transpose":
        return x.transpose(-1, -2)
    return x


def view_flow(flow: Tensor, view: str) -> Tensor:
    """The backward flow ``(B, 2, H, W)`` (x, y) of a pair seen in ``view``, as a flow of the
    pair itself (and back: every view is its own inverse)."""
    moved = view_image(flow, view)
    if view == "mirror":
        return torch.cat([-moved[:, :1], moved[:, 1:]], 1)
    if view == "flip":
        return torch.cat([moved[:, :1], -moved[:, 1:]], 1)
    if view == "transpose":
        return moved.flip(1)
    return moved


def _network_flow(
    model: WarpNet, coarse: Pair, fine: Pair, verify: bool,
    steps: tuple[int, int] | None, details: dict[str, Tensor] | None, seed: int,
    top: Pair | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The network's flow on its fine grid and its matched-affine starts (None unverified)."""
    top = top or (None, None)
    with torch.no_grad():
        volume = model.correlation(coarse[1], coarse[0])
        starts = matched_affine_starts(volume, model.cfg.coarse_size, seed) if verify else None
        iters, fine_iters = TEST_ITERS if steps is None else steps
        flow, _ = model.estimate(coarse[0], coarse[1], fine[0], fine[1], starts, volume,
                                 iters, fine_iters, details=details,
                                 content_top=top[0], exemplar_top=top[1])
    return flow, starts


def best_aligned(vgg: VGG19Features, contents: Tensor, exemplar_relu4_1: Tensor,
                 flows: Tensor, margin: float = SWITCH_MARGIN) -> Tensor:
    """``(B,)`` index of the best of ``flows (K, B, 2, h, w)`` per item: the one whose warped
    content, re-encoded, has the highest mean relu4_1 cosine with the exemplar's
    (``exemplar_relu4_1``, L2-normalised), if that beats the first (the pair's own view) by more
    than ``margin``; else 0. Re-encoding the warped image, rather than reading warped features
    from the volume (the network's own vote), chose better on synthetic pairs
    (docs/benchmarks.md, "Symmetric views")."""
    k, b, size = flows.shape[0], len(contents), contents.shape[-1]
    fields = resize_flow(flows.flatten(0, 1), size, size).to(contents.dtype)
    warped, _ = encode(vgg, warp_image(contents.repeat(k, 1, 1, 1), fields))
    target = exemplar_relu4_1.float().repeat(k, 1, 1, 1)
    agreement = (warped.float() * target).sum(1).mean((1, 2)).view(k, b)
    best = agreement.argmax(0)
    clear = agreement.amax(0) - agreement[0] > margin
    return torch.where(clear, best, torch.zeros_like(best))


def consensus(flows: Tensor, best: Tensor, size: int = ANALYSIS_SIZE) -> tuple[Tensor, Tensor]:
    """Per item, the mean ``(B, 2, h, w)`` of the fields of ``flows (K, B, 2, h, w)`` that lie
    within `CONSENSUS_PX` (mean end-point distance, in px at ``size``) of the ``best`` one (so
    at least that one), and how many those are ``(B,)``."""
    items = torch.arange(flows.shape[1], device=flows.device)
    distance = (flows - flows[best, items]).norm(dim=2).mean((2, 3)) * (size / flows.shape[-1])
    agree = (distance <= CONSENSUS_PX).to(flows.dtype)  # (K, B)
    count = agree.sum(0)
    return (flows * (agree / count)[..., None, None, None]).sum(0), count.long()


def _merge_details(details: dict, per_view: list[dict], best: Tensor) -> None:
    """Per item, the vote's figures of whichever view won (``best``: index into ``per_view``,
    whose first entry is ``details`` itself)."""
    for key, value in details.items():
        if not isinstance(value, Tensor):
            continue
        stacked = torch.stack([d[key] for d in per_view])
        details[key] = stacked[best, torch.arange(len(best), device=best.device)]
    details["view"] = best


def predict_warp(
    content256: Tensor,
    exemplar256: Tensor,
    vgg: VGG19Features,
    checkpoint: str | Path | None = None,
    verify: bool = True,
    steps: tuple[int, int] | None = None,
    diagnostics: dict[str, Tensor] | None = None,
    seed: int = 0,
    views: int = 1,
) -> tuple[Tensor, str]:
    """Backward flow ``(B, 2, S, S)`` (pixels) bending ``content256`` into ``exemplar256``'s shapes.

    Inputs ``(B, 3, S, S)`` RGB in [0, 1] (S = 256 is the analysis size the network was trained
    at; other sizes are resampled to it and the flow is rescaled back). Batched. ``verify``:
    also refine the matched-affine start and keep whichever aligns better
    (``WarpNet.estimate``); off, the network's own global estimate alone. ``views``: run the
    network on the first ``views`` of `WARP_VIEWS` (the pair itself, mirrored, upside down,
    transposed), find per item the field whose warped content agrees clearly best with the
    exemplar (`best_aligned`; the pair's own unless another beats it by `SWITCH_MARGIN`), and
    average it with the views that agree with it (`consensus`): the
    network is not equivariant to these symmetries, so each view is a further, partly
    independent guess; averaging those that agree cancels part of their error, and dropping
    those that do not keeps a failed guess out (one more VGG and network pass per view).
    ``steps``: relu4_1 and relu3_1 refinement steps (default ``TEST_ITERS``). ``diagnostics``:
    a dict filled with what the vote saw (``WarpNet.estimate``'s ``details``, of the
    best-aligned view per item; ``view (B,)``, its index into `WARP_VIEWS`; ``views_agreeing
    (B,)``, how many were averaged) plus ``affine`` ``(B, 2, S, S)``, the matched-affine start
    as a flow (NaN where there is none), for the warp confidence and the affine fallback
    (``lwst.warp_safety``).
    """
    if not 1 <= views <= MAX_WARP_VIEWS:
        raise InputError(f"views must be within 1..{MAX_WARP_VIEWS}, got {views}")
    device = vgg.mean.device
    model, warpnet_id = load_warpnet(checkpoint, device)
    size = content256.shape[-1]
    contents, exemplars = (
        v if v.shape[-2:] == (ANALYSIS_SIZE, ANALYSIS_SIZE) else analysis_view(v, ANALYSIS_SIZE)
        for v in (content256.to(device), exemplar256.to(device)))
    resized = contents.shape[-2:] != content256.shape[-2:]
    flows, all_starts, per_view, exemplar_relu4_1 = [], [], [], None
    for view in WARP_VIEWS[:views]:
        coarse, fine, *top = encode_views(vgg, view_image(contents, view),
                                          view_image(exemplars, view), model.cfg.global_relu5)
        seen: dict[str, Tensor] | None = None
        if diagnostics is not None:
            seen = diagnostics if view == "identity" else {}
            per_view.append(seen)
        if view == "identity":
            exemplar_relu4_1 = coarse[1]
            if diagnostics is not None and not resized:  # the warp guard's before-view, free
                diagnostics["relu4_1"] = (coarse[0], coarse[1], vgg.mean.dtype)
        flow, starts = _network_flow(model, coarse, fine, verify, steps, seen, seed,
                                     top[0] if top else None)
        flows.append(view_flow(flow, view))
        if starts is not None:
            all_starts.append(view_flow(starts.flatten(0, 1), view).view_as(starts))
    best = torch.zeros(len(contents), dtype=torch.long, device=device)
    if views > 1:
        with torch.no_grad():
            best = best_aligned(vgg, contents, exemplar_relu4_1, torch.stack(flows))
    flow, agreeing = consensus(torch.stack(flows), best, ANALYSIS_SIZE)
    if diagnostics is not None:
        _merge_details(diagnostics, per_view, best)
        diagnostics["views_agreeing"] = agreeing
        if all_starts:
            starts = torch.stack(all_starts)[best, torch.arange(len(best), device=device)]
            diagnostics["affine"] = resize_flow(starts[:, 0], size, size).to(content256.dtype)
    return resize_flow(flow, size, size).to(content256.dtype), warpnet_id
