"""A bank of painted copies of training images, made with the product's own texture renderer.

The paper's artistic augmentation: the network should see paintings, not only photos. Each copy
is the image rendered with a style: by default multi-scale Gatys with a cheap schedule
(`CHEAP_SCHEDULE`, 6-13 s a copy at 128 px on the CPU), or a feed-forward renderer (``adain``,
``wct``: a fraction of a second at 256 px, so hundreds of copies are affordable). Saved as
``<image stem>__<style stem>.png`` (``...__<style stem>.<renderer>.png`` for the feed-forward
ones) so ``train.prepare_bank`` (``--painted-bank``) can pick up the copies of each image. Use
training styles only; held-out styles belong to the benchmark.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from lwst.config import ANALYSIS_SIZE, RenderConfig
from lwst.correlation import analysis_view
from lwst.image_io import read_image, write_png
from lwst.renderers import render
from lwst.vgg import VGG19Features

CHEAP_SCHEDULE = RenderConfig(levels=2, iterations=(40, 20))


def painting_config(renderer: str) -> RenderConfig:
    """The render settings of a painted copy: the cheap Gatys schedule, or a feed-forward
    renderer at full strength."""
    if renderer == "gatys":
        return CHEAP_SCHEDULE
    return RenderConfig(renderer=renderer)


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
            suffix = "" if config.renderer == "gatys" else f".{config.renderer}"
            out = out_dir / f"{image_path.stem}__{style_path.stem}{suffix}.png"
            if not out.exists():
                content = analysis_view(read_image(str(image_path)), size)
                style = analysis_view(read_image(str(style_path)), size)
                result = render(content, style, config, vgg, seed=seed, measure=False)
                write_png(result.image, str(out))
                progress(f"painted {out.name} in {result.seconds:.1f} s")
            written.append(out)
    return written
