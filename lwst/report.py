"""What a person reads after a run: a captioned contact sheet and the low-confidence items.

Output thumbnails alone cannot tell a good warp from a torn one; a row of content | geometry
exemplar | warped content | texture exemplar | output, with the item's id, warp confidence and
what was applied under it, can (the texture beside the output shows whether the rendering took
its colours and strokes). Lives in the library (no Prefect) so the flow only wires it into
artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from lwst import storage
from lwst.arrays import to_uint8_hwc
from lwst.image_io import read_image

PANELS = ("content", "geometry", "warped", "texture", "output")
ALWAYS_SHOWN = ("content", "output")
CAPTION_PX = 16
PAD = 4
GREY = (225, 225, 225)  # a panel the item has no image for
ELLIPSIS = "\u2026"
MIN_ID_CHARS = 12  # of an elided id: its first 6 and last 6 characters stay


@dataclass(frozen=True)
class SheetRow:
    """One item's images (URIs; None where the item has none) and the line under them. A
    missing or unreadable one is a grey cell: ``warped`` of an item run without side outputs
    (`lwst.item_files`) is None or names no file, and its sheet is made all the same.
    ``output`` is the file the item's metadata row names (its ``image_format``'s suffix).
    ``texture``: the texture exemplar (None: a warp-only item)."""

    content: str | None
    geometry: str | None
    warped: str | None
    output: str | None
    caption: str
    texture: str | None = None


def caption(record: dict[str, Any]) -> str:
    """``id  conf 0.42  affine  folds 0.000`` from a metadata record (warp figures if any;
    ``learned + DIS`` where the DIS refinement was kept; a skipped item's with ``(done
    earlier)``, its figures where its record carries them). The id comes first, followed by
    two spaces: `fit_caption` shortens the id, never the figures."""
    parts = [str(record.get("id"))]
    if record.get("warp_confidence") is not None:
        parts.append(f"conf {record['warp_confidence']:.2f}")
    if record.get("warp_applied"):
        parts.append(str(record["warp_applied"]) + (" + DIS" if record.get("warp_refined") else ""))
    if record.get("warp_fold_frac") is not None:
        parts.append(f"folds {record['warp_fold_frac']:.3f}")
    if record.get("status") == "skipped":
        parts.append("(done earlier)")
    return "  ".join(parts)


def elide(text: str, chars: int) -> str:
    """``text`` in at most ``chars`` characters: its start and end around '…' (an id's end
    tells items apart: make-manifest ids end in a hash)."""
    if len(text) <= chars:
        return text
    return text[: chars // 2] + ELLIPSIS + text[len(text) - (chars - 1) // 2:]


def fit_caption(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
                width: float) -> str:
    """``text`` as drawn within ``width`` px: whole when it fits; else its first word (the id:
    up to 128 characters, longer than a sheet is wide) elided in the middle with '…', keeping
    the figures after it whole; only where even a short id leaves no room is the line's end
    cut."""
    if font.getlength(text) <= width:
        return text
    head, sep, rest = text.partition("  ")
    tail = sep + rest
    room = width - font.getlength(ELLIPSIS + tail)
    for keep in range(len(head) - 1, MIN_ID_CHARS - 1, -1):
        front, back = head[: (keep + 1) // 2], head[len(head) - keep // 2:]
        if font.getlength(front + back) <= room:
            return front + ELLIPSIS + back + tail
    line = elide(head, MIN_ID_CHARS + 1) + tail
    while line and font.getlength(line + ELLIPSIS) > width:
        line = line[:-1]
    return line.rstrip() + ELLIPSIS


def _tile(uri: str | None, side: int, opts: dict) -> Image.Image | None:
    """The image fitted into ``side`` x ``side`` (aspect kept); None where there is none or it
    cannot be read."""
    if not uri:
        return None
    try:
        image = read_image(uri, side, **opts)[0]
    except (OSError, ValueError):
        return None
    return Image.fromarray(to_uint8_hwc(image))


def shown_panels(rows: list[SheetRow]) -> tuple[str, ...]:
    """The columns of a sheet of ``rows``: content and output always; the warp's two
    (geometry, warped) where any row has one of them, the texture where any row has one. A
    column no sampled item has an image for would be all grey placeholders, saying nothing."""
    warp = any(r.geometry or r.warped for r in rows)
    texture = any(r.texture for r in rows)
    return tuple(p for p in PANELS if p in ALWAYS_SHOWN or (p == "texture" and texture)
                 or (p in ("geometry", "warped") and warp))


def item_sheet(rows: list[SheetRow], sheet_uri: str, storage_options: dict | None = None,
               thumb: int = 128) -> Image.Image:
    """Write the captioned sheet as one PNG: a header, then one row per item. Returns the
    sheet, so a report can embed it (``data_url``) without reading it back from storage.

    Each row is ``thumb + CAPTION_PX + PAD`` px high: its pictures at the top of their
    ``thumb``-wide cells (light grey where the item has none, as high as its pictures), the
    caption directly under the tallest of them (`fit_caption`: a long id is elided, never the
    figures)."""
    opts = storage_options or {}
    font = ImageFont.load_default()
    panels = shown_panels(rows)
    width = PAD + len(panels) * (thumb + PAD)
    row_h = thumb + CAPTION_PX + PAD
    sheet = Image.new("RGB", (width, CAPTION_PX + PAD + len(rows) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(panels):
        draw.text((PAD + k * (thumb + PAD), 2), name, fill=(0, 0, 0), font=font)
    top = CAPTION_PX + PAD
    for row in rows:
        tiles = [_tile(getattr(row, panel), thumb, opts) for panel in panels]
        height = max((t.height for t in tiles if t is not None), default=thumb)
        for k, tile in enumerate(tiles):
            left = PAD + k * (thumb + PAD)
            if tile is None:
                sheet.paste(Image.new("RGB", (thumb, height), GREY), (left, top))
            else:
                sheet.paste(tile, (left + (thumb - tile.width) // 2, top))
        draw.text((PAD, top + height + 2), fit_caption(row.caption, font, width - 2 * PAD),
                  fill=(0, 0, 0), font=font)
        top += row_h
    buffer = _png_bytes(sheet)
    storage.write_bytes_atomic(sheet_uri, buffer, **opts)
    return sheet


def data_url(image: Image.Image, max_bytes: int = 600_000) -> str:
    """The image as a ``data:image/jpeg;base64,...`` URL of at most ``max_bytes``.

    The Prefect UI shows an image artifact by putting its URL in an ``<img>`` tag: a browser
    cannot open the ``file://`` path of a local run (nor an ``s3://`` one), so the run's sheet
    travels inside the artifact. JPEG at quality 85, halved until it fits the budget: the
    artifact lives in the Prefect database, one per run (a full 16-item sheet is ~0.5 MB)."""
    import base64
    import io

    while True:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=85)
        encoded = base64.b64encode(out.getvalue()).decode("ascii")
        url = f"data:image/jpeg;base64,{encoded}"
        if len(url) <= max_bytes or min(image.size) < 64:
            return url
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)


def _png_bytes(image: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def low_confidence(records: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Rows for the ``warp-low-confidence`` artifact: every item whose confidence is under
    ``threshold`` or whose field was replaced by the fallback, with its figures."""
    rows = []
    for r in sorted(records, key=lambda r: str(r["id"])):
        confidence = r.get("warp_confidence")
        if confidence is None or not (confidence < threshold or fell_back(r)):
            continue
        rows.append({"id": r["id"], "warp_confidence": round(confidence, 3),
                     "warp_applied": r.get("warp_applied"),
                     "warp_fold_frac": r.get("warp_fold_frac"),
                     "warp_stretch_frac": r.get("warp_stretch_frac"),
                     "warp_melt": r.get("warp_melt"),
                     "warp_mean_px": r.get("warp_mean_px"), "content": r.get("content"),
                     "geometry": r.get("geometry")})
    return rows


def fell_back(record: dict[str, Any]) -> bool:
    """Whether the item's field was replaced by the fallback: what it applied is not the
    warp method its settings asked for."""
    applied = record.get("warp_applied")
    if applied is None:
        return False
    method = _method(record)
    return method is not None and applied != method


def _method(record: dict[str, Any]) -> str | None:
    import json

    try:
        return json.loads(record.get("params") or "{}").get("warp_method")
    except ValueError:
        return None
