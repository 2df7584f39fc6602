"""Hostile and careless use of `lwst stylize` / `lwst warp` (issue 13, issue 12 item 9): nothing
runs, hangs, crashes or is overwritten because of what an option or a file says. Every case
ends in exit 2 and one line on stderr, with no output written."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_image
from PIL import Image
from pipeline_inputs import kill_all, task_running

from lwst import storage
from lwst.cli import main
from lwst.manifest import ManifestError, validate_table
from lwst.warpnet.inference import default_checkpoint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LWST = Path(sys.executable).with_name("lwst")
FAST = ["--levels", "1", "--iterations", "2", "--quiet", "--device", "cpu"]


class Evil:
    """Unpickling this runs a shell command (what a hostile checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def _warp(tmp_path: Path, *extra: str) -> int:
    content = save_image(tmp_path / "c.png", (64, 64), seed=1)
    exemplar = save_image(tmp_path / "e.png", (64, 64), seed=2)
    return main(["warp", "--content", str(content), "--geometry", str(exemplar),
                 "--out", str(tmp_path / "w.png"), "--flow-out", str(tmp_path / "f.flo"),
                 "--size", "64", "--quiet", "--device", "cpu", *extra])


def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil(marker), "model_config": {}}, evil)
    assert _warp(tmp_path, "--warp-method", "learned", "--warpnet-checkpoint", str(evil)) == 2
    line = _one_error_line(capsys)
    assert "not a valid weights-only checkpoint" in line and str(evil) in line
    assert not marker.exists()
    assert not (tmp_path / "w.png").exists()


def test_a_truncated_checkpoint_is_one_line(tmp_path, capsys):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(default_checkpoint().read_bytes()[:5000])
    assert _warp(tmp_path, "--warp-method", "learned", "--warpnet-checkpoint", str(cut)) == 2
    assert "not a valid weights-only checkpoint" in _one_error_line(capsys)


def test_the_shipped_checkpoint_is_weights_only():
    state = torch.load(default_checkpoint(), weights_only=True)
    assert {"model", "model_config"} <= set(state)


def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    done = subprocess.run([str(LWST), "stylize", "--content", str(fifo), "--out",
                           str(tmp_path / "o.png"), "--size", "32", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "named pipe (FIFO), not a regular file" in err[0], err


def test_a_device_is_refused_before_reading(tmp_path, capsys):
    code = main(["stylize", "--content", "/dev/zero", "--out", str(tmp_path / "o.png"),
                 "--size", "32", "--quiet"])
    assert code == 2 and "character device, not a regular file" in _one_error_line(capsys)


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path, capsys, monkeypatch):
    big = save_image(tmp_path / "big.png", (256, 256), seed=3)
    monkeypatch.setenv("LWST_MAX_INPUT_BYTES", str(big.stat().st_size - 1))
    code = main(["stylize", "--content", str(big), "--out", str(tmp_path / "o.png"),
                 "--size", "32", "--quiet"])
    assert code == 2 and "over the" in _one_error_line(capsys)


@pytest.mark.parametrize("option", ["--out", "--flow-out"])
def test_an_existing_directory_as_output_is_refused(tmp_path, capsys, option):
    folder = tmp_path / "folder"
    folder.mkdir()
    outputs = {"--out": str(tmp_path / "w.png"), "--flow-out": str(tmp_path / "f.flo"),
               option: str(folder)}
    content = save_image(tmp_path / "c.png", (32, 32))
    code = main(["warp", "--content", str(content), "--geometry", str(content),
                 "--out", outputs["--out"], "--flow-out", outputs["--flow-out"],
                 "--size", "32", "--warp-method", "affine", "--quiet"])
    assert code == 2 and "is an existing directory" in _one_error_line(capsys)


@pytest.mark.parametrize("args", [["--size", "nan"], ["--seed", "abc"], ["--size"]])
def test_usage_errors_are_one_line(tmp_path, args):
    done = subprocess.run([str(LWST), "stylize", "--content", "c.png", "--out", "o.png", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lwst stylize: error: argument"), err


@pytest.mark.parametrize("args, reason", [
    (["--warp-strength", "nan"], "--warp-strength must be within 0..4, got nan"),
    (["--style-weight", "nan"], "--style-weight must be a finite number"),
    (["--content-weight", "inf"], "--content-weight must be a finite number"),
    (["--style-size", "0"], "--style-size 0 is outside"),
    (["--optim-steps", "-3"], "--optim-steps must be"),
    (["--levels", "2", "--iterations", "3,2,1"], "--iterations has 3 counts for levels 2"),
    (["--seed", str(2**70)], "--seed must be within 0..9223372036854775807"),
    (["--seed", "-1"], "--seed must be within"),
])
def test_nonsense_settings_are_refused_not_defaulted(tmp_path, capsys, args, reason):
    content = save_image(tmp_path / "c.png", (32, 32))
    code = main(["stylize", "--content", str(content), "--texture", str(content),
                 "--out", str(tmp_path / "o.png"), "--size", "32", "--quiet", *args])
    assert code == 2 and reason in _one_error_line(capsys)
    assert not (tmp_path / "o.png").exists()


def test_out_equal_to_an_input_is_refused_and_the_input_kept(tmp_path, capsys):
    content = save_image(tmp_path / "photo.png", (32, 32))
    before = content.read_bytes()
    code = main(["stylize", "--content", str(content), "--out",
                 str(tmp_path / "sub" / ".." / "photo.png"), "--size", "32", "--quiet"])
    assert code == 2 and "is also the content input" in _one_error_line(capsys)
    assert content.read_bytes() == before


@pytest.mark.parametrize("suffix, fmt", [(".jpg", "JPEG"), (".jpeg", "JPEG"),
                                         (".webp", "WEBP"), (".png", "PNG")])
def test_output_is_encoded_as_its_suffix_says(tmp_path, suffix, fmt):
    content = save_image(tmp_path / "c.png", (32, 32))
    out = tmp_path / f"result{suffix}"
    assert main(["stylize", "--content", str(content), "--out", str(out), "--size", "32",
                 "--quiet"]) == 0
    assert Image.open(out).format == fmt


def test_an_unknown_output_suffix_is_refused(tmp_path, capsys):
    content = save_image(tmp_path / "c.png", (32, 32))
    code = main(["stylize", "--content", str(content), "--out", str(tmp_path / "r.gif"),
                 "--size", "32", "--quiet"])
    assert code == 2 and "unsupported output suffix '.gif'" in _one_error_line(capsys)


def test_extreme_aspect_and_tiny_size_with_texture_are_one_line(tmp_path, capsys):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.full((8, 4000, 3), 128, np.uint8)).save(strip)
    texture = save_image(tmp_path / "t.png", (64, 64))
    code = main(["stylize", "--content", str(strip), "--texture", str(texture),
                 "--out", str(tmp_path / "o.png"), "--size", "64", *FAST])
    assert code == 2 and "the content at size 64 is 64x1" in _one_error_line(capsys)
    code = main(["stylize", "--content", str(texture), "--texture", str(texture),
                 "--out", str(tmp_path / "o.png"), "--size", "12", *FAST])
    assert code == 2 and "texture rendering needs a shorter side of at least 16" \
        in _one_error_line(capsys)
    assert not (tmp_path / "o.png").exists()


def test_invalid_bucket_name_is_named(tmp_path, capsys):
    content = save_image(tmp_path / "c.png", (32, 32))
    code = main(["stylize", "--content", str(content), "--out", "s3://Bad_Bucket/x.png",
                 "--size", "32", "--quiet"])
    assert code == 2 and "invalid bucket name 'Bad_Bucket'" in _one_error_line(capsys)


def test_s3_uris_in_and_out(tmp_path, s3_bucket, monkeypatch):
    import s3fs

    bucket, options = s3_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", options["endpoint_url"])
    fs = s3fs.S3FileSystem(**options)
    fs.put_file(str(save_image(tmp_path / "c.png", (32, 48))), f"{bucket}/in/c.png")
    assert main(["stylize", "--content", f"s3://{bucket}/in/c.png", "--out",
                 f"s3://{bucket}/out/x.png", "--metadata-out", f"s3://{bucket}/out/x.json",
                 "--size", "32", "--quiet"]) == 0
    fs.invalidate_cache()
    assert fs.cat_file(f"{bucket}/out/x.png")[:4] == b"\x89PNG"
    assert fs.exists(f"{bucket}/out/x.json")
    assert not Path("s3:").exists()


def test_http_input_is_not_handed_s3_options(tmp_path, http_folder, monkeypatch):
    root, url = http_folder
    save_image(root / "c.png", (32, 32))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # S3 settings present
    out = tmp_path / "o.png"
    assert main(["stylize", "--content", f"{url}/c.png", "--out", str(out), "--size", "32",
                 "--quiet"]) == 0
    assert Image.open(out).size == (32, 32)
    assert list(storage.options_for(f"{url}/c.png", {"endpoint_url": "x"})) == ["client_kwargs"]


def test_an_http_host_that_never_answers_fails_after_the_read_timeout(monkeypatch):
    """A host that accepts the connection and then says nothing: one line naming the URI
    after `HTTP_READ_TIMEOUT_S`, not aiohttp's five minutes (a timeout is transient: the
    pipeline reads it again, twice)."""
    import socket
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing() -> None:
        while not stop.is_set():
            held.append(listener.accept()[0])

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    monkeypatch.setattr(storage, "HTTP_READ_TIMEOUT_S", 1.0)
    uri = f"http://127.0.0.1:{listener.getsockname()[1]}/a.png"
    started = time.monotonic()
    try:
        with pytest.raises(storage.StorageReadError, match="cannot read .no answer within 1 s"
                           ) as info:
            storage.read_bytes(uri)
    finally:
        stop.set()
        for connection in held:
            connection.close()
        listener.close()
    assert time.monotonic() - started < 30 and uri in str(info.value)
    assert storage.is_transient(info.value)


def test_ids_are_bounded_and_path_cells_stripped(tmp_path):
    import pandas as pd

    from lwst.manifest import MAX_ID_LENGTH

    long_id = "a" * (MAX_ID_LENGTH + 1)
    frame = pd.DataFrame([{"id": long_id, "content": "x.png"},
                          {"id": "ok", "content": "  x.png  "}])
    with pytest.raises(ManifestError, match=f"{MAX_ID_LENGTH + 1} characters, over the "
                                            f"{MAX_ID_LENGTH} limit"):
        validate_table(frame, str(tmp_path / "m.csv"))
    items = validate_table(frame.iloc[1:], str(tmp_path / "m.csv"))
    assert items[0].content == str(tmp_path / "x.png")


def test_manifest_size_zero_is_refused_up_front(tmp_path):
    import pandas as pd

    frame = pd.DataFrame([{"id": "a", "content": "x.png", "size": "0"}])
    with pytest.raises(ManifestError, match="bad size '0': size 0 is outside"):
        validate_table(frame, str(tmp_path / "m.csv"))


def test_temp_files_carry_lwst_prefix_and_owner(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with storage.temp_owner("run7"):
        storage.write_bytes_atomic(tmp_path / "a.png", b"x")
    assert seen[0].startswith(".lwst-run7.a.png.") and storage.is_temp_name(seen[0])
    assert not storage.is_temp_name(".notes.tmp")


def test_lock_local_second_holder_refused_stale_taken_over(tmp_path):
    from lwst import run_lock

    out = str(tmp_path / "out")
    first = run_lock.acquire(out, "r1", {})
    with pytest.raises(run_lock.RunLockedError, match=r"in use by run 'r1' \(pid \d+"):
        run_lock.check_free(out, {})
    with pytest.raises(run_lock.RunLockedError, match="--break-lock"):
        run_lock.acquire(out, "r2", {})
    first.release()
    assert not (tmp_path / "out" / run_lock.LOCK_NAME).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / "out" / run_lock.LOCK_NAME).write_text(
        f'{{"run_id": "dead", "host": "{os.uname().nodename}", "pid": {dead}}}')
    run_lock.acquire(out, "r2", {}).release()  # a dead holder on this host: taken over


@pytest.fixture(params=["moto", "seaweedfs"])
def any_s3_bucket(request):
    """A bucket on each S3 server the tests run: they answer a refused conditional PUT
    differently (moto as s3fs expects; SeaweedFS without the header, a plain 412)."""
    if request.param == "moto":
        return request.getfixturevalue("s3_bucket")
    import uuid

    import s3fs

    options = {"endpoint_url": request.getfixturevalue("seaweedfs_endpoint"), "key": "k",
               "secret": "s"}
    bucket = f"lwst-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(**options).mkdir(bucket)
    return bucket, options


def test_lock_on_s3_is_a_conditional_create(any_s3_bucket):
    from lwst import run_lock

    bucket, options = any_s3_bucket
    out = f"s3://{bucket}/results"
    first = run_lock.acquire(out, "r1", options)
    assert not run_lock._create(run_lock.lock_uri(out), b"{}", options)
    holder = run_lock.read_holder(run_lock.lock_uri(out), options)
    assert holder["run_id"] == "r1"
    with pytest.raises(run_lock.RunLockedError, match="in use by run 'r1'"):
        run_lock.acquire(out, "r2", options)  # one line, not the store's error
    first.release()
    assert run_lock.read_holder(run_lock.lock_uri(out), options) is None
    # A run of this host that died holding the lock (storage gone mid-run, then back): taken
    # over silently, as locally; a foreign live one only with break_stale.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    lock = (f'{{"run_id": "dead", "host": "{os.uname().nodename}", "pid": {dead}}}').encode()
    assert run_lock._create(run_lock.lock_uri(out), lock, options)
    run_lock.acquire(out, "r3", options).release()
    assert run_lock._create(run_lock.lock_uri(out), b'{"run_id": "elsewhere", "host": "x"}',
                            options)
    with pytest.raises(run_lock.RunLockedError, match="--break-lock"):
        run_lock.acquire(out, "r4", options)
    run_lock.acquire(out, "r4", options, break_stale=True).release()


def test_pickle_module_is_never_asked_for_a_global(tmp_path):
    """weights_only refuses any global outside torch's allow-list, os.system included."""
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Evil(tmp_path / "m")))
    from lwst.warpnet.inference import BadCheckpointError, read_checkpoint

    with pytest.raises(BadCheckpointError):
        read_checkpoint(evil)
    assert not (tmp_path / "m").exists()


def _manifest(tmp_path: Path) -> Path:
    import pandas as pd

    save_image(tmp_path / "c.png", (32, 32))
    path = tmp_path / "m.csv"
    pd.DataFrame([{"id": "a", "content": "c.png"}]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case", ["run-id", "out-file", "locked", "size-0"])
def test_run_refuses_before_prefect_starts(tmp_path, capsys, case):
    from lwst import run_lock

    manifest = _manifest(tmp_path)
    out = tmp_path / "out"
    extra: list[str] = []
    if case == "run-id":
        extra = ["--run-id", "../x"]
    elif case == "size-0":
        extra = ["--size", "0"]
    elif case == "out-file":
        out.write_text("a file")
    else:
        out.mkdir()
        (out / run_lock.LOCK_NAME).write_text(
            f'{{"run_id": "other", "host": "{os.uname().nodename}", "pid": 1, '
            '"started": "2026-12-02T20:00:00+00:00"}')
    started = time.monotonic()
    assert main(["run", str(manifest), "--out", str(out), "--quiet", *extra]) == 2
    line = _one_error_line(capsys)
    assert time.monotonic() - started < 10  # no Prefect server was started
    expected = {"run-id": "--run-id: id '../x' has characters outside",
                "out-file": "is an existing file, not a folder",
                "locked": "is in use by run 'other' (pid 1 on ",
                "size-0": "--size 0 is outside the supported range 8..8192"}[case]
    assert expected in line
    if case == "locked":
        assert "--break-lock" in line and run_lock.LOCK_NAME in line


@pytest.mark.slow  # the default timeouts, waited out: ~21 s
def test_silent_s3_endpoint_gives_up_within_a_minute_by_default(tmp_path, capsys, monkeypatch):
    """A server that accepts connections and never answers, with lwst's default timeouts."""
    import socket

    for name in ("LWST_S3_CONNECT_TIMEOUT", "LWST_S3_READ_TIMEOUT", "LWST_S3_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    manifest = _manifest(tmp_path)
    started = time.monotonic()
    try:
        code = main(["run", str(manifest), "--out", "s3://bucket/out", "--s3-endpoint-url",
                     endpoint, "--aws-access-key-id", "k", "--aws-secret-access-key", "s"])
    finally:
        listener.close()
    elapsed = time.monotonic() - started
    assert code == 2 and elapsed < 60, elapsed
    assert f"cannot reach {endpoint}" in _one_error_line(capsys)


def _start_slow_run(tmp_path: Path, *options: str) -> tuple[subprocess.Popen, Path, Path]:
    """`lwst run` of one item that renders for minutes (400 L-BFGS steps at 256 px), without
    PREFECT_API_URL (so with its temporary server), in its own session; returns once it holds
    its lock (the flow has started). A texture, so the item renders: without one the run
    finished within the 0.5-s polling and the lock was never seen."""
    import pandas as pd

    save_image(tmp_path / "c.png", (32, 32))
    save_image(tmp_path / "t.png", (32, 32), seed=1)
    manifest = tmp_path / "m.csv"
    pd.DataFrame([{"id": "a", "content": "c.png", "texture": "t.png"}]).to_csv(manifest,
                                                                            index=False)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        run = subprocess.Popen([str(LWST), "run", str(manifest), "--out", str(out), "--size",
                                "256", "--iterations", "400", "--levels", "1", "--quiet",
                                *options], env=env, stdout=sink, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 300  # a first server start on a busy machine is slow
    while time.monotonic() < deadline and not (out / "_lwst.lock").exists():
        if run.poll() is not None:  # it ended before starting: say why, don't wait on
            break
        time.sleep(0.5)
    if run.poll() is not None or not (out / "_lwst.lock").exists():
        run.kill()
        pytest.fail(f"the run never started (exit {run.poll()}); its output:\n"
                    + log.read_text(errors="replace")[-2000:])
    return run, out, log


@pytest.mark.slow
def test_a_killed_run_leaves_no_temporary_prefect_server(tmp_path):
    """``kill -9`` of ``lwst run`` (no PREFECT_API_URL): its temporary server goes too."""
    import signal

    import psutil

    run, out, log = _start_slow_run(tmp_path)
    server = None
    try:
        for child in psutil.Process(run.pid).children(recursive=True):
            if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                server = child
        assert server is not None, "no temporary server was started"
        os.kill(run.pid, signal.SIGKILL)
        run.wait(30)
        gone = psutil.wait_procs([server], timeout=20)[0]
        assert gone or server.status() == psutil.STATUS_ZOMBIE, "temporary server orphaned"
    finally:
        if run.poll() is None:
            run.kill()
        if server is not None and server.is_running() and \
                server.status() != psutil.STATUS_ZOMBIE:
            server.kill()  # never leave one behind, even when the test fails


@pytest.mark.slow
def test_ctrl_c_is_said_at_once_and_a_second_stops_the_run_and_its_server(tmp_path):
    """First Ctrl-C: one line at once, the item in progress goes on; second: exit 130 at once,
    the temporary server with it, no abort in C++ (exit 134 before)."""
    import signal

    import psutil

    run, out, log = _start_slow_run(tmp_path, "--renderer", "gatys")
    children: list[psutil.Process] = []
    try:
        # Interrupt only once the item is in progress (400 L-BFGS steps at 256 px: minutes);
        # earlier, the run would still be starting and this would test another path.
        deadline = time.monotonic() + 120
        while not task_running(tmp_path / "prefect-home", "stylize-a"):
            assert run.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the item never started rendering"
            time.sleep(0.2)
        children = psutil.Process(run.pid).children(recursive=True)
        assert children, "no temporary server was started"
        os.kill(run.pid, signal.SIGINT)
        said = time.monotonic() + 5
        while time.monotonic() < said and "interrupted; finishing" not in log.read_text():
            time.sleep(0.1)
        assert "lwst run: interrupted; finishing the items in progress" in log.read_text()
        assert run.poll() is None  # the item in progress is allowed to finish
        os.kill(run.pid, signal.SIGINT)
        assert run.wait(20) == 130
        text = log.read_text(errors="replace")
        assert "lwst run: stopped now" in text and "terminate called" not in text
        alive = psutil.wait_procs(children, timeout=20)[1]
        assert all(p.status() == psutil.STATUS_ZOMBIE for p in alive), "children orphaned"
    finally:
        kill_all(run, children)
