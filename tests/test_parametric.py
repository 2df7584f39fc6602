"""Affine and TPS warps as dense backward flows, and the synthetic warp generator."""

import math

import torch

from lwst.flow import warp_image
from lwst.parametric import (
    SyntheticWarpRanges,
    affine_flow,
    control_grid,
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
    flow = affine_flow(shift, 11, 21)
    torch.testing.assert_close(flow[:, 0], torch.full((1, 11, 21), 5.0))
    torch.testing.assert_close(flow[:, 1], torch.zeros(1, 11, 21))


def test_rotation_moves_corner_as_expected():
    flow = affine_flow(rotation_matrix(90.0), 33, 33)
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
    ours = warp_image(image, affine_flow(theta, 24, 24))
    grid = torch.nn.functional.affine_grid(theta, (1, 3, 24, 24), align_corners=True)
    ref = torch.nn.functional.grid_sample(image, grid, align_corners=True)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    assert math.isfinite(float(ours.sum()))
