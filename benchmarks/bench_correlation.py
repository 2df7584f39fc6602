"""The local correlation window (`lwst.correlation.local_correlation`): one batched matrix
product per window row against the offset-by-offset products and sums it replaced.

The shapes are the two the product evaluates for a batch of 8 items: the alignment objective
(relu4_1, 512 channels, 32x32 cells) and the warp network's fine stage (relu3_1, 256 channels,
64x64 cells), both with the window radius 4.

    .venv/bin/python benchmarks/bench_correlation.py --threads 2 \\
        --json benchmarks/results/correlation_cpu.jsonl

Prints one JSON row per shape; ``--json`` appends them, with the date, host, processor and load
average, to a JSON-lines file.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import make_parser

from lwst.correlation import local_correlation

SHAPES = {"alignment objective": (8, 512, 32), "fine stage": (8, 256, 64)}


def offset_by_offset(target: torch.Tensor, source: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """The previous implementation: one product and channel sum per window offset."""
    height, width = target.shape[-2:]
    padded = F.pad(source, (radius, radius, radius, radius))
    return torch.stack([(target * padded[:, :, dy : dy + height, dx : dx + width]).sum(1)
                        for dy in range(2 * radius + 1) for dx in range(2 * radius + 1)], 1)


def best_of(fn, *args, repeat: int) -> float:
    fn(*args)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed calls per implementation after one warm-up, the fastest kept")
    parser.add_argument("--json", type=Path, default=None,
                        help="append the rows to this JSON-lines file (default: printed only)")
    args = parser.parse_args()
    machine = {"date": time.strftime("%Y-%m-%d"), "host": platform.node(),
               "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "load_average": [round(x, 2) for x in os.getloadavg()]}
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    for name, (b, c, side) in SHAPES.items():
        target = F.normalize(torch.randn(b, c, side, side, generator=gen), dim=1)
        source = F.normalize(torch.randn(b, c, side, side, generator=gen), dim=1)
        old = best_of(offset_by_offset, target, source, repeat=args.repeat)
        new = best_of(local_correlation, target, source, repeat=args.repeat)
        gap = float((local_correlation(target, source) - offset_by_offset(target, source))
                    .abs().max())
        row = {"shape": name, "batch": b, "channels": c, "cells": f"{side}x{side}",
               "threads": args.threads, "offset_by_offset_s": round(old, 4),
               "batched_rows_s": round(new, 4), "speed_up": round(old / new, 2),
               "max_abs_difference": gap, **machine}
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            with args.json.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
