"""The images a run trains on, its fixed bank of seeded crops, and the bank's VGG encoding.

The bank is built and encoded once per run (minutes on a CPU), so a training step runs only
the decoder and one encoder pass on its output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.decoder_training.config import DecoderTrainConfig, DecoderTrainingError, require
from lwst.errors import InputError
from lwst.image_io import ImageInputError, read_image
from lwst.manifest import PATH_COLUMNS
from lwst.storage import IMAGE_SUFFIXES
from lwst.vgg import VGG19Features
from lwst.warpnet.bank import gather_images, manifest_images, read_training_manifest
from lwst.warpnet.split import training_files

MANIFEST_COLUMNS = PATH_COLUMNS  # those a manifest names images in (`manifest_images`)


@dataclass(frozen=True)
class ImageSet:
    """The images a run trains on, and how many it found but left for evaluation."""

    paths: list[Path]
    held_out: int


def _listed(source: Path, option: str) -> list[Path]:
    """The image files one ``--images`` / ``--styles`` source names (a manifest is read and
    resolved as `lwst run` reads it, `read_training_manifest`)."""
    if source.is_dir():
        return gather_images([source])
    require(source.exists(), f"{option} {source}: no such folder or manifest")
    require(source.suffix.lower() not in IMAGE_SUFFIXES,
            f"{option}: {source} is an image, expected a folder or a CSV manifest "
            "(or Parquet, JSON Lines)")
    try:
        table = read_training_manifest(source)
    except InputError as exc:
        raise DecoderTrainingError(f"{option} {exc}") from None
    columns = [str(c) for c in table.columns]
    require(any(c in columns for c in MANIFEST_COLUMNS),
            f"{option} {source}: no {', '.join(MANIFEST_COLUMNS[:-1])} or "
            f"{MANIFEST_COLUMNS[-1]} column (columns: {', '.join(columns)[:160] or 'none'})")
    try:
        return manifest_images(table, source)
    except InputError as exc:
        raise DecoderTrainingError(f"{option} {exc}") from None


def training_images(sources: Sequence[str], option: str, what: str) -> ImageSet:
    """The trainable images of ``sources`` (held-out ones skipped), or one line saying why
    there are none."""
    found = sorted({p for source in sources for p in _listed(Path(source), option)})
    require(bool(found), f"no training {what}: none found in {', '.join(sources)} (folders: "
            f"{' '.join(IMAGE_SUFFIXES)} files; manifests: their {', '.join(MANIFEST_COLUMNS)} "
            "columns)")
    paths = training_files(found)
    require(bool(paths), f"no training {what}: {len(found)} found, all {len(found)} held out "
            "for evaluation (see docs/decoder_card.md)")
    return ImageSet(paths, len(found) - len(paths))


def _load_crops(paths: Sequence[Path], crop: int, per_image: int, seed: int,
                skip: Callable[[Path, str], None]) -> list[Tensor]:
    """A fixed bank of ``per_image`` seeded random crops (half mirrored) per image, uint8; an
    unreadable image is passed to ``skip`` with its reason and draws nothing (so the bank is
    the one its folder would give without it)."""
    generator = torch.Generator().manual_seed(seed)
    crops: list[Tensor] = []
    for path in paths:
        try:
            image = read_image(str(path))
        except ImageInputError as exc:
            skip(path, str(exc).removeprefix(f"{path}: "))
            continue
        height, width = image.shape[-2:]
        scale = crop * 1.25 / min(height, width)
        image = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=True,
                              align_corners=False, recompute_scale_factor=False).clamp(0, 1)
        height, width = image.shape[-2:]
        for i in range(per_image):
            top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
            patch = image[..., top:top + crop, left:left + crop]
            crops.append((patch.flip(-1) if i % 2 else patch).mul(255).round().to(torch.uint8))
    return crops


def crop_bank(images: ImageSet, what: str, config: DecoderTrainConfig, seed: int,
              warn: Callable[[str], None]) -> tuple[Tensor, int]:
    """``_load_crops`` of ``images``, warning once per unreadable image; the crops and how many
    images were skipped, or one line when none could be read."""
    skipped: list[str] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append(f"{path}: {reason}")
        warn(f"skipped {path}: {reason}")

    crops = _load_crops(images.paths, config.crop, config.crops_per_image, seed, skip)
    require(bool(crops), f"no usable training {what}: all {len(images.paths)} unreadable "
            f"(first: {skipped[0] if skipped else 'none'})")
    return torch.cat(crops), len(skipped)


def as_float(crops: Tensor, device: torch.device) -> Tensor:
    """uint8 crops as [0, 1] floats on ``device``."""
    return crops.to(device).float().div_(255.0)


@torch.no_grad()
def encode_bank(vgg: VGG19Features, crops: Tensor, taps: Sequence[str],
                device: torch.device, batch: int = 16) -> dict[str, Tensor]:
    """Encoder features of every crop at ``taps``, kept in float16 on the CPU."""
    out: dict[str, list[Tensor]] = {t: [] for t in taps}
    for i in range(0, len(crops), batch):
        feats = vgg(as_float(crops[i:i + batch], device), taps)
        for t in taps:
            out[t].append(feats[t].to("cpu", torch.float16))
    return {t: torch.cat(v) for t, v in out.items()}
