"""The learned warp's symmetric views (`--warp-views`): estimates on the pair mirrored, upside
down and transposed, averaged per item where they agree with the anchor view's field."""

import json
from pathlib import Path

import pytest
import torch

from lwst.cli import main
from lwst.config import WARP_VIEWS
from lwst.flow import end_point_error, warp_image
from lwst.warpnet.inference import consensus, predict_warp, view_flow, view_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def vgg():
    from lwst.vgg import load_vgg19

    return load_vgg19("auto")


def astronaut_pairs(seeds: range):
    from lwst.correlation import analysis_view
    from lwst.image_io import read_image
    from lwst.warpnet.synthetic import make_pair

    image = analysis_view(read_image(str(EXAMPLES / "astronaut.jpg")))
    return [make_pair(image, torch.Generator().manual_seed(s), "artistic") for s in seeds]


@pytest.mark.parametrize("view", WARP_VIEWS)
def test_a_views_flow_is_the_same_warp_seen_in_that_view(view):
    """Warping the viewed image by the viewed flow = viewing the warped image; twice = none."""
    from lwst.correlation import analysis_view
    from lwst.image_io import read_image

    image = analysis_view(read_image(str(EXAMPLES / "face.jpg")), 64)
    coarse = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 4
    flow = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear",
                                           align_corners=True)
    torch.testing.assert_close(warp_image(view_image(image, view), view_flow(flow, view)),
                               view_image(warp_image(image, flow), view), atol=1e-5, rtol=0)
    assert torch.equal(view_flow(view_flow(flow, view), view), flow)


def test_consensus_averages_the_views_that_agree_with_the_best_and_drops_the_rest():
    base = torch.zeros(1, 2, 8, 8)
    near, far = base + 3.0, base + 40.0  # 4.2 and 57 px from the best (px at 256 = 32x a cell)
    flows = torch.stack([torch.cat([base, base]), torch.cat([near / 32, far]),
                         torch.cat([far, base + 0.1])])  # (K=3, B=2, 2, 8, 8)
    best = torch.tensor([0, 2])
    out, count = consensus(flows, best, size=256)
    torch.testing.assert_close(out[0], (base[0] + near[0] / 32) / 2)  # far view dropped
    torch.testing.assert_close(out[1], (base[0] + base[0] + 0.1) / 2)  # the two that agree
    assert count.tolist() == [2, 2]


def test_the_vote_averages_agreeing_views_and_beats_one_view(vgg):
    """Four painted copies in one batch, two views: each item's field is the best-aligned
    view's, averaged with the other view where the two agree; the mean EPE beats one view."""
    pairs = astronaut_pairs(range(4))
    content = torch.cat([p.content for p in pairs])
    exemplar = torch.cat([p.exemplar for p in pairs])
    single, _ = predict_warp(content, exemplar, vgg, views=1)
    mirrored, _ = predict_warp(view_image(content, "mirror"), view_image(exemplar, "mirror"),
                               vgg, views=1)
    mirrored = view_flow(mirrored, "mirror")
    details: dict = {}
    voted, _ = predict_warp(content, exemplar, vgg, diagnostics=details, views=2)
    agreeing, best = details["views_agreeing"].tolist(), details["view"].tolist()
    assert 2 in agreeing, "no pair whose views agree: the test proves nothing"
    for i in range(len(pairs)):
        expected = (single[i] + mirrored[i]) / 2 if agreeing[i] == 2 else (
            mirrored[i] if best[i] == 1 else single[i])
        torch.testing.assert_close(voted[i], expected, atol=1e-4, rtol=0)

    def mean_epe(flow):
        return sum(float(end_point_error(flow[i : i + 1], p.flow, p.valid))
                   for i, p in enumerate(pairs)) / len(pairs)

    assert mean_epe(voted) < mean_epe(single)
    assert details["agreement"].shape[0] == len(pairs)  # the best view's vote figures, per item


def test_warp_view_column_and_option_through_the_cli(tmp_path):
    from lwst.image_io import write_png

    pair = astronaut_pairs(range(1))[0]
    write_png(pair.content, tmp_path / "content.png")
    write_png(pair.exemplar, tmp_path / "exemplar.png")
    args = ["warp", "--content", str(tmp_path / "content.png"), "--geometry",
            str(tmp_path / "exemplar.png"), "--size", "256", "--quiet"]
    records = {}
    for name, extra in (("2", []), ("1", ["--warp-views", "1"])):
        assert main([*args, *extra, "--out", str(tmp_path / f"{name}.png"),
                     "--flow-out", str(tmp_path / f"{name}.flo"),
                     "--metadata-out", str(tmp_path / f"{name}.json")]) == 0
        records[name] = json.loads((tmp_path / f"{name}.json").read_text())
        assert json.loads(records[name]["params"])["warp_views"] == int(name)
    assert records["1"]["warp_view"] == "identity"
    assert records["2"]["warp_view"] in WARP_VIEWS[:2]
    assert records["2"]["warp_loss_after"] != records["1"]["warp_loss_after"]
    with pytest.raises(SystemExit) as refused:  # argparse names the choices in one line
        main([*args, "--warp-views", "5", "--out", str(tmp_path / "x.png")])
    assert refused.value.code == 2


@pytest.mark.parametrize("value", [0, 5, "two", 2.5])
def test_a_bad_warp_views_override_is_refused_by_name(value):
    from lwst.config import StylizeConfig, validate, with_overrides

    with pytest.raises(ValueError, match="warp_views"):
        validate(with_overrides(StylizeConfig(), {"warp_views": value}))


def test_warp_views_override_from_a_manifest_string():
    from lwst.config import StylizeConfig, validate, with_overrides

    config = with_overrides(StylizeConfig(), {"warp_views": "2"})
    validate(config)
    assert config.warp.views == 2
