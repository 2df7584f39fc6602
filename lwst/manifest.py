"""Manifests: the list of items a pipeline run stylises, read and validated here (built from
folders: `lwst.manifest_builder`).

A manifest is CSV, Parquet or JSON Lines, local or on any fsspec filesystem, one row per item
(docs/contracts.md). It is checked as a whole before any work starts, and every offending row is
reported at once, because a user fixing a 10 000-row file one error per run would give up.
Relative paths are resolved against the manifest's own location so a manifest can travel with
its images (a folder, a bucket prefix).
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lwst import storage
from lwst.config import OVERRIDES, StylizeConfig, did_you_mean, to_params, with_overrides
from lwst.errors import InputError

ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
# Ids name files (``images/<id>.png``, journal rows, temp files with a run id around them): 128
# characters keeps every such name under the 255-byte limit of common filesystems and S3 keys.
MAX_ID_LENGTH = 128
PATH_COLUMNS = ("content", "geometry", "texture")
# ``label``: the item's class (make-manifest: the first folder under the content root), carried
# into the metadata's ``label`` column; lwst itself never reads it.
KNOWN_COLUMNS = ("id", *PATH_COLUMNS, "label", *OVERRIDES)
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}


# Problems a refusal's message lists; the rest are counted (``problems`` keeps them all).
MAX_LISTED = 10


class ManifestError(InputError):
    """A manifest refused as a whole; ``problems`` lists every offending row or column, its
    one-line message the first `MAX_LISTED` of them and how many more there are."""

    def __init__(self, uri: str, problems: Sequence[str]):
        self.uri = uri
        self.problems = list(problems)
        listed = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(listed)
        if more:
            listed.append(f"... and {more} more ({len(self.problems)} problems in all)")
        super().__init__(f"manifest {uri} refused: " + "; ".join(listed))


@dataclass(frozen=True)
class ManifestItem:
    """One row: resolved input URIs and the per-row overrides (flat names, see lwst.config)."""

    id: str
    content: str
    geometry: str | None = None
    texture: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "content": self.content, "geometry": self.geometry,
                "texture": self.texture, "overrides": dict(self.overrides), "label": self.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestItem:
        return cls(data["id"], data["content"], data.get("geometry"), data.get("texture"),
                   dict(data.get("overrides") or {}), data.get("label"))


def manifest_format(uri: str) -> str:
    suffix = Path(uri.split("?")[0]).suffix.lower()
    if suffix not in FORMATS:
        raise ManifestError(uri, [f"unknown manifest format {suffix or '(none)'!r}; use "
                                  ".csv, .parquet or .jsonl"])
    return FORMATS[suffix]


def read_table(uri: str, storage_options: dict | None = None) -> pd.DataFrame:
    """The raw rows as strings/numbers; empty cells become None.

    For the text formats (CSV, JSON Lines) ``frame.attrs["lines"]`` holds each row's line in
    the file, so a refusal names the line an editor shows (blank lines and quoted line breaks
    counted)."""
    kind = manifest_format(uri)
    try:
        # read_bytes refuses a FIFO or device (which would hang or never end) and huge files.
        data = storage.read_bytes(uri, **(storage_options or {}))
        with io.BytesIO(data) as handle:
            if kind == "csv":
                frame = pd.read_csv(handle, dtype=str, keep_default_na=False, skipinitialspace=True)
                frame = frame.replace({"": None})
            elif kind == "parquet":
                frame = pd.read_parquet(handle)
            else:
                frame = pd.read_json(handle, lines=True, dtype=False)
    except FileNotFoundError:
        raise ManifestError(uri, ["no such file"]) from None
    except IsADirectoryError:
        raise ManifestError(uri, ["is a directory"]) from None
    except storage.InputRefusedError as exc:
        raise ManifestError(uri, [str(exc).removeprefix(f"{uri}: ")]) from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        if isinstance(exc, ManifestError):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ManifestError(uri, [f"cannot parse as {kind}: {reason}"]) from None
    lines = _row_lines(data, kind)
    frame = frame.astype(object).where(frame.notna(), None)
    if lines is not None and len(lines) == len(frame):
        frame.attrs["lines"] = lines
    return frame


def _row_lines(data: bytes, kind: str) -> list[int] | None:
    """The file line each data row starts on, skipping what pandas skips (blank lines); None
    for Parquet or text that does not decode."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if kind == "jsonl":
        return [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if kind != "csv":
        return None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    starts: list[int] = []
    previous = 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if record and not (len(record) == 1 and not record[0].strip()):
                starts.append(start)
    except csv.Error:
        return None
    return starts[1:]  # the first is the header


def base_location(uri: str) -> str:
    """The folder (or prefix) relative paths in the manifest ``uri`` are resolved against."""
    if storage.is_local(uri):
        return str(storage.local_path(uri).resolve().parent)
    return uri.rsplit("/", 1)[0]


def resolve_path(entry: str, base: str) -> str:
    """``entry`` made absolute: URIs and absolute paths unchanged, the rest joined to ``base``."""
    if "://" in entry or entry.startswith("/"):
        return entry
    if storage.is_local(base):
        return os.path.normpath(os.path.join(base, entry))
    scheme, rest = base.split("://", 1)
    return f"{scheme}://{posixpath.normpath(posixpath.join(rest, entry))}"


def id_problem(item_id: Any) -> str | None:
    """Why ``item_id`` cannot name output files, or None. Ids become file names under ``--out``."""
    if item_id is None or str(item_id).strip() == "":
        return "missing id"
    text = str(item_id)
    if len(text) > MAX_ID_LENGTH:
        return f"id {text[:20]!r}... is {len(text)} characters, over the {MAX_ID_LENGTH} limit"
    if not ID_PATTERN.fullmatch(text):
        return f"id {text!r} has characters outside [A-Za-z0-9._-]"
    if text.startswith("."):
        # '.', '..' and hidden names would alias directories or temp files in the output tree.
        return f"id {text!r} may not start with '.'"
    return None


def validate_table(frame: pd.DataFrame, uri: str) -> list[ManifestItem]:
    """Check every row and column; return the items or raise `ManifestError` listing every
    problem found in one pass: columns and rows together. Rows are named by their line in the
    file (``frame.attrs["lines"]``, set by `read_table` for CSV and JSON Lines), else by their
    number (Parquet: ``row 1`` is the first)."""
    problems: list[str] = []
    columns = [str(c) for c in frame.columns]
    missing = [name for name in ("id", "content") if name not in columns]
    if missing:
        problems.append("missing required column(s) " + ", ".join(repr(m) for m in missing))
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    if unknown:
        problems.append(unknown_columns(unknown))
    if frame.empty:
        raise ManifestError(uri, [*problems, "no rows"])
    lines = frame.attrs.get("lines")
    if lines is not None and len(lines) != len(frame):
        lines = None
    unit = "line" if lines is not None else "row"
    base = base_location(uri)
    override_columns = [c for c in frame.columns if c in OVERRIDES]
    defaults = StylizeConfig()
    seen: dict[str, int] = {}
    items: list[ManifestItem] = []
    for index, row in enumerate(frame.to_dict("records")):
        number = lines[index] if lines is not None else index + 1
        for column in PATH_COLUMNS:  # " a.jpg " and "a.jpg" are one file, in every format
            if isinstance(row.get(column), str):
                row[column] = row[column].strip() or None
        where = f"{unit} {number}"
        row_problems: list[str] = []
        reason = id_problem(row["id"]) if "id" in columns else None
        if reason:
            row_problems.append(reason)
        elif "id" in columns:
            item_id = str(row["id"])
            where = f"{unit} {number} (id {item_id!r})"
            if item_id in seen:
                row_problems.append(f"duplicate id (first used on {unit} {seen[item_id]})")
            else:
                seen[item_id] = number
        if "content" in columns and not row.get("content"):
            row_problems.append("missing content")
        label, reason = _label(row.get("label"))
        if reason:
            row_problems.append(reason)
        overrides = {c: _plain(row[c]) for c in override_columns if _plain(row[c]) is not None}
        for name, value in overrides.items():
            try:
                typed_overrides(defaults, {name: value})
            except (ValueError, TypeError) as exc:
                row_problems.append(f"bad {name} {value!r}: {exc}")
        if not row_problems:
            try:
                overrides = typed_overrides(defaults, overrides)
            except (ValueError, TypeError) as exc:
                row_problems.append(f"bad overrides: {exc}")
        if row_problems:
            problems.extend(f"{where}: {p}" for p in row_problems)
            continue
        if problems:
            continue  # refused anyway: no need to build the item
        paths = {c: resolve_path(str(row[c]), base) if row.get(c) else None for c in PATH_COLUMNS}
        items.append(ManifestItem(str(row["id"]), paths["content"], paths["geometry"],
                                  paths["texture"], overrides, label))
    if problems:
        raise ManifestError(uri, problems)
    return items


def unknown_columns(unknown: Sequence[str]) -> str:
    """``unknown column(s) 'textur' (did you mean 'texture'?)``, as the overrides say it
    (`lwst.config.unknown_override`); the allowed columns when a name is like none of them."""
    named, unlike = [], False
    for column in unknown:
        hint = did_you_mean(column, KNOWN_COLUMNS)
        named.append(f"{column!r} ({hint})" if hint else repr(column))
        unlike = unlike or not hint
    allowed = f" (allowed: {', '.join(KNOWN_COLUMNS)})" if unlike else ""
    return "unknown column(s) " + ", ".join(named) + allowed


def _label(value: Any) -> tuple[str | None, str | None]:
    """A ``label`` cell as text (None when empty), or why it is refused: a class name or
    number, never a list or a float (Parquet and JSON Lines carry types; CSV is all text)."""
    value = _plain(value)
    if value is None:
        return None, None
    if isinstance(value, str):
        return value.strip() or None, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return None, f"bad label {value!r}: must be text or a whole number"


def typed_overrides(base: StylizeConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides checked against the config and converted to their field types (CSV gives text).

    Raises ``ValueError`` with a one-line reason for a value the config refuses.
    """
    if isinstance(overrides.get("style_size"), str):  # its default is None: no type to copy
        overrides = {**overrides, "style_size": int(float(overrides["style_size"]))}
    params = to_params(with_overrides(base, overrides))
    return {k: list(params[k]) if isinstance(params[k], tuple) else params[k] for k in overrides}


def _plain(value: Any) -> Any:
    """numpy scalars -> Python, NaN -> None, so overrides are JSON-friendly flow parameters."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _fingerprint(uri: str, storage_options: dict | None) -> tuple | None:
    """What changes when the file does (local stat; an object's ETag, size and date), or None."""
    try:
        if storage.is_local(uri):
            stat = storage.local_path(uri).stat()
            return (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        fs = storage.filesystem(uri, **(storage_options or {}))
        fs.invalidate_cache()
        info = fs.info(uri)
        return (info.get("ETag"), info.get("size"), str(info.get("LastModified")))
    except Exception:  # noqa: BLE001 - no fingerprint: read it again, and report from there
        return None


# The last manifest read, by URI and fingerprint: `lwst run` validates a manifest before it
# starts Prefect, and the flow it starts then uses that parse instead of a second one (a
# 100 000-row manifest takes seconds to validate). A changed file has a new fingerprint.
_last_read: tuple[tuple, list[ManifestItem]] | None = None


def read_manifest(uri: str, storage_options: dict | None = None) -> list[ManifestItem]:
    """Read and validate a manifest; raises `ManifestError` before any work can start."""
    global _last_read
    fingerprint = _fingerprint(uri, storage_options)
    key = (uri, fingerprint)
    if fingerprint is not None and _last_read is not None and _last_read[0] == key:
        return list(_last_read[1])
    items = validate_table(read_table(uri, storage_options), uri)
    if fingerprint is not None:
        _last_read = (key, items)
    return list(items)


def write_manifest(frame: pd.DataFrame, uri: str, storage_options: dict | None = None) -> None:
    """Write a manifest in the format its suffix names, in one atomic write."""
    kind = manifest_format(uri)
    if kind == "csv":
        data = frame.to_csv(index=False).encode()
    elif kind == "parquet":
        data = frame.to_parquet(index=False)
    else:
        data = frame.to_json(orient="records", lines=True).encode()
    storage.write_bytes_atomic(uri, data, **(storage_options or {}))
