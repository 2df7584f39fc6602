"""`lwst.arrays`: the one tensor <-> uint8 HWC conversion rounds and clamps as the hand-written
copies it replaced did (bit for bit), whatever the dtype and memory layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lwst.arrays import from_uint8_hwc, to_uint8_hwc


def _values() -> torch.Tensor:
    """(3, 16, 24): out-of-range values, exact halves between two levels, and noise."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 16, 24, generator=g) * 1.2 - 0.1
    x[0, 0, :20] = (torch.arange(20) + 0.5) / 255  # ties: round half to even, as numpy does
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_to_uint8_is_the_clamped_rounded_float32_product(dtype):
    x = _values().to(dtype)
    old = (x.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255).round()
    ours = to_uint8_hwc(x)
    assert ours.dtype == np.uint8 and ours.shape == (16, 24, 3) and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, old.astype(np.uint8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_from_uint8_divides_in_the_target_dtype(dtype):
    arr = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    ours = from_uint8_hwc(arr, "cpu", dtype)
    old = torch.from_numpy(arr).permute(2, 0, 1).to("cpu", dtype) / 255.0
    assert ours.dtype == dtype and ours.shape == (3, 9, 7)
    assert torch.equal(ours, old)


def test_a_round_trip_through_uint8_is_exact():
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    np.testing.assert_array_equal(to_uint8_hwc(from_uint8_hwc(arr)), arr)
