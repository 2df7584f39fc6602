"""Where a run starts: its ``<out>.state`` (whose settings a resume must repeat) or ``--init``.

Every check here runs before the crop bank (minutes) is built, and refuses in one line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from lwst.decoder_training.config import DecoderTrainConfig, DecoderTrainingError, require
from lwst.decoders import Decoder, DecoderCheckpointError, DecoderInfo, load_decoder
from lwst.safety import BadCheckpointError, load_weights_only


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
    require(isinstance(state, dict) and keys <= state.keys(),
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


def recorded_init(state: dict) -> str | None:
    """The resolved ``--init`` the state's run started from (None: from scratch)."""
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
    init = recorded_init(state)
    if config.init is not None and str(Path(config.init).resolve()) != init:
        origin = f"started from {init}" if init else "started without --init"
        raise DecoderTrainingError(
            f"--init {config.init}: {path} exists (step {step}, {origin}) and a resume does not "
            f"start over: delete {path} to start from {config.init}, or drop --init to resume")


def load_init(config: DecoderTrainConfig) -> tuple[Decoder, DecoderInfo] | None:
    """``--init``'s decoder (either kind), refused in one line where it does not fit."""
    if config.init is None:
        return None
    try:
        decoder, info = load_decoder(config.init, None, config.level)
    except DecoderCheckpointError as exc:  # kind None: either kind will do
        raise DecoderTrainingError(
            "--init: " + str(exc).replace("expected None ", "this run trains ")) from None
    require(info.width == float(config.width),
            f"--init {config.init}: a width {info.width:g} decoder; this run trains width "
            f"{config.width:g} (pass --width {info.width:g})")
    return decoder, info
