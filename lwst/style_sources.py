"""Where `lwst.transforms.RandomStylize` draws its styles from: a file, a folder or prefix
(listed once, as ``lwst make-manifest`` lists inputs), a tensor or PIL image, or a list of
files, tensors and PIL images, each checked at construction rather than in a DataLoader worker
mid-epoch. Every refusal is an `lwst.errors.InputError` naming the style (a missing file: an
`lwst.image_io.ImageInputError`, as `lwst.image_io.read_image` refuses one)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lwst import storage
from lwst.config import described
from lwst.errors import InputError
from lwst.image_io import ImageInputError, image_from_pil
from lwst.transform_checks import check_image

StyleSource = str | Path | Tensor | Image.Image
STYLES_RULE = ("styles must be an image file, a folder of them, an image tensor, a PIL image, "
               "or a list of files, tensors and PIL images")


def style_location(location: str | Path) -> list[StyleSource]:
    """One style path: a local folder's images (subfolders too), a local file, a remote image
    file (read at first use) or a remote folder's images (listed now). A local path that is
    neither, or a remote folder without images, is refused now, not in a worker mid-epoch as
    an 'unreadable style'."""
    if not storage.is_local(location):
        return [location] if names_an_image(location) else remote_folder(str(location))
    path = storage.local_path(location)
    if path.is_dir():
        found = [Path(p) for p in storage.list_images(location)]
        if not found:
            raise InputError(f"RandomStylize: no images in the style folder {location} "
                             "(subfolders searched too)")
        return list(found)
    if not path.exists():
        raise ImageInputError(f"RandomStylize: style {location}: no such file or folder")
    return [location]


def names_an_image(location: str | Path) -> bool:
    return Path(str(location).rstrip("/")).suffix.lower() in storage.IMAGE_SUFFIXES


def remote_folder(uri: str) -> list[StyleSource]:
    """The images under a remote prefix: the same listing as ``lwst make-manifest``'s."""
    try:
        found: list[StyleSource] = list(storage.list_images(uri))
    except Exception as exc:  # noqa: BLE001 - botocore and fsspec raise many kinds: one line
        raise InputError(f"RandomStylize: cannot list the style folder {uri}: "
                         f"{' '.join(str(exc).split()) or type(exc).__name__}") from exc
    if not found:
        raise InputError(f"RandomStylize: no images in the style folder {uri} (subfolders "
                         "searched too)")
    return found


def pil_style(image: Image.Image, subject: str) -> Tensor:
    """A PIL style as the ``(1, 3, H, W)`` uint8 tensor it is kept as (normalised as
    `lwst.image_io.image_from_pil` does: any mode, transparency over white), checked like a
    style tensor; uint8 keeps the pickled transform a quarter of float32's size."""
    style = (image_from_pil(image, f"RandomStylize: {subject}") * 255).round().to(torch.uint8)
    check_image(style, subject)
    return style


def style_list(styles: StyleSource | Iterable[StyleSource]) -> list[StyleSource]:
    """The styles to draw from, each checked now: one path (a file or folder), one tensor or
    PIL image (a single style), or an iterable of files, tensors and PIL images."""
    if isinstance(styles, str | Path):
        return style_location(styles)
    if isinstance(styles, Tensor):
        check_image(styles, "the style tensor")
        return [styles]
    if isinstance(styles, Image.Image):
        return [pil_style(styles, "the style image")]
    if isinstance(styles, np.ndarray):
        raise InputError(f"RandomStylize: {STYLES_RULE}; got a numpy array (torch.from_numpy("
                         "a).permute(2, 0, 1) for an H x W x 3 one)")
    if styles is None or isinstance(styles, bytes | dict) or not isinstance(styles, Iterable):
        raise InputError(f"RandomStylize: {STYLES_RULE}; got {described(styles)}")
    styles = list(styles)
    if not styles:
        raise InputError("RandomStylize: an empty list of styles")
    for i, style in enumerate(styles):
        if isinstance(style, Tensor):
            check_image(style, f"styles[{i}] (a tensor)")
        elif isinstance(style, Image.Image):
            styles[i] = pil_style(style, f"styles[{i}] (a PIL image)")
        elif isinstance(style, str | Path):
            if storage.is_local(style) and not storage.local_path(style).is_file():
                path = storage.local_path(style)
                reason = ("is a folder (give a folder alone, not in a list)" if path.is_dir()
                          else "no such file")
                raise ImageInputError(f"RandomStylize: styles[{i}] {style}: {reason}")
        else:
            raise InputError(f"RandomStylize: styles[{i}] must be a path, a tensor or a PIL "
                             f"image, got {described(style)}")
    return styles


def style_origin(styles: StyleSource | Iterable[StyleSource]) -> str:
    """Where the styles came from, for the error raised when none of them can be read."""
    if isinstance(styles, (str, Path)) and (
            storage.local_path(styles).is_dir() if storage.is_local(styles)
            else not names_an_image(styles)):
        return f"in the style folder {styles}"
    return "among the styles given"
