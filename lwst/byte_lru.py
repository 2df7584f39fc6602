"""A least-recently-used store bounded by the bytes of what it holds.

Two caches keep their entries here: `lwst.feature_cache` (exemplar features across batches)
and `lwst.transforms.RandomStylize` (the style images it has read: a training run may draw from
tens of thousands of styles; Painter by Numbers has ~79k). Either must stay within a budget
whatever the run draws. The rule: past the budget the least recently used entries go, and the
newest always stays (it is about to be used).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from torch import Tensor


def tensor_bytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class ByteLRU:
    """Values by key, at most ``max_bytes`` of them as ``size`` counts a value (a tensor's own
    bytes by default), but always the newest. A pickled or copied store starts empty: it is a
    per-process cache, and each process fills its own."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int] = tensor_bytes) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"ByteLRU: max_bytes must be an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key`` (replacing what was there), then drop the least
        recently used entries until the rest fit in ``max_bytes``."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            self._entries[key] = value
            self._bytes += self._size(value)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= self._size(dropped)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored tensors."""
        return self._bytes

    def __iter__(self) -> Iterator[Hashable]:
        """The keys held, least recently used first (a snapshot)."""
        with self._lock:
            return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __reduce__(self) -> tuple:
        return (type(self), (self.max_bytes, self._size))
