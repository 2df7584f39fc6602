"""``lwst export``: a run's flat ``images/<id>.<ext>`` laid out by class as
``DEST/<label>/<id>.<ext>`` (torchvision's ImageFolder layout), and the one reading of the
metadata that says which images belong to which class, shared with
`lwst.stylized_dataset.StylizedImages`.

Which images: per item its latest outcome (`lwst.dataset.read_metadata_frame`, ``latest=True``)
when that is ``ok`` (``statuses``), and only where its image is in ``OUT/images`` (one listing).
The class is the metadata's ``label`` (the manifest's: make-manifest sets the first folder
under the content root); an item without one goes to `UNLABELLED`, a class folder of its own,
so nothing is dropped silently and ImageFolder sees exactly what the Dataset sees.

How: a hard link where OUT and DEST are local (no bytes copied; lwst replaces files, never
writes into them, so a later run cannot change an exported image under the user), a copy
where one is an object store or the hard link fails (another filesystem: a note says so). Every
file lands atomically (a temporary name renamed into place, one PUT on S3), a file already
there with the same content is kept, and a file of a known item at another place (its label or
format changed, or it failed since) is removed: re-running makes DEST match the metadata again.

Registering the command imports no engine: `add_parser` needs argparse only.
"""

from __future__ import annotations

import argparse
import errno
import filecmp
import os
import secrets
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lwst import storage
from lwst.errors import InputError

# The class folder of items without a label (an empty or missing manifest ``label``).
UNLABELLED = "_unlabelled"
LINK_MODES = ("hardlink", "symlink", "copy")
# Statuses an item's latest row may have and still name an image (``failed`` rows name none).
IMAGE_STATUSES = ("ok", "skipped")
# Errors of os.link that a copy gets around: another filesystem, no hard links there, too many.
_NO_HARD_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
_COLUMNS = ["id", "status", "output", "label"]
_WORKERS = 16  # concurrent transfers: S3 copies are latency-bound, one request each


class ExportError(InputError):
    """A refused export (a bad DEST, a label that cannot be a folder, a link mode the storage
    lacks): one line."""


@dataclass(frozen=True)
class LabelledImage:
    """One item's image (``uri``: under ``OUT/images``) and its class."""

    id: str
    uri: str
    label: str

    @property
    def name(self) -> str:
        return self.uri.rsplit("/", 1)[-1]


@dataclass
class Selection:
    """The images of a run's output that a class layout holds, and why the others are not in
    it (``left_out``: ``failed``, ``no image``, or a status not asked for, per item)."""

    images: list[LabelledImage]
    left_out: Counter = field(default_factory=Counter)
    known_ids: frozenset[str] = frozenset()

    @property
    def classes(self) -> list[str]:
        """The class names, sorted as ImageFolder sorts its folders."""
        return sorted({image.label for image in self.images})


def class_of(label: Any) -> str:
    """An item's class: its label, or `UNLABELLED` for none (null or blank)."""
    return label if isinstance(label, str) and label.strip() else UNLABELLED


def select_images(out: str, statuses: tuple[str, ...] = ("ok",),
                  storage_options: dict | None = None) -> Selection:
    """Per item of ``out``'s metadata, its image and class when its latest outcome is one of
    ``statuses`` and the image is there; sorted by (class, file name) as ImageFolder orders."""
    from lwst.dataset import list_names, read_metadata_frame

    for status in statuses:
        if status not in IMAGE_STATUSES:
            raise ExportError(f"status {status!r}: only {' and '.join(IMAGE_STATUSES)} items "
                              "have an image")
    frame = read_metadata_frame(out, latest=True, columns=_COLUMNS,
                                storage_options=storage_options)
    found = list_names(storage.join(out, "images"), storage_options)
    images, left_out = [], Counter()
    for item_id, status, output, label in frame[_COLUMNS].itertuples(index=False, name=None):
        name = output.rsplit("/", 1)[-1] if isinstance(output, str) and output else None
        if status not in statuses:
            left_out[status] += 1
        elif name is None or name not in found:
            left_out["no image"] += 1
        else:
            images.append(LabelledImage(item_id, storage.join(out, "images", name),
                                        class_of(label)))
    images.sort(key=lambda image: (image.label, image.name))
    return Selection(images, left_out, frozenset(frame["id"]))


def check_folder_name(label: str, item_id: str) -> None:
    """Refuse a label that cannot be one folder under DEST (``a/b``, ``..``, too long)."""
    bad = (label in (".", "..") or any(c in label for c in "/\\\0")
           or len(label.encode()) > 255)
    if bad:
        raise ExportError(f"item {item_id!r}: label {label!r} cannot be a class folder name "
                          "(no '/', '\\', '.', '..', at most 255 bytes); fix it in the "
                          "manifest and re-run")


@dataclass
class ExportSummary:
    """What an export did: per image how it got there (``how``), what was left out and why,
    the classes, the stale files removed, and notes (a fallback to copying)."""

    dest: str
    how: Counter
    left_out: Counter
    classes: list[str]
    removed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def exported(self) -> int:
        return sum(self.how.values())

    def line(self) -> str:
        """``3 exported to DEST (2 hard-linked, 1 kept), 1 skipped (1 failed, 0 no image),
        2 classes``."""
        how = ", ".join(f"{n} {what}" for what, n in sorted(self.how.items()) if n)
        reasons = Counter({"failed": 0, "no image": 0, **self.left_out})
        why = ", ".join(f"{n} {what}" for what, n in reasons.items())
        line = (f"{self.exported} exported to {self.dest}" + (f" ({how})" if how else "")
                + f", {sum(self.left_out.values())} skipped ({why}), {len(self.classes)} "
                + ("class" if len(self.classes) == 1 else "classes"))
        if UNLABELLED in self.classes:
            line += f" ({UNLABELLED} holds the items without a label)"
        return line + (f", {self.removed} stale file(s) removed" if self.removed else "")


def check_apart(out: str, dest: str) -> None:
    """Refuse a DEST that is OUT, or inside a folder a run writes (``OUT/images/cat/...`` would
    be read as outputs), or that holds OUT (its class folders could land on OUT's)."""
    from lwst.dataset import OUTPUT_FOLDERS

    out_at, dest_at = storage.location(out), storage.location(dest)
    if storage.within(out_at, dest_at):
        raise ExportError(f"DEST {dest}: is or holds the output folder {out}; name a folder "
                          "beside it")
    for folder in OUTPUT_FOLDERS:
        if storage.within(dest_at, storage.location(storage.join(out, folder))):
            raise ExportError(f"DEST {dest}: is inside the output's {folder}/ folder, which "
                              "lwst run writes; name a folder beside it")


def link_mode(out: str, dest: str, link: str | None) -> str:
    """The mode to place files with: ``link`` as asked, or hardlink where both are local and
    copy where one is not; a link asked for across an object store is refused."""
    local = storage.is_local(out) and storage.is_local(dest)
    if link is None:
        return "hardlink" if local else "copy"
    if link not in LINK_MODES:
        raise ExportError(f"--link {link!r}: one of {', '.join(LINK_MODES)}")
    if link != "copy" and not local:
        raise ExportError(f"--link {link}: needs OUT and DEST on local filesystems; an object "
                          "store takes copies (--link copy, the default there)")
    return link


def _existing(dest: str, storage_options: dict) -> dict[str, int]:
    """``<class>/<name>`` -> size of the files one class folder deep in DEST (none: empty)."""
    if storage.is_local(dest):
        root = storage.local_path(dest)
        if not root.is_dir():
            return {}
        return {f"{folder.name}/{entry.name}": entry.stat(follow_symlinks=False).st_size
                for folder in os.scandir(root) if folder.is_dir(follow_symlinks=False)
                for entry in os.scandir(folder.path) if not storage.is_temp_name(entry.name)
                and (entry.is_file() or entry.is_symlink())}
    fs = storage.filesystem(dest, **storage_options)
    fs.invalidate_cache()
    root = dest.split("://", 1)[1].rstrip("/")
    try:
        found = fs.find(root, maxdepth=2, detail=True)
    except FileNotFoundError:
        return {}
    return {key[len(root) + 1:]: info.get("size") or 0 for key, info in found.items()
            if key.startswith(root + "/") and key[len(root) + 1:].count("/") == 1}


def _temp_beside(target: Path) -> Path:
    """A temporary name in ``target``'s folder that `lwst.storage.is_temp_name` knows."""
    name = f"{storage.TEMP_PREFIX}export-pid{os.getpid()}.{target.name}.{secrets.token_hex(4)}.tmp"
    return target.with_name(name)


def _is_kept(source: Path, target: Path, mode: str) -> bool:
    """Whether ``target`` already is what this mode makes, or a regular file with the same
    content (kept, whatever mode made it)."""
    if target.is_symlink():
        return mode == "symlink" and Path(os.readlink(target)) == source.resolve()
    if not target.is_file():
        return False
    return os.path.samefile(source, target) or filecmp.cmp(source, target, shallow=False)


def _place_local(source: Path, target: Path, mode: str, notes: list[str]) -> str:
    """Put ``source`` at ``target`` (atomically: made under a temporary name, renamed)."""
    if _is_kept(source, target, mode):
        return "kept"
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        storage.write_bytes_atomic(target, storage.read_bytes(source))
        return "copied"
    temp = _temp_beside(target)
    try:
        try:
            if mode == "symlink":
                os.symlink(source.resolve(), temp)
            else:
                os.link(source, temp)
            os.replace(temp, target)
        except BaseException:  # a Ctrl-C too: no temporary file left behind
            temp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        if mode != "hardlink" or exc.errno not in _NO_HARD_LINK:
            raise
        if not notes:  # once (threads racing here may add it twice: deduplicated after)
            notes.append(f"cannot hard-link into {target.parent.parent} ({exc.strerror}: "
                         "another filesystem?); copied instead")
        storage.write_bytes_atomic(target, storage.read_bytes(source))
        return "copied"
    return "symlinked" if mode == "symlink" else "hard-linked"


def _place_remote(source: str, target: str, size: int | None, opts: dict) -> str:
    """Copy ``source`` to ``target`` (one atomic PUT on S3) unless the same bytes are there."""
    data = storage.read_bytes(source, **opts)
    if size == len(data):
        try:
            if storage.read_bytes(target, **opts) == data:
                return "kept"
        except FileNotFoundError:
            pass
    storage.write_bytes_atomic(target, data, **opts)
    return "copied"


def export_images(out: str | os.PathLike[str], dest: str | os.PathLike[str],
                  link: str | None = None, statuses: tuple[str, ...] = ("ok",),
                  storage_options: dict | None = None) -> ExportSummary:
    """Lay ``out``'s images out as ``dest/<class>/<id>.<ext>`` (module docstring: which, how).

    Everything refusable is refused before the first file is placed."""
    out, dest, opts = os.fspath(out), os.fspath(dest), storage_options or {}
    check_apart(out, dest)
    mode = link_mode(out, dest, link)
    selection = select_images(out, tuple(statuses), opts)
    for image in selection.images:
        check_folder_name(image.label, image.id)
    existing = _existing(dest, opts)
    targets = {f"{image.label}/{image.name}": image for image in selection.images}
    notes: list[str] = []

    def place(item: tuple[str, LabelledImage]) -> str:
        key, image = item
        target = storage.join(dest, key)
        if mode == "copy" and not (storage.is_local(out) and storage.is_local(dest)):
            return _place_remote(image.uri, target, existing.get(key), opts)
        return _place_local(storage.local_path(image.uri), storage.local_path(target), mode,
                            notes)

    with ThreadPoolExecutor(min(_WORKERS, max(1, len(targets)))) as pool:
        how = Counter(pool.map(place, targets.items()))
    removed = _remove_stale(dest, existing, targets, selection.known_ids, opts)
    return ExportSummary(dest, how, selection.left_out, selection.classes, removed,
                         list(dict.fromkeys(notes)))  # threads may have said it twice


def _remove_stale(dest: str, existing: dict[str, int], targets: dict, known: frozenset[str],
                  opts: dict) -> int:
    """Remove the files of known items that this export did not place (an item failed since,
    or its label or format changed); anything else in DEST is the user's and stays."""
    stale = [key for key in existing if key not in targets
             and Path(key).suffix.lower() in storage.IMAGE_SUFFIXES
             and key.split("/", 1)[1].rsplit(".", 1)[0] in known]
    for key in stale:
        storage.remove(storage.join(dest, key), **opts)
    return len(stale)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``export`` on the ``lwst`` command."""
    from lwst.cli_pipeline import add_s3_options

    export = subparsers.add_parser(
        "export", help="lay a run's images out by class (ImageFolder) for training",
        description="Write DEST/<label>/<id>.<ext> for every item of OUT whose latest outcome "
        f"is ok (items without a label: DEST/{UNLABELLED}/), for torchvision's ImageFolder. "
        "Hard links where OUT and DEST are local (a copy, with a note, across filesystems), "
        "copies where either is s3://. Re-running places only what changed, keeps identical "
        "files and removes those of items that failed or moved since.")
    export.add_argument("out", metavar="OUT", help="the output folder of lwst run (or s3://)")
    export.add_argument("dest", metavar="DEST", help="the folder to lay the classes out in")
    export.add_argument("--layout", choices=("imagefolder",), default="imagefolder",
                        help="DEST/<label>/<id>.<ext> (the only layout; default)")
    export.add_argument("--link", choices=LINK_MODES, default=None,
                        help="how each image gets there (default: hardlink where both are "
                        "local, copy otherwise)")
    export.add_argument("--status", nargs="+", choices=IMAGE_STATUSES, default=["ok"],
                        help="the latest outcomes exported (default ok; skipped: an item whose "
                        "only rows say it was found finished)")
    add_s3_options(export)
    export.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    import sys

    from lwst.cli_options import check_output_location
    from lwst.cli_pipeline import storage_options_from_args
    from lwst.s3 import check_reachable

    opts = storage_options_from_args(args)
    check_output_location("DEST", args.dest, folder=True)
    for uri in (args.out, args.dest):
        check_reachable(uri, opts)
    summary = export_images(args.out, args.dest, args.link, tuple(args.status), opts)
    for note in summary.notes:
        print(f"lwst export: note: {note}", file=sys.stderr)
    print(summary.line())
    return 0
