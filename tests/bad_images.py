"""Factories for real image files of every awkward kind (shared by io, CLI and pipeline tests)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gradient_rgb(width: int = 48, height: int = 32) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    arr = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def write_png_bomb(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels (never decodable cheaply)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr_at = data.index(b"IHDR")
    struct.pack_into(">II", data, ihdr_at + 4, width, height)
    crc = zlib.crc32(bytes(data[ihdr_at : ihdr_at + 17])) & 0xFFFFFFFF
    struct.pack_into(">I", data, ihdr_at + 17, crc)
    path.write_bytes(bytes(data))
    return path


def write_truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    gradient_rgb(64, 64).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def write_bad_cases(folder: Path) -> dict[str, Path]:
    """One file per refusal reason: name -> path (``missing`` is never created)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "not_image.png").write_text("this is text, not pixels\n")
    return {
        "missing": folder / "missing.png",
        "empty": folder / "empty.png",
        "truncated": write_truncated_jpeg(folder / "truncated.jpg"),
        "not_image": folder / "not_image.png",
        "bomb": write_png_bomb(folder / "bomb.png"),
    }


def write_mode_cases(folder: Path) -> dict[str, Path]:
    """Valid images in every mode lwst must handle: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    base = gradient_rgb()
    paths = {}
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    for name, img, fmt in [
        ("rgba", rgba, "PNG"),
        ("grey", base.convert("L"), "PNG"),
        ("palette", base.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        ("cmyk", base.convert("CMYK"), "JPEG"),
        ("grey16", Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257), "PNG"),
    ]:
        path = folder / f"{name}.{'jpg' if fmt == 'JPEG' else 'png'}"
        img.save(path, format=fmt)
        paths[name] = path
    # EXIF orientation 6 (rotate 90 CW to display): stored 48x32, displayed 32x48.
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(folder / "exif_rot.jpg", format="JPEG", exif=exif.tobytes(), quality=95)
    paths["exif_rot"] = folder / "exif_rot.jpg"
    return paths
