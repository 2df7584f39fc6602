"""`lwst run` as a terminal runs it: Ctrl-C there signals the whole foreground process group,
not only `lwst run`. Its temporary Prefect server and its Dask workers must survive that
signal (the run finishes the items in progress, writes its metadata and exits 130), and still
go when the run ends. Before, the server died at once and the run hung for minutes, printed a
traceback, exited 1 and wrote no metadata (the pid-only test in test_hostile.py missed it).
The stopped run's Prefect flow run ends Cancelled, not Completed (items were not done)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
from conftest import save_image
from pipeline_inputs import kill_all, task_running, write_manifest_csv

LWST = Path(sys.executable).with_name("lwst")
ROOT = Path(__file__).resolve().parents[1]
ITEMS = ("a", "b", "c")


def _env(tmp_path: Path, plant: Path | None = None) -> dict[str, str]:
    """The environment of a `lwst run` with its own temporary Prefect server; ``plant``: a
    folder whose ``sitecustomize.py`` each of its Python processes runs first."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    path = [str(ROOT)] if plant is None else [str(plant), str(ROOT)]
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=os.pathsep.join(path),
               OMP_NUM_THREADS="1")
    return env


def _run(tmp_path: Path, runner: str, log: Path, workers: int = 1,
         plant: Path | None = None) -> subprocess.Popen:
    """`lwst run` of three small gatys items (seconds each), in a session of its own as a
    terminal's job is, with its temporary Prefect server (no PREFECT_API_URL)."""
    save_image(tmp_path / "t.png", (32, 32), seed=9)
    rows = []
    for k, item in enumerate(ITEMS):
        save_image(tmp_path / f"{item}.png", (48, 48), seed=k)
        rows.append({"id": item, "content": f"{item}.png", "texture": "t.png"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    with log.open("wb") as sink:
        return subprocess.Popen(
            [str(LWST), "run", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"),
             "--size", "48", "--renderer", "gatys", "--iterations", "60", "--levels", "1",
             "--device", "cpu", "--quiet", "--runner", runner, "--workers", str(workers)],
            env=_env(tmp_path, plant), stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True)


def _flow_run_states(prefect_home: Path) -> list[tuple[str, str | None]]:
    """(state type, message) of every flow run the temporary Prefect server recorded, oldest
    first: the server goes with its run, its database under ``prefect_home`` stays."""
    database = f"file:{prefect_home / 'prefect.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(database, uri=True, timeout=5)) as db:
        return db.execute("SELECT s.type, s.message FROM flow_run f JOIN flow_run_state s "
                          "ON s.id = f.state_id ORDER BY f.created").fetchall()


def await_item(tmp_path: Path, run: subprocess.Popen, log: Path) -> list[psutil.Process]:
    """Wait until an item of ``run`` is in progress; its descendants then (server, workers)."""
    deadline = time.monotonic() + 300  # a first server start on a busy machine is slow
    while not task_running(tmp_path / "prefect-home", "stylize"):
        assert run.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "no item ever started"
        time.sleep(0.1)
    return psutil.Process(run.pid).children(recursive=True)


def still_running(processes: list[psutil.Process]) -> list[tuple[int, list[str]]]:
    """The processes of ``processes`` still running after 20 s (zombies count as gone)."""
    alive = psutil.wait_procs(processes, timeout=20)[1]
    left = []
    for p in alive:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append((p.pid, p.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return left


def stopped_run(tmp_path: Path, code: int, text: str, exit_code: int,
                notice: str) -> tuple[pd.DataFrame, set[str]]:
    """What every stopped run shows (``code``: its exit status, ``text``: its output): the
    exit status, ``notice`` once, no traceback or ERROR, one metadata file whose ``ok`` items
    are some but not all; returns that file's rows and the ``ok`` ids."""
    assert code == exit_code, text[-3000:]
    assert text.count(notice) == 1, text
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
    files = sorted((tmp_path / "out" / "metadata").glob("run-*.parquet"))
    assert len(files) == 1, text
    first = pd.read_parquet(files[0])
    done = set(first.loc[first["status"] == "ok", "id"])
    assert done and done < set(ITEMS), first[["id", "status"]]
    return first, done


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_ctrl_c_to_the_terminal_group_finishes_in_progress_writes_metadata_and_resumes(
        tmp_path: Path, runner: str):
    log = tmp_path / "run.log"
    run = _run(tmp_path, runner, log)
    descendants: list[psutil.Process] = []
    try:
        descendants = await_item(tmp_path, run, log)
        os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        try:
            code = run.wait(120)
        except subprocess.TimeoutExpired:
            pytest.fail("the run hung after a group Ctrl-C:\n"
                        + log.read_text(errors="replace")[-3000:])
        text = log.read_text(errors="replace")
        first, done = stopped_run(tmp_path, code, text, 130, "lwst run: interrupted; finishing")
        assert f"{len(ITEMS) - len(first)} not done" in text, text
        stopped = (f"stopped on Ctrl-C after the items in progress; {len(ITEMS) - len(first)} "
                   "item(s) not done: a re-run does them")
        assert text.rstrip().splitlines()[-1] == f"lwst run: {stopped}", text[-3000:]
        assert _flow_run_states(tmp_path / "prefect-home") == [("CANCELLED", stopped)]
        # Everything the run started goes with it (the guardian sees to the server).
        assert not still_running(descendants)

        rerun = subprocess.run(run.args, env=_env(tmp_path), capture_output=True, text=True,
                               timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert f"{len(ITEMS) - len(done)} ok, 0 failed, {len(done)} skipped" in rerun.stdout
        assert _flow_run_states(tmp_path / "prefect-home")[1:] == [("COMPLETED", None)]
    finally:
        kill_all(run, descendants)


def ctrl_c_typed_in(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
    """A Ctrl-C typed as ``module.name`` is called: a real SIGINT to this process (`lwst
    run`'s handler, `flows.cli.StopOnInterrupt`, in pytest's main thread), once."""
    real, sent = getattr(module, name), []

    def typed(*args: Any, **kwargs: Any) -> Any:
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, typed)


# Where a Ctrl-C lands outside the items' loop, in the flow run: (module, function it is typed
# in, items done of two). As the run starts, none is done; as it writes its metadata, both are.
OUTSIDE_THE_LOOP = {"starting": ("flows.stylize_dataset", "read_manifest", 0),
                    "writing-metadata": ("flows.stylize_dataset", "publish", 2)}


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("moment", OUTSIDE_THE_LOOP)
def test_a_ctrl_c_outside_the_items_loop_ends_the_prefect_run_cancelled_not_crashed(
        main, image_folder: Path, tmp_path: Path, capsys, monkeypatch, moment: str):
    """A Ctrl-C while the flow run read its manifest or wrote its metadata interrupted it
    there: the Prefect run ended Crashed ("Execution was aborted by an interrupt signal"),
    a failure in the UI for a stop, and the metadata of the items done was not written. The
    run stops there as in its loop: its metadata written, whole, Cancelled, exit 130."""
    import importlib

    from test_pipeline_cli import CHEAP_RUN, flow_run_of

    module, name, ok = OUTSIDE_THE_LOOP[moment]
    photos, styles = image_folder / "contents", image_folder / "styles"
    rows = [{"id": f"i{k}", "content": str(photos / f"photo{k}.png"),
             "texture": str(styles / "style0.png")} for k in range(2)]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    ctrl_c_typed_in(monkeypatch, importlib.import_module(module), name)

    assert main(["run", str(manifest), "--out", str(out), *CHEAP_RUN, "--run-id", moment]) == 130
    said = capsys.readouterr()
    stopped = (f"stopped on Ctrl-C after the items in progress; {2 - ok} item(s) not done: a "
               "re-run does them")
    assert said.err.strip().splitlines()[-1] == f"lwst run: {stopped}", said.err
    assert f"run {moment}: {ok} ok, 0 failed, 0 skipped, {2 - ok} not done" in said.out
    run = flow_run_of(moment)
    assert run.state.is_cancelled() and run.state.message == stopped, run.state
    table = pq.read_table(out / "metadata" / f"run-{moment}.parquet").to_pylist()
    assert [row["status"] for row in table] == ["ok"] * ok
    assert len(list(out.glob("images/*.png"))) == ok and not (out / "_lwst.lock").exists()
