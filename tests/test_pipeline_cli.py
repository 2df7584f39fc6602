"""`lwst run` and `lwst make-manifest` per docs/contracts.md: exit codes, one-line errors, files."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from pipeline_inputs import write_manifest_csv


def test_importing_the_cli_does_not_import_prefect():
    code = "import sys, lwst.cli_pipeline; sys.exit('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_bad_manifest_exits_2_with_one_line_naming_every_row(main, tmp_path: Path, capsys):
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": "a", "content": "x.png"}, {"id": "a", "content": "y.png"},
        {"id": "a/../../b", "content": "z.png"}])
    assert main(["run", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "line 3 (id 'a'): duplicate id" in err and "line 4: id 'a/../../b'" in err
    assert not (tmp_path / "out").exists()


def test_dead_s3_endpoint_exits_2_quickly(main, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("LWST_S3_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("LWST_S3_MAX_ATTEMPTS", "1")
    manifest = write_manifest_csv(tmp_path / "m.csv", [{"id": "a", "content": "x.png"}])
    started = time.monotonic()
    code = main(["run", str(manifest), "--out", "s3://bucket/out",
                 "--s3-endpoint-url", "http://127.0.0.1:9", "--aws-access-key-id", "k",
                 "--aws-secret-access-key", "s"])
    assert code == 2 and time.monotonic() - started < 15
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_api")
def test_make_manifest_then_run_then_rerun(main, image_folder: Path, tmp_path: Path, capsys):
    manifest = tmp_path / "aug.csv"
    assert main(["make-manifest", "--contents", str(image_folder / "contents"),
                 "--styles", str(image_folder / "styles"), "--n", "3", "--seed", "7",
                 "--out", str(manifest)]) == 0
    frame = pd.read_csv(manifest)
    assert len(frame) == 3 and frame["texture"].notna().all()
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--size", "48", "--warp-method", "none",
            "--levels", "1", "--iterations", "1", "--device", "cpu", "--run-id", "cli1"]
    assert main(args) == 0
    assert "run cli1: 3 ok, 0 failed, 0 skipped" in capsys.readouterr().out
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(frame["id"])
    assert main([*args[:-1], "cli2", "--quiet"]) == 0
    assert "run cli2: 0 ok, 0 failed, 3 skipped" in capsys.readouterr().out
