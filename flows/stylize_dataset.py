"""Manifest in, stylised dataset out: the pipeline as its users run it.

    manifest -> read and validate once (all rows, before any work)
             -> a chunk of rows at a time, lazily (`flows.work_plan`): resolve each row once
                into a typed `lwst.item.Item` (its whole configuration, its output paths, its
                stages) -> skip finished items (one listing per folder and one metadata
                read, taken up front; made from other settings or inputs: redone)
             -> work units, submitted a window at a time on the task runner
                (`flows.submitter`; threads or Dask; GPU work bounded by the `gpu` tag's
                concurrency limit):
                  feed-forward chunks      stylize_batch (warp + render + write, per chunk)
                  gatys with learned warps estimate_warp_batch -> stylize_item per item, each
                                           starting as soon as its own batch is done
                  the rest                 stylize_item
             -> records, as each unit finishes, streamed to a Parquet file (`RunRecords`:
                memory stays flat) -> progress -> metadata/run-<run_id>.parquet
             -> failures table, low-confidence table, contact sheet (`flows.run_report`)

Everything below the flow lives in `lwst` (library) and `tasks` (thin task wrappers).
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelled, Failed, State

from flows.run_report import FailureLog, Progress, report_run
from flows.runners import RunnerName, make_task_runner
from flows.submitter import WINDOW_PER_WORKER, Submitter, unit_records
from flows.work_plan import WorkPlan, holding, new_run_id, pipeline_overrides, publish
from lwst import interrupts, s3
from lwst.config import StylizeConfig, with_overrides
from lwst.errors import InputError
from lwst.manifest import ManifestItem, id_problem, read_manifest
from lwst.run_records import RunRecords


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
            raise InputError(f"aws_credentials_block {credentials_block!r}: its value must be "
                             '{"aws_access_key_id": ..., "aws_secret_access_key": ...}')
        key, secret = value["aws_access_key_id"], value["aws_secret_access_key"]
    return s3.storage_options(endpoint_url=endpoint_url, key=key, secret=secret, region=region)


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
    fail_on_internal_errors: bool | None = None,
    fail_on_failed_items: bool = False,
) -> dict[str, Any] | State:
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

    Items failed by lwst's own bug (``error_kind`` ``internal``, which make `lwst run` exit 3)
    end the flow run Failed when ``fail_on_internal_errors`` is on, by default when it runs
    from a deployment, so a scheduled run shows red instead of Completed: a direct call then
    raises `ItemsFailedByBugs`, which carries the summary. Bad inputs and task-runner errors
    fail the run only when ``fail_on_failed_items`` is on (`lwst run --strict`: any failed item,
    whatever its ``error_kind``, ends the run Failed after all items finished; a direct call
    raises `ItemsFailed`); otherwise their rows say what to fix, and a re-run does them.

    A run stopped on request (`lwst run`'s first Ctrl-C or SIGTERM, `lwst.interrupts`) ends
    Cancelled, not Completed, since items were not done; a direct call raises `RunStopped` with
    the summary.
    """
    # Under ``lwst`` a Ctrl-C or SIGTERM (taken back from Prefect's engine, which would end the
    # run Crashed) asks the run to stop: the items in progress finish, the metadata is written
    # and the run ends Cancelled, wherever in the flow it lands; never a half-taken lock.
    with interrupts.sigterm_taken_back(), interrupts.stoppable():
        overrides = pipeline_overrides(overrides)
        logger = get_run_logger()
        opts = s3_storage_options(s3_endpoint_url, aws_region, aws_credentials_block)
        for uri in (manifest, out):
            s3.check_reachable(uri, opts)
        entries = read_manifest(manifest, opts)  # parsed once: `lwst run` already read it
        base = with_overrides(StylizeConfig(), overrides)
        run_id = run_id or new_run_id(flow_run.id or "local")
        if id_problem(run_id):
            raise InputError(f"run_id: {id_problem(run_id)}")
        with holding(out, run_id, opts, break_lock, logger):
            summary = _run(entries, overrides, out, base, opts, run_id, runner, workers,
                           dask_address, gpus_per_item, torch_threads, contact_sheet_items,
                           warp_batch_size, render_batch_size)
        return outcome(summary, fail_on_internal_errors, fail_on_failed_items)


class RunNotCompleted(RuntimeError):
    """A dataset flow run that ended Failed or Cancelled on purpose, its work done or stopped
    cleanly: a direct call of the flow raises it, and ``summary`` is what the flow would have
    returned (counts, failures, metadata), so the caller loses nothing."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message, summary)  # both in ``args``: the error pickles (Dask, results)
        self.summary = summary

    def __str__(self) -> str:
        return str(self.args[0])

    def with_summary(self, summary: dict[str, Any]) -> RunNotCompleted:
        """The same outcome (class and message) over another summary (augment-dataset's, with
        its manifest)."""
        return type(self)(str(self), summary)

    def state(self) -> State:
        """The state the flow returns to end its run so: Failed, or Cancelled for a stop."""
        return Failed(message=str(self), data=self)


class ItemsFailed(RunNotCompleted):
    """The run finished, but items failed, and it was asked to fail for any failed item
    (``fail_on_failed_items``, `lwst run --strict`)."""


class ItemsFailedByBugs(ItemsFailed):
    """The run finished, but some items failed by lwst's own bug, and it was asked to fail for
    that (``fail_on_internal_errors``)."""


class RunStopped(RunNotCompleted):
    """The run was stopped on request (`lwst.interrupts`: `lwst run`'s first Ctrl-C or
    SIGTERM) after the items in progress: its flow run ends Cancelled, not Completed, as items
    were not done."""

    def state(self) -> State:
        return Cancelled(message=str(self), data=self)


def stopped_message(not_done: int) -> str:
    """What a stopped run says, in its Cancelled state and on `lwst run`'s last line: what
    stopped it (`lwst.interrupts`: a Ctrl-C, or a SIGTERM from a batch system)."""
    cause = "SIGTERM" if interrupts.terminated() else "Ctrl-C"
    return (f"stopped on {cause} after the items in progress; {not_done} item(s) not done: a "
            "re-run does them")


def outcome(summary: dict[str, Any], fail_on_internal_errors: bool | None,
            fail_on_failed_items: bool = False) -> dict[str, Any] | State:
    """What a dataset flow returns: its ``summary``, or a state that ends its run otherwise,
    carrying the summary in a `RunNotCompleted`; in `lwst run`'s order of exit codes (3, 130,
    4): Failed (`ItemsFailedByBugs`) when items failed by lwst's bug and the run should fail
    for it (``fail_on_internal_errors``; None: when it runs from a deployment), Cancelled
    (`RunStopped`) when a stop left items not done, Failed (`ItemsFailed`) when any item failed
    and ``fail_on_failed_items`` asks for it."""
    bugs, failed = summary["internal_errors_total"], summary["counts"]["failed"]
    stopped = summary.get("stopped")
    if bugs and fail_on_internal_errors is None:
        fail_on_internal_errors = deployment.id is not None  # may ask the API: only when needed
    if bugs and fail_on_internal_errors:
        rest = stopped_message(stopped["not_done"]) if stopped else "the other items finished"
        return ItemsFailedByBugs(
            f"{bugs} item(s) failed by an internal error (a bug in lwst; tracebacks in this "
            f"run's logs, rows in the stylize-failures artifact); {rest}", summary).state()
    if stopped:
        return RunStopped(stopped_message(stopped["not_done"]), summary).state()
    if failed and fail_on_failed_items:
        return ItemsFailed(
            f"{failed} item(s) failed (fail_on_failed_items); the other items finished; "
            f"every row is in {summary['metadata']}, the failures in the stylize-failures "
            "artifact", summary).state()
    return summary


def _run(entries: list[ManifestItem], overrides: dict[str, Any], out: str, base: StylizeConfig,
         opts: dict[str, Any], run_id: str, runner: RunnerName, workers: int,
         dask_address: str | None, gpus_per_item: float, torch_threads: int | None,
         contact_sheet_items: int, warp_batch_size: int,
         render_batch_size: int) -> dict[str, Any]:
    """The run proper, holding ``out`` (`flows.work_plan.holding`, which tidied up after
    interrupted runs): plan what is left, run it, publish the records, report."""
    logger = get_run_logger()
    records = RunRecords(base.warp.min_confidence, contact_sheet_items)
    failures = FailureLog()
    plan = WorkPlan(entries, overrides, out, base, opts, run_id, records, warp_batch_size,
                    render_batch_size, on_failed=failures.note, log=logger)
    total = len(entries)
    logger.info("run %s: %d items", run_id, total)
    try:
        tracker = Progress(total, 0)
        units = plan.units()
        first = next(units, None)  # no task runner (or Dask cluster) when nothing is left
        tracker.add([], len(records))
        if first is not None:
            task_runner = make_task_runner(runner, workers, dask_address,
                                           gpus_per_worker=1 if gpus_per_item else 0)
            submitter = Submitter(task_runner, out, run_id, opts, torch_threads,
                                  window=max(2, WINDOW_PER_WORKER * max(1, workers)))
            with task_runner, _gpu_annotation(gpus_per_item):
                for future, unit_items in submitter.run(itertools.chain([first], units)):
                    finished = unit_records(future, unit_items, out, run_id, opts, len(records))
                    records.add(finished)
                    failures.note(finished)
                    tracker.add(finished, len(records))
        not_done = total - len(records)
        if interrupts.stop_requested():  # in the loop, or before it: nothing was submitted
            logger.warning("run %s stopped on request after the items in progress; %d items "
                           "not done (a re-run does them)", run_id, not_done)
        tally = plan.tally
        # Items run to the end here: a stop cancels some of those planned ("todo").
        ran = len(records) - tally["skipped"] - tally["refused"]
        logger.info("run %s: %d items, %d already done, %d refused, %d run (%d of them redone: "
                    "other settings or inputs than when they finished), %d not done", run_id,
                    total, tally["skipped"], tally["refused"], ran, tally["redone"], not_done)
        metadata_uri = publish(records, out, run_id, opts, scratch=bool(tally["todo"]))
    finally:
        records.discard()
    summary = report_run(records, out, run_id, metadata_uri, opts, base.warp.min_confidence,
                         contact_sheet=ran > 0)
    summary["ran"] = ran
    summary["redone"] = {"count": tally["redone"], "first": plan.redone_example}
    # Stopped: asked at any time in the flow (`stylize_dataset`'s stoppable block).
    summary["stopped"] = {"not_done": not_done} if interrupts.stop_requested() else None
    logger.info("run %s: %s", run_id, summary["counts"])
    return summary


def _gpu_annotation(gpus_per_item: float) -> contextlib.AbstractContextManager[Any]:
    """Dask tasks each claim ``gpus_per_item`` of a worker's ``GPU`` resource (none: no claim)."""
    if not gpus_per_item:
        return contextlib.nullcontext()
    import dask

    return dask.annotate(resources={"GPU": gpus_per_item})
