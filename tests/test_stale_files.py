"""A redone item gets its files replaced (audit a-ux defect 7): once its new files are in place,
its files an earlier run made that the new write does not (side outputs no longer written, its
image in another format) are removed; another id's files, names lwst does not lay out and the
run's inputs are never touched, and a fresh item costs no delete. Real files, the real flow, the
real S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bad_images import gradient_rgb
from PIL import Image
from pipeline_inputs import FAST, write_manifest_csv

from lwst import item_files, storage
from lwst.config import StylizeConfig, WarpConfig, with_overrides
from lwst.manifest import ManifestItem
from lwst.metadata import empty_record
from lwst.run_records import RunRecords
from lwst.stylize import stylize, write_item
from lwst.warping import WarpEstimate

SIDE = ("warped", "flow", "flow_vis")
WARP = {**FAST, "warp_method": "affine"}
# Files lwst must leave alone: another id's, and names it never lays out for an id.
FOREIGN = {"images": {"w.jpeg", "other.webp", "notes.txt"}, "warped": {"other.png", "w.png.bak"},
           "flow": {"other.flo"}, "flow_vis": {"README"}}


def _files(out: Path, folder: str) -> set[str]:
    return {p.name for p in (out / folder).iterdir()} if (out / folder).is_dir() else set()


def _plant_foreign(out: Path) -> None:
    for folder, names in FOREIGN.items():
        for name in names:
            (out / folder / name).write_bytes(b"not this run's")


def _manifest(tmp_path: Path, image_folder: Path, content: str | None = None) -> Path:
    photos, styles = image_folder / "contents", image_folder / "styles"
    return write_manifest_csv(tmp_path / "m.csv", [
        {"id": "w", "content": content or str(photos / "photo0.png"),
         "geometry": str(styles / "style0.png"), "texture": str(styles / "style1.png")},
        {"id": "p", "content": str(photos / "photo1.png"), "texture": str(styles / "style1.png")},
    ])


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("renderer", ["adain", "gatys"])  # a chunk task, one task per item
def test_a_redo_without_side_outputs_at_another_size_leaves_only_the_new_files(
        image_folder: Path, tmp_path: Path, renderer: str):
    from flows.stylize_dataset import stylize_dataset

    manifest, out = _manifest(tmp_path, image_folder), tmp_path / "out"
    summary = stylize_dataset(str(manifest), str(out), run_id="s48",
                              overrides={**WARP, "renderer": renderer})
    assert summary["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert all(_files(out, folder) == {"w.flo" if folder == "flow" else "w.png"}
               for folder in SIDE)
    _plant_foreign(out)

    summary = stylize_dataset(str(manifest), str(out), run_id="s56",
                              overrides={**WARP, "renderer": renderer, "size": 56,
                                         "side_outputs": False})
    assert summary["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert _files(out, "images") == {"w.png", "p.png", *FOREIGN["images"]}
    assert all(_files(out, folder) == FOREIGN[folder] for folder in SIDE)
    assert max(Image.open(out / "images" / "w.png").size) == 56
    assert all((out / f / n).read_bytes() == b"not this run's" for f, ns in FOREIGN.items()
               for n in ns)


@pytest.mark.usefixtures("prefect_api")
def test_a_redo_in_jpeg_leaves_only_the_jpeg_and_keeps_the_side_outputs(
        image_folder: Path, tmp_path: Path):
    from flows.stylize_dataset import stylize_dataset

    manifest, out = _manifest(tmp_path, image_folder), tmp_path / "out"
    assert stylize_dataset(str(manifest), str(out), run_id="png",
                           overrides=WARP)["counts"]["ok"] == 2
    _plant_foreign(out)
    summary = stylize_dataset(str(manifest), str(out), run_id="jpg",
                              overrides={**WARP, "image_format": "jpeg"})
    assert summary["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert _files(out, "images") == {"w.jpg", "p.jpg", *FOREIGN["images"]}
    # rewritten in place (same names), so still there
    assert all(_files(out, folder) == {"w.flo" if folder == "flow" else "w.png",
                                       *FOREIGN[folder]} for folder in SIDE)


@pytest.mark.usefixtures("prefect_api")
def test_an_earlier_output_that_is_an_input_now_is_never_removed(image_folder: Path,
                                                                  tmp_path: Path):
    """A second pass over the first one's images, into the same folder, in another format."""
    from flows.stylize_dataset import stylize_dataset

    out = tmp_path / "out"
    assert stylize_dataset(str(_manifest(tmp_path, image_folder)), str(out), run_id="one",
                           overrides=WARP)["counts"]["ok"] == 2
    first = (out / "images" / "w.png").read_bytes()
    again = _manifest(tmp_path, image_folder, content=str(out / "images" / "w.png"))
    summary = stylize_dataset(str(again), str(out), run_id="two",
                              overrides={**WARP, "image_format": "webp"})
    assert summary["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert _files(out, "images") == {"w.png", "w.webp", "p.webp"}
    assert (out / "images" / "w.png").read_bytes() == first


def test_the_s3_pipeline_redo_removes_the_old_side_outputs_only(image_folder: Path,
                                                                 s3_bucket, tmp_path: Path):
    import s3fs

    from flows.stylize_dataset import stylize_dataset

    bucket, options = s3_bucket
    manifest, out = _manifest(tmp_path, image_folder), f"s3://{bucket}/out"
    fs = s3fs.S3FileSystem(**options)

    def run(run_id: str, **changes: object) -> dict:
        return stylize_dataset(str(manifest), out, overrides={**WARP, **changes},
                               s3_endpoint_url=options["endpoint_url"], run_id=run_id)["counts"]

    def listed(folder: str) -> set[str]:
        fs.invalidate_cache()
        return {p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/out/{folder}", detail=False)}

    assert run("a") == {"ok": 2, "failed": 0, "skipped": 0}
    for folder, names in FOREIGN.items():
        for name in names:
            fs.pipe_file(f"{bucket}/out/{folder}/{name}", b"not this run's")
    assert run("b", size=56, side_outputs=False, image_format="jpeg") == {
        "ok": 2, "failed": 0, "skipped": 0}
    assert listed("images") == {"w.jpg", "p.jpg", *FOREIGN["images"]}
    assert all(listed(folder) == FOREIGN[folder] for folder in SIDE)
    assert run("c", size=56, side_outputs=False, image_format="jpeg") == {
        "ok": 0, "failed": 0, "skipped": 2}


# The writer's requests on S3 -----------------------------------------------------------------

CONFIG = StylizeConfig(size=32, device="cpu", vgg_weights="random",
                       warp=WarpConfig(method="affine"))


def _result():
    """A warped item's result (a fixed field: no estimator runs)."""
    torch.manual_seed(1)
    estimate = WarpEstimate(flow=torch.randn(1, 2, 16, 16) * 2, loss_before=1.0,
                            loss_after=0.5, seconds=0.0)
    return stylize(gradient_rgb(), None, None, CONFIG, warp_estimate=estimate)


def test_on_s3_a_fresh_item_sends_no_delete_and_a_redone_one_one_per_stale_file(
        s3_bucket, tmp_path: Path):
    """Counted at the S3 client the writer uses: a fresh item's write is its PUTs alone; a
    redone one adds one DELETE per file its listing found and it did not rewrite, no HEAD."""
    import s3fs

    bucket, options = s3_bucket
    out = f"s3://{bucket}/out"
    result = _result()
    fs = storage.filesystem(out, **options)
    fs.ls(bucket)  # starts the client the writer's calls below go through (same thread)
    operations: list[str] = []
    fs.s3.meta.events.register("before-call.s3",
                               lambda model, **_: operations.append(model.name))

    fresh = item_files.item_outputs(out, "a")
    record = write_item(empty_record("a", "r"), result, CONFIG, fresh, options)
    assert record["status"] == "ok"
    assert operations == ["PutObject"] * 4

    plain = s3fs.S3FileSystem(**options)
    plain.pipe_file(f"{bucket}/out/images/a.webp", b"old")  # an earlier webp run's image
    plain.pipe_file(f"{bucket}/out/images/b.png", b"other id")
    names = {"images": {"a.png", "a.webp", "b.png"}, "warped": {"a.png"}, "flow": {"a.flo"},
             "flow_vis": {"a.png"}}
    found = item_files.found_files(out, "a", names)
    assert set(found) == {f"{out}/images/a.png", f"{out}/images/a.webp", f"{out}/warped/a.png",
                          f"{out}/flow/a.flo", f"{out}/flow_vis/a.png"}
    operations.clear()
    redone = item_files.item_outputs(out, "a", "jpeg")
    bare = with_overrides(CONFIG, {"side_outputs": False, "image_format": "jpeg"})
    write_item(empty_record("a", "r"), result, bare,
               item_files.ItemOutputs(**{**vars(redone), "found": found}), options)
    assert operations == ["PutObject"] + ["DeleteObject"] * 5
    plain.invalidate_cache()
    assert sorted(plain.find(f"{bucket}/out")) == [f"{bucket}/out/images/a.jpg",
                                                   f"{bucket}/out/images/b.png"]


# The rule and the plan -------------------------------------------------------------------------

def test_the_rule_names_only_the_ids_own_lwst_files():
    assert item_files.laid_out("a") == (
        ("flow", "a.flo"), ("warped", "a.png"), ("flow_vis", "a.png"),
        ("images", "a.png"), ("images", "a.jpg"), ("images", "a.webp"))
    names = {"images": {"a.png", "a.jpeg", "ab.png", "a.png.tmp"}, "warped": {"b.png"},
             "flow_vis": {"a.png"}}
    found = item_files.found_files("s3://b/o", "a", names)
    assert found == ("s3://b/o/flow_vis/a.png", "s3://b/o/images/a.png")
    assert item_files.found_files("s3://b/o", "a", {}) == ()
    assert item_files.stale_files(found, {"s3://b/o/images/a.png"}) == ["s3://b/o/flow_vis/a.png"]


def test_the_plan_hands_a_fresh_item_nothing_and_a_leftover_item_its_own_files(
        image_folder: Path, tmp_path: Path):
    """The found files come from the resume check's listing: a fresh folder's items carry
    none (so their writes delete nothing); files a killed run left carry over, theirs only."""
    from flows.work_plan import WorkPlan

    photos = image_folder / "contents"
    entries = [ManifestItem("w", str(photos / "photo0.png")),
               ManifestItem("p", str(photos / "photo1.png"))]
    out = tmp_path / "out"

    def items() -> dict[str, tuple[str, ...]]:
        records = RunRecords()
        try:
            plan = WorkPlan(entries, FAST, str(out), StylizeConfig(), {}, "r", records, 1, 1)
            return {item.id: item.outputs.found for _, unit in plan.units() for item in unit}
        finally:
            records.discard()  # its spill file, as a run discards it

    assert items() == {"w": (), "p": ()}
    for folder, name in (("images", "w.webp"), ("flow", "w.flo"), ("images", "x.png"),
                         ("warped", "notes.txt")):
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / folder / name).write_bytes(b"left")
    assert items() == {"w": (str(out / "flow" / "w.flo"), str(out / "images" / "w.webp")),
                       "p": ()}
