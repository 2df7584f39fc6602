"""Per-item progress of a pipeline run, delivered to whoever is listening around the call.

The flow cannot take a callable parameter (flow parameters are JSON for the Prefect API), so
the caller scopes a callback to its own call instead: ``with listening(callback): flow(...)``.
The callback lives in a `contextvars.ContextVar`, not in a shared list: two runs in one process
(threads, tests) each see only their own listener, and nothing outlives the ``with``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

ProgressCallback = Callable[[int, int, dict[str, Any]], None]  # (done, total, last record)
# A log record's attribute the flow sets on lines its caller reports itself (each failed item:
# `lwst run` lists them in its summary), so that the caller's console filter drops them.
REPORTED_BY_CLI = "lwst_reported_by_cli"

_listener: contextvars.ContextVar[ProgressCallback | None] = contextvars.ContextVar(
    "lwst_progress_listener", default=None)


@contextmanager
def listening(callback: ProgressCallback | None) -> Iterator[None]:
    """Deliver `notify` calls made inside the ``with`` (same thread or context) to ``callback``."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def notify(done: int, total: int, record: dict[str, Any]) -> None:
    callback = _listener.get()
    if callback is not None:
        callback(done, total, record)
