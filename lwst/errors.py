"""The one base class of every refusal of input, so that only a refusal reads as the user's.

A ``ValueError`` or ``KeyError`` raised anywhere else (numpy's "operands could not be
broadcast", a missing dict key in lwst's own code) is a bug, and a bug must not pass for a bad
input: `lwst.failures` would give the item ``error_kind = "input"`` and ``lwst run`` would exit 0,
and ``lwst stylize`` would print one line and exit 2 instead of a traceback. So lwst raises
`InputError` (or a subclass naming the kind of input: `lwst.config.ConfigError`,
`lwst.image_io.ImageInputError`, `lwst.manifest.ManifestError`, ...) for everything it refuses,
and the front ends catch `InputError`, never plain ``ValueError``.

`InputError` subclasses ``ValueError`` so that callers who caught ``ValueError`` before keep
working. This module imports nothing, so the CLI's parser can name the class without torch.
"""

from __future__ import annotations


class InputError(ValueError):
    """A refused input, setting, file or state: a one-line reason the user can act on."""
