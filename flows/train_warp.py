"""Train the warp network as a Prefect flow: a thin wrapper over ``lwst.warpnet.train``.

Two tasks, each safe to retry: encode the feature cache (skips images already cached), then
train (resumes from the checkpoint when retried, or when the flow is run again on the same
``out``). File paths, not tensors, pass between them. Every setting, path and checkpoint is
checked before the first task (`starting_point`): a refusal fails the flow at once, not after
the cache is encoded.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lwst.warpnet.train import TrainConfig, prepare_bank, starting_point, train
from tasks.retries import retry_on_transient


@task(name="encode-feature-cache", retries=1, retry_condition_fn=retry_on_transient)
def encode_cache(cfg: TrainConfig) -> str:
    prepare_bank(cfg, get_run_logger().info)
    return cfg.cache_dir


@task(name="train-warpnet", retries=1, retry_condition_fn=retry_on_transient)
def train_task(cfg: TrainConfig) -> str:
    return str(train(cfg, get_run_logger().info))


_DEFAULTS = TrainConfig()


@flow(name="train-warp")
def train_warp(
    images: list[str],
    out: str = "runs/warpnet/train.pt",
    export: str | None = None,
    cache_dir: str = _DEFAULTS.cache_dir,
    painted_bank: str | None = None,
    paint_styles: str | None = None,
    paint_images: int = _DEFAULTS.paint_images,
    paint_size: int = _DEFAULTS.paint_size,
    paint_renderer: str = _DEFAULTS.paint_renderer,
    steps: int = _DEFAULTS.steps,
    batch_size: int = _DEFAULTS.batch_size,
    lr: float = _DEFAULTS.lr,
    warmup: int = _DEFAULTS.warmup,
    original_content: float = _DEFAULTS.original_content,
    cross_pairs: float = _DEFAULTS.cross_pairs,
    cross_weight: float = _DEFAULTS.cross_weight,
    max_images: int | None = None,
    seed: int = _DEFAULTS.seed,
    device: str = _DEFAULTS.device,
    threads: int = _DEFAULTS.threads,
    log: str | None = None,
    init: str | None = None,
    refine_steps: tuple[int, int] | None = None,
    global_relu5: bool | None = None,
) -> str:
    """Paint and encode the training images, train, and optionally export the slim checkpoint.
    The defaults are the shipped checkpoint's recipe (``TrainConfig``); ``init`` fine-tunes
    from existing weights (``global_relu5=True`` adds relu5_1 to its global stage, as the
    shipped network's third fine-tune did)."""
    cfg = TrainConfig(
        images=images,
        out=out,
        export=export,
        cache_dir=cache_dir,
        painted_bank=painted_bank,
        paint_styles=paint_styles,
        paint_images=paint_images,
        paint_size=paint_size,
        paint_renderer=paint_renderer,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        original_content=original_content,
        cross_pairs=cross_pairs,
        cross_weight=cross_weight,
        max_images=max_images,
        seed=seed,
        device=device,
        threads=threads,
        log=log,
        init=init,
        refine_steps=tuple(refine_steps) if refine_steps else None,
        global_relu5=global_relu5,
        build_cache=False,
        resume=True,  # a retry, or the flow run again, continues from the last checkpoint
    )
    starting_point(cfg)  # every refusal that needs no image, before the cache is encoded
    encode_cache(cfg)
    checkpoint = train_task(cfg)
    if export:
        checkpoint = export  # written by the training task, after its last step
    create_markdown_artifact(
        "\n".join(
            ["| setting | value |", "|---|---|"]
            + [f"| {k} | {v} |" for k, v in asdict(cfg).items()]
        ),
        key="warpnet-training",
        description=f"warp network trained to {checkpoint}",
    )
    return checkpoint


if __name__ == "__main__":
    import sys

    usage = ("usage: python -m flows.train_warp IMAGE_DIR|MANIFEST [...]  (the recipe's "
             "defaults; `lwst train-warp --help` lists every setting)")
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(usage)
        sys.exit(0)
    if len(sys.argv) < 2:
        print(usage, file=sys.stderr)
        sys.exit(2)
    train_warp(images=sys.argv[1:])
