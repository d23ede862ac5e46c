"""EtcdCoordinator against a real 3-member etcd cluster on loopback: the conformance suite,
TTL rules, a member killed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from planaria.coord import CoordinatorUnavailable, EventKind
from planaria.coord.etcd import EtcdCoordinator, smallest_etcd_ttl_ms
from planaria.coord.url import connect
from planaria.errors import UsageError

from ._ensemble_backend import EnsembleBackend
from ._servers import ETCD_ELECTION_MS, Ensemble
from .conformance import CHECKS, Backend, run_check

TTL_MS = smallest_etcd_ttl_ms(ETCD_ELECTION_MS)
T = TypeVar("T")


CUT_CHECKS = {"unreachable_backend_raises_unknown_outcome"}


def make_backend(ensemble: Ensemble, name: str) -> Backend:
    cut = name in CUT_CHECKS  # relayed, and timing out quickly while cut off
    return EnsembleBackend(
        ensemble,
        ttl_ms=TTL_MS,
        expiry_slack_ms=900.0,
        request_timeout_s=0.3 if cut else 10.0,  # generous: an ensemble under load is slow
        proxied=cut,
    )


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_etcd_backend_conforms(name: str, etcd: Ensemble) -> None:
    async def factory() -> Backend:
        return make_backend(etcd, name)

    run_check(CHECKS[name], factory)


def test_ttls_etcd_cannot_grant_exactly_are_refused(etcd: Ensemble) -> None:
    async def main() -> None:
        client = connect(f"{etcd.url}/ttl-{uuid.uuid4().hex[:8]}")
        assert isinstance(client, EtcdCoordinator)
        with pytest.raises(UsageError, match="whole seconds"):
            await client.open_session("n1", 300)
        with pytest.raises(UsageError, match="whole seconds"):
            await client.open_session("n1", TTL_MS + 1)
        await client.close()

    asyncio.run(main())


def test_a_paused_member_is_left_for_the_others(etcd: Ensemble) -> None:
    """A SIGSTOPped member accepts connections and never answers: calls time out once (an
    unknown outcome), then go to the next member; a watch opened there moves too."""
    paused, *others = etcd.members
    hosts = ",".join(f"127.0.0.1:{m.client_port}" for m in (paused, *others))
    url = f"etcd://{hosts}/paused-{uuid.uuid4().hex[:8]}"

    async def retried(call: Callable[[], Awaitable[T]]) -> T:
        for _ in range(len(etcd.members)):
            try:
                return await call()
            except CoordinatorUnavailable:
                continue
        return await call()

    async def main() -> None:
        client = connect(url, request_timeout_s=0.5)
        watcher = connect(url, request_timeout_s=0.5)
        watch = await watcher.watch("/w/")  # its stream goes to the member about to pause
        await client.create("/w/before", b"0")
        assert (await asyncio.wait_for(anext(watch), 10)).key == "/w/before"  # stream is up
        paused.pause()
        try:
            session = await retried(lambda: client.open_session("n1", 5000))
            await retried(lambda: client.create("/w/k", b"1", session=session))
            event = await asyncio.wait_for(anext(watch), 10)
            assert (event.kind, event.key) == (EventKind.PUT, "/w/k")
            for _ in range(3):
                await client.keep_alive(session)  # straight to a live member now
        finally:
            paused.resume()
        await client.close()
        await watcher.close()

    asyncio.run(main())
