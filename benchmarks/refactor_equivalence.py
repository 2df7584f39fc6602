"""Same outputs before and after a refactor (issue 12 item 6): warp fields and gatys renders.

Run once on the code before the change (``--out BEFORE``), once after (``--out AFTER
--compare BEFORE``). Records, on the real benchmark pairs (``--pairs``: ``$LWST_DATA/pairs``,
else ``../shared/data/pairs``):

- the learned warp as the product estimates it (``lwst.warping.estimate_warp`` with the default
  `WarpConfig`, one pair at a time as ``benchmarks/real_pairs.py`` does): the applied and the
  raw field at the analysis size, the before/after alignment losses, the confidence, what was
  applied;
- the network alone on all pairs in one batch (``predict_warp`` with verification, so several
  hypotheses share one correlation volume) and what its vote saw;
- a few small gatys renders (``render_texture``, the default schedule, fixed seed: L-BFGS from
  the content, colour preservation, Adam from noise) and the shared loss yardstick
  (``measure_losses``).

With ``--compare`` it prints the largest absolute difference of every flow and image and the
loss values side by side, and exits 1 if any differs by more than ``--atol``.

    mkdir -p /tmp/base && git archive BASE lwst | tar -x -C /tmp/base   # the code before
    PYTHONPATH=/tmp/base .venv/bin/python benchmarks/refactor_equivalence.py --out /tmp/before
    PYTHONPATH=. .venv/bin/python benchmarks/refactor_equivalence.py --out /tmp/after \
        --compare /tmp/before

(``PYTHONPATH`` says which lwst runs: the script's own folder comes first on ``sys.path``, so
an editable install elsewhere would win otherwise; the first line printed names it.)
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import torch
from _common import make_parser, require_dir
from real_pairs import DEFAULT_PAIRS, find_pairs

import lwst
from lwst.config import RenderConfig, WarpConfig
from lwst.correlation import analysis_view
from lwst.image_io import read_image, write_png
from lwst.render import render_texture
from lwst.renderers import measure_losses
from lwst.vgg import load_vgg19
from lwst.warping import estimate_warp
from lwst.warpnet.inference import predict_warp

RENDERS = {  # name -> overrides of the default RenderConfig; one per code path of the renderer
    "lbfgs": {},
    "preserve_color": {"preserve_color": True},
    "adam_noise": {"optimizer": "adam", "init": "noise"},
}


def record(pairs: list[tuple[str, Path, Path]], size: int, render_pairs: int, out: Path) -> dict:
    """Every figure and tensor of one run; images also as PNGs under ``out`` (to look at)."""
    vgg = load_vgg19("auto")
    result: dict = {"warp": {}, "batch": {}, "render": {}}
    views = {name: (analysis_view(read_image(str(c))), analysis_view(read_image(str(e))))
             for name, c, e in pairs}
    for name, (content, exemplar) in views.items():
        est = estimate_warp(content, exemplar, WarpConfig(), vgg)
        result["warp"][name] = {
            "flow": est.flow, "raw_flow": est.raw_flow, "loss_before": est.loss_before,
            "loss_after": est.loss_after, "confidence": est.confidence, "applied": est.applied,
            "cos_after": est.cos_after,
        }
        print(f"warp {name}: loss {est.loss_before:.4f} -> {est.loss_after:.4f}, "
              f"confidence {est.confidence:.3f}, {est.applied}", flush=True)
    details: dict = {}
    contents = torch.cat([c for c, _ in views.values()])
    exemplars = torch.cat([e for _, e in views.values()])
    flow, _ = predict_warp(contents, exemplars, vgg, diagnostics=details)
    result["batch"] = {"flow": flow, **{k: v for k, v in details.items()}}
    for name, content_path, exemplar_path in pairs[:render_pairs]:
        content = read_image(str(content_path), size)
        exemplar = read_image(str(exemplar_path), size)
        for kind, overrides in RENDERS.items():
            config = dataclasses.replace(RenderConfig(), **overrides)
            r = render_texture(content, exemplar, config, vgg, seed=0)
            c, s, total = measure_losses(vgg, r.image, content, exemplar, config)
            key = f"{name}/{kind}"
            result["render"][key] = {
                "image": r.image, "content_loss": r.content_loss, "style_loss": r.style_loss,
                "total_loss": r.total_loss, "measured": (c, s, total),
                "history": [h["total_loss"] for h in r.history],
            }
            write_png(r.image, str(out / f"{name}__{kind}.png"))
            print(f"render {key}: content {r.content_loss:.5f} style {r.style_loss:.5f} "
                  f"({r.seconds:.1f} s)", flush=True)
    return result


def max_diff(a: object, b: object) -> float:
    """Largest absolute difference of two tensors, numbers or lists of them; equal entries
    (also both NaN, or the same infinity: the vote marks dropped starts -inf) count 0."""
    if isinstance(a, torch.Tensor):
        a, b = a.double(), b.double()
        same = (a == b) | (torch.isnan(a) & torch.isnan(b))
        return float((a - b).abs().masked_fill(same, 0).max()) if a.numel() else 0.0
    if isinstance(a, (list, tuple)):
        return max([max_diff(x, y) for x, y in zip(a, b, strict=True)], default=0.0)
    if isinstance(a, float):
        return 0.0 if a == b or (a != a and b != b) else abs(a - b)
    return 0.0 if a == b else float("inf")


def compare(before: dict, after: dict) -> float:
    """Print the differences section by section; return the largest."""
    worst = 0.0
    for section in ("warp", "batch", "render"):
        keys = sorted(before[section])
        if section == "batch":
            rows = {"all pairs": before[section]}
            rows_after = {"all pairs": after[section]}
        else:
            rows, rows_after = before[section], after[section]
        for key in rows:
            fields = rows[key]
            diffs = {f: max_diff(v, rows_after[key][f]) for f, v in fields.items()}
            worst = max(worst, *diffs.values(), key=lambda d: math.inf if d != d else d)
            print(f"{section} {key}: " + ", ".join(f"{f} {d:.3g}" for f, d in diffs.items()))
        if section == "render":
            for key in keys:
                b, a = before[section][key], after[section][key]
                print(f"  {key}: content {b['content_loss']:.6f} -> {a['content_loss']:.6f}, "
                      f"style {b['style_loss']:.6f} -> {a['style_loss']:.6f}")
    return worst


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS,
                        help="folder of the real pairs ($LWST_DATA/pairs when set)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for this run's outputs.pt (kept: --compare reads it)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="a previous run's --out (default: no comparison)")
    parser.add_argument("--size", type=int, default=128, help="gatys output side")
    parser.add_argument("--render-pairs", type=int, default=4,
                        help="first N pairs also rendered with gatys (the warp runs on all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--atol", type=float, default=0.0,
                        help="largest absolute difference that still passes --compare")
    parser.add_argument("--no-run", action="store_true",
                        help="compare the outputs already saved under --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.no_run:
        result = torch.load(args.out / "outputs.pt", weights_only=False)
    else:
        require_dir(args.pairs, "--pairs")
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"lwst from {Path(lwst.__file__).parent}", flush=True)
        result = record(find_pairs(args.pairs), args.size, args.render_pairs, args.out)
        torch.save(result, args.out / "outputs.pt")
    if args.compare:
        before = torch.load(args.compare / "outputs.pt", weights_only=False)
        worst = compare(before, result)
        print(f"largest absolute difference: {worst:.3g}")
        sys.exit(0 if worst <= args.atol else 1)


if __name__ == "__main__":
    main()
