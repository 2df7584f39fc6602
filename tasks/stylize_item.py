"""One manifest item as a Prefect task: stylise, write its files, journal its metadata row.

Safe to retry and to re-run: every write is atomic and an item's files are rewritten whole.
Bad input (a missing, corrupt or unsupported image, an impossible setting) is not an error of
the task: it returns a ``failed`` record, so one bad row never stops a run. Only transient I/O
errors (network, timeouts) raise, and Prefect retries those. Writes retry themselves in
`lwst.storage` and end in a non-transient `WriteFailedError`, so Prefect's retries now cover
what comes before the render: reading the inputs and the batched warp estimate.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lwst import dataset, s3, storage
from lwst.config import StylizeConfig, to_params, with_overrides
from lwst.manifest import ManifestItem
from lwst.safety import check_outputs_apart
from lwst.storage import is_transient


def retry_on_transient(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's signature)
    exc = state.data if isinstance(state.data, BaseException) else None
    return exc is not None and is_transient(exc)


def failure_reason(exc: BaseException) -> str:
    """The one-line ``error`` of a failed row."""
    from lwst.image_io import ImageInputError

    return str(exc) if isinstance(exc, ImageInputError) else f"{type(exc).__name__}: {exc}"


def worker_name() -> str:
    """Which process ran the item (host:pid); shows in the run summary, proves Dask fan-out."""
    return f"{socket.gethostname()}:{os.getpid()}"


@task(
    name="stylize-item",
    task_run_name="stylize-{item[id]}",
    tags=["gpu"],  # `prefect concurrency-limit create gpu N` bounds concurrent model work
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,  # resuming is file-based (lwst.dataset), valid across machines
)
def stylize_item(
    item: dict[str, Any],
    out: str,
    run_id: str,
    overrides: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    torch_threads: int | None = None,
    warp_estimate_uri: str | None = None,
) -> dict[str, Any]:
    """Stylise one item into ``out``; returns its metadata record plus ``worker``.

    ``warp_estimate_uri``: the item's warp, already estimated in a batch (`estimate_warps`).
    """
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    opts = storage_options or {}
    entry = ManifestItem.from_dict(item)
    for uri in (out, entry.content, entry.geometry, entry.texture):
        if uri:
            s3.configure(uri, opts)
    with storage.temp_owner(run_id):
        return _stylize_item(entry, out, run_id, overrides, opts, warp_estimate_uri)


def _stylize_item(entry: ManifestItem, out: str, run_id: str, overrides: dict[str, Any] | None,
                  opts: dict[str, Any], warp_estimate_uri: str | None) -> dict[str, Any]:
    from lwst.stylize import stylize_files
    from lwst.warping import load_estimate

    outputs = dataset.item_outputs(out, entry.id)
    params = None
    try:
        check_outputs_apart({"content": entry.content, "geometry": entry.geometry,
                             "texture": entry.texture},
                            {"image": outputs.image, "warped": outputs.warped,
                             "flow": outputs.flow, "flow_vis": outputs.flow_vis})
        config = with_overrides(StylizeConfig(), {**(overrides or {}), **entry.overrides})
        params = json.dumps(to_params(config))
        estimate = load_estimate(warp_estimate_uri, **opts) if warp_estimate_uri else None
        record = stylize_files(entry.id, entry.content, entry.geometry, entry.texture,
                               outputs.image, config, warped_out=outputs.warped,
                               flow_out=outputs.flow, run_id=run_id, storage_options=opts,
                               warp_estimate=estimate, flow_vis_out=outputs.flow_vis)
    except Exception as exc:
        stop_if_storage_down(exc, out, opts)
        if is_transient(exc):
            raise
        record = dataset.failed_record(entry, run_id, failure_reason(exc), params)
    write_journal(out, record, opts)
    return {**record, "worker": worker_name(), "warp_batched": bool(warp_estimate_uri)}


def write_journal(out: str, record: dict[str, Any], opts: dict[str, Any]) -> None:
    """Journal an item's row; a failure while the store is down stops the run in one line."""
    try:
        dataset.write_journal(out, record, opts)
    except Exception as exc:
        stop_if_storage_down(exc, out, opts)
        raise


def stop_if_storage_down(exc: BaseException, out: str, opts: dict[str, Any]) -> None:
    """Raise `StorageUnavailableError` (no retry; the flow stops the run in one line) when a
    failure that is not bad input coincides with ``out``'s object store not answering."""
    if isinstance(exc, ValueError | s3.StorageUnavailableError) or storage.is_local(out):
        return
    down = s3.unreachable_reason(out, opts)
    if down:
        raise s3.StorageUnavailableError(f"storage stopped answering: {down}") from None
