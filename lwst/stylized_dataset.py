"""A stylised dataset as a torch Dataset with its classes, read straight from an lwst output.

``lwst run`` writes its images flat (``images/<id>.<ext>``) and each item's class only in the
metadata (``label``). `StylizedImages` reads that metadata once and behaves like torchvision's
``ImageFolder`` over ``lwst export``'s layout of the same output: the same items (latest
outcome ``ok``, image present), the same ``classes`` (sorted labels; ``_unlabelled`` for items
without one, `lwst.export.UNLABELLED`), the same order (class, then file name), and the same
``(PIL image, class index)`` items, RGB as ImageFolder's default loader gives, so
torchvision's transforms apply unchanged. Nothing needs exporting first, and an ``s3://``
output is read through fsspec.

Safe in DataLoader workers: the dataset holds strings and numbers only, every read opens and
closes its own file (or does one ranged GET), and fsspec makes its filesystems afresh in a
forked worker; it pickles, so ``spawn`` workers take it too.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from lwst import storage
from lwst.export import select_images


def read_rgb(uri: str, storage_options: dict | None = None) -> Image.Image:
    """One image as an RGB PIL image (ImageFolder's default loader, through lwst.storage)."""
    data = storage.read_bytes(uri, **(storage_options or {}))
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class StylizedImages(Dataset):
    """``(image, class_index)`` of every item of an lwst output whose latest outcome is in
    ``status`` (``"ok"``, or a sequence with ``"skipped"`` too) and whose image is there.

    ``transform`` / ``target_transform`` as ImageFolder's; ``loader(uri)`` replaces the
    default `read_rgb` (e.g. to decode with torchvision.io). ``storage_options``: S3 settings
    for an ``s3://`` output (default: `lwst.s3`'s, from the environment). Attributes as
    ImageFolder's: ``classes``, ``class_to_idx``, ``samples`` / ``imgs`` (``(uri, index)``),
    ``targets``; and ``ids`` (each sample's item id) and ``left_out`` (reason -> count).
    """

    def __init__(self, out: str | os.PathLike[str], transform: Callable | None = None,
                 target_transform: Callable | None = None, status: str | Sequence[str] = "ok",
                 storage_options: dict[str, Any] | None = None,
                 loader: Callable[[str], Any] | None = None):
        self.root = os.fspath(out)
        if storage_options is None and not storage.is_local(self.root):
            from lwst import s3

            storage_options = s3.storage_options()
        options = dict(storage_options or {})
        statuses = (status,) if isinstance(status, str) else tuple(status)
        selection = select_images(self.root, statuses, options)
        self.classes: list[str] = selection.classes
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = [(image.uri, self.class_to_idx[image.label])
                                               for image in selection.images]
        self.imgs = self.samples
        self.targets: list[int] = [index for _, index in self.samples]
        self.ids: list[str] = [image.id for image in selection.images]
        self.left_out: dict[str, int] = dict(selection.left_out)
        self.transform, self.target_transform = transform, target_transform
        self.loader = loader or functools.partial(read_rgb, storage_options=options)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        uri, target = self.samples[index]
        image = self.loader(uri)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        return (f"StylizedImages({self.root!r}: {len(self)} images, {len(self.classes)} "
                f"classes)")
