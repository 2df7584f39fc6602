"""One typed item per manifest row (issue 12, item 2): resolved once, grouped by everything
that changes its result, with the item's own seed reaching every estimator."""

from __future__ import annotations

import pytest
import torch

from lwst.config import StylizeConfig
from lwst.item import Item, resolve_items
from lwst.manifest import ManifestItem


def _entries(*overrides: dict) -> list[ManifestItem]:
    return [ManifestItem(f"i{k}", f"/in/c{k}.png", "/in/g.png", "/in/t.png", dict(o))
            for k, o in enumerate(overrides)]


def test_a_row_resolves_to_its_own_configuration_over_the_runs():
    items, refused = resolve_items(_entries({}, {"size": 64, "warp_precision": "bfloat16"}),
                                   {"size": 128, "renderer": "adain"}, "/out")
    assert refused == []
    assert [i.config.size for i in items] == [128, 64]
    assert [i.config.warp.precision for i in items] == ["float32", "bfloat16"]
    assert all(i.config.render.renderer == "adain" for i in items)
    assert items[1].params()["warp_precision"] == "bfloat16"  # params are what is applied
    assert items[0].outputs.image == "/out/images/i0.png"
    assert items[0].config is not StylizeConfig()  # resolved, not the defaults


def test_rows_with_the_same_overrides_share_one_configuration():
    items, _ = resolve_items(_entries({"seed": 3}, {"seed": 3}, {}), {}, "/out")
    assert items[0].config is items[1].config and items[2].config is not items[0].config


def test_a_row_whose_settings_clash_with_the_runs_is_refused_with_its_reason():
    items, refused = resolve_items(_entries({}, {"iterations": [5, 5, 5]}), {"levels": 2},
                                   "/out")
    assert [i.id for i in items] == ["i0"]
    assert [r.entry.id for r in refused] == ["i1"]
    assert "iterations has 3 counts for levels 2" in refused[0].reason


def test_stages_follow_the_configuration():
    items, _ = resolve_items(_entries({}, {"warp_strength": 0}, {"warp_method": "none"}), {},
                             "/out")
    assert [i.warps for i in items] == [True, False, False]
    bare = Item("b", "/in/c.png", None, None, items[0].config, items[0].outputs)
    assert not bare.warps and not bare.renders


@pytest.mark.parametrize("setting", [{"warp_precision": "bfloat16"}, {"seed": 1},
                                     {"style_strength": 0.5}, {"warp_fallback": "none"},
                                     {"inpaint": "ns"}, {"min_warp_confidence": 0.5}])
def test_items_that_differ_in_any_setting_never_share_a_batch(setting):
    from flows.work_plan import work_units

    for renderer in ("adain", "gatys"):
        items, _ = resolve_items(_entries({}, {}, setting, {}), {"renderer": renderer,
                                                              "warp_method": "learned"}, "/o")
        units = list(work_units(items, warp_batch_size=8, render_batch_size=8))
        together = [sorted(i.id for i in unit) for _, unit in units]
        assert ["i2"] in together or all("i2" not in group or len(group) == 1
                                         for group in together), (renderer, together)
        assert any(group == ["i0", "i1", "i3"] for group in together), (renderer, together)


def test_work_units_kinds_and_sizes():
    from flows.work_plan import work_units

    items, _ = resolve_items(_entries(*[{}] * 5, *[{"renderer": "gatys"}] * 3,
                                      {"renderer": "gatys", "warp_method": "none"}),
                             {"renderer": "adain", "warp_method": "learned"}, "/o")
    units = [(kind, [i.id for i in unit]) for kind, unit in work_units(items, 2, 4)]
    assert units == [("chunk", ["i0", "i1", "i2", "i3"]), ("chunk", ["i4"]),
                     ("warp-batch", ["i5", "i6"]), ("item", ["i7"]), ("item", ["i8"])]
    off = [(kind, len(unit)) for kind, unit in work_units(items, 1, 1)]
    assert off == [("item", 1)] * 9  # batching off: one task per item


def test_opencv_seed_takes_every_item_seed():
    from lwst.config import SEED_RANGE
    from lwst.estimators.parametric_fit import opencv_seed

    seeds = [opencv_seed(s) for s in (0, 1, 2**31, 2**32 + 5, SEED_RANGE[1])]
    assert all(0 <= s < 2**31 for s in seeds) and len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("method", ["affine", "tps"])
def test_the_parametric_estimators_draw_with_the_items_seed(method, monkeypatch):
    """RANSAC once ran with seed 0 whatever the item said: record what reaches OpenCV."""
    import cv2

    from lwst.config import WarpConfig
    from lwst.vgg import load_vgg19
    from lwst.warping import estimate_warp

    seen: list[int] = []
    real = cv2.setRNGSeed
    monkeypatch.setattr(cv2, "setRNGSeed", lambda s: (seen.append(s), real(s)))
    gen = torch.Generator().manual_seed(0)
    content, exemplar = torch.rand(1, 3, 64, 64, generator=gen), torch.rand(1, 3, 64, 64,
                                                                         generator=gen)
    vgg = load_vgg19("random", device="cpu")
    estimate_warp(content, exemplar, WarpConfig(method=method, fallback="none"), vgg,
                  seed=2**40 + 7)
    from lwst.estimators.parametric_fit import opencv_seed

    assert seen and set(seen) == {opencv_seed(2**40 + 7)}


def test_the_run_log_names_the_first_failures_then_counts():
    import logging

    from flows.run_report import FAILURES_LOGGED, FailureLog

    class Lines(logging.Handler):  # importing Prefect re-configures logging: no caplog
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    logger, handler = logging.getLogger("lwst-test-failures"), Lines()
    logger.addHandler(handler)
    try:
        log = FailureLog(logger)
        rows = [{"id": f"f{k}", "status": "failed", "error": f"reason {k}"}
                for k in range(FAILURES_LOGGED + 5)]
        log.note([{"id": "good", "status": "ok", "error": None}, *rows[:3]])
        log.note(rows[3:])
    finally:
        logger.removeHandler(handler)
    lines = handler.lines
    assert lines[:2] == ["item f0 failed: reason 0", "item f1 failed: reason 1"]
    assert len(lines) == FAILURES_LOGGED + 1 and "counted, not logged" in lines[-1]
    assert log.count == FAILURES_LOGGED + 5
