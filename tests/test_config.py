"""Flat overrides (CLI, manifest columns, flow parameters) map onto the typed configs."""

import json

import pytest

from lwst.config import OVERRIDES, StylizeConfig, to_params, with_overrides
from lwst.metadata import COLUMNS, empty_record, to_json, to_table


def test_overrides_coerce_strings_from_csv_rows():
    config = with_overrides(StylizeConfig(), {"size": "256", "warp_strength": "0.5",
                                              "preserve_color": "true", "iterations": "10,5",
                                              "seed": 3.0, "style_weight": None})
    assert config.size == 256 and config.warp.strength == 0.5
    assert config.render.preserve_color is True and config.render.iterations == (10, 5)
    assert config.seed == 3
    assert config.render.style_weight == StylizeConfig().render.style_weight
    assert StylizeConfig().size == 512  # the default object is not mutated


@pytest.mark.parametrize("overrides", [{"size": "1.5"}, {"warp_method": "magic"},
                                       {"warp_strength": 9}, {"preserve_color": "maybe"},
                                       {"warp_precision": "float16"},
                                       {"render_precision": "half"}])
def test_bad_values_are_refused(overrides):
    with pytest.raises(ValueError):
        with_overrides(StylizeConfig(), overrides)


def test_unknown_override_is_one_line_with_the_closest_name():
    with pytest.raises(ValueError, match=r"^unknown option 'sise' \(did you mean 'size'\?\)$"):
        with_overrides(StylizeConfig(), {"sise": 128})
    with pytest.raises(ValueError, match=r"^unknown option 'colour' \(known: size, "):
        with_overrides(StylizeConfig(), {"colour": 1})


def test_params_round_trip_through_json():
    params = to_params(StylizeConfig())
    assert set(params) == set(OVERRIDES)
    assert with_overrides(StylizeConfig(), json.loads(json.dumps(params))) == StylizeConfig()


def test_metadata_record_json_and_arrow_agree():
    record = empty_record("a", "run1")
    record.update(status="failed", error="x: no such file", width=3)
    assert list(json.loads(to_json(record))) == list(COLUMNS)
    table = to_table([record])
    assert table.column_names == list(COLUMNS) and table.num_rows == 1
    assert table.column("width").to_pylist() == [3]
