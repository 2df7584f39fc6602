"""`lwst train-decoder` as its user meets it: a resume that asks for another run, nonsense
settings, a bad state file, a diverging run, Ctrl-C, a crash, unreadable or held-out images.
Each says so in one line (exit 2, or 130 for Ctrl-C), before the crop bank where it can, and
leaves nothing half-made behind. Real photos (examples/*.jpg), relu1_1, 32 px crops."""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import lwst.decoder_training as training
from lwst.cli import main
from lwst.decoder_training import DecoderTrainConfig, loop
from lwst.decoder_training.objective import Objective
from lwst.decoders import load_decoder, shipped_decoder_path
from lwst.errors import InputError
from lwst.warpnet.split import is_held_out

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTOS = ("astronaut.jpg", "coffee.jpg", "face.jpg", "sailboat.jpg")  # none held out
TINY = ["--kind", "wct", "--level", "1", "--crop", "32", "--batch-size", "2",
        "--crops-per-image", "1", "--precision", "float32", "--threads", "1"]


def photos(folder: Path, names: tuple[str, ...] = PHOTOS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    return ["train-decoder", *TINY, "--images", str(photos(tmp_path / "photos")),
            "--out", str(out), *extra]


def run(argv: list[str]) -> int:
    """``lwst`` as the shell sees it: argparse's refusals are exit codes too."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a refused command (and no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lwst train-decoder: error: "), err
    return err[0]


def log_steps(out: Path) -> list[int]:
    return list(pd.read_csv(out.with_name(out.name + ".log.csv"))["step"])


def state_step(out: Path) -> int:
    return int(torch.load(out.with_name(out.name + ".state"), weights_only=True)["step"])


@pytest.fixture
def no_bank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as loading VGG for the crop bank."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the crop bank was started before the refusal")

    monkeypatch.setattr(loop, "load_vgg19", refuse)  # where the run looks it up


def stop_at(monkeypatch: pytest.MonkeyPatch, step: int, exc: BaseException | None) -> None:
    """Make the objective raise ``exc`` (or return a NaN loss, ``None``) when ``step`` steps
    are done: a Ctrl-C, a crash or a divergence in the middle of the next step."""
    original = Objective.__call__

    def call(self, decoder, at):  # noqa: ANN001, ANN202
        if at == step:
            if exc is not None:
                raise exc
            loss, parts = original(self, decoder, at)
            return loss * float("nan"), parts
        return original(self, decoder, at)

    monkeypatch.setattr(Objective, "__call__", call)


def test_resume_refuses_other_settings_and_accepts_the_ones_that_may_change(tmp_path, capsys):
    out = tmp_path / "d.pt"
    assert main([*args(tmp_path, out, "--steps", "2")]) == 0
    state = out.with_name("d.pt.state").read_bytes()
    capsys.readouterr()
    assert main([*args(tmp_path, out, "--steps", "2"), "--kind", "adain", "--styles",
                 str(photos(tmp_path / "styles"))]) == 2
    line = error_line(capsys)
    assert "(step 2) was trained with kind wct, level 1; this command asks kind adain, " \
        "level 4: delete" in line
    assert "repeat the original settings" in line
    assert main([*args(tmp_path, out, "--steps", "2"), "--level", "2"]) == 2
    assert "level 1; this command asks level 2" in error_line(capsys)
    changed = ["--crop", "48", "--batch-size", "3", "--lr", "0.001", "--seed", "1",
               "--width", "0.25", "--crops-per-image", "2", "--feature-weight", "2"]
    assert main([*args(tmp_path, out, "--steps", "2"), *changed]) == 2
    line = error_line(capsys)
    for name in ("crop", "batch-size", "lr", "seed", "width", "crops-per-image",
                 "feature-weight"):
        assert f" {name} " in line.split("; this command asks")[0], name
        assert f" {name} " in line.split("; this command asks")[1], name
    assert out.with_name("d.pt.state").read_bytes() == state
    # How long, where and how often to save may change.
    assert main([*args(tmp_path, out, "--steps", "3", "--max-seconds", "600",
                       "--checkpoint-every", "7", "--device", "cpu", "--threads", "2")]) == 0
    assert "resumed at step 2" in capsys.readouterr().out and state_step(out) == 3


def test_init_with_an_existing_state_is_refused_unless_the_run_started_from_it(tmp_path, capsys):
    init = str(shipped_decoder_path("wct", 1))
    plain, started = tmp_path / "plain.pt", tmp_path / "init.pt"
    assert main([*args(tmp_path, plain, "--steps", "1")]) == 0
    capsys.readouterr()
    assert main([*args(tmp_path, plain, "--steps", "2", "--init", init)]) == 2
    line = error_line(capsys)
    assert f"--init {init}: " in line and "started without --init" in line
    assert state_step(plain) == 1
    # The command that started from --init resumes as it is, and without --init.
    assert main([*args(tmp_path, started, "--steps", "1", "--init", init)]) == 0
    assert main([*args(tmp_path, started, "--steps", "2", "--init", init)]) == 0
    assert main([*args(tmp_path, started, "--steps", "3")]) == 0
    assert "resumed at step 2" in capsys.readouterr().out and state_step(started) == 3


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_an_unreadable_state_file_is_one_line(tmp_path, capsys, no_bank, content):
    out = tmp_path / "d.pt"
    state = out.with_name("d.pt.state")
    tmp_path.mkdir(exist_ok=True)
    if content == "truncated":
        torch.save({"decoder": {"w": torch.zeros(5000)}, "optimizer": {}, "step": 1,
                    "seconds": 0.0}, state)
        state.write_bytes(state.read_bytes()[:3000])
    else:
        state.write_text("garbage\n")
    assert main(args(tmp_path, out, "--steps", "2")) == 2
    line = error_line(capsys)
    assert f"training state {state}: not a valid weights-only checkpoint" in line
    assert line.endswith("delete it to start over")


@pytest.mark.parametrize(("extra", "reason"), [
    (["--checkpoint-every", "0"], "--checkpoint-every must be a whole number of at least 1"),
    (["--device", "gpu"], "--device gpu: not a device name"),
    (["--max-seconds", "0"], "--max-seconds must be above 0"),
    (["--max-seconds", "nan"], "--max-seconds must be above 0"),
    (["--threads", "0"], "argument --threads: must be at least 1"),
    (["--seed", "-1"], "--seed must be a whole number from 0"),
    (["--width", "-1"], "--width must be above 0"),
    (["--crops-per-image", "0"], "--crops-per-image must be a whole number of at least 1"),
    (["--lr", "nan"], "--lr must be above 0"),
    (["--lr", "0"], "--lr must be above 0"),
    (["--lr", "1e300"], "--lr must be above 0 and at most 1, got 1e+300"),
    (["--feature-weight", "nan"], "--feature-weight must be 0 or more"),
    (["--init", "missing.pt"], "--init: decoder checkpoint missing.pt: no such file"),
    (["--init", str(shipped_decoder_path("wct", 4))],
     "holds the wct relu4_1 decoder, this run trains relu1_1"),
    (["--kind", "adain"], "--kind adain needs --styles"),
])
def test_bad_settings_are_refused_before_the_crop_bank_leaving_nothing(
        tmp_path, capsys, no_bank, extra, reason):
    out = tmp_path / "run" / "d.pt"
    assert run([*args(tmp_path, out, "--steps", "2"), *extra]) == 2
    assert reason in error_line(capsys)
    assert not out.parent.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys, no_bank):
    assert main([*args(tmp_path, tmp_path / "run" / "d.pt", "--device", "cuda")]) == 2
    assert "--device cuda: torch sees no CUDA device on this machine" in error_line(capsys)


def test_an_out_that_is_a_folder_is_refused_before_training_leaving_nothing(tmp_path, capsys,
                                                                           no_bank):
    out = tmp_path / "out"
    out.mkdir()
    assert main(args(tmp_path, out, "--steps", "2")) == 2
    assert f"--out {out}: is an existing folder, not a file name" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]
    assert not any(out.iterdir())


def test_inputs_that_hold_no_training_images_say_why_leaving_no_folder(tmp_path, capsys,
                                                                       no_bank):
    out = tmp_path / "run" / "d.pt"
    base = ["train-decoder", *TINY, "--out", str(out), "--images"]
    single = photos(tmp_path / "one", ("coffee.jpg",)) / "coffee.jpg"
    assert main([*base, str(single)]) == 2
    assert f"--images: {single} is an image, expected a folder or a CSV manifest" in \
        error_line(capsys)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path\n{single}\n")
    assert main([*base, str(manifest)]) == 2
    assert f"--images {manifest}: no content, geometry or texture column (columns: path)" in \
        error_line(capsys)
    held = tmp_path / "held"
    held.mkdir()
    for name in [n for n in (f"h{i}.jpg" for i in range(100)) if is_held_out(n)][:3]:
        shutil.copy(single, held / name)
    assert main([*base, str(held)]) == 2
    assert error_line(capsys).endswith("no training images: 3 found, all 3 held out for "
                                       "evaluation (see docs/decoder_card.md)")
    (tmp_path / "empty").mkdir()
    assert main([*base, str(tmp_path / "empty")]) == 2
    assert "no training images: none found in" in error_line(capsys)
    assert main([*base, str(tmp_path / "missing")]) == 2
    assert "no such folder or manifest" in error_line(capsys)
    assert not out.parent.exists()


def test_an_unreadable_image_is_skipped_with_a_warning(tmp_path, capsys):
    folder = photos(tmp_path / "photos")
    broken = folder / "broken.jpg"
    broken.write_bytes((EXAMPLES / "cat_bigeyes_drawing.jpg").read_bytes()[:2000])
    out = tmp_path / "d.pt"
    assert main(["train-decoder", *TINY, "--images", str(folder), "--out", str(out),
                 "--steps", "2"]) == 0
    got = capsys.readouterr()
    warnings = [w for w in got.err.splitlines() if w.startswith("lwst train-decoder: warning:")]
    assert len(warnings) == 1 and f"skipped {broken}: corrupt or truncated image" in warnings[0]
    assert "1 unreadable image(s) skipped" in got.out
    assert "2 steps" in load_decoder(out, "wct", 1)[1].note
    # Nothing usable at all: one line, and no output folder.
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(broken, only / "broken.jpg")
    assert main(["train-decoder", *TINY, "--images", str(only), "--out",
                 str(tmp_path / "run" / "d.pt"), "--steps", "2"]) == 2
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith(f"lwst train-decoder: warning: skipped {only / 'broken.jpg'}: ")
    assert error.startswith("lwst train-decoder: error: no usable training images: all 1 "
                            "unreadable")
    assert not (tmp_path / "run").exists()


def test_divergence_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys,
                                                                   monkeypatch):
    out = tmp_path / "run" / "d.pt"
    stop_at(monkeypatch, 5, None)  # step 6's loss is NaN
    assert main(args(tmp_path, out, "--steps", "10", "--checkpoint-every", "2")) == 2
    line = error_line(capsys)
    assert "decoder training diverged at step 6 (loss nan); kept the last good checkpoint, " \
        f"step 4 ({out}, {out}.state)" in line
    assert state_step(out) == 4 and "4 steps" in load_decoder(out, "wct", 1)[1].note
    # Before any checkpoint: nothing left behind.
    fresh = tmp_path / "fresh" / "d.pt"
    assert main(args(tmp_path, fresh, "--steps", "10", "--checkpoint-every", "100")) == 2
    assert "nothing was saved" in error_line(capsys)
    assert not fresh.parent.exists()


def test_an_update_that_overflows_the_weights_stops_before_they_are_saved(tmp_path, capsys,
                                                                        monkeypatch):
    """A finite loss whose update leaves an infinite weight (an overflow) must not reach the
    checkpoint: it would be refused on load, after the run said it was done."""
    original, updates = torch.optim.Adam.step, []

    def step(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        out = original(self, *a, **k)
        updates.append(1)
        if len(updates) == 3:
            with torch.no_grad():
                next(p for g in self.param_groups for p in g["params"]).fill_(math.inf)
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    out = tmp_path / "run" / "d.pt"
    assert main(args(tmp_path, out, "--steps", "10", "--checkpoint-every", "2")) == 2
    line = error_line(capsys)
    assert "decoder training diverged at step 3 (weight " in line
    assert "NaN or infinite after the update); kept the last good checkpoint, step 2" in line
    assert state_step(out) == 2 and log_steps(out) == [1, 2]
    load_decoder(out, "wct", 1)  # the saved decoder is finite: it loads


def test_ctrl_c_saves_the_last_step_and_the_same_command_resumes_to_the_same_decoder(
        tmp_path, capsys, monkeypatch):
    whole, stopped = tmp_path / "whole" / "d.pt", tmp_path / "stopped" / "d.pt"
    command = ["--steps", "30", "--checkpoint-every", "10"]
    assert main(args(tmp_path, whole, *command)) == 0
    with monkeypatch.context() as patch:
        stop_at(patch, 25, KeyboardInterrupt())
        assert main(args(tmp_path, stopped, *command)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lwst train-decoder: stopped at step 25; the state is saved: the same "
                   "command resumes"]
    assert state_step(stopped) == 25 and log_steps(stopped) == list(range(1, 26))
    assert main(args(tmp_path, stopped, *command)) == 0
    assert stopped.read_bytes() == whole.read_bytes()
    assert log_steps(stopped) == list(range(1, 31))


def test_after_a_crash_the_resumed_log_has_each_step_once_with_unix_line_ends(
        tmp_path, monkeypatch):
    whole, crashed = tmp_path / "whole" / "d.pt", tmp_path / "crashed" / "d.pt"
    command = ["--steps", "30", "--checkpoint-every", "10"]
    assert main(args(tmp_path, whole, *command)) == 0
    with monkeypatch.context() as patch:  # as kill -9 after step 25: the state is at step 20
        stop_at(patch, 25, RuntimeError("killed"))
        with pytest.raises(RuntimeError, match="killed"):
            main(args(tmp_path, crashed, *command))
    assert state_step(crashed) == 20 and log_steps(crashed) == list(range(1, 26))
    assert main(args(tmp_path, crashed, *command)) == 0
    assert crashed.read_bytes() == whole.read_bytes()
    logs = [p.with_name(p.name + ".log.csv").read_bytes() for p in (whole, crashed)]
    assert b"\r" not in logs[1] and logs[1].count(b"\n") == 31
    losses = [pd.read_csv(p.with_name(p.name + ".log.csv"))[["step", "loss", "lr"]]
              for p in (whole, crashed)]
    pd.testing.assert_frame_equal(losses[0], losses[1])


def test_a_real_sigint_saves_a_state_that_agrees_with_the_log(tmp_path):
    out = tmp_path / "d.pt"
    log = tmp_path / "d.pt.log.csv"
    command = [sys.executable, "-m", "lwst.cli", *args(tmp_path, out, "--steps", "100000",
                                                       "--checkpoint-every", "100000")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") > 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = state_step(out)
    assert err.strip().splitlines() == [f"lwst train-decoder: stopped at step {step}; the state "
                                        "is saved: the same command resumes"]
    assert step >= 5 and log_steps(out) == list(range(1, step + 1))
    assert f"{step} steps" in load_decoder(out, "wct", 1)[1].note


def test_a_short_run_warms_up_for_a_tenth_of_its_steps_then_decays(tmp_path):
    out = tmp_path / "d.pt"
    assert main(args(tmp_path, out, "--steps", "20", "--lr", "0.001")) == 0
    lrs = list(pd.read_csv(tmp_path / "d.pt.log.csv")["lr"])
    assert lrs[:2] == [0.0005, 0.001]  # warm-up: 2 steps
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:], strict=False)) and lrs[-1] < 1e-5


def test_defaults_are_the_shipped_recipe_and_help_shows_them(capsys):
    import inspect

    from flows.train_decoder import train_decoders

    assert DecoderTrainConfig().style_weight == 1.0  # 2 lost the content (decoder_card.md)
    flow = inspect.signature(train_decoders.fn).parameters
    assert flow["style_weight"].default == DecoderTrainConfig().style_weight
    with pytest.raises(SystemExit):
        main(["train-decoder", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [("--steps", "2000"), ("--crop", "128"), ("--batch-size", "8"),
                            ("--checkpoint-every", "100"), ("--style-weight", "1"),
                            ("--feature-weight", "1"), ("--lr", "0.0005"), ("--width", "0.5"),
                            ("--crops-per-image", "4"), ("--seed", "0"), ("--level", "4"),
                            ("--device", "cpu"), ("--precision", "auto")]:
        after = text.split(f"{option} ")[-1]
        assert f"(default {default}" in after.split(" --")[0], option


def test_the_flow_retries_transient_io_errors_only():
    from prefect.states import Failed

    from flows.train_decoder import retry_on_transient

    def retried(exc: BaseException) -> bool:
        return retry_on_transient(None, None, Failed(data=exc))

    assert retried(ConnectionResetError("reset by peer")) and retried(TimeoutError())
    assert not retried(training.DecoderTrainingError("no training images"))
    assert not retried(FileNotFoundError("photos"))
    assert not retried(RuntimeError("a bug"))


def test_every_setting_is_either_compared_on_resume_or_allowed_to_change():
    """A new knob must be placed on one side, or a resume would change it silently."""
    for kind in ("wct", "adain"):
        compared = {k.replace("-", "_") for k in
                    training.run_settings(DecoderTrainConfig(kind=kind, images=["x"]))}
        other = {"feature_weight", "style_weight", "styles"} - compared
        names = {f.name for f in dataclasses.fields(DecoderTrainConfig)}
        assert names == compared | set(training.RESUMABLE) | other | {"out", "init"}
        assert not compared & set(training.RESUMABLE)


def test_the_recipe_script_passes_extra_options_last_on_every_run(tmp_path):
    """decoder_card.md tells users to retrain with `scripts/train_decoders.sh DATA OUT
    --device cuda`; the options must reach every `train-decoder` run, after the recipe's own."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_decoders.sh"
    out = tmp_path / "runs"
    done = subprocess.run(["bash", str(script), "/data", str(out), "--steps", "5", "--device",
                           "cuda"], env={"PATH": "/usr/bin:/bin", "LWST": "echo"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    runs = [line for log in sorted(out.glob("chain_*.log")) for line in log.read_text().splitlines()
            if line.startswith("train-decoder ")]
    assert len(runs) >= 10  # chain a stops at its `cp` here: ``echo`` wrote no decoder
    assert all(line.endswith(" --steps 5 --device cuda") for line in runs)


def test_every_refusal_is_an_input_error():
    """The CLI catches `InputError` (exit 2, one line), never a plain ValueError."""
    assert issubclass(training.DecoderTrainingError, InputError)
    with pytest.raises(InputError, match="--crop must be a multiple of 16"):
        training.check_config(DecoderTrainConfig(images=["x"], crop=33))


def test_a_finished_run_run_again_says_so_without_building_the_crop_bank(tmp_path, capsys,
                                                                        monkeypatch):
    out = tmp_path / "d.pt"
    assert main(args(tmp_path, out, "--steps", "2")) == 0
    before = out.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(loop, "load_vgg19", lambda *_, **__: pytest.fail("crop bank built"))
    assert main(args(tmp_path, out, "--steps", "2")) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        f"nothing to train: {out} is finished (step 2 of --steps 2); a larger --steps or "
        "--max-seconds trains it on"]
    assert out.read_bytes() == before and state_step(out) == 2


def test_an_option_the_kind_does_not_use_is_a_warning_after_the_checks(tmp_path, capsys,
                                                                        no_bank):
    """--styles with wct, --level with adain changed nothing, silently; said once the checks
    pass, so that a refusal stays the only line."""
    styles = str(photos(tmp_path / "styles"))
    assert main(args(tmp_path, tmp_path / "w" / "d.pt", "--styles", styles,
                     "--device", "gpu")) == 2
    assert "--device gpu" in error_line(capsys)  # refused: no warning before it
    with pytest.raises(AssertionError, match="crop bank was started"):
        main(args(tmp_path, tmp_path / "w" / "d.pt", "--styles", styles))
    assert capsys.readouterr().err.strip().splitlines() == [
        "lwst train-decoder: warning: --styles applies to --kind adain; a wct decoder trains "
        "on --images only"]
    with pytest.raises(AssertionError, match="crop bank was started"):
        main(args(tmp_path, tmp_path / "a" / "d.pt", "--kind", "adain", "--styles", styles))
    assert capsys.readouterr().err.strip().splitlines() == [
        "lwst train-decoder: warning: --level 1 applies to --kind wct; the adain decoder always "
        "decodes relu4_1"]


def test_the_torch_free_settings_agree_with_the_decoders():
    """`config` quotes the kinds and levels so that --help imports no torch."""
    from lwst import decoders
    from lwst.decoder_training import config
    from lwst.vgg import STYLE_LAYERS

    assert (config.KINDS, config.LEVELS) == (decoders.KINDS, decoders.LEVELS)
    assert STYLE_LAYERS[:4] == training.ADAIN_STYLE_LAYERS
