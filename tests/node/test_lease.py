"""Keep-alives: acknowledged renewals extend the lease, an ended session is reported once
the coordinator answers again, an unreachable coordinator extends nothing; the loop watchdog
ends the renewals of a node whose loop stopped, not of one that was paused whole."""

from __future__ import annotations

import asyncio

import pytest

from planaria.coord import MemoryCoordinator, SessionId
from planaria.errors import UsageError
from planaria.node._lease import LoopWatchdog, keep_alive_forever


def test_acks_then_silence_then_the_expiry_is_reported() -> None:
    async def scenario() -> None:
        now = [0.0]
        coordinator = MemoryCoordinator(clock=lambda: now[0], expiry_check_interval_s=None)
        session = await coordinator.open_session("n1", 100.0)
        acks: list[float] = []
        expired: list[SessionId] = []
        done = asyncio.Event()

        def on_expired(ended: SessionId) -> None:
            expired.append(ended)
            done.set()

        task = asyncio.create_task(
            keep_alive_forever(
                coordinator,
                session=lambda: None if expired else session,
                stopped=done.is_set,
                interval_ms=1.0,
                timeout_ms=50.0,
                on_ack=lambda _session, sent_ms: acks.append(sent_ms),
                on_expired=on_expired,
            )
        )
        while len(acks) < 3:
            await asyncio.sleep(0.001)
        coordinator.disconnect()
        acked = len(acks)
        await asyncio.sleep(0.01)
        assert len(acks) == acked  # unreachable: the lease is not extended
        now[0] += 1.0  # the TTL (100 ms) runs out in the coordinator's clock
        coordinator.reconnect()
        await asyncio.wait_for(done.wait(), 2.0)
        await task
        assert expired == [session]
        await coordinator.close()

    asyncio.run(scenario())


def test_a_loop_that_stops_beating_is_stalled_after_the_limit() -> None:
    beats = [0]
    watchdog = LoopWatchdog(lambda: beats[0], stall_max_ms=1000.0, step_max_ms=100.0)
    now = 0.0
    for _ in range(100):  # beating: never stalled, however long
        now += 50.0
        beats[0] += 1
        assert not watchdog.observe(now)
    observed = [watchdog.observe(now + 50.0 * i) for i in range(1, 25)]
    # Stalled from the first observation 1000 ms after the last beat was seen, on.
    assert observed.index(True) == 19 and all(observed[19:])
    beats[0] += 1  # it beats again: no longer stalled
    assert not watchdog.observe(now + 50.0 * 25)


def test_a_pause_of_the_whole_process_is_not_a_stall() -> None:
    # SIGSTOP freezes the watching thread too: the gap counts as one step, and the loop
    # beats again soon after SIGCONT.
    beats = [0]
    watchdog = LoopWatchdog(lambda: beats[0], stall_max_ms=1000.0, step_max_ms=100.0)
    assert not watchdog.observe(0.0)
    assert not watchdog.observe(60_000.0)  # a minute later
    assert watchdog.stalled_ms == 100.0
    beats[0] += 1
    assert not watchdog.observe(60_050.0)
    assert watchdog.stalled_ms == 0.0
    with pytest.raises(UsageError):
        LoopWatchdog(lambda: 0, stall_max_ms=100.0, step_max_ms=100.0)


def test_a_stalled_loop_ends_the_renewals() -> None:
    async def scenario() -> None:
        coordinator = MemoryCoordinator()
        session = await coordinator.open_session("n1", 1000.0)
        acks: list[float] = []
        stalls: list[float] = []
        beats = [0]
        watchdog = LoopWatchdog(lambda: beats[0], stall_max_ms=30.0, step_max_ms=10.0)
        task = asyncio.create_task(
            keep_alive_forever(
                coordinator,
                session=lambda: session,
                stopped=lambda: False,
                interval_ms=1.0,
                timeout_ms=50.0,
                on_ack=lambda _session, sent_ms: acks.append(sent_ms),
                on_expired=lambda _session: None,
                watchdog=watchdog,
                on_stalled=stalls.append,
            )
        )
        while len(acks) < 50:  # the loop beats: renewals go on
            beats[0] += 1
            await asyncio.sleep(0.001)
        assert not stalls
        await asyncio.wait_for(task, 5.0)  # it stops beating: the renewals end
        assert len(stalls) == 1 and stalls[0] >= 30.0
        await coordinator.close()

    asyncio.run(scenario())
