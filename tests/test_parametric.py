"""Affine and TPS warps as dense backward flows, the one affine convention and fit, the
pixel <-> normalised conversions, and the synthetic warp generator."""

import math

import pytest
import torch

from lwst.flow import base_grid, normalised_to_pixel, pixel_to_normalised, warp_image
from lwst.parametric import (
    SyntheticWarpRanges,
    affine_flow,
    affine_part,
    compose_affine,
    control_grid,
    invert_affine,
    normalised_grid,
    pixel_affine,
    random_warp_flow,
    rotation_matrix,
    tps_flow,
    tps_points,
)


def test_identity_affine_is_zero_flow():
    eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert affine_flow(eye, 20, 30).abs().max() < 1e-5


def test_translation_affine_in_pixels():
    # +0.5 in normalised x over a 21-px-wide image is 0.5 * (21 - 1) / 2 = 5 px.
    shift = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
    pixels = pixel_affine(shift, 11, 21)
    torch.testing.assert_close(pixels, torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, 0.0]]]))
    flow = affine_flow(pixels, 11, 21)
    torch.testing.assert_close(flow[:, 0], torch.full((1, 11, 21), 5.0))
    torch.testing.assert_close(flow[:, 1], torch.zeros(1, 11, 21))


def test_rotation_moves_corner_as_expected():
    flow = affine_flow(pixel_affine(rotation_matrix(90.0), 33, 33), 33, 33)
    # Output (x=32, y=16) (right middle) samples the content at the bottom middle (16, 32).
    assert torch.allclose(flow[0, :, 16, 32], torch.tensor([-16.0, 16.0]), atol=1e-3)


def test_tps_interpolates_control_points_exactly():
    gen = torch.Generator().manual_seed(1)
    src = control_grid(3).contiguous()
    dst = (src + 0.1 * torch.rand(src.shape, generator=gen)).contiguous()
    torch.testing.assert_close(tps_points(src, dst, src), dst, atol=1e-5, rtol=0)


def test_tps_flow_with_unmoved_points_is_identity():
    src = control_grid(3).contiguous()
    assert tps_flow(src, src.clone(), 16, 16).abs().max() < 1e-4


def test_random_warp_flow_is_seeded_and_within_ranges():
    a = random_warp_flow(3, 64, 64, torch.Generator().manual_seed(7))
    b = random_warp_flow(3, 64, 64, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    # Translation up to 0.4 * 32 px plus scale/rotation/TPS: never more than ~the image size.
    assert a.abs().max() < 64
    assert a.abs().mean() > 1.0
    none = SyntheticWarpRanges(
        scale=(1, 1), rotation_deg=0, shear_deg=0, translation=0, tps_jitter=0
    )
    assert random_warp_flow(2, 32, 32, torch.Generator().manual_seed(0), none).abs().max() < 1e-4


def test_affine_flow_warps_an_image_like_grid_sample_affine():
    image = torch.rand(1, 3, 24, 24)
    theta = rotation_matrix(10.0, scale=0.9)
    ours = warp_image(image, affine_flow(pixel_affine(theta, 24, 24), 24, 24))
    grid = torch.nn.functional.affine_grid(theta, (1, 3, 24, 24), align_corners=True)
    ref = torch.nn.functional.grid_sample(image, grid, align_corners=True)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    assert math.isfinite(float(ours.sum()))


def test_pixel_and_normalised_coordinates_convert_both_ways():
    height, width = 5, 9
    pixels = base_grid(height, width).flatten(2).mT
    normalised = pixel_to_normalised(pixels, height, width)
    torch.testing.assert_close(normalised, normalised_grid(height, width), rtol=0, atol=0)
    assert normalised[0, 0].tolist() == [-1.0, -1.0] and normalised[0, -1].tolist() == [1.0, 1.0]
    torch.testing.assert_close(normalised_to_pixel(normalised, height, width), pixels)
    step = torch.tensor([[4.0, 2.0]])  # half of each side in pixels is one normalised unit
    torch.testing.assert_close(
        pixel_to_normalised(step, height, width, displacement=True), torch.tensor([[1.0, 1.0]]))
    assert pixel_to_normalised(torch.zeros(1, 2), 1, 1).tolist() == [[-1.0, -1.0]]
    coarse = base_grid(3, 5, span=(height, width))  # a 3x5 grid laid corner to corner on 5x9
    assert coarse[0, :, -1, -1].tolist() == [width - 1, height - 1]


def test_affine_part_recovers_an_affine_through_outliers():
    size = 48
    matrix = torch.tensor([[[1.1, 0.15, -4.0], [-0.1, 0.9, 6.0]]])
    flow = affine_flow(matrix, size, size)
    torch.testing.assert_close(affine_part(flow), matrix, atol=1e-3, rtol=0)
    torch.testing.assert_close(affine_part(flow, grid=16), matrix, atol=1e-3, rtol=0)
    corrupted = flow.clone()
    corrupted[..., :12, :] += 40.0  # a quarter of the vectors point far away
    robust = affine_part(corrupted, iters=8, scale=2.0)
    plain = affine_part(corrupted, iters=1)  # one unweighted round: least squares
    assert float((robust - matrix).abs().max()) < 0.25  # px; Cauchy weights never reach 0
    assert float((plain - matrix).abs().max()) > 1.0
    confidence = torch.ones(1, 1, size, size)
    confidence[..., :12, :] = 0.0  # the same outliers weighted out from the start
    trusted = affine_part(corrupted, confidence, iters=1)
    torch.testing.assert_close(trusted, matrix, atol=1e-3, rtol=0)


def test_inverse_and_composition_follow_the_convention():
    matrix = torch.tensor([[[0.8, -0.3, 10.0], [0.25, 1.2, -3.0]]])
    flow = affine_flow(matrix, 20, 30)
    torch.testing.assert_close(compose_affine(matrix, torch.zeros_like(flow)), flow)
    # x -> A^-1 (A x + t - x + x) = x: the inverse after the affine's own flow is no warp.
    back = compose_affine(invert_affine(matrix), flow)
    assert float(back.abs().max()) < 1e-4
    with pytest.raises(torch.linalg.LinAlgError):
        invert_affine(torch.zeros(1, 2, 3))
