"""Real content/exemplar pairs (issue 4 item 5): contact sheets and alignment figures.

For every ``pair_<name>_content.*`` / ``pair_<name>_style.*`` in the pairs folder: estimate the
warp with the learned network (and, for comparison, no warp), warp + inpaint the content as the
product does, and measure the mean cosine similarity of L2-normalised relu4_1 features between
the (warped) content and the exemplar at 256x256. Writes one small contact sheet per pair
(content | exemplar | warped | flow picture, square 256x256 analysis views shown at --panel px,
palette PNG so each stays thumbnail-sized) and a markdown table.

    .venv/bin/python benchmarks/real_pairs.py --out docs/pairs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

from lwst.config import WARP_PRECISIONS
from lwst.correlation import analysis_view, normalised_features
from lwst.flow import flow_picture, flow_stats, hole_mask, warp_image
from lwst.image_io import read_image
from lwst.inpaint import inpaint_holes
from lwst.vgg import VGG19Features, at_dtype, feature_dtype, load_vgg19
from lwst.warpnet.inference import predict_warp

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAIRS = ROOT.parent / "shared" / "data" / "pairs"


def find_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, content, exemplar) for every complete pair in ``folder``, sorted by name."""
    pairs = []
    for content in sorted(folder.glob("pair_*_content.*")):
        name = content.name[len("pair_") : content.name.rindex("_content")]
        styles = sorted(folder.glob(f"pair_{name}_style.*"))
        if styles:
            pairs.append((name, content, styles[0]))
    return pairs


def alignment(vgg: VGG19Features, image: torch.Tensor, exemplar: torch.Tensor) -> float:
    """Mean cosine similarity of L2-normalised relu4_1 features, location by location."""
    with torch.no_grad():
        feats = normalised_features(vgg, torch.cat([image, exemplar]), ("relu4_1",))["relu4_1"]
    return float((feats[0] * feats[1]).sum(0).mean())


def sheet(panels: list[torch.Tensor], size: int) -> Image.Image:
    """Side-by-side ``(1, 3, S, S)`` panels resized to ``size``, as a 256-colour image."""
    row = torch.cat([analysis_view(p.clamp(0, 1), size) for p in panels], dim=-1)[0]
    arr = (row.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr).quantize(colors=256, method=Image.Quantize.MEDIANCUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "pairs")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped network")
    parser.add_argument("--panel", type=int, default=160, help="panel side in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=WARP_PRECISIONS,
                        help="VGG features the warp is matched on (the library's default: auto)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vgg = load_vgg19("auto")  # the alignment figure is always measured in float32
    features_vgg = at_dtype(vgg, feature_dtype(args.precision, "cpu"))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, content_path, exemplar_path in find_pairs(args.pairs):
        content = analysis_view(read_image(str(content_path)))
        exemplar = analysis_view(read_image(str(exemplar_path)))
        started = time.perf_counter()
        flow, warpnet_id = predict_warp(content, exemplar, features_vgg, args.checkpoint)
        seconds = time.perf_counter() - started
        warped = inpaint_holes(warp_image(content, flow), hole_mask(flow)).image
        before, after = alignment(vgg, content, exemplar), alignment(vgg, warped, exemplar)
        sheet([content, exemplar, warped, flow_picture(flow)], args.panel).save(
            args.out / f"{name}.png", optimize=True
        )
        stats = flow_stats(flow)
        rows.append((name, before, after, stats.mean_px, stats.mean_frac, seconds))
        print(
            f"{name}: cos {before:.3f} -> {after:.3f}, "
            f"warp {stats.mean_px:.1f} px, {seconds:.2f} s",
            flush=True,
        )
    lines = [
        f"Network `{warpnet_id}`; VGG-19 `{vgg.source}`, warp features in "
        f"{str(features_vgg.mean.dtype).removeprefix('torch.')}; 256x256 analysis views.",
        "",
        "| pair | cos unwarped | cos warped | change | mean warp (px @256) | warp / diagonal "
        "| seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| [{n}]({n}.png) | {b:.3f} | {a:.3f} | {a - b:+.3f} | {m:.1f} | {f:.3f} | {s:.2f} |"
        for n, b, a, m, f, s in rows
    ]
    mean_b = sum(r[1] for r in rows) / len(rows)
    mean_a = sum(r[2] for r in rows) / len(rows)
    better = sum(r[2] > r[1] for r in rows)
    lines += [
        f"| **mean ({len(rows)} pairs)** | {mean_b:.3f} | {mean_a:.3f} | {mean_a - mean_b:+.3f} |"
        f" | | |",
        "",
        f"Warped content aligns better than unwarped on {better}/{len(rows)} pairs.",
    ]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
