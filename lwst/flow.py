"""Dense backward flow fields: apply, resize, measure, picture, and store as Middlebury ``.flo``.

Convention (docs/method.md): a flow ``(B, 2, H, W)`` in pixels at the warped output's resolution,
``warped(x, y) = content(x + u(x, y), y + v(x, y))``, channel 0 = u (right), 1 = v (down).
Pixel centres sit at integer coordinates, hence ``align_corners=True`` throughout.

Coordinates: *pixel* ``(x, y)``, ``(0, 0)`` the top-left pixel's centre (`base_grid`), or
*normalised* as ``grid_sample`` reads them with ``align_corners=True``: -1 and 1 at the first
and last pixel centres of each axis. `pixel_to_normalised` and `normalised_to_pixel` convert
between the two. Affine maps share the flow's backward sense
(`lwst.parametric`: ``(B, 2, 3)``, output location -> the content location it samples).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lwst import storage
from lwst.errors import InputError


def base_grid(height: int, width: int, device=None, dtype=torch.float32,
              span: tuple[int, int] | None = None) -> Tensor:
    """Pixel coordinates ``(1, 2, H, W)`` of a ``height`` x ``width`` grid: channel 0 = x,
    channel 1 = y. With ``span = (H', W')`` the grid's corner nodes sit on the corner pixels of
    an ``H' x W'`` image (``align_corners=True``) and the coordinates are that image's pixels.

    Own, not kornia's ``create_meshgrid``: flows are channel-first, and in bfloat16 its
    ``linspace`` rounds coordinates beyond 256 differently from ``arange``."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    grid = torch.stack([xs, ys]).unsqueeze(0)
    if span is None:
        return grid
    return grid * _span_scale((height, width), span, device, dtype)


def _span_scale(grid: tuple[int, int], image: tuple[int, int], device=None,
                dtype=torch.float32) -> Tensor:
    """``(1, 2, 1, 1)`` pixels of ``image (H, W)`` per node step of a ``grid (h, w)`` spanning
    it corner to corner (``align_corners=True``)."""
    (h0, w0), (height, width) = grid, image
    return torch.tensor(
        [(width - 1) / max(w0 - 1, 1), (height - 1) / max(h0 - 1, 1)], device=device, dtype=dtype
    ).view(1, 2, 1, 1)


def pixel_to_normalised(points: Tensor, height: int, width: int,
                        displacement: bool = False) -> Tensor:
    """Pixel ``(x, y)`` (last dim) of a ``height`` x ``width`` image -> normalised coordinates
    (module docstring); with ``displacement``, a difference of two points (no offset).

    Own, not kornia's ``normalize_pixel_coordinates``: that multiplies by a rounded
    ``2 / (W - 1)``, one rounding more than this division, so its coordinates differ in the last
    bit from those every field and figure here was made with."""
    x = 2.0 * points[..., 0] / max(width - 1, 1)
    y = 2.0 * points[..., 1] / max(height - 1, 1)
    if not displacement:
        x, y = x - 1.0, y - 1.0
    return torch.stack([x, y], -1)


def normalised_to_pixel(points: Tensor, height: int, width: int,
                        displacement: bool = False) -> Tensor:
    """The inverse of `pixel_to_normalised`: normalised ``(x, y)`` (last dim) -> pixels."""
    if not displacement:
        points = points + 1.0
    x = points[..., 0] * max(width - 1, 1) / 2.0
    y = points[..., 1] * max(height - 1, 1) / 2.0
    return torch.stack([x, y], -1)


def sampling_grid(flow: Tensor) -> Tensor:
    """Backward flow in pixels -> the ``(B, H, W, 2)`` normalised grid ``grid_sample`` wants."""
    _, _, height, width = flow.shape
    coords = base_grid(height, width, flow.device, flow.dtype) + flow
    return pixel_to_normalised(coords.permute(0, 2, 3, 1), height, width)


def warp_image(image: Tensor, flow: Tensor, mode: str = "bilinear",
               padding: str = "zeros") -> Tensor:
    """Backward-warp ``image (B, C, H, W)`` by ``flow (B, 2, H, W)``.

    ``padding`` is ``grid_sample``'s: with ``"zeros"`` outside samples are 0, and so is the
    outside neighbour a sample within half a pixel of the edge interpolates with, which darkens
    it although `hole_mask` counts it as inside; ``"border"`` repeats the edge there, which is
    what an image that is then inpainted wants (`lwst.stylize.apply_geometry`)."""
    if image.shape[-2:] != flow.shape[-2:]:
        raise ValueError(
            f"image {tuple(image.shape[-2:])} and flow {tuple(flow.shape[-2:])} differ"
        )
    return F.grid_sample(
        image,
        sampling_grid(flow.to(image.dtype)),
        mode=mode,
        padding_mode=padding,
        align_corners=True,
    )


def hole_mask(flow: Tensor) -> Tensor:
    """``(B, 1, H, W)`` bool: True where the flow samples outside the content (to inpaint)."""
    _, _, height, width = flow.shape
    coords = base_grid(height, width, flow.device, flow.dtype) + flow
    x, y = coords[:, 0:1], coords[:, 1:2]
    return (x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5)


def resize_flow(flow: Tensor, height: int, width: int) -> Tensor:
    """Bilinearly resample a flow to ``(height, width)``, rescaling its pixel units."""
    _, _, h0, w0 = flow.shape
    if (h0, w0) == (height, width):
        return flow
    resized = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=True)
    return resized * _span_scale((h0, w0), (height, width), flow.device, flow.dtype)


@dataclass(frozen=True)
class FlowStats:
    """Warp magnitude in pixels and as a fraction of the image diagonal (size-independent)."""

    mean_px: float
    p95_px: float
    max_px: float
    mean_frac: float


def flow_stats(flow: Tensor) -> FlowStats:
    """Magnitude statistics of one flow ``(1, 2, H, W)`` (or the whole batch pooled)."""
    magnitude = flow.detach().float().pow(2).sum(1).sqrt().flatten()
    _, _, height, width = flow.shape
    diagonal = float(np.hypot(height, width))
    mean = float(magnitude.mean())
    return FlowStats(
        mean_px=mean,
        p95_px=float(torch.quantile(magnitude, 0.95)) if magnitude.numel() else 0.0,
        max_px=float(magnitude.max()),
        mean_frac=mean / diagonal,
    )


def flow_picture(flow: Tensor) -> Tensor:
    """Colour-wheel picture ``(B, 3, H, W)`` in [0, 1] (torchvision's Middlebury colouring)."""
    from torchvision.utils import flow_to_image  # imported here: see `lwst.image_io._resize`

    return flow_to_image(flow.detach().float().cpu()).float() / 255.0


FLOW_SUFFIX = ".flo"


def check_flow_name(uri: str | os.PathLike[str]) -> None:
    """Refuse (ValueError, one line) a flow output not named ``*.flo``: the bytes are always
    Middlebury .flo, never written under an image's or a text file's name."""
    suffix = os.path.splitext(os.fspath(uri).split("?")[0])[1].lower()
    if suffix != FLOW_SUFFIX:
        raise InputError(f"{os.fspath(uri)}: unsupported flow suffix {suffix or '(none)'!r}; "
                         f"a flow is written as Middlebury {FLOW_SUFFIX} (name it *{FLOW_SUFFIX})")


def encode_flo(flow: Tensor) -> bytes:
    """One flow ``(1, 2, H, W)`` or ``(2, H, W)`` as Middlebury ``.flo`` bytes (float32)."""
    if flow.dim() == 4:
        flow = flow[0]
    arr = np.ascontiguousarray(flow.detach().float().cpu().permute(1, 2, 0).numpy())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flow.flo"
        if not cv2.writeOpticalFlow(str(path), arr):
            raise ValueError(f"OpenCV could not encode a flow of shape {tuple(flow.shape)}")
        return path.read_bytes()


def write_flo(flow: Tensor, uri: str | os.PathLike[str], **storage_options: object) -> None:
    """Write one flow ``(1, 2, H, W)`` or ``(2, H, W)`` as Middlebury ``.flo``, atomically."""
    storage.write_bytes_atomic(uri, encode_flo(flow), **storage_options)


def read_flo(uri: str | os.PathLike[str], **storage_options: object) -> Tensor:
    """Read a Middlebury ``.flo`` into ``(1, 2, H, W)`` float32."""
    data = storage.read_bytes(uri, **storage_options)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flow.flo"
        path.write_bytes(data)
        arr = cv2.readOpticalFlow(str(path))
    if arr is None:
        raise InputError(f"{uri}: not a Middlebury .flo file")
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def end_point_error(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean end-point error in pixels per batch item, over ``valid`` pixels when given."""
    epe = (pred - target).pow(2).sum(1, keepdim=True).sqrt()
    if valid is None:
        return epe.flatten(1).mean(1)
    valid = valid.to(epe.dtype)
    return (epe * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)
