"""Data augmentation: a seeded manifest of (content, geometry, texture) triples, stylised.

The manifest is written beside the outputs (``out/manifest-seed<S>-n<N>.csv``, ``-k<K>`` for
``per_content``, ``-texture`` appended without geometry) so the dataset records exactly what
was asked for. Ids depend on the inputs and the draws are prefix-stable, so the same (folders,
seed) re-run resumes it, and so does a larger ``n`` or ``per_content`` (only the new items run).
Nothing under ``out`` is ever listed as an input.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import State

from flows.runners import RunnerName
from flows.stylize_dataset import RunNotCompleted, s3_storage_options, stylize_dataset
from lwst import s3, storage
from lwst.manifest import write_manifest
from lwst.manifest_builder import make_manifest


@flow(name="augment-dataset")
def augment_dataset(
    contents: list[str],
    styles: list[str],
    out: str,
    n: int | None = None,
    seed: int = 0,
    per_content: int | None = None,
    no_geometry: bool = False,
    overrides: dict[str, Any] | None = None,
    runner: RunnerName = "threads",
    workers: int = 1,
    dask_address: str | None = None,
    gpus_per_item: float = 0,
    torch_threads: int | None = None,
    s3_endpoint_url: str | None = None,
    aws_region: str | None = None,
    aws_credentials_block: str | None = None,
    fail_on_internal_errors: bool | None = None,
    fail_on_failed_items: bool = False,
) -> dict[str, Any] | State:
    """Build N seeded random triples (``per_content``: K draws per content; neither: all
    pairs) from folders or prefixes of content and style images, write the manifest into
    ``out`` and stylise it. ``no_geometry``: texture only (no geometry exemplar, no warp).
    ``fail_on_internal_errors`` and ``fail_on_failed_items`` as for `stylize_dataset`, whose
    summary this returns with the manifest's URI added; its run ends as the stylize-dataset
    run does (Failed, or Cancelled when stopped), its error carrying that summary."""
    opts = s3_storage_options(s3_endpoint_url, aws_region, aws_credentials_block)
    for uri in (*contents, *styles, out):
        s3.check_reachable(uri, opts)
    frame = make_manifest(contents, styles, n=n, seed=seed, storage_options=opts,
                          per_content=per_content, geometry=not no_geometry, exclude=[out])
    manifest_uri = storage.join(out, manifest_name(seed, n, per_content, no_geometry))
    write_manifest(frame, manifest_uri, opts)
    get_run_logger().info("wrote %d items to %s", len(frame), manifest_uri)
    try:
        summary = stylize_dataset(
            manifest_uri, out, overrides=overrides, runner=runner, workers=workers,
            dask_address=dask_address, gpus_per_item=gpus_per_item,
            torch_threads=torch_threads, s3_endpoint_url=s3_endpoint_url,
            aws_region=aws_region, aws_credentials_block=aws_credentials_block,
            fail_on_internal_errors=fail_on_internal_errors,
            fail_on_failed_items=fail_on_failed_items)
    except RunNotCompleted as ended:
        return ended.with_summary({**ended.summary, "manifest": manifest_uri}).state()
    return {**summary, "manifest": manifest_uri}


def manifest_name(seed: int, n: int | None, per_content: int | None, no_geometry: bool) -> str:
    """``manifest-seed<S>-n<N>.csv`` (``n<all>`` for all pairs, ``k<K>`` per content), with
    ``-texture`` before the suffix for a texture-only manifest."""
    draws = f"k{per_content}" if per_content is not None else f"n{n if n is not None else 'all'}"
    return f"manifest-seed{seed}-{draws}{'-texture' if no_geometry else ''}.csv"
