"""Whose fault a failed item is: its input's, the task runner's, or lwst's own.

An input fault (a bad or missing image, a refused setting, a bad checkpoint, storage that does
not answer, weights that are not installed) is the user's to fix: the item gets a ``failed``
row with a one-line ``error`` and ``error_kind = "input"``. A failure of the orchestration
around the item (the Prefect API gone while a task releases its ``gpu`` slot, a Dask scheduler
that cannot deserialise the task graph, a cancelled future) is neither the item's nor a bug in
lwst: ``error_kind = "orchestration"``, ``task runner error (not the item): ...``; a re-run
redoes the item. Anything else is a bug in lwst: the item is still isolated (the others
finish), but its row says ``error_kind = "internal"``, its traceback is logged, and ``lwst
run`` exits with `EXIT_INTERNAL_ERROR` after the run.

lwst's convention makes the rule short: every refusal of input is an `lwst.errors.InputError`
(image, manifest, config, checkpoint and safety errors all subclass it) and every file or
storage failure an ``OSError``. A plain ``ValueError`` or ``KeyError`` (numpy's broadcasting
error, a missing key in lwst's own tables) is a bug like any other exception. Orchestration
errors are told by the package that raised them (`ORCHESTRATION_PACKAGES`: lwst imports none
of them); the flow also calls orchestration any error its task runner raised instead of the
task's own outcome (`flows.submitter`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Literal

from lwst.errors import InputError
from lwst.image_io import ImageInputError
from lwst.storage import StorageReadError
from lwst.vgg import WeightsUnavailableError

FailureKind = Literal["input", "orchestration", "internal"]
INPUT_FAULTS: tuple[type[BaseException], ...] = (InputError, OSError, WeightsUnavailableError)
# Top-level packages whose exceptions are the task runner's or its API client's: Prefect, its
# HTTP client (httpx, httpcore) and Dask's distributed (whose CommClosedError is an OSError).
ORCHESTRATION_PACKAGES = frozenset({"prefect", "prefect_dask", "httpx", "httpcore",
                                    "distributed"})
ORCHESTRATION_FAULTS: tuple[type[BaseException], ...] = (concurrent.futures.CancelledError,
                                                        asyncio.CancelledError)
EXIT_INTERNAL_ERROR = 3  # `lwst run`: every item finished, but lwst failed some by a bug


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message with its whitespace folded (a library error's detail
    is often a multi-line dump); the exception's type name when the message is empty."""
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


def one_line(text: object, limit: int = 300) -> str:
    """All of ``text`` on one line (every run of whitespace, newlines too, becomes one space),
    cut to ``limit`` characters ending in ``...``: what a metadata ``error`` cell holds."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def is_orchestration_error(exc: BaseException) -> bool:
    """True for an exception of the task runner or its API client (`ORCHESTRATION_PACKAGES`,
    a cancelled future), whatever it subclasses."""
    if isinstance(exc, ORCHESTRATION_FAULTS):
        return True
    return any(k.__module__.split(".", 1)[0] in ORCHESTRATION_PACKAGES
               for k in type(exc).__mro__)


def failure_kind(exc: BaseException) -> FailureKind:
    if is_orchestration_error(exc):
        return "orchestration"
    return "input" if isinstance(exc, INPUT_FAULTS) else "internal"


def orchestration_reason(exc: BaseException) -> str:
    """The one-line ``error`` of an item its task runner failed (not its input, not lwst)."""
    return f"task runner error (not the item): {type(exc).__name__}: {first_line(exc)}"


def failure_reason(exc: BaseException, inputs: dict[str, str | None] | None = None) -> str:
    """The one-line ``error`` of a failed row (image errors already name the file).

    A storage failure reading an input names the URI, and with ``inputs`` (role -> URI: the
    item's ``content``, ``geometry``, ``texture``) which input it was: ``texture
    s3://b/t.jpg: cannot read (...)``."""
    if isinstance(exc, ImageInputError):
        return str(exc)
    if isinstance(exc, StorageReadError):
        roles = [role for role, uri in (inputs or {}).items() if uri and uri == exc.uri]
        return f"{' and '.join(roles)} {exc}" if roles else str(exc)
    kind = failure_kind(exc)
    if kind == "orchestration":
        return orchestration_reason(exc)
    if kind == "internal":
        return f"internal error (a bug in lwst): {type(exc).__name__}: {exc}"
    if isinstance(exc, InputError) and str(exc):  # refusals: already one sentence
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
