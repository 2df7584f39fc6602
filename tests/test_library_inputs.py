"""lwst from Python (audit of the library API): run metadata read into pandas whole, whichever
lwst wrote each file; config dataclasses and `RandomStylize` arguments checked by type, every
refusal one `lwst.errors.InputError` line naming the setting or argument."""

from __future__ import annotations

import datetime as dt
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from lwst.config import (
    OVERRIDES,
    ConfigError,
    RenderConfig,
    StylizeConfig,
    WarpConfig,
    to_params,
    validate,
    with_overrides,
)
from lwst.dataset import (
    failed_record,
    publish_run_file,
    read_metadata_frame,
    skipped_record,
    write_run_metadata,
)
from lwst.devices import DeviceError
from lwst.errors import InputError
from lwst.image_io import ImageInputError, read_image, resize_longest
from lwst.manifest import ManifestItem
from lwst.metadata import COLUMNS, SCHEMA, empty_record
from lwst.run_records import RunRecords

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STYLES = [EXAMPLES / "texture_strokes.jpg", EXAMPLES / "texture_mosaic.jpg"]

# ---- reading a run's metadata into pandas -----------------------------------------------------

# Columns an older lwst did not write (added since: docs/contracts.md appends, never renames).
NEWER = ("error_kind", "warp_refined", "warp_view", "warp_melt", "render_dtype", "label")
OLD_RUN, RUN1, RUN2 = "20261101T000000Z-old", "20261201T000000Z-r1", "20261202T000000Z-r2"


def _when(day: int) -> dt.datetime:
    return dt.datetime(2026, 12, day, 12, tzinfo=dt.UTC)


def _item(item_id: str, label: str | None = None) -> ManifestItem:
    return ManifestItem(item_id, f"/data/{item_id}.jpg", None, "/data/style.jpg", label=label)


def _ok(item_id: str, run_id: str, day: int, **figures) -> dict:
    record = empty_record(item_id, run_id)
    record.update(status="ok", content=f"/data/{item_id}.jpg", texture="/data/style.jpg",
                  output=f"/out/images/{item_id}.png", width=64, height=48, renderer="adain",
                  created_at=_when(day), **figures)
    return record


def _write_old_run(out: Path) -> None:
    """The file an older lwst wrote: the columns of its day only, named to sort first (so
    pyarrow takes its schema for the folder)."""
    rows = [_ok("a", OLD_RUN, 1), _ok("b", OLD_RUN, 1)]
    old_schema = pa.schema([f for f in SCHEMA if f.name not in NEWER])
    table = pa.Table.from_pylist([{k: r[k] for k in old_schema.names} for r in rows],
                                 schema=old_schema)
    pq.write_table(table, out / "metadata" / f"run-{OLD_RUN}.parquet")


@pytest.fixture
def runs(tmp_path) -> Path:
    """Three runs of one output folder, each file written as lwst writes it:

    - old (an older lwst): a, b ok;
    - r1 (`RunRecords`, as `lwst run` streams and publishes it): a skipped, c ok with its
      label and new figures, d failed;
    - r2 (`write_run_metadata`, as a killed run's journal is folded): d redone ok, c skipped,
      e skipped (its earlier rows are gone).
    """
    out = tmp_path / "out"
    (out / "metadata").mkdir(parents=True)
    _write_old_run(out)
    first = RunRecords(spill_dir=str(tmp_path))
    skipped_a = skipped_record(_item("a"), RUN1, str(out))
    skipped_a["created_at"] = _when(2)
    failed_d = failed_record(_item("d", "dogs"), RUN1, "content /data/d.jpg: no such file",
                             renderer="adain")
    failed_d["created_at"] = _when(2)
    first.add([skipped_a, _ok("c", RUN1, 2, label="cats", warp_refined=True, warp_melt=0.25,
                               render_dtype="float32", warp_view="mirror"), failed_d])
    publish_run_file(str(out), RUN1, first.finish())
    first.discard()
    later = [_ok("d", RUN2, 3, label="dogs", warp_refined=False),
             skipped_record(_item("c", "cats"), RUN2, str(out)),
             skipped_record(_item("e"), RUN2, str(out))]
    for record in later[1:]:
        record["created_at"] = _when(3)
    write_run_metadata(str(out), RUN2, later)
    return out


def test_pd_read_parquet_of_the_folder_loses_the_newer_columns(runs):
    """Why the reader exists (audit finding 2): the README's ``pd.read_parquet`` takes the
    oldest file's schema, so ``label`` is gone from every row, and width turns float."""
    naive = pd.read_parquet(runs / "metadata")
    assert not set(NEWER) & set(naive.columns)


def test_every_column_of_every_run_is_read_with_integer_and_boolean_dtypes(runs):
    meta = read_metadata_frame(runs)
    assert list(meta.columns) == list(COLUMNS)
    assert len(meta) == 2 + 3 + 3  # one row per item per run
    rows = meta.set_index(["run_id", "id"])
    assert rows.loc[(RUN1, "c"), "label"] == "cats"
    assert rows.loc[(RUN1, "c"), "render_dtype"] == "float32"
    assert rows.loc[(RUN1, "c"), "warp_melt"] == 0.25
    assert rows.loc[(RUN1, "d"), "label"] == "dogs"  # a failed row keeps its class too
    assert pd.isna(rows.loc[(OLD_RUN, "a"), "label"])  # not written by the older lwst
    assert str(meta["width"].dtype) == "Int32" and str(meta["height"].dtype) == "Int32"
    assert str(meta["warp_refined"].dtype) == "boolean"
    assert rows.loc[(RUN1, "c"), "width"] == 64 and pd.isna(rows.loc[(RUN1, "d"), "width"])
    assert bool(rows.loc[(RUN1, "c"), "warp_refined"]) is True
    assert pd.isna(rows.loc[(RUN1, "d"), "warp_refined"])
    assert str(meta["created_at"].dt.tz) == "UTC"


def test_latest_keeps_each_items_last_row_that_is_not_skipped(runs):
    meta = read_metadata_frame(runs, latest=True)
    assert list(meta.columns) == list(COLUMNS)
    assert meta["id"].tolist() == ["a", "b", "c", "d", "e"]
    by_id = meta.set_index("id")
    assert by_id["run_id"].to_dict() == {"a": OLD_RUN, "b": OLD_RUN, "c": RUN1, "d": RUN2,
                                         "e": RUN2}
    assert by_id["status"].to_dict() == {"a": "ok", "b": "ok", "c": "ok", "d": "ok",
                                         "e": "skipped"}  # e: nothing but a skipped row
    # The README's example: the item that failed and was redone is no longer listed.
    assert meta[meta.status == "failed"].empty
    every = read_metadata_frame(runs)
    assert every[every.status == "failed"]["id"].tolist() == ["d"]


def test_latest_with_a_few_columns_still_picks_by_id_status_and_time(runs):
    meta = read_metadata_frame(runs, latest=True, columns=["label", "status"])
    assert list(meta.columns) == ["label", "status"]
    assert meta["status"].tolist() == ["ok", "ok", "ok", "ok", "skipped"]
    assert meta["label"].tolist()[2:4] == ["cats", "dogs"]


def test_a_folder_without_run_metadata_or_an_unknown_column_is_one_line(runs, tmp_path):
    with pytest.raises(InputError, match="no metadata column 'lable' \\(did you mean 'label'"):
        read_metadata_frame(runs, columns=["id", "lable"])
    with pytest.raises(InputError, match=f"^{tmp_path}: no run metadata .*when it ends\\)$"):
        read_metadata_frame(tmp_path)
    with pytest.raises(InputError, match="give the run's output folder, not its metadata"):
        read_metadata_frame(runs / "metadata")


# ---- config dataclasses are checked by type ---------------------------------------------------


@pytest.mark.parametrize(("build", "setting"), [
    (lambda: StylizeConfig(seed=1.5), "seed"),
    (lambda: StylizeConfig(size="128"), "size"),
    (lambda: StylizeConfig(size=128.0), "size"),
    (lambda: StylizeConfig(seed="1"), "seed"),
    (lambda: StylizeConfig(seed=None), "seed"),
    (lambda: StylizeConfig(render=RenderConfig(preserve_color="no")), "preserve_color"),
    (lambda: StylizeConfig(render=RenderConfig(levels="3")), "levels"),
    (lambda: StylizeConfig(render=RenderConfig(style_strength="0.5")), "style_strength"),
    (lambda: StylizeConfig(warp=WarpConfig(strength="1")), "warp_strength"),
    (lambda: StylizeConfig(render=RenderConfig(style_size="big")), "style_size"),
    (lambda: StylizeConfig(render=RenderConfig(style_size=64.0)), "style_size"),
    (lambda: StylizeConfig(render=RenderConfig(iterations="100")), "iterations"),
    (lambda: StylizeConfig(render=RenderConfig(iterations=(100, 60.5))), "iterations"),
    (lambda: StylizeConfig(side_outputs=1), "side_outputs"),
    (lambda: StylizeConfig(device=0), "device"),
    (lambda: StylizeConfig(warp=WarpConfig(checkpoint=3)), "warpnet_checkpoint"),
    (lambda: StylizeConfig(render={"renderer": "adain"}), "render"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_setting_of_the_wrong_type_is_one_line_naming_it(build, setting):
    with pytest.raises(ConfigError) as refused:
        validate(build())
    message = str(refused.value)
    assert message.startswith(f"{setting} must be "), message
    assert "outside" not in message and "\n" not in message
    assert refused.value.setting == setting


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_every_setting_is_type_checked(name):
    """A value no field takes (an arbitrary object) is refused for every flat setting."""
    config = StylizeConfig()
    stage, attr = OVERRIDES[name]
    setattr(config if stage is None else getattr(config, stage), attr, object())
    with pytest.raises(ConfigError, match=f"^{name} must be .*, got <object object at"):
        validate(config)


def test_equivalent_types_are_taken_as_the_declared_ones(tmp_path):
    config = StylizeConfig(
        size=np.int64(64), seed=np.uint8(3), device=torch.device("cpu"),
        warp=WarpConfig(strength=np.float32(0.5), checkpoint=tmp_path / "w.pt", min_confidence=0),
        render=RenderConfig(iterations=[30, np.int32(20)], style_size=np.int16(48)))
    validate(config)
    assert (config.size, config.seed, config.device) == (64, 3, "cpu")
    assert type(config.size) is int and type(config.seed) is int
    assert config.warp.strength == 0.5 and type(config.warp.strength) is float
    assert config.warp.checkpoint == str(tmp_path / "w.pt")
    assert config.render.iterations == (30, 20) and config.render.style_size == 48
    assert type(config.warp.min_confidence) is float
    json.dumps(to_params(config))  # the params column: plain JSON (numpy scalars are not)
    single = StylizeConfig(render=RenderConfig(iterations=100))
    validate(single)
    assert single.render.iterations == (100,)  # one count for every level, as --iterations 100


def test_with_overrides_still_converts_strings_and_types_the_style_size():
    config = with_overrides(StylizeConfig(), {"size": "96", "preserve_color": "no",
                                              "style_size": "256", "iterations": "10,5",
                                              "device": "cpu"})
    assert (config.size, config.render.preserve_color, config.render.iterations) == (
        96, False, (10, 5))
    assert config.render.style_size == 256  # was kept as the string "256"
    assert with_overrides(StylizeConfig(), {"style_size": 96.0}).render.style_size == 96
    with pytest.raises(ConfigError, match="^style_size: expected an integer, got 'big'$"):
        with_overrides(StylizeConfig(), {"style_size": "big"})


def test_stylize_takes_a_torch_device_and_refuses_a_string_flag():
    from lwst.stylize import stylize

    content = resize_longest(read_image(EXAMPLES / "cat.jpg"), 32)
    texture = resize_longest(read_image(STYLES[0]), 32)
    config = StylizeConfig(size=32, device=torch.device("cpu"), warp=WarpConfig(method="none"),
                           render=RenderConfig(renderer="adain", measure_losses=False))
    result = stylize(content, None, texture, config)
    assert result.image.shape[-2:] == content.shape[-2:] and config.device == "cpu"
    config.render.preserve_color = "no"  # was taken as True
    with pytest.raises(ConfigError, match="^preserve_color must be True or False, got 'no'"):
        stylize(content, None, texture, config)


# ---- RandomStylize's arguments ----------------------------------------------------------------


def _coffee(side: int = 32) -> torch.Tensor:
    return resize_longest(read_image(EXAMPLES / "coffee.jpg"), side)[0]


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"alpha": (0.2, 0.4, 0.6)}, "alpha"),
    ({"alpha": "0.5"}, "alpha"),
    ({"alpha": None}, "alpha"),
    ({"alpha": (0.8, 0.2)}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"p": "0.5"}, "p"),
    ({"p": 1.5}, "p"),
    ({"device": "gpu"}, "device"),
    ({"device": "mps"}, "device"),
    ({"device": 0}, "device"),
    ({"cache_bytes": -1}, "cache_bytes"),
    ({"cache_bytes": 1.5}, "cache_bytes"),
    ({"styles": None}, "styles"),
    ({"styles": 3}, "styles"),
    ({"styles": np.zeros((32, 32, 3), np.uint8)}, "styles"),
    ({"styles": [STYLES[0], 3]}, "styles[1]"),
    ({"style_size": 64.0}, "style_size"),
    ({"seed": "a"}, "seed"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"seed": 1.0}, "seed"),
    ({"preserve_color": "no"}, "preserve_color"),
    ({"vgg_weights": "imagenet"}, "vgg_weights"),
    ({"renderer": "cyclegan"}, "renderer"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_bad_argument_is_one_input_error_naming_it(kwargs, argument):
    from lwst.transforms import RandomStylize

    arguments = {"styles": STYLES, **kwargs}
    with pytest.raises(InputError) as refused:
        RandomStylize(**arguments)
    message = str(refused.value)
    assert message.startswith(f"RandomStylize: {argument} "), message
    assert "\n" not in message and "ByteLRU" not in message and "unpack" not in message
    assert "outside the supported range" not in message  # style_size=64.0 said so
    if isinstance(kwargs.get("device"), str):  # a name: what stylize raises for it
        assert isinstance(refused.value, DeviceError)


def test_numbers_of_any_numeric_type_are_taken_as_plain_ones():
    from lwst.transforms import RandomStylize

    for alpha in (np.float32(0.5), torch.tensor(0.5), np.array(0.5), (np.float64(0.5),
                                                                         torch.tensor(0.5))):
        assert RandomStylize(STYLES, alpha=alpha).alpha == (0.5, 0.5)
    transform = RandomStylize(STYLES, alpha=[0, 1], p=torch.tensor(1.0), seed=np.int64(3),
                              device=torch.device("cpu"), style_size=np.int64(32),
                              cache_bytes=np.int64(2**20))
    assert transform.alpha == (0.0, 1.0) and transform.p == 1.0
    assert type(transform.seed) is int and transform.device == "cpu"
    assert type(transform.style_size) is int and transform._cache.max_bytes == 2**20
    image = _coffee()
    assert torch.equal(transform(image), RandomStylize(STYLES, alpha=(0.0, 1.0), p=1.0, seed=3,
                                                       style_size=32)(image))


def test_a_pil_style_is_one_style_alone_or_in_a_list():
    from lwst.transforms import RandomStylize

    with Image.open(STYLES[0]) as opened:
        style = opened.convert("RGB").resize((48, 32))
    image = _coffee()
    alone = RandomStylize(style, p=1.0, seed=0)
    assert len(alone.styles) == 1
    out = alone(image)
    assert out.shape == image.shape and (out - image).abs().mean() > 0.01
    listed = pickle.loads(pickle.dumps(RandomStylize([style.convert("RGBA"), STYLES[1]], p=1.0,
                                                     seed=0)))
    assert len(listed.styles) == 2 and listed(image).shape == image.shape
    with pytest.raises(InputError, match=r"^RandomStylize: styles\[0\] \(a PIL image\) is 4x4"):
        RandomStylize([style.resize((4, 4))])


def test_a_missing_style_path_is_an_image_input_error_naming_it(tmp_path):
    from lwst.transforms import RandomStylize

    for given in (tmp_path / "nope", [STYLES[0], tmp_path / "nope.jpg"]):
        with pytest.raises(ImageInputError, match=f"{tmp_path}/nope.* no such file"):
            RandomStylize(given)
    with pytest.raises(ImageInputError, match=r"styles\[1\] .*: is a folder"):
        RandomStylize([STYLES[0], tmp_path])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_the_same_device_error_in_stylize_and_random_stylize():
    from lwst.stylize import stylize
    from lwst.transforms import RandomStylize

    image = _coffee()
    with pytest.raises(DeviceError, match="^device 'cuda': torch sees no CUDA device"):
        stylize(image, None, None, StylizeConfig(size=32, device="cuda"))
    transform = RandomStylize(STYLES, device="cuda", p=1.0)  # asks nothing of CUDA yet
    assert not torch.cuda.is_initialized()
    with pytest.raises(DeviceError, match="^RandomStylize: device 'cuda': torch sees no CUDA"):
        transform(image)
