"""When Prefect retries a task: only after a failure another attempt may not meet."""

from __future__ import annotations

from lwst.storage import is_transient


def retry_on_transient(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's signature)
    """Retry a flaky read or write (a reset connection, a timeout), never bad input, a bug or a
    diverged training run: those fail the same way again, after minutes of work repeated."""
    exc = state.data if isinstance(state.data, BaseException) else None
    return exc is not None and is_transient(exc)
