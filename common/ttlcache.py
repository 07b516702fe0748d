"""A small thread-safe cache whose entries expire a fixed time after they were stored."""

from __future__ import annotations

import threading
import time
from typing import Callable, Generic, Hashable, Optional, TypeVar, cast

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """key -> value, each entry forgotten ``ttl`` seconds after it was stored (or its own ``ttl``).

    For values that are slow to compute and may be a little out of date: a policy assignment, a fleet
    count, a verdict. ``ttl`` 0 caches nothing. At most ``max_entries`` are kept: when full, expired entries
    go first, then the oldest tenth. The clock is monotonic (a wall-clock jump neither freezes nor flushes it)
    and injectable for tests. Loading happens outside the lock, so two threads may both load a missing
    key; the later value wins, which is harmless for a cache.
    """

    def __init__(self, ttl: float, *, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0:
            raise ValueError(f"a cache lifetime is 0 or more seconds, not {ttl}")
        if max_entries < 1:
            raise ValueError(f"a cache holds at least one entry, not {max_entries}")
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[K, tuple[float, V]] = {}  # key -> (expires at, value), oldest first
        self._lock = threading.Lock()

    def lookup(self, key: K) -> tuple[bool, Optional[V]]:
        """(True, value) while the entry lives, else (False, None): a cached None is a hit too."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            if now >= entry[0]:
                del self._entries[key]
                return False, None
            return True, entry[1]

    def get(self, key: K) -> Optional[V]:
        """The live value, or None (use ``lookup`` where None is a value worth caching)."""
        return self.lookup(key)[1]

    def put(self, key: K, value: V, ttl: Optional[float] = None) -> None:
        """Store ``value``; ``ttl`` shortens or lengthens this entry's life (e.g. to a token's expiry)."""
        lifetime = self.ttl if ttl is None else ttl
        if lifetime <= 0:
            return
        expires = self.clock() + lifetime
        with self._lock:
            self._entries.pop(key, None)  # re-inserted last: the dict's order is the age order
            if len(self._entries) >= self.max_entries:
                self._make_room(self.clock())
            self._entries[key] = (expires, value)

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        """The live value, or ``load()`` stored for ``ttl`` seconds."""
        hit, value = self.lookup(key)
        if hit:
            return cast(V, value)  # a hit carries a V (None only when V allows it)
        loaded = load()
        self.put(key, loaded)
        return loaded

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _make_room(self, now: float) -> None:
        expired = [key for key, (expires, _value) in self._entries.items() if now >= expires]
        for key in expired:
            del self._entries[key]
        # still full of live entries: drop the oldest tenth at once, so a cache kept full does not
        # scan for expired entries on every store
        keep = self.max_entries - max(1, self.max_entries // 10)
        while len(self._entries) > keep:
            del self._entries[next(iter(self._entries))]
