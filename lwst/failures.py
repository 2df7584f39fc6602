"""Whose fault a failed item is: its input's, or lwst's own.

An input fault (a bad or missing image, a refused setting, a bad checkpoint, storage that does
not answer, weights that are not installed) is the user's to fix: the item gets a ``failed``
row with a one-line ``error`` and ``error_kind = "input"``. Anything else is a bug in lwst: the
item is still isolated (the others finish), but its row says ``error_kind = "internal"``, its
traceback is logged, and ``lwst run`` exits with `EXIT_INTERNAL_ERROR` after the run.

lwst's convention makes the rule short: every refusal of input is a ``ValueError`` (image,
manifest, config, checkpoint and safety errors all subclass it) and every file or storage
failure an ``OSError``.
"""

from __future__ import annotations

from typing import Literal

from lwst.image_io import ImageInputError
from lwst.storage import StorageReadError
from lwst.vgg import WeightsUnavailableError

FailureKind = Literal["input", "internal"]
INPUT_FAULTS: tuple[type[BaseException], ...] = (ValueError, OSError, WeightsUnavailableError)
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


def failure_kind(exc: BaseException) -> FailureKind:
    return "input" if isinstance(exc, INPUT_FAULTS) else "internal"


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
    if failure_kind(exc) == "internal":
        return f"internal error (a bug in lwst): {type(exc).__name__}: {exc}"
    own = type(exc) is ValueError or type(exc).__module__.startswith("lwst.")
    if isinstance(exc, ValueError) and own and str(exc):  # refusals: already one sentence
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
