"""Byte-level I/O on local paths and any fsspec URI, with all-or-nothing writes.

A crash or a bad item must never leave a partial file behind: locally we write a temporary
file in the destination directory and ``os.replace`` it (atomic on POSIX); on object stores we
send the whole object in one ``pipe_file`` PUT, which either lands complete or not at all.
Temporary files are named ``.lwst-<owner>.<name>.<random>.tmp`` (`TEMP_PREFIX`; the owner is
the run id inside a run, see `temp_owner`), so a sweep after a crash can tell lwst's own from
a user's ``.notes.tmp``.

Storage options are S3 settings (`lwst.s3`): only ``s3://`` / ``s3a://`` URIs get them, so an
``http(s)://`` or ``file://`` input is never handed an S3 endpoint or key it would refuse.

Reads refuse what is not a regular file (a FIFO would block forever, ``/dev/zero`` never ends)
and what is over a size cap, before reading a byte of it.

Writes are retried here, on transient errors only (`is_transient`): a dropped connection costs a
second attempt at one file, not a second render of the item. A write that still fails raises
`WriteFailedError`, which is no longer transient, so no caller retries it again on top.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs

from lwst.errors import InputError


def is_local(uri: str | os.PathLike[str]) -> bool:
    """True for plain paths and ``file://`` URIs."""
    text = os.fspath(uri)
    return "://" not in text or text.startswith("file://")


def local_path(uri: str | os.PathLike[str]) -> Path:
    text = os.fspath(uri)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def location(uri: str | os.PathLike[str]) -> str:
    """A folder or file as comparisons name it: a local one absolute and resolved, a URI
    without a trailing ``/`` (`within`)."""
    if is_local(uri):
        return str(local_path(uri).resolve())
    return os.fspath(uri).rstrip("/")


def within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, both as `location` gives them."""
    separator = "/" if "://" in folder else os.sep
    return path == folder or path.startswith(folder.rstrip("/" + os.sep) + separator)


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a local path or URI without mangling the ``scheme://`` prefix."""
    text = os.fspath(base).rstrip("/")
    return "/".join([text, *[p.strip("/") for p in parts]])


TEMP_PREFIX = ".lwst-"
S3_PROTOCOLS = ("s3", "s3a")
DEFAULT_MAX_INPUT_BYTES = 256 * 2**20  # a 100 MP PNG is well under; override LWST_MAX_INPUT_BYTES
_temp_owner: contextvars.ContextVar[str] = contextvars.ContextVar("lwst_temp_owner", default="")


class InputRefusedError(InputError):
    """A file refused before reading: not a regular file, or over the size cap (one line)."""


class StorageUnavailableError(OSError):
    """An object store that cannot be reached or refuses access (one-line reason)."""


class WriteFailedError(OSError):
    """A write that kept failing with transient errors through all its attempts."""


class StorageReadError(OSError):
    """A remote read that failed for another reason than a missing or forbidden file (no
    credentials, a refused connection, a timeout, a server error): one line naming ``uri``
    and the cause. ``transient``: whether another attempt may succeed (`is_transient`).

    Made by `of`; the plain constructor takes the message alone, so the error pickles (Prefect
    and Dask carry a task's exception between processes)."""

    def __init__(self, message: str, uri: str = "", transient: bool = False):
        super().__init__(message)
        self.uri, self.transient = uri, transient

    @classmethod
    def of(cls, uri: str, cause: BaseException) -> StorageReadError:
        reason = f"{type(cause).__name__}: {_first_line(cause)}"
        if isinstance(cause, TimeoutError) and protocol(uri) in ("http", "https"):
            reason = f"no answer within {HTTP_READ_TIMEOUT_S:g} s ({type(cause).__name__})"
        if type(cause).__name__ == "NoCredentialsError":  # botocore's, without a hint
            reason = ("no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                      "AWS_SECRET_ACCESS_KEY, or pass --aws-access-key-id and "
                      f"--aws-secret-access-key ({reason})")
        return cls(f"{uri}: cannot read ({reason})", uri, _transient_cause(cause))


# Missing/forbidden files are bad input, not a flaky network: retrying cannot help. Nor can it
# for a name too long, a read-only or full disk, storage the probe found dead, or a write that
# was already retried.
PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                       StorageUnavailableError, WriteFailedError)
PERMANENT_ERRNOS = {errno.ENAMETOOLONG, errno.EROFS, errno.ENOSPC, errno.EINVAL, errno.ELOOP,
                    errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR}
# Pauses between write attempts (so 3 attempts). Not for S3: botocore already retries each
# request (`lwst.s3`, max_attempts); a loop on top would multiply its timeouts.
WRITE_RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0)


# Pauses before the second and third attempt at reading an item's inputs after a transient
# error: Prefect's task retries for a single item (`tasks.stylize_item`), the chunk task's own
# re-reads for feed-forward items (`lwst.stylize_batch`).
READ_RETRY_DELAYS: tuple[float, ...] = (2.0, 10.0)
# Names in the class hierarchy of the non-OSError failures of botocore and aiohttp that another
# attempt may not meet: connection errors, timeouts, a body cut short.
_TRANSIENT_CAUSES = frozenset({"ConnectionError", "HTTPClientError", "ClientConnectionError",
                               "ClientPayloadError", "ServerTimeoutError"})


def is_transient(exc: BaseException) -> bool:
    """True for an OS error that another attempt may not meet (a reset connection, a timeout)."""
    if isinstance(exc, StorageReadError):
        return exc.transient
    return (isinstance(exc, OSError) and not isinstance(exc, PERMANENT_OS_ERRORS)
            and exc.errno not in PERMANENT_ERRNOS)


def _transient_cause(exc: BaseException) -> bool:
    """Whether a failed remote read may succeed on another attempt: a transient OS error, an
    HTTP 5xx / 408 / 429, a connection error or timeout of botocore or aiohttp. Missing
    credentials, a refused request and anything unforeseen are not."""
    if isinstance(exc, OSError):
        return is_transient(exc)
    status = getattr(exc, "status", None)  # aiohttp's ClientResponseError
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    return any(k.__name__ in _TRANSIENT_CAUSES for k in type(exc).__mro__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


def max_input_bytes() -> int:
    """The read cap in bytes (``LWST_MAX_INPUT_BYTES``, default 256 MiB)."""
    return int(float(os.environ.get("LWST_MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES)))


def protocol(uri: str | os.PathLike[str]) -> str:
    text = os.fspath(uri)
    return text.split("://", 1)[0].lower() if "://" in text else "file"


# An http(s) input host that accepts the connection and then never answers held an item for
# aiohttp's default of 5 minutes, three times over with the read retries; a stalled read now
# fails (and is retried, as a timeout is transient) after this many seconds without a byte.
HTTP_CONNECT_TIMEOUT_S = 10.0
HTTP_READ_TIMEOUT_S = 60.0


def options_for(uri: str | os.PathLike[str], storage_options: dict) -> dict:
    """The storage options that belong to ``uri``'s protocol (S3's only go to S3; http(s)
    gets connect and read timeouts)."""
    if protocol(uri) in S3_PROTOCOLS:
        return dict(storage_options)
    if protocol(uri) in ("http", "https"):
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=HTTP_CONNECT_TIMEOUT_S,
                                        sock_read=HTTP_READ_TIMEOUT_S)
        return {"client_kwargs": {"timeout": timeout}}
    return {}


def _url_to_fs(uri: str | os.PathLike[str], storage_options: dict):
    return url_to_fs(os.fspath(uri), **options_for(uri, storage_options))


@contextlib.contextmanager
def temp_owner(owner: str) -> Iterator[None]:
    """Name this context's temporary files after ``owner`` (a run id: ``[A-Za-z0-9._-]``)."""
    token = _temp_owner.set(re.sub(r"[^A-Za-z0-9._-]", "-", owner)[:64])
    try:
        yield
    finally:
        _temp_owner.reset(token)


def is_temp_name(name: str) -> bool:
    """True for a temporary file name `write_bytes_atomic` makes (and only those)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(".tmp")


_KINDS = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def _refuse_special(name: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{name}: is a directory")
    if not stat.S_ISREG(mode):
        kind = next((k for test, k in _KINDS if test(mode)), "special file")
        raise InputRefusedError(f"{name}: is a {kind}, not a regular file; refused unread")


def _refuse_large(name: str, size: int | None, cap: int) -> None:
    if size is not None and size > cap:
        raise InputRefusedError(f"{name}: {size} bytes is over the {cap}-byte input limit "
                                "(LWST_MAX_INPUT_BYTES); refused unread")


def read_bytes(uri: str | os.PathLike[str], max_bytes: int | None = None,
               **storage_options: object) -> bytes:
    """Read a whole regular file of at most ``max_bytes`` (default `max_input_bytes`).

    Raises FileNotFoundError for a missing one, whatever the protocol, `InputRefusedError`
    for a FIFO, device or socket (checked without blocking) or an over-size file, and
    `StorageReadError` (naming the URI; transient or not) for any other failure of a remote
    store: no credentials, a refused connection, a timeout, a server error.
    """
    cap = max_input_bytes() if max_bytes is None else max_bytes
    name = os.fspath(uri)
    if is_local(uri):
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging.
        fd = os.open(local_path(uri), os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            _refuse_special(name, info.st_mode)
            _refuse_large(name, info.st_size, cap)
            data = handle.read(cap + 1)
    else:
        try:
            data = _read_remote_capped(uri, cap, storage_options)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                ValueError):
            raise  # `lwst.image_io.read_image` names these (no such file, ...)
        except Exception as exc:  # botocore and aiohttp raise a zoo: one line naming the URI
            raise StorageReadError.of(name, exc) from exc
    if len(data) > cap:  # grew while read, or a remote store (read ranged, without its size)
        raise InputRefusedError(f"{name}: more than {cap} bytes, over the {cap}-byte input limit "
                                "(LWST_MAX_INPUT_BYTES); refused")
    return data


def _read_remote_capped(uri: str | os.PathLike[str], cap: int, storage_options: dict) -> bytes:
    """At most ``cap + 1`` bytes in one ranged GET.

    Why not ``info`` then ``cat_file``: s3fs's whole-file ``cat_file`` asks for the size itself,
    so that was two HEADs and a GET per input, and on S3 each request is most of an item's cost.
    """
    fs, path = _url_to_fs(uri, storage_options)
    try:
        return fs.cat_file(path, start=0, end=cap + 1)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # S3 refuses any Range on an empty object (HTTP 416, which s3fs raises as EINVAL).
        return fs.cat_file(path)


def exists(uri: str | os.PathLike[str], **storage_options: object) -> bool:
    if is_local(uri):
        return local_path(uri).exists()
    fs, path = _url_to_fs(uri, storage_options)
    fs.invalidate_cache()
    return fs.exists(path)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def write_bytes_atomic(uri: str | os.PathLike[str], data: bytes, **storage_options: object) -> None:
    """Write ``data`` so that readers see either the old state or the complete new file.

    A transient error (`is_transient`) is retried after each of `WRITE_RETRY_DELAYS` (S3:
    botocore's own attempts only); one that outlasts them raises `WriteFailedError` from it.
    """
    delays = () if protocol(uri) in S3_PROTOCOLS else WRITE_RETRY_DELAYS
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            _write_once(uri, data, storage_options)
            return
        except OSError as exc:
            if not is_transient(exc):
                raise
            if delay is None:
                raise WriteFailedError(f"{os.fspath(uri)}: write failed {attempt} time(s), last "
                                       f"with {type(exc).__name__}: {exc}") from exc
            time.sleep(delay)


def _write_once(uri: str | os.PathLike[str], data: bytes, storage_options: dict) -> None:
    if is_local(uri):
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = _temp_owner.get() or f"pid{os.getpid()}"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{owner}.{path.name}.",
                                   suffix=".tmp")
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
    fs, path = _url_to_fs(uri, storage_options)
    fs.pipe_file(path, data)


def write_all_or_none(files: Sequence[tuple[str, bytes]], **storage_options: object) -> None:
    """Write each ``(uri, data)`` atomically, in order; if one fails, remove those already
    written and re-raise, so the group is either all present or all absent."""
    written: list[str] = []
    try:
        for uri, data in files:
            write_bytes_atomic(uri, data, **storage_options)
            written.append(uri)
    except BaseException:
        for uri in written:
            # Best effort (the store may be what failed): the re-raised error is the one to see.
            with contextlib.suppress(Exception):
                remove(uri, **storage_options)
        raise


def remove(uri: str | os.PathLike[str], **storage_options: object) -> None:
    """Delete a file, one missing being no error: locally an unlink, on S3 one DELETE with no
    HEAD first (S3 answers a missing key's DELETE with success too). Rolls back an item whose
    later outputs failed, and removes the files a redone item no longer writes."""
    if is_local(uri):
        local_path(uri).unlink(missing_ok=True)
        return
    fs, path = _url_to_fs(uri, storage_options)
    with contextlib.suppress(FileNotFoundError):  # stores that say so (fsspec's memory)
        fs.rm_file(path)


def filesystem(uri: str, **storage_options: object) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem that serves ``uri``."""
    fs, _ = _url_to_fs(uri, storage_options)
    return fs


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def list_images(location: str | os.PathLike[str], recursive: bool = True,
                **storage_options: object) -> list[str]:
    """Image files (by suffix) under a folder or prefix, sorted, as absolute paths / URIs.

    The one listing every input folder goes through (manifests, training sets, style folders,
    benchmarks). Hidden names (``.*``: editor and OS droppings) are skipped. ``recursive=False``
    lists the folder's own files only (training folders, where subfolders hold caches).
    """
    text = os.fspath(location)
    if is_local(text):
        root = local_path(text).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"{text}: not a folder")
        found = root.rglob("*") if recursive else root.glob("*")
        return sorted(str(p) for p in found if _is_image_name(p.name))
    fs = filesystem(text, **storage_options)
    fs.invalidate_cache()
    scheme = text.split("://", 1)[0]
    paths = fs.find(text, maxdepth=None if recursive else 1)
    return sorted(f"{scheme}://{p}" for p in paths if _is_image_name(p.rsplit("/", 1)[-1]))


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
