"""The warp network: correlation of VGG features -> dense backward flow, refined recurrently.

Layout after RAFT (features -> correlation indexed at the current estimate -> update block ->
``flow = flow + delta``, every intermediate kept for a sequence loss -> explicit upsampling):

1. **Global stage** at 16x16: the paper's all-pairs correlation ``M`` of the relu4_1 features
   pooled 2x2 (16 cells a side, as pool4). Dual-softmax matching with an explicit soft-argmax
   (learnable temperature) and a robust, confidence-weighted affine fit
   (`lwst.parametric.affine_part`) give a first flow that
   can reach anywhere in the image; a small CNN over ``[M, flows, confidence]`` makes it dense.
2. **Local refinement** at 32x32 (relu4_1), ``iters`` steps with shared weights: the content
   features are re-read under the current flow, correlated with the exemplar in a 9x9 window
   (the authors' local ``M``), and a ConvGRU predicts the increment. Re-reading is done as in
   RAFT: the all-pairs `lwst.correlation.CorrelationVolume` is computed once and *looked up*
   at ``x + flow(x) + d`` (``volume(flow)``), without resampling 512 channels 81 times per
   step.
3. **Fine refinement** at 64x64 (relu3_1), ``fine_iters`` steps with shared weights: the
   content's relu3_1 map is warped by the current flow and correlated with the exemplar's in a
   7x7 window (PWC-Net's warp-then-correlate; 8-px relu4_1 cells cannot place an edge to a pixel
   or two, 4-px relu3_1 cells can, as in the optimisation estimator's last phase), then a second
   ConvGRU predicts the increment.
4. **Upsampling** of the last field to any size (bilinear, ``lwst.flow.resize_flow``).

Flows live in the exemplar frame (content sampled at ``x + flow(x)``) and, inside the network,
in pixel units of the grid they sit on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lwst.config import ANALYSIS_SIZE
from lwst.correlation import (
    NORM_EPS,
    CorrelationVolume,
    global_correlation,
    local_correlation,
    warp_features,
    window_softmax_loss,
)
from lwst.flow import base_grid, resize_flow
from lwst.parametric import affine_flow, affine_part

# Tikhonov term of the global stage's affine fit (`lwst.parametric.affine_part`), as trained.
AFFINE_RIDGE = 1e-4

# Two estimates whose relu4_1-stage flows differ by less than this (mean, analysis px) are one:
# a third of the fine stage's reach (7x7 window of 4-px cells: +-12 px), which pulls both into
# the same basin (measured on 90 seed 0/1 pairs: +0.02 px mean EPE against running both, for
# one fine stage instead of two on 63 of the 78 pairs whose starts differed).
DUPLICATE_PX = 4.0


@dataclass(frozen=True)
class WarpNetConfig:
    """Architecture hyper-parameters (stored in every checkpoint)."""

    feature_dim: int = 512
    fine_size: int = 32  # relu4_1 grid at 256x256
    radius: int = 4  # local window (2r+1)^2 = 81 correlations per cell
    iters: int = 3  # local refinement steps (shared weights)
    hidden: int = 32
    context: int = 16
    init_temperature: float = 0.02
    # Robust affine fit of the global stage: reweighting rounds and Cauchy scale (coarse cells).
    # Trained with 4 / 1.5; 16 / 0.5 measured better on training pairs at inference (model card).
    affine_iters: int = 16
    affine_scale: float = 0.5
    fine_iters: int = 2  # relu3_1 refinement steps at 64x64 (0: the coarse-only network)
    fine_dim: int = 256  # relu3_1 channels
    fine_project: int = 32  # learned 1x1 projection before the 49-offset correlation (its cost)
    fine_radius: int = 3  # 7x7 window of 4-px cells
    # The global stage also matches relu5_1 (16x16 at 256, as the pooled relu4_1 grid): its
    # similarity is mixed into the matching by a learned weight (`GlobalStage`).
    global_relu5: bool = False

    # Fields added after checkpoints were written, with the value that reproduces those (a
    # class constant: no annotation, so not a field).
    LEGACY = {"fine_iters": 0, "global_relu5": False}

    @classmethod
    def from_dict(cls, values: dict) -> WarpNetConfig:
        """Config of a stored checkpoint; fields it predates take their legacy value."""
        return cls(**{**cls.LEGACY, **values})

    @property
    def coarse_size(self) -> int:
        return self.fine_size // 2

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


def _zero_conv(cin: int, cout: int) -> nn.Conv2d:
    """Last layer of every flow head: starts at 'no change' (as the authors' network)."""
    conv = _conv(cin, cout)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def dual_softmax(similarity: Tensor, temperature: Tensor | float) -> Tensor:
    """Match probabilities ``(B, Nc, He, We)``: softmax over content cells times softmax over
    exemplar cells, so that only mutually preferred matches get mass (robust to repetition)."""
    b, n, h, w = similarity.shape
    logits = similarity / temperature
    return logits.softmax(dim=1) * logits.flatten(2).softmax(dim=2).view(b, n, h, w)


def soft_argmax_flow(prob: Tensor) -> tuple[Tensor, Tensor]:
    """Match mass ``(B, Nc, He, We)`` -> (expected content position minus own position,
    confidence ``(B, 1, He, We)`` = the mass); flow in grid pixels, content grid = exemplar grid."""
    _, _, h, w = prob.shape
    mass = prob.sum(1, keepdim=True)
    grid = base_grid(h, w, prob.device, prob.dtype)
    expected = torch.einsum("bnhw,cn->bchw", prob, grid.flatten(2)[0]) / mass.clamp_min(1e-8)
    return expected - grid, mass


def pool_features(fine: Tensor) -> Tensor:
    """relu4_1 ``(B, C, 32, 32)`` -> L2-normalised 2x2 average ``(B, C, 16, 16)`` (pool4 grid)."""
    return F.normalize(F.avg_pool2d(fine, 2), dim=1, eps=NORM_EPS)


class ConvGRU(nn.Module):
    """Convolutional GRU cell (RAFT's update memory); 1x1 gates and a 3x3 candidate keep it
    cheap enough to train on a CPU."""

    def __init__(self, hidden: int, inputs: int) -> None:
        super().__init__()
        self.convz = _conv(hidden + inputs, hidden, 1)
        self.convr = _conv(hidden + inputs, hidden, 1)
        self.convq = _conv(hidden + inputs, hidden)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        hx = torch.cat([h, x], 1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q


class GlobalStage(nn.Module):
    """All-pairs correlation at the coarse grid -> dual-softmax matches -> robust affine ->
    CNN correction (dense)."""

    def __init__(self, cfg: WarpNetConfig) -> None:
        super().__init__()
        cells = cfg.coarse_size**2
        self.log_temperature = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))
        self.regressor = nn.Sequential(
            _conv(cells + 5, 48), nn.ReLU(), _conv(48, 32), nn.ReLU(), _zero_conv(32, 2)
        )
        self.flow_scale = cfg.coarse_size / 4
        self.iters, self.scale = cfg.affine_iters, cfg.affine_scale
        if cfg.global_relu5:
            # Share of the relu5_1 cosine in the matching similarity; 0.5 at the start, where
            # the relu4_1-trained network already gains from it on real pairs (model card).
            self.relu5_mix = nn.Parameter(torch.tensor(0.5))

    def forward(self, content: Tensor, exemplar: Tensor, content_top: Tensor | None = None,
                exemplar_top: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Coarse features ``(B, C, h, w)`` (and, with ``global_relu5``, L2-normalised relu5_1
        maps of the same grid) -> (affine flow, corrected dense flow), grid pixels."""
        b, _, h, w = exemplar.shape
        similarity = torch.einsum("bck,bcl->bkl", content.flatten(2), exemplar.flatten(2))
        if hasattr(self, "relu5_mix"):
            if content_top is None or exemplar_top is None:
                raise ValueError("this warp network matches relu5_1 too: pass relu5_1 features")
            top = torch.einsum("bck,bcl->bkl", content_top.flatten(2), exemplar_top.flatten(2))
            similarity = similarity + self.relu5_mix * (top - similarity)
        prob = dual_softmax(similarity.view(b, -1, h, w), self.log_temperature.exp())
        matches, confidence = soft_argmax_flow(prob)
        affine = affine_part(matches, confidence, self.iters, self.scale, ridge=AFFINE_RIDGE)
        flow0 = affine_flow(affine, h, w)
        corr = global_correlation(exemplar, content)
        features = [corr, flow0 / self.flow_scale, matches / self.flow_scale, confidence * h * w]
        delta = self.regressor(torch.cat(features, 1))
        return flow0, flow0 + delta * self.flow_scale


class UpdateBlock(nn.Module):
    """Local correlation + current flow + exemplar context -> GRU -> flow increment."""

    def __init__(self, cfg: WarpNetConfig, radius: int | None = None, grid: int | None = None
                 ) -> None:
        super().__init__()
        window = (2 * (cfg.radius if radius is None else radius) + 1) ** 2
        self.corr_encoder = nn.Sequential(_conv(window, 48, 1), nn.ReLU())
        self.flow_encoder = nn.Sequential(_conv(2, 16), nn.ReLU())
        self.gru = ConvGRU(cfg.hidden, 48 + 16 + cfg.context)
        self.flow_head = nn.Sequential(_conv(cfg.hidden, 32), nn.ReLU(), _zero_conv(32, 2))
        self.flow_scale = (grid or cfg.fine_size) / 4

    def forward(
        self, h: Tensor, corr: Tensor, flow: Tensor, context: Tensor
    ) -> tuple[Tensor, Tensor]:
        x = torch.cat(
            [self.corr_encoder(corr), self.flow_encoder(flow / self.flow_scale), context], 1
        )
        h = self.gru(h, x)
        return h, self.flow_head(h) * self.flow_scale


class WarpNet(nn.Module):
    """Correlation-driven dense warp regressor (see the module docstring), batched."""

    def __init__(self, cfg: WarpNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or WarpNetConfig()
        self.global_stage = GlobalStage(self.cfg)
        self.context = nn.Conv2d(self.cfg.feature_dim, self.cfg.context + self.cfg.hidden, 1)
        self.update = UpdateBlock(self.cfg)
        if self.cfg.fine_iters:
            grid = 2 * self.cfg.fine_size
            self.fine_project = nn.Conv2d(self.cfg.fine_dim, self.cfg.fine_project, 1)
            self.fine_context = nn.Conv2d(
                self.cfg.fine_dim, self.cfg.context + self.cfg.hidden, 1
            )
            self.fine_update = UpdateBlock(self.cfg, radius=self.cfg.fine_radius, grid=grid)

    def forward(
        self,
        content: Tensor,
        exemplar: Tensor,
        content_fine: Tensor | None = None,
        exemplar_fine: Tensor | None = None,
        iters: int | None = None,
        content_top: Tensor | None = None,
        exemplar_top: Tensor | None = None,
    ) -> list[Tensor]:
        """L2-normalised relu4_1 ``(B, 512, 32, 32)`` (and, with a fine stage, relu3_1
        ``(B, 256, 64, 64)``) features -> every intermediate flow.

        With ``global_relu5``, also relu5_1 ``(B, 512, 16, 16)`` (``content_top``,
        ``exemplar_top``). Returns ``[affine, global, refined_1 .. refined_iters, fine_1 ..
        fine_iters]``, in pixels of the grid each sits on (32x32, then 64x64); the last one is
        the estimate.
        """
        size = self.cfg.fine_size
        flow0, flow_g = self.global_stage(pool_features(content), pool_features(exemplar),
                                          content_top, exemplar_top)
        flows = [resize_flow(flow0, size, size), resize_flow(flow_g, size, size)]
        volume = self.correlation(exemplar, content)
        context, h = self._context_and_state(self.context(exemplar))
        flows += self._refine_coarse(volume, flows[-1], context, h, iters)
        flow = flows[-1]
        if self.cfg.fine_iters:
            if content_fine is None or exemplar_fine is None:
                raise ValueError("this warp network has a fine stage: pass relu3_1 features")
            flows += self._refine_fine(content_fine, exemplar_fine, flow)
        return flows

    def estimate(
        self,
        content: Tensor,
        exemplar: Tensor,
        content_fine: Tensor,
        exemplar_fine: Tensor,
        starts: Tensor | None = None,
        volume: CorrelationVolume | None = None,
        iters: int | None = None,
        fine_iters: int | None = None,
        details: dict[str, Tensor] | None = None,
        content_top: Tensor | None = None,
        exemplar_top: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Inference with hypothesise-and-verify: the final flow ``(B, 2, 64, 64)`` and which
        start won ``(B,)`` (0: the network's own global estimate).

        ``starts (B, K, 2, 16, 16)`` are extra global estimates in coarse-grid pixels (NaN where
        an item has none). Every start is refined by the relu4_1 steps, all sharing one
        all-pairs volume; those that did not converge onto the network's own estimate go on
        through the fine stage too, and the flow whose warped relu4_1 features agree best with
        the exemplar's (mean cosine) is kept. Without ``starts`` this is ``forward``'s last
        flow. ``volume``: ``self.correlation(exemplar, content)`` when the caller already has it.
        ``iters`` / ``fine_iters``: refinement steps at test time (default: as trained; the
        weights are shared across steps, so RAFT-style networks may run more than trained).
        ``details``: a dict filled with what the vote saw, for the warp confidence
        (``lwst.warp_confidence``): ``agreement (B, K)`` (-inf where a start was dropped),
        ``identity_agreement (B,)`` (the same cosine unwarped), ``gap (B, K)`` (mean distance
        in analysis px of each start's relu4_1-stage flow from the network's own), ``present``.
        ``content_top`` / ``exemplar_top``: relu5_1 maps, for a ``global_relu5`` network.
        Why: the global match is the network's single point of failure (a wrong start
        the local windows cannot recover from), and a second, independent start costs one
        more pass through the small refinement loop, not another VGG pass.
        """
        b, size = content.shape[0], self.cfg.fine_size
        _, flow_g = self.global_stage(pool_features(content), pool_features(exemplar),
                                      content_top, exemplar_top)
        hypotheses = flow_g[:, None]
        if starts is not None:
            hypotheses = torch.cat([hypotheses, starts.to(flow_g)], 1)
        k = hypotheses.shape[1]
        present = torch.isfinite(hypotheses).flatten(2).all(2)  # (B, K)
        flow = resize_flow(torch.nan_to_num(hypotheses).flatten(0, 1), size, size)
        volume = self.correlation(exemplar, content) if volume is None else volume
        context, h = (t.repeat_interleave(k, 0)
                      for t in self._context_and_state(self.context(exemplar)))
        flow = (self._refine_coarse(volume, flow, context, h, iters) or [flow])[-1]
        # Starts that converged onto the network's own estimate add nothing: only distinct
        # ones go through the (costlier, 64x64) fine stage and the vote.
        flow = flow.view(b, k, 2, size, size)
        gap = (flow - flow[:, :1]).norm(dim=2).mean((2, 3)) * (ANALYSIS_SIZE / size)  # cell px
        apart = gap > DUPLICATE_PX
        keep = present & apart
        keep[:, 0] = True
        index = keep.flatten().nonzero().squeeze(1)  # item-major positions of the kept flows
        kept = flow.flatten(0, 1)[index]
        if self.cfg.fine_iters:
            kept = self._refine_fine(content_fine, exemplar_fine, kept, item=index // k,
                                     steps=fine_iters)[-1]
        flow = kept.new_zeros(b * k, *kept.shape[1:]).index_copy_(0, index, kept)
        # Mean cosine of the warped content's relu4_1 with the exemplar's: the volume read at
        # the flow itself (radius 0), equal to warping the features, without copying them.
        agreement = volume(resize_flow(flow, size, size), radius=0).mean((1, 2, 3))
        scores = agreement.view(b, k).masked_fill(~keep, -math.inf)
        best = scores.argmax(1)
        if details is not None:
            still = volume(flow.new_zeros(b, 2, size, size), radius=0).mean((1, 2, 3))
            details.update(agreement=scores, identity_agreement=still, gap=gap, present=present)
        flow = flow.view(b, k, *flow.shape[1:])[torch.arange(b, device=flow.device), best]
        return flow, best

    def correlation(self, exemplar: Tensor, content: Tensor) -> CorrelationVolume:
        """The relu4_1 all-pairs volume the refinement reads, with this network's window."""
        return CorrelationVolume(exemplar, content, self.cfg.radius)

    def _refine_coarse(
        self, volume: CorrelationVolume, flow: Tensor, context: Tensor, h: Tensor,
        steps: int | None,
    ) -> list[Tensor]:
        """relu4_1 steps at 32x32 (``steps``, default as trained): look the window up in the
        shared volume at the current flow, GRU increment; every step's flow, for the sequence
        loss. ``flow`` may hold several flows per item (`CorrelationVolume.lookup`)."""
        flows = []
        for _ in range(self.cfg.iters if steps is None else steps):
            flow = flow.detach()
            corr = volume(flow)
            h, delta = self.update(h, corr, flow, context)
            flow = flow + delta
            flows.append(flow)
        return flows

    def _context_and_state(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        """Split a 1x1 projection of the exemplar into GRU context (ReLU) and initial hidden
        state (tanh), as RAFT's context encoder; both refinement stages start this way."""
        context, h = projected.split([self.cfg.context, self.cfg.hidden], 1)
        return F.relu(context), torch.tanh(h)

    def _refine_fine(
        self, content: Tensor, exemplar: Tensor, flow: Tensor, item: Tensor | None = None,
        steps: int | None = None,
    ) -> list[Tensor]:
        """relu3_1 steps at 64x64: warp the content map, correlate in a window, GRU increment.
        With ``item``, ``flow`` holds several hypotheses and ``item[i]`` is the batch item of
        flow ``i``: the per-item projections are computed once and gathered after the cheap
        32-channel projection."""
        grid = exemplar.shape[-1]
        flow = resize_flow(flow, grid, grid)
        per_item = (*self._context_and_state(self.fine_context(exemplar)),
                    F.normalize(self.fine_project(content), dim=1, eps=NORM_EPS),
                    F.normalize(self.fine_project(exemplar), dim=1, eps=NORM_EPS))
        if item is not None:
            per_item = tuple(t[item] for t in per_item)
        context, h, content, exemplar = per_item
        flows = []
        for _ in range(self.cfg.fine_iters if steps is None else steps):
            flow = flow.detach()
            corr = local_correlation(exemplar, warp_features(content, flow), self.cfg.fine_radius)
            h, delta = self.fine_update(h, corr, flow, context)
            flow = flow + delta
            flows.append(flow)
        return flows

    def alignment_loss(self, content: Tensor, exemplar: Tensor, flow: Tensor) -> Tensor:
        """Weak softmax loss per item of ``flow (B, 2, h, w)`` on the relu4_1 grid
        (differentiable in the flow)."""
        size = self.cfg.fine_size
        flow = resize_flow(flow, size, size)
        return window_softmax_loss(self.correlation(exemplar, content)(flow))


def upsample_flow(flow: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Network flow ``(B, 2, h, w)`` -> ``(B, 2, H, W)`` in output pixels (bilinear)."""
    height, width = (size, size) if isinstance(size, int) else size
    return resize_flow(flow, height, width)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
