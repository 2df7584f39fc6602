"""Which files one item writes and when it is complete: the one rule (contracts.md).

An item always writes its image. When it warps (`warps`: a geometry exemplar, a warp method
other than ``none`` and a strength above 0) and its ``side_outputs`` setting is on (the
default) it also writes its warped content, its flow and a colour picture of that flow: the
side outputs, which an augmentation dataset can do without (~1.5 MB per 512-px item). Then its
metadata row goes into the run's journal; it carries the warp figures either way.
`lwst.stylize.write_item` writes exactly `kinds` (in that order, image last, all or none) and
`lwst.dataset.CompletedOutputs` calls an item done when those same files exist and its ``ok``
row was recorded. Both ask this module, so the writer and the resume check cannot drift apart.

Toggling ``side_outputs`` between runs never changes an item's image, so: an item finished
with its side outputs stays finished when they are no longer asked for (its files stay), and
one finished without them is redone when they are asked for again (`side_outputs_stale`).

The image is ``images/<id>.png``, ``.jpg`` or ``.webp`` as its ``image_format`` setting says
(`image_suffix`); the side outputs stay PNG. An item finished in one format is redone when
another is asked for, or another quality of a lossy one (`image_stale`): the resume check
looks for the file of the format asked, and its row's recorded settings must match. The
metadata ``output`` column names the file each row made.

An item that is written (redone, or first written where an earlier run left files) has its
files replaced: once its new files are in place, the writer removes the item's other files an
earlier run made that this write did not (`stale_files`): side outputs it no longer writes
(``side_outputs`` off, no warp any more) and its image in another format. Only names this
module lays out for that id are candidates (`laid_out`), and only those the run's resume
listing found (`found_files`, carried on `ItemOutputs.found`), so a fresh item costs no extra
request. A crash in between leaves the new files beside the old, never fewer than a finished
item's; its row is not journalled yet, so the next run redoes it. An item found finished is
not written, so its files stay as they are (its side files too when they are no longer asked).
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import dataclass

from lwst import storage
from lwst.config import StylizeConfig

# Folder and suffix of each kind of file, in write order. The image comes last because it is
# what people look for: if it is there, everything before it is too. The image's suffix is its
# format's (`image_suffix`); ``.png`` here is the default's.
LAYOUT: dict[str, tuple[str, str]] = {
    "flow": ("flow", ".flo"),
    "warped": ("warped", ".png"),
    "flow_vis": ("flow_vis", ".png"),
    "image": ("images", ".png"),
}
# The suffix of each ``image_format`` (every one of `lwst.config.IMAGE_FORMATS`): the resume
# check looks for exactly this name. `lwst.image_io.output_format` reads them back.
IMAGE_SUFFIXES: dict[str, str] = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
# Formats whose bytes depend on ``image_quality``; a PNG is the same file at any quality.
LOSSY_FORMATS = frozenset({"jpeg", "webp"})
FOLDERS = tuple(folder for folder, _ in LAYOUT.values())
JOURNAL = "_journal"  # metadata/_journal/<run_id>/<id>.parquet; readers skip "_" folders


def warps(has_geometry: bool, config: StylizeConfig) -> bool:
    """Whether the geometric stage runs, so whether the item has a warped image, a flow and a
    flow picture."""
    return has_geometry and config.warp.method != "none" and config.warp.strength > 0


def kinds(warped: bool, side_outputs: bool) -> tuple[str, ...]:
    """The kinds of file an item writes, in write order (keys of `LAYOUT`): the side outputs
    only when it warped and they are asked for (`StylizeConfig.side_outputs`)."""
    return tuple(LAYOUT) if warped and side_outputs else ("image",)


def side_outputs_stale(recorded: bool, wanted: bool) -> bool:
    """Whether an item whose finished row was made with ``side_outputs`` = ``recorded`` must be
    redone now that it is ``wanted``: only when they are asked for and its run wrote none.
    Side files found on disk then may be an earlier run's, made with other settings, so the
    item is redone rather than declared finished from them. Asked for no longer: it is done."""
    return wanted and not recorded


def image_suffix(kind: str, image_format: str = "png") -> str:
    """The suffix of an item's file of ``kind`` (`LAYOUT`): the image's follows its
    ``image_format``, the side outputs' never do."""
    return IMAGE_SUFFIXES[image_format] if kind == "image" else LAYOUT[kind][1]


def image_stale(recorded: tuple[str, int], wanted: tuple[str, int]) -> bool:
    """Whether an item whose image was written as ``recorded`` (``image_format``,
    ``image_quality``) must be redone for ``wanted``: another format, or the same lossy format
    at another quality. A PNG's quality is moot, so changing it redoes nothing."""
    (was_format, was_quality), (format_, quality) = recorded, wanted
    return was_format != format_ or (format_ in LOSSY_FORMATS and was_quality != quality)


def upscale_stale(recorded: bool, wanted: bool, size: int, made_side: int | None) -> bool:
    """Whether an item whose image was made at ``size`` with ``upscale`` = ``recorded`` must be
    redone for ``wanted``. A content at least ``size`` on its longest side is made at ``size``
    either way, the same pixels; only a smaller one differs (enlarged with upscale on, kept at
    its own size off). Made with upscale off, the image's own longest side (``made_side``, its
    row's ``width``/``height``) tells which it was: under ``size``, a smaller content. Made
    with it on, the image is at ``size`` whatever the content, and its row does not hold the
    content's size: it is redone."""
    if recorded == wanted:
        return False
    return recorded or made_side is None or made_side < size


@dataclass(frozen=True)
class ItemOutputs:
    """Where one item's files go. ``id`` was validated by `lwst.manifest`, so it cannot play
    path tricks."""

    image: str
    warped: str
    flow: str
    flow_vis: str
    # The item's lwst-made files an earlier run left (`found_files`, from the resume listing):
    # what its write replaces. Empty for a fresh item, and where nobody listed (the API).
    found: tuple[str, ...] = ()

    def files(self, warped: bool, side_outputs: bool) -> dict[str, str]:
        """``kind -> uri`` of the files the item writes, in write order (`kinds`)."""
        return {kind: getattr(self, kind) for kind in kinds(warped, side_outputs)}

    def paths(self) -> dict[str, str]:
        """``kind -> uri`` of every kind (`LAYOUT`), written or not: what the safety checks
        compare with the inputs."""
        return {kind: getattr(self, kind) for kind in LAYOUT}


def item_outputs(out: str, item_id: str, image_format: str = "png") -> ItemOutputs:
    """Where the item ``item_id`` of the dataset under ``out`` writes its files, its image in
    ``image_format``."""
    return ItemOutputs(**{kind: storage.join(out, folder,
                                             item_id + image_suffix(kind, image_format))
                          for kind, (folder, _) in LAYOUT.items()})


def laid_out(item_id: str) -> tuple[tuple[str, str], ...]:
    """``(folder, name)`` of every file lwst may have made for ``item_id``: each side output
    and the image in every format (`IMAGE_SUFFIXES`). The only names a write ever removes."""
    side = tuple((folder, item_id + suffix) for kind, (folder, suffix) in LAYOUT.items()
                 if kind != "image")
    folder = LAYOUT["image"][0]
    return (*side, *((folder, item_id + suffix) for suffix in IMAGE_SUFFIXES.values()))


def found_files(out: str, item_id: str, names: Mapping[str, Collection[str]]
                ) -> tuple[str, ...]:
    """URIs of the item's files (`laid_out`) that the listings ``names`` (file names per
    folder, `lwst.dataset.CompletedOutputs`) hold: what its write may have to replace. No
    request: a fresh folder's empty listing gives ``()``."""
    return tuple(storage.join(out, folder, name) for folder, name in laid_out(item_id)
                 if name in names.get(folder, ()))


def stale_files(found: Iterable[str], written: Collection[str]) -> list[str]:
    """Of an item's files ``found`` before its write (`found_files`), those the write did not
    produce (``written``: its URIs): another run's side outputs, its image in another format.
    The writer removes them once the new files are in place."""
    return [uri for uri in found if uri not in written]


def journal_uri(out: str, run_id: str, item_id: str) -> str:
    """Where the item's metadata row is journalled during run ``run_id``."""
    return storage.join(out, "metadata", JOURNAL, run_id, f"{item_id}.parquet")


def is_complete(item_id: str, warped: bool, side_outputs: bool,
                names: Mapping[str, Collection[str]], recorded_ok: Container[str],
                image_format: str = "png") -> bool:
    """True when every file the item writes (`kinds`, its image in ``image_format``) is listed
    and it has an ``ok`` metadata row; side files not asked for are not looked at, there or
    not, nor is an image of another format.

    ``names``: file names per folder (one listing each, as `lwst.dataset.CompletedOutputs`
    takes them). Without the row the item is redone: a run killed between its last file and its
    journal row must not leave it skipped forever with no row.
    """
    if item_id not in recorded_ok:
        return False
    return all(item_id + image_suffix(kind, image_format) in names.get(LAYOUT[kind][0], ())
               for kind in kinds(warped, side_outputs))
