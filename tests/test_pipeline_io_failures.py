"""Inputs that fail in the storage layer, odd shapes, and what a killed run leaves: each item
ends as its own row, in one line naming the input, and nothing is left behind."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from pipeline_inputs import write_manifest_csv

import lwst
from lwst import run_records
from lwst.config import StylizeConfig, with_overrides
from lwst.image_io import read_image
from lwst.item import Item
from lwst.item_files import item_outputs
from lwst.metadata import empty_record
from lwst.renderers import measure_losses_batch
from lwst.stylize import stylize_files
from lwst.vgg import load_vgg19

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _strip(path: Path, size: tuple[int, int] = (4000, 200)) -> Path:
    """A real photo squeezed into a very wide strip (4000x200: at 400 px it is 400x20)."""
    Image.open(EXAMPLES / "coffee.jpg").convert("RGB").resize(size).save(path, quality=90)
    return path




class _Files(BaseHTTPRequestHandler):
    """Serves ``files`` by path, counting every GET in ``hits``; a GET of a path in
    ``on_get`` first calls its function."""

    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}
    on_get: dict[str, Callable[[], None]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path in self.on_get:
            self.on_get.pop(self.path)()
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _Servers:
    """Real HTTP servers on 127.0.0.1 sharing one `_Files` handler class: `start` one now,
    or make one `later` whose port is taken but refuses connections until it listens."""

    def __init__(self):
        self.handler = type("Files", (_Files,), {"files": {}, "hits": {}, "on_get": {}})
        self.bound: list[ThreadingHTTPServer] = []
        self.serving: list[ThreadingHTTPServer] = []

    def later(self) -> tuple[str, Callable[[], None]]:
        """(base URL, function that makes it listen)."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler, bind_and_activate=False)
        server.server_bind()  # bound, not listening: a connection is refused (ECONNREFUSED)
        self.bound.append(server)

        def listen() -> None:
            server.server_activate()
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.serving.append(server)

        return f"http://127.0.0.1:{server.server_address[1]}", listen

    def start(self) -> str:
        base, listen = self.later()
        listen()
        return base

    def close(self) -> None:
        for server in self.serving:
            server.shutdown()
        for server in self.bound:
            server.server_close()


@pytest.fixture
def http_servers():
    servers = _Servers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def no_aws_credentials(monkeypatch):
    """No AWS credentials anywhere botocore looks (and no metadata service to wait for)."""
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3fs.S3FileSystem.clear_instance_cache()  # no filesystem made with earlier credentials
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_very_wide_image_that_passed_the_size_check_is_stylised_and_measured(tmp_path):
    """4000x200 at --size 400 renders 400x20: the yardstick used to shrink it to 256x13 and
    VGG's last pooling failed (RuntimeError, 'a bug in lwst'); it is measured at 320x16."""
    config = with_overrides(StylizeConfig(), {"renderer": "adain", "size": 400,
                                              "device": "cpu", "warp_method": "none"})
    outputs = item_outputs(str(tmp_path / "out"), "wide")
    record = stylize_files(Item("wide", str(_strip(tmp_path / "wide.jpg")), None,
                                str(EXAMPLES / "texture_strokes.jpg"), config, outputs))
    assert (record["width"], record["height"]) == (400, 20)
    assert all(math.isfinite(record[k]) for k in ("content_loss", "style_loss", "total_loss"))
    assert Image.open(outputs.image).size == (400, 20)


def test_the_yardstick_measures_tall_outputs_and_strip_exemplars():
    vgg = load_vgg19("random", device="cpu")
    tall = torch.rand(1, 3, 400, 20)  # 20 px wide: passes the texture stage's 16 px check
    strip = torch.rand(1, 3, 17, 400)  # an exemplar strip: 10 px high at the yardstick's 256
    figures = measure_losses_batch(vgg, tall, tall.clone(), [strip], StylizeConfig().render)
    assert all(math.isfinite(v) for v in figures[0])


@pytest.mark.usefixtures("prefect_api", "no_aws_credentials")
@pytest.mark.slow  # waits out the real retry delays (2 s, 10 s): ~30 s
def test_storage_failures_are_input_rows_naming_the_input_and_transient_reads_are_retried(
        main, tmp_path: Path, capsys, http_servers):
    """In one `lwst run` (adain: the batched path):

    - a content whose server refuses connections at the first read and answers later is read
      again after 2 s and comes out ``ok`` (was failed at once: the chunk task never retried
      a read); a 404 is not read again;
    - an S3 content without credentials is an ``input`` row naming the URI (was an internal
      error with an 81-line traceback, exit 3);
    - an unreachable texture's row names the role and the URI (was only aiohttp's message);
    - a very wide image at size 400 is ``ok`` with its losses measured;
    - every row has ``lwst_version`` and ``device``, the failed and the skipped ones too."""
    base = http_servers.start()
    flaky_base, listen = http_servers.later()
    files = http_servers.handler
    files.files["/flaky.png"] = (EXAMPLES / "cat.jpg").read_bytes()
    files.on_get["/gone.png"] = listen  # read right after flaky, in the chunk's first pass
    strokes = str(EXAMPLES / "texture_strokes.jpg")
    rows = [
        {"id": "flaky", "content": f"{flaky_base}/flaky.png", "texture": strokes},
        {"id": "gone", "content": f"{base}/gone.png", "texture": strokes},
        {"id": "coffee-mosaic", "content": "s3://my-bucket/photos/coffee.jpg",
         "texture": strokes},
        {"id": "https-bad", "content": str(EXAMPLES / "cat.jpg"),
         "texture": "http://127.0.0.1:1/t.jpg"},
        {"id": "https-bad-gatys", "content": str(EXAMPLES / "cat.jpg"),  # stylize-item's path
         "texture": "http://127.0.0.1:1/t.jpg", "renderer": "gatys", "levels": 1,
         "iterations": "1"},
        {"id": "wide", "content": str(_strip(tmp_path / "wide.jpg")), "texture": strokes,
         "size": 400},
    ]
    manifest = write_manifest_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--size", "48", "--warp-method", "none",
            "--device", "cpu", "--quiet"]
    assert main([*args, "--run-id", "io1"]) == 0
    captured = capsys.readouterr()
    assert "run io1: 2 ok, 4 failed, 0 skipped" in captured.out
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    lines = {line.split(":", 1)[0].strip(): line for line in captured.err.splitlines()
             if line.startswith("  failed ")}
    assert sorted(lines) == ["failed coffee-mosaic", "failed gone", "failed https-bad",
                             "failed https-bad-gatys"]
    assert ("content s3://my-bucket/photos/coffee.jpg: cannot read (no S3 credentials found"
            in lines["failed coffee-mosaic"]) and "NoCredentialsError" in lines[
        "failed coffee-mosaic"]
    for item in ("https-bad", "https-bad-gatys"):
        assert ("texture http://127.0.0.1:1/t.jpg: cannot read (ClientConnectorError"
                in lines[f"failed {item}"])
    assert f"{base}/gone.png: no such file" in lines["failed gone"]

    table = {r["id"]: r for r in pq.read_table(out / "metadata" / "run-io1.parquet").to_pylist()}
    assert {i: (r["status"], r["error_kind"]) for i, r in table.items()} == {
        "flaky": ("ok", None), "gone": ("failed", "input"),
        "coffee-mosaic": ("failed", "input"), "https-bad": ("failed", "input"),
        "https-bad-gatys": ("failed", "input"), "wide": ("ok", None)}
    assert files.hits["/gone.png"] == 1  # a 404 is not read again (flaky: refused, then read)
    wide = table["wide"]
    assert (wide["width"], wide["height"]) == (400, 20) and math.isfinite(wide["total_loss"])
    assert {(r["lwst_version"], r["device"]) for r in table.values()} == {
        (lwst.__version__, "cpu")}

    again = write_manifest_csv(tmp_path / "again.csv", [rows[-1]])  # finished: skipped
    assert main(["run", str(again), *args[2:], "--run-id", "io2"]) == 0
    assert "run io2: 0 ok, 0 failed, 1 skipped" in capsys.readouterr().out
    skipped = pq.read_table(out / "metadata" / "run-io2.parquet").to_pylist()
    assert [(r["status"], r["lwst_version"], r["device"]) for r in skipped] == [
        ("skipped", lwst.__version__, "cpu")]


DEAD_RUN = """
import os, sys, time
from lwst.metadata import empty_record
from lwst.run_records import RunRecords, FLUSH_ROWS
records = RunRecords(spill_dir=sys.argv[1])
records.add([dict(empty_record(f"i{k}", "dead"), status="ok") for k in range(FLUSH_ROWS)])
print(records.spill, flush=True)
time.sleep(600)
"""


def _dead_run_leftover(folder: Path) -> Path:
    """The spill file of a run killed with ``kill -9`` (a real process, really killed)."""
    process = subprocess.Popen([sys.executable, "-c", DEAD_RUN, str(folder)],
                               stdout=subprocess.PIPE, text=True)
    try:
        spill = Path(process.stdout.readline().strip())
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(60)
        process.stdout.close()
    assert spill.parent == folder and spill.stat().st_size > 0
    return spill


def test_a_killed_runs_spill_file_is_removed_by_the_next_and_a_live_ones_kept(tmp_path):
    live = run_records.RunRecords(spill_dir=tmp_path)
    dead = _dead_run_leftover(tmp_path)
    (tmp_path / f"{dead.name}.dedup").write_bytes(b"half")  # killed while rewriting
    other = tmp_path / "lwst-run-records-notes.txt"
    other.write_text("not a spill file")
    following = run_records.RunRecords(spill_dir=tmp_path)
    assert not dead.exists() and not (tmp_path / f"{dead.name}.dedup").exists()
    assert live.spill.exists() and following.spill.exists() and other.exists()
    live.add([dict(empty_record("a", "r"), status="ok")])
    assert pq.read_table(live.finish()).num_rows == 1  # the live run's file still works
    for records in (live, following):
        records.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]


@pytest.mark.usefixtures("prefect_api")
def test_the_next_lwst_run_removes_a_killed_runs_spill_file(main, tmp_path: Path, capsys):
    """`lwst run` spills its rows to a local file; one killed with ``kill -9`` used to leave
    ``/tmp/lwst-run-records-*.parquet`` for good. The next run on the machine removes it."""
    dead = _dead_run_leftover(run_records.spill_folder())
    content = tmp_path / "cat.png"
    Image.open(io.BytesIO((EXAMPLES / "cat.jpg").read_bytes())).save(content)
    manifest = write_manifest_csv(tmp_path / "m.csv", [{"id": "cat", "content": str(content)}])
    assert main(["run", str(manifest), "--out", str(tmp_path / "out"), "--size", "32",
                 "--warp-method", "none", "--device", "cpu", "--quiet"]) == 0
    assert "1 ok, 0 failed" in capsys.readouterr().out
    assert not dead.exists()
    assert read_image(tmp_path / "out" / "images" / "cat.png").shape[-1] == 32
