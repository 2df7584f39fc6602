"""Which files one item writes and when it is complete: the one rule (contracts.md).

An item always writes its image. When it warps (`warps`: a geometry exemplar, a warp method
other than ``none`` and a strength above 0) it also writes its warped content, its flow and a
colour picture of that flow. Then its metadata row goes into the run's journal.
`lwst.stylize.write_item` writes exactly `kinds` (in that order, image last, all or none) and
`lwst.dataset.CompletedOutputs` calls an item done when those same files exist and its ``ok``
row was recorded. Both ask this module, so the writer and the resume check cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass

from lwst import storage
from lwst.config import StylizeConfig

# Folder and suffix of each kind of file, in write order. The image comes last because it is
# what people look for: if it is there, everything before it is too.
LAYOUT: dict[str, tuple[str, str]] = {
    "flow": ("flow", ".flo"),
    "warped": ("warped", ".png"),
    "flow_vis": ("flow_vis", ".png"),
    "image": ("images", ".png"),
}
FOLDERS = tuple(folder for folder, _ in LAYOUT.values())
JOURNAL = "_journal"  # metadata/_journal/<run_id>/<id>.parquet; readers skip "_" folders


def warps(has_geometry: bool, config: StylizeConfig) -> bool:
    """Whether the geometric stage runs, so whether the item has a warped image, a flow and a
    flow picture."""
    return has_geometry and config.warp.method != "none" and config.warp.strength > 0


def kinds(warped: bool) -> tuple[str, ...]:
    """The kinds of file an item writes, in write order (keys of `LAYOUT`)."""
    return tuple(LAYOUT) if warped else ("image",)


@dataclass(frozen=True)
class ItemOutputs:
    """Where one item's files go. ``id`` was validated by `lwst.manifest`, so it cannot play
    path tricks."""

    image: str
    warped: str
    flow: str
    flow_vis: str

    def files(self, warped: bool) -> dict[str, str]:
        """``kind -> uri`` of the files the item writes, in write order."""
        return {kind: getattr(self, kind) for kind in kinds(warped)}


def item_outputs(out: str, item_id: str) -> ItemOutputs:
    """Where the item ``item_id`` of the dataset under ``out`` writes its files."""
    return ItemOutputs(**{kind: storage.join(out, folder, item_id + suffix)
                          for kind, (folder, suffix) in LAYOUT.items()})


def journal_uri(out: str, run_id: str, item_id: str) -> str:
    """Where the item's metadata row is journalled during run ``run_id``."""
    return storage.join(out, "metadata", JOURNAL, run_id, f"{item_id}.parquet")


def is_complete(item_id: str, warped: bool, names: Mapping[str, Collection[str]],
                recorded_ok: Container[str]) -> bool:
    """True when every file the item writes is listed and it has an ``ok`` metadata row.

    ``names``: file names per folder (one listing each, as `lwst.dataset.CompletedOutputs`
    takes them). Without the row the item is redone: a run killed between its last file and its
    journal row must not leave it skipped forever with no row.
    """
    if item_id not in recorded_ok:
        return False
    return all(item_id + LAYOUT[kind][1] in names.get(LAYOUT[kind][0], ())
               for kind in kinds(warped))
