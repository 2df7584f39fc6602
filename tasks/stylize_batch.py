"""A chunk of feed-forward items as one Prefect task: one warp-network pass and one render
pass per chunk (`lwst.stylize_batch`), then each item's files and journal row.

The flow groups items by their whole configuration, so a chunk shares one `StylizeConfig`.
Every item still ends as its own row: a bad input fails that item only. A transient storage
error is retried per write (`lwst.storage`); one that persists fails the items it hit (a re-run
redoes them), since retrying the task would redo the chunk.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lwst import dataset, s3, storage
from lwst.config import StylizeConfig, to_params, with_overrides
from lwst.manifest import ManifestItem
from tasks.stylize_item import failure_reason, stop_if_storage_down, worker_name, write_journal


@task(
    name="stylize-batch",
    task_run_name="stylize-batch-{items[0][id]}+{extra}",
    tags=["gpu"],
    cache_policy=NO_CACHE,
)
def stylize_batch(
    items: list[dict[str, Any]],
    out: str,
    run_id: str,
    overrides: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    torch_threads: int | None = None,
    extra: int = 0,
) -> list[dict[str, Any]]:
    """Stylise a chunk of items that share one configuration; one record per item."""
    from lwst.stylize_batch import BatchItem, stylize_files_batch

    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    opts = storage_options or {}
    entries = [ManifestItem.from_dict(item) for item in items]
    for uri in {out, *(u for e in entries for u in (e.content, e.geometry, e.texture) if u)}:
        s3.configure(uri, opts)
    config = with_overrides(StylizeConfig(), {**(overrides or {}), **entries[0].overrides})
    params = json.dumps(to_params(config))
    batch = []
    for entry in entries:
        outputs = dataset.item_outputs(out, entry.id)
        batch.append(BatchItem(entry.id, entry.content, entry.geometry, entry.texture,
                               outputs.image, outputs.warped, outputs.flow, outputs.flow_vis))
    records = []
    with storage.temp_owner(run_id):
        outcomes = stylize_files_batch(batch, config, run_id, opts)
        for entry, outcome in zip(entries, outcomes, strict=True):
            record, error = outcome.record, outcome.error
            if record is None:
                stop_if_storage_down(error, out, opts)
                record = dataset.failed_record(entry, run_id, failure_reason(error), params)
            write_journal(out, record, opts)
            batched = record["status"] == "ok" and bool(record["flow"])
            records.append({**record, "worker": worker_name(), "warp_batched": batched})
    return records
