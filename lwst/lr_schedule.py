"""The trainers' learning-rate schedule: a linear warm-up, then a cosine decay (both trainers).

The rate is a pure function of the step (and, for a time-boxed run, of the seconds trained),
both of which a checkpoint records, so a resumed run puts the schedule back at its step
(`warmup_cosine`'s ``step``) and follows the same rates as a run that was never interrupted,
under the settings of the resuming command (``--steps`` may extend a run).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_steps(warmup: int, steps: int) -> int:
    """``warmup``, but at most a tenth of ``steps`` (at least one step): a run shorter than its
    warm-up would never decay its rate and end at the peak."""
    return min(warmup, max(steps // 10, 1))


def warmup_cosine_factor(step: int, warmup: int, progress: float, floor: float = 0.0) -> float:
    """The share of the peak rate at ``step`` (0-based): ``(step + 1) / warmup`` during the
    warm-up, then a cosine from 1 down to ``floor`` as ``progress`` (clamped to 1) goes 0 -> 1."""
    if step < warmup:
        return (step + 1) / warmup
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return floor + (1.0 - floor) * cosine if floor else cosine


def warmup_cosine(optimizer: torch.optim.Optimizer, lr: float,
                  factor: Callable[[int], float], step: int = 0) -> LambdaLR:
    """A `LambdaLR` giving ``lr * factor(s)`` to step ``s``, positioned to train ``step`` next:
    the optimiser's rate is set for it now. Call ``.step()`` after each optimiser step.

    ``lr`` is the peak (``initial_lr``), set here rather than read from the optimiser: a
    resumed optimiser holds the last step's rate."""
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    return LambdaLR(optimizer, factor, last_epoch=step - 1)
