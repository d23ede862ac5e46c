"""Keep-alives: acknowledged renewals extend the lease, an ended session is reported once
the coordinator answers again, an unreachable coordinator extends nothing."""

from __future__ import annotations

import asyncio

from planaria._node.lease import keep_alive_forever
from planaria.coord import MemoryCoordinator, SessionId


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
