"""The keys' expiry times of a partition: a table (key -> Unix ms) and the index that finds
the keys due first, for active expiry (docs/design.md, "Expiry").

The table is replicated state (equal on every replica at the same log index, part of every
snapshot); the index is derived from it. It is a heap of ``(time, key)`` whose entries may
be stale (the key's expiry changed or went since): a stale entry is skipped when it comes up,
and the heap is rebuilt from the table once it holds more than twice the table plus
:data:`HEAP_SLACK`, so it never grows beyond the keys that have an expiry (tested at that
limit).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping

__all__ = ["HEAP_SLACK", "Expiries"]

# Stale heap entries tolerated besides twice the live ones before a rebuild (so a small table
# is not rebuilt at every change).
HEAP_SLACK = 64


class Expiries(Mapping[bytes, int]):
    """key -> expiry (Unix ms), with the keys due first at hand. A read-only mapping to
    everyone but its owner (the apply of the writes, core/strings.py)."""

    __slots__ = ("_heap", "_times")

    def __init__(self, times: Mapping[bytes, int] | None = None) -> None:
        self._times: dict[bytes, int] = dict(times) if times else {}
        self._heap: list[tuple[int, bytes]] = []
        self._rebuild()

    def __getitem__(self, key: bytes) -> int:
        return self._times[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._times)

    def __len__(self) -> int:
        return len(self._times)

    def __contains__(self, key: object) -> bool:
        return key in self._times

    def get_time(self, key: bytes) -> int | None:
        """The key's expiry, or None."""
        return self._times.get(key)

    def set(self, key: bytes, time_ms: int) -> None:
        if self._times.get(key) == time_ms:
            return
        self._times[key] = time_ms
        heapq.heappush(self._heap, (time_ms, key))
        self._bound()

    def discard(self, key: bytes) -> None:
        """Forget the key's expiry (if any); its heap entry goes stale."""
        if self._times.pop(key, None) is not None:
            self._bound()

    def due(self, now_ms: int, limit: int) -> list[bytes]:
        """Up to ``limit`` keys whose expiry is before ``now_ms`` (Redis: expired once the
        clock passed it), earliest first. They leave the index (not the table: the apply of
        the entry that deletes them does); if that entry never applies, :meth:`reindex`
        finds them again (a new primary calls it)."""
        found: list[bytes] = []
        seen: set[bytes] = set()
        heap = self._heap
        times = self._times
        while heap and len(found) < limit:
            time_ms, key = heap[0]
            if times.get(key) != time_ms or key in seen:
                heapq.heappop(heap)  # stale (the key's expiry changed or went) or a twin
                continue
            if time_ms >= now_ms:
                break
            found.append(key)
            seen.add(key)
            heapq.heappop(heap)
        return found

    def reindex(self) -> None:
        """The index rebuilt from the table (every key with an expiry in it once)."""
        self._rebuild()

    @property
    def heap_size(self) -> int:
        """Entries in the index, stale ones included (bounded: see the module)."""
        return len(self._heap)

    def copy_times(self) -> dict[bytes, int]:
        return dict(self._times)

    def _bound(self) -> None:
        if len(self._heap) > 2 * len(self._times) + HEAP_SLACK:
            self._rebuild()

    def _rebuild(self) -> None:
        self._heap = [(time_ms, key) for key, time_ms in self._times.items()]
        heapq.heapify(self._heap)
