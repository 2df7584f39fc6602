"""Many items with one configuration, the batchable work done in batches.

For the feed-forward renderers a dataset item is a few forward passes, so per-item overhead
(Python, model look-ups, tiny GPU kernels) matters. ``stylize_files_batch`` takes items that
share one `StylizeConfig` (the pipeline groups them by it) and runs:

    read each item (a bad one becomes its own failed result, the others go on; a transient
    read error is read again after 2 s and 10 s, `_load_all`)
    -> learned warps of all items in one network pass (`lwst.warping.estimate_warps`)
    -> warp + inpaint per item
    -> render every group of same-shape images in one pass (`lwst.renderers.render_batch`)
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

from lwst import item_files, storage
from lwst.config import StylizeConfig, validate
from lwst.flow import check_flow_name
from lwst.image_io import check_size, output_format
from lwst.metadata import empty_record
from lwst.renderers import render_batch
from lwst.safety import check_fits, check_outputs_apart
from lwst.stylize import (
    StylizeResult,
    WarpOutcome,
    apply_geometry,
    read_input,
    resolve_device,
    write_item,
)
from lwst.vgg import load_vgg19
from lwst.warping import BATCHED_METHODS, estimate_warps


@dataclass
class BatchItem:
    """One item's inputs and output paths (the warp ones are used when it warps)."""

    item_id: str
    content: str
    geometry: str | None
    texture: str | None
    output: str
    warped_out: str | None = None
    flow_out: str | None = None
    flow_vis_out: str | None = None


@dataclass
class ItemOutcome:
    item: BatchItem
    record: dict | None = None
    error: BaseException | None = None


@dataclass
class _Loaded:
    item: BatchItem
    content: Tensor
    geometry: Tensor | None
    texture: Tensor | None
    warp: WarpOutcome | None = None


def _load(item: BatchItem, config: StylizeConfig, device: torch.device, opts: dict,
          textures: dict[str, Tensor]) -> _Loaded:
    """Check an item's outputs and read its inputs (at the sizes the batch uses)."""
    check_outputs_apart(
        {"content": item.content, "geometry": item.geometry, "texture": item.texture},
        {"output": item.output, "warped": item.warped_out, "flow": item.flow_out,
         "flow_vis": item.flow_vis_out})
    for uri in (item.output, item.warped_out, item.flow_vis_out):
        if uri:
            output_format(uri)
    if item.flow_out:
        check_flow_name(item.flow_out)
    # Each input at the size it is used at (`lwst.stylize.stylize_files`): a chunk holds all
    # its items' inputs at once, so a 50 MP geometry exemplar must not be held whole.
    content = read_input("content", item.content, config.size, **opts).to(device)
    check_fits(*content.shape[-2:], f"the content at size {config.size}", bool(item.texture))
    geometry = (read_input("geometry", item.geometry, analysis_side=config.warp.analysis_size,
                           **opts).to(device)
                if item_files.warps(bool(item.geometry), config) else None)
    texture = None
    if item.texture:
        if item.texture not in textures:
            style_side = config.render.style_size or config.size
            texture = read_input("texture", item.texture, style_side, **opts).to(device)
            check_fits(*texture.shape[-2:], "the texture exemplar", True)
            textures[item.texture] = texture
        texture = textures[item.texture]
    return _Loaded(item, content, geometry, texture)


def _load_all(items: list[BatchItem], config: StylizeConfig, device: torch.device, opts: dict,
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
                loaded[index] = _load(item, config, device, opts, textures)
                outcomes[item.item_id].error = None
            except Exception as exc:  # noqa: BLE001 - reported per item by the caller
                outcomes[item.item_id].error = exc
                if storage.is_transient(exc):
                    transient.append((index, item))
        if not transient or delay is None:
            break
        if before_retry is not None:
            before_retry(outcomes[transient[0][1].item_id].error)
        time.sleep(delay)
        pending = transient
    return [loaded[index] for index in sorted(loaded)]


def stylize_files_batch(items: list[BatchItem], config: StylizeConfig, run_id: str = "",
                        storage_options: dict | None = None,
                        before_retry: Callable[[BaseException], None] | None = None,
                        ) -> list[ItemOutcome]:
    """Stylise ``items`` (one shared configuration) in batches; one outcome per item, in order.

    ``before_retry``: called with a transient read error before the items that met one are
    read again (`_load_all`); what it raises ends the call."""
    opts = storage_options or {}
    validate(config)
    check_size(config.size)
    device = resolve_device(config.device)
    vgg = load_vgg19(config.vgg_weights, device=device)
    torch.manual_seed(config.seed)
    outcomes = {item.item_id: ItemOutcome(item) for item in items}
    textures: dict[str, Tensor] = {}  # read (and later encoded) once per distinct exemplar
    loaded = _load_all(items, config, device, opts, textures, outcomes, before_retry)

    warped = [entry for entry in loaded if entry.geometry is not None]
    estimates = {}
    if warped and config.warp.method in BATCHED_METHODS:
        try:
            batch = estimate_warps([e.content for e in warped], [e.geometry for e in warped],
                                   config.warp, vgg, seed=config.seed)
            estimates = {e.item.item_id: est for e, est in zip(warped, batch, strict=True)}
        except Exception:  # noqa: BLE001 - each item then estimates (and reports) its own
            estimates = {}
    alive: list[_Loaded] = []
    for entry in loaded:
        try:
            if entry.geometry is not None:
                entry.warp = apply_geometry(entry.content, entry.geometry, config, vgg,
                                            estimates.get(entry.item.item_id))
            alive.append(entry)
        except Exception as exc:  # noqa: BLE001
            outcomes[entry.item.item_id].error = exc

    rendered: dict[str, object] = {}
    textured = [e for e in alive if e.texture is not None]
    by_shape: dict[tuple[int, int], list[_Loaded]] = {}
    for entry in textured:
        base = entry.warp.warped if entry.warp is not None else entry.content
        by_shape.setdefault(tuple(base.shape[-2:]), []).append(entry)
    for group in by_shape.values():
        bases = torch.cat([e.warp.warped if e.warp is not None else e.content for e in group])
        try:
            results = render_batch(bases, [e.texture for e in group], config.render, vgg,
                                   seed=config.seed, measure=config.render.measure_losses)
        except Exception as exc:  # noqa: BLE001 - a batch-wide failure fails its items
            for e in group:
                outcomes[e.item.item_id].error = exc
            continue
        for e, result in zip(group, results, strict=True):
            rendered[e.item.item_id] = result

    for entry in alive:
        item = entry.item
        if outcomes[item.item_id].error is not None:
            continue
        render = rendered.get(item.item_id)
        base = entry.warp.warped if entry.warp is not None else entry.content
        result = StylizeResult(image=render.image if render is not None else base,
                               warp=entry.warp, render=render)
        record = empty_record(item.item_id, run_id)
        record.update(content=item.content, geometry=item.geometry, texture=item.texture)
        try:
            outcomes[item.item_id].record = write_item(record, result, config, item.output,
                                                       item.warped_out, item.flow_out, opts,
                                                       item.flow_vis_out)
        except Exception as exc:  # noqa: BLE001
            outcomes[item.item_id].error = exc
    return [outcomes[item.item_id] for item in items]
