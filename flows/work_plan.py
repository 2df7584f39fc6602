"""What a run still has to do: manifest rows -> typed items -> work units, lazily.

The flow asks for units one at a time, so a 100 000-row manifest is resolved a chunk of rows
at a time (`RESOLVE_CHUNK`) and memory stays flat. On the way, finished items (same settings
and inputs, files complete) and refused rows get their records without any task, and each item
to write carries its files an earlier run left (`lwst.item_files.found_files`, from the resume
check's listing: no extra request), which its writer replaces.

A run whose plan finds nothing to do needs neither a task runner nor a Prefect flow run:
`record_finished_run` answers it, holding ``out`` as the flow does (`holding`) and writing the
same metadata file of ``skipped`` rows, so `lwst run` re-runs a finished manifest without
starting a temporary Prefect server (`flows.cli`). Nothing here imports Prefect's engine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from prefect import get_run_logger

from lwst import dataset, item_files, run_lock, s3, storage
from lwst.config import PIPELINE_RENDERER, StylizeConfig, with_overrides
from lwst.item import Item, RefusedItem, resolve_items
from lwst.manifest import ManifestItem
from lwst.metadata import stamp
from lwst.run_records import RunRecords
from lwst.safety import location
from lwst.warping import BATCHED_METHODS
from tasks.stylize_item import device_name

RESOLVE_CHUNK = 4096  # manifest rows resolved into items at a time (batches form within one)

WorkUnit = tuple[str, list[Item]]  # (kind, items): kind is "chunk", "warp-batch" or "item"
Log = logging.Logger | logging.LoggerAdapter


def pipeline_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The run's overrides over the pipeline's default renderer (`PIPELINE_RENDERER`): an
    override, or a manifest column, names another."""
    return {"renderer": PIPELINE_RENDERER, **(overrides or {})}


def new_run_id(suffix: str) -> str:
    """A run's default id: the UTC time and the first 8 characters of ``suffix`` (the Prefect
    flow run's id, or a random one for a run answered without one)."""
    return f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{suffix[:8]}"


def _resolved(entries: list[ManifestItem], overrides: dict[str, Any], out: str,
              configs: dict[str, StylizeConfig | str],
              ) -> Iterator[tuple[list[Item], list[RefusedItem]]]:
    """`resolve_items` a chunk of `RESOLVE_CHUNK` rows at a time (memory stays flat)."""
    for start in range(0, len(entries), RESOLVE_CHUNK):
        yield resolve_items(entries[start : start + RESOLVE_CHUNK], overrides, out, configs)


def _chunks(groups: Iterable[list[Item]], size: int) -> Iterator[list[Item]]:
    for group in groups:
        for start in range(0, len(group), size):
            yield group[start : start + size]


def work_units(items: list[Item], warp_batch_size: int, render_batch_size: int,
               ) -> Iterator[WorkUnit]:
    """``(kind, items)`` in submission order: ``chunk`` (feed-forward items sharing one
    configuration, at most ``render_batch_size``), ``warp-batch`` (gatys items whose learned
    warps one network pass estimates, at most ``warp_batch_size``; each item follows as its
    own task) and ``item``. Groups are by `Item.batch_key`: every setting that changes a result.
    Not the size: a chunk under ``upscale`` off holds contents made at their own sizes, and
    `lwst.stylize_batch` renders each shape in its own pass.
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


class WorkPlan:
    """The rows of one run still to do, as work units (`units`); the finished and refused rows
    get their records in ``records`` as they are met. ``tally`` counts skipped, refused, todo
    and redone items; an item finished before with other settings or inputs is redone (its
    files are stale), and the first one is said once (``redone_example``)."""

    def __init__(self, entries: list[ManifestItem], overrides: dict[str, Any], out: str,
                 base: StylizeConfig, opts: dict[str, Any], run_id: str, records: RunRecords,
                 warp_batch_size: int, render_batch_size: int,
                 on_failed: Callable[[list[dict[str, Any]]], None] = lambda rows: None,
                 log: Log | None = None, finished: dataset.FinishedRows | None = None):
        self.on_failed = on_failed  # sees the refused rows' records
        self.log = log  # the redo notice's; None: the Prefect run's logger (in a flow run)
        self.entries, self.overrides, self.out, self.base = entries, overrides, out, base
        self.opts, self.run_id, self.records = opts, run_id, records
        self.warp_batch_size, self.render_batch_size = warp_batch_size, render_batch_size
        self.finished = dataset.CompletedOutputs(out, opts, finished)  # read here if not given
        self.tally = Counter[str]()
        self.redone_example: str | None = None
        self._configs: dict[str, StylizeConfig | str] = {}
        self._params: dict[int, str] = {}  # per shared configuration object (`resolve_items`)
        self._devices: dict[str, str] = {}  # the rows' ``device``, per asked device
        self._inputs: set[str] | None = None  # every row's inputs (`location`), when needed

    def units(self) -> Iterator[WorkUnit]:
        """Work units of the rows still to do, a chunk of rows at a time."""
        for items, refused in _resolved(self.entries, self.overrides, self.out, self._configs):
            todo, done = [], []
            for item in items:
                changes = self.finished.changes(item, item.config)
                if changes == [] and self.finished.files_complete(item, item.config):
                    done.append(item)
                    continue
                todo.append(self._with_found(item))
                if changes:
                    self._redone(item, changes)
            self.records.add([self._skipped(item) for item in done])
            if refused:
                rows = [stamp(dataset.failed_record(r.entry, self.run_id, r.reason),
                              self._device(self.base.device)) for r in refused]
                dataset.write_journal(self.out, rows, self.opts)
                self.records.add(rows)
                self.on_failed(rows)
            self.tally.update(skipped=len(done), refused=len(refused), todo=len(todo))
            yield from work_units(todo, self.warp_batch_size, self.render_batch_size)

    def _with_found(self, item: Item) -> Item:
        """``item`` carrying its files an earlier run left (`lwst.item_files.found_files`):
        its writer removes those it does not rewrite. A file that is an input of any row of
        this run (a second pass over an earlier output) is never among them."""
        found = item_files.found_files(self.out, item.id, self.finished.names)
        if not found:
            return item  # a fresh item: nothing to replace, nothing to carry
        if self._inputs is None:
            self._inputs = {location(uri) for e in self.entries
                            for uri in (e.content, e.geometry, e.texture) if uri}
        found = tuple(uri for uri in found if location(uri) not in self._inputs)
        return replace(item, outputs=replace(item.outputs, found=found))

    def _redone(self, item: Item, changes: list[str]) -> None:
        self.tally["redone"] += 1
        if self.redone_example is None:
            self.redone_example = f"{item.id}: {'; '.join(changes)}"
            (self.log or get_run_logger()).warning(
                "redoing items finished before with other settings or inputs, first %s",
                self.redone_example)

    def _skipped(self, item: Item) -> dict[str, Any]:
        params = self._params.setdefault(id(item.config), item.params_json())
        return stamp(dataset.skipped_record(item, self.run_id, self.out, params,
                                            item.config.image_format),
                     self._device(item.config.device))

    def _device(self, asked: str) -> str:
        if asked not in self._devices:
            self._devices[asked] = device_name(asked)
        return self._devices[asked]


def finished_rows(entries: list[ManifestItem], overrides: dict[str, Any], out: str,
                  opts: dict[str, Any]) -> dataset.FinishedRows | None:
    """The metadata's finished rows when every row resolves and has an ``ok`` row made from
    the same settings and inputs (the plan's first question about each item, asked of the
    metadata alone), None at the first row that does not. The output folders are not listed:
    on S3 that is most of a plan's cost (35 s of a 100 000-item re-run), so a run that has work
    pays one metadata read for having asked, and the plan that follows reads it no second
    time."""
    finished = dataset.FinishedRows(out, opts)
    for items, refused in _resolved(entries, overrides, out, {}):
        if refused or any(finished.changes(item, item.config) != [] for item in items):
            return None
    return finished


def tidy(out: str, opts: dict[str, Any], log: Log) -> None:
    """Fold in the metadata of interrupted runs and remove what they left half-made."""
    recovered = dataset.recover_journals(out, opts)
    swept = dataset.sweep_temp_files(out)
    scratch = dataset.remove_stale_scratch(out, opts)
    if recovered or swept or scratch:
        log.info("recovered metadata of interrupted runs %s; removed %d temp files and the "
                 "scratch of runs %s", recovered, swept, scratch)


@contextlib.contextmanager
def holding(out: str, run_id: str, opts: dict[str, Any], break_stale: bool,
            log: Log) -> Iterator[None]:
    """Run ``run_id``'s hold on ``out``: its lock (`lwst.run_lock`), temp files named after
    it, and what interrupted runs left tidied first (`tidy`). The lock is released at the end;
    a release that fails (storage gone) is logged, and the lock left names the run."""
    lock = run_lock.acquire(out, run_id, opts, break_stale=break_stale)
    try:
        with storage.temp_owner(run_id):
            tidy(out, opts, log)
            yield
    finally:
        try:
            lock.release()
        except Exception as exc:  # noqa: BLE001 - storage gone: the lock is left, and named
            log.warning("could not release the lock %s: %s", lock.uri,
                        dataset.one_line(str(exc)))


def publish(records: RunRecords, out: str, run_id: str, opts: dict[str, Any],
            scratch: bool) -> str:
    """Write the run's metadata file (and drop its scratch); the journal rows written so far
    are folded in by the next run when the storage stopped answering."""
    try:
        if scratch:
            dataset.remove_run_scratch(out, run_id, opts)
        return dataset.publish_run_file(out, run_id, records.finish(), opts)
    except Exception as exc:
        down = s3.unreachable_reason(out, opts) if not storage.is_local(out) else None
        if down:
            raise s3.StorageUnavailableError(f"storage stopped answering: {down}") from exc
        raise


def record_finished_run(entries: list[ManifestItem], overrides: dict[str, Any], out: str,
                        opts: dict[str, Any], run_id: str, break_lock: bool,
                        warp_batch_size: int, render_batch_size: int,
                        log: Log) -> dict[str, Any] | None:
    """The summary of a run of ``entries`` that finds every item finished, None where it finds
    anything to do (a refused row, another setting or input, a missing file): then the flow
    runs. Holding ``out`` (`holding`) it plans as the flow does (`finished_rows`, then
    `WorkPlan`: the folders are listed only when the metadata says every item is done) and
    writes the metadata file of ``skipped`` rows a flow run with nothing to do writes; no
    contact sheet, as there. What it leaves under ``out`` is what that run leaves."""
    if not dataset.list_names(storage.join(out, "metadata"), opts):
        return None  # a first run (or only a killed one's journal): the flow makes ``out``
    overrides = pipeline_overrides(overrides)
    base = with_overrides(StylizeConfig(), overrides)
    with holding(out, run_id, opts, break_lock, log):
        finished = finished_rows(entries, overrides, out, opts)
        if finished is None:
            return None
        records = RunRecords(base.warp.min_confidence)
        try:
            plan = WorkPlan(entries, overrides, out, base, opts, run_id, records,
                            warp_batch_size, render_batch_size, log=log, finished=finished)
            if next(plan.units(), None) is not None:
                return None  # recorded as done, but a file of it is missing
            metadata = publish(records, out, run_id, opts, scratch=False)
        finally:
            records.discard()
    return {"run_id": run_id, "metadata": metadata, "contact_sheet": None, **records.summary(),
            "ran": 0, "redone": {"count": plan.tally["redone"], "first": plan.redone_example},
            "stopped": None}
