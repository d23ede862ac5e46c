"""ZooKeeperCoordinator against a real 3-server ZooKeeper ensemble on loopback: the
conformance suite, TTL negotiation, the connection states."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from planaria.coord import EventKind, SessionExpired, SessionId
from planaria.coord.url import connect
from planaria.coord.zookeeper import ZooKeeperCoordinator
from planaria.errors import UsageError

from ._ensemble_backend import EnsembleBackend
from ._servers import ZK_TICK_MS, Ensemble
from .conformance import CHECKS, Backend, run_check

CUT_CHECKS = {"unreachable_backend_raises_unknown_outcome"}


def make_backend(ensemble: Ensemble, name: str) -> Backend:
    cut = name in CUT_CHECKS  # relayed, and timing out quickly while cut off
    return EnsembleBackend(
        ensemble,
        ttl_ms=300.0,
        expiry_slack_ms=4 * ZK_TICK_MS + 100.0,
        request_timeout_s=0.3 if cut else 2.0,
        proxied=cut,
    )


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_zookeeper_backend_conforms(name: str, zookeeper: Ensemble) -> None:
    async def factory() -> Backend:
        return make_backend(zookeeper, name)

    run_check(CHECKS[name], factory)


def test_ttls_outside_the_negotiable_range_are_refused(zookeeper: Ensemble) -> None:
    async def main() -> None:
        client = connect(f"{zookeeper.url}/ttl-{uuid.uuid4().hex[:8]}")
        assert isinstance(client, ZooKeeperCoordinator)
        with pytest.raises(UsageError, match="granted a 100 ms session"):
            await client.open_session("n1", 2 * ZK_TICK_MS - 20)
        with pytest.raises(UsageError, match="whole milliseconds"):
            await client.open_session("n1", 300.5)
        session = await client.open_session("n1", 2 * ZK_TICK_MS)  # the smallest it grants
        await client.keep_alive(session)
        await client.close()

    asyncio.run(main())


def test_another_client_in_the_process_renews_a_session(zookeeper: Ensemble) -> None:
    """The node renews from a thread with a client of its own: the renewals reach the
    session's own connection, and the watchdog counts from them."""
    url = f"{zookeeper.url}/renew-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        owner = connect(url)
        session = await owner.open_session("n1", 300)
        await owner.create("/eph", b"x", session=session)
        stop = threading.Event()

        def renew_in_a_thread() -> None:
            async def renew() -> None:
                renewer = connect(url)
                while not stop.is_set():
                    await renewer.keep_alive(session)
                    await asyncio.sleep(0.05)
                await renewer.close()

            asyncio.run(renew())

        thread = threading.Thread(target=renew_in_a_thread)
        thread.start()
        await asyncio.sleep(0.9)  # three TTLs: only the other thread renews
        assert await owner.get("/eph") is not None
        stop.set()
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(0.3 + 0.3)  # a TTL (and slack) without renewals
        assert await owner.get("/eph") is None
        with pytest.raises(SessionExpired):
            await owner.keep_alive(session)
        with pytest.raises(UsageError, match="not opened in this process"):
            await owner.keep_alive(SessionId(12345))
        await owner.close()

    asyncio.run(main())


def test_a_key_that_came_and_went_unseen_is_reported_by_a_reset(zookeeper: Ensemble) -> None:
    """The watcher re-reads after a trigger; when a key was created and deleted before that
    re-read, neither listing shows it, and only the chroot's cversion says it was there."""
    url = f"{zookeeper.url}/unseen-{uuid.uuid4().hex[:8]}"

    def write_in_a_thread() -> None:
        async def write() -> None:
            writer = connect(url)
            await writer.create("/w/k", b"1")
            await writer.delete_if_version("/w/k", version=1)
            await writer.create("/other", b"x")  # seen: it explains one change, not two
            await writer.close()

        asyncio.run(write())

    async def main() -> None:
        watcher = connect(url)
        watch = await watcher.watch("/w/")
        thread = threading.Thread(target=write_in_a_thread)
        thread.start()
        thread.join(timeout=10.0)  # holds the watcher's loop: its trigger waits, re-reads once
        event = await asyncio.wait_for(anext(watch), 5.0)
        assert event.kind is EventKind.RESET
        assert await watcher.get("/w/k") is None
        await watcher.create("/w/k", b"back")  # and the watch goes on
        event = await asyncio.wait_for(anext(watch), 5.0)
        assert (event.kind, event.key) == (EventKind.PUT, "/w/k")
        await watcher.close()

    asyncio.run(main())
