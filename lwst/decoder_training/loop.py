"""The training run: checks, crop bank, decoder, the step loop, the final save; on Ctrl-C the
state at the last finished step, on a failure that saved nothing no file or folder left."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lwst.decoder_training.config import (
    DecoderTrainConfig,
    TrainingInterrupted,
    check_config,
    ignored_settings,
    resolve_device,
)
from lwst.decoder_training.data import ImageSet, training_images
from lwst.decoder_training.objective import Objective
from lwst.decoder_training.resume import check_resume, load_init, read_state, recorded_init
from lwst.decoder_training.run_files import (
    RunFiles,
    TrainingRun,
    clean_up,
    make_folder,
    stopped,
)
from lwst.decoders import Decoder, DecoderInfo
from lwst.interrupts import ctrl_c_held, named
from lwst.loss_log import LossLog
from lwst.lr_schedule import warmup_cosine, warmup_cosine_factor, warmup_steps
from lwst.safety import first_non_finite
from lwst.vgg import load_vgg19, native_bfloat16


def _progress(step: int, seconds: float, config: DecoderTrainConfig) -> float:
    """Share of the run done: by steps, or by ``max_seconds`` of training if that comes first
    (a time-boxed run still ends its cosine decay; its log records the steps it took)."""
    by_steps = step / config.steps
    return max(by_steps, seconds / config.max_seconds) if config.max_seconds else by_steps


def _lr_factor(run: TrainingRun) -> Callable[[int], float]:
    """The share of ``--lr`` each step trains at: warm-up, then a cosine to 0 over the run's
    progress (by steps or by time, `_progress`; read from ``run`` as it trains)."""
    warmup = warmup_steps(run.config.warmup, run.config.steps)
    return lambda step: warmup_cosine_factor(step, warmup,
                                             _progress(step, run.seconds, run.config))


def _uses_bf16(config: DecoderTrainConfig, device: torch.device) -> bool:
    return config.precision == "bfloat16" or (
        config.precision == "auto" and native_bfloat16(device))


def _prepare(config: DecoderTrainConfig, device: torch.device, files: RunFiles,
             images: ImageSet, styles: ImageSet | None, state: dict | None,
             start: tuple[Decoder, DecoderInfo] | None, log_fn: Callable[[str], None],
             warn: Callable[[str], None]) -> tuple[TrainingRun, Objective]:
    """Build the crop bank and the decoder (from the state, ``--init`` or scratch)."""
    torch.manual_seed(config.seed)
    vgg = load_vgg19(config.vgg_weights, device=device)
    started = time.perf_counter()
    objective = Objective(config, vgg, device, images, styles, warn)
    held = images.held_out + (styles.held_out if styles else 0)
    log_fn(f"{config.kind} relu{config.level}_1: bank of {objective.size} crops ready in "
           f"{time.perf_counter() - started:.0f} s ({held} image(s) held out, "
           f"{objective.skipped} unreadable skipped; bf16 autocast: {_uses_bf16(config, device)})")
    decoder = Decoder(config.level, config.width).to(device)
    if state is None:
        rms = objective.features[: 256].float().pow(2).mean().sqrt().clamp_min(1e-6)
        decoder.input_scale.fill_(float(1.0 / rms))
    if start is not None:
        decoder.load_state_dict(start[0].state_dict())
        log_fn(f"initialised from {config.init} ({start[1].decoder_id}: {start[1].note})")
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    origin = str(Path(config.init).resolve()) if config.init else None
    run = TrainingRun(config, files, decoder, optimizer, vgg.source, origin)
    if state is not None:
        run.origin = recorded_init(state)
        run.resume(state)
        log_fn(f"resumed at step {run.step}")
    return run, objective


def _train_steps(run: TrainingRun, objective: Objective, device: torch.device, use_bf16: bool,
                 log: LossLog, log_fn: Callable[[str], None]) -> None:
    """Train until the schedule ends; a step whose loss is not finite stops the run, keeping
    the last checkpoint."""
    config = run.config
    schedule = warmup_cosine(run.optimizer, config.lr, _lr_factor(run), run.step)
    while _progress(run.step, run.seconds, config) < 1.0:
        t0 = time.perf_counter()
        lr = run.optimizer.param_groups[0]["lr"]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, parts = objective(run.decoder, run.step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise run.diverged(f"loss {value}", "lower --lr (or the loss weights)")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with ctrl_c_held():  # Ctrl-C waits: a step is applied, counted, logged and saved whole
            run.optimizer.step()
            bad = first_non_finite(run.decoder.state_dict())
            if bad is not None:  # a finite loss, then an update that overflowed
                raise run.diverged(f"weight {bad} NaN or infinite after the update", "lower --lr")
            run.step += 1
            run.seconds += time.perf_counter() - t0
            schedule.step()  # the rate of the next step, from the steps and seconds done
            log.write({"step": run.step, "loss": value, **parts, "lr": lr,
                       "seconds": round(run.seconds, 2)})
            if run.step % config.checkpoint_every == 0:
                run.save()
                log_fn(f"step {run.step} loss {value:.4f} ({run.seconds / run.step:.2f} s/step)")


def _train(run: TrainingRun, objective: Objective, device: torch.device, log: LossLog,
           log_fn: Callable[[str], None]) -> None:
    """The training loop, then the final save."""
    try:
        _train_steps(run, objective, device, _uses_bf16(run.config, device), log, log_fn)
    finally:
        log.close()
    with ctrl_c_held():
        run.save()
    skipped = f" ({objective.skipped} unreadable image(s) skipped)" if objective.skipped else ""
    log_fn(f"done: {run.step} steps in {run.seconds:.0f} s -> {run.files.out}{skipped}")


def _finished(state: dict, config: DecoderTrainConfig, files: RunFiles,
              log_fn: Callable[[str], None]) -> bool:
    """Whether the run in ``state`` already ended its schedule (by ``--steps`` or
    ``--max-seconds``): then it says so, and no crop bank (minutes) is built for nothing."""
    step, seconds = int(state["step"]), float(state["seconds"])
    if _progress(step, seconds, config) < 1.0:
        return False
    done = f"step {step} of --steps {config.steps}"
    if config.max_seconds:
        done += f", {seconds:.0f} s of --max-seconds {config.max_seconds:g}"
    log_fn(f"nothing to train: {files.out} is finished ({done}); a larger --steps or "
           "--max-seconds trains it on")
    return True


def train_decoder(config: DecoderTrainConfig, log_fn: Callable[[str], None] = print,
                  warn_fn: Callable[[str], None] | None = None) -> Path:
    """Train (or resume) one decoder; writes ``config.out`` (float16 weights) and returns it.

    Every check that needs no crop bank comes first. Refusals are `DecoderTrainingError` (one
    line); Ctrl-C saves the state at the last finished step and raises `TrainingInterrupted`;
    a failed run that saved nothing leaves no file or folder. ``warn_fn`` (default: ``log_fn``)
    gets one line per skipped image."""
    warn = warn_fn or (lambda message: log_fn(f"warning: {message}"))
    ignored = ignored_settings(config)  # before `check_config` sets adain's level
    check_config(config)
    device = resolve_device(config.device)
    files = RunFiles.of(config)
    images = training_images(config.images, "--images", "images")
    styles = (training_images(config.styles, "--styles", "styles")
              if config.kind == "adain" else None)
    state = read_state(files.state) if files.state.exists() else None
    if state is not None:
        check_resume(state, files.state, config)
    start = load_init(config) if state is None else None
    for note in ignored:
        warn(note)
    if state is not None and files.out.exists() and _finished(state, config, files, log_fn):
        return files.out
    run: TrainingRun | None = None
    log: LossLog | None = None
    created: list[Path] = []
    try:
        run, objective = _prepare(config, device, files, images, styles, state, start,
                                  log_fn, warn)
        created = make_folder(files.log.parent) + make_folder(files.out.parent)
        with ctrl_c_held():  # a resume rewrites the log first
            log = LossLog(files.log, run.step)
        _train(run, objective, device, log, log_fn)
    except KeyboardInterrupt:
        if run is not None and run.step > run.saved_step:
            with ctrl_c_held():
                run.save()
        raise TrainingInterrupted(named(stopped(run, int(state["step"]) if state else 0))) from None
    finally:
        if not files.state.exists():
            clean_up(files, log, created)
    return files.out
