"""Manifests built from folders of images: ``lwst make-manifest`` and the augment-dataset flow.

Apart from `lwst.manifest` (reading and checking what users write) because building is its own
job with its own rules: ids made from the inputs alone (a grown folder renames nothing),
prefix-stable seeded draws (a larger ``n`` keeps the first triples: a re-run resumes them), and
an output tree never listed as input.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lwst import dataset, item_files, run_lock, storage
from lwst.config import ConfigError
from lwst.errors import InputError
from lwst.manifest import id_problem

# Ids are ``<content>__[<geometry>__]<texture>-<hash>``: the readable parts cut to these many
# characters (40 + 32 + 32 + separators + hash = 117, under `MAX_ID_LENGTH`), the hash of the
# inputs' paths under their folders keeping every id unique whatever was cut.
CONTENT_CHARS = 40
STYLE_CHARS = 32
HASH_CHARS = 8
# A folder holding these beside ``metadata/run-*.parquet`` (or a ``_lwst.lock``) is an lwst
# output tree: its images are outputs, never inputs.
OUTPUT_FOLDERS = (*item_files.FOLDERS, "reports")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Source:
    """One image found in a folder: its URI and its path under that folder. Ids, labels and
    per-content draws key on ``relative``, so they survive moving the folder and do not depend
    on which other files were listed."""

    uri: str
    relative: str

    @property
    def label(self) -> str | None:
        """The first folder under the root (ImageFolder's class), None for a file at the top."""
        head, sep, _ = self.relative.partition("/")
        return head if sep else None


def make_manifest(
    contents: str | Iterable[str],
    styles: str | Iterable[str],
    n: int | None = None,
    seed: int = 0,
    storage_options: dict | None = None,
    *,
    per_content: int | None = None,
    geometry: bool = True,
    exclude: Iterable[str] = (),
) -> pd.DataFrame:
    """Build a manifest (columns id, content, geometry, texture, label) from folders/prefixes
    of content and style images.

    - neither ``n`` nor ``per_content``: every (content, style) pair, the style serving as
      geometry and texture exemplar;
    - ``n=N``: N distinct (content, geometry, texture) triples drawn with ``seed``; the draws
      are prefix-stable, so a larger N keeps the first N triples (and their ids: a re-run
      resumes them);
    - ``per_content=K``: K distinct (geometry, texture) draws for every content, each
      content's keyed by ``seed`` and its path, so adding contents changes no other's draws.

    ``geometry=False``: no geometry exemplar (texture-only augmentation). ``exclude``: folders
    whose files are never listed (the run's ``out``); a content or style folder inside one is
    refused. Ids depend on the inputs only (`item_id`); each is checked with `id_problem`.

    A refused argument is a `ConfigError` (a ValueError) whose message starts with the
    argument's name (``n must be within 1..12``), so the CLI names its option (``--n``).
    """
    if n is not None and per_content is not None:
        raise ConfigError("give n or per_content, not both")
    if int(seed) < 0:
        raise ConfigError(f"seed must be 0 or more, got {seed}", "seed")
    excluded = [storage.location(e) for e in exclude]
    contents, styles = _as_list(contents), _as_list(styles)
    content_files = _gather(contents, "contents", excluded, storage_options)
    style_files = _gather(styles, "styles", excluded, storage_options)
    for role, folders, found in (("contents", contents, content_files),
                                 ("styles", styles, style_files)):
        if not found:
            raise ConfigError(f"{role} {' '.join(folders)}: no images found (none named "
                              f"{', '.join(storage.IMAGE_SUFFIXES)} outside lwst output "
                              "folders)", role)
    n_styles = len(style_files)
    choices = n_styles * n_styles if geometry else n_styles  # (geometry, texture) per content
    triples: list[tuple[Source, Source | None, Source]] = []

    def add(content: Source, choice: int) -> None:
        g, t = divmod(choice, n_styles) if geometry else (None, choice)
        triples.append((content, None if g is None else style_files[g], style_files[t]))

    if n is None and per_content is None:
        for c in content_files:
            for s in style_files:
                triples.append((c, s if geometry else None, s))
    elif per_content is not None:
        if not 1 <= per_content <= choices:
            raise ConfigError(f"per_content must be within 1..{choices} (distinct style draws "
                              f"per content), got {per_content}", "per_content")
        for c in content_files:
            for choice in _draws(int(seed), c.relative, choices, per_content):
                add(c, choice)
    else:
        total = len(content_files) * choices
        if not 1 <= n <= total:
            raise ConfigError(f"n must be within 1..{total} (distinct triples), got {n}", "n")
        for flat in _draws(int(seed), "", total, n):
            c, choice = divmod(flat, choices)
            add(content_files[c], choice)
    rows = [{"id": None, "content": c.uri, "geometry": g.uri if g else None, "texture": t.uri,
             "label": c.label} for c, g, t in triples]
    frame = pd.DataFrame(rows, columns=["id", "content", "geometry", "texture", "label"])
    frame["id"] = _unique_ids(triples)
    return frame


def item_id(content: Source, geometry: Source | None, texture: Source | None,
            full: bool = False) -> str:
    """``<content path>__[<geometry stem>__]<texture stem>-<hash>``, e.g.
    ``cat-001__monet-7e1c2a9b``: readable parts (the geometry's only when it is not the
    texture) cut to `CONTENT_CHARS` / `STYLE_CHARS`, and `HASH_CHARS` hex digits of the inputs'
    paths under their folders (``full``: of their URIs). Within `MAX_ID_LENGTH` always."""
    parts = [_readable(posixpath.splitext(content.relative)[0], CONTENT_CHARS)]
    if geometry is not None and geometry != texture:
        parts.append(_style_part(geometry.relative))
    if texture is not None:
        parts.append(_style_part(texture.relative))
    if full:
        key = f"{content.uri}\0{geometry.uri if geometry else ''}\0{texture.uri if texture else ''}"
    else:
        key = (f"{content.relative}\0{geometry.relative if geometry else ''}\0"
               f"{texture.relative if texture else ''}")
    return "__".join(parts) + "-" + hashlib.sha256(key.encode()).hexdigest()[:HASH_CHARS]


@functools.lru_cache(maxsize=4096)  # styles recur in every row
def _style_part(relative: str) -> str:
    return _readable(posixpath.splitext(relative.rsplit("/", 1)[-1])[0], STYLE_CHARS)


def _unique_ids(triples: list[tuple[Source, Source | None, Source]]) -> list[str]:
    """Every triple's `item_id`; the rare ids two triples share (the same relative paths under
    two folders) are made from the full URIs instead, so no id depends on the order of rows.
    Each is checked with the manifest's own rule: make-manifest never writes a manifest that
    `read_manifest` refuses."""
    ids = [item_id(*t) for t in triples]
    repeated = {i for i, count in Counter(ids).items() if count > 1}
    if repeated:
        ids = [item_id(*t, full=True) if i in repeated else i
               for i, t in zip(ids, triples, strict=True)]
    for item, t in zip(ids, triples, strict=True):
        problem = id_problem(item)
        if problem:
            raise InputError(f"content {t[0].uri}: {problem}")
    repeated = [i for i, count in Counter(ids).items() if count > 1]
    if repeated:
        raise InputError(f"id {repeated[0]!r} names two items")
    return ids


def _readable(text: str, limit: int) -> str:
    """``text`` in id characters: accents dropped (``été`` -> ``ete``), other runs of
    characters outside ``[A-Za-z0-9._-]`` as ``-``; longer than ``limit``: its head and tail
    joined by ``..``."""
    if not text.isascii():
        text = "".join(ch for ch in unicodedata.normalize("NFKD", text)
                       if not unicodedata.combining(ch))
    text = _UNSAFE.sub("-", text).strip(".-") or "x"
    if len(text) > limit:
        tail = limit // 3
        text = text[: limit - tail - 2] + ".." + text[-tail:]
    return text


def _draws(seed: int, key: str, total: int, count: int) -> list[int]:
    """``count`` distinct numbers in ``0..total-1``: the j-th draw is a hash of (seed, key, j),
    repeats skipped. A shorter sequence is a prefix of a longer one, and each key's sequence is
    its own (contents keyed by their path draw the same whatever else is listed)."""
    picked: list[int] = []
    seen: set[int] = set()
    j = 0
    while len(picked) < count:
        digest = hashlib.blake2b(f"{seed}\0{key}\0{j}".encode(), digest_size=8).digest()
        j += 1
        value = int.from_bytes(digest, "big") % total
        if value not in seen:
            seen.add(value)
            picked.append(value)
    return picked


def _as_list(locations: str | Iterable[str]) -> list[str]:
    return [locations] if isinstance(locations, str) else [str(x) for x in locations]


def _gather(locations: list[str], role: str, excluded: list[str],
            storage_options: dict | None) -> list[Source]:
    """The images under each location, each once, leaving out whatever is under an
    ``excluded`` folder or in an lwst output tree (`_in_output_tree`): outputs are never read
    back as inputs."""
    opts = storage_options or {}
    sources: list[Source] = []
    seen: set[str] = set()
    trees: dict[str, bool] = {}
    for location in locations:
        root = storage.location(location)
        for folder in excluded:
            if storage.within(root, folder):
                raise InputError(f"the {role} folder {location} is inside the output folder "
                                 f"{folder}: its outputs would be read as inputs")
        for uri in storage.list_images(location, **opts):
            relative = _relative(uri, root)
            if uri in seen or any(storage.within(uri, folder) for folder in excluded) \
                    or _in_output_tree(root, relative, trees, opts):
                continue
            seen.add(uri)
            sources.append(Source(uri, relative))
    return sources


def _relative(uri: str, root: str) -> str:
    """``uri``'s path under ``root`` with ``/`` separators (its name if it is not under it)."""
    if storage.is_local(root):
        return Path(uri).relative_to(root).as_posix()
    prefix = root + "/"
    return uri[len(prefix):] if uri.startswith(prefix) else uri.rsplit("/", 1)[-1]


def _in_output_tree(root: str, relative: str, trees: dict[str, bool], opts: dict) -> bool:
    """Whether a folder between ``root`` and the file, entered through one of lwst's output
    folders (``images/``, ``warped/``, ...), holds a run's ``metadata/run-*.parquet`` or its
    ``_lwst.lock``. Memoised in ``trees``: only such folders are ever looked at."""
    parts = relative.split("/")[:-1]
    for depth, name in enumerate(parts):
        if name not in OUTPUT_FOLDERS:
            continue
        base = storage.join(root, *parts[:depth])
        if base not in trees:
            trees[base] = _is_output_tree(base, opts)
        if trees[base]:
            return True
    return False


def _is_output_tree(folder: str, opts: dict) -> bool:
    """``folder`` holds a run's lock (`lwst.run_lock.lock_uri`) or a run's metadata file
    (`lwst.dataset.run_metadata_uri`), local or remote alike."""
    return storage.exists(run_lock.lock_uri(folder), **opts) or any(
        name.startswith("run-") and name.endswith(".parquet")
        for name in dataset.list_names(storage.join(folder, "metadata"), opts))
