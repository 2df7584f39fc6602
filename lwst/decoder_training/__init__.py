"""Train the feed-forward renderers' decoders on lwst's own VGG-19 (docs/decoder_card.md).

Two objectives, ``wct`` (invert reluL_1) and ``adain`` (decode AdaIN targets at relu4_1):
`objective`. Cost is what shapes the recipe on a 2-core CPU: inputs are a fixed, seeded bank of
small crops whose encoder features (and the styles' statistics) are computed once and cached in
memory (`data`), so a step runs the decoder and one encoder pass (forward + backward) on its
output only (`loop`). Seeded; resumable (``<out>.state`` every ``checkpoint_every`` steps and on
Ctrl-C; a resume must repeat the settings that define the run, `RESUMABLE` may change:
`resume`, `run_files`); a CSV loss log. Every refusal is a `DecoderTrainingError` (a
``ValueError``) with one line, raised before the crop bank is built where it can be (`config`).
"""

from lwst.decoder_training.config import (
    ADAIN_LEVEL,
    ADAIN_STYLE_LAYERS,
    MANIFEST_COLUMNS,
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
from lwst.decoder_training.data import ImageSet, training_images
from lwst.decoder_training.loop import train_decoder
from lwst.decoder_training.resume import check_resume, read_state, run_settings
from lwst.decoder_training.run_files import RunFiles

__all__ = [
    "ADAIN_LEVEL",
    "ADAIN_STYLE_LAYERS",
    "MANIFEST_COLUMNS",
    "MAX_SEED",
    "MAX_WIDTH",
    "PRECISIONS",
    "RESUMABLE",
    "DecoderTrainConfig",
    "DecoderTrainingError",
    "ImageSet",
    "RunFiles",
    "TrainingInterrupted",
    "check_config",
    "check_resume",
    "read_state",
    "resolve_device",
    "run_settings",
    "train_decoder",
    "training_images",
]
