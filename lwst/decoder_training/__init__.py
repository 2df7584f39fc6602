"""Train the feed-forward renderers' decoders on lwst's own VGG-19 (docs/decoder_card.md).

Two objectives, ``wct`` (invert reluL_1) and ``adain`` (decode AdaIN targets at relu4_1):
`objective`. Cost is what shapes the recipe on a 2-core CPU: inputs are a fixed, seeded bank of
small crops whose encoder features (and the styles' statistics) are computed once and cached in
memory (`data`), so a step runs the decoder and one encoder pass (forward + backward) on its
output only (`loop`). Seeded; resumable (``<out>.state`` every ``checkpoint_every`` steps and on
Ctrl-C; a resume must repeat the settings that define the run, `RESUMABLE` may change:
`resume`, `run_files`); a CSV loss log. Every refusal is a `DecoderTrainingError` (an
`lwst.errors.InputError`) with one line, raised before the crop bank is built where it can be
(`config`).

The names below are loaded when first used: `config` (the settings and their checks) imports
no torch, so ``lwst train-decoder --help`` can quote the defaults without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Each public name and the submodule that defines it.
_HOMES = {
    "ADAIN_LEVEL": "config", "KINDS": "config", "LEVELS": "config", "MAX_SEED": "config",
    "MAX_WIDTH": "config", "PRECISIONS": "config", "RESUMABLE": "config",
    "DecoderTrainConfig": "config", "DecoderTrainingError": "config",
    "TrainingInterrupted": "config", "check_config": "config", "resolve_device": "config",
    "ADAIN_STYLE_LAYERS": "objective",
    "MANIFEST_COLUMNS": "data", "ImageSet": "data", "training_images": "data",
    "train_decoder": "loop",
    "check_resume": "resume", "read_state": "resume", "run_settings": "resume",
    "RunFiles": "run_files",
}

__all__ = sorted(_HOMES)

if TYPE_CHECKING:
    from lwst.decoder_training.config import (  # noqa: F401
        ADAIN_LEVEL,
        KINDS,
        LEVELS,
        MAX_SEED,
        MAX_WIDTH,
        PRECISIONS,
        RESUMABLE,
        DecoderTrainConfig,
        DecoderTrainingError,
        TrainingInterrupted,
        check_config,
        resolve_device,
    )
    from lwst.decoder_training.data import MANIFEST_COLUMNS, ImageSet, training_images  # noqa: F401
    from lwst.decoder_training.loop import train_decoder  # noqa: F401
    from lwst.decoder_training.objective import ADAIN_STYLE_LAYERS  # noqa: F401
    from lwst.decoder_training.resume import check_resume, read_state, run_settings  # noqa: F401
    from lwst.decoder_training.run_files import RunFiles  # noqa: F401


def __getattr__(name: str) -> object:
    """A public name, imported from its submodule on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
