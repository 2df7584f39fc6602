"""One answer to "can lwst compute on this device here?" for every command and the transform.

The trainers, ``stylize``/``run`` and `lwst.transforms.RandomStylize` each used to check
``--device`` their own way, with three wordings of the same refusal. They now ask this module,
and each says the reason after its own prefix (``--device cuda: ...`` on a command line,
``device 'cuda': ...`` in the library).
"""

from __future__ import annotations

import torch

from lwst.errors import InputError
from lwst.failures import first_line

DEVICE_TYPES = ("cpu", "cuda")


class DeviceError(InputError):
    """A device name that this machine cannot compute on; the message is one line."""


def device_problem(name: str, *, probe: bool = True) -> str | None:
    """Why ``name`` cannot be used here, or None.

    ``probe`` allocates one number there, which finds a CUDA device that is present but
    unusable (out of memory, wrong driver) before minutes of work; it initialises CUDA, so the
    transform asks only at its first call in the worker, never in ``__init__``.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return "not a device name (cpu, cuda or cuda:N)"
    if device.type not in DEVICE_TYPES:
        return f"lwst computes on {' or '.join(DEVICE_TYPES)}, not {device.type}"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch sees no CUDA device on this machine"
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            return f"torch sees {count} CUDA device(s) on this machine"
    if probe and device.type != "cpu":
        try:
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError) as exc:
            reason = first_line(exc)[:160]
            return f"not usable here ({reason})"
    return None


def resolve_device(name: str, *, label: str | None = None) -> torch.device:
    """``name`` as a device (``auto``: CUDA where present), or a `DeviceError` whose line
    starts with ``label`` (default ``device 'NAME'``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(name)
    if problem:
        raise DeviceError(f"{label or f'device {name!r}'}: {problem}")
    return torch.device(name)
