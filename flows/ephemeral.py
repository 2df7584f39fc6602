"""The temporary Prefect server of a command-line run, tied to that run's life.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server as a child process on first
use and stops it at exit; a ``kill -9`` skips the exit handler and leaves the server
listening. `guard_temporary_server` starts that same server up front (Prefect reuses it: one
instance per process) and hands its pid to `flows.guardian`, which stops it when this process
ends in any way.

The server runs in a session of its own: a terminal's Ctrl-C signals the whole foreground
process group, and a server in `lwst run`'s group died at once, so the run, which goes on to
finish the items in progress, hung for minutes on a dead API and wrote no metadata.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

_GUARDS: list[subprocess.Popen] = []  # kept alive: their stdin pipes are the lifelines


def starts_temporary_server() -> bool:
    """Whether a run here would start a temporary server: no server is configured
    (``PREFECT_API_URL`` in the environment, a profile or a settings file) and Prefect may
    start one. Imports Prefect's settings only (about a second), not its engine."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value())


def guard_temporary_server() -> None:
    """Start and guard the temporary server, unless a server is configured."""
    from flows.guardian import spawn

    if not starts_temporary_server():
        return
    # A throwaway server has nothing to report, and offline its telemetry attempt logs an
    # ERROR into the run's output; the user's own setting wins (the server inherits os.environ).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = _own_session_server()
    server.start()
    if server.server_process is not None:
        if os.getsid(server.server_process.pid) == os.getsid(0):
            print("lwst run: warning: the temporary Prefect server shares this terminal's "
                  "process group: a Ctrl-C stops it too (set PREFECT_API_URL to a server of "
                  "your own)", file=sys.stderr)
        _GUARDS.append(spawn(server.server_process.pid))


def _own_session_server() -> Any:
    """Prefect's `SubprocessASGIServer` (the one instance Prefect's client reuses: instances
    are kept per port in a dict the subclass shares) whose uvicorn starts in a new session.
    Prefect builds the command line; only its ``Popen`` gets ``start_new_session``."""
    from prefect.server.api import server as prefect_server

    class OwnSessionServer(prefect_server.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            with _popen_in_new_session(prefect_server):
                return super()._run_uvicorn_command()

    return OwnSessionServer()


@contextlib.contextmanager
def _popen_in_new_session(module: Any) -> Iterator[None]:
    """``module.subprocess.Popen`` starts its process in a new session, for the block: the
    name is swapped in ``module``'s namespace only, not in the `subprocess` module."""
    real = module.subprocess

    class Subprocess:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802 - its name
            return real.Popen(*args, start_new_session=True, **kwargs)

    module.subprocess = Subprocess()
    try:
        yield
    finally:
        module.subprocess = real
