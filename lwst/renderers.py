"""One texture-rendering interface, three renderers: ``gatys``, ``wct``, ``adain``.

``render_batch(contents, exemplars, config, vgg)`` paints a batch ``(B, 3, H, W)`` of (warped)
contents, one exemplar each, and returns one `RenderResult` per item:

- ``gatys``: multi-scale optimisation (`lwst.render.render_texture`), item by item; the
  quality mode.
- ``wct``: universal style transfer (Li et al. 2017): whiten/colour at relu5_1 ... relu1_1,
  coarse first, each level decoded by its trained decoder; one forward pass per level for the
  whole batch.
- ``adain``: AdaIN at relu4_1 (Huang & Belongie 2017), one encoder and one decoder pass.

Whatever the renderer, ``content_loss`` / ``style_loss`` / ``total_loss`` are measured after
rendering with one yardstick (`measure_losses`: the Gatys objective, relu4_2 content distance
to the warped content and Gram distance to the exemplar, each divided by its target's squared
norm), so rows of different renderers compare. It is evaluated at a longest side of at most
``LOSS_SIDE`` px (output, content and exemplar scaled alike): three VGG passes at 512 px would
cost more than the AdaIN render itself. A very wide or tall image is measured larger, so that
its shorter side keeps the `MIN_TEXTURE_SIDE` px relu5_1 needs (`yardstick_side`): whatever
passed the size check is measured.

Feed-forward inputs are reflection-padded to a multiple of 16 (relu5_1 is four poolings
deep) and cropped back, so any output size decodes to exactly its own shape. Colour
preservation is the same luminance-only transfer as gatys: the renderer sees the content's
luminance and the exemplar's mean/std-matched luminance, and the result's luminance is
recombined with the content's chroma.
"""

from __future__ import annotations

import math
import threading
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst import feature_cache, feature_transforms
from lwst.config import RENDERERS, RenderConfig
from lwst.decoders import Decoder, DecoderInfo, decoder_path, level_tap, load_decoder
from lwst.errors import InputError
from lwst.feature_transforms import adain, wct
from lwst.image_io import resize_longest
from lwst.losses import StyleTargets, as_rgb, objective_terms, style_targets
from lwst.render import RenderResult, luminance_inputs, render_texture, rgb_to_yiq, with_chroma
from lwst.safety import MIN_TEXTURE_SIDE
from lwst.vgg import CONTENT_LAYER, STYLE_LAYERS, VGG19Features, at_dtype, feature_dtype

FEED_FORWARD = ("wct", "adain")
WCT_LEVELS = (5, 4, 3, 2, 1)  # every level with a decoder, coarse to fine (docs/method.md)
PAD_MULTIPLE = 16
LOSS_SIDE = 256

_decoders: dict[tuple[str, int, str, str, str], tuple[Decoder, DecoderInfo]] = {}
_decoders_lock = threading.Lock()


def style_features(vgg: VGG19Features, exemplar: Tensor, taps: list[str]) -> dict[str, Tensor]:
    """``vgg``'s features of an exemplar at ``taps``, remembered across calls by the exemplar's
    bytes (`lwst.feature_cache`): a dataset reuses few styles over many batches, and each
    encode at 512 px costs as much as a content's."""
    def encode() -> dict[str, Tensor]:
        with torch.no_grad():
            return vgg(exemplar, taps)

    return feature_cache.remembered(vgg, exemplar, ("features", *taps), encode)


def yardstick_grams(vgg: VGG19Features, exemplar: Tensor) -> StyleTargets:
    """The yardstick's `StyleTargets` of an exemplar (already at the yardstick's size),
    remembered like `style_features`: only the Gram matrices are kept (~2.4 MB a style)."""
    grams = feature_cache.remembered(vgg, exemplar, ("grams",),
                        lambda: style_targets(vgg, exemplar).grams)
    return StyleTargets.of_grams(grams)


def get_decoder(kind: str, level: int, device: torch.device, decoder_dir: str | None = None,
                dtype: torch.dtype = torch.float32) -> tuple[Decoder, DecoderInfo]:
    """The ``kind`` decoder for reluL_1, loaded once per process, device and dtype."""
    path = decoder_path(kind, level, decoder_dir)
    key = (kind, level, str(device), str(path), str(dtype))
    with _decoders_lock:
        if key not in _decoders:
            decoder, info = load_decoder(path, kind, level, device)
            _decoders[key] = (decoder.to(dtype), info)
        return _decoders[key]


def wct_levels(top_level: int) -> tuple[int, ...]:
    """The WCT cascade's levels, coarse to fine, from relu<top_level>_1 down to relu1_1
    (`RenderConfig.wct_top_level`)."""
    return tuple(level for level in WCT_LEVELS if level <= top_level)


def decoder_ids(renderer: str, device: torch.device, decoder_dir: str | None = None,
                wct_top_level: int = RenderConfig.wct_top_level) -> str:
    """The ids of the decoders a renderer uses, for the metadata (empty for gatys)."""
    if renderer == "adain":
        return get_decoder("adain", 4, device, decoder_dir)[1].decoder_id
    if renderer == "wct":
        return ",".join(get_decoder("wct", lv, device, decoder_dir)[1].decoder_id
                        for lv in wct_levels(wct_top_level))
    return ""


def measure_losses(vgg: VGG19Features, image: Tensor, content: Tensor, exemplar: Tensor,
                   config: RenderConfig) -> tuple[float, float, float]:
    """The shared yardstick of one ``(1, 3, H, W)`` image: `measure_losses_batch` of one."""
    return measure_losses_batch(vgg, image, content, [exemplar], config)[0]


def measure_losses_batch(vgg: VGG19Features, images: Tensor, contents: Tensor,
                         exemplars: list[Tensor], config: RenderConfig,
                         ) -> list[tuple[float, float, float]]:
    """The shared yardstick: (content, style, total) of the Gatys objective per image of
    ``(B, 3, H, W)`` outputs against their contents (same shape) and exemplars, at a longest
    side of at most `LOSS_SIDE` (each exemplar at the render's style size, scaled alike), or
    as much more as keeps the shorter side at `MIN_TEXTURE_SIDE` (`yardstick_side`).

    The outputs are encoded in one VGG pass and the contents in another; each exemplar's Gram
    matrices are remembered across calls (`yardstick_grams`), as a dataset reuses few styles.
    """
    dtype, device = vgg.mean.dtype, vgg.mean.device
    side = max(images.shape[-2:])
    scale = min(1.0, LOSS_SIDE / side)
    style_side = max(MIN_TEXTURE_SIDE, round(int(config.style_size or side) * scale))
    small = yardstick_side(*images.shape[-2:], round(side * scale))
    images = resize_longest(as_rgb(images).to(device, dtype), small).clamp(0, 1)
    contents = resize_longest(as_rgb(contents).to(device, dtype), small).clamp(0, 1)
    found: dict[int, StyleTargets] = {}
    for ex in exemplars:
        if id(ex) not in found:
            ex_side = yardstick_side(*ex.shape[-2:], style_side)
            found[id(ex)] = yardstick_grams(
                vgg, resize_longest(ex.to(device, dtype), ex_side).clamp(0, 1))
    with torch.no_grad():
        content_targets = vgg(contents, [CONTENT_LAYER])[CONTENT_LAYER]
        outputs = vgg(images, [*STYLE_LAYERS, CONTENT_LAYER])
    figures = []
    for i, ex in enumerate(exemplars):
        c, s = objective_terms({k: f[i : i + 1] for k, f in outputs.items()},
                               content_targets[i : i + 1], found[id(ex)])
        total = config.content_weight * c + config.style_weight * s
        figures.append((float(c), float(s), float(total)))
    return figures


def yardstick_side(height: int, width: int, longest: int) -> int:
    """The longest side to measure a ``height x width`` image at: ``longest``, raised (up to
    the image's own size) where it would leave the shorter side under `MIN_TEXTURE_SIDE`
    (relu5_1 is four poolings deep). A 4000x200 render at 400 px is 400x20: at 256 px its
    shorter side would be 13 and VGG's last pooling empty, so it is measured at 320x16."""
    long_side, short_side = max(height, width), min(height, width)
    needed = math.ceil(MIN_TEXTURE_SIDE * long_side / max(1, short_side))
    return max(longest, min(long_side, needed))


def _pad(images: Tensor) -> tuple[Tensor, int, int]:
    height, width = images.shape[-2:]
    ph, pw = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    if ph or pw:
        mode = "reflect" if ph < height and pw < width else "replicate"
        images = F.pad(images, (0, pw, 0, ph), mode=mode)
    return images, height, width


def _feed_forward(contents: Tensor, exemplars: list[Tensor], kind: str, alpha: float,
                  vgg: VGG19Features, decoder_dir: str | None,
                  precision: str = "float32",
                  wct_top_level: int = RenderConfig.wct_top_level) -> Tensor:
    """The feed-forward pass for a batch; returns ``(B, 3, H, W)`` in [0, 1], float32. WCT
    cascades from relu<wct_top_level>_1 down to relu1_1.

    The encoder and decoders run at ``precision`` (`lwst.vgg.feature_dtype`); the WCT and AdaIN
    statistics in float64 / float32 whatever it is."""
    device = vgg.mean.device
    dtype = feature_dtype(precision, device)
    vgg = at_dtype(vgg, dtype)
    padded, height, width = _pad(contents)
    levels = wct_levels(wct_top_level) if kind == "wct" else (4,)
    taps = [level_tap(lv) for lv in levels]
    with torch.no_grad():
        # A dataset reuses few styles: each distinct exemplar is encoded once per process.
        encoded: dict[int, dict[str, Tensor]] = {}
        for ex in exemplars:
            if id(ex) not in encoded:
                encoded[id(ex)] = style_features(vgg, ex, taps)
        style_feats = [encoded[id(ex)] for ex in exemplars]
        image = padded
        for level, tap in zip(levels, taps, strict=True):
            decoder, _ = get_decoder(kind, level, device, decoder_dir, dtype)
            fc = vgg(image, [tap])[tap]
            styles = [sf[tap] for sf in style_feats]
            target = (wct(fc, styles, alpha, ridge=feature_transforms.LEVEL_RIDGES[level])
                      if kind == "wct" else adain(fc, styles, alpha))
            image = decoder(target.to(dtype)).clamp(0, 1)
    return image[..., :height, :width].float()


def render_batch(contents: Tensor, exemplars: list[Tensor], config: RenderConfig,
                 vgg: VGG19Features, seed: int = 0, progress=None,
                 measure: bool = True) -> list[RenderResult]:
    """Paint each content of the batch with its exemplar; results on ``contents``' device.

    ``measure=False`` skips the yardstick (losses stay NaN), e.g. in augmentation."""
    renderer = config.renderer
    if renderer not in RENDERERS:
        raise InputError(f"renderer must be one of {RENDERERS}, got {renderer!r}")
    if contents.dim() != 4 or contents.shape[1] != 3 or len(exemplars) != contents.shape[0]:
        raise ValueError("render_batch expects (B, 3, H, W) contents and B exemplars")
    started = time.perf_counter()
    out_device, out_dtype = contents.device, contents.dtype
    device, dtype = vgg.mean.device, vgg.mean.dtype
    contents = contents.detach().to(device, dtype).clamp(0, 1)
    moved: dict[int, Tensor] = {}  # the same exemplar object stays one object
    for ex in exemplars:
        moved.setdefault(id(ex), ex.detach().to(device, dtype).clamp(0, 1))
    exemplars = [moved[id(ex)] for ex in exemplars]
    if renderer == "gatys":
        results = [render_texture(contents[i:i + 1], exemplars[i], config, vgg, seed=seed,
                                  progress=progress) for i in range(len(exemplars))]
        images = [r.image.to(device, dtype) for r in results]
        seconds = [r.seconds for r in results]
    else:
        style_side = config.style_size or max(contents.shape[-2:])
        resized = {id(ex): resize_longest(ex, style_side).clamp(0, 1) for ex in exemplars}
        styled = [resized[id(ex)] for ex in exemplars]
        if progress:
            progress("render", 0, 1)
        if config.preserve_color:
            luma, luma_styles, chroma = luminance_inputs(contents, styled)
            out = _feed_forward(luma.expand(-1, 3, -1, -1),
                                [y.expand(-1, 3, -1, -1) for y in luma_styles], renderer,
                                config.style_strength, vgg, config.decoder_dir,
                                config.precision, config.wct_top_level)
            out = with_chroma(rgb_to_yiq(out)[:, :1], chroma)
        else:
            out = _feed_forward(contents, styled, renderer, config.style_strength, vgg,
                                config.decoder_dir, config.precision, config.wct_top_level)
        if progress:
            progress("render", 1, 1)
        images = list(out.split(1))
        share = (time.perf_counter() - started) / len(images)
        seconds = [share] * len(images)
    figures = [(float("nan"),) * 3] * len(images)
    if measure:
        figures = measure_losses_batch(vgg, torch.cat(images), contents, exemplars, config)
    return [RenderResult(image=image.to(out_device, out_dtype), content_loss=c, style_loss=s,
                         total_loss=total, seconds=seconds[i])
            for i, (image, (c, s, total)) in enumerate(zip(images, figures, strict=True))]


def render(content: Tensor, exemplar: Tensor, config: RenderConfig, vgg: VGG19Features,
           seed: int = 0, progress=None, measure: bool = True) -> RenderResult:
    """One item: ``(1, 3, H, W)`` content and exemplar."""
    return render_batch(content, [exemplar], config, vgg, seed=seed, progress=progress,
                        measure=measure)[0]
