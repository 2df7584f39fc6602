"""SIGTERM, what batch systems send (Kubernetes, Slurm, systemd, ``timeout``, ``kill``), stops
every ``lwst`` command as Ctrl-C does, says so in one line and exits 143 (128 + 15): a trainer
saves its step, a write in progress leaves nothing, ``lwst run`` finishes the items in
progress, writes its metadata and takes its children with it. Before, Python's default action
killed the process: no line, no checkpoint since the last ``--checkpoint-every``, a first
output file of two left behind, a run's temporary server and Dask workers left to outlive it.
Real subprocesses, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import save_image
from pipeline_inputs import kill_all, task_running
from test_decoder_training_cli import args as decoder_args
from test_decoder_training_cli import log_steps, state_step
from test_run_terminal import (
    ITEMS,
    _env,
    _flow_run_states,
    _run,
    await_item,
    still_running,
    stopped_run,
)

from lwst.cli import main

ROOT = Path(__file__).resolve().parents[1]
LWST = [sys.executable, "-m", "lwst.cli"]


def _temp_files(folder: Path) -> list[Path]:
    """lwst's temporary files (`lwst.storage.TEMP_PREFIX`) under ``folder``."""
    return sorted(folder.rglob(".lwst-*.tmp"))


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def test_a_sigterm_to_the_decoder_trainer_saves_its_step_and_the_same_command_resumes(
        tmp_path: Path):
    out, log = tmp_path / "d.pt", tmp_path / "d.pt.log.csv"
    command = [*LWST, *decoder_args(tmp_path, out, "--steps", "100000",
                                    "--checkpoint-every", "100000")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: log.exists() and log.read_text().count("\n") > 5, proc, "trained 5 steps",
              120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    step = state_step(out)  # not lost back to --checkpoint-every
    assert err.strip().splitlines() == [f"lwst train-decoder: stopped on SIGTERM at step "
                                        f"{step}; the state is saved: the same command resumes"]
    assert step >= 5 and log_steps(out) == list(range(1, step + 1))
    assert main(decoder_args(tmp_path, out, "--steps", str(step + 2))) == 0
    assert state_step(out) == step + 2 and log_steps(out) == list(range(1, step + 3))


# In the `lwst stylize` subprocess: its second output is being written when SIGTERM comes.
SIGTERM_IN_SECOND_WRITE = """
import os, signal
import lwst.storage

def _plant(real):
    calls = []
    def write_bytes_atomic(uri, data, **options):
        calls.append(uri)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(uri, data, **options)
    return write_bytes_atomic

lwst.storage.write_bytes_atomic = _plant(lwst.storage.write_bytes_atomic)
"""


def test_a_sigterm_while_stylize_writes_leaves_no_output_and_says_so_in_one_line(
        tmp_path: Path):
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(SIGTERM_IN_SECOND_WRITE)
    content = save_image(tmp_path / "c.png", (32, 32))
    outputs = tmp_path / "outputs"
    said = subprocess.run(
        [*LWST, "stylize", "--content", str(content), "--out", str(outputs / "o.png"),
         "--metadata-out", str(outputs / "o.json"), "--size", "32", "--device", "cpu"],
        env={**os.environ, "PYTHONPATH": f"{plant}{os.pathsep}{ROOT}"},
        capture_output=True, text=True, timeout=120)
    assert said.returncode == 143, said.stderr
    lines = said.stderr.strip().splitlines()  # a content-only run warns before the work
    assert [line for line in lines if ": warning: " not in line] == \
        ["lwst: terminated (SIGTERM)"], said.stderr
    assert list(outputs.iterdir()) == []  # the first file written is removed again, no temp


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow  # a temporary Prefect server start (~10 s), for the slow suite
def test_a_sigterm_while_the_run_starts_exits_143_at_once_with_its_children(tmp_path: Path):
    """`kill` while Prefect's temporary server starts (no flow yet): one line, exit 143 in
    seconds, the server and its guardian stopped (they run in sessions of their own: a
    signal to the run alone never reached them)."""
    log = tmp_path / "run.log"
    run = _run(tmp_path, "threads", log)
    children: list[psutil.Process] = []
    try:
        _wait_for(lambda: _children(run.pid), run, "started a child", 120)
        time.sleep(0.5)
        children = _children(run.pid)
        os.kill(run.pid, signal.SIGTERM)
        sent = time.monotonic()
        code = run.wait(60)
        took = time.monotonic() - sent
        text = log.read_text(errors="replace")
        assert code == 143, text[-3000:]
        assert took < 15, took
        assert "Traceback" not in text, text[-3000:]
        assert [line for line in text.splitlines() if line.startswith("lwst")] == \
            ["lwst: terminated (SIGTERM)"], text[-3000:]
        assert not still_running(children)
        assert not (tmp_path / "out" / "images").exists() and not _temp_files(tmp_path)
    finally:
        kill_all(run, children)


@pytest.mark.slow  # a temporary Prefect server and three gatys items: ~60 s on 2 cores
def test_a_sigterm_finishes_the_items_in_progress_cancels_the_run_and_a_rerun_resumes(
        tmp_path: Path):
    log = tmp_path / "run.log"
    run = _run(tmp_path, "threads", log)
    descendants: list[psutil.Process] = []
    try:
        descendants = await_item(tmp_path, run, log)
        os.kill(run.pid, signal.SIGTERM)  # the process alone, as `kill` and Kubernetes do
        code = run.wait(120)
        text = log.read_text(errors="replace")
        first, done = stopped_run(tmp_path, code, text, 143,
                                  "lwst run: SIGTERM; finishing the items in progress")
        images = {p.stem for p in (tmp_path / "out" / "images").iterdir()}
        assert images == done and not _temp_files(tmp_path / "out")
        last = text.rstrip().splitlines()[-1]
        not_done = f"{len(ITEMS) - len(first)} item(s) not done: a re-run does them"
        stopped = f"stopped on SIGTERM after the items in progress; {not_done}"
        assert last == f"lwst run: {stopped}", last
        assert _flow_run_states(tmp_path / "prefect-home") == [("CANCELLED", stopped)]
        assert not still_running(descendants)

        rerun = subprocess.run(run.args, env=_env(tmp_path), capture_output=True, text=True,
                               timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert f"{len(ITEMS) - len(done)} ok, 0 failed, {len(done)} skipped" in rerun.stdout
    finally:
        kill_all(run, descendants)


@pytest.mark.slow  # a temporary Prefect server start: ~40 s on 2 cores
def test_a_second_sigterm_stops_the_run_now_with_its_children(tmp_path: Path):
    log = tmp_path / "run.log"
    run = _run(tmp_path, "threads", log)
    descendants: list[psutil.Process] = []
    try:
        descendants = await_item(tmp_path, run, log)
        os.kill(run.pid, signal.SIGTERM)
        _wait_for(lambda: "lwst run: SIGTERM; finishing" in log.read_text(), run, "said it", 10)
        os.kill(run.pid, signal.SIGTERM)
        assert run.wait(20) == 143
        text = log.read_text(errors="replace")
        assert "lwst run: stopped now" in text and "Traceback" not in text, text[-3000:]
        assert not still_running(descendants)
    finally:
        kill_all(run, descendants)


# In the `lwst` process only (its server and workers run this too): a SIGTERM to itself at the
# ``nth`` call of ``module.name``.
SIGTERM_AT_CALL = """
import os, signal, sys
if os.path.basename(sys.argv[0]) == "lwst":
    import {module} as planted_in
    real, calls = planted_in.{name}, []

    def planted(*args, **kwargs):
        calls.append(args)
        if len(calls) == {nth}:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    planted_in.{name} = planted
"""

# Where in the flow run, outside its items' loop, a SIGTERM lands: (module, function, nth call,
# items done). The flow's manifest read is the second (`lwst run` reads it first); as the run
# writes its metadata, every item is done.
SIGTERM_OUTSIDE_THE_LOOP = {"starting": ("lwst.manifest", "read_manifest", 2, 0),
                            "writing-metadata": ("lwst.dataset", "publish_run_file", 1, 3)}


@pytest.mark.slow  # a temporary Prefect server and up to three gatys items: ~60 s on 2 cores
@pytest.mark.parametrize("moment", SIGTERM_OUTSIDE_THE_LOOP)
def test_a_sigterm_in_the_flow_run_outside_the_items_loop_ends_it_cancelled_not_crashed(
        tmp_path: Path, moment: str):
    """Inside a flow run Prefect's engine holds SIGTERM: one that came while the run read its
    manifest (before any item) or wrote its metadata ended the Prefect run Crashed ("Execution
    was aborted by a termination signal") and left the metadata unwritten. It stops the run
    as in the loop: Cancelled, its metadata whole, exit 143, the server and guardian gone."""
    module, name, nth, ok = SIGTERM_OUTSIDE_THE_LOOP[moment]
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(SIGTERM_AT_CALL.format(module=module, name=name,
                                                                    nth=nth))
    log = tmp_path / "run.log"
    run = _run(tmp_path, "threads", log, plant=plant)
    children: list[psutil.Process] = []
    try:
        _wait_for(lambda: _children(run.pid), run, "started a child", 120)
        children = _children(run.pid)  # the temporary server and its guardian
        code = run.wait(300)
        text = log.read_text(errors="replace")
        assert code == 143, text[-3000:]
        assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
        assert text.count("lwst run: SIGTERM; finishing the items in progress") == 1, text
        stopped = (f"stopped on SIGTERM after the items in progress; {len(ITEMS) - ok} item(s) "
                   "not done: a re-run does them")
        assert text.rstrip().splitlines()[-1] == f"lwst run: {stopped}", text[-3000:]
        assert _flow_run_states(tmp_path / "prefect-home") == [("CANCELLED", stopped)]
        (metadata,) = (tmp_path / "out" / "metadata").glob("run-*.parquet")
        assert pd.read_parquet(metadata)["status"].tolist() == ["ok"] * ok
        assert not still_running(children)
    finally:
        kill_all(run, children)


@pytest.mark.slow  # a temporary Prefect server, a 2-worker Dask cluster, gatys items: ~90 s
def test_a_sigterm_to_the_process_group_lets_the_dask_workers_finish_their_items(
        tmp_path: Path):
    """systemd (``KillMode=control-group``), Slurm and ``kill -- -PGID`` signal every process
    of the job: the Dask workers died of it, their items in progress lost, and, the workers
    restarted, the run could not tell what ran and let every item run to the end. The workers
    leave the signal to `lwst run`: the items in progress finish (outputs, ``ok`` rows), the
    rest are not started, exit 143, and the cluster goes with the run."""
    log = tmp_path / "run.log"
    run = _run(tmp_path, "dask", log, workers=2)
    descendants: list[psutil.Process] = []
    try:
        descendants = await_item(tmp_path, run, log)
        running = {item for item in ITEMS if task_running(tmp_path / "prefect-home",
                                                            f"stylize-{item}")}
        os.killpg(run.pid, signal.SIGTERM)  # the whole group: lwst run and its Dask workers
        code = run.wait(120)
        text = log.read_text(errors="replace")
        first, done = stopped_run(tmp_path, code, text, 143,
                                  "lwst run: SIGTERM; finishing the items in progress")
        assert running <= done, (running, done)  # the items in progress finished
        images = {p.stem for p in (tmp_path / "out" / "images").iterdir()}
        assert images == done and not _temp_files(tmp_path / "out")
        not_done = len(ITEMS) - len(first)
        stopped = (f"stopped on SIGTERM after the items in progress; {not_done} item(s) not "
                   "done: a re-run does them")
        assert _flow_run_states(tmp_path / "prefect-home") == [("CANCELLED", stopped)]
        assert "Restarting worker" not in text, text[-3000:]
        assert not still_running(descendants)
    finally:
        kill_all(run, descendants)


# `lwst train-warp` with the small network of the warp tests (the CLI trains the shipped one).
SMALL_TRAIN_WARP = """
import sys
import lwst.warpnet.train as training
from lwst.cli import main
from lwst.warpnet.model import WarpNetConfig
small = WarpNetConfig(hidden=16, context=8, fine_project=16).to_dict()
real = training.TrainConfig
training.TrainConfig = lambda **kw: real(**{**kw, "model": small})
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # optimiser steps of ~5-13 s on the shared 2-core machine
def test_a_sigterm_to_the_warp_trainer_saves_its_step_and_resume_continues(tmp_path: Path):
    import torch
    from test_warpnet import write_tiny_bank

    write_tiny_bank(tmp_path / "cache")
    (tmp_path / "images").mkdir()
    log = tmp_path / "loss.csv"
    command = [sys.executable, "-c", SMALL_TRAIN_WARP, "train-warp", "--images",
               str(tmp_path / "images"), "--out", str(tmp_path / "t.pt"), "--cache-dir",
               str(tmp_path / "cache"), "--no-build-cache", "--batch-size", "4", "--warmup",
               "1", "--threads", "2", "--log", str(log), "--checkpoint-every", "1000"]
    proc = subprocess.Popen([*command, "--steps", "1000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: log.exists() and log.read_text().count("\n") > 1, proc, "trained a step")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    step = torch.load(tmp_path / "t.pt", weights_only=True)["step"]
    assert step >= 1 and err.strip().splitlines() == [
        f"lwst train-warp: stopped on SIGTERM at step {step}; the checkpoint "
        f"{tmp_path / 't.pt'} is saved: the same command with --resume continues"]
    resumed = subprocess.run([*command, "--steps", str(step + 1), "--resume"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(tmp_path / "t.pt", weights_only=True)["step"] == step + 1
    assert pd.read_csv(log)["step"].tolist() == list(range(1, step + 2))
