"""The on-disk (or in-bucket) shape of a stylised dataset, and how a run resumes.

Layout under ``out`` (docs/contracts.md): ``images/<id>.png`` (``.jpg``, ``.webp``: the
``image_format`` setting, `lwst.item_files`), ``warped/<id>.png``,
``flow/<id>.flo``, ``flow_vis/<id>.png``, ``metadata/run-<run_id>.parquet`` and
``reports/contact_sheet-<run_id>.png``.

Resuming: an item is done when every file it should have exists and its ``ok`` row was
recorded; which files those are is `lwst.item_files`' one rule, the same the writer follows.
Files are written atomically and in a fixed order (flow, warped, flow picture, image, then the
journal row), so a run killed at any instant leaves each item either complete or visibly
incomplete, never half-written.

Metadata: as each item finishes, its row is written to ``metadata/_journal/<run_id>/<id>.parquet``
(pyarrow and pandas skip ``_``-prefixed folders when reading the dataset). At the end of a run
the journal becomes one ``metadata/run-<run_id>.parquet`` file and is deleted; a run killed with
``kill -9`` leaves its journal, which the next run consolidates first. The per-run file name is
deterministic, so consolidating twice overwrites rather than duplicates. Every file is read with
`lwst.metadata.SCHEMA` (`read_metadata`: Arrow; `read_metadata_frame`: pandas, for users), so
files an older lwst wrote, with fewer columns, read alongside new ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from lwst import item_files, storage
from lwst.config import StylizeConfig, did_you_mean, to_params
from lwst.errors import InputError
from lwst.failures import one_line as one_line  # also where tasks/ and flows/ find it
from lwst.item_files import JOURNAL, item_outputs
from lwst.item_files import ItemOutputs as ItemOutputs  # where callers have long found it
from lwst.manifest import ManifestItem
from lwst.metadata import COLUMNS, SCHEMA, conform, empty_record, to_table

if TYPE_CHECKING:
    import pandas as pd


def warp_estimate_uri(out: str, run_id: str, item_id: str) -> str:
    """Scratch place of an item's batched warp estimate (removed when its run ends)."""
    return storage.join(out, "_work", run_id, f"{item_id}.flo")


def remove_run_scratch(out: str, run_id: str, storage_options: dict[str, Any]) -> None:
    """Delete a run's ``_work/<run_id>`` scratch folder, if any."""
    uri = storage.join(out, "_work", run_id)
    fs = storage.filesystem(uri, **storage_options)
    path = storage.local_path(uri) if storage.is_local(uri) else uri
    if fs.exists(str(path)):
        fs.rm(str(path), recursive=True)
    _remove_if_empty(storage.join(out, "_work"))


def _remove_if_empty(folder: str) -> None:
    """Drop a local scratch parent once its last run folder is gone (S3 has no folders)."""
    if storage.is_local(folder):
        with contextlib.suppress(OSError):  # not empty (another run's), or already gone
            storage.local_path(folder).rmdir()


def expects_warp(item: ManifestItem, config: StylizeConfig) -> bool:
    """Whether ``item`` warps under ``config`` (`lwst.item_files.warps`)."""
    return item_files.warps(bool(item.geometry), config)


def list_names(folder: str, storage_options: dict | None = None) -> set[str]:
    """File names directly inside ``folder`` (empty if it does not exist); one listing call."""
    if storage.is_local(folder):
        path = storage.local_path(folder)
        return {p.name for p in path.iterdir() if p.is_file()} if path.is_dir() else set()
    fs = storage.filesystem(folder, **(storage_options or {}))
    fs.invalidate_cache()
    try:
        return {entry.rsplit("/", 1)[-1] for entry in fs.ls(folder, detail=False)}
    except FileNotFoundError:
        return set()
    finally:
        # s3fs keeps every entry's info dict in its listing cache (~1.2 KB each: ~120 MiB for
        # a finished 100 000-item run's images); only the names are needed, so let it go.
        fs.invalidate_cache(folder)


# Settings that never change an item's files: where it ran, whether its losses were measured.
RESULT_NEUTRAL = frozenset({"device", "measure_losses"})
# Compared one way only (`FinishedRows.changes`): on -> off changes no file that is asked for.
SIDE_OUTPUTS = "side_outputs"
# Compared by `lwst.item_files.image_stale` (a PNG's quality is moot), not name by name.
IMAGE_SETTINGS = ("image_format", "image_quality")
# Compared per item (`lwst.item_files.upscale_stale`): a content at least ``size`` is made the
# same either way.
UPSCALE = "upscale"
# What a row recorded before a setting existed was made with (every earlier lwst wrote PNGs,
# at a quality setting that did not exist and changed nothing, and enlarged small contents):
# an old row is compared as that, not skipped as unknown.
RECORDED_BEFORE = {"image_format": "png", "image_quality": 95, "upscale": True}
_INPUTS = ("content", "geometry", "texture")
_STRINGS = pa.dictionary(pa.int32(), pa.string())


class FinishedRows:
    """Per id, what its latest ``ok`` row was made from: its settings (``params``, without
    `RESULT_NEUTRAL`), its input URIs and its image's longest side, so a re-run can tell a
    finished item from one asked for again with other settings or inputs (whose files are
    stale: it is redone).

    Read as dictionary-encoded columns: a 100 000-row dataset's ``params`` (a kilobyte each,
    a handful of distinct values) costs a few MB, not a hundred, and each distinct value is
    parsed once.
    """

    def __init__(self, out: str, storage_options: dict | None = None):
        self.params: list[dict[str, Any] | None] = []
        # id -> (params slot, image's longest side, content, geometry, texture)
        self.rows: dict[str, tuple[int, int | None, str | None, str | None, str | None]] = {}
        self._current: dict[int, tuple[StylizeConfig, dict[str, Any]]] = {}
        self._diffs: dict[tuple[int, int], list[str]] = {}
        if not list_names(storage.join(out, "metadata"), storage_options):
            return
        table = read_metadata(out, storage_options, ["id", "status", "created_at", "params",
                                                      "width", "height", *_INPUTS],
                              dictionary=("params", *_INPUTS))
        table = table.filter(pc.equal(table["status"], "ok")).sort_by("created_at")
        known: dict[str | None, int] = {}
        for batch in table.to_batches():  # later rows (newer) overwrite earlier ones
            params = batch.column("params")
            slots = []
            for text in params.dictionary.to_pylist():
                if text not in known:
                    known[text] = len(self.params)
                    self.params.append(_settings(json.loads(text)) if text else None)
                slots.append(known[text])
            inputs = [(c.dictionary.to_pylist(), c.indices.to_pylist())
                      for c in (batch.column(n) for n in _INPUTS)]
            sides = pc.max_element_wise(batch.column("width"), batch.column("height"),
                                        skip_nulls=False).to_pylist()
            for row, (item_id, p) in enumerate(zip(batch.column("id").to_pylist(),
                                                   params.indices.to_pylist(), strict=True)):
                self.rows[item_id] = (-1 if p is None else slots[p], sides[row], *(
                    None if idx[row] is None else values[idx[row]] for values, idx in inputs))

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.rows

    def changes(self, item: ManifestItem, config: StylizeConfig) -> list[str] | None:
        """What differs between ``item`` under ``config`` and its latest ``ok`` row, as
        ``name old -> new`` lines; ``[]`` when nothing does, None when it has no such row.
        Only settings the row recorded are compared: one that a later lwst added has no old
        value to differ from, but for those whose old value is known (`RECORDED_BEFORE`)."""
        row = self.rows.get(item.id)
        if row is None:
            return None
        slot, side, *inputs = row
        diffs = [f"{name} {was} -> {now}" for name, was, now in
                 zip(_INPUTS, inputs, (item.content, item.geometry, item.texture), strict=True)
                 if was != now]
        key = (slot, id(config))
        recorded = self.params[slot] if slot >= 0 else None
        if key not in self._diffs:
            if id(config) not in self._current:  # the config is kept: its id stays its own
                self._current[id(config)] = (config, _settings(
                    json.loads(json.dumps(to_params(config), default=str))))
            current = self._current[id(config)][1]
            self._diffs[key] = ([] if recorded is None else [
                f"{name} {recorded[name]} -> {current[name]}" for name in recorded
                if name in current and recorded[name] != current[name]
                and name not in (SIDE_OUTPUTS, UPSCALE, *IMAGE_SETTINGS)]) + _image_change(
                    recorded, config)
        return (diffs + self._diffs[key] + _upscale_change(recorded, side, config)
                + _side_outputs_change(recorded, item, config))


def _upscale_change(recorded: dict[str, Any] | None, made_side: int | None,
                    config: StylizeConfig) -> list[str]:
    """``upscale True -> False`` (or back) where the item's image would differ now
    (`lwst.item_files.upscale_stale`, from its row's image size ``made_side``); a row made at
    another size is redone for that."""
    was = recorded or RECORDED_BEFORE  # a recorded row's settings hold RECORDED_BEFORE's keys
    side = made_side if was.get("size") == config.size else None
    if not item_files.upscale_stale(was[UPSCALE], config.upscale, config.size, side):
        return []
    return [f"{UPSCALE} {was[UPSCALE]} -> {config.upscale}"]


def _image_change(recorded: dict[str, Any] | None, config: StylizeConfig) -> list[str]:
    """``image_format png -> jpeg`` (or ``image_quality 95 -> 80`` of a JPEG or WebP) where
    the item's image was written otherwise than asked now (`lwst.item_files.image_stale`)."""
    was = {**RECORDED_BEFORE, **(recorded or {})}
    old = (was["image_format"], was["image_quality"])
    new = (config.image_format, config.image_quality)
    if not item_files.image_stale(old, new):
        return []
    which = 0 if old[0] != new[0] else 1  # the format, else the quality
    return [f"{IMAGE_SETTINGS[which]} {old[which]} -> {new[which]}"]


def _side_outputs_change(recorded: dict[str, Any] | None, item: ManifestItem,
                         config: StylizeConfig) -> list[str]:
    """``side_outputs False -> True`` where the item warps, its row (settings ``recorded``) was
    made without side outputs and they are asked for now (`lwst.item_files.side_outputs_stale`);
    the other way round is no change: its files are a superset of what is asked."""
    was = True if recorded is None else recorded.get(SIDE_OUTPUTS, True)  # older: written
    if expects_warp(item, config) and item_files.side_outputs_stale(was, config.side_outputs):
        return [f"{SIDE_OUTPUTS} {was} -> {config.side_outputs}"]
    return []


def _settings(params: dict[str, Any]) -> dict[str, Any]:
    """A row's recorded settings that shape its files, those it predates as they were then
    (`RECORDED_BEFORE`)."""
    return {k: v for k, v in {**RECORDED_BEFORE, **params}.items() if k not in RESULT_NEUTRAL}


class CompletedOutputs:
    """A snapshot of which items are done, taken with five listings and one metadata read
    instead of 4N lookups.

    Done is `lwst.item_files.is_complete` (every file the item writes exists *and* its ``ok``
    metadata row was recorded) with the row made from the same settings and inputs
    (`FinishedRows.changes`); an item whose row differs is not done: its files are stale.
    ``side_outputs`` differs only from off to on (`lwst.item_files.side_outputs_stale`), the
    image's format and quality as `lwst.item_files.image_stale` says.
    """

    def __init__(self, out: str, storage_options: dict | None = None,
                 finished: FinishedRows | None = None):
        """``finished``: the metadata's rows, where the caller has read them already."""
        self.names = {folder: list_names(storage.join(out, folder), storage_options)
                      for folder in item_files.FOLDERS}
        self.finished = FinishedRows(out, storage_options) if finished is None else finished

    def is_complete(self, item: ManifestItem, config: StylizeConfig) -> bool:
        return self.changes(item, config) == [] and self.files_complete(item, config)

    def files_complete(self, item: ManifestItem, config: StylizeConfig) -> bool:
        """Every file the item writes exists and it has an ``ok`` row, whatever it was made
        from (for a caller that has its `changes` already)."""
        return item_files.is_complete(item.id, expects_warp(item, config), config.side_outputs,
                                      self.names, self.finished, config.image_format)

    def changes(self, item: ManifestItem, config: StylizeConfig) -> list[str] | None:
        """`FinishedRows.changes`: what a finished item was made from that differs now."""
        return self.finished.changes(item, config)


def failed_record(item: ManifestItem, run_id: str, error: str, params: str | None = None,
                  kind: str = "input", renderer: str | None = None) -> dict:
    """The row of an item that failed; ``kind`` is whose fault it was (`lwst.failures`),
    ``renderer`` the one it asked for (failures group by renderer like ``ok`` rows)."""
    record = empty_record(item.id, run_id)
    record.update(status="failed", error=one_line(error), content=item.content,
                  geometry=item.geometry, texture=item.texture, params=params, error_kind=kind,
                  renderer=renderer, label=item.label)
    return record


def skipped_record(item: ManifestItem, run_id: str, out: str, params: str | None = None,
                   image_format: str = "png") -> dict:
    """The row of an item found finished, with the settings it was (and would be) made with;
    ``output`` is its image, in the ``image_format`` it was found in."""
    outputs = item_outputs(out, item.id, image_format)
    record = empty_record(item.id, run_id)
    record.update(status="skipped", content=item.content, geometry=item.geometry,
                  texture=item.texture, output=outputs.image, params=params, label=item.label)
    return record


SHEET_FIGURES = ("warp_confidence", "warp_applied", "warp_refined", "warp_fold_frac")


def latest_figures(out: str, ids: list[str], storage_options: dict | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Per id, the warp figures of its latest ``ok`` row: what a skipped item's contact-sheet
    caption shows (its own row carries none: nothing was computed this run). Reads only these
    columns, for a sheet's handful of ids."""
    if not ids or not list_names(storage.join(out, "metadata"), storage_options):
        return {}
    table = read_metadata(out, storage_options, ["id", "status", "created_at", *SHEET_FIGURES])
    wanted = pc.and_(pc.equal(table["status"], "ok"), pc.is_in(table["id"], pa.array(ids)))
    rows = table.filter(wanted).sort_by("created_at").to_pylist()
    return {row["id"]: {name: row[name] for name in SHEET_FIGURES} for row in rows}


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def journal_dir(out: str, run_id: str) -> str:
    return storage.join(out, "metadata", JOURNAL, run_id)


def write_journal(out: str, records: dict[str, Any] | list[dict[str, Any]],
                  storage_options: dict | None = None) -> None:
    """Persist finished items' rows now, so a killed run loses no measurements.

    One file per call, named after its first item: a chunk task journals its items together
    (one write per chunk, not per item, which is what keeps 100 000-item runs cheap).
    """
    rows = [records] if isinstance(records, dict) else list(records)
    if not rows:
        return
    uri = item_files.journal_uri(out, rows[0]["run_id"], rows[0]["id"])
    storage.write_bytes_atomic(uri, _parquet_bytes(to_table(rows)), **(storage_options or {}))


def journalled_rows(out: str, run_id: str, ids: list[str],
                    storage_options: dict | None = None) -> dict[str, dict[str, Any]]:
    """Per id among ``ids``, the row run ``run_id`` journalled for it so far (none: absent).

    What a task wrote before its task runner failed it: one lookup per id whose row is not yet
    found (a chunk's rows are all in its first item's file, `write_journal`)."""
    opts = storage_options or {}
    wanted, found = set(ids), {}
    for item_id in ids:
        if item_id in found:
            continue
        try:
            data = storage.read_bytes(item_files.journal_uri(out, run_id, item_id), **opts)
        except FileNotFoundError:
            continue
        rows = conform(pq.read_table(io.BytesIO(data))).to_pylist()
        found.update((r["id"], r) for r in rows if r["id"] in wanted and r["run_id"] == run_id)
    return found


def run_metadata_uri(out: str, run_id: str) -> str:
    return storage.join(out, "metadata", f"run-{run_id}.parquet")


def write_run_metadata(out: str, run_id: str, records: list[dict[str, Any]],
                       storage_options: dict | None = None) -> str:
    """One Parquet file per run, one row per item; replaces the run's journal."""
    rows = {r["id"]: r for r in records}  # one row per item per run, whatever happened
    table = to_table(sorted(rows.values(), key=lambda r: r["id"]))
    return _write_run_file(out, run_id, _parquet_bytes(table), storage_options)


def publish_run_file(out: str, run_id: str, path: Path, storage_options: dict | None = None
                     ) -> str:
    """Put a run's finished Parquet file (`lwst.run_records.RunRecords.finish`) in place as its
    metadata file."""
    return _write_run_file(out, run_id, path.read_bytes(), storage_options)


def _write_run_file(out: str, run_id: str, parquet: bytes, storage_options: dict | None) -> str:
    """A run's Parquet file (one row per item, `SCHEMA`), written atomically; removes its
    journal, whose rows it holds."""
    uri = run_metadata_uri(out, run_id)
    storage.write_bytes_atomic(uri, parquet, **(storage_options or {}))
    _remove_tree(journal_dir(out, run_id), storage_options)
    _remove_if_empty(storage.join(out, "metadata", JOURNAL))
    return uri


def recover_journals(out: str, storage_options: dict | None = None) -> list[str]:
    """Turn journals left by killed runs into their per-run Parquet files; returns their run ids."""
    root = storage.join(out, "metadata", JOURNAL)
    recovered = []
    for run_id in sorted(_list_dirs(root, storage_options)):
        folder = journal_dir(out, run_id)
        parts = [pq.read_table(io.BytesIO(storage.read_bytes(storage.join(folder, name),
                                                               **(storage_options or {}))))
                 for name in sorted(list_names(folder, storage_options))
                 if name.endswith(".parquet")]
        existing = run_metadata_uri(out, run_id)
        if storage.exists(existing, **(storage_options or {})):
            parts.insert(0, pq.read_table(io.BytesIO(storage.read_bytes(
                existing, **(storage_options or {})))))
        if parts:
            records = pa.concat_tables([conform(p) for p in parts]).to_pylist()
            write_run_metadata(out, run_id, records, storage_options)
        else:
            _remove_tree(folder, storage_options)
        recovered.append(run_id)
    return recovered


def read_metadata(out: str, storage_options: dict | None = None,
                  columns: list[str] | None = None, dictionary: tuple[str, ...] = ()
                  ) -> pa.Table:
    """Every run's rows as one Arrow table (the journal is not part of the dataset);
    ``dictionary``: string columns to keep dictionary-encoded, as they are stored."""
    folder = storage.join(out, "metadata")
    schema = pa.schema([pa.field(f.name, _STRINGS) if f.name in dictionary else f
                        for f in SCHEMA])
    fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(
        dictionary_columns=list(dictionary)))
    if storage.is_local(folder):
        return pads.dataset(str(storage.local_path(folder)), format=fmt,
                            schema=schema).to_table(columns=columns)
    fs = storage.filesystem(folder, **(storage_options or {}))
    fs.invalidate_cache()
    return pads.dataset(folder.split("://", 1)[1], filesystem=fs, format=fmt,
                        schema=schema).to_table(columns=columns)


def _run_files(folder: str, storage_options: dict | None) -> list[str]:
    """The Parquet files directly in ``folder`` that readers see (not ``.``/``_`` ones)."""
    return [n for n in list_names(folder, storage_options)
            if n.endswith(".parquet") and not n.startswith((".", "_"))]


# The columns `read_metadata_frame(latest=True)` needs to pick each id's row.
_LATEST_KEYS = ("id", "status", "created_at")


def read_metadata_frame(out: str | os.PathLike[str], latest: bool = False, *,
                        columns: list[str] | None = None,
                        storage_options: dict | None = None) -> pd.DataFrame:
    """The metadata of every run under ``out`` (a local folder or an ``s3://`` URI) as a pandas
    DataFrame with every column of `lwst.metadata.SCHEMA`, in its order, whichever lwst wrote
    each file: columns an older lwst did not write are null in its rows.

    ``pd.read_parquet(out + "/metadata")`` is not that: pyarrow takes the first file's schema,
    the oldest run's, so columns added since (``label``, ``render_dtype``, ``warp_melt``, ...)
    vanish from every row; and pandas turns int32 ``width``/``height`` into float64 and bool
    ``warp_refined`` into object once a failed row has nulls there. Here they are ``Int32``
    and ``boolean`` (nullable); floats are float64 (null: NaN), ``created_at`` UTC.

    ``latest``: one row per id, its latest that is not ``skipped`` (a ``skipped`` row only
    says the item was found finished; an id with nothing else keeps its latest ``skipped``
    row), sorted by id: so an item that failed and was then redone is ``ok``, and
    ``meta[meta.status == "failed"]`` lists only the items still failed. Otherwise one row per
    item per run, as stored. ``columns``: only these (``latest`` still picks rows by id,
    status and time). ``storage_options``: for a remote ``out``, as `read_metadata` takes
    them. An ``out`` with no run metadata is an `lwst.errors.InputError` naming it.
    """
    import pandas as pd

    # Nullable integers and booleans: an int32 column stays integers and a bool column booleans
    # with a failed row's nulls among them (pandas' defaults make them float64 and object).
    # Floats stay float64 (null: NaN); strings and timestamps get pandas' defaults.
    nullable = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
                pa.bool_(): pd.BooleanDtype()}
    out = os.fspath(out)
    wanted = list(COLUMNS) if columns is None else list(columns)
    for name in wanted:
        if name not in COLUMNS:
            hint = did_you_mean(name, COLUMNS) or "see lwst.metadata.COLUMNS"
            raise InputError(f"read_metadata_frame: no metadata column {name!r} ({hint})")
    if not _run_files(storage.join(out, "metadata"), storage_options):
        hint = ("give the run's output folder, not its metadata folder"
                if _run_files(out, storage_options) else "a run writes its file when it ends")
        raise InputError(f"{out}: no run metadata (metadata/run-<run_id>.parquet) there ({hint})")
    read = wanted if not latest else [c for c in COLUMNS if c in wanted or c in _LATEST_KEYS]
    table = read_metadata(out, storage_options, read)
    frame = table.to_pandas(types_mapper=nullable.get)
    if latest:
        frame = frame.sort_values("created_at", kind="stable")
        skipped = frame["status"] == "skipped"
        superseded = skipped & frame["id"].isin(frame.loc[~skipped, "id"])
        frame = frame[~superseded].drop_duplicates("id", keep="last").sort_values(
            "id", kind="stable")[wanted]
    return frame.reset_index(drop=True)


OUTPUT_FOLDERS = (*item_files.FOLDERS, "metadata", "reports")


def sweep_temp_files(out: str) -> int:
    """Delete temp files a killed run left locally (object stores have none: single PUTs).

    Only lwst's own names (`lwst.storage.is_temp_name`) in the folders lwst writes are touched;
    a user's ``.notes.tmp`` anywhere under ``out`` stays. Call it holding the run lock
    (`lwst.run_lock`): then no other run is writing there.
    """
    if not storage.is_local(out):
        return 0
    root = storage.local_path(out)
    folders = [root / name for name in OUTPUT_FOLDERS]
    journals = root / "metadata" / JOURNAL
    if journals.is_dir():
        folders += [p for p in journals.iterdir() if p.is_dir()]
    stale = [p for folder in folders if folder.is_dir() for p in folder.iterdir()
             if storage.is_temp_name(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def remove_stale_scratch(out: str, storage_options: dict[str, Any]) -> list[str]:
    """Delete the ``_work/<run>/`` scratch of every earlier run (killed ones leave theirs);
    call it holding the run lock. Returns the run ids whose scratch was removed."""
    runs = _list_dirs(storage.join(out, "_work"), storage_options)
    for run_id in runs:
        remove_run_scratch(out, run_id, storage_options)
    return sorted(runs)


def _list_dirs(folder: str, storage_options: dict | None) -> list[str]:
    if storage.is_local(folder):
        path = storage.local_path(folder)
        return [p.name for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
    fs = storage.filesystem(folder, **(storage_options or {}))
    fs.invalidate_cache()
    try:
        entries = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return []
    return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"]


def _remove_tree(folder: str, storage_options: dict | None) -> None:
    if storage.is_local(folder):
        # rmtree: whatever is in there (a stray folder too) must not fail the run's last step.
        shutil.rmtree(storage.local_path(folder), ignore_errors=True)
        return
    fs = storage.filesystem(folder, **(storage_options or {}))
    fs.invalidate_cache()
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
