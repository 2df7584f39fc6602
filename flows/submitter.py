"""Work units onto the task runner, a bounded window at a time, handed back as they finish.

A window rather than everything at once: 100 000 futures (and their Dask graph) would hold the
flow's memory; `WINDOW_PER_WORKER` per worker keeps each fed. One stop path for threads and
Dask (`lwst.interrupts`), and a failed unit becomes failed rows, never a lost item.
"""

from __future__ import annotations

import concurrent.futures
import queue
from collections.abc import Iterator
from typing import Any

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner

from flows.work_plan import WorkUnit
from lwst import dataset, interrupts, s3
from lwst.failures import failure_kind, orchestration_reason
from lwst.item import Item
from tasks.estimate_warps import estimate_warp_batch
from tasks.stylize_batch import stylize_batch
from tasks.stylize_item import TaskRecords, failed_item_record, stylize_item

WINDOW_PER_WORKER = 4  # futures in flight per worker: enough to keep it fed, bounded memory


_STOP = object()  # put on the finished queue by a stop request (`lwst.interrupts`)


class Submitter:
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

    def run(self, units: Iterator[WorkUnit]) -> Iterator[tuple[PrefectFuture, list[Item]]]:
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


def unit_records(future: PrefectFuture, items: list[Item], out: str, run_id: str,
                opts: dict[str, Any], done: int) -> list[dict[str, Any]]:
    """The records a finished unit returned, or, when its task raised (a transient error that
    outlived its retries, a crash outside the item's own handling, or its task runner failing
    it), the rows its task journalled for this run before that, and failed rows for the rest:
    a task the Prefect API failed after it wrote its items keeps them ``ok``."""
    try:
        result = future.result()
        _forget(result)
        return result.rows
    except Exception as exc:
        if isinstance(exc, s3.StorageUnavailableError):
            # Stop here: the runner cancels the units not started; a re-run resumes.
            stopped = f"{exc}; run {run_id} stopped after {done} items (re-run)"
            raise s3.StorageUnavailableError(stopped) from None
        return _after_failure(exc, _runner_raised(future), items, out, run_id, opts)


def _after_failure(exc: Exception, by_runner: bool, items: list[Item], out: str, run_id: str,
                   opts: dict[str, Any]) -> list[dict[str, Any]]:
    """The unit's journalled rows plus failed rows (journalled too) for its other items."""
    logger = get_run_logger()
    try:
        kept = dataset.journalled_rows(out, run_id, [item.id for item in items], opts)
    except Exception as read_exc:  # noqa: BLE001 - unknown: fail them all, overwrite nothing
        logger.warning("journal rows of %s not read: %s", items[0].id,
                       dataset.one_line(str(read_exc)))
        kept = None
    missing = [item for item in items if kept is None or item.id not in kept]
    kind = "orchestration" if by_runner else failure_kind(exc)
    if missing and kind == "internal":
        logger.error("task for %s failed: internal error", items[0].id,
                     exc_info=exc, extra={"lwst_internal": True})
    elif kind == "orchestration":
        logger.warning("task for %s failed: %s; %d of its %d item(s) had finished", items[0].id,
                       orchestration_reason(exc), len(items) - len(missing), len(items))
    failed = [failed_item_record(item, exc, run_id, by_runner) for item in missing]
    if failed and kept is not None:  # unread journal: its file may be the one named the same
        try:
            dataset.write_journal(out, failed, opts)
        except Exception as journal_exc:  # noqa: BLE001 - the run file still gets them
            logger.warning("journal rows of %s not written: %s", failed[0]["id"],
                           dataset.one_line(str(journal_exc)))
    rows = {**(kept or {}), **{row["id"]: row for row in failed}}
    return [rows[item.id] for item in items]


def _runner_raised(future: PrefectFuture) -> bool:
    """Whether the task runner itself failed the unit rather than the task's own code.

    Both runners' futures wrap one that hands back the task run's final state: a task whose
    code raised ends in a Failed state, which `PrefectFuture.result` raises. A wrapped future
    that raised instead (the engine failing around the task: releasing its ``gpu`` slot with the
    Prefect API gone) or that Dask erred or cancelled (a graph its scheduler could not
    deserialise, a lost worker) never got that far."""
    wrapped = getattr(future, "wrapped_future", None)
    if isinstance(wrapped, concurrent.futures.Future):
        return wrapped.cancelled() or (wrapped.done() and wrapped.exception(0) is not None)
    return getattr(wrapped, "status", None) in ("error", "cancelled", "lost")
