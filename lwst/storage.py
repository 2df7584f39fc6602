"""Byte-level I/O on local paths and any fsspec URI, with all-or-nothing writes.

A crash or a bad item must never leave a partial file behind: locally we write a temporary
file in the destination directory and ``os.replace`` it (atomic on POSIX); on object stores we
send the whole object in one ``pipe_file`` PUT, which either lands complete or not at all.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs


def is_local(uri: str | os.PathLike[str]) -> bool:
    """True for plain paths and ``file://`` URIs."""
    text = os.fspath(uri)
    return "://" not in text or text.startswith("file://")


def local_path(uri: str | os.PathLike[str]) -> Path:
    text = os.fspath(uri)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a local path or URI without mangling the ``scheme://`` prefix."""
    text = os.fspath(base).rstrip("/")
    return "/".join([text, *[p.strip("/") for p in parts]])


def read_bytes(uri: str | os.PathLike[str], **storage_options: object) -> bytes:
    """Read a whole file. Raises FileNotFoundError for a missing one, whatever the protocol."""
    if is_local(uri):
        return local_path(uri).read_bytes()
    fs, path = url_to_fs(os.fspath(uri), **storage_options)
    return fs.cat_file(path)


def exists(uri: str | os.PathLike[str], **storage_options: object) -> bool:
    if is_local(uri):
        return local_path(uri).exists()
    fs, path = url_to_fs(os.fspath(uri), **storage_options)
    fs.invalidate_cache()
    return fs.exists(path)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def write_bytes_atomic(uri: str | os.PathLike[str], data: bytes, **storage_options: object) -> None:
    """Write ``data`` so that readers see either the old state or the complete new file."""
    if is_local(uri):
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            # mkstemp makes owner-only files; outputs get the permissions a plain open() would.
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, path = url_to_fs(os.fspath(uri), **storage_options)
    fs.pipe_file(path, data)


def remove(uri: str | os.PathLike[str], **storage_options: object) -> None:
    """Delete a file if present (used to roll back an item whose later outputs failed)."""
    if is_local(uri):
        local_path(uri).unlink(missing_ok=True)
        return
    fs, path = url_to_fs(os.fspath(uri), **storage_options)
    if fs.exists(path):
        fs.rm_file(path)


def filesystem(uri: str, **storage_options: object) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem that serves ``uri``."""
    fs, _ = url_to_fs(uri, **storage_options)
    return fs
