"""RandomStylize as a training-loop transform: fresh yet reproducible draws in DataLoader
workers, unreadable styles, input ranges and types, per-item batches, devices.

Real images (examples/) and the shipped decoders, at 32-40 px to stay fast."""

import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from lwst.image_io import read_image, resize_longest
from lwst.transforms import RandomStylize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STYLES = [EXAMPLES / "texture_strokes.jpg", EXAMPLES / "texture_mosaic.jpg"]


def _coffee(side: int = 32) -> torch.Tensor:
    """A real photo, ``(3, H, W)`` float in [0, 1]."""
    return resize_longest(read_image(str(EXAMPLES / "coffee.jpg")), side)[0]


def _coffee_uint8(side: int = 32) -> torch.Tensor:
    return (_coffee(side) * 255).round().to(torch.uint8)


class _Coffee(torch.utils.data.Dataset):
    """Eight copies of one photo through ``transform`` (imported by the worker script)."""

    def __init__(self, transform):
        self.image, self.transform = _coffee(), transform

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return self.transform(self.image)


_EPOCHS_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from test_random_stylize import STYLES, _Coffee
from lwst.transforms import RandomStylize

def epochs(count):
    torch.manual_seed(7)
    dataset = _Coffee(RandomStylize(STYLES, p=0.5, seed=0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    return dataset.image, [torch.cat(list(loader)) for _ in range(count)]

image, (first, second) = epochs(2)
_, (again,) = epochs(1)
print(json.dumps({{
    "stylised": [[not torch.equal(item, image) for item in e] for e in (first, second)],
    "epochs_equal": torch.equal(first, second), "run_repeats": torch.equal(first, again)}}))
"""


def test_each_dataloader_epoch_draws_afresh_and_torch_manual_seed_repeats_the_run():
    """Non-persistent workers start afresh each epoch; seeding them from ``seed`` alone made
    every epoch the same augmentation. A fresh interpreter, as in test_feedforward (forked
    workers after a Prefect flow exit 1)."""
    script = _EPOCHS_SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert not got["epochs_equal"]
    assert got["run_repeats"]
    for stylised in got["stylised"]:  # p=0.5 per item: some of each
        assert 0 < sum(stylised) < len(stylised)


def _truncated_jpeg(path: Path) -> Path:
    data = (EXAMPLES / "texture_mosaic.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _rs_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "RandomStylize" in str(w.message)]


def test_an_unreadable_style_is_dropped_with_one_warning_and_another_drawn(tmp_path):
    for name in ("texture_strokes.jpg", "sailboats_drawing.jpg"):
        (tmp_path / name).write_bytes((EXAMPLES / name).read_bytes())
    _truncated_jpeg(tmp_path / "broken.jpg")
    transform = RandomStylize(tmp_path, p=1.0, seed=0)
    batch = _coffee_uint8().expand(4, -1, -1, -1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [transform(batch) for _ in range(3)]  # 12 draws among 3 styles
    messages = _rs_warnings(caught)
    assert len(messages) == 1, messages
    assert "broken.jpg" in messages[0] and "truncated" in messages[0]
    for out in outs:
        assert out.shape == batch.shape and out.dtype == torch.uint8
        assert (out.float() - batch.float()).abs().mean(dim=(1, 2, 3)).min() > 5


def test_a_style_folder_with_nothing_readable_is_refused_naming_the_folder(tmp_path):
    folder = tmp_path / "only_broken"
    folder.mkdir()
    _truncated_jpeg(folder / "broken.jpg")
    transform = RandomStylize(folder, p=1.0, seed=0)
    with pytest.warns(UserWarning, match="broken.jpg"), pytest.raises(
            ValueError, match=f"no readable style left in the style folder {folder}"):
        transform(_coffee())


@pytest.mark.parametrize("p", [0.0, 1.0])
@pytest.mark.parametrize("scale, shift", [(255.0, 0.0), (2.0, -1.0)], ids=["0-255", "-1-1"])
def test_float_input_outside_unit_range_is_refused_whatever_p(p, scale, shift):
    image = _coffee() * scale + shift
    low, high = image.min().item(), image.max().item()
    with pytest.raises(ValueError) as refused:
        RandomStylize(STYLES, p=p, seed=0)(image)
    message = str(refused.value)
    assert message.startswith("RandomStylize expects float images in [0, 1] or uint8, got "
                              f"float32 values in [{low:.4g}, {high:.4g}]")
    assert "Normalize" in message and "\n" not in message
    barely_over = (_coffee() * (1 + 5e-4)).to(torch.float16)  # within the tolerance
    assert RandomStylize(STYLES, p=p, seed=0)(barely_over).shape == barely_over.shape


def test_a_batch_decides_per_item_whether_to_stylise():
    batch = _coffee_uint8().expand(16, -1, -1, -1).clone()
    before = batch.clone()
    out = RandomStylize(STYLES, p=0.5, seed=0)(batch)
    assert torch.equal(batch, before)  # not modified in place
    assert out.shape == batch.shape and out.dtype == torch.uint8
    same = [torch.equal(out[i], batch[i]) for i in range(16)]
    assert 0 < sum(same) < 16, same
    changed = (out.float() - batch.float()).abs().mean(dim=(1, 2, 3))
    assert all(changed[i] > 5 for i in range(16) if not same[i])
    assert torch.equal(RandomStylize(STYLES, p=0.5, seed=0)(batch), out)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_a_pil_image_comes_back_as_pil_of_the_same_mode_and_size(mode):
    rgb = Image.open(EXAMPLES / "cat.jpg").convert("RGB").resize((40, 32))
    pil = rgb.convert(mode)
    if mode == "RGBA":
        pil.putalpha(Image.linear_gradient("L").resize(pil.size))
    out = RandomStylize(STYLES, p=1.0, seed=0)(pil)
    assert isinstance(out, Image.Image) and out.mode == mode and out.size == pil.size
    diff = np.abs(np.asarray(out.convert("RGB"), float) - np.asarray(pil.convert("RGB"), float))
    assert diff.mean() > 5
    if mode == "RGB":  # the same pixels as the tensor path
        tensor = RandomStylize(STYLES, p=1.0, seed=0)(torch.from_numpy(np.asarray(rgb).copy())
                                                      .permute(2, 0, 1))
        assert np.array_equal(np.asarray(out), tensor.permute(1, 2, 0).numpy())
    if mode == "RGBA":
        assert out.getchannel("A").tobytes() == pil.getchannel("A").tobytes()
    assert RandomStylize(STYLES, p=0.0)(pil) is pil


def test_a_tv_tensors_image_comes_back_as_one():
    image = tv_tensors.Image(_coffee_uint8())
    out = RandomStylize(STYLES, p=1.0, seed=0)(image)
    assert type(out) is tv_tensors.Image
    assert out.shape == image.shape and out.dtype == torch.uint8
    plain = RandomStylize(STYLES, p=1.0, seed=0)(image.as_subclass(torch.Tensor))
    assert torch.equal(out.as_subclass(torch.Tensor), plain)
    assert RandomStylize(STYLES, p=0.0)(image) is image


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("p", [0.0, 1.0])
def test_cuda_requested_without_cuda_fails_clearly_at_the_first_call(p):
    transform = pickle.loads(pickle.dumps(RandomStylize(STYLES, p=p, device="cuda")))
    assert not torch.cuda.is_initialized()
    with pytest.raises(RuntimeError, match="^RandomStylize: device 'cuda': torch sees no CUDA "
                                           "device on this machine$"):
        transform(_coffee())
