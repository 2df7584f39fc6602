"""The library's batched item path alone (no Prefect): `lwst.stylize_batch.stylize_files_batch`
on 8 example items at 512 px with the learned warp and adain, 2 torch threads, after one
untimed batch (``--items``, ``--threads``). Run it from two checkouts back to back to compare
code on the same machine:

    PYTHONPATH=/path/to/old .venv/bin/python benchmarks/bench_batch_item.py
    .venv/bin/python benchmarks/bench_batch_item.py [--no-losses]

The items are written to a temporary folder, removed at the end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _common import make_parser

from lwst.config import StylizeConfig, with_overrides
from lwst.item import Item
from lwst.item_files import item_outputs
from lwst.stylize_batch import stylize_files_batch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRIPLES = [("astronaut.jpg", "woman_painting.jpg", "texture_strokes.jpg"),
           ("face.jpg", "astronaut.jpg", "texture_mosaic.jpg"),
           ("sailboat.jpg", "sailboats_drawing.jpg", "texture_mosaic.jpg")]


def batch(out: str, n: int, config: StylizeConfig) -> list[Item]:
    items = []
    for i in range(n):
        content, geometry, texture = (str(EXAMPLES / name) for name in TRIPLES[i % 3])
        items.append(Item(f"i{i}", content, geometry, texture, config,
                          item_outputs(out, f"i{i}")))
    return items


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--items", type=int, default=8, help="items per batch")
    parser.add_argument("--repeat", type=int, default=2, help="timed batches after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-losses", action="store_true",
                        help="skip the loss yardstick (measure_losses false)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {"size": 512, "warp_method": "learned", "renderer": "adain",
                 "style_strength": 0.6}
    if args.no_losses:
        overrides["measure_losses"] = False
    config = with_overrides(StylizeConfig(), overrides)
    folder = tempfile.mkdtemp(prefix="lwst-bench-batch-")
    seconds = []
    try:
        stylize_files_batch(batch(f"{folder}/warm", args.items, config))
        for k in range(args.repeat):
            started = time.perf_counter()
            stylize_files_batch(batch(f"{folder}/run{k}", args.items, config))
            seconds.append(round((time.perf_counter() - started) / args.items, 3))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"items": args.items, "threads": args.threads,
                      "measure_losses": not args.no_losses, "s_per_item": seconds}))


if __name__ == "__main__":
    main()
