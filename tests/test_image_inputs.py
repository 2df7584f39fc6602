"""Real users' image files (audit of image inputs): memory in proportion to the size an input is
used at, float and 32-bit TIFFs, colour-key transparency, ICC profiles, HEIC and truncated TIFF
reasons, multi-frame files. Every input is built here, small, in ``tmp_path``."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

import lwst.image_io as image_io
from lwst.correlation import analysis_view
from lwst.image_io import ImageInputError, read_image, resize_longest


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB picture with some detail (what a resize filter can tell apart)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 16 + 2, width // 16 + 2, 3))
    smooth = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height),
                                                                      Image.BICUBIC)
    noise = rng.integers(-20, 21, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(smooth, int) + noise, 0, 255).astype(np.uint8))


@pytest.fixture
def converted(monkeypatch):
    """The (height, width) of every piece of image converted to float (`_to_rgb_array`)."""
    seen: list[tuple[int, int]] = []
    original = image_io._to_rgb_array

    def spy(img, *args, **kwargs):
        seen.append((img.size[1], img.size[0]))
        return original(img, *args, **kwargs)

    monkeypatch.setattr(image_io, "_to_rgb_array", spy)
    return seen


# ---- 1. memory: an input is never held whole at a size far above the one it is used at ----

def test_a_large_png_is_converted_in_bands_to_the_same_pixels(tmp_path, converted):
    path = tmp_path / "big.png"
    _photo(1200, 900).save(path)
    small = read_image(path, 64)
    assert max(h for h, _ in converted) <= image_io.BAND_ROWS  # never the whole 1200 x 900
    converted.clear()
    whole = resize_longest(read_image(path), 64)
    assert converted == [(900, 1200)]
    assert small.shape == whole.shape == (1, 3, 48, 64)
    assert torch.equal(small, whole)  # the banded resize is the whole one, bit for bit


def test_a_large_jpeg_is_decoded_dct_scaled(tmp_path, converted):
    path = tmp_path / "big.jpg"
    _photo(2400, 1600).save(path, quality=90)
    small = read_image(path, 64)
    assert max(w for _, w in converted) <= 2400 // 8  # PIL's draft: decoded at 1/8
    whole = resize_longest(read_image(path), 64)
    assert small.shape == whole.shape == (1, 3, 43, 64)
    assert (small - whole).abs().mean() < 1 / 255


def test_an_input_under_the_margin_is_decoded_exactly_as_before(tmp_path, converted):
    path = tmp_path / "normal.jpg"
    _photo(384, 256).save(path, quality=90)
    assert torch.equal(read_image(path, 512), resize_longest(read_image(path), 512))
    assert converted == [(256, 384), (256, 384)]  # whole: no band, no draft


def test_a_geometry_exemplar_is_read_as_its_analysis_view(tmp_path, monkeypatch, converted):
    path = tmp_path / "geometry.png"
    _photo(600, 400).save(path)
    view = read_image(path, analysis_side=64)
    assert view.shape == (1, 3, 64, 64)
    assert torch.equal(view, analysis_view(read_image(path), 64))
    converted.clear()
    monkeypatch.setattr(image_io, "VIEW_MARGIN", 2)  # 400 >= 2 x 2 x 64: banded
    banded = read_image(path, analysis_side=64)
    assert max(h for h, _ in converted) <= image_io.BAND_ROWS
    assert torch.equal(banded, view)


def test_every_entry_point_reads_inputs_at_the_size_they_are_used(tmp_path, monkeypatch):
    """stylize_files (gatys items), stylize_batch (chunks) and the CLI: the content at the
    output size, the geometry as its analysis view, never in full."""
    import lwst.stylize as stylize_mod
    from lwst.config import StylizeConfig
    from lwst.item import Item
    from lwst.item_files import item_outputs
    from lwst.stylize_batch import _load

    content, geometry, texture = (tmp_path / "c.png", tmp_path / "g.png", tmp_path / "t.png")
    _photo(320, 240, 1).save(content)
    _photo(300, 500, 2).save(geometry)
    _photo(200, 200, 3).save(texture)
    config = StylizeConfig(size=48)
    item = Item("a", str(content), str(geometry), str(texture), config,
                item_outputs(str(tmp_path / "out"), "a"))
    seen = {}

    def capture(content, geometry, texture, config, **kwargs):
        seen.update(content=content.shape, geometry=geometry.shape, texture=texture.shape)
        raise RuntimeError("captured")

    monkeypatch.setattr(stylize_mod, "stylize", capture)
    expected = {"content": (1, 3, 36, 48), "geometry": (1, 3, 256, 256),
                "texture": (1, 3, 48, 48)}
    with pytest.raises(RuntimeError, match="captured"):
        stylize_mod.stylize_files(item)
    assert seen == expected
    loaded = _load(item, torch.device("cpu"), {}, {})
    assert {"content": loaded.content.shape, "geometry": loaded.geometry.shape,
            "texture": loaded.texture.shape} == expected
    seen.clear()
    from lwst.cli import main

    with pytest.raises(RuntimeError, match="captured"):
        main(["stylize", "--content", str(content), "--geometry", str(geometry), "--texture",
              str(texture), "--out", str(tmp_path / "o.png"), "--size", "48", "--quiet"])
    assert seen == expected


# ---- 4. float and 32-bit integer TIFFs ----

def _grey_ramp(width: int = 40, height: int = 30) -> np.ndarray:
    return np.linspace(0.0, 1.0, width, dtype=np.float64)[None, :].repeat(height, 0)


@pytest.mark.parametrize("top", [1.0, 255.0, 65535.0])
def test_float_tiffs_are_scaled_by_their_range(tmp_path, top):
    ramp = _grey_ramp() * 0.9 * top  # within 0..top, not reaching it
    path = tmp_path / "f.tif"
    Image.fromarray(ramp.astype(np.float32), "F").save(path)
    image = read_image(path)[0]
    expected = {1.0: 1.0, 255.0: 255.0, 65535.0: 65535.0}[top]
    np.testing.assert_allclose(image[0].numpy(), ramp / expected, atol=1e-6)
    assert torch.equal(image[0], image[2])
    assert float(image.max()) < 0.95  # not clipped to white


def test_a_32_bit_integer_tiff_within_16_bits_is_scaled_and_beyond_it_refused(tmp_path):
    ok = tmp_path / "i16.tif"
    values = (_grey_ramp() * 60000).astype(np.int32)
    Image.fromarray(values, "I").save(ok)
    np.testing.assert_allclose(read_image(ok)[0, 0].numpy(), values / 65535, atol=1e-6)
    wide = tmp_path / "i32.tif"
    Image.fromarray((_grey_ramp() * 255000).astype(np.int32), "I").save(wide)
    with pytest.raises(ImageInputError) as info:
        read_image(wide)
    message = str(info.value)
    assert message.startswith(f"{wide}: 32-bit integer image with values in [0, 255000]")
    assert "not supported" in message and "\n" not in message


@pytest.mark.parametrize("bad", [float("nan"), -3.0])
def test_float_tiffs_no_range_holds_are_refused(tmp_path, bad):
    ramp = _grey_ramp().astype(np.float32)
    ramp[0, 0] = bad
    path = tmp_path / "bad.tif"
    Image.fromarray(ramp, "F").save(path)
    with pytest.raises(ImageInputError, match="float image with"):
        read_image(path)


# ---- 5. colour-key (tRNS) transparency ----

@pytest.mark.parametrize("mode, key", [("RGB", (0, 0, 0)), ("L", 0)])
def test_colour_key_transparency_is_composited_over_white(tmp_path, mode, key):
    arr = np.full((20, 40, 3), 200, np.uint8)
    arr[:, :20] = 0  # the left half has the key colour: transparent
    img = Image.fromarray(arr, "RGB").convert(mode)
    path = tmp_path / f"trns_{mode}.png"
    img.save(path, transparency=key)
    assert "transparency" in Image.open(path).info
    image = read_image(path)[0]
    assert float(image[:, :, :20].min()) == 1.0  # white, not black
    assert abs(float(image[:, :, 20:].mean()) - 200 / 255) < 1e-6


def test_colour_key_transparency_survives_the_banded_path(tmp_path):
    arr = np.full((400, 600, 3), 200, np.uint8)
    arr[:, :300] = 0
    path = tmp_path / "big_trns.png"
    Image.fromarray(arr, "RGB").save(path, transparency=(0, 0, 0))
    image = read_image(path, 60)[0]
    assert float(image[:, :, :28].min()) > 0.99


# ---- 9. reasons: a truncated TIFF, HEIC ----

def test_a_truncated_tiff_is_called_corrupt_or_truncated(tmp_path):
    buffer = io.BytesIO()
    _photo(200, 150).save(buffer, format="TIFF", compression="tiff_lzw")
    path = tmp_path / "cut.tif"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    with pytest.raises(ImageInputError) as info:
        read_image(path)
    assert str(info.value).startswith(f"{path}: corrupt or truncated image")


@pytest.mark.parametrize("brand", [b"heic", b"mif1", b"heix"])
def test_heic_is_refused_as_unsupported_with_what_to_do(tmp_path, brand):
    path = tmp_path / "photo.heic"
    path.write_bytes(struct.pack(">I", 24) + b"ftyp" + brand + b"\0\0\0\0mif1heic"
                     + bytes(64))
    with pytest.raises(ImageInputError) as info:
        read_image(path)
    assert str(info.value) == (f"{path}: HEIC/HEIF images are not supported (convert it to "
                               "JPEG or PNG)")


def test_text_is_still_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello\n")
    with pytest.raises(ImageInputError, match="not an image file PIL can read"):
        read_image(path)


# ---- 10. multi-frame files: the first frame ----

def test_an_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 24), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    image = read_image(path)[0]
    assert float(image[0].mean()) > 0.95 and float(image[2].mean()) < 0.05  # red: frame 0


# ---- 12. ICC profiles ----

def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def rgb_profile(red, green, blue, description: str = "lwst test RGB") -> bytes:
    """A minimal ICC v2 matrix/TRC display profile (gamma 2.2) with the given D50 colorants."""
    text = description.encode() + b"\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4) + bytes(4)
            + bytes(2) + bytes(1) + bytes(67))
    curve = b"curv\0\0\0\0" + struct.pack(">I", 1) + struct.pack(">H", round(2.2 * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", _xyz(*red)),
            (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue)), (b"rTRC", curve),
            (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text\0\0\0\0none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0)
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


SRGB_D50 = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def test_an_embedded_non_srgb_profile_is_converted_to_srgb(tmp_path):
    red, green, blue = SRGB_D50
    swapped = rgb_profile(blue, green, red, "red and blue swapped")  # its "red" is sRGB blue
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(swapped)))
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[..., 0] = 255  # stored as pure "red"
    path = tmp_path / "tagged.png"
    Image.fromarray(arr).save(path, icc_profile=swapped)
    image = read_image(path)[0]
    assert float(image[0].mean()) < 0.1 and float(image[2].mean()) > 0.9  # shown as blue
    # The same in the banded path of a large image, and through the Python API.
    big = tmp_path / "tagged_big.png"
    Image.fromarray(np.repeat(np.repeat(arr, 30, 0), 30, 1)).save(big, icc_profile=swapped)
    small = read_image(big, 40)[0]
    assert float(small[0].mean()) < 0.1 and float(small[2].mean()) > 0.9
    pil = image_io.as_image(Image.open(path), "content")[0]
    assert torch.equal(pil, image)


def test_an_srgb_profile_leaves_the_pixels_as_they_are(tmp_path):
    photo = _photo(40, 30)
    plain, tagged = tmp_path / "plain.png", tmp_path / "srgb.png"
    photo.save(plain)
    photo.save(tagged, icc_profile=ImageCms.ImageCmsProfile(
        ImageCms.createProfile("sRGB")).tobytes())
    assert Image.open(tagged).info.get("icc_profile")
    assert torch.equal(read_image(tagged), read_image(plain))


def test_a_broken_profile_is_ignored(tmp_path):
    photo = _photo(40, 30)
    plain, tagged = tmp_path / "plain.png", tmp_path / "broken.png"
    photo.save(plain)
    photo.save(tagged, icc_profile=b"not a profile at all" * 8)
    assert torch.equal(read_image(tagged), read_image(plain))
