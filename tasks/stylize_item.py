"""One item as a Prefect task: stylise it, write its files, journal its metadata row.

Safe to retry and to re-run: every write is atomic and an item's files are rewritten whole.
A failure never escapes as an exception the run would have to handle (`record_failure`): bad
input (a missing, corrupt or unsupported image, an impossible setting, storage errors) becomes
a ``failed`` row with one line; a bug in lwst becomes a ``failed`` row marked ``internal``,
with its traceback logged. Only transient I/O errors (network, timeouts) raise, and Prefect
retries those. Writes retry themselves in `lwst.storage` and end in a non-transient
`WriteFailedError`, so Prefect's retries cover what comes before the render: reading the
inputs and the batched warp estimate.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lwst import dataset, s3, storage
from lwst.failures import failure_kind, failure_reason, orchestration_reason
from lwst.item import Item
from lwst.metadata import stamp
from lwst.storage import READ_RETRY_DELAYS, is_transient
from tasks.retries import retry_on_transient


@dataclass(frozen=True)
class TaskRecords:
    """What an item or chunk task returns: its rows (each with ``worker``, ``warp_batched``).

    Wrapped because Prefect links every top-level part of a task's result to its state in the
    flow run's memory (for lineage): a bare record dict adds one link per column value, a list
    of them one per row; this wrapper adds two, which the flow drops once it has the rows.
    """

    rows: list[dict[str, Any]]


def worker_name() -> str:
    """Which process ran the item (host:pid); shows in the run summary, proves Dask fan-out."""
    return f"{socket.gethostname()}:{os.getpid()}"


def configure_storage(items: list[Item], out: str, opts: dict[str, Any]) -> None:
    """Register the S3 settings for every location the items touch (once per bucket)."""
    for uri in {out, *(u for i in items for u in (i.content, i.geometry, i.texture) if u)}:
        s3.configure(uri, opts)


def item_inputs(item: Item) -> dict[str, str | None]:
    """Role -> URI of an item's inputs: failure reasons name which one failed."""
    return {"content": item.content, "geometry": item.geometry, "texture": item.texture}


def device_name(config_device: str) -> str:
    """The device a run's rows name (``auto`` resolved); a refused one as it was asked."""
    from lwst.devices import resolve_device

    try:
        return str(resolve_device(config_device))
    except ValueError:
        return config_device


def failed_item_record(item: Item, exc: BaseException, run_id: str,
                       by_runner: bool = False) -> dict[str, Any]:
    """The ``failed`` row of ``item`` for ``exc``, with the run's version and device, and the
    renderer it asked for (items with a texture, as on ``ok`` rows). ``by_runner``: its task
    runner raised ``exc``, not the item's own code: an ``orchestration`` failure whatever its
    type (Dask's plain RuntimeError for a graph it could not deserialise)."""
    kind = "orchestration" if by_runner else failure_kind(exc)
    reason = (orchestration_reason(exc) if kind == "orchestration"
              else failure_reason(exc, item_inputs(item)))
    renderer = item.config.render.renderer if item.renders else None
    record = dataset.failed_record(item.manifest_item(), run_id, reason, item.params_json(),
                                   kind, renderer)
    return stamp(record, device_name(item.config.device))


def record_failure(item: Item, exc: BaseException, out: str, run_id: str,
                   opts: dict[str, Any], retryable: bool = True) -> dict[str, Any]:
    """The ``failed`` row of ``item``; raises instead when the failure is storage going away
    (the run stops) or, if ``retryable``, transient (Prefect retries the task). A bug's
    traceback goes to the run log."""
    stop_if_storage_down(exc, out, opts)
    if retryable and is_transient(exc):
        raise exc
    if failure_kind(exc) == "internal":
        get_run_logger().error("item %s: internal error (a bug in lwst)", item.id,
                               exc_info=exc, extra={"lwst_internal": True})
    return failed_item_record(item, exc, run_id)


@task(
    name="stylize-item",
    task_run_name="stylize-{item.id}",
    tags=["gpu"],  # `prefect concurrency-limit create gpu N` bounds concurrent model work
    retries=len(READ_RETRY_DELAYS),
    retry_delay_seconds=list(READ_RETRY_DELAYS),
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,  # resuming is file-based (lwst.dataset), valid across machines
)
def stylize_item(
    item: Item,
    out: str,
    run_id: str,
    storage_options: dict[str, Any] | None = None,
    torch_threads: int | None = None,
    warp_estimates: dict[str, str] | None = None,
) -> TaskRecords:
    """Stylise one item into ``out``; returns its metadata record plus ``worker``.

    ``warp_estimates``: id -> estimate URI of the warp batch this item belongs to (passed as
    that batch's future, so the item starts as soon as its own batch is done).
    """
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    opts = storage_options or {}
    configure_storage([item], out, opts)
    estimate_uri = (warp_estimates or {}).get(item.id)
    with storage.temp_owner(run_id):
        record = _stylize_item(item, out, run_id, opts, estimate_uri)
    write_journal(out, record, opts)
    return TaskRecords([{**record, "worker": worker_name(), "warp_batched": bool(estimate_uri)}])


def _stylize_item(item: Item, out: str, run_id: str, opts: dict[str, Any],
                  estimate_uri: str | None) -> dict[str, Any]:
    from lwst.stylize import stylize_files
    from lwst.warping import load_estimate

    try:
        estimate = load_estimate(estimate_uri, **opts) if estimate_uri else None
        record = stylize_files(item, run_id=run_id, storage_options=opts,
                               warp_estimate=estimate)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the item's row
        record = record_failure(item, exc, out, run_id, opts)
    return record


def write_journal(out: str, records: dict[str, Any] | list[dict[str, Any]],
                  opts: dict[str, Any]) -> None:
    """Journal rows; a failure while the store is down stops the run in one line."""
    try:
        dataset.write_journal(out, records, opts)
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

