"""A least-recently-used store of tensors, bounded by their bytes.

`lwst.transforms.RandomStylize` keeps the style images it has read here: a training run may
draw from tens of thousands of styles (Painter by Numbers has ~79k), so the store must stay
within a budget whatever the run draws. The rule is `lwst.feature_cache`'s: past the budget the
least recently used entries go, and the newest always stays (it is about to be used).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator

from torch import Tensor


class ByteLRU:
    """Tensors by key, at most ``max_bytes`` of them (but always the newest). A pickled or
    copied store starts empty: it is a per-process cache, and each process fills its own."""

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"ByteLRU: max_bytes must be an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Tensor | None:
        """The tensor stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, value: Tensor) -> None:
        """Store ``value`` under ``key`` (replacing what was there), then drop the least
        recently used entries until the rest fit in ``max_bytes``."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= _nbytes(old)
            self._entries[key] = value
            self._bytes += _nbytes(value)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= _nbytes(dropped)

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
        return (type(self), (self.max_bytes,))


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()
