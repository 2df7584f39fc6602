"""Manifest in, stylised dataset out: the pipeline as its users run it.

    manifest -> read and validate once (all rows, before any work)
             -> a chunk of rows at a time (`RESOLVE_CHUNK`), lazily: resolve each row once
                into a typed `lwst.item.Item` (its whole configuration, its output paths, its
                stages) -> skip finished items (one listing per folder and one metadata
                read, taken up front; made from other settings or inputs: redone)
             -> work units, submitted a window at a time on the task runner (threads or Dask;
                GPU work bounded by the `gpu` tag's concurrency limit):
                  feed-forward chunks      stylize_batch (warp + render + write, per chunk)
                  gatys with learned warps estimate_warp_batch -> stylize_item per item, each
                                           starting as soon as its own batch is done
                  the rest                 stylize_item
             -> records, as each unit finishes, streamed to a Parquet file (`RunRecords`:
                memory stays flat) -> progress -> metadata/run-<run_id>.parquet
             -> failures table, low-confidence table, contact sheet

Everything below the flow lives in `lwst` (library) and `tasks` (thin task wrappers).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import itertools
import queue
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner

from flows.runners import RunnerName, make_task_runner
from lwst import dataset, interrupts, progress, report, run_lock, s3, storage
from lwst.config import PIPELINE_RENDERER, StylizeConfig, with_overrides
from lwst.failures import failure_kind
from lwst.item import Item, resolve_items
from lwst.manifest import ManifestItem, id_problem, read_manifest
from lwst.metadata import stamp
from lwst.run_records import RunRecords
from lwst.warping import BATCHED_METHODS
from tasks.estimate_warps import estimate_warp_batch
from tasks.stylize_batch import stylize_batch
from tasks.stylize_item import TaskRecords, device_name, failed_item_record, stylize_item

PROGRESS_ARTIFACT_SECONDS = 2.0  # at most one progress-artifact API call per this many seconds
WINDOW_PER_WORKER = 4  # futures in flight per worker: enough to keep it fed, bounded memory
RESOLVE_CHUNK = 4096  # manifest rows resolved into items at a time (batches form within one)


def s3_storage_options(endpoint_url: str | None, region: str | None,
                       credentials_block: str | None) -> dict[str, Any]:
    """The run's S3 options (`lwst.s3.storage_options`). Credentials are never flow
    parameters: Prefect stores a run's parameters and shows them in its UI (a pydantic
    ``SecretStr`` is masked there only when the caller passes one, and then a deployment run
    receives the mask). They come from ``credentials_block``, the name of a Prefect ``Secret``
    block holding ``{"aws_access_key_id": ..., "aws_secret_access_key": ...}``, or else from
    botocore's own chain in the process running the flow (``AWS_*`` variables, profile, role).
    """
    key = secret = None
    if credentials_block:
        from prefect.blocks.system import Secret

        value = Secret.load(credentials_block).get()
        if not (isinstance(value, dict) and {"aws_access_key_id", "aws_secret_access_key"}
                <= value.keys()):
            raise ValueError(f"aws_credentials_block {credentials_block!r}: its value must be "
                             '{"aws_access_key_id": ..., "aws_secret_access_key": ...}')
        key, secret = value["aws_access_key_id"], value["aws_secret_access_key"]
    return s3.storage_options(endpoint_url=endpoint_url, key=key, secret=secret, region=region)


def _new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{(flow_run.id or 'local')[:8]}"


def _chunks(groups: Iterable[list[Item]], size: int) -> Iterator[list[Item]]:
    for group in groups:
        for start in range(0, len(group), size):
            yield group[start : start + size]


def work_units(items: list[Item], warp_batch_size: int, render_batch_size: int,
               ) -> Iterator[tuple[str, list[Item]]]:
    """``(kind, items)`` in submission order: ``chunk`` (feed-forward items sharing one
    configuration, at most ``render_batch_size``), ``warp-batch`` (gatys items whose learned
    warps one network pass estimates, at most ``warp_batch_size``; each item follows as its
    own task) and ``item``. Groups are by `Item.batch_key`: every setting that changes a result.
    """
    feed_forward: dict[str, list[Item]] = {}
    warp_groups: dict[str, list[Item]] = {}
    singles: list[Item] = []
    for item in items:
        if render_batch_size >= 2 and item.feed_forward:
            feed_forward.setdefault(item.batch_key(), []).append(item)
        elif warp_batch_size >= 2 and item.warps and item.config.warp.method in BATCHED_METHODS:
            warp_groups.setdefault(item.batch_key(), []).append(item)
        else:
            singles.append(item)
    for chunk in _chunks(feed_forward.values(), render_batch_size):
        yield "chunk", chunk
    for chunk in _chunks(warp_groups.values(), warp_batch_size):
        if len(chunk) == 1:
            yield "item", chunk
        else:
            yield "warp-batch", chunk
    for item in singles:
        yield "item", [item]


_STOP = object()  # put on the finished queue by a stop request (`lwst.interrupts`)


class _Submitter:
    """Keeps at most ``window`` item futures in flight and hands back each as it finishes.

    A stop request (`lwst.interrupts`: `lwst run`'s first Ctrl-C) submits nothing more,
    cancels the units that have not started and hands back the ones that run as they finish:
    the same with threads and with Dask, where a KeyboardInterrupt would tear the cluster down
    and drop the items in progress. ``stopped`` then says so; the items never started have no
    record, so the next run does them.
    """

    def __init__(self, runner: TaskRunner, out: str, run_id: str, opts: dict[str, Any],
                 torch_threads: int | None, window: int):
        self.runner, self.out, self.run_id, self.opts = runner, out, run_id, opts
        self.torch_threads, self.window = torch_threads, window
        # SimpleQueue: its put is reentrant, so a signal handler may wake the loop through it.
        self.finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.in_flight = 0
        self.pending: dict[int, PrefectFuture] = {}  # submitted, not handed back (+ estimates)
        self.cancelled: set[int] = set()
        self.stopped = False

    def _watch(self, future: PrefectFuture, items: list[Item]) -> None:
        self.in_flight += 1
        self.pending[id(future)] = future
        future.add_done_callback(lambda f: self.finished.put((f, items)))

    def _submit(self, kind: str, items: list[Item]) -> None:
        common = {"out": self.out, "run_id": self.run_id, "storage_options": self.opts}
        if kind == "chunk":
            self._watch(self.runner.submit(stylize_batch, {
                "items": items, **common, "torch_threads": self.torch_threads,
                "extra": len(items) - 1}), items)
            return
        estimates = None
        if kind == "warp-batch":
            estimates = self.runner.submit(estimate_warp_batch, {
                "items": items, **common, "extra": len(items) - 1})
            self.pending[id(estimates)] = estimates
            estimates.add_done_callback(lambda f: self.pending.pop(id(f), None))
        for item in items:
            self._watch(self.runner.submit(stylize_item, {
                "item": item, **common, "torch_threads": self.torch_threads,
                "warp_estimates": estimates}), [item])

    def run(self, units: Iterator[tuple[str, list[Item]]],
            ) -> Iterator[tuple[PrefectFuture, list[Item]]]:
        with interrupts.stoppable(lambda: self.finished.put(_STOP)):
            for kind, items in units:
                if self.stopped or interrupts.stop_requested():
                    self._stop()
                    break
                self._submit(kind, items)
                while self.in_flight >= self.window and not self.stopped:
                    yield from self._take()
            while self.in_flight:
                yield from self._take()

    def _take(self) -> Iterator[tuple[PrefectFuture, list[Item]]]:
        got = self.finished.get()
        if got is _STOP:
            self._stop()
            return
        future, items = got
        self.in_flight -= 1
        self.pending.pop(id(future), None)
        if id(future) not in self.cancelled:
            yield future, items

    def _stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        futures = list(self.pending.items())
        executing = _executing_on_dask([f for _, f in futures])
        for key, future in futures:
            if _cancel_if_not_started(future, executing):
                self.cancelled.add(key)


def _cancel_if_not_started(future: PrefectFuture, executing: set[str] | None) -> bool:
    """Cancel a unit that has not begun (True); one already running is left to finish.

    A thread pool's future cancels only while queued. A Dask future would be cancelled even
    while it executes (its files written, its row then dropped), so one is cancelled only when
    no worker is executing it (``executing``: the keys they are; None when unknown: none is
    cancelled, all finish)."""
    wrapped = getattr(future, "wrapped_future", None)
    if isinstance(wrapped, concurrent.futures.Future):
        return wrapped.cancel()
    if wrapped is None or executing is None or str(wrapped.key) in executing:
        return False
    wrapped.cancel()
    return True


def _executing_on_dask(futures: list[PrefectFuture]) -> set[str] | None:
    """Keys the Dask workers are executing now (empty without Dask futures; None if unknown)."""
    clients = {id(w.client): w.client for f in futures
               if (w := getattr(f, "wrapped_future", None)) is not None and hasattr(w, "key")}
    if not clients:
        return set()

    def executing(dask_worker: Any) -> list[str]:
        return [str(key) for key, task in dask_worker.state.tasks.items()
                if task.state in ("executing", "long-running")]

    try:
        return {key for client in clients.values()
                for keys in client.run(executing).values() for key in keys}
    except Exception:  # noqa: BLE001 - a worker unreachable: cancel nothing, let all finish
        return None


def _forget(result: TaskRecords) -> None:
    """Drop Prefect's lineage links to a collected result (`TaskRecords`): this flow never
    passes results on to other tasks, and 100 000 items' links would grow its memory."""
    context = FlowRunContext.get()
    links = getattr(context, "run_results", None)
    if isinstance(links, dict):
        links.pop(id(result), None)
        links.pop(id(result.rows), None)


def _records_of(future: PrefectFuture, items: list[Item], out: str, run_id: str,
                opts: dict[str, Any], done: int) -> list[dict[str, Any]]:
    """The records a finished unit returned, or failed rows when its task raised (a transient
    error that outlived its retries, or a crash outside the item's own handling)."""
    try:
        result = future.result()
        _forget(result)
        return result.rows
    except Exception as exc:
        if isinstance(exc, s3.StorageUnavailableError):
            # Stop here: the runner cancels the units not started; a re-run resumes.
            stopped = f"{exc}; run {run_id} stopped after {done} items (re-run)"
            raise s3.StorageUnavailableError(stopped) from None
        if failure_kind(exc) == "internal":
            get_run_logger().error("task for %s failed: internal error", items[0].id,
                                   exc_info=exc, extra={"lwst_internal": True})
        records = [failed_item_record(item, exc, run_id) for item in items]
        try:
            dataset.write_journal(out, records, opts)
        except Exception as journal_exc:  # noqa: BLE001 - the run file still gets them
            get_run_logger().warning("journal rows of %s not written: %s", items[0].id,
                                     dataset.one_line(str(journal_exc)))
        return records


class _Progress:
    """Progress to the caller's listener (`lwst.progress`) on every item, and to the Prefect
    progress artifact at most every `PROGRESS_ARTIFACT_SECONDS` (each update is an API call)."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.last = total, done, 0.0
        self.artifact_id = create_progress_artifact(
            100.0 * done / max(total, 1), key="stylize-progress",
            description=f"{done}/{total} items")

    def add(self, records: list[dict[str, Any]], recorded: int) -> None:
        """``records`` just finished; ``recorded`` rows in all so far (finished items found by
        the resume check count as they are found)."""
        first = recorded - len(records)
        for k, record in enumerate(records):
            progress.notify(first + k + 1, self.total, record)
        self.done = recorded
        now = time.monotonic()
        if now - self.last >= PROGRESS_ARTIFACT_SECONDS or self.done == self.total:
            self.last = now
            update_progress_artifact(self.artifact_id, 100.0 * self.done / max(self.total, 1),
                                     description=f"{self.done}/{self.total} items")


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
    aws_region: str | None = None,
    aws_credentials_block: str | None = None,
    run_id: str | None = None,
    contact_sheet_items: int = 16,
    warp_batch_size: int = 8,
    render_batch_size: int = 8,
    break_lock: bool = False,
) -> dict[str, Any]:
    """Stylise every item of ``manifest`` into ``out`` (local folder or ``s3://`` prefix).

    ``overrides`` are flat option names (``size``, ``warp_method``, ``style_weight``, ...) applied
    to every item; a manifest row's own columns win. Re-running with the same ``out`` skips
    items whose files are all present and were made from the same settings and inputs; those
    made from others are redone (``redone`` in the summary). Items with a feed-forward
    renderer (``renderer`` wct/adain; the pipeline's default is `PIPELINE_RENDERER`) are
    warped and rendered ``render_batch_size`` at a time, in one task per chunk; gatys items
    using the learned warp network have their warps estimated ``warp_batch_size`` at a time in
    one forward pass. One run at a time holds ``out`` (`lwst.run_lock`; ``break_lock`` takes
    over a stale lock). S3 credentials: `s3_storage_options`. Returns counts, failures
    (``internal_errors``: those that were lwst's bug) and where the metadata went.
    """
    overrides = {"renderer": PIPELINE_RENDERER, **(overrides or {})}
    logger = get_run_logger()
    opts = s3_storage_options(s3_endpoint_url, aws_region, aws_credentials_block)
    for uri in (manifest, out):
        s3.check_reachable(uri, opts)
    entries = read_manifest(manifest, opts)  # parsed once: `lwst run` already read it
    base = with_overrides(StylizeConfig(), overrides)
    run_id = run_id or _new_run_id()
    if id_problem(run_id):
        raise ValueError(f"run_id: {id_problem(run_id)}")
    lock = run_lock.acquire(out, run_id, opts, break_stale=break_lock)
    try:
        with storage.temp_owner(run_id):
            return _run(entries, overrides, out, base, opts, run_id, runner, workers,
                        dask_address, gpus_per_item, torch_threads, contact_sheet_items,
                        warp_batch_size, render_batch_size)
    finally:
        try:
            lock.release()
        except Exception as exc:  # noqa: BLE001 - storage gone: the lock is left, and named
            logger.warning("could not release the lock %s: %s", lock.uri, dataset.one_line(
                str(exc)))


def _run(entries: list[ManifestItem], overrides: dict[str, Any], out: str, base: StylizeConfig,
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
    records = RunRecords(base.warp.min_confidence, contact_sheet_items)
    total = len(entries)
    logger.info("run %s: %d items", run_id, total)
    tally = Counter[str]()
    redone_example: list[str] = []

    def units() -> Iterator[tuple[str, list[Item]]]:
        """Work units of the rows still to do, a chunk of rows at a time; the finished and
        refused rows get their records on the way. An item finished before with other
        settings or inputs is redone (its files are stale), and said so once."""
        configs: dict[str, StylizeConfig | str] = {}
        params: dict[int, str] = {}  # per shared configuration object (`resolve_items`)
        devices: dict[str, str] = {}  # the rows' ``device``, per asked device (`auto`, ...)

        def device(asked: str) -> str:
            if asked not in devices:
                devices[asked] = device_name(asked)
            return devices[asked]
        for start in range(0, total, RESOLVE_CHUNK):
            items, refused = resolve_items(entries[start : start + RESOLVE_CHUNK], overrides,
                                           out, configs)
            todo, done = [], []
            for item in items:
                changes = finished.changes(item, item.config)
                if changes == [] and finished.files_complete(item, item.config):
                    done.append(item)
                    continue
                todo.append(item)
                if changes:
                    tally["redone"] += 1
                    if tally["redone"] == 1:
                        redone_example.append(f"{item.id}: {'; '.join(changes)}")
                        logger.warning("redoing items finished before with other settings or "
                                       "inputs, first %s", redone_example[0])
            records.add([stamp(dataset.skipped_record(item, run_id, out, params.setdefault(
                id(item.config), item.params_json())), device(item.config.device))
                for item in done])
            if refused:
                rows = [stamp(dataset.failed_record(r.entry, run_id, r.reason),
                              device(base.device)) for r in refused]
                dataset.write_journal(out, rows, opts)
                records.add(rows)
            tally.update(skipped=len(done), refused=len(refused), todo=len(todo))
            yield from work_units(todo, warp_batch_size, render_batch_size)

    stopped = False
    try:
        tracker = _Progress(total, 0)
        pending = units()
        first = next(pending, None)  # no task runner (or Dask cluster) when nothing is left
        tracker.add([], len(records))
        if first is not None:
            task_runner = make_task_runner(runner, workers, dask_address,
                                           gpus_per_worker=1 if gpus_per_item else 0)
            annotate = contextlib.nullcontext()
            if gpus_per_item:
                import dask

                annotate = dask.annotate(resources={"GPU": gpus_per_item})
            window = max(2, WINDOW_PER_WORKER * max(1, workers))
            with task_runner, annotate:
                submitter = _Submitter(task_runner, out, run_id, opts, torch_threads, window)
                for future, unit_items in submitter.run(itertools.chain([first], pending)):
                    finished_records = _records_of(future, unit_items, out, run_id, opts,
                                                   len(records))
                    records.add(finished_records)
                    tracker.add(finished_records, len(records))
                stopped = submitter.stopped
        not_done = total - len(records)
        if stopped:
            logger.warning("run %s stopped on request after the items in progress; %d items "
                           "not done (a re-run does them)", run_id, not_done)
        logger.info("run %s: %d items, %d already done, %d refused, %d run (%d of them redone: "
                    "other settings or inputs than when they finished)", run_id, total,
                    tally["skipped"], tally["refused"], tally["todo"], tally["redone"])
        try:
            if tally["todo"]:
                dataset.remove_run_scratch(out, run_id, opts)
            metadata_uri = dataset.publish_run_file(out, run_id, records.finish(), opts)
        except Exception as exc:
            down = s3.unreachable_reason(out, opts) if not storage.is_local(out) else None
            if down:  # the journal rows written so far are folded in by the next run
                raise s3.StorageUnavailableError(f"storage stopped answering: {down}") from exc
            raise
    finally:
        records.discard()
    summary = _report(records, out, run_id, metadata_uri, opts, base.warp.min_confidence)
    summary["redone"] = {"count": tally["redone"], "first": next(iter(redone_example), None)}
    summary["stopped"] = {"not_done": not_done} if stopped else None
    logger.info("run %s: %s", run_id, summary["counts"])
    return summary


def _report(records: RunRecords, out: str, run_id: str, metadata_uri: str,
            opts: dict[str, Any], min_confidence: float = 0.1) -> dict[str, Any]:
    """Artifacts a person wants after a run: every failure, the counts, a look at the results."""
    summary = records.summary()
    counts, failures = summary["counts"], summary["failures"]
    internal_total = summary["internal_errors_total"]
    listed = ("every failure listed" if len(failures) == counts["failed"] else
              f"the first {len(failures)} listed; every row is in {metadata_uri}")
    create_table_artifact(
        failures, key="stylize-failures",
        description=f"run {run_id}: {counts['ok']} ok, {counts['failed']} failed "
                    f"({internal_total} by an internal error), {counts['skipped']} skipped; "
                    + listed)
    done = counts["ok"] + counts["skipped"]
    sample = records.sample()
    sheet_uri = None
    if sample:
        sheet_uri = storage.join(out, "reports", f"contact_sheet-{run_id}.png")
        earlier = dataset.latest_figures(
            out, [r["id"] for r in sample if r["status"] == "skipped"], opts)
        rows = [_sheet_row({**r, **earlier.get(r["id"], {})}, out) for r in sample]
        sheet = report.item_sheet(rows, sheet_uri, opts)
        create_image_artifact(report.data_url(sheet), key="stylize-contact-sheet",
                              description=f"{len(sample)} of {done} results, run {run_id}; "
                                          f"full size: {sheet_uri}")
    low, low_total = summary["low_confidence"], summary["low_confidence_total"]
    create_table_artifact(
        low, key="warp-low-confidence",
        description=f"run {run_id}: {low_total} items with warp confidence under "
                    f"{min_confidence:g} or a fallback warp"
                    + ("" if len(low) == low_total else f" (the first {len(low)} listed)"))
    create_markdown_artifact(
        f"# Run `{run_id}`\n\n| ok | failed | internal errors | skipped |\n|---|---|---|---|\n"
        f"| {counts['ok']} | {counts['failed']} | {internal_total} | {counts['skipped']} |\n\n"
        f"Metadata: `{metadata_uri}`\n\n"
        + (f"Contact sheet: `{sheet_uri}`\n" if sheet_uri else ""),
        key="stylize-summary")
    return {"run_id": run_id, "metadata": metadata_uri, "contact_sheet": sheet_uri, **summary}


def _sheet_row(record: dict[str, Any], out: str) -> report.SheetRow:
    """Contact-sheet row of one item: its inputs, its warped content (if any), its output."""
    outputs = dataset.item_outputs(out, record["id"])
    warped = record.get("warped") or (outputs.warped if record["status"] == "skipped"
                                      and record.get("geometry") else None)
    return report.SheetRow(record.get("content"), record.get("geometry"), warped,
                           outputs.image, report.caption(record))
