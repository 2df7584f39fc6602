"""A graceful stop: what the command line asks for on Ctrl-C, and a long loop honours.

`lwst run`'s first Ctrl-C must not abort the items in progress (a Dask cluster torn down by a
KeyboardInterrupt drops them, work and all). While a loop is inside `stoppable`, the
command line calls `request_stop` instead of raising: the loop's callback wakes it, it starts
nothing new, cancels what has not started and lets what runs finish. Outside one (start-up,
the end of a run), `request_stop` returns False and the caller interrupts as Python does.

The callback runs in a signal handler: it must be reentrant (``queue.SimpleQueue.put`` is).
No Prefect here: the flow registers its loop, the CLI asks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_listeners: list[Callable[[], None]] = []
_requested = threading.Event()


def request_stop() -> bool:
    """Ask the running loop to stop after what is in progress; False when none is listening."""
    listeners = list(_listeners)
    if not listeners:
        return False
    _requested.set()
    for wake in listeners:
        wake()
    return True


def stop_requested() -> bool:
    return _requested.is_set()


@contextmanager
def stoppable(wake: Callable[[], None]) -> Iterator[None]:
    """Within this block `request_stop` calls ``wake`` (from a signal handler: reentrant only)
    and `stop_requested` turns true; leaving it clears the request."""
    _requested.clear()
    _listeners.append(wake)
    try:
        yield
    finally:
        _listeners.remove(wake)
        _requested.clear()
