"""A bank of painted copies of training images, made with the product's own texture renderer.

The paper's artistic augmentation: the network should see paintings, not only photos. Each copy
is ``render_texture(image, style)`` at the analysis size with a cheap schedule, saved as
``<image stem>__<style stem>.png`` so ``train.prepare_bank`` (``--painted-bank``) can pick up
the copies of each image. Use training styles only; held-out styles belong to the benchmark.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from lwst.config import ANALYSIS_SIZE, RenderConfig
from lwst.correlation import analysis_view
from lwst.image_io import read_image, write_png
from lwst.render import render_texture
from lwst.vgg import VGG19Features

CHEAP_SCHEDULE = RenderConfig(levels=2, iterations=(40, 20))


def paint_bank(
    images: Sequence[Path],
    styles: Sequence[Path],
    out_dir: Path,
    vgg: VGG19Features,
    copies_per_image: int = 1,
    config: RenderConfig = CHEAP_SCHEDULE,
    seed: int = 0,
    size: int = ANALYSIS_SIZE,
    progress: Callable[[str], None] = print,
) -> list[Path]:
    """Paint every image with ``copies_per_image`` seeded random styles; skip existing files."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image_path in images:
        for style_path in rng.sample(list(styles), copies_per_image):
            out = out_dir / f"{image_path.stem}__{style_path.stem}.png"
            if not out.exists():
                content = analysis_view(read_image(str(image_path)), size)
                style = analysis_view(read_image(str(style_path)), size)
                result = render_texture(content, style, config, vgg, seed=seed)
                write_png(result.image, str(out))
                progress(f"painted {out.name} in {result.seconds:.1f} s")
            written.append(out)
    return written
