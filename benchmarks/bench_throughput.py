"""Pipeline throughput: items per minute through the stylize-dataset flow, on threads in the
flow's process or on Dask workers.

Runs a fixed manifest (benchmarks/manifests/throughput.csv: 3 triples, the example manifest's
until 2026-12-06, kept so the recorded figures stay comparable when the demo pairs change; each
listed ``--repeat`` times under new ids so two workers get an even share) at 256 px through the
real flow on a Dask LocalCluster of 1 and then 2 single-process workers, each given
cores/workers torch threads. Workers are warmed first (imports, VGG weights), so the figure is
steady-state throughput; cluster start-up is reported separately. Peak memory is each worker
process's maximum resident set size (getrusage), read after the run.

    .venv/bin/python benchmarks/bench_throughput.py               # CPU, 1 and 2 workers
    .venv/bin/python benchmarks/bench_throughput.py --device cuda --workers 1
    .venv/bin/python benchmarks/bench_throughput.py --runners threads dask --workers 2 \
        --repeat 8 --overrides '{"size": 512, "warp_method": "learned", "renderer": "adain"}'

With ``--runners threads`` the flow runs its tasks on threads in this process (the default
``lwst run``), warmed by one untimed run of the same manifest into a scratch folder.

Needs a Prefect API: it starts a fresh temporary server for each measured flow run (see
`prefect_api`, telemetry and analytics off, as in bench_scale.py) unless PREFECT_API_URL is set.

A run in which not every item ended ``ok`` reports no throughput (``items_per_min`` null, and
``failed`` counts the others) and the script exits 1: the time of failed items is not a rate.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import make_parser

REPO = Path(__file__).resolve().parents[1]
CALLER_API = os.environ.get("PREFECT_API_URL")  # set by the caller: use it, start no server
DEFAULT_OVERRIDES = {"size": 256, "warp_method": "tps", "levels": 2, "iterations": [20, 10]}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rate(row: dict, n_items: int, ok: int, seconds: float) -> dict:
    """``items_per_min`` only when every item is ok; else ``None`` and how many failed."""
    if ok == n_items:
        return {**row, "items_per_min": round(60.0 * n_items / seconds, 2)}
    return {**row, "items_per_min": None, "failed": n_items - ok,
            "note": "not every item ok: no throughput figure"}


def _mean(values, digits: int) -> float | None:
    """The mean of a metadata column, ``None`` (valid JSON, not NaN) when it has no value."""
    value = float(values.mean())
    return None if value != value else round(value, digits)


def _warm(device: str) -> None:
    import torch  # noqa: F401

    import lwst.stylize  # noqa: F401
    from lwst.stylize import resolve_device
    from lwst.vgg import load_vgg19

    load_vgg19("auto", device=resolve_device(device))


def measure(manifest: str, workers: int, overrides: dict, cores: int) -> dict:
    from distributed import Client, LocalCluster

    from flows.stylize_dataset import stylize_dataset
    from lwst.dataset import read_metadata
    from lwst.manifest import read_manifest

    n_items = len(read_manifest(manifest))
    threads = max(1, cores // workers)
    started = time.perf_counter()
    with prefect_api(), LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                     dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(_warm, overrides.get("device", "auto"))
        warm_s = time.perf_counter() - started
        out = tempfile.mkdtemp(prefix="lwst-bench-")
        try:
            began = time.perf_counter()
            summary = stylize_dataset(manifest, out, overrides=overrides, runner="dask",
                                      dask_address=cluster.scheduler_address,
                                      torch_threads=threads, contact_sheet_items=0)
            seconds = time.perf_counter() - began
            peaks = client.run(_peak_rss_mib)
            meta = read_metadata(out).to_pandas()
        finally:
            shutil.rmtree(out, ignore_errors=True)
    ok = summary["counts"]["ok"]
    return _rate({"runner": "dask", "workers": workers, "torch_threads": threads,
                  "items": n_items, "ok": ok, "seconds": round(seconds, 1),
                  "mean_warp_s": _mean(meta["seconds_warp"], 1),
                  "mean_render_s": _mean(meta["seconds_render"], 1),
                  "startup_and_warm_s": round(warm_s, 1),
                  "peak_rss_mib_per_worker": sorted(round(v) for v in peaks.values())},
                 n_items, ok, seconds)


def measure_threads(manifest: str, workers: int, overrides: dict, cores: int) -> dict:
    import torch

    from flows.stylize_dataset import stylize_dataset
    from lwst.dataset import read_metadata
    from lwst.manifest import read_manifest

    n_items = len(read_manifest(manifest))
    torch.set_num_threads(cores)
    warm = tempfile.mkdtemp(prefix="lwst-bench-warm-")
    try:
        with prefect_api():
            began = time.perf_counter()
            stylize_dataset(manifest, warm, overrides=overrides, runner="threads",
                            workers=workers, contact_sheet_items=0)
            warm_s = time.perf_counter() - began
    finally:
        shutil.rmtree(warm, ignore_errors=True)
    out = tempfile.mkdtemp(prefix="lwst-bench-")
    try:
        with prefect_api():  # a fresh server, as each `lwst run` starts its own
            began = time.perf_counter()
            summary = stylize_dataset(manifest, out, overrides=overrides, runner="threads",
                                      workers=workers, contact_sheet_items=0)
            seconds = time.perf_counter() - began
        meta = read_metadata(out).to_pandas()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ok = summary["counts"]["ok"]
    return _rate({"runner": "threads", "workers": workers, "torch_threads": cores,
                  "items": n_items, "ok": ok, "seconds": round(seconds, 1),
                  "mean_warp_s": _mean(meta["seconds_warp"], 2),
                  "mean_render_s": _mean(meta["seconds_render"], 2),
                  "first_run_s": round(warm_s, 1), "peak_rss_mib": round(_peak_rss_mib())},
                 n_items, ok, seconds)


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """The Prefect API a measured flow run talks to: ``PREFECT_API_URL`` when the caller set
    one, else a fresh temporary server for this block alone.

    Why fresh: a second flow run against the same temporary (SQLite) server stalled for 60 s
    in 3 of 5 runs on 2026-12-06 (the server's ``task_run_recorder`` logged "database is
    locked" after its 60-s busy timeout, Prefect issue #18934's symptom), so timing the
    second run of one server measured SQLite, not lwst. ``lwst run`` starts its own server per
    run, so one fresh server per measured run is what a user gets.
    """
    if CALLER_API:
        yield
        return
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # Dask workers inherit it
        try:
            yield
        finally:
            del os.environ["PREFECT_API_URL"]


def repeated_manifest(uri: str, repeat: int) -> str:
    """The manifest with every item listed ``repeat`` times (ids ``<id>-r<k>``), paths resolved."""
    import pandas as pd

    from lwst.manifest import read_manifest

    rows = [{"id": f"{item.id}-r{k}", "content": item.content, "geometry": item.geometry,
             "texture": item.texture, **item.overrides}
            for k in range(repeat) for item in read_manifest(uri)]
    path = Path(tempfile.mkdtemp(prefix="lwst-bench-manifest-")) / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--manifest",
                        default=str(REPO / "benchmarks" / "manifests" / "throughput.csv"),
                        help="manifest of (content, geometry, texture) items")
    parser.add_argument("--repeat", type=int, default=2, help="list each item this many times")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts, one measured run each")
    parser.add_argument("--runners", nargs="+", choices=("threads", "dask"), default=["dask"],
                        help="threads: the flow's own threads (lwst run's default); dask: a "
                        "LocalCluster")
    parser.add_argument("--device", default="cpu", help="torch device of the items, e.g. cuda")
    parser.add_argument("--overrides", type=json.loads, default=DEFAULT_OVERRIDES,
                        help="flat overrides as JSON (default: %(default)s)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="cores shared by the workers (torch threads = cores / workers)")
    args = parser.parse_args()
    overrides = {**args.overrides, "device": args.device}
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The temporary servers inherit these: no telemetry heartbeat writing to their SQLite
    # database while a run is timed (it logged "database is locked"), no analytics.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    manifest = repeated_manifest(args.manifest, args.repeat)
    incomplete = 0
    try:
        print(f"manifest {args.manifest} x{args.repeat}, overrides {json.dumps(overrides)}, "
              f"{args.cores} cores", flush=True)
        for runner in args.runners:
            for workers in args.workers:
                run = measure_threads if runner == "threads" else measure
                row = run(manifest, workers, overrides, args.cores)
                incomplete += row["items_per_min"] is None
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(Path(manifest).parent, ignore_errors=True)
    if incomplete:
        print(f"{incomplete} run(s) with failed items: no throughput figure", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
