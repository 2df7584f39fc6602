"""Hostile manifests and storage against the real flow (issue 13): one bad row never takes down
the run, lwst deletes only what it wrote, and a store that dies mid-run ends it in one line."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import save_image
from pipeline_inputs import FAST, write_manifest_csv

pytestmark = pytest.mark.usefixtures("prefect_api")


class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_rows_fail_alone_and_lwst_deletes_only_its_own(image_folder, tmp_path,
                                                              http_folder, monkeypatch):
    from flows.stylize_dataset import stylize_dataset

    photos, styles = image_folder / "contents", image_folder / "styles"
    marker = tmp_path / "pwned"
    torch.save({"model": Evil(marker), "model_config": {}}, tmp_path / "evil.pt")
    os.mkfifo(tmp_path / "pipe.png")
    save_image(tmp_path / "big.png", (256, 256), seed=5)
    www, url = http_folder
    shutil.copy(photos / "photo2.png", www / "remote.png")
    out = tmp_path / "out"
    for folder in ("images", "project", "_work/deadrun"):
        (out / folder).mkdir(parents=True)
    shutil.copy(photos / "photo0.png", out / "images" / "self.png")
    shutil.copy(photos / "photo0.png", out / "images" / "orphan.png")  # files, no ok row
    (out / "project" / ".notes.tmp").write_text("the user's own")
    (out / "images" / ".lwst-dead.x.png.abc123.tmp").write_bytes(b"partial")
    (out / "_work" / "deadrun" / "x.flo").write_bytes(b"scratch")
    rows = [
        {"id": "good", "content": str(photos / "photo0.png")},
        {"id": "spaced", "content": "  contents/photo1.png  "},
        {"id": "evil", "content": str(photos / "photo2.png"),
         "geometry": str(styles / "style0.png"), "warp_method": "learned",
         "warpnet_checkpoint": str(tmp_path / "evil.pt")},
        {"id": "fifo", "content": str(tmp_path / "pipe.png")},
        {"id": "big", "content": str(tmp_path / "big.png")},
        {"id": "http", "content": f"{url}/remote.png"},
        {"id": "self", "content": str(out / "images" / "self.png")},
        {"id": "orphan", "content": str(photos / "photo0.png")},
    ]
    manifest = write_manifest_csv(image_folder / "m.csv", rows)
    before = (out / "images" / "self.png").read_bytes()
    monkeypatch.setenv("LWST_MAX_INPUT_BYTES", "100000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # must not reach http://
    started = time.monotonic()
    summary = stylize_dataset(str(manifest), str(out), overrides=FAST, run_id="hostile")
    assert time.monotonic() - started < 300  # the FIFO did not hang the run

    table = pq.read_table(out / "metadata" / "run-hostile.parquet").to_pylist()
    status = {r["id"]: r["status"] for r in table}
    errors = {r["id"]: r["error"] for r in table}
    assert status == {"good": "ok", "spaced": "ok", "evil": "failed", "fifo": "failed",
                      "big": "failed", "http": "ok", "self": "failed", "orphan": "ok"}, errors
    assert summary["counts"] == {"ok": 4, "failed": 4, "skipped": 0}
    assert not marker.exists()
    assert "not a valid weights-only checkpoint" in errors["evil"]
    assert "named pipe (FIFO), not a regular file" in errors["fifo"]
    assert "over the 100000-byte input limit" in errors["big"]
    assert "is also the content input" in errors["self"]
    assert (out / "images" / "self.png").read_bytes() == before
    assert (out / "project" / ".notes.tmp").read_text() == "the user's own"
    assert not (out / "images" / ".lwst-dead.x.png.abc123.tmp").exists()
    assert not (out / "_work").exists() or not list((out / "_work").iterdir())
    assert not (out / "_lwst.lock").exists()


def test_a_long_id_is_refused_before_any_work(tmp_path):
    from flows.stylize_dataset import stylize_dataset
    from lwst.manifest import ManifestError

    manifest = write_manifest_csv(tmp_path / "m.csv", [{"id": "x" * 300, "content": "a.png"},
                                                       {"id": "fine", "content": "a.png"}])
    with pytest.raises(ManifestError, match="300 characters, over the 128 limit"):
        stylize_dataset(str(manifest), str(tmp_path / "out"), overrides=FAST)
    assert not (tmp_path / "out").exists()


def test_a_locked_out_is_refused_naming_the_holder(image_folder, tmp_path):
    from flows.stylize_dataset import stylize_dataset
    from lwst import run_lock

    manifest = write_manifest_csv(tmp_path / "m.csv",
                                  [{"id": "a", "content": str(image_folder / "contents" /
                                                              "photo0.png")}])
    out = tmp_path / "out"
    held = run_lock.acquire(str(out), "first", {})  # this process: alive, not stale
    try:
        with pytest.raises(run_lock.RunLockedError, match="in use by run 'first'"):
            stylize_dataset(str(manifest), str(out), overrides=FAST, run_id="second")
        assert not (out / "images").exists()
    finally:
        held.release()
    summary = stylize_dataset(str(manifest), str(out), overrides=FAST, run_id="third")
    assert summary["counts"]["ok"] == 1


@pytest.mark.slow  # a real S3 server killed mid-run, its timeouts waited out: ~26 s
def test_s3_endpoint_dying_mid_run_ends_it_in_one_line(image_folder, tmp_path, s3_endpoint):
    """``lwst run`` (a real process, its real stderr) against our own moto server, stopped once
    the first item's journal row is there: the run stops with exit 2 and one line."""
    import subprocess
    import sys

    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("dying")
    rows = []
    for i in range(6):
        fs.put_file(str(image_folder / "contents" / f"photo{i % 3}.png"), f"dying/in/{i}.png")
        rows.append({"id": f"item{i}", "content": f"s3://dying/in/{i}.png",
                     "texture": f"s3://dying/in/{(i + 1) % 6}.png"})
    fs.put_file(str(write_manifest_csv(tmp_path / "m.csv", rows)), "dying/m.csv")
    env = {**os.environ, "LWST_S3_CONNECT_TIMEOUT": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.Popen([str(Path(sys.executable).with_name("lwst")), "run",
                            "s3://dying/m.csv", "--out", "s3://dying/out", "--s3-endpoint-url",
                            endpoint, "--size", "64", "--warp-method", "none", "--levels", "1",
                            "--iterations", "20", "--device", "cpu", "--run-id", "dying",
                            "--render-batch-size", "2", "--quiet"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run.poll() is None:
            fs.invalidate_cache()
            # Chunks of two journal together, under their first item's name.
            if fs.exists("dying/out/metadata/_journal/dying/item0.parquet") or \
                    fs.exists("dying/out/metadata/_journal/dying/item2.parquet"):
                server.stop()
                stopped = time.monotonic()
                break
            time.sleep(0.2)
        assert stopped is not None, "the run ended before the server could be stopped"
        _, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
        s3fs.S3FileSystem.clear_instance_cache()
    assert time.monotonic() - stopped < 120, err
    assert run.returncode == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1]
    assert [line for line in lines if "ERROR" in line or "error:" in line] == [last], err
    assert last.startswith("lwst run: error:") and "stopped answering" in last, err
    assert f"cannot reach {endpoint}" in last, err
