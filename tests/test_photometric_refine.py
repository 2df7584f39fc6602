"""DIS refinement of the warp where the pair is a pixel-for-pixel match (issue 11, item 6)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lwst.cli import main
from lwst.config import WarpConfig
from lwst.flow import end_point_error
from lwst.parametric import SyntheticWarpRanges
from lwst.photometric_refine import MAX_RESIDUAL, photometric_residual
from lwst.warping import estimate_warp

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def small_ranges() -> SyntheticWarpRanges:
    """The training warp's ranges scaled by 0.1: rotation / shear 1.5 deg, scale 0.975-1.025."""
    base = SyntheticWarpRanges()
    return dataclasses.replace(base, scale=(0.975, 1.025), rotation_deg=1.5, shear_deg=1.5,
                               translation=0.04, tps_jitter=0.01)


def pair_of(tier: str, ranges: SyntheticWarpRanges | None = None,
            name: str = "astronaut.jpg"):
    from lwst.correlation import analysis_view
    from lwst.image_io import read_image
    from lwst.warpnet.synthetic import make_pair

    image = analysis_view(read_image(str(EXAMPLES / name)))
    kwargs = {"ranges": ranges} if ranges is not None else {}
    return make_pair(image, torch.Generator().manual_seed(5), tier, **kwargs)


@pytest.fixture(scope="module")
def vgg():
    from lwst.vgg import load_vgg19

    return load_vgg19("auto")


def epe(flow, pair) -> float:
    return float(end_point_error(flow, pair.flow, pair.valid))


def test_dis_refines_a_small_pure_geometry_warp_to_sub_pixel(vgg):
    """A deformed copy of a photo: the network alone is ~0.4 px off; DIS started from its
    field matches pixel for pixel, is kept, and at least a third more precise."""
    pair = pair_of("geometry", small_ranges())
    plain = estimate_warp(pair.content, pair.exemplar, WarpConfig(refine="none"), vgg)
    refined = estimate_warp(pair.content, pair.exemplar, WarpConfig(), vgg)
    assert plain.refined is False and refined.refined is True
    assert epe(refined.flow, pair) < 0.67 * epe(plain.flow, pair)
    assert photometric_residual(pair.content, pair.exemplar, refined.flow) <= MAX_RESIDUAL
    assert refined.applied == "learned" and refined.cos_after >= plain.cos_after - 0.01


def test_a_painted_exemplar_keeps_the_networks_field(vgg):
    """Re-painted (artistic tier): brightness constancy fails, DIS is never kept."""
    pair = pair_of("artistic")
    plain = estimate_warp(pair.content, pair.exemplar, WarpConfig(refine="none"), vgg)
    default = estimate_warp(pair.content, pair.exemplar, WarpConfig(), vgg)
    assert default.refined is False
    assert torch.equal(default.flow, plain.flow)


def test_a_flat_exemplar_proves_nothing_and_is_never_refined():
    """A flat picture matches any field photometrically; the step must not call that a match."""
    from lwst.photometric_refine import refine_photometric

    pair = pair_of("geometry", small_ranges())
    flat = torch.full_like(pair.exemplar, 0.5)
    given = pair.flow.clone()
    assert photometric_residual(pair.content, flat, pair.flow) == float("inf")
    flows, refined = refine_photometric(pair.content, flat, pair.flow)
    assert refined == [False] and torch.equal(flows, given)
    assert torch.equal(pair.flow, given)  # DIS wrote into a copy, not into the caller's field
    # the same content against its true deformed copy is a match (the test's control)
    assert photometric_residual(pair.content, pair.exemplar, pair.flow) <= MAX_RESIDUAL


def test_warp_refined_column_through_the_cli(tmp_path):
    from lwst.image_io import write_png

    pair = pair_of("geometry", small_ranges())
    write_png(pair.content, tmp_path / "content.png")
    write_png(pair.exemplar, tmp_path / "exemplar.png")
    args = ["warp", "--content", str(tmp_path / "content.png"), "--geometry",
            str(tmp_path / "exemplar.png"), "--flow-out", str(tmp_path / "f.flo"), "--size", "256",
            "--quiet"]
    for name, extra, expected in (("on", [], True), ("off", ["--warp-refine", "none"], False)):
        assert main([*args, *extra, "--out", str(tmp_path / f"{name}.png"),
                     "--metadata-out", str(tmp_path / f"{name}.json")]) == 0
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["warp_refined"] is expected
        assert json.loads(record["params"])["warp_refine"] == ("dis" if expected else "none")
