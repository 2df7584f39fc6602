"""Refusals that protect the user's files and the run: checked before any compute.

- An output may never land on an input (``--out photo.jpg --content photo.jpg`` would replace
  the user's photo), nor two outputs on one file.
- An image too small for VGG's pooling (relu5_1 is side / 16) is refused in one line instead of
  failing deep inside the network.
- A checkpoint is loaded weights-only (`load_weights_only`): a pickle that would run code, or a
  truncated file, is one line, never executed. Every checkpoint a user can name goes here.
"""

from __future__ import annotations

import io
import os
import posixpath

import torch

from lwst import storage
from lwst.errors import InputError
from lwst.image_io import MIN_SIDE, ImageInputError

# VGG-19 pools four times before relu5_1 (the deepest style layer): a side under 16 px has no
# relu5_1 cell left (lwst.render.MIN_LEVEL_SIDE keeps every pyramid level at this side too).
MIN_TEXTURE_SIDE = 16


def location(uri: str) -> str:
    """A comparable name for ``uri``: the real path locally (symlinks and ``..`` resolved),
    the normalised URI elsewhere."""
    if storage.is_local(uri):
        return os.path.realpath(storage.local_path(uri))
    scheme, rest = uri.split("://", 1)
    return f"{scheme.lower()}://{posixpath.normpath(rest)}"


def check_outputs_apart(inputs: dict[str, str | None], outputs: dict[str, str | None],
                        output_noun: str = "output") -> None:
    """Refuse (ValueError, one line) an output that is one of the inputs or another output,
    named by the labels given (the CLI's are its options: ``the --out file``)."""
    seen: dict[str, str] = {}
    for label, uri in inputs.items():
        if uri:
            seen.setdefault(location(uri), f"the {label} input")
    for label, uri in outputs.items():
        if not uri:
            continue
        where = location(uri)
        if where in seen:
            raise InputError(f"{label} {uri} is also {seen[where]}; refusing to overwrite it")
        seen[where] = f"the {label} {output_noun}"


def check_fits(height: int, width: int, what: str, texture: bool,
               option: str = "--size") -> None:
    """Refuse an image too small to process (`ImageInputError`, one line): every image needs
    `MIN_SIDE` px, the texture stage's VGG passes `MIN_TEXTURE_SIDE`. The remedy names the
    ``option`` to raise (a manifest's column of the same name, with ``_``, works too)."""
    need, why = (MIN_TEXTURE_SIDE, "texture rendering needs") if texture else (MIN_SIDE, "needs")
    if min(height, width) < need:
        raise ImageInputError(
            f"{what} is {width}x{height}: {why} a shorter side of at least {need} px (raise "
            f"{option}, or use a less extreme aspect ratio)")


def check_texture_fits(height: int, width: int) -> None:
    """`check_fits` of the texture exemplar, which ``--style-size`` sizes."""
    check_fits(height, width, "the texture exemplar", True,
               option="--style-size (or --size, its default)")


class BadCheckpointError(InputError):
    """A checkpoint that is truncated, not a checkpoint, or holds more than tensors and plain
    values (a pickle that would run code is refused, never executed)."""


def load_weights_only(path: str | os.PathLike[str], what: str = "checkpoint",
                      device: torch.device | str = "cpu") -> object:
    """``torch.load(weights_only=True)``: tensors, numbers, strings, lists, dicts and nothing
    else, or `BadCheckpointError` in one line naming ``what`` and ``path``."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        # The first sentence: torch's messages go on with advice about torch, cut mid-word.
        reason = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__
        raise BadCheckpointError(f"{what} {os.fspath(path)}: not a valid weights-only "
                                 f"checkpoint ({type(exc).__name__}: {reason})") from None
    bad = first_non_finite(payload)
    if bad is not None:
        raise BadCheckpointError(
            f"{what} {os.fspath(path)}: holds NaN or infinite values (first in '{bad}'): the "
            "weights of a training run that diverged")
    return payload


def save_atomic(obj: object, path: str | os.PathLike[str]) -> None:
    """``torch.save`` so that a reader sees the old file or the whole new one, never a torn
    write (a Ctrl-C or a full disk mid-checkpoint): serialised in memory, then written by
    `lwst.storage.write_bytes_atomic` (which also creates the folder)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    storage.write_bytes_atomic(path, buffer.getvalue())


def first_non_finite(payload: object, prefix: str = "") -> str | None:
    """The key path of the first floating-point tensor with a NaN or an infinity, or None.

    A diverged training run's weights load and run, and then poison everything downstream: NaN
    fields crash OpenCV's DIS with a segmentation fault, NaN images are written as black."""
    if isinstance(payload, torch.Tensor):
        floating = payload.is_floating_point() or payload.is_complex()
        return prefix or "tensor" if floating and not torch.isfinite(payload).all() else None
    if isinstance(payload, dict):
        items = payload.items()
    elif isinstance(payload, list | tuple):
        items = enumerate(payload)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None
