"""Experiment (issue 11 item 1): nine ways to make the warp fold-free, compared by measurement.

Caches the network's own fields (shipped inference) on the 21 real pairs and on the 114 seed 2
synthetic pairs of ``bench_warp.py`` (``--real-pairs`` / ``--synthetic`` take fewer), then
compares nine repairs of them (``--variants``): ``raw`` (none), ``exp(u)`` (the field
taken as a velocity), the affine-factored scaling and squaring with 0..N fixed-point log
iterations (``svf0``, ``svf1``, ``svf2``, ``svf6``; ``lwst.warp_safety.make_fold_free`` ships
K = 0), ``fitted`` (the velocity fitted by Adam where the estimate does not fold:
``--warp-field fitted``), and a
Jacobian-constrained local correction (``corr eps 0.1``, ``corr eps 0.3``: smooth the 64x64
field where det < eps until no fold is left). Prints synthetic EPE per tier, fold shares, and
the real-pair alignment gain (warp + inpaint, float32 relu4_1 cosine, as ``real_pairs.py``).

    .venv/bin/python benchmarks/fold_free_variants.py --cache /tmp/lwst_fields

The data folder is ``--data`` (default ``$LWST_DATA``, else ../shared/data). Without
``--cache`` the fields go to a temporary folder removed at the end.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import data_root, make_parser, require_dir, scratch_folder

from lwst.correlation import analysis_view
from lwst.flow import end_point_error, hole_mask, resize_flow, warp_image
from lwst.image_io import read_image
from lwst.inpaint import inpaint_holes
from lwst.storage import list_images
from lwst.vgg import at_dtype, feature_dtype, load_vgg19
from lwst.warp_safety import (
    FIT_STEPS,
    exp_field,
    field_safety,
    jacobian_determinant,
    make_fold_free,
)
from lwst.warpnet.inference import predict_warp
from lwst.warpnet.split import held_out_files
from lwst.warpnet.synthetic import TIERS, make_pair

REAL_PAIRS, SYNTHETIC = 21, 38  # the real pairs there are; synthetic pairs per tier (seed 2)


def correct_folds(flow: torch.Tensor, grid: int = 64, eps: float = 0.1, iters: int = 200
                  ) -> torch.Tensor:
    """Local correction: 3x3 box-smooth the field where (dilated) det < eps, repeat."""
    h, w = flow.shape[-2:]
    small = resize_flow(flow.float(), grid, grid)
    fixed = small
    for _ in range(iters):
        bad = (jacobian_determinant(fixed) < eps).float()
        if not bad.any():
            break
        mask = F.max_pool2d(bad, 3, 1, 1) > 0
        smooth = F.avg_pool2d(F.pad(fixed, (1, 1, 1, 1), mode="replicate"), 3, 1)
        fixed = torch.where(mask, smooth, fixed)
    return flow + resize_flow(fixed - small, h, w)


def cache(path: Path, data: Path, views: int = 1, real_pairs: int = REAL_PAIRS,
          synthetic: int = SYNTHETIC) -> tuple[list[dict], list[dict]]:
    """Network fields of the real and synthetic pairs (computed once, then read back while the
    settings recorded beside them match)."""
    settings = {"data": str(data), "views": views, "real_pairs": real_pairs,
                "synthetic": synthetic}
    recorded = path / "settings.json"
    if (path / "real.pt").exists() and (path / "syn.pt").exists() and (
            not recorded.exists() or json.loads(recorded.read_text()) == settings):
        return torch.load(path / "real.pt"), torch.load(path / "syn.pt")
    from real_pairs import find_pairs

    path.mkdir(parents=True, exist_ok=True)
    vgg = at_dtype(load_vgg19("auto"), feature_dtype("auto", "cpu"))
    real = []
    for name, c, e in find_pairs(data / "pairs")[:real_pairs]:
        content, exemplar = analysis_view(read_image(str(c))), analysis_view(read_image(str(e)))
        real.append(dict(name=name, content=content, exemplar=exemplar,
                         flow=predict_warp(content, exemplar, vgg, views=views)[0]))
    files = held_out_files(list_images(data / "photos", recursive=False))
    syn = []
    for ti, tier in enumerate(TIERS):
        for i in range(synthetic):
            image = analysis_view(read_image(str(files[i % len(files)])))
            pair = make_pair(image, torch.Generator().manual_seed(2000 + ti * 100 + i), tier)
            with torch.inference_mode():
                flow = predict_warp(pair.content, pair.exemplar, vgg, views=views)[0]
            syn.append(dict(tier=tier, content=pair.content, exemplar=pair.exemplar,
                            gt=pair.flow, valid=pair.valid, flow=flow))
    torch.save(real, path / "real.pt")
    torch.save(syn, path / "syn.pt")
    recorded.write_text(json.dumps(settings))
    return real, syn


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--data", type=Path, default=data_root(),
                        help="data folder with pairs/ and photos/ ($LWST_DATA when set)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the network's fields here and reuse them (default: a "
                        "temporary folder, removed at the end)")
    parser.add_argument("--real-pairs", type=int, default=REAL_PAIRS,
                        help="first N real pairs of pairs/")
    parser.add_argument("--synthetic", type=int, default=SYNTHETIC,
                        help="synthetic pairs per tier (seed 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="repairs to compare (default: all nine)")
    parser.add_argument("--views", type=int, default=1,
                        help="the network's symmetric views (--warp-views; 1: the network alone)")
    args = parser.parse_args()
    require_dir(args.data / "pairs")
    require_dir(args.data / "photos")
    torch.set_num_threads(args.threads)
    with scratch_folder(args.cache, "lwst-fold-free-") as args.cache:
        compare(args)


def compare(args) -> None:
    from real_pairs import alignment

    real, syn = cache(args.cache, args.data, args.views, args.real_pairs, args.synthetic)
    vgg = load_vgg19("auto")
    variants = {
        "raw": lambda f: f, "exp(u)": exp_field,
        **{f"svf{k}": partial(make_fold_free, iters=k) for k in (0, 1, 2, 6)},
        "fitted": partial(make_fold_free, fit_steps=FIT_STEPS),
        "corr eps 0.1": correct_folds, "corr eps 0.3": lambda f: correct_folds(f, eps=0.3),
    }
    if args.variants:
        variants = {name: variants[name] for name in args.variants}
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    for name, repair in variants.items():
        started = time.perf_counter()
        epe: dict[str, list[float]] = {}
        folds = []
        for s in syn:
            fixed = repair(s["flow"])
            folds.append(field_safety(fixed)[0].fold_frac)
            epe.setdefault(s["tier"], []).append(
                float(end_point_error(fixed, s["gt"], s["valid"])[0]))
        ms = 1000 * (time.perf_counter() - started) / len(syn)
        real_folds, gains = [], []
        for r in real:
            fixed = repair(r["flow"])
            real_folds.append(field_safety(fixed)[0].fold_frac)
            warped = inpaint_holes(warp_image(r["content"], fixed), hole_mask(fixed)).image
            gains.append(alignment(vgg, warped, r["exemplar"])
                         - alignment(vgg, r["content"], r["exemplar"]))
        every = [x for v in epe.values() for x in v]
        print(f"{name:13s} EPE " + " ".join(f"{t} {mean(v):.3f}" for t, v in epe.items())
              + f" all {mean(every):.3f} | synthetic folds max {max(folds):.4f}, pairs > 0.005 "
              f"{sum(x > 0.005 for x in folds)} | real folds max {max(real_folds):.4f}, pairs > "
              f"0.005 {sum(x > 0.005 for x in real_folds)}, gain mean {mean(gains):+.4f} min "
              f"{min(gains):+.4f} | {ms:.0f} ms/pair", flush=True)


if __name__ == "__main__":
    main()
