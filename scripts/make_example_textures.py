"""Make the two procedural texture exemplars shipped in examples/ (our own work, MIT).

The artworks in ../shared/data may not be redistributed, so the example texture exemplars are
drawn here: short oriented brush strokes in a warm palette, and a stained-glass Voronoi mosaic.
Run: python scripts/make_example_textures.py examples/
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np


def brush_strokes(size: int = 384, n: int = 2200, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    palette = np.array(
        [
            [32, 60, 140],
            [40, 110, 200],
            [60, 170, 240],
            [30, 30, 60],
            [150, 90, 40],
            [220, 200, 120],
            [90, 40, 160],
        ],
        dtype=np.float64,
    )
    canvas = np.full((size, size, 3), 235, np.uint8)
    for _ in range(n):
        x, y = rng.uniform(0, size, 2)
        angle = np.sin(x / 40.0) + np.cos(y / 55.0) + rng.normal(0, 0.25)
        length = rng.uniform(8, 26)
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        color = palette[rng.integers(len(palette))] + rng.normal(0, 18, 3)
        cv2.line(
            canvas,
            (int(x - dx), int(y - dy)),
            (int(x + dx), int(y + dy)),
            np.clip(color, 0, 255).tolist(),
            int(rng.integers(3, 8)),
            cv2.LINE_AA,
        )
    return cv2.GaussianBlur(canvas, (3, 3), 0)


def mosaic(size: int = 384, n: int = 260, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, size, (n, 2)).astype(np.float32)
    subdiv = cv2.Subdiv2D((0, 0, size, size))
    for p in points:
        subdiv.insert((float(p[0]), float(p[1])))
    facets, _ = subdiv.getVoronoiFacetList([])
    canvas = np.zeros((size, size, 3), np.uint8)
    palette = np.array(
        [
            [40, 60, 200],
            [30, 160, 230],
            [60, 140, 40],
            [160, 60, 40],
            [200, 200, 210],
            [120, 40, 130],
        ],
        dtype=np.float64,
    )
    for facet in facets:
        color = palette[rng.integers(len(palette))] + rng.normal(0, 25, 3)
        cv2.fillConvexPoly(
            canvas, facet.astype(np.int32), np.clip(color, 0, 255).tolist(), cv2.LINE_AA
        )
        cv2.polylines(canvas, [facet.astype(np.int32)], True, (20, 20, 20), 3, cv2.LINE_AA)
    return canvas


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples")
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "texture_strokes.jpg"), brush_strokes(), [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(out / "texture_mosaic.jpg"), mosaic(), [cv2.IMWRITE_JPEG_QUALITY, 90])
