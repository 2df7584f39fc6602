"""The augment-dataset flow and ``lwst make-manifest`` as an augmentation user runs them (audit
D4, D5, D7, D10, D12, D15): outputs inside the contents folder are never read back, a larger
draw resumes the smaller one, texture-only runs warp nothing, and failed rows keep their
label and renderer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import save_image
from pipeline_inputs import FAST

from lwst.manifest import ManifestItem


def test_a_failed_row_names_the_renderer_its_item_asked_for(tmp_path: Path):
    """D15: failed rows had no renderer, so failures could not be grouped by it."""
    from lwst.item import resolve_items
    from tasks.stylize_item import failed_item_record

    entries = [ManifestItem("t", "/in/c.png", None, "/in/t.png", {"renderer": "wct"}),
               ManifestItem("w", "/in/c.png", "/in/g.png")]  # no texture: nothing renders
    items, _ = resolve_items(entries, {"device": "cpu"}, str(tmp_path))
    rows = [failed_item_record(item, ValueError("bad input"), "r") for item in items]
    assert [r["renderer"] for r in rows] == ["wct", None]
    assert [r["status"] for r in rows] == ["failed", "failed"]


def test_make_manifest_command_draws_per_content_and_texture_only(main, tmp_path: Path,
                                                                   capsys):
    photos = tmp_path / "photos"
    for name in ("cat/a.png", "dog/b.png"):
        save_image(photos / name)
    save_image(tmp_path / "styles" / "s1.png")
    save_image(tmp_path / "styles" / "s2.png")
    out = tmp_path / "m.csv"
    assert main(["make-manifest", "--contents", str(photos), "--styles",
                 str(tmp_path / "styles"), "--per-content", "2", "--no-geometry",
                 "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 4 and frame["geometry"].isna().all()
    assert sorted(frame["label"]) == ["cat", "cat", "dog", "dog"]
    assert main(["make-manifest", "--contents", str(photos), "--styles",
                 str(tmp_path / "styles"), "--per-content", "5", "--out", str(out)]) == 2
    assert "--per-content must be within 1..4" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_api")
def test_augment_inside_the_contents_folder_resumes_and_keeps_labels(tmp_path: Path):
    """D4: the second run stylised the first run's outputs; D5/D12: a larger draw redid all."""
    from flows.augment_dataset import augment_dataset

    photos, styles = tmp_path / "photos", tmp_path / "styles"
    for name in ("cat/a.png", "cat/b.png", "dog/c.png"):
        save_image(photos / name, seed=len(name))
    (photos / "dog" / "empty.png").write_bytes(b"")  # fails: a failed row keeps its label
    for k in range(2):
        save_image(styles / f"s{k}.png", (64, 48), seed=10 + k)
    out = photos / "augmented"
    args = ([str(photos)], [str(styles)], str(out))

    first = augment_dataset(*args, per_content=1, no_geometry=True, overrides=FAST)
    assert first["manifest"] == str(out / "manifest-seed0-k1-texture.csv")
    assert first["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    second = augment_dataset(*args, per_content=2, no_geometry=True, overrides=FAST)
    assert second["counts"] == {"ok": 3, "failed": 2, "skipped": 3}
    manifest = pd.read_csv(second["manifest"])
    assert not manifest["content"].str.contains("augmented").any()
    assert manifest["geometry"].isna().all() and not (out / "warped").exists()

    rows = pq.read_table(second["metadata"]).to_pylist()
    for row in rows:
        assert row["label"] == Path(row["content"]).parent.name, row
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["renderer"] for r in failed} == {"adain"}
    assert all("empty file" in r["error"] for r in failed)
    assert len(list((out / "images").iterdir())) == 6


@pytest.mark.usefixtures("prefect_api")
def test_a_stopped_augment_run_ends_cancelled_with_its_manifest(tmp_path: Path):
    """`lwst.interrupts`' stop (`lwst run`'s first Ctrl-C) left the run Completed with items not
    done; augment-dataset ends Cancelled as its stylize-dataset run does, its `RunStopped`
    carrying the summary with the manifest, and a re-run does the rest."""
    from prefect.client.orchestration import get_client

    from flows.augment_dataset import augment_dataset
    from flows.stylize_dataset import RunStopped
    from lwst import interrupts
    from lwst.progress import listening

    photos, styles = tmp_path / "photos", tmp_path / "styles"
    for k in range(6):
        save_image(photos / f"p{k}.png", seed=k)
    save_image(styles / "s.png", (64, 48), seed=10)
    asked: list[bool] = []

    def first_finished(done: int, total: int, record: dict) -> None:
        if record["status"] == "ok" and not asked:
            asked.append(interrupts.request_stop())

    args = ([str(photos)], [str(styles)], str(tmp_path / "out"))
    overrides = {**FAST, "renderer": "gatys"}  # one task per item: some are left to cancel
    with listening(first_finished):
        state = augment_dataset(*args, per_content=1, no_geometry=True, overrides=overrides,
                                return_state=True)
    assert asked == [True]
    stopped = state.result(raise_on_failure=False)
    assert isinstance(stopped, RunStopped), stopped
    ok = stopped.summary["counts"]["ok"]
    assert 1 <= ok <= 4 and stopped.summary["stopped"] == {"not_done": 6 - ok}
    assert stopped.summary["manifest"].endswith("manifest-seed0-k1-texture.csv")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.is_cancelled(), run.state
    assert run.state.message == (f"stopped on Ctrl-C after the items in progress; {6 - ok} "
                                 "item(s) not done: a re-run does them")

    again = augment_dataset(*args, per_content=1, no_geometry=True, overrides=overrides)
    assert again["counts"] == {"ok": 6 - ok, "failed": 0, "skipped": ok}
