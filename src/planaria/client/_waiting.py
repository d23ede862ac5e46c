"""What a client waits for, in its two worlds: threads (``Client``) and one asyncio event loop
(``AsyncClient``). These are the seams scripts/unasync.py maps by name (``AsyncWriteGate`` ->
``WriteGate``); everything else of the two clients is one source.

- The refresh lock: one map refresh at a time; a caller waits for it at most until its
  deadline, then goes on with the map there is.
- Gathering the calls of one command split per slot (MGET, MSET, UNLINK, EXISTS): the
  asyncio client runs them concurrently; the blocking one has run them in turn by the
  time it gathers them (its caller's thread is the only one it has).
- The write gate: hands out the :class:`WriteWindow`'s sequence numbers, waiting (within the
  caller's deadline) while the window is full, and wakes the waiters when a write leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from planaria.client._core import WriteWindow

__all__ = [
    "AsyncRefreshLock",
    "AsyncWriteGate",
    "RefreshLock",
    "WriteGate",
    "async_gather",
    "gather",
]

T = TypeVar("T")

# --------------------------------------------------------------------------- threads


class RefreshLock:
    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, wait_s: float) -> bool:
        """True once held; False when another thread held it for all of ``wait_s``."""
        return self._lock.acquire(timeout=max(wait_s, 0.0))

    def release(self) -> None:
        self._lock.release()


class WriteGate:
    __slots__ = ("_moved", "_window")

    def __init__(self, window: WriteWindow) -> None:
        self._window = window
        self._moved = threading.Condition()  # guards the window

    def take(self, deadline_s: float, clock: Callable[[], float]) -> int | None:
        """A sequence number, or None when none came free before ``deadline_s``."""
        with self._moved:
            while (seq := self._window.take()) is None:
                remaining_s = deadline_s - clock()
                if remaining_s <= 0:
                    return None
                self._moved.wait(remaining_s)
        return seq

    def release(self, seq: int) -> None:
        with self._moved:
            if self._window.release(seq):
                self._moved.notify_all()


def gather(*results: T) -> list[T]:
    """The results of calls that already ran, in turn, as the arguments were evaluated."""
    return list(results)


# --------------------------------------------------------------------------- asyncio


async def async_gather(*calls: Awaitable[T]) -> list[T]:
    """Run ``calls`` concurrently; their results in order. All run to their end (no write
    is left in flight behind the caller's back); then the first failure, if any, raises."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results: list[T] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results


class AsyncRefreshLock:
    """:class:`RefreshLock` for one event loop."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def acquire(self, wait_s: float) -> bool:
        # A free lock is taken without suspending, so even an expired wait gets it.
        try:
            async with asyncio.timeout(max(wait_s, 0.0)):
                await self._lock.acquire()
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        self._lock.release()


class AsyncWriteGate:
    """:class:`WriteGate` for one event loop (no lock: nothing runs between its steps)."""

    __slots__ = ("_moved", "_window")

    def __init__(self, window: WriteWindow) -> None:
        self._window = window
        self._moved: asyncio.Event | None = None  # set when a write left the window

    async def take(self, deadline_s: float, clock: Callable[[], float]) -> int | None:
        while (seq := self._window.take()) is None:
            remaining_s = deadline_s - clock()
            if remaining_s <= 0:
                return None
            if self._moved is None:
                self._moved = asyncio.Event()
            with contextlib.suppress(TimeoutError):  # then the loop's check returns None
                await asyncio.wait_for(self._moved.wait(), remaining_s)
        return seq

    def release(self, seq: int) -> None:
        if self._window.release(seq) and self._moved is not None:
            self._moved.set()  # wake every waiter: some may go on
            self._moved = None
