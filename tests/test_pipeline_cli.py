"""`lwst run` and `lwst make-manifest` per docs/contracts.md: exit codes, one-line errors, files."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from pipeline_inputs import write_manifest_csv


def test_building_the_cli_with_lwst_run_does_not_import_prefect():
    code = ("import sys; from lwst.cli import _registrations, build_parser; "
            "build_parser(_registrations()); "
            "sys.exit('prefect' in sys.modules or 'flows.cli' not in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_lwst_run_without_the_pipeline_extra_is_one_line(tmp_path: Path):
    manifest = write_manifest_csv(tmp_path / "m.csv", [{"id": "a", "content": "x.png"}])
    code = ("import sys; sys.modules['prefect'] = None; from lwst.cli import main; "
            f"sys.exit(main(['run', {str(manifest)!r}, '--out', {str(tmp_path / 'out')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr == (
        "lwst run: error: needs the pipeline extra (Prefect, Dask), not installed here: "
        "pip install -e '.[pipeline]' in the lwst checkout\n")
    assert not (tmp_path / "out").exists()


def test_a_registered_command_that_cannot_load_refuses_in_one_line(main, capsys, monkeypatch):
    import importlib.metadata

    broken = importlib.metadata.EntryPoint("run", "flows.not_there:add_parser", "lwst.commands")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    assert main(["run", "m.csv", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lwst run: error: this command is "
                                                         "not available (No module named")
    assert "pip install -e '.[pipeline]'" in err


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
