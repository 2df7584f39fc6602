"""Fold-free fields, fold/stretch shares, warp confidence and the fallback policy (issue 11)."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from lwst.config import WarpConfig
from lwst.flow import base_grid
from lwst.warp_guard import warp_confidence
from lwst.warp_safety import (
    area_spread,
    exp_field,
    field_safety,
    fold_free,
    jacobian_determinant,
    make_fold_free,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def folding_field(size: int = 64, amplitude: float = 12.0) -> torch.Tensor:
    """A smooth sine field whose sampling map folds over: du/dx reaches -2*pi*A/P < -1."""
    grid = base_grid(size, size)
    u = amplitude * torch.sin(2 * math.pi * grid[:, 0] / 32)
    v = 0.5 * amplitude * torch.cos(2 * math.pi * grid[:, 1] / 32)
    return torch.stack([u, v], 1)


def test_fold_fraction_of_a_known_folding_field():
    """u = -2 min(x, W/2): det = -1 on the left half (and 0 on the seam), 1 on the right."""
    size = 64
    grid = base_grid(size, size)
    flow = torch.stack([-2 * grid[:, 0].clamp(max=size / 2), torch.zeros_like(grid[:, 0])], 1)
    det = jacobian_determinant(flow)
    assert torch.allclose(det[..., : size // 2], torch.tensor(-1.0))
    assert torch.allclose(det[..., size // 2 + 1 :], torch.tensor(1.0))
    safety = field_safety(flow)[0]
    assert safety.fold_frac == pytest.approx((size // 2 + 1) / size)
    assert safety.stretch_frac == 0.0
    # A uniform 5x area growth is a stretch, not a fold.
    stretched = field_safety(torch.stack([1.5 * grid[:, 0], 1.0 * grid[:, 1]], 1))[0]
    assert stretched.fold_frac == 0.0 and stretched.stretch_frac == 1.0


def test_scaling_and_squaring_of_a_folding_field_has_a_positive_jacobian_everywhere():
    velocity = folding_field()
    assert field_safety(velocity)[0].fold_frac > 0.2  # the field itself folds a lot
    assert float(jacobian_determinant(exp_field(velocity)).min()) > 0


def test_make_fold_free_removes_folds_and_keeps_an_affine_exactly():
    fixed = make_fold_free(folding_field())
    assert field_safety(fixed)[0].fold_frac == 0.0
    size = 64
    grid = base_grid(size, size)
    centred = grid - (size - 1) / 2
    theta = 0.2
    affine = torch.stack([
        (math.cos(theta) * 1.2 - 1) * centred[:, 0] - math.sin(theta) * centred[:, 1] + 7.0,
        math.sin(theta) * centred[:, 0] + (math.cos(theta) * 0.9 - 1) * centred[:, 1] - 5.0,
    ], 1)
    assert torch.allclose(make_fold_free(affine), affine, atol=1e-3)


def bulge_field(size: int = 96, amplitude: float = 14.0) -> torch.Tensor:
    """A large smooth bulge, fold-free (det > 0.1 everywhere) but far from its own
    exponential: the plain step bends it, a fitted velocity need not."""
    grid = base_grid(size, size) - (size - 1) / 2
    radius2 = (grid ** 2).sum(1, keepdim=True)
    return -amplitude * grid / (size / 4) * torch.exp(-radius2 / (2 * (size / 4) ** 2))


def test_a_fitted_velocity_keeps_a_large_smooth_warp_closer_than_the_plain_step():
    bulge = bulge_field()
    assert float(jacobian_determinant(bulge).min()) > 0.1
    plain, fitted = fold_free(bulge, "diffeo"), fold_free(bulge, "fitted")
    plain_error = float((plain - bulge).norm(dim=1).mean())
    fitted_error = float((fitted - bulge).norm(dim=1).mean())
    assert plain_error > 0.3  # exp(r) != r: the plain step moves this field by 0.4 px on average
    assert fitted_error < 0.5 * plain_error, (plain_error, fitted_error)
    assert field_safety(fitted)[0].fold_frac == 0.0
    assert torch.equal(fold_free(bulge, "raw"), bulge)


def test_a_fitted_field_is_fold_free_and_a_batch_fits_as_its_items():
    folding = folding_field(96)
    batch = torch.cat([folding, bulge_field()])
    fitted = fold_free(batch, "fitted")
    assert field_safety(fitted)[0].fold_frac <= 0.005
    with torch.inference_mode():  # the product calls it under inference mode
        alone = fold_free(bulge_field(), "fitted")
    assert torch.allclose(fitted[1:], alone, atol=0.05)


def test_area_spread_is_zero_for_an_affine_and_large_for_a_melting_field():
    """A large rotation-and-zoom changes area uniformly (spread 0, also where it samples
    outside the image); a fold-free swirl that grows and shrinks neighbouring regions does not.
    Only pixels that sample inside the image count."""
    size = 64
    grid = base_grid(size, size)
    centred = grid - (size - 1) / 2
    zoom = torch.tensor([[0.6, -0.5], [0.5, 0.6]])  # |det| 0.61, points far outside the image
    affine = torch.einsum("ij,bjhw->bihw", zoom, centred) + (size - 1) / 2 - grid
    assert float(area_spread(affine)[0]) == pytest.approx(0.0, abs=1e-4)
    melt = exp_field(folding_field(size, amplitude=6.0))
    assert field_safety(melt)[0].fold_frac == 0.0
    spread = float(area_spread(melt)[0])
    assert spread > 0.65  # beyond MELT_END: confidence 0
    # The same melt where the map samples outside the image (a hole) does not count.
    outside = melt + torch.tensor([3.0 * size, 0.0]).view(1, 2, 1, 1)
    assert field_safety(outside)[0].stretch_frac > 0  # the whole-image figure sees it
    assert float(area_spread(outside)[0]) == 0.0


def test_confidence_is_in_unit_range_and_ranks_the_obvious_cases():
    good = warp_confidence(gain=0.1, raw_fold_frac=0.12, reached=1.0)
    torn = warp_confidence(gain=0.1, raw_fold_frac=0.22, reached=1.0)
    short = warp_confidence(gain=0.1, raw_fold_frac=0.12, reached=0.7)
    useless = warp_confidence(gain=-0.02, raw_fold_frac=0.0, reached=1.0)
    ambiguous = warp_confidence(gain=0.1, raw_fold_frac=0.12, ambiguous=1.0, reached=1.0)
    assert 0.0 <= useless < torn < good <= 1.0 and ambiguous < good and short < good
    assert warp_confidence(0.1, 0.3, reached=1.0) == 0.0  # a torn field
    assert warp_confidence(0.1, 0.0, reached=0.4) == 0.0  # reached none of the reachable
    assert warp_confidence(float("nan"), 0.0) == 0.0
    assert warp_confidence(0.1, 0.0, reached=float("nan")) == 0.0
    melting = warp_confidence(gain=0.1, raw_fold_frac=0.12, reached=1.0, area_spread=0.55)
    assert 0.0 < melting < good
    assert warp_confidence(0.1, 0.12, reached=1.0, area_spread=0.4) == good  # below MELT_START
    assert warp_confidence(0.1, 0.12, reached=1.0, area_spread=0.7) == 0.0  # melted
    assert warp_confidence(0.1, 0.12, reached=1.0, area_spread=float("nan")) == 0.0


def test_the_ceiling_is_the_best_cell_match_and_a_true_warp_reaches_it(synthetic_pair):
    """cos_ceiling is each exemplar cell's best cosine to any content cell, averaged; the true
    warp's cosine comes close to it, no warp's does not."""
    from lwst.correlation import ALIGNMENT_TAP, normalised_features
    from lwst.vgg import load_vgg19
    from lwst.warp_guard import alignment_figures

    vgg, pair = load_vgg19("auto"), synthetic_pair
    truth, nothing = alignment_figures(vgg, torch.cat([pair.content] * 2),
                                       torch.cat([pair.exemplar] * 2),
                                       torch.cat([pair.flow, torch.zeros_like(pair.flow)]))
    feats = normalised_features(vgg, torch.cat([pair.content, pair.exemplar]), (ALIGNMENT_TAP,))
    content, exemplar = feats[ALIGNMENT_TAP].float().flatten(2)
    best = (exemplar.T @ content).amax(1).mean()
    assert truth.cos_ceiling == pytest.approx(float(best), abs=1e-4)
    assert truth.reached > 0.9 and truth.reached > nothing.reached + 0.2


@pytest.fixture(scope="module")
def synthetic_pair():
    from lwst.correlation import analysis_view
    from lwst.image_io import read_image
    from lwst.warpnet.synthetic import make_pair

    image = analysis_view(read_image(str(EXAMPLES / "astronaut.jpg")), 128)
    return make_pair(image, torch.Generator().manual_seed(3), "geometry")


def test_fallback_applies_below_the_threshold_and_only_there(synthetic_pair, monkeypatch):
    """With the confidence forced low, ``damp`` applies the fold-free half field (or no warp
    when that does not align better); with the threshold at 0 the method's own field stays."""
    import lwst.warping as warping
    from lwst.vgg import load_vgg19

    vgg = load_vgg19("auto")
    pair = synthetic_pair
    kept = warping.estimate_warp(pair.content, pair.exemplar,
                                 WarpConfig(method="tps", min_confidence=0.0), vgg)
    assert kept.applied == "tps" and 0.0 <= kept.confidence <= 1.0
    assert field_safety(kept.flow)[0].fold_frac == 0.0
    # The confidence judged the applied field's melt figure, reported with the estimate.
    assert kept.area_spread == pytest.approx(float(area_spread(kept.flow)[0]), abs=1e-6)
    assert kept.confidence == pytest.approx(warp_confidence(
        kept.cos_after - kept.cos_before, kept.raw_fold_frac, kept.ambiguity,
        kept.cos_after / kept.cos_ceiling, kept.area_spread))
    monkeypatch.setattr(warping, "warp_confidence", lambda *a, **k: 0.05)
    damped = warping.estimate_warp(pair.content, pair.exemplar,
                                   WarpConfig(method="tps", fallback="damp", min_confidence=0.1),
                                   vgg)
    assert damped.applied == "damp" and damped.confidence == 0.05
    assert torch.allclose(damped.flow, make_fold_free(0.5 * kept.flow), atol=1e-3)
    assert damped.cos_after > damped.cos_before
    off = warping.estimate_warp(pair.content, pair.exemplar,
                                WarpConfig(method="tps", fallback="none", min_confidence=0.1),
                                vgg)
    assert off.applied == "tps" and torch.allclose(off.flow, kept.flow)


def test_a_fallback_that_does_not_align_becomes_no_warp(synthetic_pair, monkeypatch):
    import lwst.warping as warping
    from lwst.vgg import load_vgg19
    real = warping.alignment_figures
    calls = []

    def worse_fallback(vgg, content, exemplar, flow, known=None):
        calls.append(1)
        figures = real(vgg, content, exemplar, flow, known)
        if len(calls) == 1:
            return figures
        return [dataclasses.replace(f, cos_after=f.cos_before - 0.1) for f in figures]

    monkeypatch.setattr(warping, "warp_confidence", lambda *a, **k: 0.0)
    monkeypatch.setattr(warping, "alignment_figures", worse_fallback)
    pair = synthetic_pair
    estimate = warping.estimate_warp(pair.content, pair.exemplar,
                                     WarpConfig(method="tps", fallback="affine"),
                                     load_vgg19("auto"))
    assert estimate.applied == "none" and float(estimate.flow.abs().max()) == 0.0
    assert estimate.loss_after == estimate.loss_before


def test_learned_warp_guard_reuses_the_networks_features_and_measures_the_same(monkeypatch):
    """The learned network's own relu4_1 features of the two views stand in for a fresh
    encode in the warp guard: the figures are those of a full encode."""
    import lwst.warping as warping
    from lwst.correlation import analysis_view
    from lwst.image_io import read_image
    from lwst.vgg import load_vgg19

    vgg = load_vgg19("auto")
    real, seen = warping.alignment_figures, []

    def both(vgg_, content, exemplar, flow, known=None):
        seen.append((known, real(vgg_, content, exemplar, flow, None)))
        return real(vgg_, content, exemplar, flow, known)

    monkeypatch.setattr(warping, "alignment_figures", both)
    content = analysis_view(read_image(str(EXAMPLES / "astronaut.jpg")), 256)
    exemplar = analysis_view(read_image(str(EXAMPLES / "woman_painting.jpg")), 256)
    estimate = warping.estimate_warp(content, exemplar, WarpConfig(method="learned",
                                                                   fallback="none"), vgg)
    known, fresh = seen[0]
    assert known is not None
    assert math.isclose(estimate.cos_before, fresh[0].cos_before, abs_tol=1e-5)
    assert math.isclose(estimate.cos_after, fresh[0].cos_after, abs_tol=1e-5)


def test_the_guard_encodes_each_view_once_and_measures_as_a_full_encode(synthetic_pair,
                                                                        monkeypatch):
    """When the estimator's features cannot stand in (another precision, or no network), the
    guard encodes the content and exemplar views once for the figures and the fallback alike,
    remembers the exemplar's across calls, and its figures equal one pass over all three."""
    import lwst.warp_guard as guard
    import lwst.warping as warping
    from lwst import feature_cache
    from lwst.vgg import load_vgg19

    monkeypatch.setattr(feature_cache, "_cache", feature_cache.new_store())
    vgg, pair = load_vgg19("auto"), synthetic_pair
    known = guard.view_features(vgg, pair.content, pair.exemplar)
    full = guard.alignment_figures(vgg, pair.content, pair.exemplar, pair.flow)[0]
    mine = guard.alignment_figures(vgg, pair.content, pair.exemplar, pair.flow, known)[0]
    for name in ("loss_before", "loss_after", "cos_before", "cos_after", "cos_ceiling"):
        assert getattr(mine, name) == pytest.approx(getattr(full, name), abs=1e-4), name
    assert full.gain > 0.05  # the true field aligns: the figures are not trivially equal

    encoded: list[int] = []
    real = guard.normalised_features

    def counting(vgg_, images, taps):
        encoded.append(len(images))
        return real(vgg_, images, taps)

    monkeypatch.setattr(guard, "normalised_features", counting)
    monkeypatch.setattr(warping, "warp_confidence", lambda *a, **k: 0.0)  # every item falls back
    config = WarpConfig(method="tps", fallback="damp")
    first = warping.estimate_warp(pair.content, pair.exemplar, config, vgg)
    assert first.applied in ("damp", "none")
    # content, exemplar, warped content, the damped field's warped content: one image each
    assert encoded == [1, 1, 1, 1]
    encoded.clear()
    again = warping.estimate_warp(pair.content, pair.exemplar.clone(), config, vgg)
    assert encoded == [1, 1, 1]  # the exemplar's view is remembered
    assert again.cos_after == pytest.approx(first.cos_after, abs=1e-6)


def test_warp_field_fitted_through_the_cli(tmp_path):
    """``--warp-field fitted`` is recorded, applies a fold-free field, and it is not the
    default's (the velocity is fitted, not the residual taken as it is)."""
    import json

    from lwst.cli import main
    from lwst.flow import read_flo

    args = ["warp", "--content", str(EXAMPLES / "face.jpg"), "--geometry",
            str(EXAMPLES / "woman_painting.jpg"), "--size", "128", "--quiet",
            "--warp-fallback", "none", "--warp-refine", "none"]
    flows = {}
    for field in ("diffeo", "fitted"):
        assert main([*args, "--warp-field", field, "--out", str(tmp_path / f"{field}.png"),
                     "--flow-out", str(tmp_path / f"{field}.flo"),
                     "--metadata-out", str(tmp_path / f"{field}.json")]) == 0
        record = json.loads((tmp_path / f"{field}.json").read_text())
        assert json.loads(record["params"])["warp_field"] == field
        assert record["warp_fold_frac"] <= 0.005
        flows[field] = read_flo(str(tmp_path / f"{field}.flo"))
    assert float((flows["fitted"] - flows["diffeo"]).abs().mean()) > 0.05


@pytest.mark.parametrize("row", range(3))
def test_every_demo_pair_is_warped_without_folds(tmp_path, row):
    """A newcomer's first run (`make demo`: manifests/example.csv at 256 px) shows what the warp
    is for: every demo pair is visibly warped, fold-free. The two pairs made from their own
    content get the learned field above the fallback threshold; the astronaut onto another
    woman's portrait gets the damped field (the network's own melts the face: README, "Quick
    start"). Guards the demo against a new network or default that would leave a row
    unwarped."""
    import json

    from lwst.cli import main
    from lwst.manifest import read_manifest

    items = read_manifest(str(EXAMPLES.parent / "manifests" / "example.csv"))
    assert len(items) == 3
    item = items[row]
    metadata = tmp_path / "item.json"
    assert main(["warp", "--content", item.content, "--geometry", item.geometry,
                 "--size", "256", "--quiet", "--out", str(tmp_path / "warped.png"),
                 "--flow-out", str(tmp_path / "warp.flo"),
                 "--metadata-out", str(metadata)]) == 0
    record = json.loads(metadata.read_text())
    if item.id.startswith("astronaut"):
        assert record["warp_applied"] == "damp", (item.id, record["warp_confidence"])
    else:
        assert record["warp_applied"] == "learned", (item.id, record["warp_confidence"])
        assert record["warp_confidence"] >= WarpConfig().min_confidence
    assert record["warp_mean_px"] >= 2.0  # visibly warped (the cat: 3.3 px at 256)
    assert record["warp_fold_frac"] <= 0.005


def test_a_raw_field_is_judged_for_melt_by_its_fold_free_form():
    """``--warp-field raw`` keeps the old behaviour selectable: its folds are the torn term's
    business, so the melt term reads the field's fold-free form (whose scale it was set on).
    Read from the raw field itself, every fold counts as melt and every item fell back."""
    from lwst.correlation import analysis_view
    from lwst.image_io import read_image
    from lwst.vgg import load_vgg19
    from lwst.warping import estimate_warp

    content = analysis_view(read_image(str(EXAMPLES / "face.jpg")))
    exemplar = analysis_view(read_image(str(EXAMPLES / "face_long_painting.jpg")))
    estimate = estimate_warp(content, exemplar, WarpConfig(field="raw", fallback="none"),
                             load_vgg19("auto"))
    assert estimate.applied == "learned" and field_safety(estimate.flow)[0].fold_frac > 0
    own_form = float(area_spread(fold_free(estimate.flow, "diffeo"))[0])
    assert estimate.area_spread == pytest.approx(own_form, abs=1e-5)
    assert float(area_spread(estimate.flow)[0]) > own_form + 0.1
    assert estimate.confidence >= WarpConfig().min_confidence
