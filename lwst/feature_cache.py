"""Exemplar features remembered across batches, per process, by the exemplar's bytes.

A dataset reuses few exemplars (styles and geometry exemplars) over many batches, and each
VGG encode costs as much as a content's: the renderers keep an exemplar's render features and
yardstick Gram matrices here, and the learned warp its analysis view's features. One
least-recently-used store for all of them, bounded by `CACHE_BYTES`, so the bound holds
whatever mix a run has. Keys hash the tensor's bytes (not its identity: every batch reads its
exemplars again), its shape, dtype and device, the model and what was computed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lwst.byte_lru import ByteLRU, tensor_bytes

CACHE_BYTES = 256 * 2**20  # per process (read at each store: a test may lower it)

Features = dict[str, Tensor]


def _nbytes(entry: tuple[nn.Module, Features]) -> int:
    return sum(tensor_bytes(f) for f in entry[1].values())


def new_store() -> ByteLRU:
    """An empty store of ``key -> (model, features)`` (a test swaps in its own)."""
    return ByteLRU(CACHE_BYTES, size=_nbytes)


_cache = new_store()


def cache_key(model: nn.Module, tensor: Tensor, what: tuple) -> tuple:
    """The key of ``what`` computed by ``model`` from ``tensor``'s exact bytes."""
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes()
    return (hashlib.blake2b(data, digest_size=16).hexdigest(), tuple(tensor.shape),
            str(tensor.dtype), str(tensor.device), id(model), what)


def lookup(key: tuple) -> Features | None:
    """The remembered features of ``key``, or None."""
    found = _cache.get(key)
    return None if found is None else found[1]


def store(key: tuple, model: nn.Module, features: Features) -> None:
    """Remember ``features``; the oldest entries go beyond `CACHE_BYTES` (the newest stays)."""
    _cache.max_bytes = CACHE_BYTES
    _cache.put(key, (model, features))  # the model is held so its id is not reused


def remembered(model: nn.Module, tensor: Tensor, what: tuple,
               compute: Callable[[], Features]) -> Features:
    """``compute()`` for this tensor's bytes, ``model`` and ``what``, from the cache when there."""
    key = cache_key(model, tensor, what)
    found = lookup(key)
    if found is None:
        found = compute()
        store(key, model, found)
    return found


def remembered_rows(model: nn.Module, rows: Tensor, what: tuple,
                    compute: Callable[[Tensor], Features]) -> list[Features]:
    """`remembered` for each row of a batch ``(B, ...)``, keyed as the row ``(1, ...)``: the rows
    not remembered, each distinct one once, go through a single ``compute(batch)`` call, whose
    features are stored row by row (copies: a slice would keep the whole batch alive)."""
    keys = [cache_key(model, row[None], what) for row in rows]
    found: dict[tuple, Features] = {}
    todo: dict[tuple, int] = {}
    for i, key in enumerate(keys):
        if key in found or key in todo:
            continue
        known = lookup(key)
        if known is None:
            todo[key] = i
        else:
            found[key] = known
    if todo:
        computed = compute(rows[list(todo.values())])
        for j, key in enumerate(todo):
            found[key] = {name: f[j : j + 1].clone() for name, f in computed.items()}
            store(key, model, found[key])
    return [found[key] for key in keys]


def clear() -> None:
    _cache.clear()


def entries() -> list[tuple]:
    """The keys held, oldest first."""
    return list(_cache)
