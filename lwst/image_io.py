"""Safe image decoding and atomic encoding.

Every image enters lwst through `read_image`, which refuses what it cannot decode correctly
with a one-line `ImageInputError` (missing, empty, truncated, not an image, too small, too
large, HEIC) and normalises every mode PIL knows (RGBA, LA, P, L, I;16, I, F, CMYK, colour-key
transparency, EXIF orientation, embedded ICC profiles) to an sRGB float tensor ``(1, 3, H, W)``
in [0, 1]. The pixel count is checked from the header before any pixel is decoded, so a
decompression bomb costs nothing. A multi-frame file (animated GIF/WebP, multi-page TIFF)
gives its first frame.

Memory follows what the caller needs, not the file's megapixels: with ``max_side`` (the output
or texture size) or ``analysis_side`` (a geometry exemplar, which the warp only ever sees as its
square analysis view, so that view is what is returned) an image much larger than that is
converted to float and resized a band of rows at a time (the antialiased resize is separable:
the same pixels as resizing the whole float image, which is never held), and a JPEG is decoded
DCT-scaled (PIL's ``draft``: 1/2, 1/4 or 1/8) as long as it stays at least `REDUCE_MARGIN`
(`VIEW_MARGIN`) times the size used. An image under that margin is decoded and resized exactly
as before (bit-identical); a JPEG over it differs by a fraction of a grey level (0.04 mean,
0.6 max of 255 for a 12 MP JPEG at 128 px).

Not caught: a JPEG whose entropy-coded data is damaged but still decodes (bytes overwritten
mid-file). libjpeg recovers from it without an error, often without even a warning, and Pillow
swallows the warnings it gives; such a file decodes to garbled blocks. Only damage that stops
the decoder ("broken data stream", a truncated file) is refused here.
"""

from __future__ import annotations

import io
import math
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from lwst import storage
from lwst.config import size_refusal
from lwst.errors import InputError

try:  # LittleCMS bindings: absent from some Pillow builds
    from PIL import ImageCms
except ImportError:  # pragma: no cover - the wheels lwst installs have it
    ImageCms = None

# A 12000 x 8000 photo is 96 MP; anything larger in a style-transfer input is a mistake or an
# attack. PIL's own guard is set higher so that ours, with its clearer message, fires first.
MAX_PIXELS = 100_000_000
MIN_SIDE = 8
Image.MAX_IMAGE_PIXELS = MAX_PIXELS * 2
# An input is decoded reduced only while it stays at least this many times the size it is used
# at (`read_image`): the antialiased resize after it then decides the pixels, and an input under
# twice that size is decoded in full, exactly as without the reduction.
REDUCE_MARGIN = 4
# The same for a geometry exemplar read as its analysis view: a wider margin, as the view is
# made at once (the larger decode is never held); photos up to 4095 px on their shorter side
# give exactly the view they gave before.
VIEW_MARGIN = 8
# Standard ranges a 32-bit integer or float image may be stored in, tried smallest first.
VALUE_RANGES = (1.0, 255.0, 65535.0)
# ISO BMFF brands of formats PIL cannot decode here (HEIF stills, iPhone photos).
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1",
               b"msf1"}
AVIF_BRANDS = {b"avif", b"avis"}
# File signatures PIL reads: a file that starts like one yet cannot be identified is damaged.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"),
              (b"MM\x00*", "TIFF"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"))


class ImageInputError(InputError):
    """A one-line, user-facing reason why an input image was refused."""


def value_scale(img: Image.Image, name: str) -> float | None:
    """What 32-bit integer (``I``) and float (``F``) pixels are divided by to land in [0, 1]:
    the smallest of `VALUE_RANGES` that holds the data's real range (a float photo stored as
    0..255 is not clipped to white); 16-bit modes are 0..65535. Data no standard range holds
    (negative, NaN, 0..255000) is refused rather than guessed at. None for other modes."""
    if img.mode.startswith("I;16"):
        return 65535.0
    if img.mode not in ("I", "F"):
        return None
    arr = np.asarray(img)
    low, high = float(np.min(arr)), float(np.max(arr))  # NaN propagates
    kind = "float" if img.mode == "F" else "32-bit integer"
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ImageInputError(f"{name}: {kind} image with non-finite values (NaN or infinity); "
                              "not supported")
    for top in VALUE_RANGES:
        if img.mode == "I" and top == 1.0:
            continue  # integers 0..1 are a two-level image stored as 0..255 would be read: 0/1
        if low >= 0.0 and high <= top:
            return top
    raise ImageInputError(
        f"{name}: {kind} image with values in [{low:g}, {high:g}], outside 0..1, 0..255 and "
        "0..65535; not supported (convert it to 8- or 16-bit)")


def _reduction(width: int, height: int, max_side: int | None,
               analysis_side: int | None) -> int:
    """The integer factor a ``width x height`` image may be reduced by (1: none), keeping it at
    least `REDUCE_MARGIN` times what the caller uses on its longest side (``max_side``), or
    `VIEW_MARGIN` times ``analysis_side`` on both (a square analysis view squashes the
    aspect)."""
    factors = []
    if max_side:
        factors.append(max(width, height) // (REDUCE_MARGIN * max_side))
    if analysis_side:
        factors.append(min(width, height) // (VIEW_MARGIN * analysis_side))
    return max(1, min(factors)) if factors else 1


def _has_alpha(img: Image.Image) -> bool:
    """Real alpha, or a colour key (tRNS: palette, RGB and greyscale PNGs, GIF)."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "RGB", "L") and "transparency" in img.info)


def _is_srgb(profile: object) -> bool:
    description = ImageCms.getProfileDescription(profile) or ""
    return "srgb" in description.lower().replace(" ", "")


# The ICC colour space of a profile -> the PIL modes its pixels may be converted from.
ICC_MODES = {"RGB": ("RGB", "RGBA"), "GRAY": ("L", "LA"), "CMYK": ("CMYK",)}


def _srgb_converter(img: Image.Image):
    """A function applying ``img``'s embedded ICC profile (Display P3, Adobe RGB, a CMYK press
    profile, a grey gamma) to it or to any crop of it: the pixels converted to sRGB, relative
    colorimetric, alpha kept. The identity for no profile and for an sRGB one (the pixels
    already are sRGB), and for a profile LittleCMS cannot use or a mode it cannot convert
    (16-bit, float): those pixels are read as sRGB, as without a profile."""
    icc = img.info.get("icc_profile")
    if not icc or ImageCms is None:
        return _same
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if _is_srgb(source):
            return _same
        modes = ICC_MODES.get(source.profile.xcolor_space.strip().upper(), ())
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return _same
    transforms: dict[str, object] = {}

    def convert(part: Image.Image) -> Image.Image:
        if part.mode in ("P", "PA"):
            part = part.convert("RGBA" if _has_alpha(part) else "RGB")
        elif part.mode in ("RGB", "L") and "transparency" in part.info:
            part = part.convert("RGBA" if part.mode == "RGB" else "LA")
        if part.mode not in modes:
            return part
        alpha = part.getchannel("A") if part.mode in ("RGBA", "LA") else None
        base = part.convert(part.mode[:-1]) if alpha is not None else part
        try:
            if base.mode not in transforms:
                transforms[base.mode] = ImageCms.buildTransform(
                    source, ImageCms.createProfile("sRGB"), base.mode, "RGB",
                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
            out = ImageCms.applyTransform(base, transforms[base.mode])
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            return part
        if alpha is not None:
            out.putalpha(alpha)
        return out

    return convert


def _same(img: Image.Image) -> Image.Image:
    return img


# Rows converted to float at a time when a large image is resized as it is converted.
BAND_ROWS = 256


def _resize(image: Tensor, hw: tuple[int, int]) -> Tensor:
    """torchvision's antialiased resize, imported here: torchvision costs ~1.7 s to import on
    2 cores, which a re-run with nothing to do (`flows.work_plan`) need not pay."""
    import torchvision.transforms.functional as TF

    return TF.resize(image, list(hw), antialias=True)


def _tensor(arr: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).contiguous()


def _resized_in_bands(img: Image.Image, scale: float | None, to_srgb,
                      target: tuple[int, int]) -> Tensor:
    """``img`` as float RGB resized to ``target`` (antialiased bilinear), converted to float a
    band of `BAND_ROWS` rows at a time: each band resized to the target width, then the
    stack to the target height. The antialiased resize is separable, so this gives the pixels
    the whole float image resized at once gives (bit-identical), without ever holding it."""
    width, height = img.size
    rows = []
    for top in range(0, height, BAND_ROWS):
        band = img.crop((0, top, width, min(height, top + BAND_ROWS)))
        part = _tensor(_to_rgb_array(to_srgb(band), scale))
        rows.append(_resize(part, (part.shape[-2], target[1])))
    return _resize(torch.cat(rows, dim=-2), target)


def _to_rgb_array(img: Image.Image, scale: float | None = None) -> np.ndarray:
    """Any PIL mode -> float32 HxWx3 in [0, 1]; transparency is composited over white.

    ``scale``: what ``I``/``F``/16-bit pixels are divided by (`value_scale`; 65535 for
    16-bit, the data's range for 32-bit integer and float)."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        if scale is None:
            scale = value_scale(img, "image")
        grey = np.clip(np.asarray(img, dtype=np.float64) / scale, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2)
    if _has_alpha(img):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:4]
        return rgba[..., :3] * alpha + (1.0 - alpha)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _unidentified(data: bytes, name: str) -> ImageInputError:
    """Why PIL could not identify ``data``: an unsupported container (HEIC), a known format
    whose header is damaged (a truncated TIFF), or not an image at all."""
    if data[4:8] == b"ftyp":
        brands = {data[8:12]} | {data[i:i + 4] for i in range(16, min(len(data), 64), 4)}
        if brands & HEIF_BRANDS and not brands & AVIF_BRANDS:
            return ImageInputError(f"{name}: HEIC/HEIF images are not supported (convert it "
                                   "to JPEG or PNG)")
        if brands & AVIF_BRANDS:
            from PIL import features

            if not features.check("avif"):
                return ImageInputError(f"{name}: AVIF images are not supported by this "
                                       "Pillow (convert it to JPEG or PNG)")
            return ImageInputError(f"{name}: corrupt or truncated image (AVIF)")
    for signature, fmt in SIGNATURES:
        if data.startswith(signature):
            return ImageInputError(f"{name}: corrupt or truncated image ({fmt} header "
                                   "unreadable)")
    return ImageInputError(f"{name}: not an image file PIL can read")


def _target_hw(height: int, width: int, max_side: int) -> tuple[int, int]:
    """`resize_longest`'s output size for a ``height x width`` image."""
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def decode_image(data: bytes, name: str = "image", max_side: int | None = None,
                 analysis_side: int | None = None, upscale: bool = True) -> Tensor:
    """Decode bytes to ``(1, 3, H, W)`` float32 sRGB in [0, 1], or raise `ImageInputError`.

    ``max_side``: resized so its longest side is that (`resize_longest`; ``upscale`` False:
    an image smaller than that keeps its own size); ``analysis_side``: its square analysis
    view instead (`read_image`)."""
    if max_side and analysis_side:
        raise ValueError("decode_image takes max_side or analysis_side, not both")
    if not data:
        raise ImageInputError(f"{name}: empty file (0 bytes)")
    if max_side:
        check_size(max_side)
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
            if max_side and not upscale:
                max_side = min(max_side, max(width, height))  # a quarter turn keeps it
            factor = _reduction(width, height, max_side, analysis_side)
            if factor > 1 and img.format == "JPEG":  # DCT scaling: 1/2, 1/4 or 1/8 decoded
                img.draft(img.mode, (-(-width // factor), -(-height // factor)))
            img.load()
            loaded = img.size
            img = ImageOps.exif_transpose(img)
            if img.size != loaded:  # rotated a quarter turn: the original's sides swap too
                width, height = height, width
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise _unidentified(data, name) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{name}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageInputError(f"{name}: corrupt or truncated image ({reason})") from None
    scale = value_scale(img, name)
    to_srgb = _srgb_converter(img)
    if factor > 1:  # much larger than used: resized as it is converted, never held as float
        target = ((analysis_side, analysis_side) if analysis_side
                  else _target_hw(height, width, max_side))
        image = _resized_in_bands(img, scale, to_srgb, target)
        return image if analysis_side else image.clamp(0.0, 1.0)
    image = _tensor(_to_rgb_array(to_srgb(img), scale))
    if max_side:
        target = _target_hw(height, width, max_side)
        if list(target) != list(image.shape[-2:]):
            image = _resize(image, target).clamp(0.0, 1.0)
    if analysis_side:
        from lwst.correlation import analysis_view  # not at import: correlation needs vgg

        image = analysis_view(image, analysis_side)
    return image


def read_image(
    uri: str | os.PathLike[str], max_side: int | None = None, *,
    analysis_side: int | None = None, upscale: bool = True, **storage_options: object
) -> Tensor:
    """Read and decode an image from a path or fsspec URI, optionally resized (longest side).

    ``max_side``: the result's longest side (up or down; what `resize_longest` gives from the
    full image; ``upscale`` False: down only, a smaller image keeps its size).
    ``analysis_side``: the ``(1, 3, S, S)`` analysis view the warp is estimated on
    (`lwst.correlation.analysis_view`, which leaves it as it is), for a geometry exemplar:
    ``S`` = `lwst.config.WarpConfig.analysis_size`. Either way a 50 MP photo costs memory in
    proportion to what is used, not to its megapixels: it is decoded reduced (module doc)."""
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
    except ValueError as exc:  # fsspec's refusals of the URI: an unknown protocol, a bad bucket
        raise ImageInputError(f"{name}: cannot read ({' '.join(str(exc).split())[:200]})") \
            from None
    return decode_image(data, name, max_side, analysis_side, upscale)


# Float input may overshoot [0, 1] by this much (resampling ringing); it is then clamped.
RANGE_TOLERANCE = 1e-3


def image_from_pil(img: Image.Image, name: str = "image") -> Tensor:
    """A PIL image (any mode) -> ``(1, 3, H, W)`` float32 sRGB in [0, 1], normalised as
    `decode_image` does (transparency over white, 16-bit and float scaled by their range, ICC
    profile applied); EXIF orientation is not applied (``ImageOps.exif_transpose`` first)."""
    try:
        img.load()
        scale = value_scale(img, name)
        arr = _to_rgb_array(_srgb_converter(img)(img), scale)
    except ImageInputError:
        raise
    except (OSError, ValueError) as exc:
        raise ImageInputError(f"{name}: PIL image in mode {img.mode!r} cannot be read "
                              f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
    return _tensor(arr)


def check_min_side(image: Tensor, name: str = "image") -> None:
    """Refuse an image tensor with a side under `MIN_SIDE` px, as `read_image` refuses such a
    file (`ImageInputError`)."""
    height, width = image.shape[-2:]
    if min(height, width) < MIN_SIDE:
        raise ImageInputError(f"{name} is {width}x{height} px; its sides must be at least "
                              f"{MIN_SIDE} px (as read_image requires)")


STYLIZE_BATCH_HINT = "stylize takes one image; lwst.stylize_images takes many"


def as_image(value: object, name: str = "image", check_side: bool = True,
             batch_hint: str = STYLIZE_BATCH_HINT) -> Tensor:
    """Check an image given to the Python API (`lwst.stylize.stylize`, `write_png`) and return
    it as ``(1, 3, H, W)`` float32 in [0, 1], or refuse it with one `ImageInputError` (a
    ValueError) naming ``name`` and the rule; ``batch_hint`` says what to do with a batch.

    Taken: a tensor ``(1, 3, H, W)`` or ``(3, H, W)``, float in [0, 1] (`read_image`'s output;
    an overshoot of `RANGE_TOLERANCE` is clamped) or uint8 (``torchvision.io.read_image``'s,
    divided by 255); a PIL image in any mode (`image_from_pil`). Refused: other types (a numpy
    array), shapes (channels last, a batch, 1 or 4 channels) and dtypes, float values outside
    [0, 1] (0..255 floats, ``Normalize``'d tensors), NaN or infinity, an empty tensor, sides
    under `MIN_SIDE` px (what `read_image` refuses; ``check_side=False``: left to the caller,
    who may first say it better, `check_min_side`)."""
    rule = f"{name} must be a (1, 3, H, W) or (3, H, W) tensor, float in [0, 1] or uint8"
    if isinstance(value, Image.Image):
        image = image_from_pil(value, name)
    elif not isinstance(value, Tensor):
        hint = (" (torch.from_numpy(a).permute(2, 0, 1) for an H x W x 3 array)"
                if type(value).__module__ == "numpy" else "")
        kind = type(value).__qualname__
        if type(value).__module__ not in ("builtins", None):
            kind = f"{type(value).__module__}.{kind}"
        raise ImageInputError(f"{rule}, or a PIL image; got {'None' if value is None else kind}"
                              f"{hint}")
    else:
        image = value.detach()
        shape = tuple(image.shape)
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            hint = ""
            if len(shape) in (3, 4) and shape[-1] in (1, 3, 4) and shape[-3] not in (1, 3, 4):
                hint = " (channels last? use .permute(2, 0, 1))"
            elif len(shape) == 4 and shape[0] != 1:
                hint = f" (a batch of {shape[0]}: {batch_hint})"
            elif len(shape) in (3, 4):
                hint = f" (RGB: 3 channels, not {shape[-3]})"
            raise ImageInputError(f"{rule}; got shape {shape}{hint}")
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        elif not image.is_floating_point() or image.is_complex():
            raise ImageInputError(f"{rule}; got {str(image.dtype).removeprefix('torch.')}")
        image = image.float()
    if image.numel() == 0:  # before any size rule: resizing it would divide by zero
        raise ImageInputError(f"{name} is empty ({image.shape[-1]}x{image.shape[-2]} px)")
    if check_side:
        check_min_side(image, name)
    if not bool(torch.isfinite(image).all()):
        raise ImageInputError(f"{name} has NaN or infinite values")
    low, high = image.min().item(), image.max().item()
    if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise ImageInputError(f"{rule}; got float values in [{low:.4g}, {high:.4g}] (divide "
                              "0..255 data by 255, undo Normalize)")
    return image.clamp(0.0, 1.0).contiguous()


def check_size(size: int | None) -> None:
    """Refuse output sizes that are absurd before spending any compute on them
    (`lwst.config.size_refusal`, the rule `lwst.config.validate` applies to the settings)."""
    refusal = None if size is None else size_refusal(size)
    if refusal:
        raise ImageInputError(f"size {refusal}")


def resize_longest(image: Tensor, max_side: int, upscale: bool = True) -> Tensor:
    """Resize ``(B, 3, H, W)`` so its longest side is ``max_side`` (antialiased, aspect kept);
    ``upscale`` False: only ever down, a smaller image is returned as it is."""
    check_size(max_side)
    height, width = image.shape[-2:]
    if not upscale and max(height, width) <= max_side:
        return image
    new_hw = _target_hw(height, width, max_side)
    if new_hw == (height, width):
        return image
    return _resize(image, new_hw).clamp(0.0, 1.0)


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


WRITE_BATCH_HINT = "write one image at a time, e.g. image[i]"


def encode_image(image: Tensor | Image.Image, fmt: str = "PNG", quality: int = 95,
                 name: str = "image") -> bytes:
    """One image -> PNG, JPEG or WebP bytes; ``quality`` (1..100, `lwst.config.QUALITY_RANGE`)
    for JPEG and WebP, a PNG has none.

    The image is what `stylize` takes (`as_image`'s rule): a ``(1, 3, H, W)`` or ``(3, H, W)``
    tensor, float in [0, 1] or uint8, or a PIL image. Anything else (0..255 floats, a batch,
    NaN, 1 or 4 channels) is refused with one `ImageInputError` naming ``name``: clamping
    it wrote a white, black or first-of-batch picture without a word.

    PIL for all three: its libjpeg-turbo JPEG is the same bytes as ``torchvision.io.
    encode_jpeg`` and 1.7x faster on the CPU (0.9 vs 1.5 ms at 512 px), and torchvision has
    no WebP encoder. WebP at libwebp's default effort (method 4)."""
    image = as_image(image, name, check_side=False, batch_hint=WRITE_BATCH_HINT)[0]
    arr = (image.cpu().permute(1, 2, 0).numpy() * 255.0).round()
    buffer = io.BytesIO()
    extra = ({"quality": int(quality)} if fmt in ("JPEG", "WEBP")
             else {"compress_level": PNG_LEVEL})
    Image.fromarray(arr.astype(np.uint8), "RGB").save(buffer, format=fmt, **extra)
    return buffer.getvalue()


def encode_png(image: Tensor | Image.Image) -> bytes:
    """One image (`encode_image`'s rule) -> PNG bytes."""
    return encode_image(image, "PNG")


def write_png(image: Tensor | Image.Image, uri: str | os.PathLike[str],
              **storage_options: object) -> None:
    """Write an image atomically (no partial file on any failure), encoded as its suffix says
    (PNG, JPEG, WebP; the name is kept for its callers). ``image``: what `stylize` takes and
    gives (`encode_image`), e.g. ``result.image``; anything else is refused with one
    `ImageInputError` naming ``image``."""
    storage.write_bytes_atomic(uri, encode_image(image, output_format(uri)), **storage_options)
