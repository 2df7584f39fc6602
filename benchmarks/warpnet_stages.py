"""Per-stage end-point error of the warp network on the warp benchmark's held-out pairs.

Same pairs as ``bench_warp.py`` (held-out photos, seeds ``seed*1000 + tier*100 + i``). The VGG
features of every pair are computed once and cached (``--cache``), so comparing checkpoints or
stages costs only the network: affine init (dual-softmax + robust fit), global CNN, and each
refinement step. Works on training checkpoints too (to watch a run).

    .venv/bin/python benchmarks/warpnet_stages.py --checkpoint lwst/checkpoints/warpnet.pt
"""

from __future__ import annotations

from pathlib import Path

import torch
from _common import data_root, make_parser, require_dir

from lwst.config import ANALYSIS_SIZE
from lwst.correlation import analysis_view
from lwst.flow import end_point_error
from lwst.image_io import read_image
from lwst.storage import list_images
from lwst.vgg import load_vgg19
from lwst.warpnet.bank import FEATURE_TAP, FINE_TAP, TOP_TAP, encode_taps
from lwst.warpnet.inference import TEST_ITERS, load_warpnet, matched_affine_starts
from lwst.warpnet.model import upsample_flow
from lwst.warpnet.split import held_out_files
from lwst.warpnet.synthetic import TIERS, make_pair

ROOT = Path(__file__).resolve().parents[1]


def build_cache(data: Path, pairs: int, seed: int) -> dict:
    """Features, ground truth and validity of ``pairs`` pairs per tier (bench_warp's pairs)."""
    vgg = load_vgg19("auto")
    images = list_images(data, recursive=False)
    files = held_out_files(images)
    out: dict = {}
    for t, tier in enumerate(TIERS):
        items = []
        for i in range(pairs):
            image = analysis_view(read_image(str(files[i % len(files)])))
            pair = make_pair(image, torch.Generator().manual_seed(seed * 1000 + t * 100 + i), tier)
            feats = encode_taps(vgg, torch.cat([pair.content, pair.exemplar]))
            coarse, fine, top = feats[FEATURE_TAP], feats[FINE_TAP], feats[TOP_TAP]
            items.append((coarse[:1], coarse[1:], fine[:1], fine[1:], pair.flow, pair.valid,
                          top[:1], top[1:]))
        out[tier] = items
    return out


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--checkpoint", nargs="+", default=[None],
                        help="warp networks, training or slim checkpoints (default: the shipped "
                        "one)")
    parser.add_argument("--data", type=Path, default=data_root() / "photos",
                        help="photos (held-out ones used; $LWST_DATA/photos when set)")
    parser.add_argument("--pairs", type=int, default=10, help="pairs per tier")
    parser.add_argument("--seed", type=int, default=0, help="synthetic pairs' seed")
    parser.add_argument("--cache", type=Path, default=ROOT / "scratch" / "warpnet_stages_v3.pt",
                        help="the pairs' VGG features, kept and reused as is when it exists "
                        "(delete it after changing --data, --pairs or --seed)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cache.exists():
        cache = torch.load(args.cache, weights_only=False)
    else:
        cache = build_cache(require_dir(args.data), args.pairs, args.seed)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cache, args.cache)
    for checkpoint in args.checkpoint:
        model, warpnet_id = load_warpnet(checkpoint)
        names = ["identity", "affine", "global"] + [f"iter{i + 1}" for i in range(model.cfg.iters)]
        names += [f"fine{i + 1}" for i in range(model.cfg.fine_iters)]
        names += ["verified"]  # what inference returns: + matched-affine start, TEST_ITERS steps
        print(f"\n{warpnet_id} ({checkpoint or 'shipped'})")
        print("| tier | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        overall = torch.zeros(len(names))
        for tier, items in cache.items():
            epe = torch.zeros(len(names))
            for content, exemplar, content_fine, exemplar_fine, flow, valid, *top in items:
                with torch.no_grad():
                    feats = (content.float(), exemplar.float(), content_fine.float(),
                             exemplar_fine.float())
                    tops = ({"content_top": top[0].float(), "exemplar_top": top[1].float()}
                            if model.cfg.global_relu5 else {})
                    stages = model(*feats, **tops)
                    volume = model.correlation(feats[1], feats[0])
                    starts = matched_affine_starts(volume, model.cfg.coarse_size)
                    stages.append(model.estimate(*feats, starts, volume, *TEST_ITERS, **tops)[0])
                preds = [torch.zeros_like(flow)] + [upsample_flow(s, ANALYSIS_SIZE) for s in stages]
                epe += torch.tensor([float(end_point_error(p, flow, valid)) for p in preds])
            epe /= len(items)
            overall += epe / len(cache)
            print(f"| {tier} | " + " | ".join(f"{e:.2f}" for e in epe) + " |")
        print("| **all** | " + " | ".join(f"{e:.2f}" for e in overall) + " |")


if __name__ == "__main__":
    main()
