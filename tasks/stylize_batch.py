"""A chunk of feed-forward items as one Prefect task: one warp-network pass and one render
pass per chunk (`lwst.stylize_batch`), then each item's files, and the chunk's journal rows.

The flow groups items by their whole configuration (`lwst.item.Item.batch_key`), so a chunk
shares one `StylizeConfig`; the task refuses a chunk that does not. Every item still ends as
its own row: a bad input fails that item only, a bug is marked ``internal``. A transient
error reading an item's inputs is retried inside the task (`lwst.stylize_batch`: the items it
hit are read again after 2 s and 10 s, the delays of `stylize-item`'s Prefect retries), not by
retrying the task, which would redo the whole chunk; what still fails then is the item's
``failed`` row (a re-run redoes it).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lwst import storage
from lwst.item import Item
from tasks.stylize_item import (
    TaskRecords,
    configure_storage,
    record_failure,
    stop_if_storage_down,
    worker_name,
    write_journal,
)


@task(
    name="stylize-batch",
    task_run_name="stylize-batch-{items[0].id}+{extra}",
    tags=["gpu"],
    cache_policy=NO_CACHE,
)
def stylize_batch(
    items: list[Item],
    out: str,
    run_id: str,
    storage_options: dict[str, Any] | None = None,
    torch_threads: int | None = None,
    extra: int = 0,
) -> TaskRecords:
    """Stylise a chunk of items that share one configuration; one record per item."""
    from lwst.stylize_batch import stylize_files_batch

    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    opts = storage_options or {}
    configure_storage(items, out, opts)
    records = []

    def before_retry(exc: BaseException) -> None:
        """Storage gone (``out``'s store does not answer): stop the run now, not after the
        re-reads' pauses."""
        stop_if_storage_down(exc, out, opts)

    with storage.temp_owner(run_id):
        outcomes = stylize_files_batch(items, run_id, opts, before_retry)
        for item, outcome in zip(items, outcomes, strict=True):
            record = outcome.record
            if record is None:
                record = record_failure(item, outcome.error, out, run_id, opts, retryable=False)
            batched = record["status"] == "ok" and bool(record["flow"])
            records.append({**record, "worker": worker_name(), "warp_batched": batched})
    write_journal(out, records, opts)  # extra keys (worker, ...) are not columns: dropped
    return TaskRecords(records)
