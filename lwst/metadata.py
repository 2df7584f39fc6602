"""The per-item metadata record: one schema for ``--metadata-out`` JSON and the Parquet dataset.

Column names and order come from docs/contracts.md. Keeping the schema here (not in the pipeline)
means the CLI's JSON and the pipeline's Parquet rows can never drift apart.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pyarrow as pa

from lwst import __version__

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("run_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("content", pa.string()),
        ("geometry", pa.string()),
        ("texture", pa.string()),
        ("output", pa.string()),
        ("warped", pa.string()),
        ("flow", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("warp_mean_px", pa.float64()),
        ("warp_p95_px", pa.float64()),
        ("warp_max_px", pa.float64()),
        ("warp_mean_frac", pa.float64()),
        ("inpainted_frac", pa.float64()),
        ("warp_loss_before", pa.float64()),
        ("warp_loss_after", pa.float64()),
        ("content_loss", pa.float64()),
        ("style_loss", pa.float64()),
        ("total_loss", pa.float64()),
        ("seconds_warp", pa.float64()),
        ("seconds_inpaint", pa.float64()),
        ("seconds_render", pa.float64()),
        ("device", pa.string()),
        ("lwst_version", pa.string()),
        ("warpnet_id", pa.string()),
        ("vgg_weights", pa.string()),
        ("params", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        # Added after the first release (docs/contracts.md: columns are added, never renamed).
        ("renderer", pa.string()),
        ("warp_confidence", pa.float64()),
        ("warp_fold_frac", pa.float64()),
        ("warp_stretch_frac", pa.float64()),
        ("warp_applied", pa.string()),
        ("decoder_ids", pa.string()),
        # Failed rows: "input" (the item's input or storage: fix it and re-run), "internal"
        # (a bug in lwst, traceback in the run's log) or "orchestration" (the task runner
        # failed the task: re-run); lwst.failures. Null for other rows.
        ("error_kind", pa.string()),
        # True where DIS refined the field (a pixel-for-pixel pair; lwst.photometric_refine).
        ("warp_refined", pa.bool_()),
        # The learned network's view of the pair whose field was kept: identity, mirror, flip or
        # transpose (--warp-views; lwst.warpnet.inference.predict_warp). Null for other methods.
        ("warp_view", pa.string()),
        # lwst.warp_safety.area_spread of the field the confidence judged (256x256 analysis
        # field, before any fallback): a melted field has a high one (docs/method.md).
        ("warp_melt", pa.float64()),
        # What render_precision resolved to on the item's device (auto: bfloat16 where native):
        # float32 or bfloat16; rows of different machines compare only knowing it.
        ("render_dtype", pa.string()),
        # The manifest's ``label`` (make-manifest: the first folder under the content root, an
        # ImageFolder class), so a stylised dataset keeps its classes; null without one.
        ("label", pa.string()),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
STATUSES = ("ok", "failed", "skipped")


def empty_record(item_id: str, run_id: str = "") -> dict[str, Any]:
    """A record with every column present (None where unknown), ``created_at`` set now and
    ``lwst_version`` this one: every row, failed and skipped ones too, says which lwst made it."""
    record: dict[str, Any] = dict.fromkeys(COLUMNS)
    record.update(id=item_id, run_id=run_id, created_at=dt.datetime.now(dt.UTC),
                  lwst_version=__version__)
    return record


def stamp(record: dict[str, Any], device: str) -> dict[str, Any]:
    """Fill a row's ``lwst_version`` and ``device`` where they are missing (in place; returns
    it): a failed or skipped row names the lwst and the device of the run that wrote it, so
    failures group by version and machine like ``ok`` rows."""
    if record.get("lwst_version") is None:
        record["lwst_version"] = __version__
    if record.get("device") is None:
        record["device"] = device
    return record


def to_json(record: dict[str, Any]) -> str:
    """The record in `COLUMNS` order as strict JSON (``--metadata-out``): timestamps as ISO
    8601, numpy/torch scalars as numbers, and a non-finite number (the losses of
    ``--no-losses``) as null, because NaN is not JSON and strict parsers refuse it."""
    def plain(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.isoformat()
        if hasattr(value, "item") and not isinstance(value, str | bytes):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    ordered = {name: plain(record.get(name)) for name in COLUMNS}
    return json.dumps(ordered, indent=2, allow_nan=False)


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records -> an Arrow table with exactly `SCHEMA` (missing keys become nulls)."""
    columns = {name: [r.get(name) for r in records] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """A table written by an older lwst, cast to `SCHEMA` (columns it lacks become nulls)."""
    for name in COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(len(table), SCHEMA.field(name).type))
    return table.select(list(COLUMNS)).cast(SCHEMA)
