"""Data augmentation: a seeded manifest of (content, geometry, texture) triples, stylised.

The manifest is written beside the outputs (``out/manifest-seed<S>-n<N>.csv``) so the dataset
records exactly what was asked for, and the same (folders, n, seed) re-run resumes it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.runners import RunnerName
from flows.stylize_dataset import s3_storage_options, stylize_dataset
from lwst import s3, storage
from lwst.manifest import make_manifest, write_manifest


@flow(name="augment-dataset")
def augment_dataset(
    contents: list[str],
    styles: list[str],
    out: str,
    n: int | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    runner: RunnerName = "threads",
    workers: int = 1,
    dask_address: str | None = None,
    gpus_per_item: float = 0,
    torch_threads: int | None = None,
    s3_endpoint_url: str | None = None,
    aws_region: str | None = None,
    aws_credentials_block: str | None = None,
) -> dict[str, Any]:
    """Build N seeded random triples (or all pairs when ``n`` is None) from folders or prefixes
    of content and style images, write the manifest into ``out`` and stylise it."""
    opts = s3_storage_options(s3_endpoint_url, aws_region, aws_credentials_block)
    for uri in (*contents, *styles, out):
        s3.check_reachable(uri, opts)
    frame = make_manifest(contents, styles, n=n, seed=seed, storage_options=opts)
    manifest_uri = storage.join(out, f"manifest-seed{seed}-n{n if n is not None else 'all'}.csv")
    write_manifest(frame, manifest_uri, opts)
    get_run_logger().info("wrote %d items to %s", len(frame), manifest_uri)
    summary = stylize_dataset(
        manifest_uri, out, overrides=overrides, runner=runner, workers=workers,
        dask_address=dask_address, gpus_per_item=gpus_per_item, torch_threads=torch_threads,
        s3_endpoint_url=s3_endpoint_url, aws_region=aws_region,
        aws_credentials_block=aws_credentials_block)
    return {**summary, "manifest": manifest_uri}
