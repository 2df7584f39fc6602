"""What a person sees of a run: progress as it goes, and after it the failures, the
low-confidence warps, a contact sheet and the counts, as Prefect artifacts."""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from lwst import dataset, progress, report, storage
from lwst.progress import REPORTED_BY_CLI
from lwst.run_records import RunRecords

PROGRESS_ARTIFACT_SECONDS = 2.0  # at most one progress-artifact API call per this many seconds
FAILURES_LOGGED = 20  # failed items named one by one in the run's log; the rest are counted


class FailureLog:
    """Names each failed item in the run's log as it fails (what `lwst run` shows, and
    ``prefect flow-run logs`` and the UI for a deployment run: ``--watch`` shows states only),
    the first `FAILURES_LOGGED` of them; the failures artifact and the metadata hold every one."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self.count = 0
        self.logger = logger

    def _log(self) -> logging.Logger | logging.LoggerAdapter:
        return self.logger or get_run_logger()

    def note(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if record.get("status") != "failed":
                continue
            self.count += 1
            if self.count <= FAILURES_LOGGED:
                # `lwst run` lists every failure in its summary: this line is for the
                # Prefect UI and logs, and stays off its console (`REPORTED_BY_CLI`).
                self._log().warning("item %s failed: %s", record["id"], record["error"],
                                    extra={REPORTED_BY_CLI: True})
            if self.count == FAILURES_LOGGED:
                self._log().warning("more failures are counted, not logged: every one is "
                                         "in the stylize-failures artifact and the metadata")


class Progress:
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


def report_run(records: RunRecords, out: str, run_id: str, metadata_uri: str,
               opts: dict[str, Any], min_confidence: float = 0.1,
               contact_sheet: bool = True) -> dict[str, Any]:
    """Artifacts a person wants after a run: every failure, the counts, a look at the results
    (the contact sheet only when asked: a run that made nothing would repeat the last one)."""
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
    if sample and contact_sheet:
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
                           record.get("output") or outputs.image, report.caption(record),
                           texture=record.get("texture"))
