"""The warp network's training recipe (`TrainConfig`) and its tiers, without torch.

``lwst train-warp --help`` quotes these defaults and must answer without importing torch
(tests/test_cli_startup.py); the trainer (`lwst.warpnet.train`), the bank and the synthetic
pairs import them from here, so there is one copy.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

TIERS = ("geometry", "photometric", "artistic")  # `lwst.warpnet.synthetic`'s pair tiers
DEFAULT_TIERS = ("photometric", "artistic", "artistic")


def _default_model() -> dict:
    """The network's default architecture (imported when a config is made: it needs torch)."""
    from lwst.warpnet.model import WarpNetConfig

    return WarpNetConfig().to_dict()


@dataclass
class TrainConfig:
    """Every knob of a training run, with its default (recorded in the checkpoint).

    The defaults are the shipped checkpoint's recipe (docs/model_card.md), so the command that
    reproduces it names only paths."""

    images: list[str] = field(default_factory=list)  # folders or manifests
    out: str = "warpnet.pt"
    export: str | None = None  # also write the slim inference checkpoint here, at the end
    cache_dir: str = "scratch/warpnet_cache"
    build_cache: bool = True  # encode missing images first; False: train on what is cached
    painted_bank: str | None = None  # folder of <image stem>__<style stem>.png painted copies
    paint_images: int = 48  # paint this many training images into painted_bank first
    paint_styles: str | None = None  # folder of styles to paint with (held-out ones skipped)
    paint_size: int = 128  # painting resolution (upsampled to the analysis size for encoding)
    paint_renderer: str = "gatys"  # gatys (cheap schedule) or a feed-forward one (adain, wct)
    tiers: tuple[str, ...] = DEFAULT_TIERS
    steps: int = 4000
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup: int = 100
    gamma: float = 0.8  # sequence weight of intermediate i: gamma ** (last - i)
    weak_weight: float = 1.0
    original_content: float = 0.7  # share of pairs whose content side is the untouched image
    # Share of each batch drawn from pairs of *different* images (``bank.cross_image_pairs``),
    # trained by the weak loss alone; 0 keeps the synthetic-only recipe.
    cross_pairs: float = 0.0
    cross_neighbours: int = 8  # exemplar candidates per untouched image for those pairs
    cross_weight: float = 1.0  # weak-loss weight of those pairs (``weak_weight`` for the others)
    # Weight of `melt_loss` on those pairs' final field: the weak loss alone rewards melting
    # (moving each content feature onto its best local match), the product's confidence
    # penalises it (docs/benchmarks.md, "Melted fields"); 0 leaves it out.
    melt_weight: float = 0.0
    max_images: int | None = None  # encode only this many (seeded shuffle of the training set)
    until: int | None = None  # stop at this step (the schedule still runs over ``steps``)
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    resume: bool = False
    # Fine-tune: start from these weights (a training or slim checkpoint) with a fresh optimiser
    # and schedule; the architecture is the checkpoint's. Ignored when resuming.
    init: str | None = None
    # (relu4_1 steps, relu3_1 steps) to train with; None keeps the architecture's.
    refine_steps: tuple[int, int] | None = None
    # True: the global stage also matches relu5_1 (a fine-tune adds its mixing weight to the
    # initial weights); None keeps the architecture's. Needs a cache with relu5_1 features.
    global_relu5: bool | None = None
    log: str | None = None
    checkpoint_every: int = 100
    refresh_bank_every: int = 0  # >0: reload the cache (grown by another process) every N steps
    model: dict = field(default_factory=_default_model)



def option_defaults() -> dict[str, object]:
    """`TrainConfig`'s plain defaults by field name (the factories' are left out: the model's
    imports torch), what the command's options quote."""
    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
