"""Safe image decoding and atomic encoding.

Every image enters lwst through `read_image`, which refuses what it cannot decode correctly
with a one-line `ImageInputError` (missing, empty, truncated, not an image, too small, too
large) and normalises every mode PIL knows (RGBA, LA, P, L, I;16, CMYK, EXIF orientation) to
an RGB float tensor ``(1, 3, H, W)`` in [0, 1]. The pixel count is checked from the header
before any pixel is decoded, so a decompression bomb costs nothing.

Not caught: a JPEG whose entropy-coded data is damaged but still decodes (bytes overwritten
mid-file). libjpeg recovers from it without an error, often without even a warning, and Pillow
swallows the warnings it gives; such a file decodes to garbled blocks. Only damage that stops
the decoder ("broken data stream", a truncated file) is refused here.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from lwst import storage
from lwst.config import SIZE_RANGE

# A 12000 x 8000 photo is 96 MP; anything larger in a style-transfer input is a mistake or an
# attack. PIL's own guard is set higher so that ours, with its clearer message, fires first.
MAX_PIXELS = 100_000_000
MIN_SIDE = 8
MAX_OUTPUT_SIDE = SIZE_RANGE[1]
Image.MAX_IMAGE_PIXELS = MAX_PIXELS * 2


class ImageInputError(ValueError):
    """A one-line, user-facing reason why an input image was refused."""


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 HxWx3 in [0, 1]; transparency is composited over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / scale, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:4]
        return rgba[..., :3] * alpha + (1.0 - alpha)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def decode_image(data: bytes, name: str = "image") -> Tensor:
    """Decode bytes to ``(1, 3, H, W)`` float32 RGB in [0, 1], or raise `ImageInputError`."""
    if not data:
        raise ImageInputError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageInputError(
                    f"{name}: {width}x{height} is {width * height / 1e6:.0f} MP, over the "
                    f"{MAX_PIXELS / 1e6:.0f} MP limit (possible decompression bomb); not decoded"
                )
            if min(width, height) < MIN_SIDE:
                raise ImageInputError(
                    f"{name}: {width}x{height} is too small (min side {MIN_SIDE})"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not an image file PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{name}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageInputError(f"{name}: corrupt or truncated image ({reason})") from None
    arr = _to_rgb_array(img)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).contiguous()


def read_image(
    uri: str | os.PathLike[str], max_side: int | None = None, **storage_options: object
) -> Tensor:
    """Read and decode an image from a path or fsspec URI, optionally resized (longest side)."""
    name = os.fspath(uri)
    try:
        data = storage.read_bytes(uri, **storage_options)
    except FileNotFoundError:
        raise ImageInputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageInputError(f"{name}: is a directory, not an image") from None
    except PermissionError:
        raise ImageInputError(f"{name}: permission denied") from None
    except storage.InputRefusedError as exc:  # FIFO, device, over the size cap
        raise ImageInputError(str(exc)) from None
    image = decode_image(data, name)
    return resize_longest(image, max_side) if max_side else image


def check_size(size: int | None) -> None:
    """Refuse output sizes that are absurd before spending any compute on them."""
    if size is not None and not (MIN_SIDE <= size <= MAX_OUTPUT_SIDE):
        raise ImageInputError(
            f"size {size} is outside the supported range {MIN_SIDE}..{MAX_OUTPUT_SIDE}"
        )


def resize_longest(image: Tensor, max_side: int) -> Tensor:
    """Resize ``(B, 3, H, W)`` so its longest side is ``max_side`` (antialiased, aspect kept)."""
    check_size(max_side)
    height, width = image.shape[-2:]
    scale = max_side / max(height, width)
    new_hw = [max(1, round(height * scale)), max(1, round(width * scale))]
    if new_hw == [height, width]:
        return image
    return TF.resize(image, new_hw, antialias=True).clamp(0.0, 1.0)


# Output formats by file suffix; anything else is refused rather than written as mislabelled PNG.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
# zlib level of written PNGs: 1 (OpenCV's default) encodes a 512-px output ~3x faster than
# PIL's default 6, for files 7-10 % larger (docs/benchmarks.md, "Pipeline").
PNG_LEVEL = 1


def output_format(uri: str | os.PathLike[str]) -> str:
    """The PIL format an output path's suffix names, or `ImageInputError` for other suffixes."""
    suffix = os.path.splitext(os.fspath(uri).split("?")[0])[1].lower()
    if suffix not in OUTPUT_FORMATS:
        raise ImageInputError(f"{os.fspath(uri)}: unsupported output suffix {suffix or '(none)'!r}"
                              f"; use one of {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def encode_image(image: Tensor, fmt: str = "PNG") -> bytes:
    """``(1, 3, H, W)`` or ``(3, H, W)`` float in [0, 1] -> PNG, JPEG or WebP bytes."""
    if image.dim() == 4:
        image = image[0]
    arr = (image.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255.0).round()
    buffer = io.BytesIO()
    extra = {"quality": 95} if fmt in ("JPEG", "WEBP") else {"compress_level": PNG_LEVEL}
    Image.fromarray(arr.astype(np.uint8), "RGB").save(buffer, format=fmt, **extra)
    return buffer.getvalue()


def encode_png(image: Tensor) -> bytes:
    """``(1, 3, H, W)`` or ``(3, H, W)`` float in [0, 1] -> PNG bytes."""
    return encode_image(image, "PNG")


def write_png(image: Tensor, uri: str | os.PathLike[str], **storage_options: object) -> None:
    """Write an image atomically (no partial file on any failure), encoded as its suffix says
    (PNG, JPEG, WebP; the name is kept for its callers)."""
    storage.write_bytes_atomic(uri, encode_image(image, output_format(uri)), **storage_options)
