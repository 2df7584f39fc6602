"""Many items with one configuration, the batchable work done in batches.

For the feed-forward renderers a dataset item is a few forward passes, so per-item overhead
(Python, model look-ups, tiny GPU kernels) matters. ``stylize_files_batch`` takes items
(`lwst.item.Item`) that share one `StylizeConfig` (the pipeline groups them by it) and runs:

    read each item (a bad one becomes its own failed result, the others go on; a transient
    read error is read again after 2 s and 10 s, `_load_all`); with ``upscale`` off a small
    content keeps its own size, so one chunk holds items of several sizes
    -> learned warps of all items in one network pass (`lwst.warping.estimate_warps`)
    -> warp + inpaint per item
    -> render every group of same-shape images in one pass (`lwst.renderers.render_batch`;
       the shape, not the chunk, decides: items of other sizes are other passes)
    -> write each item atomically (`lwst.stylize.write_item`) -> its metadata record

Every item ends as exactly one ``ItemOutcome``: a record (status ``ok``), or the exception
that stopped it, for the caller to turn into a ``failed`` row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lwst import storage
from lwst.config import StylizeConfig, validate
from lwst.devices import resolve_device
from lwst.item import Item
from lwst.memory import release_freed_memory
from lwst.metadata import empty_record
from lwst.render import RenderResult
from lwst.renderers import render_batch
from lwst.safety import check_fits, check_texture_fits
from lwst.stylize import (
    ReadFn,
    StylizeResult,
    WarpOutcome,
    apply_geometry,
    check_item_outputs,
    content_label,
    read_input,
    read_item_inputs,
    seed_generators,
    write_item,
)
from lwst.vgg import VGG19Features, load_vgg19
from lwst.warping import BATCHED_METHODS, estimate_warps


@dataclass
class ItemOutcome:
    item: Item
    record: dict | None = None
    error: BaseException | None = None


@dataclass
class _Loaded:
    item: Item
    content: Tensor
    geometry: Tensor | None
    texture: Tensor | None
    warp: WarpOutcome | None = None


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
    return _Loaded(item, images.content, images.geometry, images.texture)


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
    device = resolve_device(config.device)
    # Seeded on a fork of torch's generators, as `lwst.stylize.stylize`: a caller's own
    # draws do not repeat after each call (building a model draws from them too).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        vgg = load_vgg19(config.vgg_weights, device=device)
        seed_generators(config.seed, device)
        try:
            return _stylize_seeded(items, config, device, vgg, run_id, opts, before_retry)
        finally:
            release_freed_memory()  # a long run's RSS stays flat (`lwst.memory`)


def _stylize_seeded(items: list[Item], config: StylizeConfig, device: torch.device,
                    vgg: VGG19Features, run_id: str, opts: dict,
                    before_retry: Callable[[BaseException], None] | None) -> list[ItemOutcome]:
    """`stylize_files_batch`'s stages once its generators are seeded."""
    outcomes = {item.id: ItemOutcome(item) for item in items}
    textures: dict[str, Tensor] = {}  # read (and later encoded) once per distinct exemplar
    loaded = _load_all(items, device, opts, textures, outcomes, before_retry)
    alive = _warp_all(loaded, config, vgg, outcomes)
    rendered = _render_all(alive, config, vgg, outcomes)
    for entry in alive:
        if outcomes[entry.item.id].error is None:
            _write(entry, rendered.get(entry.item.id), config, run_id, opts, outcomes)
    return [outcomes[item.id] for item in items]


def _base(entry: _Loaded) -> Tensor:
    """What the renderer paints: the warped content, or the content when not warped."""
    return entry.warp.warped if entry.warp is not None else entry.content


def _warp_all(loaded: list[_Loaded], config: StylizeConfig, vgg: VGG19Features,
              outcomes: dict[str, ItemOutcome]) -> list[_Loaded]:
    """Warp and inpaint each item; the learned estimates of all in one network pass. The
    items that failed get their error in ``outcomes`` and are left out."""
    warped = [entry for entry in loaded if entry.geometry is not None]
    estimates = {}
    if warped and config.warp.method in BATCHED_METHODS:
        try:
            batch = estimate_warps([e.content for e in warped], [e.geometry for e in warped],
                                   config.warp, vgg, seed=config.seed)
            estimates = {e.item.id: est for e, est in zip(warped, batch, strict=True)}
        except Exception:  # noqa: BLE001 - each item then estimates (and reports) its own
            estimates = {}
    alive: list[_Loaded] = []
    for entry in loaded:
        try:
            if entry.geometry is not None:
                entry.warp = apply_geometry(entry.content, entry.geometry, config, vgg,
                                            estimates.get(entry.item.id))
            alive.append(entry)
        except Exception as exc:  # noqa: BLE001
            outcomes[entry.item.id].error = exc
    return alive


def _render_all(alive: list[_Loaded], config: StylizeConfig, vgg: VGG19Features,
                outcomes: dict[str, ItemOutcome]) -> dict[str, RenderResult]:
    """Render the items with a texture, each group of same-shape images in one pass; a
    batch-wide failure fails its group's items."""
    by_shape: dict[tuple[int, int], list[_Loaded]] = {}
    for entry in alive:
        if entry.texture is not None:
            by_shape.setdefault(tuple(_base(entry).shape[-2:]), []).append(entry)
    rendered: dict[str, RenderResult] = {}
    for group in by_shape.values():
        try:
            results = render_batch(torch.cat([_base(e) for e in group]),
                                   [e.texture for e in group], config.render, vgg,
                                   seed=config.seed, measure=config.render.measure_losses)
        except Exception as exc:  # noqa: BLE001 - a batch-wide failure fails its items
            for e in group:
                outcomes[e.item.id].error = exc
            continue
        for e, result in zip(group, results, strict=True):
            rendered[e.item.id] = result
    return rendered


def _write(entry: _Loaded, render: RenderResult | None, config: StylizeConfig, run_id: str,
           opts: dict, outcomes: dict[str, ItemOutcome]) -> None:
    """Write one item atomically and keep its metadata record (or its error)."""
    item = entry.item
    result = StylizeResult(image=render.image if render is not None else _base(entry),
                           warp=entry.warp, render=render)
    record = empty_record(item.id, run_id)
    record.update(content=item.content, geometry=item.geometry, texture=item.texture,
                  label=item.label)
    try:
        outcomes[item.id].record = write_item(record, result, config, item.outputs, opts)
    except Exception as exc:  # noqa: BLE001
        outcomes[item.id].error = exc
