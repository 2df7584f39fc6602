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

import signal
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


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends, then raise it: a trainer's weights, optimiser, step
    count, log and checkpoint agree whenever the KeyboardInterrupt lands (main thread only:
    Python runs signal handlers there)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is None:  # None: a handler Python cannot restore
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)
