"""Task-runner choice: threads on this machine, or Dask (a LocalCluster or an existing scheduler).

Prefect fixes a flow's task runner when the flow is defined, so the stylisation flow builds the
runner its parameters ask for and submits its tasks to it directly (`TaskRunner.submit`, the
call behind `Task.submit`); a deployment can then switch engines with a parameter instead of a
code change. (A sub-flow with the runner would carry every item as flow-run parameters: at
10 000 items the API refused them with HTTP 422.)
"""

from __future__ import annotations

import signal
from typing import Any, Literal

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from lwst.errors import InputError

RunnerName = Literal["threads", "dask"]


def make_task_runner(
    runner: RunnerName = "threads",
    workers: int = 1,
    dask_address: str | None = None,
    gpus_per_worker: int = 0,
) -> TaskRunner:
    """``threads``: ``workers`` threads here. ``dask``: connect to ``dask_address`` or start a
    LocalCluster of ``workers`` single-threaded processes (each advertising ``gpus_per_worker``
    GPU resources, matched by items annotated with ``resources={"GPU": ...}``)."""
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=max(1, workers))
    if runner != "dask":
        raise InputError(f"runner must be 'threads' or 'dask', got {runner!r}")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    cluster_kwargs: dict = {"n_workers": max(1, workers), "threads_per_worker": 1,
                            "processes": True, "dashboard_address": ":0",
                            "preload": [__name__]}  # `dask_setup` in each worker
    api_url = _temporary_api_url()
    if api_url:  # workers report to this run's server instead of starting one each
        cluster_kwargs["env"] = {"PREFECT_API_URL": api_url}
    if gpus_per_worker:
        cluster_kwargs["resources"] = {"GPU": gpus_per_worker}
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs)


def dask_setup(worker: Any) -> None:
    """Run in each LocalCluster worker process (Dask's preload hook): ignore SIGINT and
    SIGTERM. A terminal's Ctrl-C, and a batch system's SIGTERM (``kill -- -PGID``, systemd's
    ``KillMode=control-group``, Slurm), signal every process of the job: the workers died of
    it, their items in progress lost. `lwst run` gets the signal too and handles it: those
    items finish, then it closes the cluster. A worker needs no signal to end: its Nanny (in
    the flow's process) stops it through a queue, then with SIGKILL (so too past its memory
    limit), and it exits at once when the flow's process ends in any way, SIGKILL included
    (a pipe from that process closes: `distributed.process`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _temporary_api_url() -> str | None:
    """The URL of the temporary API server this process runs its flow against, if any.

    Without ``PREFECT_API_URL`` every Dask worker process would start a temporary server of its
    own (three servers for a 2-worker run, orphaned by a ``kill -9``, each trying to send
    telemetry); a configured URL the workers inherit already.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    server = SubprocessASGIServer()
    return server.api_url if server.server_process is not None else None
