"""`lwst train-warp` as its user meets it: a run that diverges, stops, resumes or is given
nonsense says so in one line and never leaves a checkpoint that poisons what comes after."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import save_image
from test_warpnet import _tiny_config, write_tiny_bank

import lwst.warpnet.train as training
from lwst.cli import main
from lwst.errors import InputError
from lwst.safety import BadCheckpointError
from lwst.warpnet.inference import load_warpnet
from lwst.warpnet.split import is_held_out
from lwst.warpnet.train import TrainingDivergedError, TrainingStopped, export_checkpoint, train

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def quiet(_: str) -> None:
    pass


def test_a_diverging_run_stops_before_a_checkpoint_and_nan_weights_are_refused(tmp_path):
    write_tiny_bank(tmp_path / "cache")
    cfg = _tiny_config(tmp_path, steps=4)
    original, updates = torch.optim.AdamW.step, []

    def blow_up(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        """Update 1 scales the weights by 1e30 (finite; step 2's loss is not), update 2 of a
        second run leaves one infinite."""
        out = original(self, *a, **k)
        updates.append(1)
        with torch.no_grad():
            for group in self.param_groups:
                for weight in group["params"]:
                    weight.mul_(1e30 if len(updates) == 1 else math.inf)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", blow_up)
        with pytest.raises(TrainingDivergedError, match=r"diverged at step 2 \(loss (nan|inf)"):
            train(cfg, progress=quiet)
        assert not Path(cfg.out).exists()
        updates.append(1)  # the next run's first update leaves infinite weights
        with pytest.raises(TrainingDivergedError,
                           match=r"diverged at step 1 \(weights NaN or infinite"):
            train(cfg, progress=quiet)
        assert not Path(cfg.out).exists()
    # Weights that are NaN anyway (an older lwst's run, another tool's) are refused on load,
    # in one line, instead of crashing OpenCV DIS with a segmentation fault later.
    good = _tiny_config(tmp_path, steps=1)
    good.out = str(tmp_path / "good.pt")
    slim = export_checkpoint(train(good, progress=quiet), tmp_path / "slim.pt")
    state = torch.load(slim, weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = torch.full_like(state["model"][first], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(BadCheckpointError, match=f"NaN or infinite values .*'model.{first}'"):
        load_warpnet(tmp_path / "nan.pt")


def test_lwst_warp_refuses_a_nan_network_in_one_line(tmp_path, capsys):
    write_tiny_bank(tmp_path / "cache")
    slim = export_checkpoint(train(_tiny_config(tmp_path, steps=1), progress=quiet),
                             tmp_path / "slim.pt")
    state = torch.load(slim, weights_only=True)
    state["model"] = {k: v * float("nan") for k, v in state["model"].items()}
    torch.save(state, tmp_path / "nan.pt")
    code = main(["warp", "--content", str(EXAMPLES / "cat.jpg"), "--geometry",
                 str(EXAMPLES / "cat_bigeyes_drawing.jpg"), "--size", "64",
                 "--warpnet-checkpoint", str(tmp_path / "nan.pt"),
                 "--out", str(tmp_path / "w.png"), "--flow-out", str(tmp_path / "w.flo")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "NaN or infinite values" in err[0]
    assert not (tmp_path / "w.png").exists() and not (tmp_path / "w.flo").exists()


def test_an_existing_run_is_continued_only_on_request_and_with_its_own_settings(tmp_path):
    write_tiny_bank(tmp_path / "cache")
    train(_tiny_config(tmp_path, steps=4, until=2), progress=quiet)
    with pytest.raises(InputError, match="already holds a training checkpoint: pass --resume"):
        train(_tiny_config(tmp_path, steps=4), progress=quiet)
    other = _tiny_config(tmp_path, steps=4, resume=True, seed=3)
    other.batch_size = 2
    with pytest.raises(InputError, match="--batch-size 4 -> 2; --seed 0 -> 3"):
        train(other, progress=quiet)
    assert torch.load(tmp_path / "train.pt", weights_only=True)["step"] == 2  # untouched
    train(_tiny_config(tmp_path, steps=4, resume=True), progress=quiet)  # same settings: fine
    assert torch.load(tmp_path / "train.pt", weights_only=True)["step"] == 4


def test_ctrl_c_saves_the_last_completed_step_and_the_resumed_log_has_each_step_once(
        tmp_path, monkeypatch):
    write_tiny_bank(tmp_path / "cache")
    log = tmp_path / "loss.csv"
    straight = _tiny_config(tmp_path, steps=5)
    straight.out = str(tmp_path / "straight.pt")
    train(straight, progress=quiet)

    real_row = training.log_row

    def interrupt_after_step_3(step, *args):
        row = real_row(step, *args)
        if step == 3:
            raise KeyboardInterrupt
        return row

    monkeypatch.setattr(training, "log_row", interrupt_after_step_3)
    with pytest.raises(TrainingStopped) as stop:
        train(_tiny_config(tmp_path, steps=5, log=str(log)), progress=quiet)
    assert str(stop.value).startswith("stopped at step 3; the checkpoint ")  # every 2: 3 is
    assert str(stop.value).endswith(" is saved: the same command with --resume continues")
    assert torch.load(tmp_path / "train.pt", weights_only=True)["step"] == 3
    monkeypatch.setattr(training, "log_row", real_row)
    with open(log, "a") as f:  # a killed run's rows past its checkpoint
        f.write("4,9,9,9" + ",0" * 12 + "\n")
    train(_tiny_config(tmp_path, steps=5, log=str(log), resume=True), progress=quiet)
    rows = pd.read_csv(log)
    assert rows["step"].tolist() == [1, 2, 4, 5] or rows["step"].tolist() == [1, 2, 3, 4, 5]
    assert rows["step"].is_unique and rows["seconds"].is_monotonic_increasing
    assert b"\r\n" not in log.read_bytes()
    a = torch.load(straight.out, weights_only=True)["model"]
    b = torch.load(tmp_path / "train.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # as if never stopped


@pytest.mark.parametrize(("args", "reason"), [
    (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--original-content", "2"], "--original-content must be within 0..1, got 2.0"),
    (["--lr", "nan"], "--lr must be within 0..1, got nan"),
    (["--lr", "1e300"], "--lr must be within 0..1, got 1e+300"),
    (["--until", "0"], "--until must be at least 1, got 0"),
    (["--max-images", "0"], "--max-images must be at least 1, got 0"),
    (["--device", "gpu"], "--device gpu: not a device name (cpu, cuda or cuda:N)"),
    (["--refine-steps", "0", "0"], "--refine-steps must be at least 1 each, got [0, 0]"),
    (["--cross-pairs", "1"],
     "cross_pairs must be in [0, 1) (--cross-pairs), got 1.0: every batch needs synthetic pairs"),
])
def test_nonsense_settings_are_one_line_before_any_work(tmp_path, capsys, args, reason):
    (tmp_path / "images").mkdir()
    code = main(["train-warp", "--images", str(tmp_path / "images"), "--out",
                 str(tmp_path / "t.pt"), "--cache-dir", str(tmp_path / "cache"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"lwst train-warp: error: {reason}"]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "t.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    code = main(["train-warp", "--images", str(tmp_path / "images"), "--out",
                 str(tmp_path / "t.pt"), "--device", "cuda"])
    assert code == 2
    assert "--device cuda: torch sees no CUDA device on this machine" in capsys.readouterr().err


def test_images_that_are_not_a_folder_or_manifest_of_images_are_named(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nphoto.jpg\n")
    out = str(tmp_path / "t.pt")
    assert main(["train-warp", "--images", str(EXAMPLES / "cat.jpg"), "--out", out]) == 2
    assert "cat.jpg is an image: expected a folder of images or a manifest" in (
        capsys.readouterr().err)
    assert main(["train-warp", "--images", str(manifest), "--out", out]) == 2
    assert "no content, geometry or texture column (columns: path)" in capsys.readouterr().err
    held = tmp_path / "held"
    name = next(n for n in (f"img{i}.png" for i in range(50)) if is_held_out(n))
    save_image(held / name, (32, 32))
    assert main(["train-warp", "--images", str(held), "--out", out]) == 2
    assert "1 found, all held out for evaluation" in capsys.readouterr().err


def test_an_unreadable_image_is_skipped_and_named(tmp_path):
    images = tmp_path / "images"
    names = [n for n in (f"img{i}.png" for i in range(50)) if not is_held_out(n)][:2]
    save_image(images / names[0], (64, 64))
    (images / names[1]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a truncated PNG
    cfg = training.TrainConfig(images=[str(images)], cache_dir=str(tmp_path / "cache"),
                               out=str(tmp_path / "t.pt"), paint_images=0, threads=2)
    said: list[str] = []
    training.prepare_bank(cfg, said.append)
    assert any(line.startswith("skipped") and names[1] in line for line in said)
    assert [p.name for p in (tmp_path / "cache").glob("*.pt")] == [
        f"{Path(names[0]).stem}.base.pt"]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a refused ``lwst train-warp`` (no traceback), without its
    prefix."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lwst train-warp: error: "), err
    return err[0].removeprefix("lwst train-warp: error: ")


@pytest.fixture
def no_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as painting, encoding or loading the cache."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the cache was started before the refusal")

    monkeypatch.setattr(training, "prepare_bank", refuse)
    monkeypatch.setattr(training, "load_bank", refuse)


def warp_args(tmp_path: Path, *extra: str) -> list[str]:
    """``lwst train-warp`` on an empty image folder and the tiny cache, training ``t.pt``."""
    (tmp_path / "images").mkdir(exist_ok=True)
    return ["train-warp", "--images", str(tmp_path / "images"), "--no-build-cache",
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--out",
            str(tmp_path / "t.pt"), *extra]


@pytest.mark.parametrize("where", ["encoding", "first step"])
def test_ctrl_c_before_the_first_step_says_nothing_was_saved(tmp_path, capsys, monkeypatch,
                                                            where):
    """Exit 130 with one stderr line that does not claim a checkpoint it did not write (it
    said "stopped at step 0; the checkpoint ... is saved" on stdout, then "lwst: interrupted")."""
    write_tiny_bank(tmp_path / "cache")

    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "prepare_bank" if where == "encoding" else "batch_loss",
                        interrupt)
    extra = [] if where == "encoding" else ["--no-build-cache"]
    args = [a for a in warp_args(tmp_path) if a != "--no-build-cache"] + extra
    assert main(args) == 130
    got = capsys.readouterr()
    kept = " (the feature cache keeps what was encoded)" if where == "encoding" else ""
    assert got.err.strip().splitlines() == [
        f"lwst train-warp: stopped before the first step; nothing was saved{kept}: the same "
        "command starts over"]
    assert "saved: the same command with --resume" not in got.out
    assert not (tmp_path / "t.pt").exists()


def test_a_resume_stopped_before_its_first_step_says_the_checkpoint_is_unchanged(tmp_path,
                                                                               monkeypatch):
    write_tiny_bank(tmp_path / "cache")
    train(_tiny_config(tmp_path, steps=4, until=2), progress=quiet)

    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "batch_loss", interrupt)
    with pytest.raises(TrainingStopped) as stop:
        train(_tiny_config(tmp_path, steps=4, resume=True), progress=quiet)
    assert str(stop.value) == (f"stopped at step 2; the checkpoint {tmp_path / 'train.pt'} is "
                               "unchanged: the same command continues")


@pytest.mark.parametrize("case", ["changed setting", "exported checkpoint", "torn checkpoint",
                                  "torn --init", "decoder as --init"])
def test_a_resume_or_fine_tune_is_refused_before_the_cache_is_encoded(tmp_path, capsys, case,
                                                                      monkeypatch):
    """Refusals that need a checkpoint read but no image come before painting and encoding
    (minutes), each in one line naming the option; an exported checkpoint resumed was a
    KeyError traceback."""
    write_tiny_bank(tmp_path / "cache")
    trained = train(_tiny_config(tmp_path, steps=1), progress=quiet)
    slim = export_checkpoint(trained, tmp_path / "slim.pt")
    (tmp_path / "torn.pt").write_bytes(Path(slim).read_bytes()[:2000])
    decoder = Path(training.__file__).parents[1] / "checkpoints" / "decoder_wct4.pt"
    out, extra, reason = {
        "changed setting": (trained, ["--lr", "0.001"], "was trained with other settings ("),
        "exported checkpoint": (slim, [], "is not a training checkpoint (no optimizer, rng"),
        "torn checkpoint": (tmp_path / "torn.pt", [], "--resume: warp network checkpoint "),
        "torn --init": (tmp_path / "new.pt", ["--init", str(tmp_path / "torn.pt")],
                        "--init: warp network checkpoint "),
        "decoder as --init": (tmp_path / "new.pt", ["--init", str(decoder)],
                              "--init: warp network checkpoint "),
    }[case]
    for name in ("prepare_bank", "load_bank"):
        monkeypatch.setattr(training, name, lambda *_, **__: pytest.fail("cache started"))
    args = warp_args(tmp_path, "--resume", *extra)
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 2
    assert reason in error_line(capsys)


@pytest.mark.parametrize(("extra", "reason"), [
    (["--out", "{file}/t.pt"], "--out {file}/t.pt: {file} is a file, not a folder"),
    (["--log", "{file}/l.csv"], "--log {file}/l.csv: {file} is a file, not a folder"),
    (["--export", "{dir}"], "--export {dir}: is an existing folder, not a file name"),
    (["--log", "{dir}"], "--log {dir}: is an existing folder, not a file name"),
    (["--export", "{out}"], "--out and --export name the same file, {out}: each needs its own"),
    (["--log", "{out}"], "--out and --log name the same file, {out}: each needs its own"),
    (["--painted-bank", "{dir}"], "--painted-bank needs --paint-styles (the styles to paint 48 "
                                  "copies with), or --paint-images 0"),
    (["--painted-bank", "{dir}", "--paint-styles", "{dir}/missing"],
     "--paint-styles {dir}/missing: no such folder or manifest"),
    (["--images", "{dir}/missing"], "--images {dir}/missing: no such image folder or manifest"),
    (["--tiers", "geometry", "--max-images", "0"], "--max-images must be at least 1, got 0"),
])
def test_paths_that_cannot_work_are_refused_before_any_work(tmp_path, capsys, no_encoding,
                                                           extra, reason):
    """Were a FileExistsError traceback after the whole run (--out, --log under a file), a
    slim checkpoint written over the training one (--export = --out), a refusal after every
    image was read and VGG loaded (--painted-bank without styles), or a misleading "not a
    readable manifest (unknown manifest format '(none)')" (a missing folder)."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    names = {"file": str(tmp_path / "file"), "dir": str(tmp_path / "dir"),
             "out": str(tmp_path / "t.pt")}
    assert main(warp_args(tmp_path, *(e.format(**names) for e in extra))) == 2
    assert reason.format(**names) in error_line(capsys)
    assert not (tmp_path / "t.pt").exists()


@pytest.mark.parametrize("intruder", ["torn", "checkpoint"])
def test_a_torn_or_foreign_file_in_the_cache_is_named(tmp_path, capsys, intruder):
    """A half-written record or a checkpoint saved into the cache folder was a RuntimeError or
    KeyError traceback."""
    write_tiny_bank(tmp_path / "cache")
    bad = tmp_path / "cache" / "zz.base.pt"
    if intruder == "torn":
        bad.write_bytes(next((tmp_path / "cache").glob("*.pt")).read_bytes()[:3000])
    else:
        torch.save({"model": {}, "step": 1}, bad)
    assert main(warp_args(tmp_path)) == 2
    line = error_line(capsys)
    assert line.startswith(f"feature cache record {bad}: not ")
    assert ("not readable" if intruder == "torn" else "not a cache record") in line


def test_cross_pairs_need_two_training_images_in_one_line(tmp_path, capsys):
    write_tiny_bank(tmp_path / "cache", images=1)
    assert main(warp_args(tmp_path, "--cross-pairs", "0.5")) == 2
    assert error_line(capsys) == ("--cross-pairs needs at least two training images, the bank "
                                  "has 1")


def test_a_finished_run_resumed_trains_nothing_and_loads_no_cache(tmp_path, monkeypatch):
    write_tiny_bank(tmp_path / "cache")
    train(_tiny_config(tmp_path, steps=2), progress=quiet)
    before = (tmp_path / "train.pt").read_bytes()
    for name in ("prepare_bank", "load_bank"):
        monkeypatch.setattr(training, name, lambda *_, **__: pytest.fail("cache loaded"))
    said: list[str] = []
    again = _tiny_config(tmp_path, steps=2, resume=True, export=str(tmp_path / "slim.pt"))
    train(again, progress=said.append)
    assert said[0] == (f"nothing to train: {tmp_path / 'train.pt'} is at step 2 (--steps 2); "
                       "a larger --steps or --until trains it on")
    assert said[-1] == f"done: {tmp_path / 'train.pt'} at step 2; exported {tmp_path / 'slim.pt'}"
    assert (tmp_path / "train.pt").read_bytes() == before
    assert torch.load(tmp_path / "slim.pt", weights_only=True)["step"] == 2


def test_every_refusal_of_the_training_inputs_is_an_input_error(tmp_path):
    """The CLI catches `InputError` (exit 2, one line), never a plain ValueError: each refusal
    of a user's folder, manifest or setting must be one."""
    from lwst.warpnet.bank import gather_images, manifest_images, read_training_manifest

    assert issubclass(TrainingDivergedError, InputError)
    (tmp_path / "m.csv").write_text("path\nx.jpg\n")
    (tmp_path / "s3.csv").write_text("content\ns3://bucket/x.jpg\n")
    (tmp_path / "m.txt").write_text("content\nx.jpg\n")
    for source, reason in [(tmp_path / "missing", "no such folder or manifest"),
                           (EXAMPLES / "cat.jpg", "is an image"),
                           (tmp_path / "m.csv", "no content, geometry or texture column"),
                           (tmp_path / "m.txt", "not a readable manifest"),
                           (tmp_path / "s3.csv", "is not a local file")]:
        with pytest.raises(InputError, match=reason):
            gather_images([source])
    with pytest.raises(InputError, match="not a readable manifest"):
        read_training_manifest(tmp_path / "m.txt")
    with pytest.raises(InputError, match="is not a local file"):
        manifest_images(pd.DataFrame({"content": ["s3://bucket/x.jpg"]}), tmp_path / "s3.csv")
    for change, reason in [({"lr": 2.0}, "--lr"), ({"tiers": ()}, "--tiers"),
                           ({"tiers": ("cubist",)}, "--tiers"), ({"device": "tpu"}, "--device"),
                           ({"init": str(tmp_path / "no.pt")}, "--init")]:
        with pytest.raises(InputError, match=reason):
            training.check_config(training.TrainConfig(**change))


def test_the_options_defaults_are_the_recipes():
    """``lwst train-warp``'s options quote `TrainConfig`'s defaults and tiers from the one
    torch-free `lwst.warpnet.recipe` that the trainer uses: every option's default is the
    recipe's, and the trainer, the bank and the synthetic pairs share its objects."""
    from lwst.cli import _registrations, build_parser
    from lwst.warpnet import bank, cli, recipe, synthetic

    assert cli.TIERS is synthetic.TIERS is recipe.TIERS
    assert training.TrainConfig is recipe.TrainConfig
    assert bank.DEFAULT_TIERS is recipe.DEFAULT_TIERS == training.TrainConfig().tiers
    args = build_parser(_registrations(entry_points=False)).parse_args(
        ["train-warp", "--images", "x", "--out", "y"])
    recipe = training.TrainConfig()
    compared = [name for name in vars(args) if hasattr(recipe, name)]
    assert len(compared) > 25
    for name in compared:
        value = getattr(args, name)
        if name not in ("images", "out"):
            assert (tuple(value) if isinstance(value, list) else value) == getattr(recipe, name), \
                name


def test_init_weights_that_do_not_fit_their_own_architecture_are_one_line(tmp_path):
    """A tensor of another shape than the file's model_config says was a RuntimeError."""
    write_tiny_bank(tmp_path / "cache")
    slim = export_checkpoint(train(_tiny_config(tmp_path, steps=1), progress=quiet),
                             tmp_path / "slim.pt")
    state = torch.load(slim, weights_only=True)
    first = next(k for k, v in state["model"].items() if v.dim() > 1)
    state["model"][first] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "odd.pt")
    tune = _tiny_config(tmp_path, steps=1, init=str(tmp_path / "odd.pt"))
    tune.out = str(tmp_path / "tune.pt")
    with pytest.raises(InputError, match=f"--init: its weights do not fit .*{first}"):
        train(tune, progress=quiet)
