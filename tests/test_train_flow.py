"""The train-warp Prefect flow end to end on two tiny images, against a real Prefect API:
paint a copy with the renderer, encode the feature cache, train, export, publish the recipe."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import save_image

from lwst.warpnet.split import is_held_out

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_train_warp_flow_paints_encodes_trains_and_exports(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.train_warp import train_warp

    names = [n for n in (f"img{i}.png" for i in range(20)) if not is_held_out(n)][:2]
    for i, name in enumerate(names):
        save_image(tmp_path / "images" / name, (96, 128), seed=i)
    style = next(n for n in (f"style{i}.png" for i in range(20)) if not is_held_out(n))
    save_image(tmp_path / "styles" / style, (64, 64), seed=9)
    painted, cache = tmp_path / "painted", tmp_path / "cache"
    exported = train_warp(
        images=[str(tmp_path / "images")],
        out=str(tmp_path / "train.pt"),
        export=str(tmp_path / "warpnet.pt"),
        cache_dir=str(cache),
        painted_bank=str(painted),
        paint_styles=str(tmp_path / "styles"),
        paint_images=1,
        paint_size=32,
        steps=2,
        batch_size=2,
        warmup=1,
        log=str(tmp_path / "loss.csv"),
    )
    copies = list(painted.glob(f"*__{Path(style).stem}.png"))
    assert len(copies) == 1  # one painted copy, of one of the two training images
    assert sorted(p.name for p in cache.glob("*.pt")) == sorted(
        [f"{Path(n).stem}.base.pt" for n in names] + [copies[0].name.split("__")[0] + ".painted.pt"]
    )
    record = torch.load(cache / f"{copies[0].name.split('__')[0]}.painted.pt", weights_only=True)
    assert record["kinds"] == ["original", "painted"]
    assert record["fine_features"].shape == (2, 256, 64, 64)
    slim = torch.load(exported, weights_only=True)
    assert slim["step"] == 2 and slim["model_config"]["fine_iters"] > 0
    assert len(pd.read_csv(tmp_path / "loss.csv")) == 2
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["warpnet-training"])))
    assert any("paint_images | 1" in a.data for a in artifacts)


def test_train_decoders_flow_trains_wct_then_adain_from_it(tmp_path: Path) -> None:
    from flows.train_decoder import train_decoders
    from lwst.decoders import load_decoder

    for i in range(2):
        save_image(tmp_path / "photos" / f"p{i}.png", (64, 64), seed=i)
        save_image(tmp_path / "styles" / f"s{i}.png", (64, 64), seed=10 + i)
    written = train_decoders(images=[str(tmp_path / "photos")], styles=[str(tmp_path / "styles")],
                             out_dir=str(tmp_path / "dec"), wct_levels=[4], steps=2,
                             batch_size=2, crop=32)
    assert sorted(written) == ["adain", "wct4"]
    _, wct_info = load_decoder(written["wct4"], "wct", 4)
    _, adain_info = load_decoder(written["adain"], "adain", 4)
    assert "2 steps" in adain_info.note and wct_info.decoder_id != adain_info.decoder_id
    log = pd.read_csv(tmp_path / "dec" / "decoder_adain.pt.log.csv")
    assert list(log["step"]) == [1, 2] and {"content", "style"} <= set(log.columns)


@pytest.mark.parametrize(("change", "reason"), [
    ({"lr": 5.0}, "--lr must be within 0..1, got 5.0"),
    ({"painted_bank": "painted"}, "--painted-bank needs --paint-styles"),
    ({"images": ["missing"]}, "--images missing: no such image folder or manifest")])
def test_train_warp_flow_refuses_bad_input_before_encoding_the_cache(tmp_path: Path, change,
                                                                     reason) -> None:
    """A refusal fails the flow at once, as an `InputError` (not retried), before the
    encode-feature-cache task spends minutes on the images (it came after it)."""
    from flows.train_warp import train_warp
    from lwst.errors import InputError

    name = next(n for n in (f"img{i}.png" for i in range(20)) if not is_held_out(n))
    save_image(tmp_path / "images" / name, (64, 64))
    params = {"images": [str(tmp_path / "images")], "out": str(tmp_path / "train.pt"),
              "cache_dir": str(tmp_path / "cache"), "paint_images": 1, "steps": 1, **change}
    if "painted_bank" in change:
        params["painted_bank"] = str(tmp_path / change["painted_bank"])
    if "images" in change:
        params["images"] = [str(tmp_path / p) for p in change["images"]]
    with pytest.raises(InputError) as refused:
        train_warp(**params)
    assert reason.replace("missing", str(tmp_path / "missing")) in str(refused.value)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "train.pt").exists()


@pytest.mark.slow  # two interpreters importing Prefect: ~13 s
def test_the_train_warp_module_answers_help_and_refuses_no_arguments() -> None:
    """``python -m flows.train_warp --help`` exited 1 (``sys.exit`` of the usage text)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "flows.train_warp", "--help"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m flows.train_warp")
    done = subprocess.run([sys.executable, "-m", "flows.train_warp"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("usage: python -m flows.train_warp")
