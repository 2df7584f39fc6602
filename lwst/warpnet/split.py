"""Which images are held out of warp-network training (for the benchmark), by file name only.

A hash of the base name rather than a random draw, so that every engineer and every machine
agrees on the split without sharing a list.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path


def is_held_out(filename: str | Path) -> bool:
    """True for about one image in ten: ``crc32(basename) % 10 == 0``."""
    return zlib.crc32(Path(filename).name.encode()) % 10 == 0


def training_files(paths: Iterable[str | Path]) -> list[Path]:
    """The paths that may be trained on, sorted for reproducibility."""
    return sorted(Path(p) for p in paths if not is_held_out(p))


def held_out_files(paths: Iterable[str | Path]) -> list[Path]:
    """The paths reserved for evaluation, sorted."""
    return sorted(Path(p) for p in paths if is_held_out(p))
