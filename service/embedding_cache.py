"""An LRU of image embeddings bounded in bytes, shared by every route; safe across threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

from model_core import ImageFeatures


@dataclass(frozen=True)
class CachedImage:
    """An image's features (batch of 1) and the size of the image they came from."""

    features: ImageFeatures
    orig_hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.nbytes()


class EmbeddingCache:
    """Least-recently-used eviction once the entries' bytes exceed `max_bytes`.

    Keys are tuples that start with the model's identity, so two models never share an entry.
    An entry larger than the whole bound is not stored. `on_change(total_bytes)` reports the size.
    """

    def __init__(self, max_bytes: int, on_change: Callable[[int], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, CachedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._on_change = on_change or (lambda n: None)

    def get(self, key: Hashable) -> CachedImage | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Hashable, entry: CachedImage) -> None:
        size = entry.nbytes
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size <= self.max_bytes:
                self._entries[key] = entry
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, evicted = self._entries.popitem(last=False)
                    self._bytes -= evicted.nbytes
            total = self._bytes
        self._on_change(total)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes
