"""Make the geometry exemplars shipped in examples/: drawings and paintings of redistributable
photos, so that the demo pairs relate in shape (a portrait onto a portrait painting, a cat onto a
drawing of a cat) and a newcomer's first run shows what the warp is for.

Two exemplars are caricatures of their own content: the photo is first reshaped by a known
smooth warp (a Modigliani-like elongated face; a cat with bigger eyes), then painted or drawn.
A pair of different images (the astronaut onto the woman's portrait) shows the real use but a
coarse warp; a caricature shows unmistakably what the warp does (the face takes the painting's
long shape, the cat its big eyes). The artworks in ../shared/data may not be redistributed;
these are derived by OpenCV's non-photorealistic filters from public-domain / CC0 /
Kodak-unrestricted photos (CREDITS.md).

Run once, at authoring time (nothing reads ../shared/data at run time or in tests):
    python scripts/make_example_exemplars.py examples/
(`examples/cat.jpg` is scikit-image's `chelsea`, copied at 384 px like the other photos.)
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


def _remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Sample ``image`` at the maps; outside it, the median colour of its border (a flat
    background, not mirrored copies of the subject)."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = tuple(float(v) for v in np.median(border, axis=0))
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=fill)


def elongated(image: np.ndarray, squeeze: float = 0.75, stretch: float = 1.35,
              centre_y: float = 0.45) -> np.ndarray:
    """The image narrowed by ``squeeze`` and lengthened by ``stretch`` about its centre (at
    ``centre_y`` of the height): a Modigliani-like long face."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2, h * centre_y
    return _remap(image, cx + (xs - cx) / squeeze, cy + (ys - cy) / stretch)


def bulged(image: np.ndarray, centres: list[tuple[float, float]], strength: float = 0.6,
           radius: float = 0.14) -> np.ndarray:
    """The image magnified around each centre (fractions of width, height) by a Gaussian
    bulge of ``radius`` (fraction of the longest side): big eyes."""
    h, w = image.shape[:2]
    for fx, fy in centres:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xs - fx * w, ys - fy * h
        shrink = 1 - strength * np.exp(-(dx ** 2 + dy ** 2) / (radius * max(h, w)) ** 2)
        image = _remap(image, fx * w + dx * shrink, fy * h + dy * shrink)
    return image


def main(out: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    made = {
        "woman_painting.jpg": painting(_load(DATA / "maxsr_woman.jpg")),
        "sailboats_drawing.jpg": drawing(_load(examples / "sailboats.jpg")),
        "face_long_painting.jpg": painting(elongated(_load(examples / "face.jpg"))),
        "cat_bigeyes_drawing.jpg": drawing(bulged(_load(examples / "cat.jpg"),
                                                  [(0.33, 0.45), (0.67, 0.45)])),
    }
    for name, image in made.items():
        cv2.imwrite(str(out / name), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples"))
