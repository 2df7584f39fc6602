"""One run's metadata rows as they arrive, in memory that does not grow with the run.

Records come back from the tasks as dicts of ~40 columns (``params`` alone is a kilobyte of
JSON). A run of 100 000 items cannot keep them: `RunRecords` streams them, a few thousand at a
time, into a Parquet spill file in a local folder (one row group per flush; dictionary
encoding folds the repeated ``params`` and paths) and keeps only what its reports need and
what stays small: the counts, items per worker, the first `LISTED` failures, low-confidence
rows and warp-batched ids (with their totals; every row is in the Parquet file), and a
fixed-size, order-independent sample for the contact sheet. `finish` closes the file for
`lwst.dataset.publish_run_file`. The journal rows the tasks wrote as they went are what a
killed run leaves instead (`lwst.dataset.recover_journals`).

The spill files live in `spill_folder` (``<temp folder>/lwst-run-records-<uid>/``), each
``lwst-run-records-<pid>-<random>.parquet`` and held by its run with an exclusive ``flock``
for as long as the run lives. A run killed with ``kill -9`` (or a machine that lost power)
cannot remove its file, but the kernel drops its lock, so the next `RunRecords` on the machine
removes every spill file nobody holds (`remove_stale_spills`) before it makes its own: a live
run's file is never touched, whichever process or container it is in.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import tempfile
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lwst.metadata import SCHEMA, to_table
from lwst.report import fell_back, low_confidence

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so no sweep either (a killed run's file stays)
    fcntl = None

FLUSH_ROWS = 2048  # rows held as dicts before they become one row group of the spill file
LISTED = 1000  # failures / low-confidence rows kept for the reports; the rest are counted
SPILL_PREFIX = "lwst-run-records-"
DEDUP_SUFFIX = ".dedup"


def spill_folder() -> Path:
    """The local folder of this user's spill files (made owner-only where missing)."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    folder = Path(tempfile.gettempdir()) / f"{SPILL_PREFIX}{user}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():  # not ours: a fresh one
        return Path(tempfile.mkdtemp(prefix=SPILL_PREFIX))
    return folder


def _lock(fd: int) -> bool:
    """Take ``fd``'s exclusive lock without waiting; False when another holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_stale_spills(folder: str | os.PathLike[str]) -> int:
    """Delete the spill files in ``folder`` no live run holds (left by killed runs) and their
    half-written ``.dedup`` copies; returns how many spill files went."""
    if fcntl is None:
        return 0
    folder = Path(folder)
    removed = 0
    for path in folder.glob(f"{SPILL_PREFIX}*.parquet"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # gone meanwhile (its run finished), or not ours to read
            continue
        try:
            if not _lock(fd):
                continue  # a live run's
            with contextlib.suppress(FileNotFoundError):
                # Still the file we locked? Its run may have just replaced it (`finish`).
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    path.unlink()
                    removed += 1
        finally:
            os.close(fd)
    # A run that died while rewriting its file (`finish`) left a copy without its spill file
    # (a live run's has it beside, locked); one that died within the microseconds between
    # making its file and naming it (`_create_spill`) left a hidden one nobody holds.
    for dedup in folder.glob(f"{SPILL_PREFIX}*.parquet{DEDUP_SUFFIX}"):
        if not dedup.with_name(dedup.name.removesuffix(DEDUP_SUFFIX)).exists():
            dedup.unlink(missing_ok=True)
    for making in folder.glob(f".{SPILL_PREFIX}*.parquet.new"):
        with contextlib.suppress(OSError):
            if time.time() - making.stat().st_mtime > 60:
                fd = os.open(making, os.O_RDONLY)
                try:
                    if _lock(fd):
                        making.unlink()
                finally:
                    os.close(fd)
    return removed


def _create_spill(folder: Path) -> tuple[Path, int]:
    """A new empty spill file in ``folder`` and the descriptor holding its lock. It is made
    and locked under a name the sweep ignores, then renamed: no sweep sees it unlocked."""
    name = f"{SPILL_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.parquet"
    making = folder / f".{name}.new"
    fd = os.open(making, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        _lock(fd)
        os.rename(making, folder / name)
    except BaseException:
        os.close(fd)
        making.unlink(missing_ok=True)
        raise
    return folder / name, fd


def _sample_rank(item_id: str) -> int:
    """A stable pseudo-random rank: the sample does not depend on the order items finish."""
    return zlib.crc32(item_id.encode())


class RunRecords:
    """Accumulates the rows of one run: `add` them as they finish, `finish` the file at the end,
    `discard` it once it is published."""

    def __init__(self, min_confidence: float = 0.1, sample_size: int = 16,
                 spill_dir: str | os.PathLike[str] | None = None):
        self.min_confidence, self.sample_size = min_confidence, sample_size
        self.counts: Counter[str] = Counter({"ok": 0, "failed": 0, "skipped": 0})
        self.failures: list[dict[str, Any]] = []
        self.internal_errors: list[dict[str, Any]] = []
        self.internal_count = 0
        self.low_confidence: list[dict[str, Any]] = []
        self.low_confidence_count = 0
        self.fallback_count = 0  # of those, items whose field the fallback replaced
        self.workers: Counter[str] = Counter()
        self.warp_batched: list[str] = []
        self.warp_batched_count = 0
        self._sample: list[tuple[int, str]] = []  # (-rank, id): the sample's heap
        self._sampled: dict[str, dict[str, Any]] = {}  # id -> its latest record
        self._rows: list[dict[str, Any]] = []
        self._own_folder = spill_dir is None  # removed once empty (`discard`)
        for attempt in range(3):
            folder = Path(spill_dir) if spill_dir is not None else spill_folder()
            remove_stale_spills(folder)
            try:
                self.spill, self._lock_fd = _create_spill(folder)
                break
            except FileNotFoundError:  # another run removed the emptied folder just now
                if not self._own_folder or attempt == 2:
                    raise
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
        self.fallback_count += sum(1 for r in records
                                   if r.get("warp_confidence") is not None and fell_back(r))
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
            rewritten = _keep_last_per_id(self.spill)
            if rewritten is not None:  # lock the new file before it takes the spill's name
                fd = os.open(rewritten, os.O_RDONLY)
                _lock(fd)
                os.replace(rewritten, self.spill)
                os.close(self._lock_fd)
                self._lock_fd = fd
        return self.spill

    def discard(self) -> None:
        """Remove the spill file (the run's rows are in its journal and, once published, its
        metadata file)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.spill.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._own_folder:
            with contextlib.suppress(OSError):  # another run's file is in it
                self.spill.parent.rmdir()

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
                "low_confidence_total": self.low_confidence_count,
                "fallback_total": self.fallback_count}


def _keep_last_per_id(path: Path) -> Path | None:
    """``path`` without the earlier rows of an id that appears twice, written beside it (the
    caller puts it in place); None, after one column read, when every id is unique, which is
    every run but a retried one."""
    ids = pq.read_table(path, columns=["id"])["id"]
    if pc.count_distinct(ids).as_py() == len(ids):
        return None
    positions = pa.table({"id": ids, "row": pa.array(range(len(ids)), pa.int64())})
    last = positions.group_by("id").aggregate([("row", "max")])["row_max"]
    keep = pc.is_in(positions["row"], value_set=last)
    source = pq.ParquetFile(path)
    rewritten = path.with_name(path.name + DEDUP_SUFFIX)
    offset = 0
    with pq.ParquetWriter(rewritten, SCHEMA) as writer:
        for group in range(source.num_row_groups):
            table = source.read_row_group(group)
            mask = keep.slice(offset, table.num_rows)
            offset += table.num_rows
            writer.write_table(table.filter(mask))
    return rewritten
