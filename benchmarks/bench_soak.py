"""Memory over a long `lwst run` with model work, and an interrupted run resumed.

bench_scale.py measures orchestration alone (no warp, no texture); this runs the real model
path: a manifest of N items whose contents and geometry exemplars are photos and whose
textures cycle through at least 60 distinct artworks, so the per-process exemplar-feature cache
(`lwst.feature_cache`, a `lwst.byte_lru.ByteLRU`) fills and evicts, through ``lwst run``
(learned warp, ``--renderer adain``, ``--size 128``, ``--quiet``) as a subprocess. Every second
it reads VmRSS from /proc of the ``lwst run`` process and of each of its descendants, reported
apart: Dask worker processes (the largest at each sample), the temporary Prefect server, and
the rest (the server's guardian, multiprocessing helpers). Progress is the number of images in
``<out>/images``. Per run, one JSON line: items, seconds, items/min (overall and from the first
image on), RSS at 10 %, 50 % and 100 % of the items and the peak, for the main process, the
largest worker and the server, and the slope of RSS over the second half of the items in MiB
per 100 items (a steady leak shows here; a cache filling up shows in the first half).

``--interrupt`` then checks a stop and a resume: a fresh run is sent one SIGINT (to its process
group, as a terminal's Ctrl-C is) when half of its items have images; it must exit 130; the
same command again must exit 0, leave exactly one image per item, write metadata rows (its
own ``--run-id``) for every item the first run did not finish, and leave no temporary file
(``lwst.storage.TEMP_PREFIX``) under ``--out``.

    .venv/bin/python benchmarks/bench_soak.py --items 400 --interrupt \\
        --results benchmarks/results/soak_cpu.jsonl
    .venv/bin/python benchmarks/bench_soak.py --items 200 --runner dask --workers 2

``OMP_NUM_THREADS`` is removed from the run's environment; ``--torch-threads`` (default 2) sets
torch's threads per process. Each ``lwst run`` starts its own temporary Prefect server (a child,
measured); ``PREFECT_HOME`` is a scratch folder, so no run shares a database with another
session. Nothing is appended to a results file unless ``--results`` names one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import data_root, make_parser, require_dir, scratch_folder

LWST = Path(sys.executable).with_name("lwst")
MIB = 1024.0


def build_manifest(path: Path, photos: list[Path], styles: list[Path], items: int) -> None:
    """``items`` rows: content photo k, a different photo as geometry, texture k mod len(styles)
    (every texture recurs, in the same order, so a bounded cache sees both hits and evictions)."""
    if len(photos) < 2 or not styles:
        raise SystemExit(f"bench_soak: need 2+ photos and 1+ styles, got {len(photos)}, "
                         f"{len(styles)}")
    with path.open("w") as handle:
        handle.write("id,content,geometry,texture\n")
        for k in range(items):
            content = photos[k % len(photos)]
            geometry = photos[(7 * k + 3) % len(photos)]
            if geometry == content:
                geometry = photos[(k + 1) % len(photos)]
            handle.write(f"soak{k:06d},{content},{geometry},{styles[k % len(styles)]}\n")


def _rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / MIB
    return 0.0  # a zombie has no VmRSS line


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/<pid>/stat (its 4th field, after the comm)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...)."""
    tree, found, stack = _children_map(), [], [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def classify(pid: int) -> str:
    """``server`` (Prefect's API server), ``worker`` (a Dask worker or nanny process), or
    ``other``, by its command line."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    if "uvicorn" in cmdline or ("prefect" in cmdline and "server" in cmdline):
        return "server"
    if "guardian" in cmdline or "resource_tracker" in cmdline:
        return "other"
    if "multiprocessing" in cmdline or "distributed" in cmdline or "dask" in cmdline:
        return "worker"
    return "other"


@dataclass
class Sample:
    seconds: float
    done: int
    main: float
    worker: float  # the largest worker's RSS (0 when none)
    workers_total: float
    server: float
    other: float


@dataclass
class Sampler:
    """Samples the process tree of ``pid`` every ``every`` seconds until stopped; ``count``
    returns the items done so far (images written)."""

    pid: int
    count: Callable[[], int]
    every: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    on_sample: Callable[[Sample], None] | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._kinds: dict[int, str] = {}
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            main = _rss_mib(self.pid)
            if main is None:
                return
            by_kind: dict[str, list[float]] = {"worker": [], "server": [], "other": []}
            for child in descendants(self.pid):
                kind = self._kinds.get(child) or self._kinds.setdefault(child, classify(child))
                rss = _rss_mib(child)
                if rss is not None:
                    by_kind[kind].append(rss)
            try:
                done = self.count()
            except OSError:
                done = self.samples[-1].done if self.samples else 0
            sample = Sample(round(time.perf_counter() - self._started, 1), done, round(main, 1),
                            round(max(by_kind["worker"], default=0.0), 1),
                            round(sum(by_kind["worker"]), 1),
                            round(sum(by_kind["server"]), 1), round(sum(by_kind["other"]), 1))
            self.samples.append(sample)
            if self.on_sample is not None:
                self.on_sample(sample)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def slope_per_100(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (items done, MiB) in MiB per 100 items; None under 2 distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return round(100.0 * sxy / sxx, 2)


def summarise(samples: list[Sample], items: int, what: str) -> dict:
    """RSS of one series (``main``, ``worker``, ``server``) at 10/50/100 % of the items (the
    first sample at or past each), its peak, and its slope over the second half of the items."""
    series = [(s.done, getattr(s, what)) for s in samples]
    at = {}
    for percent in (10, 50, 100):
        target = items * percent / 100
        at[f"at_{percent}pct_mib"] = next((rss for done, rss in series if done >= target), None)
    second_half = [(done, rss) for done, rss in series if items / 2 <= done < items]
    return {**at, "peak_mib": max((rss for _, rss in series), default=None),
            "slope_2nd_half_mib_per_100_items": slope_per_100(second_half)}


def counter(out: str) -> Callable[[], int]:
    """Items done so far: the files in ``<out>/images`` (visible names, not temporary ones)."""
    images = Path(out) / "images"

    def count_local() -> int:
        if not images.is_dir():
            return 0
        return sum(1 for e in os.scandir(images) if not e.name.startswith("."))
    return count_local


def lwst_command(args, manifest: str, out: str, run_id: str | None = None) -> list[str]:
    command = [str(LWST), "run", manifest, "--out", out, "--size", str(args.size),
               "--renderer", args.renderer, "--warp-method", "learned", "--runner", args.runner,
               "--workers", str(args.workers), "--torch-threads", str(args.torch_threads),
               "--device", "cpu", "--quiet"]
    return command + (["--run-id", run_id] if run_id else [])


def run_measured(args, manifest: str, out: str, env: dict, run_id: str | None = None,
                 interrupt_at: int | None = None, log: Path | None = None
                 ) -> tuple[int, float, list[Sample], str]:
    """One ``lwst run`` in its own process group, sampled; with ``interrupt_at``, one SIGINT to
    the group once that many images exist. Returns exit code, seconds, samples, stderr tail."""
    log = log or Path(os.devnull)
    with log.open("ab") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(lwst_command(args, manifest, out, run_id), env=env,
                                   stdout=sink, stderr=sink, start_new_session=True)
        sent = threading.Event()

        def maybe_interrupt(sample: Sample) -> None:
            if interrupt_at is not None and not sent.is_set() and sample.done >= interrupt_at:
                sent.set()
                os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group

        sampler = Sampler(process.pid, counter(out), on_sample=maybe_interrupt)
        try:
            code = process.wait(args.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        seconds = time.perf_counter() - started
        sampler.stop()
    tail = log.read_text(errors="replace")[-1500:] if log.name != os.devnull else ""
    return code, seconds, sampler.samples, tail


def soak_row(args, samples: list[Sample], items: int, seconds: float, code: int) -> dict:
    first = next((s.seconds for s in samples if s.done > 0), None)
    last = samples[-1] if samples else None
    steady = None
    if first is not None and last is not None and last.done > 1 and last.seconds > first:
        steady = round(60.0 * (last.done - 1) / (last.seconds - first), 1)
    return {"kind": "soak", "runner": args.runner, "workers": args.workers,
            "torch_threads": args.torch_threads, "size": args.size, "renderer": args.renderer,
            "warp": "learned", "storage": "local",
            "items": items, "textures": args.textures, "exit_code": code,
            "seconds": round(seconds, 1), "items_per_min": round(60.0 * items / seconds, 1),
            "items_per_min_after_first_image": steady, "first_image_s": first,
            "samples": len(samples),
            "main_rss": summarise(samples, items, "main"),
            "largest_worker_rss": summarise(samples, items, "worker"),
            "workers_total_peak_mib": max((s.workers_total for s in samples), default=None),
            "prefect_server_rss": summarise(samples, items, "server"),
            "other_children_peak_mib": max((s.other for s in samples), default=None)}


def leftovers(out: str) -> list[str]:
    """Temporary or partial files under ``out``: names starting with lwst's TEMP_PREFIX."""
    from lwst.storage import TEMP_PREFIX

    return [str(p) for p in Path(out).rglob(f"{TEMP_PREFIX}*")]


def image_ids(out: str) -> list[str]:
    """The item id of every image in ``<out>/images`` (its stem), duplicates kept."""
    names = [e.name for e in os.scandir(Path(out) / "images")]
    return [n.split(".", 1)[0] for n in names if not n.startswith(".")]


def interrupt_check(args, manifest: str, out: str, items: int, env: dict,
                    scratch: Path) -> dict:
    """Interrupt a run half-way (one SIGINT), then re-run; check the resume: one image per
    item, rows for the rest, no temporary files."""
    from lwst.dataset import read_metadata_frame

    first_code, first_s, samples, first_tail = run_measured(
        args, manifest, out, env, run_id="soak-first", interrupt_at=items // 2,
        log=scratch / "interrupted.log")
    done_at_stop = samples[-1].done if samples else 0
    second_code, second_s, _, second_tail = run_measured(
        args, manifest, out, env, run_id="soak-resume", log=scratch / "resume.log")
    ids = image_ids(out)
    expected = {f"soak{k:06d}" for k in range(items)}
    meta = read_metadata_frame(out)
    first_ok = set(meta[(meta.run_id == "soak-first") & (meta.status == "ok")].id)
    resumed = set(meta[meta.run_id == "soak-resume"].id)
    resumed_ok = set(meta[(meta.run_id == "soak-resume") & (meta.status == "ok")].id)
    left = leftovers(out)
    checks = {
        "interrupted_exit_130": first_code == 130,
        "resume_exit_0": second_code == 0,
        "one_image_per_item": sorted(ids) == sorted(expected),
        "resume_rows_cover_the_rest": expected - first_ok <= resumed_ok,
        "resume_redid_none_finished": not (resumed_ok & first_ok),
        "no_temporary_files": not left,
    }
    row = {"kind": "interrupt", "runner": args.runner, "workers": args.workers,
           "size": args.size, "storage": "local",
           "items": items, "interrupted_exit": first_code,
           "interrupted_after_s": round(first_s, 1), "images_at_exit": done_at_stop,
           "first_run_ok_rows": len(first_ok), "resume_exit": second_code,
           "resume_s": round(second_s, 1), "resume_rows": len(resumed),
           "resume_ok_rows": len(resumed_ok), "images": len(ids),
           "duplicate_images": len(ids) - len(set(ids)), "temporary_files": left[:10],
           "checks": checks, "passed": all(checks.values())}
    if not row["passed"]:
        row["stderr_tail"] = {"interrupted": first_tail, "resume": second_tail}
    return row


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages (what `uptime` prints)."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--items", type=int, default=400, help="items in the soak run")
    parser.add_argument("--textures", type=int, default=60,
                        help="distinct texture exemplars (artworks), cycled over the items")
    parser.add_argument("--size", type=int, default=128, help="lwst run --size")
    parser.add_argument("--renderer", default="adain", choices=("adain", "wct", "gatys"))
    parser.add_argument("--runner", default="threads", choices=("threads", "dask"))
    parser.add_argument("--workers", type=int, default=1, help="lwst run --workers")
    parser.add_argument("--torch-threads", type=int, default=2, help="lwst run --torch-threads")
    parser.add_argument("--interrupt", action="store_true",
                        help="also interrupt a fresh run half-way and check its resume")
    parser.add_argument("--interrupt-only", action="store_true",
                        help="the interrupt check alone, no soak run")
    parser.add_argument("--interrupt-items", type=int, default=None,
                        help="items of the interrupted run (default: --items)")
    parser.add_argument("--data", default=str(data_root()),
                        help="folder holding photos/ and styles/ ($LWST_DATA when set)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder for the manifest, outputs and logs, kept (default: a "
                        "temporary one, removed)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per lwst run")
    parser.add_argument("--results", default=None,
                        help="append the JSON lines to this file, e.g. "
                        "benchmarks/results/soak_cpu.jsonl (default: printed only)")
    args = parser.parse_args(argv)
    data = require_dir(args.data)
    photos = sorted(require_dir(data / "photos", "--data").glob("*.jpg"))
    styles = sorted(require_dir(data / "styles", "--data").glob("*.jpg"))[:args.textures]
    if len(styles) < args.textures:
        raise SystemExit(f"bench_soak: --textures {args.textures} but {data / 'styles'} has "
                         f"{len(styles)} .jpg files")

    rows: list[dict] = []
    with scratch_folder(args.scratch, "lwst-soak-") as scratch:
        scratch.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k != "OMP_NUM_THREADS" and k != "PREFECT_API_URL"}
        env.update(PREFECT_HOME=str(scratch / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING",
                   DASK_LOGGING__DISTRIBUTED="error")
        base = str(scratch)
        load_before = load_average()
        if not args.interrupt_only:
            manifest = scratch / "manifest.csv"
            build_manifest(manifest, photos, styles, args.items)
            code, seconds, samples, tail = run_measured(args, str(manifest), f"{base}/out",
                                                        env, log=scratch / "soak.log")
            row = soak_row(args, samples, args.items, seconds, code)
            with (scratch / "soak_samples.jsonl").open("w") as handle:  # the series, kept
                handle.writelines(json.dumps(asdict(s)) + "\n" for s in samples)  # with --scratch
            if code != 0:
                row["stderr_tail"] = tail
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.interrupt or args.interrupt_only:
            n = args.interrupt_items or args.items
            small = scratch / "manifest_interrupt.csv"
            build_manifest(small, photos, styles, n)
            rows.append(interrupt_check(args, str(small), f"{base}/out_interrupt", n, env,
                                        scratch))
            print(json.dumps(rows[-1]), flush=True)
        load_after = load_average()
    machine = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
               "load_before": load_before, "load_after": load_after}
    rows = [{**row, **machine} for row in rows]
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    failed = [r for r in rows if r.get("exit_code", 0) != 0 or r.get("passed") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
