"""Many items with one configuration, the batchable work done in batches.

For the feed-forward renderers an item is a few forward passes, so per-item overhead (Python,
model look-ups, tiny GPU kernels) matters. Two front doors share one implementation
(`_stylize_loaded`):

- ``stylize_images(contents, geometries, textures, config)``: images in memory (a notebook, a
  training loop), the batch form of `lwst.stylize.stylize`, checked as it checks its images and
  returning one `StylizeResult` per content; ``batch_size`` items per pass;
- ``stylize_files_batch(items)``: items (`lwst.item.Item`) that share one `StylizeConfig` (the
  pipeline groups them by it), read from and written to files.

The stages:

    (files) read each item (a bad one becomes its own failed result, the others go on; a
    transient read error is read again after 2 s and 10 s, `_load_all`); with ``upscale`` off a
    small content keeps its own size, so one chunk holds items of several sizes
    -> learned warps of all items in one network pass (`lwst.warping.estimate_warps`)
    -> warp + inpaint per item
    -> render every group of same-shape images in one pass (`lwst.renderers.render_batch`;
       the shape, not the chunk, decides: items of other sizes are other passes)
    -> (files) write each item atomically (`lwst.stylize.write_item`) -> its metadata record

Seeding is `stylize`'s: on a fork of torch's generators (`_seeded`), seeded by
``config.seed``; every estimator and renderer also takes ``config.seed`` itself, per item (the
RANSAC of the matched affine, gatys' noise), so an item's result does not depend on its batch
neighbours. What does is float rounding: batched convolutions accumulate in another order
(README, "An item of a stylize-batch chunk can differ slightly").

Every file item ends as exactly one ``ItemOutcome``: a record (status ``ok``), or the exception
that stopped it, for the caller to turn into a ``failed`` row. `stylize_images` raises the first
item's error instead, as `stylize` would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from lwst import item_files, storage
from lwst.config import StylizeConfig, given_config, validate
from lwst.errors import InputError
from lwst.image_io import ImageInputError, as_image
from lwst.item import Item
from lwst.memory import release_freed_memory
from lwst.metadata import empty_record
from lwst.render import RenderResult
from lwst.renderers import render_batch
from lwst.safety import check_fits, check_texture_fits
from lwst.stylize import (
    ImageLike,
    ReadFn,
    StylizeResult,
    WarpOutcome,
    apply_geometry,
    check_item_outputs,
    content_label,
    read_input,
    read_item_inputs,
    seeded_models,
    sized_content,
    write_item,
)
from lwst.vgg import VGG19Features
from lwst.warping import BATCHED_METHODS, WarpEstimate, estimate_warps


@dataclass
class ItemOutcome:
    item: Item
    record: dict | None = None
    error: BaseException | None = None


@dataclass
class _Loaded:
    """One item's images on the compute device (``content`` at the output size; ``geometry``
    None when it does not warp), then what became of it: its warp and render, or the error
    that stopped it."""

    content: Tensor
    geometry: Tensor | None
    texture: Tensor | None
    item: Item | None = None  # the file path's item; None for images in memory
    warp: WarpOutcome | None = None
    render: RenderResult | None = None
    error: BaseException | None = None

    def result(self) -> StylizeResult:
        """What `lwst.stylize.stylize` returns for it."""
        base = _base(self)
        return StylizeResult(image=self.render.image if self.render is not None else base,
                             warp=self.warp, render=self.render, base=base)


@contextmanager
def _seeded(config: StylizeConfig) -> Iterator[tuple[torch.device, VGG19Features]]:
    """`lwst.stylize.seeded_models` (seeded as `lwst.stylize.stylize` seeds one item), then
    the allocator's pages freed (a long run's RSS stays flat, `lwst.memory`)."""
    with seeded_models(config) as models:
        try:
            yield models
        finally:
            release_freed_memory()


def _stylize_loaded(loaded: list[_Loaded], config: StylizeConfig, vgg: VGG19Features) -> None:
    """The shared stages: warp (learned estimates in one pass) and render (one pass per
    shape); each entry ends with its ``warp`` / ``render`` or its ``error``."""
    _warp_all(loaded, config, vgg)
    _render_all([entry for entry in loaded if entry.error is None], config, vgg)


# --- images in memory ----------------------------------------------------------------------

BATCH_HINT = "one image per element, or the whole batch as one (B, 3, H, W) tensor"


def stylize_images(
    contents: Sequence[ImageLike] | Tensor,
    geometries: Sequence[ImageLike | None] | ImageLike | None,
    textures: Sequence[ImageLike | None] | ImageLike | None,
    config: StylizeConfig | None = None,
    *,
    batch_size: int = 8,
) -> list[StylizeResult]:
    """`lwst.stylize.stylize` of many items with one configuration, ``batch_size`` at a time:
    the learned warps of a batch in one network pass, each group of its same-shape images in
    one render pass. Returns one `StylizeResult` per content, in order, as `stylize` would
    (``base`` kept, tensors on the compute device).

    ``contents``: a list (or tuple) of images, each as `stylize` takes one (a ``(1, 3, H, W)``
    or ``(3, H, W)`` tensor, float in [0, 1] or uint8, or a PIL image), or a ``(B, 3, H, W)``
    tensor (its B images). Sizes may differ. ``geometries`` and ``textures``: None (no warp /
    no texture for any item), one image shared by every item, or one per content (a list, a
    list holding None for the items without one, or a ``(B, 3, H, W)`` tensor). A bad image
    is refused before any work with one `lwst.image_io.ImageInputError` naming it:
    ``contents[3] has NaN or infinite values``.

    Seeded by ``config.seed`` per item, on a fork of the caller's generators: each result is
    the one `stylize` gives for that item alone (``batch_size=1``: bit for bit), up to the
    float rounding of batched passes (4 items at 96 px, learned warp + adain: at most 0.06/255
    mean, 0.009 max per image with float32 passes; 0.6/255 mean where ``render_precision``
    ``auto`` runs them in bfloat16). What is batched: the learned warp and the feed-forward
    renderers (wct, adain); gatys renders item by item. On a 2-core CPU a batch was faster
    only under load, no faster when quiet (benchmarks/bench_tensor_batch.py). ``batch_size``
    bounds memory: a batch's images go through VGG together. An item that fails raises its
    error (a note names its index) once its batch has run.
    """
    config = given_config(config)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    given = _checked_items(contents, geometries, textures, config)
    results: list[StylizeResult] = []
    with _seeded(config) as (device, vgg):
        moved: dict[int, Tensor] = {}  # a shared exemplar stays one object: encoded once

        def on_device(image: Tensor | None) -> Tensor | None:
            if image is not None and id(image) not in moved:
                moved[id(image)] = image.to(device)
            return None if image is None else moved[id(image)]

        for start in range(0, len(given), batch_size):
            loaded = [_Loaded(content.to(device), on_device(geometry), on_device(texture))
                      for content, geometry, texture in given[start : start + batch_size]]
            _stylize_loaded(loaded, config, vgg)
            for index, entry in enumerate(loaded, start):
                if entry.error is not None:
                    entry.error.add_note(f"lwst.stylize_images: item {index} "
                                         f"(contents[{index}])")
                    raise entry.error
                results.append(entry.result())
    return results


_Checked = tuple[Tensor, Tensor | None, Tensor | None]


def _checked_items(contents: object, geometries: object, textures: object,
                   config: StylizeConfig) -> list[_Checked]:
    """``(content at the output size, geometry or None, texture or None)`` per item, each
    checked as `lwst.stylize.stylize` checks its images, a refusal naming the element; the
    geometry None where the item does not warp (method ``none``, strength 0)."""
    contents = _as_list(contents, "contents")
    count = len(contents)
    per_geometry = _per_item(geometries, "geometries", count)
    per_texture = _per_item(textures, "textures", count)
    checked: list[_Checked] = []
    for i in range(count):
        content = as_image(contents[i], f"contents[{i}]", check_side=False,
                           batch_hint=BATCH_HINT)
        geometry, geometry_name = per_geometry(i)
        texture, texture_name = per_texture(i)
        sized = sized_content(content, geometry, texture, config,
                              (f"contents[{i}]", geometry_name, texture_name), f"item {i}")
        warps = item_files.warps(geometry is not None, config)
        checked.append((sized, geometry if warps else None, texture))
    return checked


def _as_list(images: object, name: str) -> list[object]:
    """A list, tuple or ``(B, 3, H, W)`` tensor of images as a list of its elements."""
    if isinstance(images, Tensor) and images.dim() == 4:
        return list(images.split(1))
    if isinstance(images, (list, tuple)):
        return list(images)
    raise ImageInputError(f"{name} must be a list of images or a (B, 3, H, W) tensor, got "
                          f"{_describe(images)} (one item: lwst.stylize_image)")


def _per_item(images: object, name: str,
              count: int) -> Callable[[int], tuple[Tensor | None, str]]:
    """``index -> (checked image or None, the name a refusal gives it)`` for an argument that
    is None, one image shared by every item (checked once, one object), or one per item."""
    if images is None:
        return lambda i: (None, name)
    one = not isinstance(images, (list, tuple)) and not (
        isinstance(images, Tensor) and images.dim() == 4 and images.shape[0] != 1)
    if one:
        shared = as_image(images, name, check_side=False, batch_hint=BATCH_HINT)
        return lambda i: (shared, name)
    elements = _as_list(images, name)
    if len(elements) != count:
        raise ImageInputError(f"{name} has {len(elements)} images for {count} contents (give "
                              "one per content, one image shared by all, or None)")
    checked = [None if e is None else as_image(e, f"{name}[{i}]", check_side=False,
                                               batch_hint=BATCH_HINT)
               for i, e in enumerate(elements)]
    return lambda i: (checked[i], f"{name}[{i}]")


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return "None" if value is None else f"a {type(value).__name__}"


# --- items read from and written to files --------------------------------------------------

def _reader(device: torch.device, opts: dict, textures: dict[str, Tensor]) -> ReadFn:
    """`lwst.stylize.read_input` onto ``device``, each texture exemplar once per chunk (its
    items share few, and the renderer resizes each distinct exemplar once)."""

    def read(role: str, uri: str, max_side: int | None, analysis_side: int | None,
             upscale: bool) -> Tensor:
        if role == "texture" and uri in textures:  # one read size per chunk: its config's
            return textures[uri]
        image = read_input(role, uri, max_side, analysis_side, upscale, **opts).to(device)
        if role == "texture":
            textures[uri] = image
        return image

    return read


def _load(item: Item, device: torch.device, opts: dict, textures: dict[str, Tensor]) -> _Loaded:
    """Check an item's outputs and read its inputs (`lwst.stylize.read_item_inputs`: a chunk
    holds all its items' inputs at once, so a 50 MP geometry exemplar must not be held whole)."""
    check_item_outputs(item)
    config = item.config
    images = read_item_inputs(item.content, item.geometry if item.warps else None,
                              item.texture, config, read=_reader(device, opts, textures))
    check_fits(*images.content.shape[-2:], content_label(config),
               images.texture is not None)
    if images.texture is not None:
        check_texture_fits(*images.texture.shape[-2:])
    return _Loaded(images.content, images.geometry, images.texture, item=item)


def _load_all(items: list[Item], device: torch.device, opts: dict,
              textures: dict[str, Tensor], outcomes: dict[str, ItemOutcome],
              before_retry: Callable[[BaseException], None] | None = None) -> list[_Loaded]:
    """Every readable item, in order; an unreadable one gets its error in ``outcomes``.

    An item whose read met a transient error (`lwst.storage.is_transient`: a refused or reset
    connection, a timeout, an HTTP 5xx) is read again after each of
    `lwst.storage.READ_RETRY_DELAYS` (2 s, 10 s), all such items of the chunk together after
    one pause, as Prefect retries a single item's task; a deterministic failure (a missing or
    corrupt file, no credentials) is not retried. ``before_retry`` sees the first transient
    error before each pause, and may raise to give up (the pipeline: storage went away)."""
    loaded: dict[int, _Loaded] = {}
    pending = list(enumerate(items))
    for delay in (*storage.READ_RETRY_DELAYS, None):
        transient = []
        for index, item in pending:
            try:
                loaded[index] = _load(item, device, opts, textures)
                outcomes[item.id].error = None
            except Exception as exc:  # noqa: BLE001 - reported per item by the caller
                outcomes[item.id].error = exc
                if storage.is_transient(exc):
                    transient.append((index, item))
        if not transient or delay is None:
            break
        if before_retry is not None:
            before_retry(outcomes[transient[0][1].id].error)
        time.sleep(delay)
        pending = transient
    return [loaded[index] for index in sorted(loaded)]


def stylize_files_batch(items: list[Item], run_id: str = "",
                        storage_options: dict | None = None,
                        before_retry: Callable[[BaseException], None] | None = None,
                        ) -> list[ItemOutcome]:
    """Stylise ``items`` (one shared configuration: refused otherwise) in batches; one
    outcome per item, in order.

    ``before_retry``: called with a transient read error before the items that met one are
    read again (`_load_all`); what it raises ends the call."""
    if not items:
        return []
    if len({item.batch_key() for item in items}) > 1:
        raise ValueError("the items of a batch must share one configuration")
    opts = storage_options or {}
    config = items[0].config
    validate(config)
    with _seeded(config) as (device, vgg):
        outcomes = {item.id: ItemOutcome(item) for item in items}
        textures: dict[str, Tensor] = {}  # read (and later encoded) once per distinct exemplar
        loaded = _load_all(items, device, opts, textures, outcomes, before_retry)
        _stylize_loaded(loaded, config, vgg)
        for entry in loaded:
            if entry.error is not None:
                outcomes[entry.item.id].error = entry.error
            else:
                _write(entry, config, run_id, opts, outcomes[entry.item.id])
        return [outcomes[item.id] for item in items]


def _base(entry: _Loaded) -> Tensor:
    """What the renderer paints: the warped content, or the content when not warped."""
    return entry.warp.warped if entry.warp is not None else entry.content


def _warp_all(loaded: list[_Loaded], config: StylizeConfig, vgg: VGG19Features) -> None:
    """Warp and inpaint each item; the learned estimates of all in one network pass. An item
    that fails keeps its error."""
    warped = [entry for entry in loaded if entry.geometry is not None]
    estimates: dict[int, WarpEstimate] = {}  # by id() of the entry
    if warped and config.warp.method in BATCHED_METHODS:
        try:
            batch = estimate_warps([e.content for e in warped], [e.geometry for e in warped],
                                   config.warp, vgg, seed=config.seed)
            estimates = {id(e): est for e, est in zip(warped, batch, strict=True)}
        except Exception:  # noqa: BLE001 - each item then estimates (and reports) its own
            estimates = {}
    for entry in warped:
        try:
            entry.warp = apply_geometry(entry.content, entry.geometry, config, vgg,
                                        estimates.get(id(entry)))
        except Exception as exc:  # noqa: BLE001
            entry.error = exc


def _render_all(alive: list[_Loaded], config: StylizeConfig, vgg: VGG19Features) -> None:
    """Render the items with a texture, each group of same-shape images in one pass; a
    batch-wide failure fails its group's items."""
    by_shape: dict[tuple[int, int], list[_Loaded]] = {}
    for entry in alive:
        if entry.texture is not None:
            by_shape.setdefault(tuple(_base(entry).shape[-2:]), []).append(entry)
    for group in by_shape.values():
        try:
            results = render_batch(torch.cat([_base(e) for e in group]),
                                   [e.texture for e in group], config.render, vgg,
                                   seed=config.seed, measure=config.render.measure_losses)
        except Exception as exc:  # noqa: BLE001 - a batch-wide failure fails its items
            for e in group:
                e.error = exc
            continue
        for e, result in zip(group, results, strict=True):
            e.render = result


def _write(entry: _Loaded, config: StylizeConfig, run_id: str, opts: dict,
           outcome: ItemOutcome) -> None:
    """Write one item atomically and keep its metadata record (or its error)."""
    item = entry.item
    record = empty_record(item.id, run_id)
    record.update(content=item.content, geometry=item.geometry, texture=item.texture,
                  label=item.label)
    try:
        outcome.record = write_item(record, entry.result(), config, item.outputs, opts)
    except Exception as exc:  # noqa: BLE001
        outcome.error = exc
