"""ZooKeeperCoordinator against a real 3-server ZooKeeper ensemble on loopback: the
conformance suite, TTL negotiation, the connection states."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import pytest

from planaria.coord import CoordinatorUnavailable, EventKind, SessionExpired, SessionId
from planaria.coord.url import connect
from planaria.coord.zookeeper import ZooKeeperCoordinator
from planaria.errors import UsageError

from ._ensemble_backend import EnsembleBackend
from ._servers import ZK_TICK_MS, Ensemble, QuorumRelays, four_letter, zookeeper_ensemble
from .conformance import CHECKS, Backend, run_check

CUT_CHECKS = {"unreachable_backend_raises_unknown_outcome"}


def make_backend(ensemble: Ensemble, name: str) -> Backend:
    cut = name in CUT_CHECKS  # relayed, and timing out quickly while cut off
    return EnsembleBackend(
        ensemble,
        ttl_ms=300.0,
        expiry_slack_ms=4 * ZK_TICK_MS + 100.0,
        request_timeout_s=0.3 if cut else 10.0,  # generous: a JVM ensemble under load is slow
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
        # A TTL a loaded machine cannot miss by accident (kazoo pings at a third of it).
        ttl_ms = 1000
        session = await owner.open_session("n1", ttl_ms)
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
        await asyncio.sleep(2.5 * ttl_ms / 1000)  # past the TTL: only the other thread renews
        assert await owner.get("/eph") is not None
        stop.set()
        await asyncio.to_thread(thread.join)
        # Without renewals the session ends: waited for, with a generous deadline.
        deadline = time.monotonic() + 15.0
        while await owner.get("/eph") is not None:
            assert time.monotonic() < deadline, "the session outlived its renewals"
            await asyncio.sleep(0.05)
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


@pytest.mark.slow
def test_a_follower_cut_off_from_the_leader_acknowledges_no_keep_alive(tmp_path: Path) -> None:
    """The client reaches one follower only; that follower's links to the leader are
    blackholed. The leader's quorum expires the session after its TTL, while the follower,
    until its syncLimit (here 10 s) runs out, still believes it follows and answers reads
    from its own state: a keep-alive it answered alone would extend the node's lease after
    a new primary could have been promoted. No keep-alive sent after the cut may succeed."""
    with (
        QuorumRelays() as relays,
        zookeeper_ensemble(tmp_path, relays, sync_limit_ticks=200) as ensemble,
    ):
        leader = ensemble.leader()
        follower = next(m for m in ensemble.members if m is not leader)
        chroot = f"/cut-{uuid.uuid4().hex[:8]}"

        async def main() -> None:
            on_follower = connect(
                f"zk://127.0.0.1:{follower.client_port}{chroot}", request_timeout_s=1.0
            )
            on_leader = connect(f"zk://127.0.0.1:{leader.client_port}{chroot}")
            session = await on_follower.open_session("n1", 300)
            await on_follower.create("/eph", b"x", session=session)
            acknowledged_after_cut: list[float] = []
            cut_at = float("inf")

            async def renew() -> None:  # as a node does: every 50 ms, until it fails
                while True:
                    sent = time.monotonic()
                    try:
                        await on_follower.keep_alive(session)
                    except (CoordinatorUnavailable, SessionExpired):
                        return
                    if sent >= cut_at:
                        acknowledged_after_cut.append(sent - cut_at)
                    await asyncio.sleep(0.05)

            renewing = asyncio.create_task(renew())
            await asyncio.sleep(0.3)
            relays.cut(follower.quorum_relays)
            cut_at = time.monotonic()
            deadline = cut_at + 10.0
            while await on_leader.get("/eph") is not None:  # the leader expired the session
                assert time.monotonic() < deadline, "the leader never expired the session"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # renewals go on meanwhile, if the follower answers
            assert "Mode: follower" in four_letter(follower.client_port, b"srvr")
            assert acknowledged_after_cut == []
            await asyncio.wait_for(renewing, 5.0)
            relays.heal(follower.quorum_relays)
            await on_follower.close()
            await on_leader.close()

        asyncio.run(main())
