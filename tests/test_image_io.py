"""Every image mode is decoded correctly; every bad input is refused with one clear line."""

import numpy as np
import pytest
import torch
from bad_images import gradient_rgb, write_bad_cases, write_mode_cases

from lwst.image_io import (
    ImageInputError,
    check_size,
    encode_png,
    read_image,
    resize_longest,
    write_png,
)

REASONS = {
    "missing": "no such file",
    "empty": "empty file",
    "truncated": "truncated",
    "not_image": "not an image",
    "bomb": "decompression bomb",
}


@pytest.mark.parametrize("case", sorted(REASONS))
def test_bad_inputs_are_refused_with_one_line(tmp_path, case):
    path = write_bad_cases(tmp_path)[case]
    with pytest.raises(ImageInputError) as info:
        read_image(path)
    message = str(info.value)
    assert REASONS[case] in message and str(path) in message
    assert "\n" not in message


def test_modes_decode_to_rgb_in_unit_range(tmp_path):
    cases = write_mode_cases(tmp_path)
    reference = torch.from_numpy(np.asarray(gradient_rgb(), np.float32) / 255).permute(2, 0, 1)
    grey_ref = torch.from_numpy(np.asarray(gradient_rgb().convert("L"), np.float32) / 255)
    for name, path in cases.items():
        image = read_image(path)
        assert image.shape[:2] == (1, 3) and image.dtype == torch.float32, name
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0, name
    # Alpha 128 over white: halfway between the colour and white.
    rgba = read_image(cases["rgba"])[0]
    torch.testing.assert_close(rgba, reference * (128 / 255) + (1 - 128 / 255), atol=0.01, rtol=0)
    # 16-bit grey keeps its values (scaled by 65535), replicated to 3 channels.
    grey16 = read_image(cases["grey16"])[0]
    torch.testing.assert_close(grey16[0], grey_ref, atol=1e-3, rtol=0)
    torch.testing.assert_close(grey16[0], grey16[2])
    # CMYK JPEG comes back close to the RGB it was made from.
    assert (read_image(cases["cmyk"])[0] - reference).abs().mean() < 0.05
    assert (read_image(cases["palette"])[0] - reference).abs().mean() < 0.05


def test_exif_orientation_is_applied(tmp_path):
    image = read_image(write_mode_cases(tmp_path)["exif_rot"])
    assert image.shape[-2:] == (48, 32)


def test_resize_longest_and_size_limits():
    image = torch.rand(1, 3, 100, 50)
    assert resize_longest(image, 40).shape[-2:] == (40, 20)
    with pytest.raises(ImageInputError, match="outside the supported range"):
        check_size(100000)
    with pytest.raises(ImageInputError):
        check_size(2)


def test_png_round_trip_and_atomic_write(tmp_path):
    image = torch.rand(1, 3, 20, 30)
    path = tmp_path / "sub" / "out.png"
    write_png(image, path)
    back = read_image(path)
    assert (back - image).abs().max() <= 0.5 / 255 + 1e-6
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    assert encode_png(image[0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_written_files_get_normal_permissions(tmp_path):
    import os

    path = tmp_path / "out.png"
    write_png(torch.rand(1, 3, 8, 8), path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
