"""The pipeline against a real S3 server process on 127.0.0.1 (moto in server mode)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.fs
import pytest
from pipeline_inputs import FAST, unused_port, write_manifest_csv

from lwst import dataset
from lwst.s3 import S3Settings, StorageUnavailableError, check_reachable

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_manifest_and_images_from_s3_outputs_and_parquet_back(image_folder: Path, s3_bucket,
                                                              tmp_path: Path):
    import s3fs

    from flows.stylize_dataset import stylize_dataset

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    for name in ("photo0.png", "photo1.png"):
        fs.put_file(str(image_folder / "contents" / name), f"{bucket}/inputs/img/{name}")
    rows = [{"id": "one", "content": "img/photo0.png"}, {"id": "two", "content": "img/photo1.png"},
            {"id": "gone", "content": "img/missing.png"}]
    fs.put_file(str(write_manifest_csv(tmp_path / "m.csv", rows)), f"{bucket}/inputs/m.csv")

    endpoint = options["endpoint_url"]
    out = f"s3://{bucket}/results/v1"
    summary = stylize_dataset(f"s3://{bucket}/inputs/m.csv", out, overrides=FAST,
                              s3_endpoint_url=endpoint, run_id="s3run")
    assert summary["counts"] == {"ok": 2, "failed": 1, "skipped": 0}
    fs.invalidate_cache()
    assert sorted(fs.ls(f"{bucket}/results/v1/images", detail=False)) == [
        f"{bucket}/results/v1/images/one.png", f"{bucket}/results/v1/images/two.png"]
    assert fs.exists(f"{bucket}/results/v1/reports/contact_sheet-s3run.png")

    # Read the metadata back with pyarrow's own S3 client, independent of s3fs.
    host_port = endpoint.split("://", 1)[1]
    arrow_s3 = pyarrow.fs.S3FileSystem(endpoint_override=host_port, scheme="http",
                                       access_key="testing", secret_key="testing",
                                       region="us-east-1")
    table = pads.dataset(f"{bucket}/results/v1/metadata", filesystem=arrow_s3,
                         format="parquet").to_table()
    rows_by_id = {r["id"]: r for r in table.to_pylist()}
    assert {i: r["status"] for i, r in rows_by_id.items()} == {
        "one": "ok", "two": "ok", "gone": "failed"}
    assert rows_by_id["one"]["content"] == f"s3://{bucket}/inputs/img/photo0.png"
    assert rows_by_id["one"]["output"] == f"{out}/images/one.png"
    assert "no such file" in rows_by_id["gone"]["error"]

    assert not fs.exists(f"{bucket}/results/v1/metadata/_journal/s3run")

    # A run killed after journalling one item: the next run files its row under its run id.
    orphan = {**rows_by_id["one"], "run_id": "killed"}
    dataset.write_journal(out, orphan, options)
    again = stylize_dataset(f"s3://{bucket}/inputs/m.csv", out, overrides=FAST,
                            s3_endpoint_url=endpoint, run_id="s3run2")
    assert again["counts"] == {"ok": 0, "failed": 1, "skipped": 2}
    table = dataset.read_metadata(out, options)
    runs = sorted(zip(table["run_id"].to_pylist(), table["id"].to_pylist(), strict=True))
    assert runs == [("killed", "one"), ("s3run", "gone"), ("s3run", "one"), ("s3run", "two"),
                    ("s3run2", "gone"), ("s3run2", "one"), ("s3run2", "two")]



def test_dead_endpoint_fails_fast_with_a_clear_error():
    options = S3Settings(endpoint_url=f"http://127.0.0.1:{unused_port()}", key="k", secret="s",
                         connect_timeout=1, read_timeout=2, max_attempts=1).storage_options()
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"cannot reach http://127\.0\.0\.1:\d+"):
        check_reachable("s3://any-bucket/out", options)
    assert time.monotonic() - started < 10


def test_silent_endpoint_fails_fast_instead_of_hanging():
    """A server that accepts connections and never answers (the ~7 minute hang by default)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    options = S3Settings(endpoint_url=f"http://127.0.0.1:{port}", key="k", secret="s",
                         connect_timeout=1, read_timeout=2, max_attempts=1).storage_options()
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailableError, match="cannot reach"):
            check_reachable("s3://any-bucket/out", options)
        assert time.monotonic() - started < 15
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_missing_bucket_is_named(s3_bucket):
    _, options = s3_bucket
    with pytest.raises(StorageUnavailableError, match="bucket 'no-such-bucket' does not exist"):
        check_reachable("s3://no-such-bucket/out", options)


def test_an_s3_input_is_one_ranged_get_capped_and_an_empty_object_still_reads(s3_bucket):
    """Each S3 request is most of a tiny item's cost: one GET per input, no HEADs before it."""
    import s3fs

    from lwst.storage import InputRefusedError, read_bytes

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    fs.pipe_file(f"{bucket}/in/photo.png", b"x" * 5000)
    fs.pipe_file(f"{bucket}/in/empty.png", b"")
    uri = f"s3://{bucket}/in/photo.png"
    assert read_bytes(uri, **options) == b"x" * 5000  # starts the client
    operations: list[str] = []
    fs.s3.meta.events.register("before-call.s3",
                               lambda model, **_: operations.append(model.name))
    assert read_bytes(uri, **options) == b"x" * 5000
    assert operations == ["GetObject"]
    assert read_bytes(f"s3://{bucket}/in/empty.png", **options) == b""
    with pytest.raises(FileNotFoundError):
        read_bytes(f"s3://{bucket}/in/missing.png", **options)
    with pytest.raises(InputRefusedError, match="over the 4999-byte input limit"):
        read_bytes(uri, max_bytes=4999, **options)


def test_the_resume_listing_keeps_names_not_s3fs_details(s3_bucket):
    """A finished 100 000-item run's listing kept ~120 MiB of s3fs info dicts after the check."""
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    for i in range(3):
        fs.pipe_file(f"{bucket}/out/images/item{i}.png", b"png")
    assert dataset.list_names(f"s3://{bucket}/out/images", options) == {
        "item0.png", "item1.png", "item2.png"}
    assert f"{bucket}/out/images" not in fs.dircache
    assert dataset.list_names(f"s3://{bucket}/out/missing", options) == set()


SECRET = "never-stored-4f9c2d"  # moto takes any key: what matters is where it ends up


def _stored_parameters(run_ids: set[str]) -> list[dict]:
    """The parameters Prefect's API stored for this test's flow runs (what its UI shows)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    return [run.parameters for run in runs if run.parameters.get("run_id") in run_ids]


def _upload_inputs(s3_bucket, image_folder: Path, tmp_path: Path) -> tuple[str, str]:
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    fs.put_file(str(image_folder / "contents" / "photo0.png"), f"{bucket}/in/photo0.png")
    manifest = write_manifest_csv(tmp_path / "m.csv", [{"id": "one", "content": "photo0.png"}])
    fs.put_file(str(manifest), f"{bucket}/in/m.csv")
    return f"s3://{bucket}/in/m.csv", options["endpoint_url"]


def test_lwst_run_s3_secret_reaches_the_flow_but_not_its_stored_parameters(
        main, image_folder: Path, s3_bucket, tmp_path: Path, monkeypatch):
    """Prefect stores a flow run's parameters and shows them in its UI: ``--aws-secret-access-
    key`` goes to the flow (run in this process) through the environment botocore reads."""
    import os

    import flows.cli

    manifest, endpoint = _upload_inputs(s3_bucket, image_folder, tmp_path)
    launch, seen = flows.cli.launch_stylize_dataset, []

    def spy(*args):
        seen.append(os.environ.get("AWS_SECRET_ACCESS_KEY"))
        return launch(*args)

    monkeypatch.setattr(flows.cli, "launch_stylize_dataset", spy)
    code = main(["run", manifest, "--out", f"s3://{s3_bucket[0]}/cli-out", "--size", "48",
                 "--warp-method", "none", "--device", "cpu", "--run-id", "secret-cli",
                 "--quiet", "--s3-endpoint-url", endpoint, "--aws-access-key-id", "testing",
                 "--aws-secret-access-key", SECRET])
    assert code == 0 and seen == [SECRET]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "testing"  # the caller's, restored
    stored = _stored_parameters({"secret-cli"})
    assert stored and stored[0]["s3_endpoint_url"] == endpoint
    assert SECRET not in json.dumps(stored)


def test_a_secret_block_names_the_credentials_in_the_stored_parameters(
        image_folder: Path, s3_bucket, tmp_path: Path):
    """For deployments: the flow takes the name of a Prefect Secret block (encrypted at rest,
    masked in the UI), never the key itself."""
    from prefect.blocks.system import Secret

    from flows.stylize_dataset import s3_storage_options, stylize_dataset

    manifest, endpoint = _upload_inputs(s3_bucket, image_folder, tmp_path)
    Secret(value={"aws_access_key_id": "testing", "aws_secret_access_key": SECRET}).save(
        "lwst-test-s3", overwrite=True)
    assert s3_storage_options(endpoint, None, "lwst-test-s3")["secret"] == SECRET
    summary = stylize_dataset(manifest, f"s3://{s3_bucket[0]}/block-out", overrides=FAST,
                              s3_endpoint_url=endpoint, aws_credentials_block="lwst-test-s3",
                              run_id="secret-block")
    assert summary["counts"] == {"ok": 1, "failed": 0, "skipped": 0}
    stored = _stored_parameters({"secret-block"})
    assert stored and stored[0]["aws_credentials_block"] == "lwst-test-s3"
    assert SECRET not in json.dumps(stored)

    Secret(value="only-a-key").save("lwst-test-bad", overwrite=True)
    with pytest.raises(ValueError, match="'lwst-test-bad': its value must be"):
        s3_storage_options(endpoint, None, "lwst-test-bad")
