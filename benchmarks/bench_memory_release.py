"""RSS of one process over many feed-forward chunks, with and without `lwst.memory`.

`bench_soak.py` saw a long `lwst run` (learned warp + adain, 128 px, 60 textures) grow by
~260 MiB per 100 items in its second half while its live tensors stayed flat. This loop calls
the pipeline's chunk function, `lwst.stylize_batch.stylize_files_batch`, in one process over
chunks of 8 such items and prints, after each chunk, the process's RSS and the bytes of every
live tensor (gc): flat tensors and a climbing RSS are the allocator keeping freed memory, not
a held reference. ``--no-release`` replaces the chunk's `release_freed_memory` call (glibc
``malloc_trim``) by a no-op, which is lwst before it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory_release.py --chunks 15 \\
        --results benchmarks/results/memory_release_cpu.jsonl          # and --no-release
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from pathlib import Path

import torch
from _common import data_root, make_parser, require_dir, scratch_folder

import lwst.stylize_batch
from lwst.config import StylizeConfig, with_overrides
from lwst.item import Item
from lwst.item_files import item_outputs


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def live_tensor_mib() -> float:
    """Bytes of the storages of every tensor the garbage collector sees (shared ones once)."""
    seen: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated aliases
        warnings.simplefilter("ignore", FutureWarning)
        objects = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in objects:
        storage = obj.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values()) / 2**20


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--chunks", type=int, default=15, help="chunks of 8 items")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--textures", type=int, default=60)
    parser.add_argument("--no-release", action="store_true",
                        help="skip the allocator release after each chunk (lwst before it)")
    parser.add_argument("--data", default=str(data_root()))
    parser.add_argument("--results", help="append the summary row to this JSONL file")
    args = parser.parse_args()
    data = Path(args.data)
    photos = sorted(require_dir(data / "photos").glob("*.jpg"))
    styles = sorted(require_dir(data / "styles").glob("*.jpg"))[:args.textures]
    if args.no_release:
        lwst.stylize_batch.release_freed_memory = lambda: False  # type: ignore[assignment]
    config = with_overrides(StylizeConfig(), {"size": args.size, "renderer": "adain",
                                              "device": "cpu"})
    rows = []
    with scratch_folder(None, "lwst-memory-") as out:
        for chunk in range(args.chunks):
            items = []
            for j in range(8):
                k = chunk * 8 + j
                name = f"m{k:05d}"
                items.append(Item(name, str(photos[k % len(photos)]),
                                  str(photos[(7 * k + 3) % len(photos)]),
                                  str(styles[k % len(styles)]), config,
                                  item_outputs(str(out), name)))
            start = time.perf_counter()
            outcomes = lwst.stylize_batch.stylize_files_batch(items, run_id="memory")
            failed = sum(o.error is not None for o in outcomes)
            del outcomes, items
            gc.collect()
            row = {"chunk": chunk, "items": 8 * (chunk + 1), "rss_mib": round(rss_mib(), 1),
                   "tensors_mib": round(live_tensor_mib(), 1), "failed": failed,
                   "seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    half = rows[len(rows) // 2:]
    slope = ((half[-1]["rss_mib"] - half[0]["rss_mib"])
             / max(half[-1]["items"] - half[0]["items"], 1) * 100)
    summary = {"kind": "memory_release", "release": not args.no_release, "size": args.size,
               "textures": args.textures, "items": rows[-1]["items"],
               "rss_first_chunk_mib": rows[0]["rss_mib"], "rss_last_mib": rows[-1]["rss_mib"],
               "rss_peak_mib": max(r["rss_mib"] for r in rows),
               "rss_slope_2nd_half_mib_per_100_items": round(slope, 1),
               "tensors_last_mib": rows[-1]["tensors_mib"],
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "torch_threads": torch.get_num_threads()}
    print(json.dumps(summary))
    if args.results:
        with open(args.results, "a") as handle:
            handle.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
