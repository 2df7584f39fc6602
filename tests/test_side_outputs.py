"""``side_outputs`` off (audit D11): a dataset item writes its image and metadata row only, no
warped content, flow or flow picture; the writer and the resume check follow the one rule of
`lwst.item_files`, and toggling the setting between runs redoes an item only when side outputs
it never wrote are asked for."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from pipeline_inputs import FAST, write_manifest_csv

from lwst import dataset, item_files
from lwst.config import StylizeConfig, WarpConfig, with_overrides
from lwst.item import Item
from lwst.manifest import ManifestItem
from lwst.stylize import stylize_files
from lwst.warping import WarpEstimate

SIDE = ("warped", "flow", "flow_vis")
CONFIG = StylizeConfig(size=32, device="cpu", vgg_weights="random",
                       warp=WarpConfig(method="affine"))
BARE = with_overrides(CONFIG, {"side_outputs": False})


def _estimate() -> WarpEstimate:
    torch.manual_seed(1)
    return WarpEstimate(flow=torch.randn(1, 2, 16, 16) * 2, loss_before=1.0, loss_after=0.5,
                        seconds=0.0)


def _files(out: Path, folder: str) -> set[str]:
    return {p.name for p in (out / folder).iterdir()} if (out / folder).is_dir() else set()


def _run_item(out: Path, item_id: str, content: str, geometry: str | None,
              config: StylizeConfig, run_id: str) -> dict:
    item = Item(item_id, content, geometry, None, config, item_files.item_outputs(str(out),
                                                                                 item_id))
    record = stylize_files(item, run_id=run_id, warp_estimate=_estimate() if geometry else None)
    dataset.write_run_metadata(str(out), run_id, [record])
    return record


@pytest.fixture
def pair(image_folder: Path) -> tuple[str, str]:
    return (str(image_folder / "contents" / "photo0.png"),
            str(image_folder / "styles" / "style0.png"))


def test_an_item_without_side_outputs_writes_its_image_and_its_warp_figures(tmp_path, pair):
    out = tmp_path / "out"
    record = _run_item(out, "a", *pair, BARE, "r")
    assert {p.relative_to(out).parts[0] for p in out.rglob("*") if p.is_file()} == {
        "images", "metadata"}
    assert record["warped"] is None and record["flow"] is None
    assert record["warp_mean_px"] > 0 and record["warp_loss_after"] == 0.5
    assert dataset.CompletedOutputs(str(out)).is_complete(ManifestItem("a", *pair), BARE)


def test_toggling_side_outputs_redoes_only_an_item_that_never_wrote_them(tmp_path, pair):
    content, geometry = pair
    warps, plain = ManifestItem("w", content, geometry), ManifestItem("p", content)
    out = tmp_path / "out"
    _run_item(out, "w", content, geometry, BARE, "r1")
    _run_item(out, "p", content, None, BARE, "r2")
    finished = dataset.CompletedOutputs(str(out))
    # asked for now: the warped item is redone; the plain one has none to write, it is done
    assert finished.changes(warps, CONFIG) == ["side_outputs False -> True"]
    assert not finished.is_complete(warps, CONFIG)
    assert finished.changes(plain, CONFIG) == [] and finished.is_complete(plain, CONFIG)
    # side files left by an earlier run with other settings do not make it finished
    for folder in SIDE:
        (out / folder).mkdir()
        (out / folder / ("w.flo" if folder == "flow" else "w.png")).write_bytes(b"stale")
    assert not dataset.CompletedOutputs(str(out)).is_complete(warps, CONFIG)
    # redone with them; no longer asked for, it stays finished (its files are a superset)
    _run_item(out, "w", content, geometry, CONFIG, "r3")
    assert (out / "flow" / "w.flo").stat().st_size > 100
    finished = dataset.CompletedOutputs(str(out))
    assert finished.is_complete(warps, CONFIG) and finished.is_complete(warps, BARE)
    assert finished.changes(warps, BARE) == []


@pytest.mark.slow  # `lwst run` subprocesses (~11 s), for the slow suite
@pytest.mark.usefixtures("prefect_api")
def test_lwst_run_no_side_outputs_then_toggled(main, image_folder: Path, tmp_path: Path,
                                               capsys):
    photos, styles = image_folder / "contents", image_folder / "styles"
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "w", "content": str(photos / "photo0.png"), "geometry": str(styles / "style0.png"),
         "texture": str(styles / "style1.png")},
        {"id": "p", "content": str(photos / "photo1.png"), "texture": str(styles / "style1.png")},
    ])
    out = tmp_path / "out"
    base = ["run", str(manifest), "--out", str(out), "--size", "48", "--warp-method", "affine",
            "--device", "cpu", "--quiet", "--run-id"]
    assert main([*base, "a", "--no-side-outputs"]) == 0
    assert "run a: 2 ok, 0 failed, 0 skipped" in capsys.readouterr().out
    assert {p.name for p in out.iterdir() if not p.name.startswith("_")} == {
        "images", "metadata", "reports"}
    assert _files(out, "images") == {"w.png", "p.png"}
    assert (out / "reports" / "contact_sheet-a.png").stat().st_size > 0
    rows = {r["id"]: r for r in pq.read_table(out / "metadata" / "run-a.parquet").to_pylist()}
    assert rows["w"]["warped"] is None and rows["w"]["flow"] is None
    assert rows["w"]["warp_mean_px"] > 0 and rows["w"]["warp_applied"] is not None
    assert '"side_outputs": false' in rows["w"]["params"]

    assert main([*base, "b", "--no-side-outputs"]) == 0
    assert "run b: 0 ok, 0 failed, 2 skipped: nothing to do" in capsys.readouterr().out
    assert not (out / "reports" / "contact_sheet-b.png").exists()  # nothing ran: no new sheet

    assert main([*base, "c"]) == 0  # asked for again: the warped item only is redone
    assert "run c: 1 ok, 0 failed, 1 skipped" in capsys.readouterr().out
    assert all(_files(out, folder) == {"w.flo" if folder == "flow" else "w.png"}
               for folder in SIDE)

    assert main([*base, "d", "--no-side-outputs"]) == 0  # finished with them: finished
    assert "run d: 0 ok, 0 failed, 2 skipped" in capsys.readouterr().out


@pytest.mark.usefixtures("prefect_api")
def test_manifest_column_and_flow_overrides(image_folder: Path, tmp_path: Path):
    from flows.stylize_dataset import stylize_dataset

    photos, styles = image_folder / "contents", image_folder / "styles"
    geometry = str(styles / "style0.png")
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "off", "content": str(photos / "photo0.png"), "geometry": geometry,
         "side_outputs": None},
        {"id": "on", "content": str(photos / "photo1.png"), "geometry": geometry,
         "side_outputs": "true"},
    ])
    out = tmp_path / "out"
    summary = stylize_dataset(str(manifest), str(out), run_id="f1", overrides={
        **FAST, "warp_method": "affine", "side_outputs": False})
    assert summary["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert _files(out, "images") == {"off.png", "on.png"}
    assert all(_files(out, folder) == {"on.flo" if folder == "flow" else "on.png"}
               for folder in SIDE)


def test_the_run_option_is_the_flat_override():
    import argparse

    from flows.cli import add_parser, overrides_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["run", "m.csv", "--out", "o", "--no-side-outputs"])
    assert overrides_from_args(args) == {"side_outputs": False}
    args = parser.parse_args(["run", "m.csv", "--out", "o"])
    assert "side_outputs" not in overrides_from_args(args)
