"""Make the geometry exemplars shipped in examples/: drawings and paintings of redistributable
photos, so that the demo pairs relate in shape (a portrait onto a portrait painting,
sailing boats onto a drawing of sailing boats) and a newcomer's first run shows what the warp
is for. The artworks in ../shared/data may not be redistributed; these are derived by OpenCV's
non-photorealistic filters from public-domain / CC0 / Kodak-unrestricted photos (CREDITS.md).

Run once, at authoring time (nothing reads ../shared/data at run time or in tests):
    python scripts/make_example_exemplars.py examples/
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
SIDE = 384  # longest side, as the other examples


def _load(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    scale = SIDE / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def drawing(image: np.ndarray) -> np.ndarray:
    """A pencil drawing (grey strokes on white)."""
    grey, _ = cv2.pencilSketch(image, sigma_s=40, sigma_r=0.08, shade_factor=0.06)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def painting(image: np.ndarray) -> np.ndarray:
    """A flat-coloured painting (edge-preserving stylisation)."""
    return cv2.stylization(image, sigma_s=60, sigma_r=0.45)


def main(out: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    made = {
        "woman_painting.jpg": painting(_load(DATA / "maxsr_woman.jpg")),
        "sailboats_drawing.jpg": drawing(_load(examples / "sailboats.jpg")),
    }
    for name, image in made.items():
        cv2.imwrite(str(out / name), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples"))
