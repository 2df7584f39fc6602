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
from lwst.safety import BadCheckpointError
from lwst.warpnet.inference import load_warpnet
from lwst.warpnet.split import is_held_out
from lwst.warpnet.train import TrainingDivergedError, export_checkpoint, train

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
    with pytest.raises(ValueError, match="already holds a training checkpoint: pass --resume"):
        train(_tiny_config(tmp_path, steps=4), progress=quiet)
    other = _tiny_config(tmp_path, steps=4, resume=True, seed=3)
    other.batch_size = 2
    with pytest.raises(ValueError, match="batch-size 4 -> 2; seed 0 -> 3"):
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
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        train(_tiny_config(tmp_path, steps=5, log=str(log)), progress=said.append)
    assert said[-1].startswith("stopped at step 3")  # checkpoint_every is 2: 3 is Ctrl-C's
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
    (["--checkpoint-every", "0"], "checkpoint-every must be at least 1, got 0"),
    (["--batch-size", "0"], "batch-size must be at least 1, got 0"),
    (["--threads", "0"], "threads must be at least 1, got 0"),
    (["--original-content", "2"], "original-content must be within 0..1, got 2.0"),
    (["--lr", "nan"], "lr must be within 0..1, got nan"),
    (["--lr", "1e300"], "lr must be within 0..1, got 1e+300"),
    (["--until", "0"], "until must be at least 1, got 0"),
    (["--device", "gpu"], "device gpu: not a device name (cpu, cuda or cuda:N)"),
    (["--refine-steps", "0", "0"], "refine-steps must be at least 1 each, got [0, 0]"),
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
    assert "device cuda: torch sees no CUDA device on this machine" in capsys.readouterr().err


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
