"""A byte-bounded LRU of encoded pages, so repeated pages skip record generation."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class PageCache:
    """Keeps the most recently used encoded bodies while their total size <= capacity bytes."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._size = 0
        self._items: OrderedDict[Hashable, tuple[bytes, int]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[bytes, int] | None:
        """(encoded data array, number of records) or None."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, body: bytes, count: int) -> None:
        if len(body) > self._capacity or key in self._items:
            return
        self._items[key] = (body, count)
        self._size += len(body)
        while self._size > self._capacity:
            _, (old, _) = self._items.popitem(last=False)
            self._size -= len(old)

    def clear(self) -> None:
        self._items.clear()
        self._size = 0
