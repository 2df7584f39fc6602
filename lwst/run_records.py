"""One run's metadata rows as they arrive, in memory that does not grow with the run.

Records come back from the tasks as dicts of ~40 columns (``params`` alone is a kilobyte of
JSON). A run of 100 000 items cannot keep them: `RunRecords` streams them, a few thousand at a
time, into a Parquet file in the local temp folder (one row group per flush; dictionary
encoding folds the repeated ``params`` and paths) and keeps only what its reports need and
what stays small: the counts, items per worker, the first `LISTED` failures, low-confidence
rows and warp-batched ids (with their totals; every row is in the Parquet file), and a
fixed-size, order-independent sample for the contact sheet. `finish` closes the file for
`lwst.dataset.publish_run_file`. The journal rows the tasks wrote as they went are what a
killed run leaves instead (`lwst.dataset.recover_journals`).
"""

from __future__ import annotations

import heapq
import os
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lwst.metadata import SCHEMA, to_table
from lwst.report import low_confidence

FLUSH_ROWS = 2048  # rows held as dicts before they become one row group of the spill file
LISTED = 1000  # failures / low-confidence rows kept for the reports; the rest are counted


def _sample_rank(item_id: str) -> int:
    """A stable pseudo-random rank: the sample does not depend on the order items finish."""
    return zlib.crc32(item_id.encode())


class RunRecords:
    """Accumulates the rows of one run: `add` them as they finish, `finish` the file at the end,
    `discard` it once it is published."""

    def __init__(self, min_confidence: float = 0.1, sample_size: int = 16,
                 spill_dir: str | None = None):
        self.min_confidence, self.sample_size = min_confidence, sample_size
        self.counts: Counter[str] = Counter({"ok": 0, "failed": 0, "skipped": 0})
        self.failures: list[dict[str, Any]] = []
        self.internal_errors: list[dict[str, Any]] = []
        self.internal_count = 0
        self.low_confidence: list[dict[str, Any]] = []
        self.low_confidence_count = 0
        self.workers: Counter[str] = Counter()
        self.warp_batched: list[str] = []
        self.warp_batched_count = 0
        self._sample: list[tuple[int, str]] = []  # (-rank, id): the sample's heap
        self._sampled: dict[str, dict[str, Any]] = {}  # id -> its latest record
        self._rows: list[dict[str, Any]] = []
        handle, name = tempfile.mkstemp(prefix="lwst-run-records-", suffix=".parquet",
                                        dir=spill_dir)
        os.close(handle)
        self.spill = Path(name)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.spill, SCHEMA)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def add(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            status = record["status"]
            self.counts[status] += 1
            if status == "failed":
                self._note_failure(record)
            else:
                self._offer_sample(record)
            if record.get("worker"):
                self.workers[record["worker"]] += 1
            if record.get("warp_batched"):
                self.warp_batched_count += 1
                if len(self.warp_batched) < LISTED:
                    self.warp_batched.append(record["id"])
        low = low_confidence(records, self.min_confidence)
        self.low_confidence_count += len(low)
        self.low_confidence += low[: max(0, LISTED - len(self.low_confidence))]
        self._rows += records
        if len(self._rows) >= FLUSH_ROWS:
            self._flush()

    def _note_failure(self, record: dict[str, Any]) -> None:
        failure = {"id": record["id"], "error": record["error"],
                   "error_kind": record.get("error_kind"), "content": record["content"],
                   "geometry": record["geometry"], "texture": record["texture"]}
        if len(self.failures) < LISTED:
            self.failures.append(failure)
        if record.get("error_kind") == "internal":
            self.internal_count += 1
            if len(self.internal_errors) < LISTED:
                self.internal_errors.append(failure)

    def _offer_sample(self, record: dict[str, Any]) -> None:
        """Keep the `sample_size` finished items of lowest rank (a bounded heap)."""
        item_id = record["id"]
        if item_id in self._sampled:  # reported again: its latest record is the one shown
            self._sampled[item_id] = record
            return
        if self.sample_size <= 0:
            return
        entry = (-_sample_rank(item_id), item_id)
        if len(self._sample) < self.sample_size:
            heapq.heappush(self._sample, entry)
        elif entry > self._sample[0]:
            del self._sampled[heapq.heapreplace(self._sample, entry)[1]]
        else:
            return
        self._sampled[item_id] = record

    def sample(self) -> list[dict[str, Any]]:
        """The contact sheet's finished items, sorted by id (the last record of an id wins)."""
        return [self._sampled[k] for k in sorted(self._sampled)]

    def _flush(self) -> None:
        if self._rows:
            if self._writer is None:
                raise RuntimeError("RunRecords: rows added after finish")
            self._writer.write_table(to_table(self._rows))
            self._rows = []

    def finish(self) -> Path:
        """Close the spill file, one row per item (a retried item that reported twice keeps its
        last row); returns its path."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            _keep_last_per_id(self.spill)
        return self.spill

    def discard(self) -> None:
        """Remove the spill file (the run's rows are in its journal and, once published, its
        metadata file)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.spill.unlink(missing_ok=True)

    def summary(self) -> dict[str, Any]:
        self.failures.sort(key=lambda f: f["id"])
        self.internal_errors.sort(key=lambda f: f["id"])
        self.low_confidence.sort(key=lambda r: str(r["id"]))
        return {"counts": dict(self.counts), "failures": self.failures,
                "failures_total": self.counts["failed"],
                "internal_errors": self.internal_errors,
                "internal_errors_total": self.internal_count,
                "workers": dict(self.workers), "warp_batched": sorted(self.warp_batched),
                "warp_batched_total": self.warp_batched_count,
                "low_confidence": self.low_confidence,
                "low_confidence_total": self.low_confidence_count}


def _keep_last_per_id(path: Path) -> None:
    """Rewrite ``path`` without the earlier rows of an id that appears twice; a no-op (one
    column read) when every id is unique, which is every run but a retried one."""
    ids = pq.read_table(path, columns=["id"])["id"]
    if pc.count_distinct(ids).as_py() == len(ids):
        return
    positions = pa.table({"id": ids, "row": pa.array(range(len(ids)), pa.int64())})
    last = positions.group_by("id").aggregate([("row", "max")])["row_max"]
    keep = pc.is_in(positions["row"], value_set=last)
    source = pq.ParquetFile(path)
    rewritten = path.with_name(path.name + ".dedup")
    offset = 0
    with pq.ParquetWriter(rewritten, SCHEMA) as writer:
        for group in range(source.num_row_groups):
            table = source.read_row_group(group)
            mask = keep.slice(offset, table.num_rows)
            offset += table.num_rows
            writer.write_table(table.filter(mask))
    os.replace(rewritten, path)
