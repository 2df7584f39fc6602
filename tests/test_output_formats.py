"""The item's image format and ``--no-upscale``: a dataset run writes ``images/<id>.jpg`` or
``.webp`` at ``image_quality`` when asked (warped/ and flow_vis/ stay PNG), the resume check
redoes an item whose image was written in another format (or another quality of a lossy one)
and skips one written as asked; ``upscale`` off makes a small content at its own size, in a
chunk that also holds full-size items. Real photos, real Parquet, the real flow."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_inputs import write_manifest_csv

from lwst import dataset, item_files
from lwst.config import PIPELINE_RENDERER, StylizeConfig, with_overrides
from lwst.image_io import read_image
from lwst.item import Item, resolve_items
from lwst.manifest import ManifestItem
from lwst.stylize import stylize_files

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TEXTURE = str(EXAMPLES / "texture_strokes.jpg")


def _files(out: Path, folder: str) -> set[str]:
    return {p.name for p in (out / folder).iterdir()} if (out / folder).is_dir() else set()


def _rows(out: Path, run_id: str) -> dict[str, dict]:
    table = pq.read_table(out / "metadata" / f"run-{run_id}.parquet")
    return {r["id"]: r for r in table.to_pylist()}


def _shows_an_image(cell: np.ndarray) -> bool:
    """A contact-sheet cell holds a picture, not the grey of an image it could not find."""
    from lwst.report import GREY

    return bool((cell != np.array(GREY)).any(axis=-1).mean() > 0.9)


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def photos_manifest(tmp_path: Path) -> Path:
    """Two real photos, one with a geometry exemplar (so it has side outputs), both textured."""
    return write_manifest_csv(tmp_path / "m.csv", [
        {"id": "astro", "content": str(EXAMPLES / "astronaut.jpg"),
         "geometry": str(EXAMPLES / "woman_painting.jpg"), "texture": TEXTURE},
        {"id": "cat", "content": str(EXAMPLES / "cat.jpg"), "texture": TEXTURE},
    ])


# The rule (lwst.item_files) ----------------------------------------------------------------


def test_each_format_has_one_suffix_and_only_the_image_follows_it(tmp_path):
    from lwst.config import IMAGE_FORMATS

    assert tuple(item_files.IMAGE_SUFFIXES) == IMAGE_FORMATS
    outputs = item_files.item_outputs(str(tmp_path), "a", "jpeg")
    assert Path(outputs.image).name == "a.jpg" and Path(outputs.image).parent.name == "images"
    assert Path(outputs.warped).name == "a.png" and Path(outputs.flow_vis).name == "a.png"
    assert Path(item_files.item_outputs(str(tmp_path), "a", "webp").image).name == "a.webp"
    assert Path(item_files.item_outputs(str(tmp_path), "a").image).name == "a.png"
    names = {"images": {"a.png"}}
    assert item_files.is_complete("a", False, True, names, {"a"})
    assert not item_files.is_complete("a", False, True, names, {"a"}, "jpeg")
    assert item_files.is_complete("a", False, True, {"images": {"a.jpg"}}, {"a"}, "jpeg")


def test_an_image_is_stale_in_another_format_or_another_lossy_quality():
    assert item_files.image_stale(("png", 95), ("jpeg", 95))
    assert item_files.image_stale(("jpeg", 95), ("png", 95))
    assert item_files.image_stale(("jpeg", 95), ("webp", 95))
    assert item_files.image_stale(("jpeg", 95), ("jpeg", 80))
    assert item_files.image_stale(("webp", 80), ("webp", 95))
    assert not item_files.image_stale(("jpeg", 80), ("jpeg", 80))
    assert not item_files.image_stale(("png", 95), ("png", 80))  # a PNG has no quality


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"image_format": "gif"}, "image_format must be one of ('png', 'jpeg', 'webp'), got 'gif'"),
    ({"image_format": "jpg"}, "image_format must be one of"),
    ({"image_quality": 0}, "image_quality must be an integer within 1..100, got 0"),
    ({"image_quality": 101}, "image_quality must be an integer within 1..100, got 101"),
    ({"image_quality": "high"}, "image_quality: expected an integer, got 'high'"),
    ({"image_quality": 90.5}, "image_quality: expected an integer, got 90.5"),
    ({"upscale": "maybe"}, "upscale: expected a boolean, got 'maybe'"),
])
def test_bad_settings_are_refused_naming_them(overrides, reason):
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        with_overrides(StylizeConfig(), overrides)


def test_manifest_cells_are_typed_like_the_options():
    config = with_overrides(StylizeConfig(), {"image_format": "webp", "image_quality": "80",
                                              "upscale": "false"})
    assert (config.image_format, config.image_quality, config.upscale) == ("webp", 80, False)
    assert with_overrides(StylizeConfig(), {"image_quality": 90.0}).image_quality == 90


def test_read_and_resize_never_enlarge_with_upscale_off(tmp_path):
    small = tmp_path / "small.png"
    Image.open(EXAMPLES / "cat.jpg").resize((48, 32)).save(small)
    assert read_image(small, 64).shape[-2:] == (43, 64)  # enlarged, as before
    assert read_image(small, 64, upscale=False).shape[-2:] == (32, 48)
    assert read_image(small, 40, upscale=False).shape[-2:] == (27, 40)  # larger: as before
    big = read_image(EXAMPLES / "cat.jpg", 96, upscale=False)
    assert big.shape[-2:] == read_image(EXAMPLES / "cat.jpg", 96).shape[-2:] == (64, 96)


# Resume (lwst.dataset.CompletedOutputs over real Parquet rows) -------------------------------


def _finish(out: Path, item_id: str, config: StylizeConfig, run_id: str,
            strip: tuple[str, ...] = ()) -> None:
    """Run one item for real and record its row; ``strip``: settings left out of its
    ``params``, as a row written by an lwst older than them reads."""
    outputs = item_files.item_outputs(str(out), item_id, config.image_format)
    record = stylize_files(Item(item_id, str(EXAMPLES / "cat.jpg"), None, TEXTURE, config,
                                outputs), run_id=run_id)
    params = json.loads(record["params"])
    record["params"] = json.dumps({k: v for k, v in params.items() if k not in strip})
    dataset.write_run_metadata(str(out), run_id, [record])


FAST = with_overrides(StylizeConfig(), {"size": 48, "device": "cpu", "vgg_weights": "random",
                                        "renderer": "adain", "measure_losses": False})


def test_a_finished_item_is_redone_in_another_format_and_skipped_in_its_own(tmp_path):
    out, item = tmp_path / "out", ManifestItem("a", str(EXAMPLES / "cat.jpg"), None, TEXTURE)
    jpeg = with_overrides(FAST, {"image_format": "jpeg", "image_quality": 90})
    _finish(out, "a", jpeg, "r1")
    assert _files(out, "images") == {"a.jpg"}
    finished = dataset.CompletedOutputs(str(out))
    assert finished.changes(item, jpeg) == [] and finished.is_complete(item, jpeg)
    assert finished.changes(item, FAST) == ["image_format jpeg -> png"]
    assert not finished.is_complete(item, FAST)
    assert finished.changes(item, with_overrides(jpeg, {"image_quality": 80})) == [
        "image_quality 90 -> 80"]
    # a PNG found where its row says JPEG was written is not trusted: another run's
    (out / "images" / "a.png").write_bytes(b"stale")
    assert not dataset.CompletedOutputs(str(out)).is_complete(item, FAST)
    # a skipped row names the file it found
    row = dataset.skipped_record(item, "r2", str(out), None, jpeg.image_format)
    assert row["output"] == str(out / "images" / "a.jpg")


def test_a_png_ignores_quality_and_rows_older_than_the_settings_are_pngs_made_upscaled(
        tmp_path):
    out, item = tmp_path / "out", ManifestItem("a", str(EXAMPLES / "cat.jpg"), None, TEXTURE)
    _finish(out, "a", FAST, "r1", strip=("image_format", "image_quality", "upscale"))
    finished = dataset.CompletedOutputs(str(out))
    assert finished.changes(item, FAST) == [] and finished.is_complete(item, FAST)
    assert finished.is_complete(item, with_overrides(FAST, {"image_quality": 50}))
    assert finished.changes(item, with_overrides(FAST, {"image_format": "webp"})) == [
        "image_format png -> webp"]
    assert finished.changes(item, with_overrides(FAST, {"upscale": False})) == [
        "upscale True -> False"]


# lwst run, end to end ----------------------------------------------------------------------


@pytest.mark.slow  # three `lwst run` subprocesses (~15 s), for the slow suite
@pytest.mark.usefixtures("prefect_api")
def test_lwst_run_jpeg_then_png_then_jpeg_again(main, photos_manifest: Path, tmp_path: Path,
                                                capsys):
    out = tmp_path / "out"
    base = ["run", str(photos_manifest), "--out", str(out), "--size", "96", "--warp-method",
            "affine", "--device", "cpu", "--no-losses", "--quiet", "--run-id"]
    assert main([*base, "j1", "--image-format", "jpeg"]) == 0
    assert "run j1: 2 ok, 0 failed, 0 skipped" in capsys.readouterr().out
    assert _files(out, "images") == {"astro.jpg", "cat.jpg"}
    assert _files(out, "warped") == {"astro.png"} and _files(out, "flow_vis") == {"astro.png"}
    for name in ("astro", "cat"):
        with Image.open(out / "images" / f"{name}.jpg") as image:
            assert image.format == "JPEG" and max(image.size) == 96 and image.mode == "RGB"
    rows = _rows(out, "j1")
    assert rows["cat"]["output"] == str(out / "images" / "cat.jpg")
    params = json.loads(rows["cat"]["params"])
    assert (params["image_format"], params["image_quality"]) == ("jpeg", 95)
    # the contact sheet found the .jpg images (an output cell is not the grey placeholder)
    sheet = np.asarray(Image.open(out / "reports" / "contact_sheet-j1.png").convert("RGB"))
    assert _shows_an_image(sheet[20:20 + 64, 4 + 3 * 132:4 + 3 * 132 + 128])

    assert main([*base, "j2", "--image-format", "jpeg"]) == 0  # the same format: skipped
    assert "run j2: 0 ok, 0 failed, 2 skipped" in capsys.readouterr().out
    assert _rows(out, "j2")["astro"]["output"] == str(out / "images" / "astro.jpg")
    sizes = {p.name: p.stat().st_size for p in (out / "images").iterdir()}

    assert main([*base, "p1"]) == 0  # PNG asked: both redone, their JPEGs replaced
    captured = capsys.readouterr()
    assert "run p1: 2 ok, 0 failed, 0 skipped" in captured.out
    assert "image_format jpeg -> png" in captured.err
    assert _files(out, "images") == {"astro.png", "cat.png"}
    assert _files(out, "warped") == {"astro.png"} and _files(out, "flow_vis") == {"astro.png"}
    sizes.update({p.name: p.stat().st_size for p in (out / "images").iterdir()})
    for name in ("astro", "cat"):
        assert sizes[f"{name}.jpg"] < sizes[f"{name}.png"] / 2, sizes
        with Image.open(out / "images" / f"{name}.png") as image:
            assert image.format == "PNG"
    assert _rows(out, "p1")["cat"]["output"] == str(out / "images" / "cat.png")

    assert main([*base, "j3", "--image-format", "jpeg", "--image-quality", "70"]) == 0
    assert "run j3: 2 ok, 0 failed, 0 skipped" in capsys.readouterr().out  # quality: redone
    assert (out / "images" / "cat.jpg").stat().st_size < sizes["cat.jpg"]
    assert json.loads(_rows(out, "j3")["cat"]["params"])["image_quality"] == 70
    assert _files(out, "images") == {"astro.jpg", "cat.jpg"}  # no temp file, no PNG left


@pytest.mark.usefixtures("prefect_api")
def test_a_manifest_column_and_the_flow_overrides_pick_the_format(tmp_path: Path):
    from flows.stylize_dataset import stylize_dataset

    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "w", "content": str(EXAMPLES / "cat.jpg"), "texture": TEXTURE,
         "image_format": None, "image_quality": None},
        {"id": "j", "content": str(EXAMPLES / "coffee.jpg"), "texture": TEXTURE,
         "image_format": "jpeg", "image_quality": 60},
    ])
    out = tmp_path / "out"
    summary = stylize_dataset(str(manifest), str(out), run_id="f1", overrides={
        "size": 64, "device": "cpu", "measure_losses": False, "image_format": "webp"})
    assert summary["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert _files(out, "images") == {"w.webp", "j.jpg"}
    with Image.open(out / "images" / "w.webp") as image:
        assert image.format == "WEBP"
    params = json.loads(_rows(out, "f1")["j"]["params"])
    assert (params["image_format"], params["image_quality"]) == ("jpeg", 60)


def test_the_run_options_are_the_flat_overrides():
    import argparse

    from flows.cli import add_parser, overrides_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["run", "m.csv", "--out", "o", "--image-format", "webp",
                              "--image-quality", "80", "--no-upscale"])
    assert overrides_from_args(args) == {"image_format": "webp", "image_quality": 80,
                                         "upscale": False}
    args = parser.parse_args(["run", "m.csv", "--out", "o"])
    assert not {"image_format", "image_quality", "upscale"} & set(overrides_from_args(args))


def test_lwst_run_refuses_a_bad_format_or_quality_in_one_line(main, photos_manifest, tmp_path,
                                                              capsys):
    base = ["run", str(photos_manifest), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as caught:
        main([*base, "--image-format", "gif"])
    assert caught.value.code == 2
    line = _one_error_line(capsys)
    assert "argument --image-format: invalid choice: 'gif'" in line
    assert main([*base, "--image-quality", "0"]) == 2
    assert _one_error_line(capsys) == (
        "lwst run: error: --image-quality must be an integer within 1..100, got 0")
    bad = write_manifest_csv(tmp_path / "bad.csv", [
        {"id": "a", "content": str(EXAMPLES / "cat.jpg"), "image_quality": 101}])
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys)
    assert "image_quality must be an integer within 1..100, got 101" in line and "a" in line
    assert not (tmp_path / "out").exists()


# lwst stylize --------------------------------------------------------------------------------


def test_stylize_writes_webp_at_the_quality_asked(main, tmp_path, capsys):
    def stylize(out: Path, *extra: str) -> int:
        return main(["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--texture",
                     TEXTURE, "--out", str(out), "--size", "128", "--renderer", "adain",
                     "--no-losses", "--quiet", "--metadata-out", str(out) + ".json", *extra])

    assert stylize(tmp_path / "a.webp") == 0
    assert stylize(tmp_path / "b.webp", "--image-quality", "60") == 0
    with Image.open(tmp_path / "a.webp") as image:
        assert image.format == "WEBP" and image.size == (128, 85)
    assert (tmp_path / "b.webp").stat().st_size < (tmp_path / "a.webp").stat().st_size
    params = json.loads(json.loads((tmp_path / "b.webp.json").read_text())["params"])
    assert (params["image_format"], params["image_quality"]) == ("webp", 60)
    assert capsys.readouterr().err == ""
    assert stylize(tmp_path / "c.png", "--image-quality", "60") == 0  # moot for a PNG: said
    assert "--image-quality applies to .jpg/.jpeg and .webp outputs" in capsys.readouterr().err
    assert stylize(tmp_path / "d.jpg", "--image-quality", "101") == 2
    assert _one_error_line(capsys) == (
        "lwst stylize: error: --image-quality must be an integer within 1..100, got 101")
    assert stylize(tmp_path / "e.gif") == 2
    assert "--out" in _one_error_line(capsys) and not (tmp_path / "e.gif").exists()


def test_stylize_no_upscale_keeps_a_small_content_small(main, tmp_path):
    small = tmp_path / "small.png"
    Image.open(EXAMPLES / "cat.jpg").resize((60, 40)).save(small)
    args = ["stylize", "--content", str(small), "--texture", TEXTURE, "--size", "128",
            "--renderer", "adain", "--no-losses", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "up.png")]) == 0
    assert main([*args, "--out", str(tmp_path / "own.png"), "--no-upscale"]) == 0
    assert Image.open(tmp_path / "up.png").size == (128, 85)
    assert Image.open(tmp_path / "own.png").size == (60, 40)


# --no-upscale in a run: a small and a full-size item in one chunk ----------------------------


@pytest.mark.usefixtures("prefect_api")
def test_no_upscale_small_and_full_size_items_share_a_chunk_correctly(main, tmp_path, capsys):
    from flows.work_plan import work_units

    small = tmp_path / "small.png"
    Image.open(EXAMPLES / "cat.jpg").resize((48, 32)).save(small)
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "small", "content": str(small), "texture": TEXTURE},
        {"id": "face", "content": str(EXAMPLES / "face.jpg"), "texture": TEXTURE},
    ])
    overrides = {"renderer": PIPELINE_RENDERER, "size": 64, "device": "cpu",
                 "measure_losses": False, "upscale": False}
    entries = [ManifestItem("small", str(small), None, TEXTURE),
               ManifestItem("face", str(EXAMPLES / "face.jpg"), None, TEXTURE)]
    items, _ = resolve_items(entries, overrides, str(tmp_path / "out"))
    assert [(kind, [i.id for i in unit]) for kind, unit in work_units(items, 8, 8)] == [
        ("chunk", ["small", "face"])]  # one configuration: one chunk, two sizes in it

    out = tmp_path / "out"
    base = ["run", str(manifest), "--out", str(out), "--size", "64", "--device", "cpu",
            "--no-losses", "--quiet", "--run-id"]
    assert main([*base, "u1", "--no-upscale"]) == 0
    assert "run u1: 2 ok, 0 failed, 0 skipped" in capsys.readouterr().out
    assert Image.open(out / "images" / "small.png").size == (48, 32)  # its own size
    assert Image.open(out / "images" / "face.png").size == (56, 64)  # 339x384 made smaller
    rows = _rows(out, "u1")
    assert (rows["small"]["width"], rows["small"]["height"]) == (48, 32)
    assert (rows["face"]["width"], rows["face"]["height"]) == (56, 64)
    assert json.loads(rows["small"]["params"])["upscale"] is False
    # each is what the item makes alone (its own render pass: the shape decides, not the chunk)
    for item in items:
        alone = tmp_path / "alone" / f"{item.id}.png"
        stylize_files(Item(item.id, item.content, None, TEXTURE, item.config,
                           item_files.ItemOutputs(str(alone), "", "", "")))
        made = np.asarray(Image.open(out / "images" / f"{item.id}.png"), dtype=np.int16)
        assert np.abs(made - np.asarray(Image.open(alone), dtype=np.int16)).max() <= 2

    assert main([*base, "u2", "--no-upscale"]) == 0
    assert "run u2: 0 ok, 0 failed, 2 skipped" in capsys.readouterr().out
    # Upscaling asked again: the small one is redone; the face, made at 64 either way (its
    # row's image is at --size), is not.
    assert main([*base, "u3"]) == 0
    assert "run u3: 1 ok, 0 failed, 1 skipped" in capsys.readouterr().out
    assert Image.open(out / "images" / "small.png").size == (64, 43)


def test_a_webp_run_on_s3_resumes_by_its_own_suffix(s3_bucket, tmp_path: Path):
    import s3fs

    from flows.stylize_dataset import stylize_dataset

    bucket, options = s3_bucket
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "cat", "content": str(EXAMPLES / "cat.jpg"), "texture": TEXTURE}])
    out = f"s3://{bucket}/out"
    overrides = {"size": 64, "device": "cpu", "measure_losses": False, "image_format": "webp"}

    def run(run_id: str, **changes: object) -> dict:
        return stylize_dataset(str(manifest), out, overrides={**overrides, **changes},
                               s3_endpoint_url=options["endpoint_url"], run_id=run_id)["counts"]

    assert run("w1") == {"ok": 1, "failed": 0, "skipped": 0}
    fs = s3fs.S3FileSystem(**options)
    fs.invalidate_cache()
    assert fs.ls(f"{bucket}/out/images", detail=False) == [f"{bucket}/out/images/cat.webp"]
    with Image.open(io.BytesIO(fs.cat_file(f"{bucket}/out/images/cat.webp"))) as image:
        assert image.format == "WEBP" and image.size == (64, 42)
    assert run("w2") == {"ok": 0, "failed": 0, "skipped": 1}
    assert run("p1", image_format="png") == {"ok": 1, "failed": 0, "skipped": 0}
    fs.invalidate_cache()  # the PNG replaced the WebP (`lwst.item_files.stale_files`)
    assert fs.ls(f"{bucket}/out/images", detail=False) == [f"{bucket}/out/images/cat.png"]
    rows = dataset.read_metadata(out, options).to_pylist()
    assert {r["run_id"]: r["output"] for r in rows} == {
        "w1": f"{out}/images/cat.webp", "w2": f"{out}/images/cat.webp",
        "p1": f"{out}/images/cat.png"}


def test_a_content_too_small_to_render_unenlarged_is_refused_saying_why(main, tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.open(EXAMPLES / "cat.jpg").resize((24, 12)).save(tiny)
    assert main(["stylize", "--content", str(tiny), "--texture", TEXTURE, "--out",
                 str(tmp_path / "o.jpg"), "--size", "64", "--renderer", "adain", "--no-upscale",
                 "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("lwst stylize: error: the content at its own size (upscale off, "
                           "size 64) is 24x12: texture rendering needs a shorter side of at "
                           "least 16 px"), line
    assert not (tmp_path / "o.jpg").exists()
