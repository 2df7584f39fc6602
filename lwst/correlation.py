"""Feature correlations between content and geometry exemplar, and the alignment objective.

Three forms of the correlation ``M`` (method.md, step 2): `global_correlation` (the paper's,
all pairs, normalised over content cells), `local_correlation` (a window around the same place,
on feature maps already warped) and `CorrelationVolume` (all pairs computed once and looked up
in a window around any flow, as RAFT's ``CorrBlock``; the warp network's refinement).

Shared by every warp estimator so that their ``warp_loss_before`` / ``warp_loss_after`` figures
are the same quantity: the paper's weak softmax loss on L2-normalised relu4_1 features.

Frames: the warp field lives in the exemplar frame (the output is the content bent into the
exemplar's shapes), so correlations are indexed by exemplar location first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.config import ANALYSIS_SIZE
from lwst.flow import base_grid, resize_flow, warp_image
from lwst.vgg import VGG19Features

ALIGNMENT_TAP = "relu4_1"
# Floor on a feature vector's length when it is L2-normalised (``F.normalize(x, dim=1, eps=)``):
# a (near-)zero vector stays (near-)zero instead of blowing up.
NORM_EPS = 1e-6


def analysis_view(image: Tensor, size: int = ANALYSIS_SIZE) -> Tensor:
    """Resize ``(B, 3, H, W)`` to the square analysis resolution the warp is estimated at."""
    return F.interpolate(
        image, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def normalised_features(
    vgg: VGG19Features, image: Tensor, taps: tuple[str, ...]
) -> dict[str, Tensor]:
    """L2-normalised VGG activations of ``image (B, 3, S, S)`` at the requested taps."""
    return {name: F.normalize(feat, dim=1, eps=NORM_EPS) for name, feat in vgg(image, taps).items()}


def global_correlation(exemplar: Tensor, content: Tensor) -> Tensor:
    """Paper's global correlation, ``(B, Hc*Wc, He, We)`` from ``(B, C, H, W)`` features.

    Channel k of exemplar cell (i, j) is the correlation with content cell k (row-major),
    divided by the root of the sum of squares over content cells (docs/method.md, "Correlation").
    """
    b, c, he, we = exemplar.shape
    corr = torch.einsum("bck,bcl->bkl", content.flatten(2), exemplar.flatten(2))
    corr = corr / corr.pow(2).sum(1, keepdim=True).sqrt().clamp_min(1e-6)
    return corr.view(b, -1, he, we)


def local_correlation(target: Tensor, source: Tensor, radius: int = 4) -> Tensor:
    """``(B, (2r+1)^2, H, W)``: ``<target(p), source(p + d)>`` for every offset d in the window.

    One batched matrix product per window row: for a row offset dy, each image row of
    ``target`` against the padded row dy below it in ``source`` gives all ``W x (W + 2r)``
    dot products, and the window's dx offsets are that matrix's first 2r+1 diagonals. It
    computes more products than the window needs but runs as GEMM, 3-5x faster on the CPU than
    offset-by-offset products and sums (docs/benchmarks.md, "Pipeline"), with memory of one
    ``W x (W + 2r)`` matrix per image row.
    """
    b, c, height, width = target.shape
    side = 2 * radius + 1
    padded = F.pad(source, (radius, radius, radius, radius))
    rows = target.permute(0, 2, 3, 1).reshape(b * height, width, c)
    maps = []
    for dy in range(side):
        below = padded[:, :, dy : dy + height].permute(0, 2, 1, 3)
        products = torch.bmm(rows, below.reshape(b * height, c, width + 2 * radius))
        maps.extend(products.diagonal(offset=dx, dim1=1, dim2=2) for dx in range(side))
    stacked = torch.stack(maps, dim=1).view(b, height, side * side, width)
    return stacked.permute(0, 2, 1, 3).contiguous()


class CorrelationVolume:
    """All-pairs cosine correlation of exemplar cells with content cells, read at a flow.

    As RAFT's ``CorrBlock``: built once per pair of feature maps, then callers only ask
    ``volume(flow)``. Reading the volume at ``x + flow(x) + d`` equals the dot product of the
    exemplar feature at ``x`` with the content feature map bilinearly sampled at
    ``x + flow(x) + d`` (linearity), so a refinement step re-reads the content under its
    current flow without resampling every channel for every window offset.

    ``exemplar (B, C, He, We)`` and ``content (B, C, Hc, Wc)`` are L2-normalised features;
    ``radius`` is the default window half-side of `lookup`.
    """

    def __init__(self, exemplar: Tensor, content: Tensor, radius: int = 4) -> None:
        b, _, he, we = exemplar.shape
        hc, wc = content.shape[-2:]
        volume = torch.einsum("bce,bck->bek", exemplar.flatten(2), content.flatten(2))
        self.volume = volume.reshape(b * he * we, 1, hc, wc)  # one content-grid map per cell
        self.batch, self.radius = b, radius
        self.exemplar_size, self.content_size = (he, we), (hc, wc)

    @property
    def similarity(self) -> Tensor:
        """The raw volume as ``(B, He*We, Hc*Wc)``: exemplar cells by content cells."""
        he, we = self.exemplar_size
        return self.volume.view(self.batch, he * we, -1)

    def __call__(self, flow: Tensor, radius: int | None = None) -> Tensor:
        return self.lookup(flow, radius)

    def lookup(self, flow: Tensor, radius: int | None = None) -> Tensor:
        """The window ``(B*K, (2r+1)^2, He, We)`` around ``x + flow(x)`` (row-major over dy,
        then dx, as `local_correlation`).

        ``flow (B*K, 2, He, We)`` in content-grid pixels may hold ``K`` flows per item
        (item-major), all read from that item's volume without copying it; samples outside
        the content read 0.
        """
        r = self.radius if radius is None else radius
        bk, _, h, w = flow.shape
        if bk % self.batch:
            raise ValueError(f"{bk} flows for a volume of {self.batch} items")
        b, k = self.batch, bk // self.batch
        hc, wc = self.content_size
        centre = (base_grid(h, w, flow.device, flow.dtype) + flow).permute(0, 2, 3, 1)
        centre = centre.reshape(b, k, h * w, 2).transpose(1, 2).reshape(-1, k, 1, 2)
        coords = centre + _window_offsets(r, flow.device, flow.dtype).view(1, 1, -1, 2)
        scale = torch.tensor(
            [2.0 / max(wc - 1, 1), 2.0 / max(hc - 1, 1)], device=flow.device, dtype=flow.dtype
        )
        sampled = F.grid_sample(
            self.volume, coords * scale - 1.0, mode="bilinear", padding_mode="zeros",
            align_corners=True,
        )  # (B*H*W, 1, K, (2r+1)^2)
        return sampled.view(b, h, w, k, -1).permute(0, 3, 4, 1, 2).reshape(bk, -1, h, w)


def _window_offsets(radius: int, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """``(2r+1, 2r+1, 2)`` (dx, dy) offsets, row-major over dy then dx."""
    d = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([dx, dy], dim=-1)


def warp_features(features: Tensor, flow: Tensor) -> Tensor:
    """Sample content features under a backward flow given at any resolution (pixels)."""
    height, width = features.shape[-2:]
    return warp_image(features, resize_flow(flow, height, width))


def window_softmax_loss(window: Tensor, temperature: float = 0.1) -> Tensor:
    """Paper's weak loss per item of a correlation window ``(B, (2r+1)^2, H, W)``:
    ``-mean_m log softmax_n(corr(m, m+n) / T)[centre]``."""
    centre = window.shape[1] // 2
    return -(window / temperature).log_softmax(dim=1)[:, centre].flatten(1).mean(1)


def softmax_alignment_loss(
    warped_content: Tensor, exemplar: Tensor, radius: int = 4, temperature: float = 0.1
) -> Tensor:
    """`window_softmax_loss` of warped content features against the exemplar's, per item.

    After a correct warp every exemplar feature best matches the warped content feature at the
    same place. Inputs are L2-normalised ``(B, C, H, W)``; lower is better.
    """
    return window_softmax_loss(local_correlation(exemplar, warped_content, radius), temperature)


def alignment_loss(
    vgg: VGG19Features, content: Tensor, exemplar: Tensor, flow: Tensor | None = None
) -> Tensor:
    """The shared warp objective for square analysis views, re-reading warped content features.

    ``flow`` is at the analysis resolution (pixels); ``None`` means identity.
    """
    warped = content if flow is None else warp_image(content, flow)
    feats_w = normalised_features(vgg, warped, (ALIGNMENT_TAP,))[ALIGNMENT_TAP]
    feats_e = normalised_features(vgg, exemplar, (ALIGNMENT_TAP,))[ALIGNMENT_TAP]
    return softmax_alignment_loss(feats_w, feats_e)


def alignment_loss_before_after(
    vgg: VGG19Features, content: Tensor, exemplar: Tensor, flow: Tensor
) -> tuple[Tensor, Tensor]:
    """``alignment_loss`` at identity and at ``flow`` in one VGG pass over content, warped
    content and exemplar (the exemplar's features serve both): the objective's before/after pair
    for a caller judging one flow (method.md, "Correlation and the alignment objective")."""
    views = torch.cat([content, warp_image(content, flow), exemplar])
    feats = normalised_features(vgg, views, (ALIGNMENT_TAP,))[ALIGNMENT_TAP]
    plain, warped, target = feats.chunk(3)
    return softmax_alignment_loss(plain, target), softmax_alignment_loss(warped, target)
