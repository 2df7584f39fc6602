"""Per-item seconds of `lwst.stylize_images` (one call for all items: the learned warps in one
network pass per batch, one render pass per shape) against `lwst.stylize_image` called once per
item, on the same images in memory: 16 items at 256 px (the 3 example triples of
bench_batch_item.py, cycled), learned warp + adain, 2 torch threads, after one untimed round of
each on the first 3 items. The timed rounds alternate singles and batch, so a change in the
machine's load falls on both; the load average is read before and after each round.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_tensor_batch.py \\
        --results benchmarks/results/tensor_batch_cpu.jsonl      # and --same-shape

``--same-shape`` crops every content to its centred square at ``--size`` first (a training
loop's fixed crops): one render pass per batch instead of one per example shape.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch
from _common import REPO, make_parser

from lwst import StylizeConfig, read_image, stylize_image, stylize_images, with_overrides
from lwst.image_io import resize_longest

EXAMPLES = REPO / "examples"
TRIPLES = [("astronaut.jpg", "woman_painting.jpg", "texture_strokes.jpg"),
           ("face.jpg", "astronaut.jpg", "texture_mosaic.jpg"),
           ("sailboat.jpg", "sailboats_drawing.jpg", "texture_mosaic.jpg")]


def load_items(n: int, size: int, same_shape: bool) -> list[tuple[torch.Tensor, ...]]:
    """``n`` (content, geometry, texture) triples read at ``size``; each file read once, so a
    texture shared by items is one tensor (as a caller holding a few styles would pass it)."""
    cache: dict[str, torch.Tensor] = {}

    def read(name: str) -> torch.Tensor:
        if name not in cache:
            cache[name] = read_image(EXAMPLES / name, size)
        return cache[name]

    items = []
    for i in range(n):
        content, geometry, texture = (read(name) for name in TRIPLES[i % len(TRIPLES)])
        if same_shape:  # the centred square, at ``size`` x ``size``
            side = min(content.shape[-2:])
            top, left = (content.shape[-2] - side) // 2, (content.shape[-1] - side) // 2
            content = resize_longest(content[..., top : top + side, left : left + side], size)
        items.append((content, geometry, texture))
    return items


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed(run, n: int) -> dict:
    """Seconds per item of ``run()`` and the 1-minute load average before and after."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    images = run()
    seconds = time.perf_counter() - started
    return {"s_per_item": round(seconds / n, 3), "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2), "images": images}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=2, help="timed rounds of each")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="stylize_images' batch_size (items per pass)")
    parser.add_argument("--same-shape", action="store_true",
                        help="crop every content to a centred square (one render pass)")
    parser.add_argument("--overrides", default="{}",
                        help="JSON of flat settings on top of learned warp + adain")
    parser.add_argument("--results", help="append the summary row to this JSONL file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flat = {"size": args.size, "warp_method": "learned", "renderer": "adain",
            **json.loads(args.overrides)}
    config = with_overrides(StylizeConfig(), flat)
    items = load_items(args.items, args.size, args.same_shape)
    contents, geometries, textures = (list(column) for column in zip(*items, strict=True))

    def singles(count: int = args.items) -> list[torch.Tensor]:
        return [stylize_image(c, g, t, config).image for c, g, t in items[:count]]

    def batch(count: int = args.items) -> list[torch.Tensor]:
        return [r.image for r in stylize_images(contents[:count], geometries[:count],
                                                textures[:count], config,
                                                batch_size=args.batch_size)]

    warm = min(len(TRIPLES), args.items)  # untimed: weights, decoders, the textures' features
    singles(warm), batch(warm)
    rounds = {"singles": [], "batch": []}
    for _ in range(args.repeat):
        for name, run in (("singles", singles), ("batch", batch)):
            rounds[name].append(timed(run, args.items))
    last_single, last_batch = rounds["singles"][-1]["images"], rounds["batch"][-1]["images"]
    diff = torch.cat([(a - b).abs().flatten() for a, b in zip(last_single, last_batch,
                                                               strict=True)])
    row = {"kind": "tensor_batch", "items": args.items, "size": args.size,
           "same_shape": args.same_shape, "shapes": len({tuple(c.shape) for c in contents}),
           "batch_size": args.batch_size, "threads": args.threads, "settings": flat,
           **{f"{name}_s_per_item": [r["s_per_item"] for r in rows]
              for name, rows in rounds.items()},
           **{f"{name}_load": [[r["load_before"], r["load_after"]] for r in rows]
              for name, rows in rounds.items()},
           "max_abs_diff": round(float(diff.max()), 5),
           "mean_abs_diff_255": round(float(diff.mean()) * 255, 4),
           "cpu": cpu_model(), "torch": torch.__version__,
           "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    line = json.dumps(row)
    print(line)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as out:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
