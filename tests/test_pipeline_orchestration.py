"""A unit that its task runner fails (the Prefect API gone while the task finishes, a Dask
scheduler refusing the task graph) is not a bug in lwst, and the items its task already wrote
and journalled stay ``ok`` (deployment audit D2), on a real Prefect API."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from pipeline_inputs import write_manifest_csv

from lwst import dataset
from lwst.errors import InputError
from lwst.failures import EXIT_INTERNAL_ERROR, failure_kind, failure_reason
from lwst.item import resolve_items
from lwst.manifest import ManifestItem

# Through ``sitecustomize`` in the `lwst run` subprocess: stylize-batch's task function raises
# httpx's own ConnectError (what Prefect's client raised when its API went away) after the
# real function wrote its chunk's files and journal rows ("late" chunks), or before it did
# anything ("early" chunks). Prefect, the runner and the flow are the real ones.
PLANTED_CONNECT_ERROR = """
import functools
import httpx
import tasks.stylize_batch as batch

real = batch.stylize_batch.fn

@functools.wraps(real)
def planted(items, *args, **kwargs):
    lost = httpx.ConnectError("All connection attempts failed")
    if items[0].id.startswith("early"):
        raise lost
    records = real(items, *args, **kwargs)
    if items[0].id.startswith("late"):
        raise lost
    return records

batch.stylize_batch.fn = planted
"""


def _rows(out: Path, run_id: str) -> dict[str, dict]:
    table = pq.read_table(out / "metadata" / f"run-{run_id}.parquet")
    return {row["id"]: row for row in table.to_pylist()}


def _lwst_run(manifest: Path, out: Path, run_id: str, pythonpath: list[Path]
              ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    return subprocess.run([str(Path(sys.executable).with_name("lwst")), "run", str(manifest),
                           "--out", str(out), "--size", "48", "--warp-method", "none",
                           "--levels", "1", "--iterations", "1", "--device", "cpu",
                           "--run-id", run_id, "--quiet"], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow  # two `lwst run` subprocesses (~17 s), for the slow suite
@pytest.mark.usefixtures("prefect_api")
def test_a_task_runner_error_keeps_the_journalled_items_and_is_not_a_bug(image_folder: Path,
                                                                         tmp_path: Path):
    """A chunk whose task wrote its items and then raised ConnectError keeps them ``ok`` (the
    run file, the files, and a re-run skips them); a chunk that raised before writing anything
    gets ``orchestration`` failed rows, which are no bug: `lwst run` exits 0, not 3."""
    photos, styles = image_folder / "contents", image_folder / "styles"
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(PLANTED_CONNECT_ERROR)
    texture = str(styles / "style0.png")
    rows = [{"id": "late-a", "content": str(photos / "photo0.png"), "texture": texture},
            {"id": "late-b", "content": str(photos / "photo1.png"), "texture": texture},
            {"id": "early-a", "content": str(photos / "photo2.png"), "texture": texture,
             "style_strength": 0.5}]  # another configuration: a chunk of its own
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[1]

    done = _lwst_run(manifest, out, "lost-api", [plant, repo])
    assert done.returncode == 0, done.stderr
    got = _rows(out, "lost-api")
    assert {i: (r["status"], r["error_kind"]) for i, r in got.items()} == {
        "late-a": ("ok", None), "late-b": ("ok", None), "early-a": ("failed", "orchestration")}
    assert got["early-a"]["error"] == ("task runner error (not the item): ConnectError: All "
                                       "connection attempts failed")
    for item in ("late-a", "late-b"):
        assert (out / "images" / f"{item}.png").stat().st_size > 0
    assert not (out / "images" / "early-a.png").exists()
    assert "a bug in lwst" not in done.stderr, done.stderr
    assert "failed early-a: task runner error (not the item): ConnectError" in done.stderr

    again = _lwst_run(manifest, out, "after", [repo])  # the API is back: no plant
    assert again.returncode == 0, again.stderr
    assert {i: r["status"] for i, r in _rows(out, "after").items()} == {
        "late-a": "skipped", "late-b": "skipped", "early-a": "ok"}


def _items(out: Path, ids: list[str]):
    entries = [ManifestItem(i, f"/in/{i}.png", None, "/in/t.png", {}) for i in ids]
    items, refused = resolve_items(entries, {"renderer": "adain"}, str(out))
    assert refused == []
    return items


@pytest.mark.usefixtures("prefect_api")
def test_an_error_the_runner_raised_is_orchestration_whatever_its_type(tmp_path: Path):
    """Dask's scheduler fails a unit with a plain RuntimeError ("Error during deserialization
    of the task graph"): raised by the runner's own future, not by the task's Failed state, it
    is an ``orchestration`` failure, never "a bug in lwst"; a chunk's journalled row is kept."""
    from prefect import flow
    from prefect.futures import PrefectConcurrentFuture

    from flows.submitter import unit_records
    from tasks.stylize_item import failed_item_record

    out = tmp_path / "out"
    items = _items(out, ["c0", "c1", "c2"])
    journalled = {**failed_item_record(items[0], InputError("c0: bad input"), "r1")}
    dataset.write_journal(str(out), [journalled], {})  # the chunk's file: named after c0
    graph = RuntimeError("Error during deserialization of the task graph. This frequently\n"
                         "occurs if the Scheduler and Client have different environments.")

    @flow
    def collect() -> list[dict]:
        wrapped: concurrent.futures.Future = concurrent.futures.Future()
        wrapped.set_exception(graph)
        future = PrefectConcurrentFuture(task_run_id=uuid.uuid4(), wrapped_future=wrapped)
        return unit_records(future, items, str(out), "r1", {}, 0)

    records = collect()
    assert [(r["id"], r["status"], r["error_kind"]) for r in records] == [
        ("c0", "failed", "input"), ("c1", "failed", "orchestration"),
        ("c2", "failed", "orchestration")]
    assert records[0]["error"] == "c0: bad input"  # the task's own row, kept
    assert records[1]["error"] == ("task runner error (not the item): RuntimeError: Error "
                                   "during deserialization of the task graph. This frequently")
    # the journal holds every row once: the failed rows did not overwrite the chunk's file
    assert dataset.journalled_rows(str(out), "r1", ["c0", "c1", "c2"]).keys() == {
        "c0", "c1", "c2"}
    assert dataset.journalled_rows(str(out), "r1", ["c0"])["c0"]["error_kind"] == "input"


def test_orchestration_errors_are_told_apart_from_input_and_bugs():
    from distributed.comm.core import CommClosedError
    from prefect.exceptions import CancelledRun, MissingContextError

    lost = httpx.ConnectError("All connection attempts failed")
    assert failure_kind(lost) == "orchestration"
    assert failure_kind(httpx.ReadTimeout("timed out")) == "orchestration"
    assert failure_kind(MissingContextError("no run")) == "orchestration"
    assert failure_kind(CancelledRun("cancelled")) == "orchestration"
    assert isinstance(CommClosedError(), OSError)  # an OSError, and still not the input's
    assert failure_kind(CommClosedError("in <TCP>: Stream is closed")) == "orchestration"
    assert failure_kind(concurrent.futures.CancelledError()) == "orchestration"
    assert failure_kind(InputError("refused")) == "input"
    assert failure_kind(FileNotFoundError("gone")) == "input"
    assert failure_kind(ZeroDivisionError("bug")) == "internal"
    assert failure_reason(lost) == ("task runner error (not the item): ConnectError: All "
                                    "connection attempts failed")
    assert failure_reason(httpx.ConnectError("one\ntwo")) == (
        "task runner error (not the item): ConnectError: one")
    assert EXIT_INTERNAL_ERROR == 3
