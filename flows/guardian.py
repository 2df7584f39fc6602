"""``python -m flows.guardian PID``: stop process PID when the process that started us dies.

`lwst run` without a Prefect server starts a temporary one as a child process; Prefect stops it
at exit, but a ``kill -9`` of `lwst run` skips that and left the server listening forever. The
guardian holds the read end of a pipe whose only write end is in `lwst run`: when `lwst run`
ends in any way, the read returns end-of-file and the guardian terminates PID (then kills it
after 5 s). It runs in its own session, so a Ctrl-C to the terminal's group does not stop it
before it has done its job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from lwst.run_lock import pid_alive


def stop(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; a process already gone is fine."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def spawn(pid: int) -> subprocess.Popen:
    """Start a guardian for ``pid``; keep the returned object (its stdin is the pipe) alive."""
    return subprocess.Popen([sys.executable, "-m", "flows.guardian", str(pid)],
                            stdin=subprocess.PIPE, start_new_session=True)


def main() -> None:
    pid = int(sys.argv[1])
    sys.stdin.buffer.read()  # returns when every write end is closed: our parent has ended
    stop(pid)


if __name__ == "__main__":
    main()
