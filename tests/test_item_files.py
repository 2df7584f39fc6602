"""Complete or absent, one rule (issue 12, item 3): which files an item writes and when it is
done come from `lwst.item_files`; the flow picture is drawn from the flow in memory and written
inside the item's rollback; a transient storage error retries the write, not the render."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from bad_images import gradient_rgb
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image

import lwst.flow
import lwst.stylize
from lwst import dataset, item_files, storage
from lwst.config import StylizeConfig, WarpConfig, with_overrides
from lwst.flow import flow_picture, read_flo
from lwst.item import Item
from lwst.manifest import ManifestItem
from lwst.metadata import empty_record
from lwst.stylize import stylize, stylize_files, write_item
from lwst.warping import WarpEstimate

CONFIG = StylizeConfig(size=32, device="cpu", vgg_weights="random",
                       warp=WarpConfig(method="affine"))


def _estimate() -> WarpEstimate:
    """A fixed non-trivial field, so no estimator runs (the warp is not under test here)."""
    torch.manual_seed(1)
    return WarpEstimate(flow=torch.randn(1, 2, 16, 16) * 2, loss_before=1.0, loss_after=0.5,
                        seconds=0.0)


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[str, str]:
    content, geometry = tmp_path / "content.png", tmp_path / "geometry.png"
    gradient_rgb().save(content)
    gradient_rgb().transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(geometry)
    return str(content), str(geometry)


def _write(result, outputs: item_files.ItemOutputs, opts: dict | None = None) -> dict:
    return write_item(empty_record("a", "r"), result, CONFIG, outputs, opts or {})


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# (a) the flow picture comes from the flow in memory ----------------------------------------

def test_the_flow_picture_is_drawn_from_memory_not_read_back(tmp_path, monkeypatch):
    result = stylize(torch.rand(1, 3, 32, 32), None, None, CONFIG, warp_estimate=_estimate())
    outputs = item_files.item_outputs(str(tmp_path / "out"), "a")

    def no_read_back(*args, **kwargs):
        raise AssertionError("an output was read back from storage")

    monkeypatch.setattr(storage, "read_bytes", no_read_back)
    monkeypatch.setattr(lwst.flow, "read_flo", no_read_back)
    record = _write(result, outputs)
    monkeypatch.undo()

    assert record["status"] == "ok" and record["flow"] == outputs.flow
    picture = np.asarray(Image.open(outputs.flow_vis), np.float32)
    expected = (flow_picture(result.warp.flow)[0].permute(1, 2, 0).numpy() * 255).round()
    np.testing.assert_array_equal(picture, expected)
    # ... and it is the picture of what was saved (the .flo holds the same float32 field).
    saved = (flow_picture(read_flo(outputs.flow))[0].permute(1, 2, 0).numpy() * 255).round()
    np.testing.assert_array_equal(picture, saved)


# (b) one rollback for all of an item's files -----------------------------------------------

def test_a_failing_image_write_removes_flow_warped_and_flow_picture(tmp_path):
    result = stylize(torch.rand(1, 3, 32, 32), None, None, CONFIG, warp_estimate=_estimate())
    out = tmp_path / "out"
    outputs = item_files.item_outputs(str(out), "a")
    Path(outputs.image).mkdir(parents=True)  # the image, written last, cannot land
    with pytest.raises(IsADirectoryError):
        _write(result, outputs)
    assert _files_under(out) == set()  # no flow, warped, flow picture, nor a temp file


# (c) a transient error retries the write, not the render -----------------------------------

class FlakyFS(MemoryFileSystem):
    """An in-memory store whose next PUTs raise the queued errors (``flaky://``)."""

    protocol = ("flaky",)
    store: dict = {}  # its own, not the memory:// store
    pseudo_dirs = [""]
    failures: list[OSError] = []
    puts = 0

    @classmethod
    def _strip_protocol(cls, path):  # noqa: ANN001, ANN206 - fsspec's signature
        return super()._strip_protocol(path.replace("flaky://", "memory://", 1))

    def pipe_file(self, path, value, *args, **kwargs):  # noqa: ANN001, ANN201
        type(self).puts += 1
        if self.failures:
            raise self.failures.pop(0)
        return super().pipe_file(path, value, *args, **kwargs)


@pytest.fixture
def flaky(monkeypatch):
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    FlakyFS.store.clear()
    FlakyFS.pseudo_dirs[:] = [""]
    FlakyFS.failures = []
    FlakyFS.puts = 0
    monkeypatch.setattr(storage, "WRITE_RETRY_DELAYS", (0.01, 0.01))
    renders = []
    real = lwst.stylize.stylize

    def counted(*args, **kwargs):
        renders.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lwst.stylize, "stylize", counted)
    return renders


def _stylize_to(outputs: item_files.ItemOutputs, inputs: tuple[str, str]) -> dict:
    content, geometry = inputs
    return stylize_files(Item("a", content, geometry, None, CONFIG, outputs),
                         warp_estimate=_estimate())


def test_a_reset_connection_retries_the_write_and_renders_once(flaky, inputs):
    FlakyFS.failures = [ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")]
    outputs = item_files.item_outputs("flaky://bucket/out", "a")
    record = _stylize_to(outputs, inputs)
    assert record["status"] == "ok"
    assert len(flaky) == 1  # one render
    assert FlakyFS.puts == 4 + 1  # four files, one of them twice
    assert sorted(FlakyFS.store) == sorted(f"/bucket/out/{folder}/a{suffix}"
                                           for folder, suffix in item_files.LAYOUT.values())


def test_a_permission_error_is_not_retried_and_leaves_nothing(flaky, inputs):
    FlakyFS.failures = [PermissionError(errno.EACCES, "Access Denied")]
    with pytest.raises(PermissionError):
        _stylize_to(item_files.item_outputs("flaky://bucket/out", "a"), inputs)
    assert FlakyFS.puts == 1 and len(flaky) == 1 and not FlakyFS.store


def test_a_write_failing_every_attempt_is_no_longer_transient(flaky, inputs):
    # The flow and warped land, then the flow picture times out on all three attempts.
    FlakyFS.failures = []
    real_pipe = FlakyFS.pipe_file

    def pipe(self, path, value, *args, **kwargs):  # noqa: ANN001, ANN202
        if "flow_vis" in path:
            type(self).puts += 1
            raise TimeoutError("timed out")
        return real_pipe(self, path, value, *args, **kwargs)

    FlakyFS.pipe_file = pipe
    try:
        with pytest.raises(storage.WriteFailedError) as info:
            _stylize_to(item_files.item_outputs("flaky://bucket/out", "a"), inputs)
    finally:
        FlakyFS.pipe_file = real_pipe
    assert "3 time(s)" in str(info.value) and isinstance(info.value.__cause__, TimeoutError)
    assert not storage.is_transient(info.value)  # so no task-level retry re-renders it
    assert len(flaky) == 1 and not FlakyFS.store  # rolled back


def test_the_transient_rule():
    assert storage.is_transient(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert storage.is_transient(TimeoutError("timed out"))
    for exc in (FileNotFoundError(errno.ENOENT, "x"), PermissionError(errno.EACCES, "x"),
                OSError(errno.ENOSPC, "full"), OSError(errno.EROFS, "read-only"),
                OSError(errno.ENAMETOOLONG, "long"), OSError(errno.EINVAL, "bad"),
                storage.StorageUnavailableError("down"), ValueError("bad input")):
        assert not storage.is_transient(exc), exc


def test_a_local_write_retries_a_transient_error_once(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "WRITE_RETRY_DELAYS", (0.01, 0.01))
    calls = []
    real_replace = storage.os.replace

    def replace(src, dst):  # noqa: ANN001, ANN202
        calls.append(dst)
        if len(calls) == 1:
            raise ConnectionResetError(errno.ECONNRESET, "reset (a network mount)")
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace)
    storage.write_bytes_atomic(tmp_path / "x.bin", b"data")
    monkeypatch.undo()
    assert len(calls) == 2 and (tmp_path / "x.bin").read_bytes() == b"data"
    assert _files_under(tmp_path) == {"x.bin"}  # the failed attempt's temp file is gone


# (d) one completeness rule, the one the writer follows -------------------------------------

def test_the_completeness_rule():
    names = {"images": {"a.png"}, "warped": {"a.png"}, "flow": {"a.flo"}, "flow_vis": set()}
    assert not item_files.is_complete("a", True, True, names, {"a"})  # its flow picture missing
    assert item_files.is_complete("a", True, False, names, {"a"})  # ...not asked for
    names["flow_vis"] = {"a.png"}
    assert item_files.is_complete("a", True, True, names, {"a"})
    assert not item_files.is_complete("a", True, True, names, set())  # no ok row
    assert item_files.is_complete("b", False, True, {"images": {"b.png"}}, {"b"})  # image + row
    assert not item_files.is_complete("b", False, True, {"images": set()}, {"b"})
    # without side outputs a warped item is its image and its row, nothing else
    assert item_files.is_complete("c", True, False, {"images": {"c.png"}}, {"c"})
    assert not item_files.is_complete("c", True, True, {"images": {"c.png"}}, {"c"})
    assert not item_files.is_complete("c", True, False, {"warped": {"c.png"}}, {"c"})


def test_side_outputs_are_redone_only_when_asked_for_again():
    assert item_files.kinds(True, False) == ("image",)
    assert item_files.kinds(True, True) == ("flow", "warped", "flow_vis", "image")
    assert item_files.side_outputs_stale(recorded=False, wanted=True)
    assert not item_files.side_outputs_stale(recorded=True, wanted=False)
    assert not item_files.side_outputs_stale(recorded=True, wanted=True)
    assert not item_files.side_outputs_stale(recorded=False, wanted=False)


def test_the_writer_writes_exactly_what_the_resume_check_expects(tmp_path, inputs):
    out = tmp_path / "out"
    content, geometry = inputs
    records = []
    for item_id, geom in (("warps", geometry), ("plain", None)):
        outputs = item_files.item_outputs(str(out), item_id)
        records.append(stylize_files(Item(item_id, content, geom, None, CONFIG, outputs),
                                     run_id="r", warp_estimate=_estimate() if geom else None))
        assert item_files.warps(bool(geom), CONFIG) == (geom is not None)
    expected = {str(Path(uri).relative_to(out))
                for item_id, warped in (("warps", True), ("plain", False))
                for uri in item_files.item_outputs(str(out), item_id).files(warped, True).values()}
    assert _files_under(out) == expected

    items = [ManifestItem("warps", content, geometry), ManifestItem("plain", content)]
    finished = dataset.CompletedOutputs(str(out))
    assert not any(finished.is_complete(item, CONFIG) for item in items)  # no rows yet
    dataset.write_run_metadata(str(out), "r", records)
    finished = dataset.CompletedOutputs(str(out))
    assert all(finished.is_complete(item, CONFIG) for item in items)
    Path(item_files.item_outputs(str(out), "warps").flow_vis).unlink()
    assert not dataset.CompletedOutputs(str(out)).is_complete(items[0], CONFIG)


def test_an_item_finished_with_other_settings_or_inputs_is_not_done(tmp_path, inputs):
    out, (content, geometry) = tmp_path / "out", inputs
    outputs = item_files.item_outputs(str(out), "a")
    record = stylize_files(Item("a", content, None, None, CONFIG, outputs), run_id="r")
    dataset.write_run_metadata(str(out), "r", [record])
    item = ManifestItem("a", content)
    finished = dataset.CompletedOutputs(str(out))
    assert finished.changes(item, CONFIG) == [] and finished.is_complete(item, CONFIG)
    # where it ran and whether its losses were measured change no file
    neutral = with_overrides(CONFIG, {"device": "auto", "measure_losses": False})
    assert finished.is_complete(item, neutral)
    bigger = with_overrides(CONFIG, {"size": 40, "renderer": "adain"})
    assert finished.changes(item, bigger) == ["size 32 -> 40", "renderer gatys -> adain"]
    assert not finished.is_complete(item, bigger)
    moved = ManifestItem("a", content, geometry)
    assert finished.changes(moved, CONFIG) == [f"geometry None -> {geometry}"]
    assert finished.changes(ManifestItem("b", content), CONFIG) is None  # never finished
    # the latest ok row is what the files are: after a run at 40 px, 40 px is done
    again = stylize_files(Item("a", content, None, None, bigger, outputs), run_id="s")
    dataset.write_run_metadata(str(out), "s", [again])
    finished = dataset.CompletedOutputs(str(out))
    assert finished.is_complete(item, bigger) and not finished.is_complete(item, CONFIG)
    # a setting a later lwst added has no recorded value to differ from
    table = pq.read_table(dataset.run_metadata_uri(str(out), "s"))
    params = json.loads(table["params"][0].as_py())
    del params["warp_views"]
    table = table.set_column(table.schema.get_field_index("params"), "params",
                             pa.array([json.dumps(params)]))
    pq.write_table(table, dataset.run_metadata_uri(str(out), "s"))
    later = with_overrides(bigger, {"warp_views": 1})
    assert dataset.CompletedOutputs(str(out)).is_complete(item, later)


def test_journal_rows_go_where_the_rule_says(tmp_path):
    record = {**empty_record("a", "r"), "status": "ok"}
    dataset.write_journal(str(tmp_path), record)
    assert Path(item_files.journal_uri(str(tmp_path), "r", "a")).is_file()
