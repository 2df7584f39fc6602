"""The item's path through the pipeline (issue 12, items 2, 4 and 5), on a real Prefect API:
each row runs with its own settings, a bug is told apart from bad input, items move forward
as soon as what they need is done, and the manifest is read once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_inputs import (
    FAST,
    fine_bug_missing_rows,
    plant_bug,
    plant_read_bug,
    write_manifest_csv,
)

from lwst.cli import main as lwst_main
from lwst.failures import EXIT_INTERNAL_ERROR

pytestmark = pytest.mark.usefixtures("prefect_api")


def _rows(out: Path, run_id: str) -> dict[str, dict]:
    table = pq.read_table(out / "metadata" / f"run-{run_id}.parquet")
    return {row["id"]: row for row in table.to_pylist()}


def test_a_planted_bug_is_an_internal_error_and_the_run_exits_3(image_folder: Path,
                                                                  tmp_path: Path):
    """A bug (a ZeroDivisionError planted in the image reader, through ``sitecustomize``, for
    two items: one in a feed-forward chunk, one on the per-item gatys path) fails only its
    item, is marked ``internal`` with its traceback logged, and makes `lwst run` exit 3 after
    the others finish; a missing file stays an ``input`` failure in one line. The log names
    each failed item as it fails."""
    photos, styles = image_folder / "contents", image_folder / "styles"
    for name in ("bug-chunk.png", "bug-single.png"):
        (photos / name).write_bytes((photos / "photo0.png").read_bytes())
    plant = plant_bug(tmp_path / "plant")
    texture = str(styles / "style0.png")
    rows = [{"id": "ok-chunk", "content": str(photos / "photo1.png"), "texture": texture},
            {"id": "bug-chunk", "content": str(photos / "bug-chunk.png"), "texture": texture},
            {"id": "ok-single", "content": str(photos / "photo2.png"), "texture": texture,
             "renderer": "gatys"},
            {"id": "bug-single", "content": str(photos / "bug-single.png"), "texture": texture,
             "renderer": "gatys"},
            {"id": "missing", "content": str(photos / "nowhere.png"), "texture": texture}]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plant), str(repo)])}
    done = subprocess.run([str(Path(sys.executable).with_name("lwst")), "run", str(manifest),
                           "--out", str(out), "--size", "48", "--warp-method", "none",
                           "--levels", "1", "--iterations", "1", "--device", "cpu",
                           "--run-id", "planted", "--quiet"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == EXIT_INTERNAL_ERROR, done.stderr
    rows = _rows(out, "planted")
    assert {i: r["status"] for i, r in rows.items()} == {
        "ok-chunk": "ok", "bug-chunk": "failed", "ok-single": "ok", "bug-single": "failed",
        "missing": "failed"}
    assert {i: r["error_kind"] for i, r in rows.items()} == {
        "ok-chunk": None, "bug-chunk": "internal", "ok-single": None,
        "bug-single": "internal", "missing": "input"}
    for item in ("bug-chunk", "bug-single"):
        assert rows[item]["error"].startswith("internal error (a bug in lwst): "
                                              "ZeroDivisionError")
        assert "\n" not in rows[item]["error"]
    assert "nowhere.png: no such file" in rows["missing"]["error"]
    err = done.stderr
    # each failure is named once, in one line, in the summary's list (the flow's log line
    # per failed item goes to the Prefect API and UI, not to the console twice)
    listed = [line for line in err.splitlines() if line.startswith("  failed ")]
    assert sorted(line.split()[1].rstrip(":") for line in listed) == [
        "bug-chunk", "bug-single", "missing"], err
    assert any("nowhere.png: no such file" in line for line in listed), err
    assert not [line for line in err.splitlines() if "WARNING" in line and " failed: " in line]
    assert err.count("Traceback") == 2 and "return 1 // 0" in err, err  # the bugs' own
    assert err.strip().splitlines()[-1].startswith(
        "lwst run: error: 2 item(s) failed by an internal error"), err
    assert (out / "images" / "ok-chunk.png").exists() and (out / "images" / "ok-single.png")


def test_the_one_line_log_filter_keeps_only_a_bugs_traceback():
    import logging
    import sys

    from flows.cli import _OneLineLogs

    try:
        raise ZeroDivisionError("planted")
    except ZeroDivisionError:
        info = sys.exc_info()
    bug = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "bug", None, info)
    bug.lwst_internal = True
    other = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "io\nmore", None,
                              info)
    assert _OneLineLogs().filter(bug) and bug.exc_info is info
    assert _OneLineLogs().filter(other) and other.exc_info is None and other.msg == "io"


def test_each_row_runs_with_its_own_settings_inside_batches(image_folder: Path,
                                                              tmp_path: Path):
    """Rows that differ only in a setting are never batched with the wrong one: sizes and
    strengths reach the outputs, and each row's ``params`` says what it ran with."""
    from test_warping import random_checkpoint

    from flows.stylize_dataset import stylize_dataset

    photos, styles = image_folder / "contents", image_folder / "styles"
    checkpoint = random_checkpoint(tmp_path / "warpnet.pt")
    rows = []
    for i, size in enumerate((48, 48, 32, 32)):  # gatys + learned: the estimate-warps path
        rows.append({"id": f"g{i}", "content": str(photos / f"photo{i % 3}.png"),
                     "geometry": str(styles / "style0.png"), "renderer": "gatys",
                     "size": size, "seed": 5 if i == 3 else 0})
    for i, strength in enumerate((0.0, 1.0, 0.0)):  # adain chunks
        rows.append({"id": f"a{i}", "content": str(photos / "photo0.png"),
                     "texture": str(styles / "style1.png"), "style_strength": strength})
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    overrides = {**FAST, "warp_method": "learned", "warpnet_checkpoint": str(checkpoint)}
    summary = stylize_dataset(str(manifest), str(out), overrides=overrides, run_id="own",
                              warp_batch_size=8, render_batch_size=8)
    assert summary["counts"]["ok"] == 7, summary["failures"]
    rows = _rows(out, "own")
    assert {i: max(r["width"], r["height"]) for i, r in rows.items() if i.startswith("g")} == {
        "g0": 48, "g1": 48, "g2": 32, "g3": 32}
    params = {i: json.loads(r["params"]) for i, r in rows.items()}
    assert [params[f"g{i}"]["seed"] for i in range(4)] == [0, 0, 0, 5]
    assert [params[f"a{i}"]["style_strength"] for i in range(3)] == [0.0, 1.0, 0.0]
    # g0 and g1 share every setting: one batch. g2 and g3 differ in seed: each is alone.
    assert summary["warp_batched"] == ["g0", "g1"]
    from lwst.image_io import read_image

    a0, a1, a2 = (read_image(str(out / "images" / f"a{i}.png")) for i in range(3))
    assert (a0 - a2).abs().max() < 1e-6  # same settings, same image
    assert (a0 - a1).abs().mean() > 0.01  # strength 0 and 1 were not rendered alike


def test_items_start_as_soon_as_their_own_warp_batch_is_done(image_folder: Path,
                                                              tmp_path: Path):
    """One worker, two warp batches: the first batch's items run before the second batch
    (the old flow waited for every batch before starting any item)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from test_warping import random_checkpoint

    from flows.stylize_dataset import stylize_dataset

    photos, styles = image_folder / "contents", image_folder / "styles"
    checkpoint = random_checkpoint(tmp_path / "warpnet.pt")
    rows = [{"id": f"w{i}", "content": str(photos / f"photo{i % 3}.png"),
             "geometry": str(styles / f"style{i % 2}.png")} for i in range(4)]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    overrides = {**FAST, "warp_method": "learned", "warpnet_checkpoint": str(checkpoint),
                 "renderer": "gatys"}
    state = stylize_dataset(str(manifest), str(tmp_path / "out"), overrides=overrides,
                            run_id="forward", warp_batch_size=2, workers=1, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 30
        while True:  # task-run states reach the API as events, a moment after the run
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_run_id])))
            started = {r.name: r.start_time for r in runs if r.start_time is not None}
            if len(started) >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    batches = sorted(t for name, t in started.items() if name.startswith("estimate-warps"))
    assert len(batches) == 2, started
    assert started["stylize-w0"] < batches[1] and started["stylize-w1"] < batches[1], started


def test_lwst_run_reads_and_validates_the_manifest_once(image_folder: Path, tmp_path: Path,
                                                         monkeypatch, capsys):
    import lwst.manifest

    calls: list[str] = []
    real = lwst.manifest.validate_table
    monkeypatch.setattr(lwst.manifest, "validate_table",
                        lambda frame, uri: (calls.append(uri), real(frame, uri))[1])
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "x", "content": str(image_folder / "contents" / "photo0.png")}])
    code = lwst_main(["run", str(manifest), "--out", str(tmp_path / "out"), "--size", "32",
                          "--warp-method", "none", "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert calls == [str(manifest)]
    manifest.write_text(manifest.read_text() + f"y,{image_folder / 'contents' / 'photo1.png'}\n")
    assert lwst_main(["run", str(manifest), "--out", str(tmp_path / "out"), "--size", "32",
                          "--warp-method", "none", "--device", "cpu", "--quiet"]) == 0
    assert len(calls) == 2  # a changed file is read again, not served stale
    assert "1 ok, 0 failed, 1 skipped" in capsys.readouterr().out


def test_a_flow_asked_to_fail_for_bugs_ends_failed_with_its_summary(image_folder: Path,
                                                                     tmp_path: Path,
                                                                     monkeypatch):
    """D6: a run in which lwst's own bug failed items ends Failed when asked (by default: when
    it runs from a deployment, `test_pipeline_deploy`), so a scheduled run shows red; a direct
    call then raises `ItemsFailedByBugs` carrying the summary; augment-dataset fails the same
    way with its manifest named; bad inputs alone never fail the run."""
    from flows.augment_dataset import augment_dataset
    from flows.stylize_dataset import ItemsFailedByBugs, stylize_dataset

    plant_read_bug(monkeypatch)
    rows = fine_bug_missing_rows(image_folder)
    photos, styles = image_folder / "contents", image_folder / "styles"
    manifest = str(write_manifest_csv(tmp_path / "m.csv", rows))

    summary = stylize_dataset(manifest, str(tmp_path / "default"), overrides=FAST)
    assert summary["internal_errors_total"] == 1  # not a deployment: the summary, as before
    with pytest.raises(ItemsFailedByBugs, match=r"^1 item\(s\) failed by an internal error"
                       ) as raised:
        stylize_dataset(manifest, str(tmp_path / "asked"), overrides=FAST,
                        fail_on_internal_errors=True)
    assert raised.value.summary["counts"] == {"ok": 1, "failed": 2, "skipped": 0}
    state = stylize_dataset(manifest, str(tmp_path / "asked"), overrides=FAST,
                            fail_on_internal_errors=True, return_state=True)
    assert state.is_failed() and state.message.startswith("1 item(s) failed by an internal")
    again = state.result(raise_on_failure=False).summary  # the re-run redid only the failures
    assert again["counts"] == {"ok": 0, "failed": 2, "skipped": 1}

    inputs_only = str(write_manifest_csv(tmp_path / "inputs.csv", [rows[0], rows[2]]))
    summary = stylize_dataset(inputs_only, str(tmp_path / "inputs"), overrides=FAST,
                              fail_on_internal_errors=True)
    assert summary["counts"]["failed"] == 1 and summary["internal_errors_total"] == 0

    bugs = image_folder / "bug-photos"
    bugs.mkdir()
    (bugs / "x.png").write_bytes((photos / "photo0.png").read_bytes())
    with pytest.raises(ItemsFailedByBugs) as raised:
        augment_dataset([str(bugs)], [str(styles)], str(tmp_path / "augmented"), n=1,
                        no_geometry=True, overrides=FAST, fail_on_internal_errors=True)
    assert raised.value.summary["manifest"].endswith("manifest-seed0-n1-texture.csv")
