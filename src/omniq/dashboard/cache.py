"""A short-ttl cache shared by every viewer of one dashboard process.

On a bucket each listing is a billable LIST (and a GET per task read): ten open browser tabs
refreshing every few seconds must not cost ten times one. Every read the pages and the API make
goes through ``SharedCache.get``: within ``ttl`` seconds of a load the stored value is served, and
callers that arrive while a load runs wait for that same load (one request to the store, however
many viewers ask at once). A slow, less urgent read (the throughput chart) may ask for
``stale_ok``: past its ttl the old value is served at once while one load refreshes it behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 512  # filters make keys; expired ones are dropped beyond this many


class SharedCache:
    """``await cache.get(key, load)``: ``load()``'s value, reused for ``ttl`` seconds.

    ``clock`` (seconds, monotonic) is injectable so tests move time by hand.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.loads = 0  # how many times a value was read from the store (not served cached)
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._loading: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(
        self,
        key: Hashable,
        load: Callable[[], Awaitable[T]],
        ttl: float | None = None,
        *,
        stale_ok: bool = False,
    ) -> T:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self.clock():
            value: T = entry[1]
            return value
        running = self._loading.get(key)
        if running is None:
            running = asyncio.ensure_future(self._load(key, load, self.ttl if ttl is None else ttl))
            running.add_done_callback(_retrieve)
            self._loading[key] = running
        if stale_ok and entry is not None:
            stale: T = entry[1]
            return stale
        # shield: a viewer who disconnects does not cancel the load others wait for
        result: T = await asyncio.shield(running)
        return result

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[T]], ttl: float) -> T:
        try:
            self.loads += 1
            value = await load()
            if len(self._entries) >= MAX_ENTRIES:
                now = self.clock()
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
            self._entries[key] = (self.clock() + ttl, value)
            return value
        finally:
            self._loading.pop(key, None)

    def clear(self) -> None:
        """Expire every value (after an action changed the store: the next page shows it);
        ``stale_ok`` readers still get theirs while it reloads."""
        self._entries = {k: (float("-inf"), value) for k, (_, value) in self._entries.items()}


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a background load's error as seen (its waiters, if any, got it)."""
    if not future.cancelled():
        future.exception()
