"""Real content/exemplar pairs (issues 4 and 11): contact sheets, alignment and safety figures.

For every ``pair_<name>_content.*`` / ``pair_<name>_style.*`` in the pairs folder: estimate the
warp as the product does (``lwst.warping.estimate_warp``: the learned network, the fold-free
field, the confidence and the fallback policy, all settable below), warp + inpaint the content,
and measure the mean cosine similarity of L2-normalised relu4_1 features between the (warped)
content and the exemplar at 256x256, the fold and stretch shares of the applied field, and the
confidence. Prints a markdown table; ``--out`` also writes it there as table.md with one small
contact sheet per pair (content | exemplar | warped | flow picture, square 256x256 analysis
views shown at --panel px, palette PNG so each stays thumbnail-sized; not with --no-sheets), and
``--json`` the raw figures with the network's id. Nothing is written unless asked, so measuring
runs leave docs/pairs alone; the published sheets are regenerated with

    .venv/bin/python benchmarks/real_pairs.py --out docs/pairs --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import add_warp_safety_options, data_root, make_parser, require_dir
from PIL import Image

from lwst.config import (
    WARP_METHODS,
    WARP_PRECISIONS,
    WarpConfig,
)
from lwst.correlation import analysis_view, normalised_features
from lwst.flow import flow_picture, flow_stats
from lwst.image_io import read_image
from lwst.stylize import warp_content
from lwst.vgg import VGG19Features, load_vgg19
from lwst.warp_safety import field_safety, scaled_field
from lwst.warping import estimate_warp

DEFAULT_PAIRS = data_root() / "pairs"


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS,
                        help="folder of pair_<name>_content/_style images ($LWST_DATA/pairs "
                        "when set)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write table.md and the contact sheets into this folder, e.g. "
                        "docs/pairs (default: none, the table is printed only)")
    parser.add_argument("--checkpoint", default=None, help="warp network (default: the shipped "
                        "one)")
    parser.add_argument("--panel", type=int, default=160, help="panel side in pixels")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    defaults = WarpConfig()
    parser.add_argument("--precision", default=defaults.precision, choices=WARP_PRECISIONS,
                        help="VGG features the warp is matched on (default: the library's)")
    parser.add_argument("--warp-method", default=defaults.method, choices=WARP_METHODS,
                        help="estimator (WarpConfig.method)")
    add_warp_safety_options(parser)
    parser.add_argument("--warp-strength", type=float, default=1.0,
                        help="scale the applied field as `lwst stylize --warp-strength` does "
                        "(then made fold-free again)")
    parser.add_argument("--no-sheets", action="store_true",
                        help="with --out: write table.md but no contact sheets")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the raw figures here (default: not kept)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_dir(args.pairs, "--pairs")
    torch.set_num_threads(args.threads)
    vgg = load_vgg19("auto")  # the alignment figure is always measured in float32
    config = WarpConfig(method=args.warp_method, checkpoint=args.checkpoint,
                        precision=args.precision,
                        field=args.warp_field, fallback=args.warp_fallback,
                        min_confidence=args.min_warp_confidence, views=args.warp_views)
    sheets = args.out is not None and not args.no_sheets
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    rows, warpnet_id = [], None
    for name, content_path, exemplar_path in find_pairs(args.pairs):
        content = analysis_view(read_image(str(content_path)))
        exemplar = analysis_view(read_image(str(exemplar_path)))
        started = time.perf_counter()
        estimate = estimate_warp(content, exemplar, config, vgg)
        seconds = time.perf_counter() - started
        warpnet_id = estimate.warpnet_id or warpnet_id
        flow = scaled_field(estimate.flow, args.warp_strength, config.field)
        warped = warp_content(content, flow).image
        before, after = alignment(vgg, content, exemplar), alignment(vgg, warped, exemplar)
        if sheets:
            sheet([content, exemplar, warped, flow_picture(flow)], args.panel).save(
                args.out / f"{name}.png", optimize=True
            )
        stats, safety = flow_stats(flow), field_safety(flow)[0]
        rows.append(dict(name=name, before=before, after=after, mean_px=stats.mean_px,
                         mean_frac=stats.mean_frac, fold=safety.fold_frac,
                         stretch=safety.stretch_frac, raw_fold=estimate.raw_fold_frac,
                         confidence=estimate.confidence, applied=estimate.applied,
                         cos_before=estimate.cos_before, cos_after=estimate.cos_after,
                         ambiguity=estimate.ambiguity, cos_ceiling=estimate.cos_ceiling,
                         area_spread=estimate.area_spread,
                         refined=bool(estimate.refined), seconds=seconds))
        print(f"{name}: cos {before:.3f} -> {after:.3f}, warp {stats.mean_px:.1f} px, "
              f"folds {estimate.raw_fold_frac:.4f} -> {safety.fold_frac:.4f}, confidence "
              f"{estimate.confidence:.2f}, applied {estimate.applied}"
              f"{' (DIS-refined)' if estimate.refined else ''}, {seconds:.2f} s",
              flush=True)
    write_results(rows, table(rows, warpnet_id, vgg.source, config), config, warpnet_id,
                  args.out, args.json)


def write_results(rows: list[dict], lines: list[str], config: WarpConfig,
                  warpnet_id: str | None, out: Path | None, json_path: Path | None) -> None:
    """Print the table; write ``<out>/table.md`` only when ``out`` is given (the repository's
    docs/pairs is rewritten on purpose only), and the raw figures with the id of the network
    that measured them when ``json_path`` is given."""
    if out is not None:
        (out / "table.md").write_text("\n".join(lines) + "\n")
    if json_path:
        json_path.write_text(json.dumps({"config": vars(config), "warpnet_id": warpnet_id,
                                         "rows": rows}, indent=1))
    print("\n".join(lines))


def table(rows: list[dict], warpnet_id: str | None, vgg_source: str, config: WarpConfig
          ) -> list[str]:
    """The markdown table of ``docs/pairs/README.md``."""
    lines = [
        f"Network `{warpnet_id}`; VGG-19 `{vgg_source}`, warp features `{config.precision}`; "
        f"field `{config.field}`, fallback `{config.fallback}` below confidence "
        f"{config.min_confidence}; 256x256 analysis views.",
        "",
        "| pair | cos unwarped | cos warped | change | mean warp (px @256) | folds raw -> applied "
        "| stretch | melt (area spread) | confidence | applied | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    lines += [
        f"| [{r['name']}]({r['name']}.png) | {r['before']:.3f} | {r['after']:.3f} | "
        f"{r['after'] - r['before']:+.3f} | {r['mean_px']:.1f} | {r['raw_fold']:.3f} -> "
        f"{r['fold']:.4f} | {r['stretch']:.4f} | {r['area_spread']:.2f} | "
        f"{r['confidence']:.2f} | {r['applied']} | "
        f"{r['seconds']:.2f} |"
        for r in rows
    ]
    n = len(rows)
    mean_b, mean_a = sum(r["before"] for r in rows) / n, sum(r["after"] for r in rows) / n
    better = sum(r["after"] > r["before"] + 1e-6 for r in rows)  # below: float noise
    worse = sum(r["after"] < r["before"] - 1e-6 for r in rows)
    lines += [
        f"| **mean ({n} pairs)** | {mean_b:.3f} | {mean_a:.3f} | {mean_a - mean_b:+.3f} | | "
        f"max {max(r['fold'] for r in rows):.4f} | | | | | |",
        "",
        f"Better aligned than unwarped on {better}/{n} pairs, worse on {worse}; largest fold "
        f"share {max(r['fold'] for r in rows):.4f}.",
    ]
    return lines


if __name__ == "__main__":
    main()
