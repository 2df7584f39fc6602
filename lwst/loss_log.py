"""A training run's CSV loss log on resume: the rows past the checkpoint are dropped, since
those steps are trained again (each step logged once). Shared by both trainers."""

from __future__ import annotations

import csv
from pathlib import Path


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
