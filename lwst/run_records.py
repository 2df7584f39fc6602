"""One run's metadata rows as they arrive, kept small enough for 100 000-item runs.

Records come back from the tasks as dicts of ~40 columns; a run keeps them as Arrow record
batches (a few hundred bytes a row instead of a few kilobytes) plus the handful of facts its
reports need (counts, failures, who ran what, low-confidence warps). The run's Parquet file is
written from the batches at the end (`lwst.dataset.write_run_table`); the journal rows the
tasks wrote as they went are what a killed run leaves instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lwst.metadata import SCHEMA, to_table
from lwst.report import low_confidence

FLUSH_ROWS = 2048  # rows held as dicts before they become one Arrow batch


class RunRecords:
    """Accumulates the rows of run ``run_id``; `add` them as they finish."""

    def __init__(self, min_confidence: float = 0.1):
        self.min_confidence = min_confidence
        self.counts: Counter[str] = Counter({"ok": 0, "failed": 0, "skipped": 0})
        self.failures: list[dict[str, Any]] = []
        self.internal_errors: list[dict[str, Any]] = []
        self.done_ids: list[str] = []
        self.workers: dict[str, str] = {}
        self.warp_batched: list[str] = []
        self.low_confidence: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self._tables: list[pa.Table] = []
        self._sorted: pa.Table | None = None  # `table()`'s answer until the next `add`

    def __len__(self) -> int:
        return sum(self.counts.values())

    def add(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            status = record["status"]
            self.counts[status] += 1
            if status == "failed":
                failure = {"id": record["id"], "error": record["error"],
                           "content": record["content"], "geometry": record["geometry"],
                           "texture": record["texture"]}
                self.failures.append(failure)
                if record.get("error_kind") == "internal":
                    self.internal_errors.append(failure)
            else:
                self.done_ids.append(record["id"])
            if record.get("worker"):
                self.workers[record["id"]] = record["worker"]
            if record.get("warp_batched"):
                self.warp_batched.append(record["id"])
        self.low_confidence += low_confidence(records, self.min_confidence)
        self._sorted = None
        self._rows += records
        if len(self._rows) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._tables.append(to_table(self._rows))
            self._rows = []

    def table(self) -> pa.Table:
        """Every row so far, one per item (the last record of an id wins), sorted by id.

        Computed once (the batches are replaced by the result, so a 100 000-row run holds one
        copy, not two) and reused until the next `add`.
        """
        if self._sorted is not None:
            return self._sorted
        self._flush()
        table = pa.concat_tables(self._tables) if self._tables else SCHEMA.empty_table()
        if table.num_rows:
            # One row per item per run, whatever happened (a retried item reports twice).
            table = table.take(pc.sort_indices(table, [("id", "ascending")]))
            ids = table["id"].to_pylist()
            keep = [k for k in range(len(ids)) if k + 1 == len(ids) or ids[k + 1] != ids[k]]
            if len(keep) < len(ids):
                table = table.take(pa.array(keep))
        self._tables, self._sorted = [table], table
        return table

    def rows_for(self, ids: list[str]) -> list[dict[str, Any]]:
        """Full records of a few ids (the contact sheet's sample)."""
        wanted = set(ids)
        table = self.table()
        mask = pc.is_in(table["id"], value_set=pa.array(sorted(wanted), pa.string()))
        return table.filter(mask).to_pylist()

    def summary(self) -> dict[str, Any]:
        self.failures.sort(key=lambda f: f["id"])
        self.internal_errors.sort(key=lambda f: f["id"])
        self.low_confidence.sort(key=lambda r: str(r["id"]))
        return {"counts": dict(self.counts), "failures": self.failures,
                "internal_errors": self.internal_errors, "workers": self.workers,
                "warp_batched": sorted(self.warp_batched), "low_confidence": self.low_confidence}
