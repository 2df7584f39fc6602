"""The stylize-dataset flow on local files against a real (temporary) Prefect API server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_inputs import FAST, write_bad_inputs, write_manifest_csv

from lwst import dataset
from lwst.manifest import ManifestError

pytestmark = pytest.mark.usefixtures("prefect_api")


def _flow():
    from flows.stylize_dataset import stylize_dataset

    return stylize_dataset


def _latest_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return sorted(found, key=lambda a: a.created)[-1]


def _artifact_data(key: str):
    return _latest_artifact(key).data


def _artifact_description(key: str) -> str:
    return _latest_artifact(key).description


def test_every_output_and_every_failure_recorded(image_folder: Path, tmp_path: Path):
    photos, styles = image_folder / "contents", image_folder / "styles"
    bad = write_bad_inputs(tmp_path / "bad", photos / "photo0.png")
    rows = [
        {"id": "full", "content": str(photos / "photo0.png"),
         "geometry": str(styles / "style0.png"), "texture": str(styles / "style1.png"),
         "warp_method": "affine"},
        {"id": "plain", "content": str(photos / "photo1.png")},
        *[{"id": i, "content": str(tmp_path / "bad" / name)} for i, name in bad.items()],
        {"id": "bad-texture", "content": str(photos / "photo2.png"),
         "texture": str(tmp_path / "bad" / "empty.png")},
    ]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    summary = _flow()(str(manifest), str(out), overrides=FAST, run_id="r1")

    assert summary["counts"] == {"ok": 2, "failed": 7, "skipped": 0}
    for kind, name in [("images", "full.png"), ("warped", "full.png"), ("flow", "full.flo"),
                       ("flow_vis", "full.png"), ("images", "plain.png")]:
        assert (out / kind / name).stat().st_size > 0, f"{kind}/{name}"
    assert not (out / "warped" / "plain.png").exists()  # no geometry: no warp outputs
    produced = {p.name for p in (out / "images").iterdir()}
    assert produced == {"full.png", "plain.png"}  # failed items leave nothing behind
    assert not list(out.rglob("*.tmp"))

    table = pq.read_table(out / "metadata" / "run-r1.parquet")
    rows_by_id = {r["id"]: r for r in table.to_pylist()}
    assert sorted(rows_by_id) == sorted(r["id"] for r in rows)
    assert rows_by_id["full"]["status"] == "ok"
    assert rows_by_id["full"]["flow"] == str(out / "flow" / "full.flo")
    assert rows_by_id["full"]["warp_max_px"] is not None and rows_by_id["full"]["width"] == 48
    reasons = {i: rows_by_id[i]["error"] for i in rows_by_id if rows_by_id[i]["status"] == "failed"}
    assert "no such file" in reasons["bad-missing"]
    assert "empty file" in reasons["bad-empty"] and "empty file" in reasons["bad-texture"]
    assert "corrupt or truncated" in reasons["bad-truncated"]
    assert "decompression bomb" in reasons["bad-bomb"]
    assert "pixel depth" in reasons["bad-mode"]
    assert "not an image" in reasons["bad-text"]
    assert all("\n" not in reason for reason in reasons.values())

    failures = _artifact_data("stylize-failures")
    assert all(item_id in failures for item_id in reasons)
    full = rows_by_id["full"]  # warp safety figures (issue 11), filled end to end
    assert 0.0 <= full["warp_confidence"] <= 1.0 and full["warp_fold_frac"] <= 0.005
    assert full["warp_stretch_frac"] is not None
    assert full["warp_melt"] > 0.0  # carried from the batched estimate to the item's record
    assert full["warp_applied"] in ("affine", "damp", "none")
    assert rows_by_id["plain"]["warp_confidence"] is None  # no geometry: no warp figures
    from lwst.vgg import feature_dtype  # what render_precision auto resolved to, in every row

    resolved = str(feature_dtype("auto", "cpu")).removeprefix("torch.")
    assert full["render_dtype"] == resolved
    assert rows_by_id["plain"]["render_dtype"] is None  # no texture: nothing rendered
    from PIL import Image

    sheet = Image.open(out / "reports" / "contact_sheet-r1.png")  # 5 panels, 2 rows + header
    assert sheet.width == 4 + 5 * (128 + 4) and sheet.height == 20 + 2 * (128 + 16 + 4)
    shown = _artifact_data("stylize-contact-sheet")  # embedded: the UI cannot open file://
    assert shown.startswith("data:image/jpeg;base64,")
    import base64
    import io

    embedded = Image.open(io.BytesIO(base64.b64decode(shown.split(",", 1)[1])))
    assert embedded.size == sheet.size
    assert summary["contact_sheet"] in _artifact_description("stylize-contact-sheet")
    from lwst.config import WarpConfig

    low = full["warp_confidence"] < WarpConfig().min_confidence or full["warp_applied"] != "affine"
    assert [r["id"] for r in summary["low_confidence"]] == (["full"] if low else [])
    assert float(_artifact_data("stylize-progress")) == 100.0
    assert '"size": 48' in rows_by_id["bad-empty"]["params"]  # failed rows keep their settings


def test_rerun_skips_finished_items_and_keeps_one_row_per_item_per_run(
        image_folder: Path, tmp_path: Path):
    photos = image_folder / "contents"
    rows = [{"id": f"p{i}", "content": str(photos / f"photo{i}.png")} for i in range(3)]
    rows.append({"id": "gone", "content": str(photos / "missing.png")})
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    first = _flow()(str(manifest), str(out), overrides=FAST, run_id="a")
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    second = _flow()(str(manifest), str(out), overrides=FAST, run_id="b")
    again = _flow()(str(manifest), str(out), overrides=FAST, run_id="b")  # same run id

    assert first["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    assert second["counts"] == again["counts"] == {"ok": 0, "failed": 1, "skipped": 3}
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == before
    table = dataset.read_metadata(str(out))
    assert table.num_rows == 8  # 4 items x runs a, b; re-running b replaced its rows
    keys = list(zip(table["id"].to_pylist(), table["run_id"].to_pylist(), strict=True))
    assert len(set(keys)) == len(keys)
    skipped = table.filter(pc.equal(table["status"], "skipped"))
    assert sorted(skipped["id"].to_pylist()) == ["p0", "p1", "p2"]
    assert all('"size": 48' in p for p in skipped["params"].to_pylist())

    # Asked again with another size, the finished items' files are stale: redone, and said.
    third = _flow()(str(manifest), str(out), overrides={**FAST, "size": 40}, run_id="c")
    assert third["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    assert third["redone"]["count"] == 3 and "size 48 -> 40" in third["redone"]["first"]
    assert max(Image.open(out / "images" / "p0.png").size) == 40
    fourth = _flow()(str(manifest), str(out), overrides={**FAST, "size": 40}, run_id="d")
    assert fourth["counts"] == {"ok": 0, "failed": 1, "skipped": 3}
    assert fourth["redone"]["count"] == 0


def test_a_stop_request_finishes_what_runs_and_starts_nothing_more(image_folder: Path,
                                                                     tmp_path: Path):
    """`lwst run`'s first Ctrl-C (`lwst.interrupts.request_stop`, here from the progress
    listener as the first item finishes): the unit running finishes and is recorded, the
    queued ones are cancelled, nothing more is submitted; the metadata is written and a
    re-run does exactly the rest."""
    from flows.stylize_dataset import RunStopped
    from lwst import interrupts
    from lwst.progress import listening

    photos = image_folder / "contents"
    rows = [{"id": f"s{i}", "content": str(photos / f"photo{i % 3}.png"), "seed": i}
            for i in range(6)]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    asked = []

    def first_finished(done: int, total: int, record: dict) -> None:
        if record["status"] == "ok" and not asked:
            asked.append(interrupts.request_stop())

    with listening(first_finished), pytest.raises(RunStopped) as stopped:
        _flow()(str(manifest), str(out), overrides=FAST, run_id="stopped", workers=1)
    assert asked == [True]
    first = stopped.value.summary  # the run ended Cancelled: a direct call raises, with it
    ok = first["counts"]["ok"]
    # the first, then whatever had started when the request came (the pool's thread may be
    # between units: timing), never all six
    assert 1 <= ok <= 4 and first["counts"]["failed"] == 0
    assert first["stopped"] == {"not_done": 6 - ok}
    table = dataset.read_metadata(str(out))
    assert table.num_rows == ok  # its metadata file was written: one row per finished item
    assert len(list((out / "images").glob("*.png"))) == ok
    assert not interrupts.stop_requested()  # the request ends with the run

    again = _flow()(str(manifest), str(out), overrides=FAST, run_id="rest")
    assert again["counts"] == {"ok": 6 - ok, "failed": 0, "skipped": ok}
    assert again["stopped"] is None


def test_bad_manifest_is_refused_before_any_work(tmp_path: Path):
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "ok", "content": "a.png"}, {"id": "ok", "content": "b.png"},
        {"id": "../../etc/x", "content": "c.png"}])
    out = tmp_path / "out"
    with pytest.raises(ManifestError) as caught:
        _flow()(str(manifest), str(out), overrides=FAST)
    assert len(caught.value.problems) == 2
    assert not out.exists()


SLOWER = {**FAST, "iterations": [4]}  # slow enough to be killed mid-run
KILL_SCRIPT = """
import sys
from flows.stylize_dataset import stylize_dataset
stylize_dataset(sys.argv[1], sys.argv[2], overrides=SLOWER, run_id="killed")
"""


@pytest.mark.slow  # a killed run and its re-run (~10 s), for the slow suite
def test_kill_9_mid_run_then_next_run_does_exactly_the_rest(image_folder: Path, tmp_path: Path):
    photos, styles = image_folder / "contents", image_folder / "styles"
    rows = [{"id": f"k{i}", "content": str(photos / f"photo{i % 3}.png"),
             "texture": str(styles / f"style{i % 2}.png"), "seed": i} for i in range(5)]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    script = f"SLOWER = {SLOWER!r}\n{KILL_SCRIPT}"
    process = subprocess.Popen([sys.executable, "-c", script, str(manifest), str(out)],
                               env=os.environ.copy(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "images").is_dir() and any((out / "images").glob("*.png")):
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    done_before = {p.stem for p in (out / "images").glob("*.png")}
    assert 1 <= len(done_before) < 5
    # Done = files and the journalled ok row (issue 13): an item killed between its last file
    # and its row is redone, not skipped forever without a row.
    recorded = {p.stem for p in (out / "metadata" / "_journal" / "killed").glob("*.parquet")}
    assert recorded <= done_before

    # The same settings: with others, the recorded items would be redone, rightly.
    summary = _flow()(str(manifest), str(out), overrides=SLOWER, run_id="resumed")
    table = dataset.read_metadata(str(out))
    resumed = table.filter(pc.equal(table["run_id"], "resumed")).to_pylist()
    ok_now = {r["id"] for r in resumed if r["status"] == "ok"}
    assert ok_now == {f"k{i}" for i in range(5)} - recorded  # exactly the remaining items
    assert {r["id"] for r in resumed if r["status"] == "skipped"} == recorded
    assert summary["counts"]["failed"] == 0
    killed = table.filter(pc.equal(table["run_id"], "killed"))  # journal recovered, not lost
    assert set(killed["id"].to_pylist()) <= done_before
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))
    assert not (out / "metadata" / "_journal" / "killed").exists()


def test_augment_builds_a_seeded_manifest_beside_the_outputs(image_folder: Path, tmp_path: Path):
    from flows.augment_dataset import augment_dataset

    out = tmp_path / "aug"
    summary = augment_dataset([str(image_folder / "contents")], [str(image_folder / "styles")],
                              str(out), n=2, seed=5, overrides=FAST)
    manifest = out / "manifest-seed5-n2.csv"
    assert summary["manifest"] == str(manifest) and manifest.is_file()
    ids = sorted(r["id"] for r in dataset.read_metadata(str(out)).to_pylist())
    assert summary["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert sorted(p.stem for p in (out / "images").iterdir()) == ids
    # ids are made from the inputs (content and style stems, a hash), never a row number
    assert all(re.fullmatch(r"photo\d__style\d(__style\d)?-[0-9a-f]{8}", i) for i in ids), ids


def test_learned_warps_are_estimated_in_batches(image_folder: Path, tmp_path: Path):
    from test_warping import random_checkpoint

    photos, styles = image_folder / "contents", image_folder / "styles"
    checkpoint = random_checkpoint(tmp_path / "warpnet.pt")
    rows = [{"id": f"b{i}", "content": str(photos / f"photo{i}.png"),
             "geometry": str(styles / f"style{i % 2}.png")} for i in range(3)]
    rows.append({"id": "bad-geometry", "content": str(photos / "photo0.png"),
                 "geometry": str(tmp_path / "missing.png")})
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    overrides = {**FAST, "warp_method": "learned", "warpnet_checkpoint": str(checkpoint),
                 "renderer": "gatys"}  # the estimate-warps path; feed-forward items batch apart
    summary = _flow()(str(manifest), str(out), overrides=overrides, run_id="batched",
                      warp_batch_size=2)

    assert summary["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    assert summary["warp_batched"] == ["b0", "b1", "b2"]  # two batches: [b0, b1] and [b2]
    table = dataset.read_metadata(str(out))
    ok = table.filter(pc.equal(table["status"], "ok"))
    assert set(ok.column("warpnet_id").to_pylist()) == {table.column("warpnet_id")[0].as_py()}
    assert ok.column("warpnet_id")[0].as_py().startswith("warpnet-")
    failed = table.filter(pc.equal(table["status"], "failed")).to_pylist()
    assert "missing.png: no such file" in failed[0]["error"]
    assert not (out / "_work").exists() or not any((out / "_work").iterdir())


def test_renderer_column_batches_feed_forward_items_and_fills_the_metadata(image_folder: Path,
                                                                          tmp_path: Path):
    photos, styles = image_folder / "contents", image_folder / "styles"
    (tmp_path / "empty.png").write_bytes(b"")
    rows = [
        {"id": "g", "content": str(photos / "photo0.png"), "texture": str(styles / "style0.png"),
         "renderer": "gatys"},
        {"id": "w", "content": str(photos / "photo1.png"), "texture": str(styles / "style1.png"),
         "renderer": "wct", "geometry": str(styles / "style0.png")},
        {"id": "a1", "content": str(photos / "photo2.png"), "texture": str(styles / "style0.png")},
        {"id": "a2", "content": str(photos / "photo0.png"), "texture": str(styles / "style1.png"),
         "geometry": str(styles / "style1.png")},
        {"id": "a-bad", "content": str(photos / "photo1.png"),
         "texture": str(tmp_path / "empty.png")},
    ]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    overrides = {**FAST, "warp_method": "affine"}
    summary = _flow()(str(manifest), str(out), overrides=overrides, run_id="ff")
    assert summary["counts"] == {"ok": 4, "failed": 1, "skipped": 0}
    table = {r["id"]: r for r in pq.read_table(out / "metadata" / "run-ff.parquet").to_pylist()}
    assert {i: table[i]["renderer"] for i in ("g", "w", "a1", "a2")} == {
        "g": "gatys", "w": "wct", "a1": "adain", "a2": "adain"}  # adain: the pipeline default
    assert "empty file" in table["a-bad"]["error"]
    assert all(table[i]["style_loss"] > 0 for i in ("g", "w", "a1", "a2"))
    assert (out / "flow_vis" / "a2.png").exists() and (out / "flow" / "a2.flo").exists()
    assert summary["warp_batched"] == ["a2", "w"]  # warped and rendered in their chunks
    assert not (out / "images" / "a-bad.png").exists()


def test_rows_resolved_a_chunk_at_a_time_keep_every_record(image_folder: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """The flow resolves the manifest a chunk of rows at a time (flat memory at 100 000 rows):
    with chunks of 2, finished, refused, failed and new items spread over four chunks still get
    one row each, in a run file written as several row groups, and the counts add up."""
    import flows.work_plan as work_plan
    from lwst import run_records

    monkeypatch.setattr(work_plan, "RESOLVE_CHUNK", 2)
    monkeypatch.setattr(run_records, "FLUSH_ROWS", 2)
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))  # where RunRecords spills its rows
    photos = image_folder / "contents"
    rows = [{"id": f"p{i}", "content": str(photos / f"photo{i % 3}.png")} for i in range(6)]
    manifest = write_manifest_csv(tmp_path / "first.csv", rows[:3])
    out = tmp_path / "out"
    assert _flow()(str(manifest), str(out), overrides=FAST, run_id="a")["counts"]["ok"] == 3
    rows.insert(3, {"id": "refused", "content": str(photos / "photo0.png"), "iterations": "3,2"})
    rows.append({"id": "gone", "content": str(photos / "missing.png")})
    manifest = write_manifest_csv(tmp_path / "all.csv", rows)
    summary = _flow()(str(manifest), str(out), overrides=FAST, run_id="b")

    assert summary["counts"] == {"ok": 3, "failed": 2, "skipped": 3}
    assert summary["failures_total"] == 2
    run_file = pq.ParquetFile(out / "metadata" / "run-b.parquet")
    assert run_file.metadata.num_row_groups >= 3
    statuses = dict(zip(*(run_file.read().column(c).to_pylist() for c in ("id", "status")),
                        strict=True))
    assert statuses == {"p0": "skipped", "p1": "skipped", "p2": "skipped", "refused": "failed",
                        "p3": "ok", "p4": "ok", "p5": "ok", "gone": "failed"}
    assert not list(spill.iterdir())  # the spill file is gone once the run file is written
