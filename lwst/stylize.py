"""One item, start to finish: content -> warp -> inpaint -> render -> files + metadata record.

`stylize` works on tensors (notebook use); `stylize_files` adds reading, atomic writing and the
metadata record, and is what the CLI and the Prefect tasks call. Which files an item writes is
`lwst.item_files`' rule; they are encoded from memory (the flow picture from the flow itself,
nothing read back), written in its order and rolled back together if any write fails, so an
item is either fully present or absent (a re-run then redoes exactly the missing items); then
the item's files an earlier run left that this write did not replace are removed.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from lwst import __version__, item_files, storage
from lwst.config import StylizeConfig, given_config, to_params, validate
from lwst.devices import resolve_device
from lwst.errors import InputError
from lwst.flow import (
    FlowStats,
    check_flow_name,
    encode_flo,
    flow_picture,
    flow_stats,
    hole_mask,
    resize_flow,
    warp_image,
)
from lwst.image_io import (
    ImageInputError,
    as_image,
    check_min_side,
    encode_image,
    output_format,
    read_image,
    resize_longest,
)
from lwst.inpaint import InpaintResult, inpaint_holes
from lwst.item import Item
from lwst.item_files import ItemOutputs
from lwst.memory import release_freed_memory
from lwst.metadata import empty_record
from lwst.render import RenderResult, tensor_summary
from lwst.renderers import decoder_ids, render
from lwst.safety import check_fits, check_outputs_apart, check_texture_fits
from lwst.vgg import VGG19Features, feature_dtype, load_vgg19
from lwst.warp_safety import FieldSafety, field_safety, scaled_field
from lwst.warping import WarpEstimate, estimate_warp

ProgressFn = Callable[[str, int, int], None]
ImageLike = Tensor | Image.Image


@dataclass(repr=False)
class WarpOutcome:
    """The geometric stage's outcome (`apply_geometry`). Tensors are float32 on the compute
    device, at the output size ``H x W``.

    - ``warped``: ``(1, 3, H, W)`` in [0, 1], the content warped and its holes inpainted;
    - ``flow``: ``(1, 2, H, W)`` backward flow in pixels (x, y): output pixel ``p`` samples the
      content at ``p + flow[p]``; strength and the field's form applied, upsampled;
    - ``stats``: its magnitude (`lwst.flow.FlowStats`: mean, p95, max px; mean as a fraction of
      the diagonal);
    - ``safety``: the share of pixels where it folds or stretches (`lwst.warp_safety`);
    - ``inpainted_frac``: the share of pixels the warp left empty and inpainting filled;
    - ``estimate``: what the estimator returned (`lwst.warping.WarpEstimate`: the flow at the
      analysis size, confidence, the field applied, losses, seconds);
    - ``seconds_inpaint``: wall time of warping and inpainting.
    """

    warped: Tensor
    flow: Tensor
    stats: FlowStats
    safety: FieldSafety
    inpainted_frac: float
    estimate: WarpEstimate
    seconds_inpaint: float

    def __repr__(self) -> str:
        """One line of shapes and figures (no tensor values)."""
        est = self.estimate
        confidence = "None" if est.confidence is None else f"{est.confidence:.3f}"
        return (f"WarpOutcome(warped={tensor_summary(self.warped)}, "
                f"flow={tensor_summary(self.flow)}, mean_px={self.stats.mean_px:.2f}, "
                f"max_px={self.stats.max_px:.2f}, confidence={confidence}, "
                f"applied={est.applied!r}, inpainted_frac={self.inpainted_frac:.4f})")


@dataclass(repr=False)
class StylizeResult:
    """What `stylize` returns. Tensors are float32 on the compute device (``config.device``),
    whatever the inputs were (uint8, PIL, ``(3, H, W)``), at the output size ``H x W``
    (`lwst.image_io.write_png` writes ``image``; ``.cpu()`` for numpy/matplotlib).

    - ``image``: ``(1, 3, H, W)`` in [0, 1], the final image: rendered when a texture was given,
      else the warped content, else the content resized;
    - ``warp``: the geometric stage (`WarpOutcome`: the warped content, the applied ``flow``,
      its figures), None where nothing was warped (no geometry, method ``none``, strength 0);
    - ``render``: the texture stage (`lwst.render.RenderResult`: losses, seconds), None without
      a texture;
    - ``base``: ``(1, 3, H, W)``, what the texture stage started from: the warped content, or
      the content resized when there was no warp (`lwst.stylize_batch.stylize_images` keeps
      it too; None where a producer did not keep it).
    """

    image: Tensor
    warp: WarpOutcome | None
    render: RenderResult | None
    base: Tensor | None = None

    def __repr__(self) -> str:
        """A few lines of shapes and figures: the default printed every tensor (7 606
        characters in a notebook)."""
        return (f"StylizeResult(image={tensor_summary(self.image)},\n"
                f"              warp={self.warp!r},\n"
                f"              render={self.render!r},\n"
                f"              base={tensor_summary(self.base)})")


def warp_content(content: Tensor, flow: Tensor, inpaint: str = "telea") -> InpaintResult:
    """The content under ``flow`` (at its own size) with the holes the warp opens filled: the
    product's warped content, also what the benchmarks score.

    Border padding: a sample within half a pixel of the edge is inside (`hole_mask`) and must
    not mix in black (it drew a dark seam along the edge of every hole that reaches it)."""
    return inpaint_holes(warp_image(content, flow, padding="border"), hole_mask(flow),
                         method=inpaint)


def apply_geometry(
    content: Tensor, geometry: Tensor | None, config: StylizeConfig, vgg: VGG19Features,
    estimate: WarpEstimate | None = None,
) -> WarpOutcome:
    """Estimate the warp on analysis views (unless given, e.g. from a batched pass), scale and
    upsample it, warp and inpaint the content."""
    if estimate is None:
        if geometry is None:
            raise InputError("apply_geometry needs a geometry exemplar or a warp estimate")
        estimate = estimate_warp(content, geometry, config.warp, vgg, seed=config.seed)
    height, width = content.shape[-2:]
    flow = scaled_field(estimate.flow.to(content.device, content.dtype), config.warp.strength,
                        config.warp.field)
    flow = resize_flow(flow, height, width)
    started = time.perf_counter()
    filled = warp_content(content, flow, config.warp.inpaint)
    return WarpOutcome(
        warped=filled.image,
        flow=flow,
        stats=flow_stats(flow),
        safety=field_safety(flow)[0],
        inpainted_frac=filled.inpainted_frac,
        estimate=estimate,
        seconds_inpaint=time.perf_counter() - started,
    )


def stylize(
    content: ImageLike,
    geometry: ImageLike | None,
    texture: ImageLike | None,
    config: StylizeConfig | None = None,
    progress: ProgressFn | None = None,
    warp_estimate: WarpEstimate | None = None,
) -> StylizeResult:
    """Run the item on images; content is resized to ``config.size`` (``config.upscale``
    False: only down, a smaller content is made at its own size).

    Each image is a tensor ``(1, 3, H, W)`` or ``(3, H, W)``, float in [0, 1] (what
    `lwst.image_io.read_image` gives) or uint8 (``torchvision.io.read_image``), or a PIL image;
    anything else (0..255 floats, NaN, channels last, a batch, 4 channels, an empty tensor, a
    side under 8 px) is refused up front with one `lwst.image_io.ImageInputError` (an
    `lwst.errors.InputError`, a ValueError) naming the argument (`lwst.image_io.as_image`).
    ``config`` None: the defaults (`StylizeConfig()`: the gatys renderer, the slowest).

    Either exemplar may be None. ``geometry`` None (or warp method ``none``): no warp, the
    texture is painted on the content. ``texture`` None: warp only, ``result.image`` is the
    warped, inpainted content and ``result.warp.flow`` the applied flow.

    Returns a `StylizeResult`: ``result.image`` is a float32 ``(1, 3, H, W)`` tensor in [0, 1]
    on the compute device whatever the inputs' type; ``result.warp`` / ``result.render`` hold
    the stages' figures. Seeded by ``config.seed`` (the same inputs and config give the same
    image) without re-seeding the caller's global torch generator. Runs under the caller's
    ``torch.no_grad()`` / ``torch.inference_mode()`` too.

    ``warp_estimate`` (from `lwst.warping.estimate_warps`, e.g. a batched GPU pass) replaces the
    estimation from ``geometry``.
    """
    config = given_config(config)
    given = {"content": as_image(content, "content", check_side=False),
             "geometry": None if geometry is None else as_image(geometry, "geometry",
                                                                check_side=False),
             "texture": None if texture is None else as_image(texture, "texture",
                                                              check_side=False)}
    content, geometry, texture = given.values()
    sized = sized_content(content, geometry, texture, config)
    with seeded_models(config) as (device, vgg):
        return _run(sized, geometry, texture, config, device, vgg, progress, warp_estimate)


def sized_content(content: Tensor, geometry: Tensor | None, texture: Tensor | None,
                  config: StylizeConfig, names: tuple[str, str, str] = ("content", "geometry",
                                                                         "texture"),
                  item: str | None = None) -> Tensor:
    """The content at the output size, once the checked images fit: the sizes the stages need
    first (their reasons say what to change; ``item`` prefixes them), then the minimum side
    of what was given (a 4 x 4 content would pass the first, upscaled 128 times), each named
    by ``names``."""
    sized = resize_longest(content, config.size, config.upscale)
    try:
        check_fits(*sized.shape[-2:], content_label(config), texture is not None)
        if texture is not None:
            check_texture_fits(*texture.shape[-2:])
    except ImageInputError as exc:
        if item is None:
            raise
        raise ImageInputError(f"{item}: {exc}") from None
    for name, image in zip(names, (content, geometry, texture), strict=True):
        if image is not None:
            check_min_side(image, name)
    return sized


@contextmanager
def seeded_models(config: StylizeConfig) -> Iterator[tuple[torch.device, VGG19Features]]:
    """The compute device and VGG, on a fork of the caller's generators seeded by
    ``config.seed`` (building a model draws its initial weights, the item is seeded): a
    training loop's own draws after the block are what they would have been without it."""
    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        vgg = load_vgg19(config.vgg_weights, device=device)  # never inference tensors
        seed_generators(config.seed, device)
        yield device, vgg


def seed_generators(seed: int, device: torch.device) -> None:
    """Seed the CPU generator and, on CUDA, that device's: what `torch.manual_seed` seeds for
    the item, without touching the other GPUs' generators (`stylize` forks only the ones it
    uses)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _run(sized: Tensor, geometry: Tensor | None, texture: Tensor | None, config: StylizeConfig,
         device: torch.device, vgg: VGG19Features, progress: ProgressFn | None,
         warp_estimate: WarpEstimate | None) -> StylizeResult:
    """`stylize`'s stages on checked inputs (``sized``: the content at the output size)."""
    content = sized.to(device)
    warp = None
    if item_files.warps(geometry is not None or warp_estimate is not None, config):
        if progress:
            progress("warp", 0, 1)
        warp = apply_geometry(content, None if geometry is None else geometry.to(device), config,
                              vgg, warp_estimate)
        if progress:
            progress("warp", 1, 1)
    base = warp.warped if warp is not None else content
    rendered = None
    if texture is not None:
        rendered = render(base, texture.to(device), config.render, vgg, seed=config.seed,
                          progress=progress, measure=config.render.measure_losses)
    image = rendered.image if rendered is not None else base
    return StylizeResult(image=image, warp=warp, render=rendered, base=base)


def content_label(config: StylizeConfig) -> str:
    """How a refusal of the content's size names it: at the output size, or at its own where
    ``upscale`` is off (raising ``--size`` would not help that one)."""
    if config.upscale:
        return f"the content at size {config.size}"
    return f"the content at its own size (upscale off, size {config.size})"


def fill_record(
    record: dict, result: StylizeResult, config: StylizeConfig, vgg_source: str
) -> None:
    """Copy measurements from a result into a metadata record (in place)."""
    height, width = result.image.shape[-2:]
    record.update(width=int(width), height=int(height), vgg_weights=vgg_source,
                  lwst_version=__version__, params=json.dumps(to_params(config)))
    device = resolve_device(config.device)
    record["device"] = str(device)
    if result.warp is not None:
        w = result.warp
        record.update(
            warp_mean_px=w.stats.mean_px, warp_p95_px=w.stats.p95_px, warp_max_px=w.stats.max_px,
            warp_mean_frac=w.stats.mean_frac, inpainted_frac=w.inpainted_frac,
            warp_loss_before=w.estimate.loss_before, warp_loss_after=w.estimate.loss_after,
            seconds_warp=w.estimate.seconds, seconds_inpaint=w.seconds_inpaint,
            warpnet_id=w.estimate.warpnet_id, warp_confidence=w.estimate.confidence,
            warp_applied=w.estimate.applied, warp_fold_frac=w.safety.fold_frac,
            warp_stretch_frac=w.safety.stretch_frac, warp_refined=w.estimate.refined,
            warp_view=w.estimate.view, warp_melt=w.estimate.area_spread,
        )
    if result.render is not None:
        r = result.render
        record.update(content_loss=r.content_loss, style_loss=r.style_loss,
                      total_loss=r.total_loss, seconds_render=r.seconds,
                      renderer=config.render.renderer,
                      render_dtype=str(feature_dtype(config.render.precision, device)
                                       ).removeprefix("torch."),
                      decoder_ids=decoder_ids(config.render.renderer, device,
                                              config.render.decoder_dir,
                                              config.render.wct_top_level) or None)


def check_output_names(outputs: Mapping[str, str | None]) -> None:
    """Refuse an output whose name no writer honours: an image suffix naming no format we write
    (`ImageInputError`), a flow not named ``.flo`` (ValueError). ``outputs``: kind
    (`lwst.item_files.LAYOUT`) -> URI, None where not written."""
    for kind, uri in outputs.items():
        if uri and kind == "flow":
            check_flow_name(uri)
        elif uri:
            output_format(uri)


def check_item_outputs(item: Item) -> None:
    """Refuse, before any compute, an output on an input or on another output and an output
    name no writer honours (ValueError / `ImageInputError`)."""
    outputs = item.outputs.paths()
    check_outputs_apart({"content": item.content, "geometry": item.geometry,
                         "texture": item.texture}, outputs)
    check_output_names(outputs)


def read_input(role: str, uri: str, max_side: int | None = None,
               analysis_side: int | None = None, upscale: bool = True,
               **storage_options: object) -> Tensor:
    """`lwst.image_io.read_image` of an item's ``role`` input (content, geometry, texture); a
    refusal names the role first, as a storage failure's row does (`lwst.failures`):
    ``geometry /data/g.jpg: corrupt or truncated image (...)``."""
    try:
        return read_image(uri, max_side, analysis_side=analysis_side, upscale=upscale,
                          **storage_options)
    except ImageInputError as exc:
        raise ImageInputError(f"{role} {exc}") from None


# ``read(role, uri, max_side, analysis_side, upscale)``: one input image (`read_input`'s
# arguments).
ReadFn = Callable[[str, str, int | None, int | None, bool], Tensor]


@dataclass
class ItemImages:
    content: Tensor
    geometry: Tensor | None  # the warp's square analysis view
    texture: Tensor | None


def read_item_inputs(content: str, geometry: str | None, texture: str | None,
                     config: StylizeConfig, read: ReadFn | None = None,
                     **storage_options: object) -> ItemImages:
    """An item's inputs, each read at the size it is used at, so a 50 MP photo is never held
    whole (`lwst.image_io`): the content at the output size (never enlarged when
    ``config.upscale`` is off: then its size is the item's), the geometry exemplar as the
    warp's analysis view, the texture exemplar at the style size. An input given as None is
    not read. ``read``: how one is read (default `read_input` with ``storage_options``, a
    refusal naming the role; the CLI names its option instead)."""
    if read is None:
        read = functools.partial(read_input, **storage_options)
    return ItemImages(
        content=read("content", content, config.size, None, config.upscale),
        geometry=(read("geometry", geometry, None, config.warp.analysis_size, True)
                  if geometry else None),
        # At most the output size: the renderers resize it to the content's (`style_size`
        # unset), which a small content under ``upscale`` off makes smaller still.
        texture=(read("texture", texture, config.render.style_size or config.size, None, True)
                 if texture else None),
    )


def stylize_files(item: Item, run_id: str = "", progress: ProgressFn | None = None,
                  storage_options: dict | None = None,
                  warp_estimate: WarpEstimate | None = None) -> dict:
    """Read, stylise and write one item (`lwst.item.Item`: its inputs, configuration and
    output paths); returns its metadata record (status ``ok``).

    ``warp_estimate`` (e.g. from a batched pass) replaces estimating the item's warp. Raises
    `lwst.image_io.ImageInputError` / ``ValueError`` for bad input, after removing any output
    this call had already written.
    """
    opts = storage_options or {}
    config = item.config
    validate(config)
    check_item_outputs(item)
    record = empty_record(item.id, run_id)
    record.update(content=item.content, geometry=item.geometry, texture=item.texture,
                  label=item.label)
    images = read_item_inputs(item.content, item.geometry if warp_estimate is None else None,
                              item.texture, config, **opts)
    try:
        result = stylize(images.content, images.geometry, images.texture, config,
                         progress=progress, warp_estimate=warp_estimate if item.geometry else None)
        return write_item(record, result, config, item.outputs, opts)
    finally:
        release_freed_memory()  # a long run's RSS stays flat (`lwst.memory`)


def write_item(record: dict, result: StylizeResult, config: StylizeConfig,
               outputs: ItemOutputs, opts: dict) -> dict:
    """Write an item's files and complete its metadata record (status ``ok``).

    The files are `lwst.item_files.kinds` of whether it warped and ``config.side_outputs``,
    each at its ``outputs`` path (`ItemOutputs.files`, what the resume check expects; the
    image's suffix is its ``image_format``, encoded at ``image_quality``). All are
    encoded from the result in memory before the first write; if any write fails, the
    ones already written are removed. Once all are in place, the item's files an earlier
    run left that this write did not replace (`ItemOutputs.found`: side outputs no longer
    written, its image in another format) are removed (`lwst.item_files.stale_files`), so
    its folders hold only what its new row names.
    """
    vgg_source = load_vgg19(config.vgg_weights, device=resolve_device(config.device)).source
    files = encode_item(result, outputs.files(result.warp is not None, config.side_outputs),
                        quality=config.image_quality)
    storage.write_all_or_none([(uri, data) for _, uri, data in files], **opts)
    for uri in item_files.stale_files(outputs.found, {uri for _, uri, _ in files}):
        storage.remove(uri, **opts)
    return complete_record(record, result, config, files, vgg_source)


def encode_item(result: StylizeResult, targets: dict[str, str | None],
                unwarped_too: bool = False, quality: int = 95) -> list[tuple[str, str, bytes]]:
    """``(kind, uri, bytes)`` of the item's files, in `lwst.item_files` write order: the
    `lwst.item_files.kinds` of whether it warped, each where ``targets`` asks (None or absent:
    not wanted), encoded as its suffix names (`lwst.image_io.output_format`); the image at
    ``quality`` where that is JPEG or WebP.

    ``unwarped_too``: an item that did not warp (no strength, method ``none``) still writes
    the warp files asked for, as they are without a warp: a zero flow, its picture and the
    unwarped content (`lwst stylize` / `warp`: an output option given is a file written). The
    pipeline keeps the one rule of `lwst.item_files` instead.
    """
    warped = result.warp is not None or unwarped_too
    return [(kind, targets[kind], _encode(kind, targets[kind], result, quality))
            for kind in item_files.kinds(warped, side_outputs=True) if targets.get(kind)]


def complete_record(record: dict, result: StylizeResult, config: StylizeConfig,
                    files: list[tuple[str, str, bytes]], vgg_source: str | None = None) -> dict:
    """Fill ``record`` (status ``ok``) from the result and the files `encode_item` made."""
    if vgg_source is None:
        vgg_source = load_vgg19(config.vgg_weights, device=resolve_device(config.device)).source
    written = {kind: uri for kind, uri, _ in files}
    fill_record(record, result, config, vgg_source)
    record.update(status="ok", output=written.get("image"), warped=written.get("warped"),
                  flow=written.get("flow"))
    return record


def _flow_of(result: StylizeResult) -> Tensor:
    """The applied flow; the zero flow at the image's size for an item that did not warp."""
    if result.warp is not None:
        return result.warp.flow
    height, width = result.image.shape[-2:]
    return result.image.new_zeros((1, 2, height, width))


def _encode(kind: str, uri: str, result: StylizeResult, quality: int = 95) -> bytes:
    """The bytes of one of an item's files (`lwst.item_files.LAYOUT` kinds); ``quality`` is the
    image's (the side files keep the default)."""
    if kind == "flow":
        return encode_flo(_flow_of(result))
    if kind == "image":
        picture = result.image
    elif kind == "flow_vis":
        picture, quality = flow_picture(_flow_of(result)), 95
    else:
        picture, quality = result.warp.warped if result.warp is not None else result.base, 95
        if picture is None:
            raise InputError(f"an item without a warp has no {kind} file")
    fmt = output_format(uri)
    try:
        return encode_image(picture, fmt, quality, name=kind)
    except ImageInputError as exc:  # lwst made it: a bug (NaN, out of range), not bad input
        raise RuntimeError(f"lwst produced an image it cannot write: {exc}") from None
