"""Train the feed-forward renderers' decoders as a Prefect flow: a thin wrapper over
``lwst.decoder_training``, one task per decoder, retried once on a transient I/O error only (it
resumes from its ``.state`` file; a refused input or setting fails at once, before any crop
bank is built again). The AdaIN decoder runs after the WCT relu4_1 one and starts from it, as
in the shipped recipe (docs/decoder_card.md). Every default is `DecoderTrainConfig`'s."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lwst.decoder_training import DecoderTrainConfig, train_decoder
from tasks.retries import retry_on_transient


@task(name="train-decoder", task_run_name="train-{cfg.kind}-relu{cfg.level}_1", retries=1,
      retry_condition_fn=retry_on_transient)
def train_task(cfg: DecoderTrainConfig) -> str:
    logger = get_run_logger()
    return str(train_decoder(cfg, logger.info, logger.warning))


_DEFAULTS = DecoderTrainConfig()


@flow(name="train-decoders")
def train_decoders(
    images: list[str],
    styles: list[str],
    out_dir: str = "runs/decoders",
    wct_levels: list[int] = [5, 4, 3, 2, 1],  # noqa: B006 - Prefect parameters are JSON
    adain: bool = True,
    steps: int = _DEFAULTS.steps,
    max_seconds: float | None = None,
    batch_size: int = _DEFAULTS.batch_size,
    crop: int = _DEFAULTS.crop,
    width: float = _DEFAULTS.width,
    lr: float = _DEFAULTS.lr,
    style_weight: float = _DEFAULTS.style_weight,
    seed: int = _DEFAULTS.seed,
    device: str = _DEFAULTS.device,
) -> dict[str, str]:
    """Train the WCT decoders of ``wct_levels`` and (``adain``) the AdaIN decoder into
    ``out_dir``; returns kind/level -> checkpoint path."""
    base = DecoderTrainConfig(images=images, styles=styles, steps=steps, max_seconds=max_seconds,
                              batch_size=batch_size, crop=crop, width=width, lr=lr,
                              style_weight=style_weight, seed=seed, device=device)
    folder = Path(out_dir)
    written: dict[str, str] = {}
    for level in wct_levels:
        cfg = replace(base, kind="wct", level=level, styles=[],  # wct trains on images only
                      out=str(folder / f"decoder_wct{level}.pt"))
        written[f"wct{level}"] = train_task(cfg)
    if adain:
        init = written.get("wct4")
        cfg = replace(base, kind="adain", level=4, init=init,
                      out=str(folder / "decoder_adain.pt"))
        written["adain"] = train_task(cfg)
    create_markdown_artifact(
        "# Decoders\n\n" + "\n".join(f"- `{k}`: `{v}`" for k, v in written.items()),
        key="train-decoders")
    return written
