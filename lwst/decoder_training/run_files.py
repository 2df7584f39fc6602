"""What one run writes (the decoder, its resumable state, its loss log) and how: names checked
before any work, state and decoder saved together, and nothing left behind by a run that saved
nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lwst.decoder_training.config import DecoderTrainConfig, DecoderTrainingError, require
from lwst.decoder_training.resume import run_settings
from lwst.decoders import Decoder, save_decoder
from lwst.failures import first_line
from lwst.loss_log import LossLog
from lwst.safety import save_atomic


@dataclass(frozen=True)
class RunFiles:
    """The files one run writes: the decoder, its resumable state, its loss log."""

    out: Path
    state: Path
    log: Path

    @classmethod
    def of(cls, config: DecoderTrainConfig) -> RunFiles:
        """The run's files, refused in one line where one is a folder or sits under a file."""
        out = Path(config.out)
        files = cls(out, out.with_name(out.name + ".state"),
                    Path(config.log or out.with_name(out.name + ".log.csv")))
        for option, path in (("--out", files.out), ("the state file", files.state),
                             ("the loss log", files.log)):
            require(not path.is_dir(), f"{option} {path}: is an existing folder, not a file name")
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            require(blocker is None, f"{option} {path}: {blocker} is a file, not a folder")
        return files


@dataclass
class TrainingRun:
    """One run's decoder, optimiser and position, and how to save them."""

    config: DecoderTrainConfig
    files: RunFiles
    decoder: Decoder
    optimizer: torch.optim.Optimizer
    vgg_source: str
    origin: str | None  # the resolved ``--init`` the run started from
    step: int = 0
    seconds: float = 0.0
    saved_step: int = 0  # the step the state on disk holds (0: none)

    def save(self) -> None:
        """Write the state, then the decoder, each atomically."""
        save_atomic({"decoder": self.decoder.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "step": self.step,
                     "seconds": self.seconds, "settings": run_settings(self.config),
                     "init": self.origin, "config": asdict(self.config)}, self.files.state)
        save_decoder(self.decoder, self.files.out, self.config.kind, self.vgg_source,
                     note=f"{self.step} steps, batch {self.config.batch_size}, "
                     f"{self.config.crop} px crops")
        self.saved_step = self.step

    def resume(self, state: dict) -> None:
        """Load a checked state; one line if its weights do not fit (a state from before
        settings were recorded, with another width)."""
        state["decoder"].setdefault("input_scale", torch.ones(()))
        try:
            self.decoder.load_state_dict(state["decoder"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            reason = first_line(exc)[:160]
            raise DecoderTrainingError(
                f"{self.files.state}: its weights do not fit this run's decoder ({reason}): "
                f"delete it to start over, or repeat the original settings") from None
        self.step = self.saved_step = int(state["step"])
        self.seconds = float(state["seconds"])

    def kept(self) -> str:
        if not self.saved_step:
            return "nothing was saved"
        return (f"kept the last good checkpoint, step {self.saved_step} "
                f"({self.files.out}, {self.files.state})")

    def diverged(self, what: str, advice: str) -> DecoderTrainingError:
        """The one line a run ends with when the next step's ``what`` is not finite."""
        return DecoderTrainingError(
            f"decoder training diverged at step {self.step + 1} ({what}); {self.kept()}: "
            f"{advice} and start over"
            + (f" (delete {self.files.state})" if self.saved_step else ""))


def stopped(run: TrainingRun | None, state_step: int) -> str:
    """The one line a Ctrl-C ends with, after the state was saved where there was one."""
    step = run.saved_step if run is not None else state_step
    if step:
        return f"stopped at step {step}; the state is saved: the same command resumes"
    return ("stopped before the first step; nothing was saved: the same command starts over "
            "(the crop bank is built again)")


def make_folder(folder: Path) -> list[Path]:
    """``mkdir -p``; the folders it created, outermost first (removed again if the run fails
    before it saved anything)."""
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return created


def clean_up(files: RunFiles, log: LossLog | None, created: list[Path]) -> None:
    """After a run that saved nothing: remove the log it wrote and the folders it made."""
    if log is not None and log.file is not None:
        files.log.unlink(missing_ok=True)
    for folder in reversed(created):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
