"""The fixed cost of an ``lwst run``: a re-run with nothing left to do, timed end to end.

A re-run of a finished manifest without ``PREFECT_API_URL`` is answered without a Prefect flow
run (`flows.work_plan.record_finished_run`): Python start, the manifest, Prefect's settings
(to know that no server of the user's is configured), torch (the rows' device), the plan and
one metadata file of skipped rows. A run with work imports Prefect's engine, starts a
temporary Prefect server (its own process), imports the flow and plans before its first item:
``--one-missing`` deletes one item's image before each re-run, so each re-run does that one
item through the flow (the fixed cost of a run with work, plus one 128-px adain item). This
script runs ``manifests/example.csv`` (``--renderer adain --size 128``) once to finish it, then
times ``--repeats`` re-runs of the same command. ``--code`` names checkouts whose ``lwst`` to
time (``python -m lwst.cli`` with that folder first on ``sys.path``); several are timed in
turn, repeat by repeat, so a change of the machine's load falls on all of them alike.
``PREFECT_HOME`` is a scratch folder per checkout. One JSON line per checkout: the seconds of
each re-run, their median and minimum, and the load average at the start.

    .venv/bin/python benchmarks/bench_startup.py --repeats 5 --code . /tmp/old-checkout \\
        --results benchmarks/results/startup_cpu.jsonl
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, make_parser, scratch_folder

MANIFEST = REPO / "manifests" / "example.csv"


def run_once(code: Path, out: Path, home: Path) -> float:
    """Seconds of one ``lwst run`` of the example manifest with ``code``'s lwst; exits on a
    failed run (its stderr's last lines printed)."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": str(code)}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "lwst.cli", "run", str(MANIFEST),
               "--out", str(out), "--size", "128", "--renderer", "adain", "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench_startup: {code}: lwst run exited {done.returncode}:\n"
                         + "\n".join(done.stderr.splitlines()[-5:]))
    return seconds


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--code", type=Path, nargs="+", default=[REPO],
                        help="checkouts whose lwst to time (default: this one)")
    parser.add_argument("--repeats", type=int, default=5, help="re-runs per checkout")
    parser.add_argument("--scratch", type=Path, help="keep the outputs here")
    parser.add_argument("--results", type=Path, help="append one JSON line per checkout")
    parser.add_argument("--one-missing", action="store_true",
                        help="delete the first item's image before each re-run: each re-run "
                        "does that item through the Prefect flow")
    args = parser.parse_args()
    with MANIFEST.open() as handle:
        first_image = f"{next(csv.DictReader(handle))['id']}.png"
    codes = [path.resolve() for path in args.code]
    load = os.getloadavg()[0]
    with scratch_folder(args.scratch, "lwst-startup-") as scratch:
        places = {code: (scratch / f"out-{k}", scratch / f"home-{k}")
                  for k, code in enumerate(codes)}
        for code, (out, home) in places.items():
            first = run_once(code, out, home)
            print(f"{code}: first run {first:.1f} s (3 items)", flush=True)
        seconds: dict[Path, list[float]] = {code: [] for code in codes}
        for _ in range(args.repeats):
            for code, (out, home) in places.items():
                if args.one_missing:
                    (out / "images" / first_image).unlink()
                seconds[code].append(run_once(code, out, home))
    for code in codes:
        times = seconds[code]
        row = {"benchmark": "startup", "code": str(code), "commit": _commit(code),
               "case": "one item missing" if args.one_missing else "nothing to do",
               "repeats": len(times), "seconds": [round(t, 2) for t in times],
               "median_s": round(statistics.median(times), 2), "min_s": round(min(times), 2),
               "load_at_start": round(load, 2),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        print(json.dumps(row), flush=True)
        if args.results:
            with args.results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


def _commit(code: Path) -> str:
    done = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
