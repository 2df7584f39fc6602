"""A graceful stop: what the command line asks for on Ctrl-C, and a long loop honours.

`lwst run`'s first Ctrl-C must not abort the items in progress (a Dask cluster torn down by a
KeyboardInterrupt drops them, work and all). While a run is inside `stoppable` (its whole flow
run), the command line calls `request_stop` instead of raising: the run's loop is woken, starts
nothing new, cancels what has not started, lets what runs finish, and the run writes its
metadata. Outside one (start-up, before the flow), `request_stop` returns False and the caller
interrupts as Python does.

The callback runs in a signal handler: it must be reentrant (``queue.SimpleQueue.put`` is).
No Prefect here: the flow registers its loop, the CLI asks.

SIGTERM, what batch systems send (Kubernetes, Slurm, systemd, ``timeout``, ``kill``), is a
Ctrl-C here (`sigterm_as_ctrl_c`, around the whole ``lwst`` command): it goes to the SIGINT
handler in force, so every command stops as on Ctrl-C, and the command exits 143, not 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_listeners: list[Callable[[], None]] = []
_requested = threading.Event()
_terminated = threading.Event()
_forwarding = threading.Event()  # `sigterm_as_ctrl_c` is in force (the ``lwst`` command)

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: as a shell reports a process ended by SIGTERM


def terminated() -> bool:
    """Whether a SIGTERM reached this command (`sigterm_as_ctrl_c`): it exits 143."""
    return _terminated.is_set()


def named(message: str) -> str:
    """A stop's message ("stopped at step 3; ...") naming SIGTERM when that is what stopped it
    (a Ctrl-C's is left as it was)."""
    return message.replace("stopped", "stopped on SIGTERM", 1) if terminated() else message


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM: to the SIGINT handler in force (given SIGTERM's number, so it can name it),
    or a KeyboardInterrupt where SIGINT has none (ignored: a background job of a script)."""
    _terminated.set()
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):
        raise KeyboardInterrupt
    handler(signum, frame)


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """For the block, a SIGTERM is a Ctrl-C (`_on_sigterm`): a trainer saves its checkpoint, a
    write in progress is removed, ``lwst run`` finishes its items in progress (its flow takes
    SIGTERM back from Prefect's engine: `sigterm_taken_back`). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _terminated.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _forwarding.set()
    try:
        yield
    finally:
        _forwarding.clear()
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextmanager
def sigterm_taken_back() -> Iterator[None]:
    """For the block, under `sigterm_as_ctrl_c`, SIGTERM is a Ctrl-C again (`_on_sigterm`),
    taken back from a handler installed since: inside a flow run, Prefect's engine holds
    SIGTERM and raises there, ending the run Crashed, its items in progress lost. A
    deployment's flow run (no ``lwst`` command) keeps Prefect's handler: its cancellation is
    Prefect's to handle. Main thread only."""
    if not _forwarding.is_set() or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.getsignal(signal.SIGTERM)
    taken = held is not _on_sigterm and held is not None  # None: one Python cannot restore
    if taken:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        if taken:
            signal.signal(signal.SIGTERM, held)


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


def _nothing_to_wake() -> None:
    """A `stoppable` block with no loop to wake: its code asks `stop_requested` as it goes."""


@contextmanager
def stoppable(wake: Callable[[], None] = _nothing_to_wake) -> Iterator[None]:
    """Within this block `request_stop` calls ``wake`` (from a signal handler: reentrant only)
    and `stop_requested` turns true. Blocks nest (a flow run, its submit loop): the request
    stands until the outermost one ends, which clears it."""
    if not _listeners:
        _requested.clear()
    _listeners.append(wake)
    try:
        yield
    finally:
        _listeners.remove(wake)
        if not _listeners:
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
    if caught and callable(previous):
        signal.raise_signal(signal.SIGINT)
    elif signal.SIGTERM in caught:  # SIGINT ignored (a script's background job): a held
        raise KeyboardInterrupt      # SIGTERM still stops, a Ctrl-C stays ignored
