"""Inpainting fills exactly the holes, with plausible nearby colours."""

import pytest
import torch

from lwst.flow import hole_mask, warp_image
from lwst.inpaint import inpaint_holes


def test_fills_exactly_the_holes_with_nearby_colour():
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0] = 0.8  # reddish everywhere
    image[:, 1] = torch.linspace(0, 1, 32).view(1, 32, 1)
    holes = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    holes[..., 10:16, 12:20] = True
    damaged = image.masked_fill(holes, 0.0)
    result = inpaint_holes(damaged, holes)
    assert result.inpainted_frac == pytest.approx(48 / 1024)
    torch.testing.assert_close(
        result.image[~holes.expand_as(image)], damaged[~holes.expand_as(image)]
    )
    filled = result.image[:, :, 10:16, 12:20]
    assert (filled[:, 0] - 0.8).abs().max() < 0.02  # red channel restored from its neighbours
    assert (filled - image[:, :, 10:16, 12:20]).abs().mean() < 0.05


def test_warp_holes_are_filled_and_reported():
    image = torch.rand(1, 3, 24, 24)
    flow = torch.zeros(1, 2, 24, 24)
    flow[:, 0] = -6.0  # samples left of the content for the first 6 columns
    holes = hole_mask(flow)
    warped = warp_image(image, flow)
    result = inpaint_holes(warped, holes, method="ns")
    assert result.inpainted_frac == pytest.approx(6 / 24)
    assert result.image[..., :6].mean() > 0.2  # no black band left


def test_no_holes_is_a_no_op_and_unknown_method_refused():
    image = torch.rand(1, 3, 8, 8)
    none = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    assert inpaint_holes(image, none).image is image
    with pytest.raises(ValueError, match="unknown inpainting"):
        inpaint_holes(image, none, method="magic")
