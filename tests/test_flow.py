"""Backward-flow conventions: a known pattern warped by a known flow lands where it should."""

import math

import numpy as np
import pytest
import torch

from lwst.flow import (
    end_point_error,
    flow_picture,
    flow_stats,
    hole_mask,
    read_flo,
    resize_flow,
    warp_image,
    write_flo,
)


def square_image(h=32, w=40, top=8, left=10, size=6):
    image = torch.zeros(1, 3, h, w)
    image[:, :, top : top + size, left : left + size] = 1.0
    return image


def constant_flow(u, v, h=32, w=40):
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = u, v
    return flow


def test_integer_translation_moves_square_opposite_to_flow():
    # warped(x, y) = content(x + 3, y - 2): the square moves 3 left and 2 down.
    warped = warp_image(square_image(), constant_flow(3.0, -2.0))
    expected = square_image(top=10, left=7)
    torch.testing.assert_close(warped, expected)


def test_subpixel_flow_interpolates_bilinearly():
    image = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 1, 4, 10).contiguous()
    warped = warp_image(image, constant_flow(0.25, 0.0, 4, 10))
    torch.testing.assert_close(warped[0, 0, 0, :9], torch.arange(9.0) + 0.25)


def test_hole_mask_marks_exactly_samples_from_outside():
    holes = hole_mask(constant_flow(5.0, 0.0, 8, 12))
    # Columns x >= 12 - 5 sample beyond the right edge (x + 5 > 11.5).
    assert holes[0, 0, :, 7:].all() and not holes[0, 0, :, :7].any()


def test_flo_round_trip(tmp_path):
    flow = torch.randn(1, 2, 17, 23) * 5
    path = tmp_path / "f.flo"
    write_flo(flow, path)
    assert path.read_bytes()[:4] == b"PIEH"
    torch.testing.assert_close(read_flo(path), flow)
    assert not list(tmp_path.glob(".*tmp"))


def test_read_flo_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.flo"
    bad.write_bytes(b"not a flow")
    with pytest.raises(ValueError, match="not a Middlebury"):
        read_flo(bad)


def test_resize_flow_rescales_units_and_keeps_the_mapping():
    flow = constant_flow(4.0, -2.0, 17, 33)
    big = resize_flow(flow, 33, 65)
    torch.testing.assert_close(big[:, 0], torch.full((1, 33, 65), 8.0))
    torch.testing.assert_close(big[:, 1], torch.full((1, 33, 65), -4.0))


def test_flow_stats_in_pixels_and_diagonal_fraction():
    stats = flow_stats(constant_flow(3.0, 4.0, 30, 40))
    assert stats.mean_px == pytest.approx(5.0)
    assert stats.max_px == pytest.approx(5.0)
    assert stats.p95_px == pytest.approx(5.0)
    assert stats.mean_frac == pytest.approx(5.0 / math.hypot(30, 40))


def test_end_point_error_counts_only_valid_pixels():
    pred = constant_flow(1.0, 0.0, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    valid = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    valid[..., :2, :] = True
    pred[..., 2:, :] = 100.0
    assert float(end_point_error(pred, target, valid)) == pytest.approx(1.0)


def test_flow_picture_is_an_rgb_image():
    picture = flow_picture(constant_flow(3.0, 0.0, 8, 8))
    assert picture.shape == (1, 3, 8, 8)
    assert float(picture.min()) >= 0.0 and float(picture.max()) <= 1.0
    assert np.unique(picture.numpy().reshape(3, -1), axis=1).shape[1] == 1


def test_samples_within_half_a_pixel_of_the_edge_are_not_darkened():
    """A sample at x = -0.4 is inside (`hole_mask`), so it is not inpainted: with border
    padding it keeps the edge's value; with zeros it mixes in 40 % black (the dark seam the
    warped content showed along every hole at the image's side)."""
    image = torch.full((1, 3, 8, 12), 0.8)
    flow = constant_flow(-0.4, 0.0, 8, 12)
    assert not hole_mask(flow).any()
    torch.testing.assert_close(warp_image(image, flow, padding="border"), image)
    assert warp_image(image, flow)[0, 0, 0, 0] == pytest.approx(0.8 * 0.6)


def test_warped_content_has_no_dark_seam_along_its_holes():
    """End to end through `apply_geometry`: a uniform grey content pulled 3.3 px from beyond
    the left edge comes out uniform (the three hole columns inpainted, the fringe column not
    darkened)."""
    from lwst.config import StylizeConfig, WarpConfig
    from lwst.stylize import apply_geometry
    from lwst.warping import WarpEstimate

    content = torch.full((1, 3, 32, 40), 0.6)
    estimate = WarpEstimate(flow=constant_flow(-3.3, 0.0, 32, 40), loss_before=0.0,
                            loss_after=0.0, seconds=0.0)
    config = StylizeConfig(warp=WarpConfig(method="none"))
    outcome = apply_geometry(content, None, config, vgg=None, estimate=estimate)
    assert outcome.inpainted_frac == pytest.approx(3 / 40)
    assert float((outcome.warped - 0.6).abs().max()) < 2 / 255
