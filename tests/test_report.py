"""The run report (issue 11): captioned contact-sheet rows and the low-confidence list."""

import json
from pathlib import Path

from PIL import Image

from lwst.report import SheetRow, caption, data_url, item_sheet, low_confidence

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _record(item_id, confidence, applied, method="learned"):
    return {"id": item_id, "status": "ok", "warp_confidence": confidence, "warp_applied": applied,
            "warp_fold_frac": 0.0, "warp_stretch_frac": 0.01, "warp_mean_px": 3.0,
            "warp_melt": 0.3,
            "content": "c.png", "geometry": "g.png", "params": json.dumps({"warp_method": method})}


def test_low_confidence_lists_low_and_fallback_items_only():
    records = [_record("good", 0.8, "learned"), _record("low", 0.1, "learned"),
               _record("fell", 0.2, "damp"), _record("nowarp", None, None),
               _record("tps-ok", 0.9, "tps", method="tps")]
    rows = low_confidence(records, 0.3)
    assert [r["id"] for r in rows] == ["fell", "low"]
    assert rows[0]["warp_applied"] == "damp" and rows[1]["warp_confidence"] == 0.1
    assert rows[0]["warp_melt"] == 0.3


def test_sheet_has_one_captioned_row_per_item_with_four_panels(tmp_path):
    record = _record("astro", 0.42, "damp")
    assert caption(record) == "astro  conf 0.42  damp  folds 0.000"
    assert caption({**record, "warp_applied": "learned", "warp_refined": True}).startswith(
        "astro  conf 0.42  learned + DIS  folds")
    rows = [SheetRow(str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "face.jpg"),
                     str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "face.jpg"), caption(record)),
            SheetRow(str(EXAMPLES / "face.jpg"), None, None, str(EXAMPLES / "face.jpg"), "plain")]
    item_sheet(rows, str(tmp_path / "sheet.png"), thumb=64)
    sheet = Image.open(tmp_path / "sheet.png").convert("RGB")
    assert sheet.size == (4 + 4 * (64 + 4), 20 + 2 * (64 + 16 + 4))
    # The second row has no geometry and no warped image: light grey placeholders there.
    assert sheet.getpixel((4 + 1 * 68 + 32, 20 + 84 + 32)) == (225, 225, 225)
    assert sheet.getpixel((4 + 32, 20 + 32)) != (225, 225, 225)


def test_a_texture_only_sample_shows_content_and_output_only(tmp_path):
    """No sampled item has a geometry exemplar (make-manifest --no-geometry): two panels, not
    two columns of grey placeholders."""
    face = str(EXAMPLES / "face.jpg")
    rows = [SheetRow(face, None, None, face, "a"), SheetRow(face, None, None, face, "b")]
    sheet = item_sheet(rows, str(tmp_path / "sheet.png"), thumb=64)
    assert sheet.size == (4 + 2 * (64 + 4), 20 + 2 * (64 + 16 + 4))
    assert (225, 225, 225) not in {sheet.getpixel((4 + k * 68 + 32, 20 + 32)) for k in range(2)}


def test_the_texture_exemplar_has_its_column_beside_the_output(tmp_path):
    """Content | geometry | warped | texture | output: whether the rendering took the
    exemplar's colours shows only next to it. A row without a texture (warp only) is grey
    there; a sheet where no row has a texture keeps four columns."""
    from flows.run_report import _sheet_row

    face, cat = str(EXAMPLES / "face.jpg"), str(EXAMPLES / "astronaut.jpg")
    texture = str(EXAMPLES / "texture_strokes.jpg")
    rows = [SheetRow(face, cat, face, face, "styled", texture=texture),
            SheetRow(face, cat, face, face, "warp only")]
    sheet = item_sheet(rows, str(tmp_path / "sheet.png"), thumb=64)
    assert sheet.size == (4 + 5 * (64 + 4), 20 + 2 * (64 + 16 + 4))
    column = 4 + 3 * 68 + 32
    assert sheet.getpixel((column, 20 + 32)) != (225, 225, 225)
    assert sheet.getpixel((column, 20 + 84 + 32)) == (225, 225, 225)
    assert item_sheet(rows[1:], str(tmp_path / "four.png"), thumb=64).width == 4 + 4 * 68

    record = {"id": "a", "status": "ok", "content": face, "geometry": None, "texture": texture,
              "output": face, "warped": None}
    assert _sheet_row(record, str(tmp_path)).texture == texture


def test_the_embedded_sheet_keeps_its_size_within_the_budget_and_halves_beyond_it():
    import base64
    import io

    import numpy as np

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 500, 3), np.uint8))
    decoded = [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
               for url in (data_url(noise, 10_000_000), data_url(noise, 200_000))]
    assert decoded[0].size == (500, 600)  # fits: full size
    assert decoded[1].size[0] < 500 and len(data_url(noise, 200_000)) <= 200_000


LONG_ID = ("00001_" + "cat_bigeyes_drawing-with-a-long-name_" * 4)[:128]  # make-manifest's kind


def test_a_long_id_is_elided_in_the_middle_and_the_figures_stay_whole():
    from PIL import ImageFont

    from lwst.report import fit_caption

    font = ImageFont.load_default()
    text = caption({**_record(LONG_ID, 0.42, "learned"), "warp_refined": True})
    width = 4 * (128 + 4) - 4  # the default sheet's text width
    assert font.getlength(text) > width  # drawn whole, it ran off the sheet's edge
    line = fit_caption(text, font, width)
    assert font.getlength(line) <= width
    assert line.endswith("  conf 0.42  learned + DIS  folds 0.000")
    head = line.split("  ")[0]
    assert "\u2026" in head and head.startswith("00001_cat") and head.endswith(LONG_ID[-4:])
    assert fit_caption("short  conf 0.10", font, width) == "short  conf 0.10"
    # Thumbnails so small that even a short id leaves no room: the line's end is cut.
    tiny = fit_caption(text, font, 120)
    assert font.getlength(tiny) <= 120 and tiny.endswith("\u2026")


def test_a_skipped_item_shows_the_figures_its_record_carries():
    bare = {"id": "item00", "status": "skipped"}
    assert caption(bare) == "item00  (done earlier)"
    assert caption({**_record("item00", 0.42, "damp"), "status": "skipped"}) == \
        "item00  conf 0.42  damp  folds 0.000  (done earlier)"


def _dark_rows(sheet, top, bottom, left, right):
    """The rows in [top, bottom) with a dark (text) pixel in columns [left, right)."""
    grey = sheet.convert("L")
    return [y for y in range(top, bottom)
            if any(grey.getpixel((x, y)) < 100 for x in range(left, right))]


def test_the_caption_sits_under_its_own_rows_wide_pictures(tmp_path):
    cat = str(EXAMPLES / "cat.jpg")  # 384 x 255: a 64 x 43 thumbnail
    rows = [SheetRow(cat, cat, cat, cat, "first  conf 0.50"),
            SheetRow(cat, None, None, cat, "second  conf 0.60")]
    sheet = item_sheet(rows, str(tmp_path / "sheet.png"), thumb=64)
    assert sheet.size == (4 + 4 * (64 + 4), 20 + 2 * (64 + 16 + 4))  # the layout's formula
    row_h = 64 + 16 + 4
    for k in range(2):
        top = 20 + k * row_h
        picture = top + 43  # the bottom of the row's pictures
        text = _dark_rows(sheet, picture, top + row_h, 4, 60)
        assert text, k
        assert text[0] - picture <= 4  # directly under the pictures
        assert text[-1] < picture + 16  # one caption line, nearer its row than the next
    # The grey panel of a missing picture is as high as the row's pictures.
    assert sheet.getpixel((4 + 68 + 32, 20 + row_h + 40)) == (225, 225, 225)
    assert sheet.getpixel((4 + 68 + 32, 20 + row_h + 50)) != (225, 225, 225)


def test_a_skipped_items_caption_gets_the_figures_of_its_latest_ok_row(tmp_path):
    import datetime as dt

    import pyarrow.parquet as pq

    from lwst.dataset import latest_figures
    from lwst.metadata import empty_record, to_table

    def row(run, status, confidence, applied, minute):
        record = empty_record("face", run)
        record.update(status=status, warp_confidence=confidence, warp_applied=applied,
                      warp_fold_frac=0.0, warp_refined=False,
                      created_at=dt.datetime(2026, 12, 7, 8, minute, tzinfo=dt.UTC))
        return record

    (tmp_path / "metadata").mkdir()
    pq.write_table(to_table([row("a", "ok", 0.30, "damp", 0), row("b", "ok", 0.63, "learned", 5),
                             row("c", "failed", None, None, 9)]),
                   tmp_path / "metadata" / "run-abc.parquet")
    figures = latest_figures(str(tmp_path), ["face", "other"])
    assert set(figures) == {"face"}
    skipped = {"id": "face", "status": "skipped", **figures["face"]}
    assert caption(skipped) == "face  conf 0.63  learned  folds 0.000  (done earlier)"
