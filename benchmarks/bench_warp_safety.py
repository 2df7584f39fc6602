"""Warp safety on synthetic pairs (issue 11): folds, EPE of the fold-free field against the
estimator's own, confidence against EPE, and the network against OpenCV DIS per displacement size.

The pairs are ``bench_warp.py``'s (same held-out photos, same seeds: ``--seed 2 --pairs 38`` is
its 114-pair set). Every pair goes through the product's warp stage
(``lwst.warping.estimate_warp`` with the given field / fallback settings), which also hands back
the estimator's own field, so one call measures both. ``--magnitude`` scales the random warp's
ranges (rotation, shear, translation, spline jitter, scale's distance from 1) for easy,
small-displacement pairs. ``--warp-refine`` sets the product's DIS refinement
(``lwst.photometric_refine``; on by default, as in the product), so ``none`` against ``dis``
measures what it buys.

    .venv/bin/python benchmarks/bench_warp_safety.py --seed 2 --pairs 12 --threads 1 \\
        --json benchmarks/results/warp_safety_seed2_p12_cpu.json
    .venv/bin/python benchmarks/bench_warp_safety.py --seed 2 --pairs 20 --tiers geometry \\
        --magnitude 0.1 --json benchmarks/results/warp_safety_seed2_m0.1_cpu.json
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_warp_safety_options, data_root, make_parser, require_dir

from lwst.config import WARP_REFINES, WarpConfig
from lwst.correlation import analysis_view
from lwst.estimators.dis import dis_flow
from lwst.image_io import read_image
from lwst.parametric import SyntheticWarpRanges
from lwst.photometric_refine import refine_photometric
from lwst.storage import list_images
from lwst.vgg import at_dtype, feature_dtype, load_vgg19
from lwst.warp_safety import field_safety, fold_free, make_fold_free
from lwst.warping import WarpEstimate, estimate_warp
from lwst.warpnet.inference import predict_warp
from lwst.warpnet.split import held_out_files
from lwst.warpnet.synthetic import TIERS, make_pair

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = data_root() / "photos"
BINS = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0, float("inf"))  # ground-truth displacement, px @256


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(values: list[float]) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        order = arr.argsort(kind="stable")
        out = np.empty(len(arr))
        out[order] = np.arange(len(arr))
        for value in np.unique(arr):
            tied = arr == value
            out[tied] = out[tied].mean()
        return out

    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def scaled_ranges(magnitude: float) -> SyntheticWarpRanges:
    base = SyntheticWarpRanges()
    lo, hi = base.scale
    return dataclasses.replace(
        base, scale=(1 - (1 - lo) * magnitude, 1 + (hi - 1) * magnitude),
        rotation_deg=base.rotation_deg * magnitude, shear_deg=base.shear_deg * magnitude,
        translation=base.translation * magnitude, tps_jitter=base.tps_jitter * magnitude)


def binned(pred: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> list[list[float]]:
    """[sum of end-point error, pixel count] per ``BINS`` interval of the true displacement."""
    epe = (pred.float() - truth).norm(dim=1)[valid[:, 0]]
    size = truth.norm(dim=1)[valid[:, 0]]
    return [[float(epe[(size >= lo) & (size < hi)].sum()), int(((size >= lo) & (size < hi)).sum())]
            for lo, hi in zip(BINS[:-1], BINS[1:], strict=True)]


def epe_of(pred: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> float:
    return float((pred.float() - truth).norm(dim=1)[valid[:, 0]].mean())


def photometric_error(content: torch.Tensor, exemplar: torch.Tensor, flow: torch.Tensor) -> float:
    """Mean absolute grey difference of the exemplar and the warped content where both are
    defined (the warp samples inside the content, the exemplar is not black)."""
    from lwst.flow import hole_mask, warp_image

    grey = lambda x: x.mean(1, keepdim=True)  # noqa: E731
    mask = ~hole_mask(flow) & (grey(exemplar) > 0.02)
    diff = (grey(warp_image(content, flow)) - grey(exemplar)).abs()
    return float(diff[mask].mean()) if mask.any() else float("inf")


def dis_refined(content: torch.Tensor, exemplar: torch.Tensor, flow: torch.Tensor,
                gain: float = 0.8) -> torch.Tensor:
    """Experiment (issue 11 item 6): a DIS residual between the warped content and the exemplar,
    composed onto ``flow`` and made fold-free, kept only if it cuts the photometric error to
    ``gain`` of the field's (brightness constancy holds on geometry pairs, not on paintings)."""
    from lwst.flow import warp_image
    from lwst.warp_safety import compose

    residual = dis_flow(warp_image(content, flow), exemplar)
    refined = make_fold_free(compose(flow, residual))
    before = photometric_error(content, exemplar, flow)
    after = photometric_error(content, exemplar, refined)
    return refined if after < gain * before else flow


def fields_only(content: torch.Tensor, exemplar: torch.Tensor, vgg, config: WarpConfig
                ) -> WarpEstimate:
    """The network's field and, as ``flow``, its fold-free version (``config.field``), refined
    as the product refines it (``config.refine``)."""
    features = at_dtype(vgg, feature_dtype(config.precision, "cpu"))
    raw, warpnet_id = predict_warp(content, exemplar, features, views=config.views)
    flow = fold_free(raw, config.field)
    refined, started = [False], time.perf_counter()
    if config.refine == "dis":
        flow, refined = refine_photometric(content, exemplar, flow,
                                           fold_free=config.field != "raw")
    seconds_refine = time.perf_counter() - started  # reported as ``seconds`` (fields only)
    return WarpEstimate(flow, float("nan"), float("nan"), seconds_refine, warpnet_id,
                        float("nan"), "learned", field_safety(raw)[0].fold_frac,
                        refined=refined[0], raw_flow=raw)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="photos (held-out ones used; $LWST_DATA/photos when set)")
    parser.add_argument("--seed", type=int, default=2, help="synthetic pairs' seed")
    parser.add_argument("--pairs", type=int, default=38, help="pairs per tier")
    parser.add_argument("--tiers", nargs="+", default=list(TIERS), choices=TIERS,
                        help="synthetic pair tiers")
    parser.add_argument("--magnitude", type=float, default=1.0, help="scale of the random warp")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    defaults = WarpConfig()
    add_warp_safety_options(parser)
    parser.add_argument("--warp-refine", default=defaults.refine, choices=WARP_REFINES,
                        help="DIS refinement (WarpConfig.refine)")
    parser.add_argument("--fields-only", action="store_true",
                        help="only the network's field and its fold-free version (no confidence "
                        "or fallback: skips the alignment VGG pass, ~2x faster)")
    parser.add_argument("--dis-refine", action="store_true",
                        help="experiment: gated DIS residual on the applied field")
    parser.add_argument("--json", default=None, help="write the rows here (default: not kept)")
    args = parser.parse_args(argv)
    require_dir(args.data)
    torch.set_num_threads(args.threads)
    vgg = load_vgg19("auto")
    config = WarpConfig(field=args.warp_field, fallback=args.warp_fallback,
                        min_confidence=args.min_warp_confidence, refine=args.warp_refine,
                        views=args.warp_views)
    ranges = scaled_ranges(args.magnitude)
    files = held_out_files(list_images(args.data, recursive=False))
    rows = []
    for tier_index, tier in enumerate(TIERS):
        if tier not in args.tiers:
            continue
        for i in range(args.pairs):
            image = analysis_view(read_image(str(files[i % len(files)])))
            generator = torch.Generator().manual_seed(args.seed * 1000 + tier_index * 100 + i)
            pair = make_pair(image, generator, tier, ranges=ranges)
            with torch.inference_mode():
                est = (fields_only(pair.content, pair.exemplar, vgg, config) if args.fields_only
                       else estimate_warp(pair.content, pair.exemplar, config, vgg))
                dis = dis_flow(pair.content, pair.exemplar)
                if args.dis_refine:
                    est = dataclasses.replace(est, flow=dis_refined(pair.content, pair.exemplar,
                                                                    est.flow))
            truth, valid = pair.flow, pair.valid
            applied_safety = field_safety(est.flow)[0]
            row = dict(tier=tier, i=i, file=files[i % len(files)].name,
                       epe_applied=epe_of(est.flow, truth, valid),
                       epe_raw=epe_of(est.raw_flow, truth, valid),
                       epe_dis=epe_of(dis, truth, valid),
                       fold_applied=applied_safety.fold_frac,
                       stretch_applied=applied_safety.stretch_frac,
                       stretch_raw=field_safety(est.raw_flow)[0].stretch_frac,
                       stretch_true=field_safety(truth)[0].stretch_frac,
                       fold_raw=est.raw_fold_frac, confidence=est.confidence, applied=est.applied,
                       refined=bool(est.refined), seconds=est.seconds,
                       cos_before=est.cos_before, cos_after=est.cos_after,
                       ambiguity=est.ambiguity, cos_ceiling=est.cos_ceiling,
                       area_spread=est.area_spread,
                       true_px=float(truth.norm(dim=1)[valid[:, 0]].mean()),
                       bins_applied=binned(est.flow, truth, valid),
                       bins_raw=binned(est.raw_flow, truth, valid),
                       bins_dis=binned(dis, truth, valid))
            rows.append(row)
            print(f"{tier:11s} {i:2d} raw {row['epe_raw']:6.2f} applied {row['epe_applied']:6.2f} "
                  f"dis {row['epe_dis']:6.2f} folds {row['fold_raw']:.3f} -> "
                  f"{row['fold_applied']:.4f} conf {row['confidence']:.2f} {row['applied']}"
                  f"{' refined' if row['refined'] else ''}",
                  flush=True)
    print("\n".join(summary(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


def fields_only_rows(rows: list[dict]) -> bool:
    """``--fields-only`` rows: no confidence (NaN), and ``seconds`` is the refinement step's."""
    return all(r["confidence"] != r["confidence"] for r in rows)


def summary(rows: list[dict]) -> list[str]:
    """Markdown: per tier EPE and folds, Spearman of confidence vs EPE, EPE per displacement."""
    mean = lambda v: sum(v) / max(len(v), 1)  # noqa: E731
    tiers = list(dict.fromkeys(r["tier"] for r in rows))
    lines = ["| tier | pairs | EPE own field | EPE applied | change | EPE DIS | folds own (max) | "
             "folds applied (max) | pairs > 0.005 | fallbacks | DIS-refined |",
             "|---|" + "---:|" * 10]
    for tier in [*tiers, "all"]:
        sel = [r for r in rows if tier in ("all", r["tier"])]
        raw, app = mean([r["epe_raw"] for r in sel]), mean([r["epe_applied"] for r in sel])
        lines.append(
            f"| {tier} | {len(sel)} | {raw:.3f} | {app:.3f} | {100 * (app / raw - 1):+.1f} % | "
            f"{mean([r['epe_dis'] for r in sel]):.2f} | "
            f"{max(r['fold_raw'] for r in sel):.3f} | {max(r['fold_applied'] for r in sel):.4f} "
            f"| {sum(r['fold_applied'] > 0.005 for r in sel)} | "
            f"{sum(r['applied'] not in ('learned',) for r in sel)} | "
            f"{sum(bool(r.get('refined')) for r in sel)} |")
    if fields_only_rows(rows):
        lines += ["", f"Mean seconds of the DIS refinement step per pair: "
                  f"{mean([r['seconds'] for r in rows]):.3f}"]
    conf = [r["confidence"] for r in rows]
    if not fields_only_rows(rows):
            lines += ["", f"Spearman(confidence, EPE of the applied field) = "
                  f"{spearman(conf, [r['epe_applied'] for r in rows]):+.3f}; vs the own "
                  f"field's EPE {spearman(conf, [r['epe_raw'] for r in rows]):+.3f} "
                  f"({len(rows)} pairs)"]
    lines += ["", "| true displacement px | pixels | network (own) | network (applied) | DIS |",
              "|---|---:|---:|---:|---:|"]
    for b, (lo, hi) in enumerate(zip(BINS[:-1], BINS[1:], strict=True)):
        cells = []
        for key in ("bins_raw", "bins_applied", "bins_dis"):
            total = sum(r[key][b][0] for r in rows)
            count = sum(r[key][b][1] for r in rows)
            cells.append(f"{total / count:.2f}" if count else "-")
        count = sum(r["bins_raw"][b][1] for r in rows)
        lines.append(f"| {lo:g}-{hi:g} | {count} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
