"""Costly answers, computed few at a time and reused briefly.

The endpoint's threads share the GIL with the application's event loop, so a route whose
answer costs real CPU (``/api/history``) must not be computed once per request: concurrent
or repeated requests for the same thing would multiply the work and stall the loop.
:class:`Computations` computes at most ``slots`` answers at once (whatever the key), keeps
each for ``ttl`` seconds, and lets a request that cannot start within ``wait`` seconds go
with :class:`Busy`. A request that waited finds in the cache whatever was computed for its
key meanwhile, so concurrent requests for one key cost one computation.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["Busy", "Computations"]


class Busy(Exception):
    """No computation slot became free in time; try again later."""


class Computations:
    """Thread-safe. ``get(key, compute)`` returns ``compute()``'s bytes for ``key``, from
    the cache while younger than ``ttl`` seconds; at most ``entries`` answers are kept
    (the oldest go first)."""

    def __init__(
        self,
        *,
        slots: int = 1,
        ttl: float = 1.0,
        wait: float = 1.0,
        entries: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slots < 1 or entries < 1 or ttl < 0 or wait < 0:
            raise ValueError("slots and entries must be >= 1, ttl and wait >= 0")
        self.ttl = ttl
        self.wait = wait
        self.entries = entries
        self.computed = 0  # computations run so far
        self._clock = clock
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        """``compute()``'s answer for ``key``, cached or computed in a free slot;
        :class:`Busy` if no slot frees within ``wait`` seconds."""
        cached = self._cached(key)
        if cached is not None:
            return cached
        if not self._slots.acquire(timeout=self.wait):
            raise Busy
        try:
            cached = self._cached(key)  # computed while this request waited for its slot
            if cached is not None:
                return cached
            with self._lock:
                self.computed += 1
            value = compute()
            with self._lock:
                self._cache[key] = (self._clock() + self.ttl, value)
                self._cache.move_to_end(key)
                while len(self._cache) > self.entries:
                    self._cache.popitem(last=False)
            return value
        finally:
            self._slots.release()

    def _cached(self, key: Hashable) -> bytes | None:
        now = self._clock()
        with self._lock:
            for stale in [k for k, (until, _) in self._cache.items() if until <= now]:
                del self._cache[stale]
            entry = self._cache.get(key)
            return None if entry is None else entry[1]
