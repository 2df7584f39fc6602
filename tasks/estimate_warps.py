"""A chunk of items' warps in one forward pass of the warp network (the batchable GPU work).

The learned network takes many pairs at once (all analysis views are 256x256), so the flow runs
this task per chunk of gatys items and passes its future to each item's task, which starts as
soon as its own chunk is done. Estimates travel as file paths (`lwst.warping.save_estimate`),
never as tensors. An item whose images cannot be read is left out, and a chunk that fails as a
whole returns nothing: the items' own tasks then estimate (and report) their warps themselves,
so this task never fails an item.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lwst import dataset
from lwst.dataset import one_line
from lwst.item import Item
from tasks.stylize_item import configure_storage


@task(
    name="estimate-warps",
    task_run_name="estimate-warps-{items[0].id}+{extra}",
    tags=["gpu"],
    cache_policy=NO_CACHE,
)
def estimate_warp_batch(
    items: list[Item],
    out: str,
    run_id: str,
    storage_options: dict[str, Any] | None = None,
    extra: int = 0,
) -> dict[str, str]:
    """Estimate the warps of ``items`` (one configuration) in one batch; id -> estimate URI."""
    try:
        return _estimate(items, out, run_id, storage_options or {})
    except Exception as exc:  # noqa: BLE001 - the items fall back to their own estimation
        get_run_logger().warning("batched warp estimation of %s+%d failed (%s); the items "
                                 "estimate their own", items[0].id, extra, one_line(str(exc)))
        return {}


def _estimate(items: list[Item], out: str, run_id: str, opts: dict[str, Any]) -> dict[str, str]:
    from lwst.devices import resolve_device
    from lwst.image_io import ImageInputError
    from lwst.stylize import read_item_inputs
    from lwst.vgg import load_vgg19
    from lwst.warping import estimate_warps, save_estimate

    if len({item.batch_key() for item in items}) != 1:
        raise ValueError("the items of a warp batch must share one configuration")
    configure_storage(items, out, opts)
    config = items[0].config
    readable, contents, exemplars = [], [], []
    for item in items:
        try:
            images = read_item_inputs(item.content, item.geometry, None, config, **opts)
        except (ImageInputError, OSError):
            continue
        readable.append(item)
        contents.append(images.content)
        exemplars.append(images.geometry)
    if not readable:
        return {}
    vgg = load_vgg19(config.vgg_weights, device=resolve_device(config.device))
    estimates = estimate_warps(contents, exemplars, config.warp, vgg, seed=config.seed)
    uris = {}
    for item, estimate in zip(readable, estimates, strict=True):
        uri = dataset.warp_estimate_uri(out, run_id, item.id)
        save_estimate(estimate, uri, **opts)
        uris[item.id] = uri
    return uris
