"""Where a long `lwst run`'s memory goes: live Python objects (tracemalloc) against RSS.

Runs `lwst run` in this process on ``--items`` tiny local items (the items of
``bench_scale.py``: 4 photos at 64 px repeated under distinct ids, ``--warp-method none``,
no texture, ``--size 32``, 2 threads), with tracemalloc started after the imports. When 20 %
and 95 % of the items' images exist it takes a snapshot and the RSS; at the end it prints the
traced (live) memory and RSS at both marks, the growth per item, and the largest differences
between the snapshots by traceback. Tracing makes the run ~5x slower; a few thousand items are
enough to see a per-item trend. A mark the run passed between two polls (a short run) is
taken once the run has returned, so its figures are those at the end. The temporary folder
(photos, manifest, outputs) is removed at the end.

    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=240 \\
        .venv/bin/python benchmarks/run_memory_attribution.py --items 6000
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import tracemalloc
from pathlib import Path

from _common import make_parser, require_dir
from bench_scale import PHOTOS, tiny_photos, write_manifest

MARKS = (0.2, 0.95)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def snapshot(images: Path) -> tuple:
    count = sum(1 for _ in os.scandir(images)) if images.is_dir() else 0
    return tracemalloc.take_snapshot(), rss_mib(), count, tracemalloc.get_traced_memory()[0]


def watch(images: Path, items: int, snaps: dict, stop: threading.Event) -> None:
    """Snapshot at each of `MARKS` of the items' images written, until ``stop`` is set."""
    marks = list(MARKS)
    while marks and not stop.is_set():
        count = sum(1 for _ in os.scandir(images)) if images.is_dir() else 0
        if count >= marks[0] * items:
            snaps[marks[0]] = snapshot(images)
            marks.pop(0)
        stop.wait(1.0)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--items", type=int, default=6000, help="tiny items in the run")
    parser.add_argument("--top", type=int, default=8,
                        help="largest snapshot differences (by traceback) to print")
    parser.add_argument("--photos", default=str(PHOTOS),
                        help="folder of .jpg photos to repeat ($LWST_DATA/photos when set)")
    args = parser.parse_args()
    require_dir(args.photos, "--photos")
    import flows.stylize_dataset  # noqa: F401  (imports before tracing: they are not the run)
    from lwst.cli import main as lwst_main

    scratch = Path(tempfile.mkdtemp(prefix="lwst-memory-"))
    try:
        report(args, scratch, lwst_main)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(args, scratch: Path, lwst_main) -> None:
    photos = tiny_photos(scratch / "photos", Path(args.photos))
    manifest = scratch / "manifest.csv"
    write_manifest(manifest, [str(p) for p in photos], args.items)
    out = scratch / "out"
    snaps: dict = {}
    tracemalloc.start(10)
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(out / "images", args.items, snaps, stop),
                               daemon=True)
    watcher.start()
    try:
        lwst_main(["run", str(manifest), "--out", str(out), "--warp-method", "none", "--size",
                   "32", "--workers", "2", "--quiet", "--device", "cpu"])
    except SystemExit as exc:
        if exc.code:
            raise
    finally:
        stop.set()
        watcher.join()
    for mark in MARKS:  # passed between two polls, or the run was shorter than one
        if mark not in snaps:
            snaps[mark] = snapshot(out / "images")
    (first, rss0, n0, traced0), (last, rss1, n1, traced1) = snaps[MARKS[0]], snaps[MARKS[1]]
    per = max(1, n1 - n0)
    print(f"items {n0} -> {n1}: traced {traced0 / 2**20:.2f} -> {traced1 / 2**20:.2f} MiB "
          f"({(traced1 - traced0) / per:+.0f} B/item); RSS {rss0:.1f} -> {rss1:.1f} MiB "
          f"({(rss1 - rss0) * 2**20 / per:+.0f} B/item, tracing's own snapshots included)")
    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    for stat in last.filter_traces(keep).compare_to(first.filter_traces(keep),
                                                    "traceback")[: args.top]:
        print(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format()[-6:]:
            print("    ", line)


if __name__ == "__main__":
    main()
