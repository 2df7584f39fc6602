"""Scale-out: the flow's items run in the worker processes of a 2-worker Dask LocalCluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pipeline_inputs import FAST, write_manifest_csv

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_items_run_in_dask_worker_processes_with_gpu_resources(image_folder: Path,
                                                               tmp_path: Path):
    from distributed import Client, LocalCluster

    from flows.stylize_dataset import stylize_dataset

    photos = image_folder / "contents"
    rows = [{"id": f"d{i}", "content": str(photos / f"photo{i % 3}.png")} for i in range(6)]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    # Workers advertise one "GPU" each; items ask for one, so each worker takes one at a time,
    # as it would on GPU machines (`dask worker --resources GPU=1`).
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0",
                      resources={"GPU": 1}) as cluster, Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        summary = stylize_dataset(str(manifest), str(tmp_path / "out"), overrides=FAST,
                                  runner="dask", dask_address=cluster.scheduler_address,
                                  gpus_per_item=1, torch_threads=1)
    assert summary["counts"] == {"ok": 6, "failed": 0, "skipped": 0}
    pids = {int(worker.rsplit(":", 1)[1]) for worker in summary["workers"]}  # items per worker
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert pids <= worker_pids  # every item ran in a worker process, none in this one
    assert sum(summary["workers"].values()) == 6
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        f"d{i}.png" for i in range(6)]


def test_a_stop_request_lets_the_running_dask_unit_finish(image_folder: Path, tmp_path: Path):
    """Under Dask too (`lwst run --runner dask`'s first Ctrl-C): the unit running on the worker
    finishes and is recorded, the ones not started are cancelled, none is dropped half-done."""
    from distributed import Client, LocalCluster

    from flows.stylize_dataset import RunStopped, stylize_dataset
    from lwst import interrupts
    from lwst.progress import listening

    photos = image_folder / "contents"
    rows = [{"id": f"q{i}", "content": str(photos / f"photo{i % 3}.png"), "seed": i}
            for i in range(6)]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    asked = []

    def first_finished(done: int, total: int, record: dict) -> None:
        if record["status"] == "ok" and not asked:
            asked.append(interrupts.request_stop())

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster), \
            listening(first_finished), pytest.raises(RunStopped) as stopped:
        stylize_dataset(str(manifest), str(tmp_path / "out"), overrides=FAST, runner="dask",
                        dask_address=cluster.scheduler_address, torch_threads=1)
    summary = stopped.value.summary  # the run ended Cancelled: a direct call raises, with it
    ok = summary["counts"]["ok"]
    assert asked == [True] and summary["counts"]["failed"] == 0
    assert 1 <= ok <= 4 and summary["stopped"] == {"not_done": 6 - ok}
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == ok
