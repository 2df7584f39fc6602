"""`lwst run --strict` and the flows' ``fail_on_failed_items``: a run in which any item failed
(a bad input too, not only lwst's bug) fails, after every item finished, for a pipeline that
must not go on with a partial dataset. The order of exit codes stays 3 (a bug), 130 (Ctrl-C),
then 4 (--strict); the Prefect run ends Failed, or Cancelled when stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pipeline_inputs import FAST, plant_read_bug, write_manifest_csv
from test_pipeline_cli import CHEAP_RUN, ctrl_c_while_reading, flow_run_of

pytestmark = pytest.mark.usefixtures("prefect_api")


def _rows(image_folder: Path, bad: Path) -> list[dict[str, Any]]:
    """Two good items and one whose content is an empty file (its input: ``error_kind``
    ``input``, which alone never failed `lwst run`)."""
    bad.write_bytes(b"")
    photos, styles = image_folder / "contents", image_folder / "styles"
    texture = str(styles / "style0.png")
    return [{"id": "good0", "content": str(photos / "photo0.png"), "texture": texture},
            {"id": "empty", "content": str(bad), "texture": texture},
            {"id": "good1", "content": str(photos / "photo1.png"), "texture": texture}]


def test_strict_exits_4_after_the_run_when_an_input_failed(main, image_folder: Path,
                                                           tmp_path: Path, capsys):
    manifest = write_manifest_csv(tmp_path / "m.csv",
                                  _rows(image_folder, tmp_path / "empty.png"))
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), *CHEAP_RUN]

    assert main([*args, "--run-id", "lenient"]) == 0  # without --strict: as before
    capsys.readouterr()
    assert flow_run_of("lenient").state.is_completed()

    assert main([*args, "--run-id", "strict", "--strict"]) == 4
    said = capsys.readouterr()
    metadata = out / "metadata" / "run-strict.parquet"
    assert f"run strict: 0 ok, 1 failed, 2 skipped; metadata {metadata}" in said.out
    err = said.err.rstrip().splitlines()
    assert err[0].startswith("  failed empty: content ") and "empty file" in err[0], err
    assert err[-1] == ("lwst run: error: 1 item(s) failed (--strict); every row is in "
                       f"{metadata}"), err
    rows = {row["id"]: row for row in pq.read_table(metadata).to_pylist()}
    assert rows["empty"]["status"] == "failed" and rows["empty"]["error_kind"] == "input"
    run = flow_run_of("strict")
    assert run.state.is_failed(), run.state
    assert run.state.message.startswith("1 item(s) failed (fail_on_failed_items); the other "
                                        "items finished; every row is in "), run.state

    # Nothing failed: --strict changes nothing.
    good = write_manifest_csv(tmp_path / "good.csv", _rows(image_folder, tmp_path / "e.png")[::2])
    assert main(["run", str(good), "--out", str(tmp_path / "good"), *CHEAP_RUN, "--strict",
                 "--run-id", "strict-ok"]) == 0
    assert flow_run_of("strict-ok").state.is_completed()


def test_a_bug_then_a_ctrl_c_come_before_strict(main, image_folder: Path, tmp_path: Path,
                                               capsys, monkeypatch):
    """Exit 3 when a bug failed an item, 130 when a Ctrl-C stopped the run, with --strict and a
    failed input in both; the stopped run's Prefect run is Cancelled, not Failed."""
    import lwst.stylize

    photos = image_folder / "contents"
    rows = _rows(image_folder, tmp_path / "empty.png")
    (photos / "bug-a.png").write_bytes((photos / "photo2.png").read_bytes())
    bug_rows = [*rows, {**rows[0], "id": "bug", "content": str(photos / "bug-a.png")}]
    real = lwst.stylize.read_image
    plant_read_bug(monkeypatch)
    manifest = write_manifest_csv(tmp_path / "bug.csv", bug_rows)
    assert main(["run", str(manifest), "--out", str(tmp_path / "bug"), *CHEAP_RUN, "--strict",
                 "--run-id", "strict-bug"]) == 3
    err = capsys.readouterr().err
    assert "failed by an internal error" in err and "(--strict)" not in err, err
    assert flow_run_of("strict-bug").state.is_failed()
    # Without --strict too: exit 3 and a Failed Prefect run say the same (it was Completed).
    assert main(["run", str(manifest), "--out", str(tmp_path / "bug2"), *CHEAP_RUN,
                 "--run-id", "lax-bug"]) == 3
    capsys.readouterr()
    assert flow_run_of("lax-bug").state.is_failed()

    monkeypatch.setattr(lwst.stylize, "read_image", real)
    (photos / "stop-b.png").write_bytes((photos / "photo2.png").read_bytes())
    stop_rows = [rows[1], {**rows[0], "id": "stop", "content": str(photos / "stop-b.png")},
                 *({**rows[2], "id": f"more{k}", "seed": k} for k in range(6))]
    ctrl_c_while_reading(monkeypatch, "stop-b")
    manifest = write_manifest_csv(tmp_path / "stop.csv", stop_rows)
    assert main(["run", str(manifest), "--out", str(tmp_path / "stop"), *CHEAP_RUN, "--strict",
                 "--run-id", "strict-stop"]) == 130
    said = capsys.readouterr()
    assert " 1 failed, 0 skipped, " in said.out and " not done; " in said.out, said.out
    assert said.err.strip().splitlines()[-1].startswith("lwst run: stopped on Ctrl-C"), said.err
    assert "(--strict)" not in said.err
    assert flow_run_of("strict-stop").state.is_cancelled()


def test_the_flows_fail_on_failed_items_end_failed_with_their_summary(image_folder: Path,
                                                                       tmp_path: Path):
    """The deployment parameter: the run ends Failed after every item finished, a direct call
    raising `ItemsFailed` with the summary (augment-dataset's with its manifest); off (the
    default), the summary as before."""
    from flows.augment_dataset import augment_dataset
    from flows.stylize_dataset import ItemsFailed, ItemsFailedByBugs, stylize_dataset

    manifest = str(write_manifest_csv(tmp_path / "m.csv",
                                      _rows(image_folder, tmp_path / "empty.png")))
    summary = stylize_dataset(manifest, str(tmp_path / "default"), overrides=FAST)
    assert summary["counts"] == {"ok": 2, "failed": 1, "skipped": 0}

    state = stylize_dataset(manifest, str(tmp_path / "asked"), overrides=FAST,
                            fail_on_failed_items=True, return_state=True)
    assert state.is_failed() and state.message.startswith("1 item(s) failed "
                                                          "(fail_on_failed_items)")
    raised = state.result(raise_on_failure=False)
    assert type(raised) is ItemsFailed and not isinstance(raised, ItemsFailedByBugs)
    assert raised.summary["counts"] == {"ok": 2, "failed": 1, "skipped": 0}
    assert raised.summary["failures"][0]["id"] == "empty"

    contents = image_folder / "augment-contents"
    contents.mkdir()
    (contents / "a.png").write_bytes((image_folder / "contents" / "photo0.png").read_bytes())
    (contents / "b.png").write_bytes(b"")  # an empty file among the photos
    with pytest.raises(ItemsFailed, match=r"^1 item\(s\) failed \(fail_on_failed_items\)"
                       ) as failed:
        augment_dataset([str(contents)], [str(image_folder / "styles")],
                        str(tmp_path / "augmented"), per_content=1, no_geometry=True,
                        overrides=FAST, fail_on_failed_items=True)
    assert failed.value.summary["counts"] == {"ok": 1, "failed": 1, "skipped": 0}
    assert failed.value.summary["manifest"].endswith("manifest-seed0-k1-texture.csv")
