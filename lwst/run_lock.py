"""One run at a time per output folder: a lock file ``<out>/_lwst.lock`` naming its holder.

Without it two runs on one ``--out`` both do every pending item and the second folds the
first's live journal as if it had been killed. The lock is created atomically: locally with
``O_CREAT | O_EXCL``, on S3 with a conditional PUT (``If-None-Match: *``, s3fs ``mode="create"``),
so of two runs starting together exactly one wins. It holds JSON: run id, host, pid, start time.

A lock whose holder was on this host and whose process is gone is stale and is taken over
silently (a ``kill -9``). Any other stale lock (a machine that died, an S3 run elsewhere) is
broken by deleting the file or by ``break_stale=True`` (``lwst run --break-lock``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from lwst import storage

LOCK_NAME = "_lwst.lock"


class RunLockedError(RuntimeError):
    """``out`` is held by another run (one-line message naming the holder and the way out)."""


@dataclass(frozen=True)
class RunLock:
    uri: str
    run_id: str
    storage_options: dict[str, Any]

    def release(self) -> None:
        """Remove the lock if it is still ours (never another run's)."""
        holder = read_holder(self.uri, self.storage_options)
        if holder is not None and holder.get("run_id") == self.run_id \
                and holder.get("pid") == os.getpid():
            storage.remove(self.uri, **self.storage_options)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_uri(out: str) -> str:
    return storage.join(out, LOCK_NAME)


def read_holder(uri: str, storage_options: dict[str, Any]) -> dict[str, Any] | None:
    """The lock's JSON, None when there is no lock, ``{}`` when it cannot be parsed."""
    try:
        data = storage.read_bytes(uri, 64 * 1024, **storage_options)
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(data)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def is_stale(holder: dict[str, Any]) -> bool:
    """Held by a process of this host that no longer exists."""
    pid = holder.get("pid")
    return (holder.get("host") == socket.gethostname() and isinstance(pid, int)
            and pid != os.getpid() and not pid_alive(pid))


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unreadable lock"
    return (f"run {holder.get('run_id')!r} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('started')})")


def _create(uri: str, data: bytes, storage_options: dict[str, Any]) -> bool:
    """Create the lock file only if absent; False when it exists."""
    if storage.is_local(uri):
        path = storage.local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True
    fs = storage.filesystem(uri, **storage_options)
    try:
        fs.pipe_file(uri, data, mode="create")
    except FileExistsError:
        return False
    except OSError:
        # The store refused the conditional PUT (HTTP 412) without the ``Condition`` header
        # s3fs looks for to raise FileExistsError (SeaweedFS): s3fs raises EINVAL instead.
        # Whether the lock is there is what decides; anything else is a real error.
        fs.invalidate_cache(uri)
        if fs.exists(uri):
            return False
        raise
    return True


def check_free(out: str, storage_options: dict[str, Any], break_stale: bool = False) -> None:
    """Raise `RunLockedError` if a live run holds ``out`` (a quick look before Prefect starts)."""
    holder = read_holder(lock_uri(out), storage_options)
    if holder is not None and not break_stale and not is_stale(holder):
        raise RunLockedError(_message(out, holder))


def _message(out: str, holder: dict[str, Any]) -> str:
    return (f"{out} is in use by {describe(holder)}; if that run is dead, delete "
            f"{lock_uri(out)} or re-run with --break-lock (flow parameter break_lock=true)")


def acquire(out: str, run_id: str, storage_options: dict[str, Any],
            break_stale: bool = False) -> RunLock:
    """Take the lock on ``out`` for ``run_id`` or raise `RunLockedError`."""
    uri = lock_uri(out)
    holder = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
              "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    data = json.dumps(holder).encode()
    for _ in range(2):
        if _create(uri, data, storage_options):
            return RunLock(uri, run_id, storage_options)
        current = read_holder(uri, storage_options)
        if current is None:
            continue  # released between our attempt and our look: try again
        if not (break_stale or is_stale(current)):
            raise RunLockedError(_message(out, current))
        storage.remove(uri, **storage_options)
    raise RunLockedError(f"{out}: could not take the lock {uri} (another run is starting)")
