"""The seams scripts/unasync.py maps by name (planaria.client._waiting): the same contract
for threads (``Client``) and for one event loop (``AsyncClient``)."""

from __future__ import annotations

import asyncio
import threading
import time

from planaria.client._core import WriteWindow
from planaria.client._waiting import AsyncRefreshLock, AsyncWriteGate, RefreshLock, WriteGate

GENEROUS_S = 10.0
SHORT_S = 0.05  # how long a wait that must fail waits: the result is asserted, never the time


def test_the_write_gate_waits_for_a_release_within_the_deadline() -> None:
    gate = WriteGate(WriteWindow(1))
    assert gate.take(time.monotonic() + GENEROUS_S, time.monotonic) == 1
    assert gate.take(time.monotonic() + SHORT_S, time.monotonic) is None  # full until then
    taken: list[int | None] = []
    waiter = threading.Thread(
        target=lambda: taken.append(gate.take(time.monotonic() + GENEROUS_S, time.monotonic))
    )
    waiter.start()
    gate.release(1)  # wakes the waiter (or it never had to wait)
    waiter.join(GENEROUS_S)
    assert taken == [2]


def test_the_async_write_gate_waits_for_a_release_within_the_deadline() -> None:
    async def main() -> None:
        gate = AsyncWriteGate(WriteWindow(1))
        clock = time.monotonic
        assert await gate.take(clock() + GENEROUS_S, clock) == 1
        assert await asyncio.wait_for(gate.take(clock() + SHORT_S, clock), GENEROUS_S) is None
        waiter = asyncio.ensure_future(gate.take(clock() + GENEROUS_S, clock))
        await asyncio.sleep(0)  # let it start waiting
        assert not waiter.done()
        gate.release(1)
        assert await asyncio.wait_for(waiter, GENEROUS_S) == 2

    asyncio.run(main())


def test_the_refresh_lock_is_given_up_at_the_deadline() -> None:
    lock = RefreshLock()
    assert lock.acquire(0.0)  # free: taken even with no time left
    assert not lock.acquire(SHORT_S)
    lock.release()
    assert lock.acquire(-1.0)


def test_the_async_refresh_lock_is_given_up_at_the_deadline() -> None:
    async def main() -> None:
        lock = AsyncRefreshLock()
        assert await lock.acquire(0.0)
        assert not await asyncio.wait_for(lock.acquire(SHORT_S), GENEROUS_S)
        assert not await asyncio.wait_for(lock.acquire(-1.0), GENEROUS_S)
        waiter = asyncio.ensure_future(lock.acquire(GENEROUS_S))
        await asyncio.sleep(0)
        lock.release()  # hands it to the waiter
        assert await asyncio.wait_for(waiter, GENEROUS_S)
        lock.release()
        assert await lock.acquire(-1.0)

    asyncio.run(main())
