"""Manifest in, stylised dataset out: the pipeline as its users run it.

    manifest -> validate (all rows, before any work) -> skip finished items
             -> stylize_item per item (fanned out: threads or Dask; GPU work bounded by the
                `gpu` tag's concurrency limit) -> journal row per item
             -> metadata/run-<run_id>.parquet -> progress, failures table, contact sheet

Everything below the flow lives in `lwst` (library) and `tasks` (per-item wrapper).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.runtime import flow_run

from flows.runners import RunnerName, make_task_runner
from lwst import dataset, report, run_lock, s3, storage
from lwst.config import StylizeConfig, to_params, with_overrides
from lwst.manifest import ManifestItem, id_problem, read_manifest
from lwst.renderers import FEED_FORWARD
from lwst.warping import BATCHED_METHODS
from tasks.estimate_warps import estimate_warp_batch
from tasks.stylize_batch import stylize_batch
from tasks.stylize_item import stylize_item

# `lwst run` and the deployments render with AdaIN unless told otherwise: dataset runs are
# judged on throughput, and AdaIN is ~100x faster than gatys per item at a style ratio the
# benchmarks measure (docs/benchmarks.md); `stylize` keeps gatys, the quality mode.
PIPELINE_RENDERER = "adain"

# Called in the flow's process as each item finishes: (done, total, record). The CLI's progress
# bar subscribes here; flows never take callables as parameters (they must be JSON for the API).
PROGRESS_LISTENERS: list[Callable[[int, int, dict[str, Any]], None]] = []


def _storage_options(endpoint_url: str | None, key: str | None, secret: str | None,
                     region: str | None) -> dict[str, Any]:
    return s3.S3Settings.from_env(endpoint_url=endpoint_url, key=key, secret=secret,
                                  region=region).storage_options()


def _new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{(flow_run.id or 'local')[:8]}"


def warp_batches(items: list[dict[str, Any]], overrides: dict[str, Any], size: int,
                 ) -> list[list[dict[str, Any]]]:
    """Chunks of at most ``size`` items whose warps one network pass can estimate together.

    Only the learned network batches; items are grouped by every setting that changes its
    input or weights (output size, checkpoint, VGG weights, device).
    """
    if size < 2:
        return []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for item in items:
        entry = ManifestItem.from_dict(item)
        try:
            config = with_overrides(StylizeConfig(), {**overrides, **entry.overrides})
        except (KeyError, ValueError):
            continue  # the item's own task reports the bad setting
        warp = config.warp
        if not entry.geometry or warp.method not in BATCHED_METHODS or warp.method == "none":
            continue
        key = (config.size, warp.checkpoint, warp.analysis_size, config.vgg_weights,
               config.device, config.seed, warp.precision, warp.field, warp.fallback,
               warp.min_confidence)
        groups.setdefault(key, []).append(item)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def render_batches(items: list[dict[str, Any]], overrides: dict[str, Any], size: int,
                   ) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Chunks of at most ``size`` feed-forward items with one identical configuration, and the
    items left for one task each (gatys, bad settings, or batching off with ``size < 2``)."""
    if size < 2:
        return [], items
    groups: dict[str, list[dict[str, Any]]] = {}
    single: list[dict[str, Any]] = []
    for item in items:
        entry = ManifestItem.from_dict(item)
        try:
            config = with_overrides(StylizeConfig(), {**overrides, **entry.overrides})
        except (KeyError, ValueError):
            single.append(item)  # the item's own task reports the bad setting
            continue
        if config.render.renderer not in FEED_FORWARD:
            single.append(item)
            continue
        key = json.dumps(to_params(config), sort_keys=True, default=str)
        groups.setdefault(key, []).append(item)
    chunks = [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]
    return chunks, single


@flow(name="stylize-items")
def process_items(
    items: list[dict[str, Any]],
    out: str,
    run_id: str,
    overrides: dict[str, Any],
    storage_options: dict[str, Any],
    torch_threads: int | None,
    gpus_per_item: float,
    progress_id: str | None,
    total: int,
    already_done: int,
    warp_batch_size: int = 8,
    render_batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Batch the warp-network and feed-forward work, fan the items out on this sub-flow's task
    runner, and collect one record per item."""
    annotate = contextlib.nullcontext()
    if gpus_per_item:
        import dask

        annotate = dask.annotate(resources={"GPU": gpus_per_item})
    chunks, items = render_batches(items, overrides, render_batch_size)
    with annotate:
        # Feed-forward chunks first: they do their own warps and need nothing else.
        futures = {stylize_batch.submit(chunk, out, run_id, overrides, storage_options,
                                        torch_threads, extra=len(chunk) - 1): chunk
                   for chunk in chunks}
        batches = [estimate_warp_batch.submit(chunk, out, run_id, overrides, storage_options,
                                              extra=len(chunk) - 1)
                   for chunk in warp_batches(items, overrides, warp_batch_size)]
        estimates: dict[str, str] = {}
        for batch in batches:
            try:
                estimates.update(batch.result())
            except Exception:  # noqa: BLE001 - the items then estimate their own warps
                get_run_logger().warning("a batched warp estimation failed; items fall back")
        futures.update({stylize_item.submit(item, out, run_id, overrides, storage_options,
                                            torch_threads, estimates.get(item["id"])): [item]
                        for item in items})
    records: list[dict[str, Any]] = []
    for future in as_completed(list(futures)):
        try:
            result = future.result()
            finished = result if isinstance(result, list) else [result]
        except Exception as exc:  # transient I/O that outlived its retries, or a crash
            if isinstance(exc, s3.StorageUnavailableError):
                # Stop here: the runner cancels the items not started; a re-run resumes.
                stopped = f"{exc}; run {run_id} stopped after {len(records)} items (re-run)"
                raise s3.StorageUnavailableError(stopped) from None
            finished = []
            for item in futures[future]:
                entry = ManifestItem.from_dict(item)
                record = dataset.failed_record(entry, run_id, f"{type(exc).__name__}: {exc}")
                try:
                    dataset.write_journal(out, record, storage_options)
                except Exception as journal_exc:  # noqa: BLE001 - the run file still gets it
                    get_run_logger().warning("journal row of %s not written: %s", entry.id,
                                             dataset.one_line(str(journal_exc)))
                finished.append(record)
        for record in finished:
            records.append(record)
            done = already_done + len(records)
            for listener in PROGRESS_LISTENERS:
                listener(done, total, record)
        if progress_id:
            update_progress_artifact(progress_id, 100.0 * done / max(total, 1),
                                     description=f"{done}/{total} items")
    return records


@flow(name="stylize-dataset")
def stylize_dataset(
    manifest: str,
    out: str,
    overrides: dict[str, Any] | None = None,
    runner: RunnerName = "threads",
    workers: int = 1,
    dask_address: str | None = None,
    gpus_per_item: float = 0,
    torch_threads: int | None = None,
    s3_endpoint_url: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_region: str | None = None,
    run_id: str | None = None,
    contact_sheet_items: int = 16,
    warp_batch_size: int = 8,
    render_batch_size: int = 8,
    break_lock: bool = False,
) -> dict[str, Any]:
    """Stylise every item of ``manifest`` into ``out`` (local folder or ``s3://`` prefix).

    ``overrides`` are flat option names (``size``, ``warp_method``, ``style_weight``, ...) applied
    to every item; a manifest row's own columns win. Re-running with the same ``out`` skips
    items whose files are all present. Items using the learned warp network have their warps
    estimated ``warp_batch_size`` at a time in one forward pass (the batchable GPU work)
    before the per-item tasks; items with a feed-forward renderer (``renderer`` wct/adain; the
    pipeline's default is `PIPELINE_RENDERER`) are warped and rendered ``render_batch_size``
    at a time, in one task per chunk. One run at a time holds ``out`` (`lwst.run_lock`;
    ``break_lock`` takes over a stale lock). Returns counts and where the metadata went.
    """
    overrides = {"renderer": PIPELINE_RENDERER, **(overrides or {})}
    logger = get_run_logger()
    opts = _storage_options(s3_endpoint_url, aws_access_key_id, aws_secret_access_key, aws_region)
    for uri in (manifest, out):
        s3.check_reachable(uri, opts)
    items = read_manifest(manifest, opts)
    base = with_overrides(StylizeConfig(), overrides or {})
    run_id = run_id or _new_run_id()
    if id_problem(run_id):
        raise ValueError(f"run_id: {id_problem(run_id)}")
    lock = run_lock.acquire(out, run_id, opts, break_stale=break_lock)
    try:
        with storage.temp_owner(run_id):
            return _run(items, out, base, overrides or {}, opts, run_id, runner, workers,
                        dask_address, gpus_per_item, torch_threads, contact_sheet_items,
                        warp_batch_size, render_batch_size)
    finally:
        try:
            lock.release()
        except Exception as exc:  # noqa: BLE001 - storage gone: the lock is left, and named
            logger.warning("could not release the lock %s: %s", lock.uri, dataset.one_line(
                str(exc)))


def _run(items: list[ManifestItem], out: str, base: StylizeConfig, overrides: dict[str, Any],
         opts: dict[str, Any], run_id: str, runner: RunnerName, workers: int,
         dask_address: str | None, gpus_per_item: float, torch_threads: int | None,
         contact_sheet_items: int, warp_batch_size: int,
         render_batch_size: int) -> dict[str, Any]:
    """The run proper, holding the lock on ``out``."""
    logger = get_run_logger()
    recovered = dataset.recover_journals(out, opts)
    swept = dataset.sweep_temp_files(out)
    scratch = dataset.remove_stale_scratch(out, opts)
    if recovered or swept or scratch:
        logger.info("recovered metadata of interrupted runs %s; removed %d temp files and the "
                    "scratch of runs %s", recovered, swept, scratch)
    finished = dataset.CompletedOutputs(out, opts)
    pending, skipped = [], []
    for item in items:
        try:
            config = with_overrides(base, item.overrides)
        except (KeyError, ValueError):
            pending.append(item)  # its own task records the bad setting as a failed row
            continue
        (skipped if finished.is_complete(item, config) else pending).append(item)
    records = [dataset.skipped_record(item, run_id, out) for item in skipped]
    logger.info("run %s: %d items, %d already done, %d to do", run_id, len(items),
                len(skipped), len(pending))

    progress_id = create_progress_artifact(
        100.0 * len(skipped) / len(items), key="stylize-progress",
        description=f"{len(skipped)}/{len(items)} items")
    if pending:
        task_runner = make_task_runner(runner, workers, dask_address,
                                       gpus_per_worker=1 if gpus_per_item else 0)
        records += process_items.with_options(task_runner=task_runner)(
            [item.as_dict() for item in pending], out, run_id, overrides, opts,
            torch_threads, gpus_per_item, str(progress_id), len(items), len(skipped),
            warp_batch_size, render_batch_size)
    try:
        if pending:
            dataset.remove_run_scratch(out, run_id, opts)
        metadata_uri = dataset.write_run_metadata(out, run_id, records, opts)
    except Exception as exc:
        down = s3.unreachable_reason(out, opts) if not storage.is_local(out) else None
        if down:  # the journal rows written so far are folded in by the next run
            raise s3.StorageUnavailableError(f"storage stopped answering: {down}") from exc
        raise
    summary = _report(records, out, run_id, metadata_uri, opts, contact_sheet_items,
                      base.warp.min_confidence)
    logger.info("run %s: %s", run_id, summary["counts"])
    return summary


def _report(records: list[dict[str, Any]], out: str, run_id: str, metadata_uri: str,
            opts: dict[str, Any], sheet_items: int, min_confidence: float = 0.1
            ) -> dict[str, Any]:
    """Artifacts a person wants after a run: every failure, the counts, a look at the results."""
    counts = {status: sum(r["status"] == status for r in records)
              for status in ("ok", "failed", "skipped")}
    failures = [{"id": r["id"], "error": r["error"], "content": r["content"],
                 "geometry": r["geometry"], "texture": r["texture"]}
                for r in sorted(records, key=lambda r: r["id"]) if r["status"] == "failed"]
    create_table_artifact(
        failures, key="stylize-failures",
        description=f"run {run_id}: {counts['ok']} ok, {counts['failed']} failed, "
                    f"{counts['skipped']} skipped; every failure listed")
    done = sorted(r["id"] for r in records if r["status"] in ("ok", "skipped"))
    sheet_uri = None
    if done and sheet_items > 0:
        step = max(1, len(done) // sheet_items)
        sample = done[::step][:sheet_items]
        sheet_uri = storage.join(out, "reports", f"contact_sheet-{run_id}.png")
        by_id = {r["id"]: r for r in records}
        report.item_sheet([_sheet_row(by_id[i], out) for i in sample], sheet_uri, opts)
        link = sheet_uri if "://" in sheet_uri else f"file://{sheet_uri}"
        create_image_artifact(link, key="stylize-contact-sheet",
                              description=f"{len(sample)} of {len(done)} results, run {run_id}")
    low = report.low_confidence(records, min_confidence)
    create_table_artifact(
        low, key="warp-low-confidence",
        description=f"run {run_id}: {len(low)} items with warp confidence under "
                    f"{min_confidence:g} or a fallback warp")
    create_markdown_artifact(
        f"# Run `{run_id}`\n\n| ok | failed | skipped |\n|---|---|---|\n"
        f"| {counts['ok']} | {counts['failed']} | {counts['skipped']} |\n\n"
        f"Metadata: `{metadata_uri}`\n\n"
        + (f"Contact sheet: `{sheet_uri}`\n" if sheet_uri else ""),
        key="stylize-summary")
    workers = {r["id"]: r["worker"] for r in records if r.get("worker")}
    batched = sorted(r["id"] for r in records if r.get("warp_batched"))
    return {"run_id": run_id, "counts": counts, "metadata": metadata_uri,
            "contact_sheet": sheet_uri, "failures": failures, "workers": workers,
            "warp_batched": batched, "low_confidence": low}


def _sheet_row(record: dict[str, Any], out: str) -> report.SheetRow:
    """Contact-sheet row of one item: its inputs, its warped content (if any), its output."""
    outputs = dataset.item_outputs(out, record["id"])
    warped = record.get("warped") or (outputs.warped if record["status"] == "skipped"
                                      and record.get("geometry") else None)
    return report.SheetRow(record.get("content"), record.get("geometry"), warped,
                           outputs.image, report.caption(record))
