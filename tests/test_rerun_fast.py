"""A re-run with nothing to do is answered without a Prefect flow run (`lwst run` without a
server of the user's: no temporary server, no flow engine), and leaves ``--out`` as a flow run
with nothing to do leaves it: the same metadata file of skipped rows, nothing else. Where
anything is left to do (a missing file, another setting, a refused or new row) it declines
without touching ``--out`` and the flow runs. Real runs, real files, a real Prefect server."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import save_image
from PIL import Image
from pipeline_inputs import write_manifest_csv

from lwst import dataset

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["--size", "48", "--warp-method", "affine", "--levels", "1", "--iterations", "1",
            "--device", "cpu"]
OVERRIDES = {"size": 48, "warp_method": "affine", "levels": 1, "iterations": [1],
             "device": "cpu"}
# `lwst run` in a fresh interpreter: its exit code, whether Prefect's engine or server, or
# torchvision (1.7 s to import: a finished re-run needs none), was imported, and how many child
# processes it had at the end (a temporary server is one).
PROBE = """
import json, sys
import psutil
from lwst.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "children": len(psutil.Process().children(recursive=True)),
                  "imported": [m for m in ("prefect.flow_engine", "prefect.server.api.server",
                                           "torchvision") if m in sys.modules]}))
"""
LOG = logging.getLogger("test_rerun_fast")
VARYING = ("run_id", "created_at", "seconds_warp", "seconds_inpaint", "seconds_render")


def _manifest(folder: Path, images: Path, extra: list[dict] = ()) -> Path:
    return write_manifest_csv(folder / "m.csv", [
        {"id": "w", "content": str(images / "c0.png"), "geometry": str(images / "s0.png"),
         "texture": str(images / "s1.png")},
        {"id": "p", "content": str(images / "c1.png"), "texture": str(images / "s1.png")},
        {"id": "g", "content": str(images / "c2.png"), "geometry": str(images / "s0.png")},
        *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> tuple[Path, Path]:
    """A manifest of three items (warp and texture, texture only, warp only) and the output
    of its run, done once: each test works on its own copy (`_copy`)."""
    from flows.stylize_dataset import stylize_dataset

    folder = tmp_path_factory.mktemp("finished")
    for k in range(3):
        save_image(folder / "images" / f"c{k}.png", (48, 64), seed=k)
    for k in range(2):
        save_image(folder / "images" / f"s{k}.png", (64, 48), seed=10 + k)
    manifest, out = _manifest(folder, folder / "images"), folder / "out"
    summary = stylize_dataset(str(manifest), str(out), overrides=OVERRIDES, run_id="first")
    assert summary["counts"] == {"ok": 3, "failed": 0, "skipped": 0}
    return manifest, out


def _copy(finished: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    manifest, out = finished
    shutil.copytree(out, tmp_path / "out")
    return manifest, tmp_path / "out"


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def _rows(path: Path, out: Path | None = None) -> list[dict]:
    """A metadata file's rows without what varies from run to run; ``out``: the output folder
    its paths name, written ``OUT``."""
    def same(value: object) -> object:
        return value.replace(str(out), "OUT") if out and isinstance(value, str) else value

    return [{k: same(v) for k, v in row.items() if k not in VARYING}
            for row in pq.read_table(path).to_pylist()]


def _without_server(tmp_path: Path, *argv: str) -> dict:
    """`lwst run ARGV` in a fresh process without PREFECT_API_URL (a run that would start its
    own temporary server): the probe's answer and what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PROBE, "run", *argv], env=env, timeout=600,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    *printed, probe = done.stdout.strip().splitlines()
    return {**json.loads(probe), "stdout": "\n".join(printed), "stderr": done.stderr}


def test_a_finished_rerun_answers_without_prefect_and_leaves_what_the_flow_leaves(
        main, finished: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture):
    manifest, out = _copy(finished, tmp_path)
    args = [str(manifest), "--out", str(out), *SETTINGS]
    # Under a server of the user's (the test session's) a re-run is the flow's, as before.
    assert main(["run", *args, "--run-id", "flow"]) == 0
    assert "run flow: 0 ok, 0 failed, 3 skipped: nothing to do" in capsys.readouterr().out
    before = _files(out)

    fast = _without_server(tmp_path, *args, "--run-id", "fast", "--strict")

    assert fast["code"] == 0 and fast["imported"] == [] and fast["children"] == 0
    metadata = out / "metadata" / "run-fast.parquet"
    assert fast["stdout"] == (f"run fast: 0 ok, 0 failed, 3 skipped: nothing to do; "
                              f"metadata {metadata}")
    after = _files(out)
    assert set(after) - set(before) == {"metadata/run-fast.parquet"}
    assert all(after[name] == data for name, data in before.items())  # nothing else touched
    assert _rows(metadata) == _rows(out / "metadata" / "run-flow.parquet")
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()  # no server ever started


def _answer(manifest: Path, out: Path, overrides: dict) -> dict | None:
    """`record_finished_run` in this process, as ``lwst run`` asks it (run id ``fast``)."""
    from flows.work_plan import record_finished_run
    from lwst.manifest import read_manifest

    return record_finished_run(read_manifest(str(manifest), {}), overrides, str(out), {},
                               "fast", False, 8, 8, LOG)


@pytest.mark.parametrize("change", ["missing image", "other size", "refused row", "new row"])
def test_anything_left_to_do_declines_and_leaves_out_as_it_was(
        finished: tuple[Path, Path], tmp_path: Path, change: str):
    manifest, out = _copy(finished, tmp_path)
    images, overrides = manifest.parent / "images", OVERRIDES
    if change == "missing image":
        (out / "images" / "p.png").unlink()
    elif change == "other size":
        overrides = {**OVERRIDES, "size": 56}
    elif change == "refused row":  # two iteration counts for one level: refused, every run
        manifest = _manifest(tmp_path, images, [
            {"id": "bad", "content": str(images / "c0.png"), "iterations": "3,2"}])
    else:
        manifest = _manifest(tmp_path, images, [{"id": "new", "content": str(images / "c0.png")}])
    before = _files(out)

    assert _answer(manifest, out, overrides) is None
    assert _files(out) == before  # no lock left, no run file, no journal


def test_a_first_run_declines_without_making_out(finished: tuple[Path, Path], tmp_path: Path):
    """Nothing can be finished where no run wrote metadata: no lock taken, no folder made (a
    server that then fails to start would have left an empty ``out``)."""
    manifest, _ = _copy(finished, tmp_path)
    out = tmp_path / "fresh"

    assert _answer(manifest, out, OVERRIDES) is None
    assert not out.exists()


def test_a_finished_rerun_first_folds_in_what_a_killed_run_left(
        finished: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """As the flow does: a killed run's journal becomes its run file, its temp files go."""
    manifest, out = _copy(finished, tmp_path)
    rows = pq.read_table(out / "metadata" / "run-first.parquet").to_pylist()
    dataset.write_journal(str(out), [{**row, "run_id": "killed"} for row in rows])
    (out / "images" / ".lwst-killed.w.png.0123.tmp").write_bytes(b"half")

    with caplog.at_level(logging.INFO, logger="test_rerun_fast"):
        summary = _answer(manifest, out, OVERRIDES)

    assert summary is not None and summary["counts"] == {"ok": 0, "failed": 0, "skipped": 3}
    assert summary["ran"] == 0 and summary["metadata"] == str(out / "metadata" /
                                                               "run-fast.parquet")
    assert sorted(p.name for p in (out / "metadata").iterdir()) == [
        "run-fast.parquet", "run-first.parquet", "run-killed.parquet"]
    assert not list((out / "images").glob(".lwst-*"))
    assert "recovered metadata of interrupted runs ['killed']; removed 1 temp files" \
        in caplog.text


def _flow_only(main, manifest: Path, out: Path, *options: str) -> None:
    """The same re-run through the flow alone (the test session's server: no fast path)."""
    assert main(["run", str(manifest), "--out", str(out), *SETTINGS, *options]) == 0


@pytest.mark.slow  # a temporary Prefect server's start: ~20-60 s on 2 shared cores
@pytest.mark.parametrize("change", ["missing image", "other size"])
def test_a_rerun_with_work_runs_the_flow_and_leaves_what_the_flow_alone_leaves(
        main, finished: tuple[Path, Path], tmp_path: Path, change: str):
    manifest, out = _copy(finished, tmp_path)
    alone = tmp_path / "alone"
    shutil.copytree(out, alone)
    options = ["--run-id", "again"]
    if change == "missing image":
        for folder in (out, alone):
            (folder / "images" / "p.png").unlink()
    else:
        options += ["--size", "56"]

    run = _without_server(tmp_path, str(manifest), "--out", str(out), *SETTINGS, *options)
    _flow_only(main, manifest, alone, *options)

    assert run["code"] == 0 and "prefect.flow_engine" in run["imported"]
    counts = "1 ok, 0 failed, 2 skipped" if change == "missing image" else "3 ok, 0 failed"
    assert f"run again: {counts}" in run["stdout"]
    mine, theirs = _files(out), _files(alone)
    assert set(mine) == set(theirs)
    assert all(mine[name] == theirs[name] for name in mine if not name.startswith("metadata/"))
    for name in mine:
        if name.startswith("metadata/"):
            assert _rows(out / name, out) == _rows(alone / name, alone)


def test_upscale_redoes_an_item_only_where_its_rows_say_the_image_differs():
    """Made with upscale off, an image at ``size`` had a content at least that size: the same
    pixels either way. Made with it on, the row cannot tell (the image is at ``size``)."""
    from lwst.item_files import upscale_stale

    assert not upscale_stale(False, True, 48, 48) and upscale_stale(False, True, 48, 32)
    assert upscale_stale(False, True, 48, None) and upscale_stale(True, False, 48, 48)
    assert not upscale_stale(True, True, 48, 32) and not upscale_stale(False, False, 48, 32)


@pytest.mark.usefixtures("prefect_api")
def test_turning_upscale_on_redoes_only_the_contents_it_enlarges(tmp_path: Path):
    from flows.stylize_dataset import stylize_dataset

    images = tmp_path / "images"
    save_image(images / "big.png", (48, 64))  # longest side 64: made at 48 either way
    save_image(images / "small.png", (24, 32), seed=1)  # 32: enlarged to 48 with upscale on
    save_image(images / "t.png", (64, 48), seed=2)
    manifest = write_manifest_csv(tmp_path / "m.csv", [
        {"id": item, "content": str(images / f"{item}.png"), "texture": str(images / "t.png")}
        for item in ("big", "small")])
    out, fast = tmp_path / "out", {**OVERRIDES, "warp_method": "none"}

    def run(run_id: str, upscale: bool) -> dict:
        return stylize_dataset(str(manifest), str(out), run_id=run_id,
                               overrides={**fast, "upscale": upscale})

    assert run("on", True)["counts"]["ok"] == 2
    big = (out / "images" / "big.png").read_bytes()
    off = run("off", False)  # rows made with upscale on do not say the content's size
    assert off["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert (out / "images" / "big.png").read_bytes() == big  # the same pixels, as said
    again = run("on-again", True)
    assert again["counts"] == {"ok": 1, "failed": 0, "skipped": 1}
    assert again["redone"] == {"count": 1, "first": "small: upscale False -> True"}
    assert (out / "images" / "big.png").read_bytes() == big
    assert max(Image.open(out / "images" / "small.png").size) == 48
