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
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from lwst.devices import DeviceError
from lwst.errors import InputError
from lwst.image_io import ImageInputError, read_image, resize_longest
from lwst.transforms import RandomStylize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STYLES = [EXAMPLES / "texture_strokes.jpg", EXAMPLES / "texture_mosaic.jpg"]
BICUBIC = InterpolationMode.BICUBIC


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


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("p", [0.0, 1.0])
@pytest.mark.parametrize("make, cause", [
    (lambda x: x * 255, "(0..255 data? divide by 255"),
    (lambda x: x * 2 - 1, "(Normalize'd? put RandomStylize before Normalize"),
    (lambda x: TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD),
     "(Normalize'd? put RandomStylize before Normalize"),
    (lambda x: x / x.max() * 1.3, "(0..255 data or Normalize'd?"),
], ids=["0-255", "-1-1", "imagenet-normalize", "just-over-tolerance"])
def test_float_input_outside_unit_range_is_refused_naming_the_likely_cause(p, make, cause):
    image = make(_coffee())
    low, high = image.min().item(), image.max().item()
    with pytest.raises(ValueError) as refused:
        RandomStylize(STYLES, p=p, seed=0)(image)
    message = str(refused.value)
    assert message.startswith("RandomStylize expects float images in [0, 1] or uint8, got "
                              f"float32 values in [{low:.4g}, {high:.4g}] {cause}")
    assert "\n" not in message


def test_nan_input_is_refused_whatever_p():
    image = _coffee()
    image[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="^RandomStylize expects float images in \\[0, 1\\] or "
                                         "uint8, got float32 with NaN or infinite values$"):
        RandomStylize(STYLES, p=0.0)(image)


@pytest.mark.parametrize("pipeline", ["v1 ToTensor+Resize bicubic", "v2 RandomResizedCrop bicubic"])
def test_bicubic_resampled_float_input_is_taken_and_clamped(pipeline):
    """Bicubic resizing overshoots [0, 1] by a few percent on real photos (up to 0.19
    measured); refusing it killed training at the first sample, even at p=0."""
    photo = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")  # 40 px: [-0.04, 1.05]
    if pipeline.startswith("v1"):
        resize = T.Compose([T.ToTensor(), T.Resize(40, interpolation=BICUBIC, antialias=True)])
    else:
        torch.manual_seed(0)
        resize = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                             v2.RandomResizedCrop(40, interpolation=BICUBIC)])
    image = resize(photo)
    assert image.min() < -1e-3 or image.max() > 1 + 1e-3  # it does overshoot
    assert RandomStylize(STYLES, p=0.0)(image) is image
    out = RandomStylize(STYLES, p=1.0, seed=0)(image)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out - image.clamp(0, 1)).abs().mean() > 0.02  # stylised
    same_clamped = RandomStylize(STYLES, p=1.0, seed=0)(image.as_subclass(torch.Tensor)
                                                        .clamp(0, 1))
    assert torch.equal(out.as_subclass(torch.Tensor), same_clamped)


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
    # lwst.devices' DeviceError (an InputError), as stylize raises it (a RuntimeError before)
    with pytest.raises(DeviceError, match="^RandomStylize: device 'cuda': torch sees no CUDA "
                                          "device on this machine$"):
        transform(_coffee())


# --- the style cache (bounded by bytes, one copy per style) -------------------------------------


def test_byte_lru_drops_the_least_recently_used_beyond_its_budget_and_pickles_empty():
    from lwst.byte_lru import ByteLRU

    cache = ByteLRU(max_bytes=3 * 400)  # three 100-float tensors
    for key in "abc":
        cache.put(key, torch.zeros(100))
    assert cache.get("a") is not None  # now the most recently used
    cache.put("d", torch.zeros(100))
    assert list(cache) == ["c", "a", "d"] and cache.nbytes == 1200
    cache.put("a", torch.zeros(50))  # replaced, not counted twice
    assert cache.nbytes == 1000 and list(cache) == ["c", "d", "a"]
    cache.put("huge", torch.zeros(1000))  # over the budget alone: the newest stays
    assert list(cache) == ["huge"] and cache.nbytes == 4000
    copy = pickle.loads(pickle.dumps(cache))
    assert len(copy) == 0 and copy.max_bytes == 1200
    with pytest.raises(ValueError, match="max_bytes must be an int >= 0, got -1"):
        ByteLRU(-1)


def _style_folder(folder: Path, count: int) -> Path:
    """``count`` distinct real styles (the example images)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(EXAMPLES.glob("*.jpg"))[:count]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_the_style_cache_stays_within_its_byte_budget(tmp_path):
    """One cached style per draw, never freed, was ~40 GB per worker with Painter by Numbers."""
    folder = _style_folder(tmp_path / "styles", 8)
    budget = 2 * 32 * 32 * 3 * 4  # two 32-px styles as float32
    transform = RandomStylize(folder, p=1.0, seed=0, cache_bytes=budget)
    batch = _coffee_uint8().expand(4, -1, -1, -1)
    for _ in range(4):  # 16 draws among 8 styles
        out = transform(batch)
        assert out.shape == batch.shape
        assert transform._cache.nbytes <= budget and 1 <= len(transform._cache) <= 2
    assert pickle.loads(pickle.dumps(transform))._cache.max_bytes == budget


def test_inputs_of_many_sizes_keep_one_copy_per_style():
    """The cache was keyed by (style, input side): v2.Resize(160) over photos of varying aspect
    added a copy of every style per new side (192 MiB after 240 calls with 3 styles)."""
    transform = RandomStylize(STYLES, p=1.0, seed=0)
    photo = _coffee(64)
    for side in (32, 36, 40, 34, 44, 38):
        batch = resize_longest(photo[None], side).expand(4, -1, -1, -1)  # 4 draws of 2 styles
        assert max(transform(batch).shape[-2:]) == side
    assert len(transform._cache) == len(STYLES)
    # each kept at the largest side asked for, and resized in memory for the others
    assert [max(transform._cache.get(k).shape[-2:]) for k in transform._cache] == [44, 44]


# --- constructor checks -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "folder/", "file", "file in a list"])
def test_a_style_path_that_does_not_exist_is_refused_at_construction(tmp_path, kind):
    missing = tmp_path / ("nope" if kind.startswith("folder") else "nope.jpg")
    given = f"{missing}/" if kind == "folder/" else missing
    # an ImageInputError (an InputError), as read_image refuses a missing file
    with pytest.raises(ImageInputError, match=f"{missing}.*no such file"):
        RandomStylize([STYLES[0], given] if kind == "file in a list" else given)


@pytest.mark.parametrize(("style_size", "reason"), [
    (-5, "-5 is outside the supported range 8..8192"), (0, "0 is outside"), (4, "4 is outside"),
    (8193, "8193 is outside"), (1.5, "1.5 is not a whole number of pixels"),
    (64.0, "64.0 is not a whole number of pixels"),  # "outside the supported range" before
    (True, r"True \(a bool\) is not a number of pixels"),
    ("64", r"'64' \(a str\) is not a number of pixels")])
def test_style_size_is_checked_at_construction(style_size, reason):
    with pytest.raises(InputError, match=f"^RandomStylize: style_size {reason}"):
        RandomStylize(STYLES, style_size=style_size)


@pytest.mark.parametrize("style, expected", [
    (lambda: _coffee() * 255, r"styles\[1\] \(a tensor\) must be float in \[0, 1\] or uint8, "
                              r"got float32 values in .* \(0..255 data\?"),
    (lambda: _coffee().permute(1, 2, 0), r"styles\[1\] \(a tensor\) must be \(3, H, W\) or "
                                         r"\(1, 3, H, W\), or grey .*, got \(21, 32, 3\) "
                                         r"\(channels last\? use .permute\(2, 0, 1\)\)$"),
    (lambda: _coffee_uint8().expand(2, -1, -1, -1), r"styles\[1\] .*, got \(2, 3, 21, 32\)$"),
], ids=["0-255 float", "HWC", "a batch"])
def test_a_tensor_style_is_checked_like_an_input_image(style, expected):
    with pytest.raises(ValueError, match=f"^RandomStylize: {expected}"):
        RandomStylize([STYLES[0], style()])


# --- a torchvision v2 transform -----------------------------------------------------------------


def test_it_is_a_v2_transform_that_stylises_only_the_images_of_a_sample():
    """(image, target) tuples and dicts crashed, and a mask was stylised."""
    image = tv_tensors.Image(_coffee_uint8())
    boxes = tv_tensors.BoundingBoxes([[2, 2, 20, 16]], format="XYXY", canvas_size=(21, 32))
    mask = tv_tensors.Mask(torch.zeros(3, 21, 32, dtype=torch.uint8))
    labels = torch.tensor([3])
    transform = RandomStylize(STYLES, p=1.0, seed=0)
    assert isinstance(transform, v2.Transform)
    alone = RandomStylize(STYLES, p=1.0, seed=0)(image)

    out_image, out_boxes = v2.Compose([v2.RandomHorizontalFlip(p=0.0), transform])(image, boxes)
    assert type(out_image) is tv_tensors.Image and torch.equal(out_image, alone)
    assert out_boxes is boxes

    sample = {"image": image, "boxes": boxes, "masks": mask, "labels": labels, "name": "a"}
    out = RandomStylize(STYLES, p=1.0, seed=0)(sample)
    assert torch.equal(out["image"], alone)
    assert all(out[k] is sample[k] for k in ("boxes", "masks", "labels", "name"))

    plain_then_label = RandomStylize(STYLES, p=1.0, seed=0)((_coffee_uint8(), labels))
    assert torch.equal(plain_then_label[0], alone.as_subclass(torch.Tensor))
    assert plain_then_label[1] is labels
    assert transform(mask) is mask
    with pytest.raises(TypeError, match="^RandomStylize expects a tensor or a PIL image .*, "
                                        "got ndarray$"):
        transform(np.zeros((24, 32, 3), np.uint8))


    # what worked before still does: v1 Compose, pickling after use, p=0 giving the input back
    photo = Image.open(EXAMPLES / "cat.jpg").convert("RGB").resize((40, 32))
    v1_out = T.Compose([T.ToTensor(), transform])(photo)
    assert v1_out.shape == (3, 32, 40) and v1_out.dtype == torch.float32
    copy = pickle.loads(pickle.dumps(transform))  # after use: fresh generator and cache
    assert len(copy._cache) == 0
    fresh = RandomStylize(STYLES, p=1.0, seed=0)
    assert torch.equal(T.Compose([T.ToTensor(), copy])(photo), fresh(T.ToTensor()(photo)))
    assert RandomStylize(STYLES, p=0.0)(image) is image
    assert RandomStylize(STYLES, p=0.0)(sample)["image"] is image


# --- grey tensors, style folders, the docstring -------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_a_grey_tensor_comes_back_grey_in_its_shape(dtype):
    """(1, H, W) (MNIST after ToTensor) was refused while a PIL 'L' image was taken. A grey
    tensor style is taken too."""
    grey = _coffee_uint8()[1:2] if dtype == torch.uint8 else _coffee()[1:2]
    out = RandomStylize(STYLES, p=1.0, seed=0)(grey)
    assert out.shape == (1, 21, 32) and out.dtype == dtype
    scale = 1 if dtype == torch.uint8 else 255
    assert (out.float() - grey.float()).abs().mean() * scale > 5
    batch = grey.expand(8, -1, -1, -1).clone()  # (B, 1, H, W), half of it untouched
    outs = RandomStylize(STYLES, p=0.5, seed=0)(batch)
    assert outs.shape == batch.shape
    same = [torch.equal(outs[i], batch[i]) for i in range(8)]
    assert 0 < sum(same) < 8
    styled_by_grey = RandomStylize(grey, p=1.0, seed=0)(_coffee_uint8())
    assert styled_by_grey.shape == (3, 21, 32)
    assert (styled_by_grey.float() - _coffee_uint8().float()).abs().mean() > 5


def test_a_style_folder_with_images_only_in_subfolders_is_searched(tmp_path):
    """WikiArt keeps its paintings in one subfolder per movement; make-manifest searches them,
    the transform said 'no images in ...'."""
    _style_folder(tmp_path / "styles" / "Impressionism", 2)
    _style_folder(tmp_path / "styles" / "Cubism", 1)
    transform = RandomStylize(tmp_path / "styles", p=1.0, seed=0)
    assert len(transform.styles) == 3
    assert transform(_coffee_uint8()).shape == (3, 21, 32)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images in the style folder .*empty "
                                         r"\(subfolders searched too\)"):
        RandomStylize(tmp_path / "empty")


def test_the_module_docstring_example_calls_take_the_arguments_it_gives():
    """It showed DataLoader(..., transform=...): a TypeError in anyone's pasted code."""
    import ast
    import inspect
    import textwrap

    import lwst.transforms

    lines = lwst.transforms.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    end = next(i for i in range(start, len(lines)) if lines[i] and not lines[i][0].isspace())
    block = textwrap.dedent("\n".join(lines[start:end]))
    tree = ast.parse(block)
    namespace: dict = {}
    exec(compile(ast.Module([n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))],
                            []), "doc", "exec"), namespace)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert any(ast.unparse(c.func) == "DataLoader" for c in calls)
    for call in calls:
        func = eval(ast.unparse(call.func), namespace)
        inspect.signature(func).bind(*call.args, **{k.arg: None for k in call.keywords})


_FIRST_CALL_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from test_random_stylize import STYLES, _coffee
from lwst.transforms import RandomStylize

image = _coffee()
torch.manual_seed(0)
before = torch.get_rng_state()
RandomStylize(STYLES, p=1.0, seed=0)(image)
print(json.dumps({{"unchanged": torch.equal(before, torch.get_rng_state())}}))
"""


def test_the_first_call_leaves_the_global_torch_rng_alone():
    """Building VGG and the decoders drew their initial weights from the global torch RNG, so
    a worker's first sample shifted every random transform after this one. A fresh interpreter:
    here the models are already loaded."""
    script = _FIRST_CALL_SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"unchanged": True}


def test_a_remote_style_folder_is_listed_once_and_its_styles_read(tmp_path, s3_bucket,
                                                                  monkeypatch):
    """A remote prefix was taken as one style file ("cannot read" at every draw): it is now
    listed at construction (subfolders too, non-images skipped) on a real S3 server, the list
    pickles with the transform, and an empty prefix is refused naming it."""
    import s3fs

    bucket, options = s3_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", options["endpoint_url"])
    fs = s3fs.S3FileSystem(**options)
    fs.put_file(str(STYLES[0]), f"{bucket}/styles/strokes/a.jpg")
    fs.put_file(str(STYLES[1]), f"{bucket}/styles/mosaic/b.jpg")
    fs.pipe_file(f"{bucket}/styles/README.txt", b"not a style")
    transform = RandomStylize(f"s3://{bucket}/styles/", p=1.0, seed=0, style_size=64)
    assert transform.styles == [f"s3://{bucket}/styles/mosaic/b.jpg",
                                f"s3://{bucket}/styles/strokes/a.jpg"]
    assert pickle.loads(pickle.dumps(transform)).styles == transform.styles
    image = _coffee_uint8()
    out = transform(image)
    assert out.shape == image.shape and (out.float() - image.float()).abs().mean() > 5
    one = RandomStylize(f"s3://{bucket}/styles/mosaic/b.jpg")  # a file stays one style
    assert one.styles == [f"s3://{bucket}/styles/mosaic/b.jpg"]
    with pytest.raises(ValueError, match=f"no images in the style folder s3://{bucket}/none"):
        RandomStylize(f"s3://{bucket}/none")
