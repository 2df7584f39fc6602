"""A chunk of items' warps in one forward pass of the warp network (the batchable GPU work).

The learned network takes many pairs at once (all analysis views are 256x256), so the flow runs
this task per chunk before the per-item tasks, and hands each item its estimate as a file path
(`lwst.warping.save_estimate`), never as a tensor. An item whose images cannot be read is left
out: its own per-item task reads them again and records the one-line failure.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lwst import dataset, s3
from lwst.config import StylizeConfig, with_overrides
from lwst.manifest import ManifestItem
from tasks.stylize_item import retry_on_transient


@task(
    name="estimate-warps",
    task_run_name="estimate-warps-{items[0][id]}+{extra}",
    tags=["gpu"],
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,
)
def estimate_warp_batch(
    items: list[dict[str, Any]],
    out: str,
    run_id: str,
    overrides: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    extra: int = 0,
) -> dict[str, str]:
    """Estimate the warps of ``items`` (same warp settings) in one batch; id -> estimate URI."""
    from lwst.image_io import ImageInputError, read_image
    from lwst.stylize import resolve_device
    from lwst.vgg import load_vgg19
    from lwst.warping import estimate_warps, save_estimate

    opts = storage_options or {}
    entries = [ManifestItem.from_dict(item) for item in items]
    for uri in {out, *(e.content for e in entries), *(e.geometry for e in entries if e.geometry)}:
        s3.configure(uri, opts)
    config = with_overrides(StylizeConfig(), {**(overrides or {}), **entries[0].overrides})
    readable, contents, exemplars = [], [], []
    for entry in entries:
        try:
            contents.append(read_image(entry.content, config.size, **opts))
            exemplars.append(read_image(entry.geometry, **opts))
        except ImageInputError:
            contents = contents[: len(readable)]
            continue
        readable.append(entry)
    if not readable:
        return {}
    vgg = load_vgg19(config.vgg_weights, device=resolve_device(config.device))
    estimates = estimate_warps(contents, exemplars, config.warp, vgg, seed=config.seed)
    uris = {}
    for entry, estimate in zip(readable, estimates, strict=True):
        uri = dataset.warp_estimate_uri(out, run_id, entry.id)
        save_estimate(estimate, uri, **opts)
        uris[entry.id] = uri
    return uris
