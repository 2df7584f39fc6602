"""Warp estimators other than the network: optimisation, parametric fit, OpenCV DIS.

Each recovers a warp whose ground truth is known, on a real photograph from ``examples/``
(VGG features need real structure) at 128 px to stay fast on two cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lwst.config import WarpConfig
from lwst.correlation import alignment_loss, analysis_view
from lwst.estimators.dis import dis_flow
from lwst.estimators.optim import optimise_warp, smoothness, upsample_grid
from lwst.estimators.parametric_fit import FeatureMatches, fit_parametric_warp, robust_affine
from lwst.flow import end_point_error, hole_mask, warp_image
from lwst.image_io import read_image
from lwst.parametric import (
    SyntheticWarpRanges,
    affine_flow,
    pixel_affine,
    random_warp_flow,
    rotation_matrix,
)
from lwst.vgg import WeightsUnavailableError, load_vgg19

SIZE = 128
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sailboat.jpg"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The estimators run many small ops: on a shared 2-core machine one thread is several times
    faster than two that wait for each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def vgg():
    try:
        return load_vgg19("auto")
    except WeightsUnavailableError as exc:
        pytest.skip(f"real VGG-19 weights unavailable: {exc}")


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    if not EXAMPLE.is_file():
        pytest.skip(f"{EXAMPLE} is missing")
    return analysis_view(read_image(str(EXAMPLE)), SIZE)


def epe(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return float(end_point_error(pred, truth, ~hole_mask(truth))[0])


def test_upsampled_grid_spans_the_image_and_smoothness_ignores_constants():
    grid = torch.zeros(1, 2, 3, 3)
    grid[:, 0, :, 2] = 4.0  # right column of control points moves 4 px right
    flow = upsample_grid(grid, 9)
    assert flow.shape == (1, 2, 9, 9)
    assert flow[0, 0, :, 0].abs().max() == 0 and torch.allclose(flow[0, 0, :, 8], torch.tensor(4.0))
    torch.testing.assert_close(flow[0, 0, 0, 6], torch.tensor(2.0))  # linear in between
    assert smoothness(torch.full((1, 2, 4, 4), 7.0), spacing=10.0) == 0
    assert smoothness(grid, spacing=4.0) > 0


def test_dis_recovers_a_small_translation(photo):
    truth = torch.zeros(1, 2, SIZE, SIZE)
    truth[:, 0], truth[:, 1] = 3.0, -2.0
    flow = dis_flow(photo, warp_image(photo, truth))
    assert flow.shape == truth.shape
    inner = (..., slice(8, -8), slice(8, -8))  # away from the zero-padded border
    assert float(end_point_error(flow[inner], truth[inner])[0]) < 0.5


def test_parametric_fit_recovers_a_known_affine(vgg, photo):
    theta = rotation_matrix(12.0, scale=0.85)
    theta[0, :, 2] = torch.tensor([0.15, -0.1])  # ~10 px and ~6 px at 128
    truth = affine_flow(pixel_affine(theta, SIZE, SIZE), SIZE, SIZE)
    exemplar = warp_image(photo, truth)
    identity = epe(torch.zeros_like(truth), truth)
    affine = epe(fit_parametric_warp(photo, exemplar, vgg, "affine"), truth)
    tps = epe(fit_parametric_warp(photo, exemplar, vgg, "tps"), truth)
    assert identity > 10
    assert affine < 2.0, (affine, identity)
    assert tps < 3.0, (tps, identity)


def test_parametric_fit_without_structure_falls_back_to_identity(vgg):
    flat = torch.full((1, 3, SIZE, SIZE), 0.5)
    assert fit_parametric_warp(flat, flat, vgg, "tps").abs().max() < 1e-4


def test_robust_affine_refuses_implausible_fits():
    points = np.stack(np.meshgrid(np.arange(0, 64, 8.0), np.arange(0, 64, 8.0)), -1).reshape(-1, 2)
    gentle = np.array([[0.9, 0.1, 3.0], [-0.1, 0.9, 0.0]])
    collapse = np.array([[0.05, 0.0, 30.0], [0.0, 0.05, 30.0]])
    far = np.array([[1.0, 0.0, 40.0], [0.0, 1.0, -40.0]])  # most of the output outside content
    for matrix, expected in ((gentle, gentle), (collapse, np.eye(2, 3)), (far, np.eye(2, 3))):
        content = (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
        fit = robust_affine(FeatureMatches(points.astype(np.float32), content), 64)
        np.testing.assert_allclose(fit.matrix, expected, atol=1e-3)


def test_optimisation_recovers_a_synthetic_warp_better_than_identity(vgg, photo):
    truth = random_warp_flow(1, SIZE, SIZE, torch.Generator().manual_seed(3), SyntheticWarpRanges())
    exemplar = warp_image(photo, truth)
    config = WarpConfig(method="optim", optim_steps=40)
    flow = optimise_warp(photo, exemplar, vgg, config, seed=0)
    assert flow.shape == truth.shape and not flow.requires_grad
    identity, optimised = epe(torch.zeros_like(truth), truth), epe(flow, truth)
    assert optimised < 0.25 * identity, (optimised, identity)
    with torch.no_grad():
        before = float(alignment_loss(vgg, photo, exemplar)[0])
        after = float(alignment_loss(vgg, photo, exemplar, flow)[0])
    assert after < before - 0.5, (before, after)
