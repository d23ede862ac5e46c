"""The event queue behind every backend's :class:`~planaria.coord.interface.Watch`.

A backend pushes events as it learns of them; the consumer takes them in order with
``async for``. The queue is bounded: a consumer that falls ``WATCH_BUFFER_MAX`` events behind
gets one ``RESET`` instead of an ever-growing backlog (it must re-read anyway), and a pending
``RESET`` absorbs whatever follows it.
"""

from __future__ import annotations

import asyncio
from collections import deque

from planaria.coord.interface import Watch
from planaria.coord.types import EventKind, WatchEvent

__all__ = ["WATCH_BUFFER_MAX", "QueuedWatch"]

WATCH_BUFFER_MAX = 10_000


class QueuedWatch(Watch):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._events: deque[WatchEvent] = deque()
        self._wake = asyncio.Event()
        self.closed = False

    def _push(self, event: WatchEvent) -> None:
        if self.closed:
            return
        if self._events and self._events[-1].kind is EventKind.RESET:
            pass  # a pending RESET already covers it
        elif len(self._events) >= WATCH_BUFFER_MAX or event.kind is EventKind.RESET:
            self._events.clear()
            self._events.append(WatchEvent(EventKind.RESET, self.prefix))
        else:
            self._events.append(event)
        self._wake.set()

    def _end(self) -> None:
        self.closed = True
        self._wake.set()

    async def __anext__(self) -> WatchEvent:
        while True:
            if self.closed:
                raise StopAsyncIteration
            if self._events:
                return self._events.popleft()
            self._wake.clear()
            await self._wake.wait()
