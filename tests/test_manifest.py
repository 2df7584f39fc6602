"""lwst.manifest: reading every format, refusing bad manifests whole, building seeded manifests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lwst.manifest import (
    ManifestError,
    ManifestItem,
    read_manifest,
    resolve_path,
    write_manifest,
)
from lwst.manifest_builder import make_manifest

ROWS = pd.DataFrame(
    {
        "id": ["a", "b.2", "c_3"],
        "content": ["img/a.png", "/abs/b.png", "s3://bucket/c.png"],
        "geometry": ["../shared/g.png", None, None],
        "texture": [None, "t.jpg", None],
        "size": [64, None, 32],
    }
)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_formats_read_alike_and_paths_resolve_against_manifest(tmp_path: Path, suffix: str):
    uri = str(tmp_path / "sets" / f"m{suffix}")
    write_manifest(ROWS, uri)
    items = read_manifest(uri)
    base = tmp_path / "sets"
    assert [i.id for i in items] == ["a", "b.2", "c_3"]
    assert items[0].content == str(base / "img" / "a.png")
    assert items[0].geometry == str(tmp_path / "shared" / "g.png")
    assert items[1].content == "/abs/b.png"
    assert items[1].texture == str(base / "t.jpg")
    assert items[2].content == "s3://bucket/c.png"
    assert items[0].overrides == {"size": 64} and items[1].overrides == {}
    assert isinstance(items[2].overrides["size"], int)


def test_relative_paths_in_a_bucket_manifest_stay_in_the_bucket():
    assert resolve_path("img/a.png", "s3://bkt/sets") == "s3://bkt/sets/img/a.png"
    assert resolve_path("../x.png", "s3://bkt/sets/v1") == "s3://bkt/sets/x.png"
    assert resolve_path("file:///d/x.png", "s3://bkt") == "file:///d/x.png"


def test_bad_manifest_is_refused_listing_every_offending_row(tmp_path: Path):
    uri = tmp_path / "bad.csv"
    uri.write_text(
        "id,content,size,iterations\n"
        "ok,a.png,64,\n"
        "ok,b.png,,\n"  # duplicate
        "../evil,c.png,,\n"  # traversal
        "..,d.png,,\n"  # dots only
        ",e.png,,\n"  # missing id
        "f,,,\n"  # missing content
        "g,g.png,huge,\n"  # bad override value
        "h,h.png,,1;x\n"  # bad list override
    )
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(uri))
    problems = caught.value.problems  # named by their line in the file (the header is 1)
    assert "line 3 (id 'ok'): duplicate id (first used on line 2)" in problems
    assert any(p.startswith("line 4:") and "'../evil'" in p for p in problems)
    assert any(p.startswith("line 5:") and "may not start with '.'" in p for p in problems)
    assert "line 6: missing id" in problems
    assert "line 7 (id 'f'): missing content" in problems
    assert any(p.startswith("line 8 (id 'g'): bad size 'huge'") for p in problems)
    assert any(p.startswith("line 9 (id 'h'): bad iterations") for p in problems)
    assert len(problems) == 7
    assert "\n" not in str(caught.value)


def test_columns_and_rows_are_refused_in_one_pass_by_their_file_line(tmp_path: Path):
    """An unknown column used to hide every row error until it was fixed, and rows were
    counted without the blank lines: a duplicate on line 6 was 'row 3'."""
    uri = tmp_path / "m.csv"
    uri.write_text("id,content,colour\n\na,x.png,red\n\n\na,y.png,\n\"b\nc\",z.png,\nok,,\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(uri))
    problems = caught.value.problems
    assert problems[0].startswith("unknown column(s) 'colour'")
    assert "line 6 (id 'a'): duplicate id (first used on line 3)" in problems
    assert any(p.startswith("line 7:") and "'b\\nc'" in p for p in problems)  # quoted break
    assert "line 9 (id 'ok'): missing content" in problems
    assert len(problems) == 4
    message = str(caught.value)
    assert "\n" not in message and "colour" in message and "line 9" in message


def test_json_lines_rows_are_named_by_line_and_parquet_rows_by_number(tmp_path: Path):
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"id": "a", "content": "x.png"}\n\n{"id": "a", "content": "y.png"}\n')
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(jsonl))
    assert caught.value.problems == ["line 3 (id 'a'): duplicate id (first used on line 1)"]
    parquet = str(tmp_path / "m.parquet")
    write_manifest(pd.DataFrame({"id": ["a", "a"], "content": ["x.png", "y.png"]}), parquet)
    with pytest.raises(ManifestError) as caught:
        read_manifest(parquet)
    assert caught.value.problems == ["row 2 (id 'a'): duplicate id (first used on row 1)"]


def test_a_manifest_with_many_bad_rows_lists_the_first_few_and_counts_the_rest(tmp_path: Path):
    uri = tmp_path / "m.csv"
    uri.write_text("id,content\n" + "".join(f"x{k},\n" for k in range(25)))
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(uri))
    assert len(caught.value.problems) == 25  # every one kept for a program
    message = str(caught.value)
    assert "line 2 (id 'x0'): missing content" in message and "'x9'" in message
    assert "'x10'" not in message and "... and 15 more (25 problems in all)" in message


def test_missing_and_unknown_columns_are_refused(tmp_path: Path):
    uri = tmp_path / "cols.csv"
    uri.write_text("name,photo,colour\nx,a.png,red\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(uri))
    message = str(caught.value)
    assert "missing required column(s) 'id', 'content'" in message
    assert "unknown column(s) 'name', 'photo', 'colour'" in message


def test_unreadable_and_unknown_format_manifests_are_refused(tmp_path: Path):
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(str(tmp_path / "absent.csv"))
    (tmp_path / "m.txt").write_text("id,content\n")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        read_manifest(str(tmp_path / "m.txt"))
    (tmp_path / "m.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match="cannot parse as parquet"):
        read_manifest(str(tmp_path / "m.parquet"))


def test_all_pairs_manifest(image_folder: Path):
    frame = make_manifest(str(image_folder / "contents"), str(image_folder / "styles"))
    assert len(frame) == 3 * 2
    assert frame["id"].is_unique
    assert (frame["geometry"] == frame["texture"]).all()
    assert set(frame["content"]) == {str(image_folder / "contents" / f"photo{i}.png")
                                      for i in range(3)}


def test_seeded_triples_are_reproducible_distinct_and_valid(image_folder: Path, tmp_path: Path):
    contents, styles = str(image_folder / "contents"), str(image_folder / "styles")
    first = make_manifest(contents, styles, n=8, seed=3)
    again = make_manifest(contents, styles, n=8, seed=3)
    other = make_manifest(contents, styles, n=8, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    triples = set(zip(first["content"], first["geometry"], first["texture"], strict=True))
    assert len(triples) == 8  # distinct
    write_manifest(first, str(tmp_path / "aug.jsonl"))
    items = read_manifest(str(tmp_path / "aug.jsonl"))
    assert [i.id for i in items] == list(first["id"])
    with pytest.raises(ValueError, match="n must be within 1..12"):
        make_manifest(contents, styles, n=13)


def test_item_round_trips_as_a_json_friendly_dict():
    item = ManifestItem("x", "/a.png", None, "s3://b/t.png", {"size": 32})
    assert ManifestItem.from_dict(item.as_dict()) == item


def test_list_images_is_the_one_listing(tmp_path: Path):
    from lwst.storage import list_images

    for name in ("a.png", "B.JPG", "c.webp", ".hidden.png", "notes.txt", "sub/d.jpeg",
                 "sub/.e.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    root = tmp_path.resolve()
    assert list_images(tmp_path) == [str(root / n) for n in ("B.JPG", "a.png", "c.webp",
                                                              "sub/d.jpeg")]
    assert list_images(str(tmp_path), recursive=False) == [
        str(root / n) for n in ("B.JPG", "a.png", "c.webp")]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_images(tmp_path / "a.png")


def test_a_label_column_is_read_typed_and_reaches_the_metadata_rows(tmp_path: Path):
    """D7: ``lwst run`` refused a ``label`` column; now it is carried as text to the rows."""
    from lwst.dataset import failed_record, skipped_record
    from lwst.item import resolve_items
    from lwst.metadata import COLUMNS, SCHEMA, to_table

    csv_uri = tmp_path / "m.csv"
    csv_uri.write_text("id,content,label\na,a.png, cat \nb,b.png,\n")
    items = read_manifest(str(csv_uri))
    assert [i.label for i in items] == ["cat", None]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"id": "a", "content": "a.png", "label": 7}\n'
                     '{"id": "b", "content": "b.png", "label": [1]}\n'
                     '{"id": "c", "content": "c.png", "label": 0.5}\n')
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(jsonl))
    assert caught.value.problems == [
        "line 2 (id 'b'): bad label [1]: must be text or a whole number",
        "line 3 (id 'c'): bad label 0.5: must be text or a whole number"]
    jsonl.write_text('{"id": "a", "content": "a.png", "label": 7}\n')
    assert read_manifest(str(jsonl))[0].label == "7"

    resolved, _ = resolve_items(items, {}, str(tmp_path / "out"))
    assert [i.label for i in resolved] == ["cat", None]
    assert resolved[0].manifest_item().label == "cat"
    assert ManifestItem.from_dict(items[0].as_dict()) == items[0]
    rows = [failed_record(items[0], "r", "boom"), skipped_record(resolved[0], "r", "/o")]
    assert [r["label"] for r in rows] == ["cat", "cat"]
    assert COLUMNS[-1] == "label" and str(SCHEMA.field("label").type) == "string"
    assert to_table(rows).column("label").to_pylist() == ["cat", "cat"]



def test_a_misspelt_column_gets_a_suggestion(tmp_path: Path):
    """Audit defect 12: as flow overrides do (``did you mean``), not only the allowed list."""
    uri = tmp_path / "m.csv"
    uri.write_text("id,content,textur,styl_strength\na,x.png,t.png,0.5\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(uri))
    assert caught.value.problems == [
        "unknown column(s) 'textur' (did you mean 'texture'?), 'styl_strength' (did you mean "
        "'style_strength'?)"]
    uri.write_text("id,content,textur,colour\na,x.png,t.png,red\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(uri))
    problem, = caught.value.problems
    assert problem.startswith("unknown column(s) 'textur' (did you mean 'texture'?), 'colour' "
                              "(allowed: id, content, geometry, texture, label, size, ")
