"""The Python API's inputs (audit of image inputs): `lwst.stylize.stylize` checks its images and
config up front, one ValueError naming the argument; `RandomStylize` keeps 16-bit, 32-bit and
float PIL images in their own range and mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lwst.config import StylizeConfig
from lwst.image_io import read_image
from lwst.stylize import stylize
from lwst.transforms import RandomStylize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STYLES = [EXAMPLES / "texture_strokes.jpg", EXAMPLES / "texture_mosaic.jpg"]


@pytest.fixture(scope="module")
def cat() -> torch.Tensor:
    """A real photo, (1, 3, 28, 40) float in [0, 1]."""
    return torch.nn.functional.interpolate(read_image(EXAMPLES / "cat.jpg"), size=(28, 40),
                                           mode="area")


SMALL = StylizeConfig(size=32)


def _cases(cat: torch.Tensor) -> dict[str, tuple[dict, str]]:
    """name -> (stylize's arguments that differ from a valid call, the message expected)."""
    rule = "must be a (1, 3, H, W) or (3, H, W) tensor, float in [0, 1] or uint8"
    return {
        "0..255 floats": ({"content": cat * 255}, f"content {rule}; got float values in ["),
        "negative": ({"content": cat - 0.5}, f"content {rule}; got float values in [-0.4"),
        "nan": ({"content": cat * float("nan")}, "content has NaN or infinite values"),
        "geometry 0..255": ({"geometry": cat * 255}, f"geometry {rule}; got float values"),
        "channels last": ({"content": cat[0].permute(1, 2, 0)},
                          f"content {rule}; got shape (28, 40, 3) (channels last?"),
        "batch": ({"content": torch.cat([cat, cat])},
                  f"content {rule}; got shape (2, 3, 28, 40) (a batch of 2"),
        "4 channels": ({"geometry": torch.cat([cat, cat[:, :1]], 1)},
                       f"geometry {rule}; got shape (1, 4, 28, 40) (RGB: 3 channels, not 4)"),
        "1 channel texture": ({"texture": cat[:, :1]}, f"texture {rule}; got shape (1, 1, 28"),
        "int32": ({"content": (cat * 255).int()}, f"content {rule}; got int32"),
        "numpy": ({"content": np.zeros((28, 40, 3), np.uint8)},
                  f"content {rule}, or a PIL image; got numpy.ndarray"),
        "None content": ({"content": None}, f"content {rule}, or a PIL image; got None"),
        "tiny": ({"content": torch.rand(1, 3, 4, 4)},
                 "content is 4x4 px; its sides must be at least 8 px"),
        "config": ({"config": {"size": 32}},
                   "config must be a lwst.config.StylizeConfig (None: the defaults), got dict"),
    }


@pytest.mark.parametrize("case", sorted(_cases(torch.rand(1, 3, 28, 40))))
def test_bad_inputs_are_refused_up_front_naming_the_argument(cat, monkeypatch, case):
    import lwst.stylize as stylize_mod

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the refusal")

    monkeypatch.setattr(stylize_mod, "load_vgg19", no_work)
    changes, expected = _cases(cat)[case]
    arguments = {"content": cat, "geometry": None, "texture": None, "config": SMALL, **changes}
    with pytest.raises(ValueError) as info:
        stylize(arguments.pop("content"), arguments.pop("geometry"), arguments.pop("texture"),
                arguments.pop("config"))
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_uint8_chw_and_pil_inputs_mean_what_they_say(cat):
    reference = stylize(cat, None, None, SMALL).image
    as_uint8 = (cat * 255).round().to(torch.uint8)
    torch.testing.assert_close(stylize(as_uint8, None, None, SMALL).image, reference,
                               atol=1 / 255, rtol=0)  # not white (uint8 taken as 0..1 was)
    assert torch.equal(stylize(cat[0], None, None, SMALL).image, reference)  # (3, H, W)
    pil = Image.fromarray(as_uint8[0].permute(1, 2, 0).numpy())
    torch.testing.assert_close(stylize(pil, None, None, SMALL).image, reference,
                               atol=1 / 255, rtol=0)
    assert torch.equal(stylize(cat.double(), None, None, SMALL).image, reference)


def test_no_config_means_the_defaults(cat):
    result = stylize(cat, None, None, None)
    assert max(result.image.shape[-2:]) == StylizeConfig().size


def test_a_real_item_runs_with_uint8_geometry_and_texture(cat):
    import dataclasses

    config = dataclasses.replace(SMALL, render=dataclasses.replace(SMALL.render,
                                                                   renderer="adain"))
    floats = stylize(cat, cat.flip(-1), cat, config).image
    ints = stylize(cat, (cat.flip(-1) * 255).round().to(torch.uint8),
                   (cat * 255).round().to(torch.uint8), config).image
    assert floats.shape == ints.shape and (floats - ints).abs().mean() < 2 / 255


# ---- RandomStylize: PIL images deeper than 8 bits ----

def _grey16(values_from: int = 8000, values_to: int = 50000) -> Image.Image:
    cat = Image.open(EXAMPLES / "cat.jpg").convert("L").resize((40, 28))
    arr = np.asarray(cat, np.float64) / 255 * (values_to - values_from) + values_from
    return Image.fromarray(arr.round().astype(np.uint16))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_deep_grey_pil_images_keep_their_range_and_mode(mode):
    source = _grey16()
    values = np.asarray(source, np.float64)
    if mode == "I;16B":
        image = Image.frombytes("I;16B", source.size, values.astype(">u2").tobytes())
    elif mode == "I":
        image = Image.fromarray(values.astype(np.int32), "I")
    elif mode == "F":  # a float image in [0, 1]
        image, values = Image.fromarray((values / 65535).astype(np.float32), "F"), values / 65535
    else:
        image = source
    assert image.mode == mode
    out = RandomStylize(STYLES, p=1.0, seed=0)(image)
    assert isinstance(out, Image.Image) and out.mode == mode and out.size == image.size
    top = 1.0 if mode == "F" else 65535.0
    got = np.asarray(out, np.float64) / top
    # What the same image in 8 bits gives, in the input's own range (not clipped to white
    # first, not returned as 0..255 in a 16-bit container).
    eight = Image.fromarray((values / top * 255).round().astype(np.uint8), "L")
    expected = np.asarray(RandomStylize(STYLES, p=1.0, seed=0)(eight), np.float64) / 255
    assert np.abs(got - expected).mean() < 2 / 255
    assert got.std() > 0.05 and got.max() <= 1.0
    assert RandomStylize(STYLES, p=0.0)(image) is image


def test_a_32_bit_pil_image_no_range_holds_is_refused():
    image = Image.fromarray(np.full((28, 40), 200000, np.int32), "I")
    with pytest.raises(ValueError, match="32-bit integer image with values in"):
        RandomStylize(STYLES, p=1.0, seed=0)(image)
