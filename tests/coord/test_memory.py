"""The memory backend passes the conformance suite; MemoryCoordinator's own behaviour."""

from __future__ import annotations

import asyncio

import pytest

from planaria.coord import (
    Coordinator,
    CoordinatorUnavailable,
    EventKind,
    MemoryCoordinator,
    MemoryStore,
    SessionExpired,
)
from planaria.errors import UsageError

from .conformance import CHECKS, Backend, run_check


class FakeClock:
    """Seconds, like time.monotonic; moves only when told."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance_ms(self, ms: float) -> None:
        self.now_s += ms / 1000.0


class MemoryBackend(Backend):
    ttl_ms = 300.0
    expiry_slack_ms = 0.0  # expiry is exact

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.clients: list[MemoryCoordinator] = []
        # The coordinator's own expiry check, independent of the clients under test.
        self._server = MemoryCoordinator(self.store, clock=self.clock, expiry_check_interval_s=None)

    async def client(self) -> Coordinator:
        coordinator = MemoryCoordinator(self.store, clock=self.clock, expiry_check_interval_s=None)
        self.clients.append(coordinator)
        return coordinator

    async def advance(self, ms: float) -> None:
        self.clock.advance_ms(ms)
        await self._server.check_expiry()
        await asyncio.sleep(0)  # let woken watchers and campaigns run

    async def cut(self, client: Coordinator) -> None:
        assert isinstance(client, MemoryCoordinator)
        client.disconnect()

    async def heal(self, client: Coordinator) -> None:
        assert isinstance(client, MemoryCoordinator)
        client.reconnect()

    async def lose_next_reply(self, client: Coordinator) -> None:
        assert isinstance(client, MemoryCoordinator)
        client.lose_replies(1)

    async def aclose(self) -> None:
        for client in [*self.clients, self._server]:
            await client.close()


async def make_memory_backend() -> Backend:
    return MemoryBackend()


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_memory_backend_conforms(name: str) -> None:
    run_check(CHECKS[name], make_memory_backend)


def test_suite_is_not_empty() -> None:
    assert len(CHECKS) >= 20


# --- MemoryCoordinator beyond the interface ---------------------------------------------------


def test_background_check_expires_sessions_without_any_call() -> None:
    async def main() -> None:
        clock = FakeClock()
        async with MemoryCoordinator(clock=clock, expiry_check_interval_s=0.001) as c:
            s = await c.open_session("n1", 100)
            await c.create("/e/x", b"", session=s)
            watch = await c.watch("/e/")
            clock.advance_ms(100)
            # No call on c: the background check must notice the expiry by itself.
            event = await asyncio.wait_for(anext(watch), 2.0)
            assert (event.kind, event.key) == (EventKind.DELETE, "/e/x")
            assert c.store.session_info(s).ended_by == "expired"

    asyncio.run(main())


def test_expiry_happens_before_every_call() -> None:
    async def main() -> None:
        clock = FakeClock()
        c = MemoryCoordinator(clock=clock, expiry_check_interval_s=None)
        s = await c.open_session("n1", 100)
        await c.create("/e/x", b"", session=s)
        clock.advance_ms(99.5)
        assert await c.get("/e/x") is not None
        clock.advance_ms(0.5)
        assert await c.get("/e/x") is None  # no check ran, yet the read sees the expiry
        with pytest.raises(SessionExpired):
            await c.keep_alive(s)
        await c.close()

    asyncio.run(main())


def test_check_expiry_reports_expired_sessions() -> None:
    async def main() -> None:
        clock = FakeClock()
        c = MemoryCoordinator(clock=clock, expiry_check_interval_s=None)
        s1 = await c.open_session("n1", 100)
        s2 = await c.open_session("n2", 200)
        clock.advance_ms(150)
        assert [i.session for i in await c.check_expiry()] == [s1]
        clock.advance_ms(50)
        assert [i.session for i in await c.check_expiry()] == [s2]
        assert await c.check_expiry() == []
        await c.close()
        with pytest.raises(UsageError):
            await c.check_expiry()

    asyncio.run(main())


def test_clients_with_lagging_clocks_share_a_store_without_time_going_back() -> None:
    async def main() -> None:
        store = MemoryStore()
        ahead, behind = FakeClock(2000.0), FakeClock(1000.0)
        a = MemoryCoordinator(store, clock=ahead, expiry_check_interval_s=None)
        b = MemoryCoordinator(store, clock=behind, expiry_check_interval_s=None)
        s = await a.open_session("n1", 100)
        await b.keep_alive(s)  # b's clock is behind the store's: it acts at the store's now
        assert store.session_info(s).renewed_ms == 2_000_000.0
        await a.close()
        await b.close()

    asyncio.run(main())


def test_disconnected_client_cannot_renew_so_its_session_expires() -> None:
    async def main() -> None:
        clock = FakeClock()
        store = MemoryStore()
        node = MemoryCoordinator(store, clock=clock, expiry_check_interval_s=None)
        observer = MemoryCoordinator(store, clock=clock, expiry_check_interval_s=None)
        s = await node.open_session("n1", 100)
        await node.register(s, "n1", "h:1")
        node.disconnect()
        clock.advance_ms(60)
        with pytest.raises(CoordinatorUnavailable):
            await node.keep_alive(s)
        clock.advance_ms(40)
        assert await observer.members() == {}
        node.reconnect()
        with pytest.raises(SessionExpired):
            await node.keep_alive(s)
        await node.close()
        await observer.close()

    asyncio.run(main())


def test_lost_reply_of_campaign_is_retried_into_the_same_candidacy() -> None:
    async def main() -> None:
        c = MemoryCoordinator(clock=FakeClock(), expiry_check_interval_s=None)
        s = await c.open_session("ctl", 1000)
        c.lose_replies(1)
        with pytest.raises(CoordinatorUnavailable):
            await c.campaign("/ctl/", s)
        won = await c.campaign("/ctl/", s)
        assert won.token == 1
        assert len(await c.list_prefix("/ctl/")) == 1
        await c.close()

    asyncio.run(main())


def test_bad_constructor_arguments() -> None:
    with pytest.raises(UsageError):
        MemoryCoordinator(clock=42)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        MemoryCoordinator(expiry_check_interval_s=0)
    with pytest.raises(UsageError):
        MemoryCoordinator().lose_replies(-1)
