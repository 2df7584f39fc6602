"""The whole deployment loop on one machine, for real (slow: a server, a worker, a run).

prefect server start -> work pool + concurrency limit -> prefect deploy --all -> worker ->
prefect deployment run --param ... --watch -> outputs and Parquet metadata on disk; then the
same deployment on an external Dask cluster (`dask scheduler` + `dask worker` processes, as
README "Scaling out" starts them); and a deployment run in which lwst's own bug (planted in the
worker's processes) failed an item ends Failed, not Completed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_inputs import FAST, plant_bug, unused_port, write_manifest_csv

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent



def _wait_healthy(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "prefect server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"prefect server at {url} not healthy after {seconds} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _deployment_run(manifest: Path, out: Path, run_id: str, env: dict[str, str],
                    *params: str) -> subprocess.CompletedProcess:
    """``prefect deployment run stylize-dataset/manual`` on the cheap settings, watched to its
    end; ``params``: more ``--param`` pairs."""
    return subprocess.run(
        [BIN / "prefect", "deployment", "run", "stylize-dataset/manual",
         "--param", f"manifest={manifest}", "--param", f"out={out}",
         "--param", f"overrides={json.dumps(FAST)}", "--param", f"run_id={run_id}", *params,
         "--watch", "--watch-timeout", "400"],
        cwd=REPO, env=env, timeout=450, capture_output=True, text=True)


@pytest.mark.slow
def test_deploy_work_pool_worker_and_deployment_run(image_folder: Path, tmp_path: Path):
    port = unused_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path),
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_CLI_PROMPT": "false",
           "PREFECT_LOGGING_LEVEL": "INFO", "LWST_REPO": str(REPO), "LWST_WORK_POOL": "lwst-test"}
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed in finally)
    server = subprocess.Popen([BIN / "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=log)
    worker = None
    processes: list[subprocess.Popen] = []  # the Dask cluster's
    try:
        _wait_healthy(api, server)
        subprocess.run(["bash", "deployments/setup_work_pool.sh"], cwd=REPO, env=env,
                       check=True, timeout=120, capture_output=True)
        deployed = subprocess.run(
            [BIN / "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
             "deployments/prefect.yaml"], cwd=REPO, env=env, timeout=240, capture_output=True,
            text=True)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        listed = subprocess.run([BIN / "prefect", "deployment", "inspect",
                                 "stylize-dataset/nightly"], cwd=REPO, env=env, timeout=120,
                                capture_output=True, text=True, check=True).stdout
        assert "0 2 * * *" in listed

        worker_log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
        # The worker's flow runs read any input named bug-* through a planted bug (only those)
        plant = plant_bug(tmp_path / "plant")
        worker_env = {**env, "PYTHONPATH": os.pathsep.join([str(plant), str(REPO)])}
        worker = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "lwst-test"],
                                  cwd=tmp_path, env=worker_env, stdout=worker_log,
                                  stderr=worker_log)
        rows = [{"id": f"w{i}", "content": str(image_folder / "contents" / f"photo{i}.png")}
                for i in range(2)]
        manifest = write_manifest_csv(tmp_path / "m.csv", rows)
        out = tmp_path / "deployed-out"
        ran = _deployment_run(manifest, out, "deployed", env)
        worker_tail = (tmp_path / "worker.log").read_text()[-3000:]
        assert ran.returncode == 0, ran.stdout[-3000:] + worker_tail
        assert "Completed" in ran.stdout
        assert sorted(p.name for p in (out / "images").iterdir()) == ["w0.png", "w1.png"]
        table = pq.read_table(out / "metadata" / "run-deployed.parquet")
        assert sorted(table["status"].to_pylist()) == ["ok", "ok"]
        _a_run_with_a_bug_ends_failed(image_folder, tmp_path, env)
        _run_on_an_external_dask_cluster(manifest, tmp_path, env, processes)
    finally:
        for process in processes:
            _stop(process)
        if worker is not None:
            _stop(worker)
        _stop(server)
        log.close()


def _a_run_with_a_bug_ends_failed(image_folder: Path, tmp_path: Path,
                                  env: dict[str, str]) -> None:
    """D6: the item lwst's bug failed makes the deployment run Failed (it ended Completed, and
    a scheduled run looked fine); the other item finished and every row was written."""
    photos = image_folder / "contents"
    (photos / "bug-x.png").write_bytes((photos / "photo0.png").read_bytes())
    rows = [{"id": "fine", "content": str(photos / "photo1.png")},
            {"id": "bug", "content": str(photos / "bug-x.png")}]
    manifest = write_manifest_csv(tmp_path / "bug.csv", rows)
    out = tmp_path / "bug-out"
    ran = _deployment_run(manifest, out, "deployed-bug", env)
    worker_tail = (tmp_path / "worker.log").read_text()[-3000:]
    assert ran.returncode == 1, ran.stdout[-3000:] + worker_tail
    assert "Flow run finished in state 'Failed'" in ran.stdout, ran.stdout[-3000:]
    assert "1 item(s) failed by an internal error" in worker_tail, worker_tail
    table = pq.read_table(out / "metadata" / "run-deployed-bug.parquet")
    assert {r["id"]: r["error_kind"] for r in table.to_pylist()} == {
        "fine": None, "bug": "internal"}


def _run_on_an_external_dask_cluster(manifest: Path, tmp_path: Path, env: dict[str, str],
                                     processes: list[subprocess.Popen]) -> None:
    """The deployment with ``runner=dask`` and a cluster of its own processes, started outside
    the repository: the tasks Prefect sends must name modules the workers can import (a
    file-path entrypoint made every item fail there)."""
    port = unused_port()
    address = f"tcp://127.0.0.1:{port}"
    dask_log = open(tmp_path / "dask.log", "w")  # noqa: SIM115 (closed with the test's tmp)
    processes.append(subprocess.Popen(
        [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0"], cwd=tmp_path, env=env, stdout=dask_log, stderr=dask_log))
    processes.append(subprocess.Popen(
        [BIN / "dask", "worker", address, "--nworkers", "1", "--nthreads", "1",
         "--no-dashboard"], cwd=tmp_path, env=env, stdout=dask_log, stderr=dask_log))
    out = tmp_path / "dask-out"
    ran = _deployment_run(manifest, out, "deployed-dask", env, "--param", "runner=dask",
                          "--param", f"dask_address={address}")
    dask_log.flush()
    tail = (tmp_path / "worker.log").read_text()[-3000:] + (tmp_path / "dask.log").read_text(
        errors="replace")[-2000:]
    assert ran.returncode == 0, ran.stdout[-3000:] + tail
    table = pq.read_table(out / "metadata" / "run-deployed-dask.parquet")
    assert sorted(table["status"].to_pylist()) == ["ok", "ok"], (
        table.select(["id", "error"]).to_pylist(), tail)
