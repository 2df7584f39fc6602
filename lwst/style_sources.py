"""Where `lwst.transforms.RandomStylize` draws its styles from: a file, a folder or prefix
(listed once, as ``lwst make-manifest`` lists inputs), or a list of files and tensors, each
checked at construction rather than in a DataLoader worker mid-epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from lwst import storage
from lwst.errors import InputError
from lwst.transform_checks import check_image

StyleSource = str | Path | Tensor


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
        raise FileNotFoundError(f"RandomStylize: style {location}: no such file or folder")
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


def style_list(styles: StyleSource | Sequence[StyleSource]) -> list[StyleSource]:
    if isinstance(styles, (str, Path)):
        return style_location(styles)
    if isinstance(styles, Tensor):
        check_image(styles, "the style tensor")
        return [styles]
    styles = list(styles)
    if not styles:
        raise InputError("RandomStylize: an empty list of styles")
    for i, style in enumerate(styles):
        if isinstance(style, Tensor):
            check_image(style, f"styles[{i}] (a tensor)")
        elif isinstance(style, (str, Path)):
            if storage.is_local(style) and not storage.local_path(style).is_file():
                raise FileNotFoundError(f"RandomStylize: styles[{i}] {style}: no such file")
        else:
            raise TypeError(f"RandomStylize: styles[{i}] must be a path or a tensor, got "
                            f"{type(style).__name__}")
    return styles


def style_origin(styles: StyleSource | Sequence[StyleSource]) -> str:
    """Where the styles came from, for the error raised when none of them can be read."""
    if isinstance(styles, (str, Path)) and (
            storage.local_path(styles).is_dir() if storage.is_local(styles)
            else not names_an_image(styles)):
        return f"in the style folder {styles}"
    return "among the styles given"
