"""A training run's CSV loss log, shared by both trainers: one row per step, "\\n" line ends,
flushed as it goes. On resume the rows past the checkpoint are dropped, since those steps are
trained again (each step logged once)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO


def _step_of(row: list[str], column: int) -> int | None:
    try:
        return int(row[column])
    except (IndexError, ValueError):
        return None


def keep_rows_through(path: Path, step: int) -> list[list[str]]:
    """Rewrite the log at ``path`` (atomically, "\\n" line ends) without its rows past
    ``step``; returns what is left, header first (``[]`` for a missing or empty log)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    column = rows[0].index("step") if "step" in rows[0] else 0
    kept = [rows[0], *(r for r in rows[1:] if (s := _step_of(r, column)) is not None
                       and s <= step)]
    tmp = path.with_name(f".lwst-{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(kept)
    tmp.replace(path)
    return kept


class LossLog:
    """The CSV loss log at ``path`` of a run that trains step ``step + 1`` next. A resume
    (``step > 0``) first drops the rows past ``step``; a new run replaces the file. The
    header is the first row's keys, written (with the first row) unless kept from before."""

    def __init__(self, path: Path, step: int):
        self.path = path
        self.kept = keep_rows_through(path, step) if step > 0 else []
        self.header = bool(self.kept)
        self.file: TextIO | None = None
        self.writer: csv.DictWriter | None = None

    def last(self, column: str) -> float:
        """``column``'s value in the last row kept from before (0.0 without one): where a
        resumed run's running total (``seconds``) goes on from."""
        if len(self.kept) < 2 or column not in self.kept[0]:
            return 0.0
        row = self.kept[-1]
        index = self.kept[0].index(column)
        return float(row[index]) if index < len(row) and row[index] else 0.0

    def write(self, row: dict[str, object]) -> None:
        if self.writer is None:
            self.file = self.path.open("a" if self.header else "w", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row), lineterminator="\n")
            if not self.header:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
