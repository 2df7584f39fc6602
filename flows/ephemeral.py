"""The temporary Prefect server of a command-line run, tied to that run's life.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server as a child process on first
use and stops it at exit; a ``kill -9`` skips the exit handler and leaves the server
listening. `guard_temporary_server` starts that same server up front (Prefect reuses it: one
instance per process) and hands its pid to `flows.guardian`, which stops it when this process
ends in any way.
"""

from __future__ import annotations

import os
import subprocess

_GUARDS: list[subprocess.Popen] = []  # kept alive: their stdin pipes are the lifelines


def guard_temporary_server() -> None:
    """Start and guard the temporary server, unless a server is configured."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    from flows.guardian import spawn

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return
    # A throwaway server has nothing to report, and offline its telemetry attempt logs an
    # ERROR into the run's output; the user's own setting wins (the server inherits os.environ).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = SubprocessASGIServer()
    server.start()
    if server.server_process is not None:
        _GUARDS.append(spawn(server.server_process.pid))
