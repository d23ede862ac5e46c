"""EtcdCoordinator against a real 3-member etcd cluster on loopback: the conformance suite,
TTL rules, a member killed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from planaria.coord import Coordinator
from planaria.coord.etcd import EtcdCoordinator, smallest_etcd_ttl_ms
from planaria.coord.url import connect
from planaria.errors import UsageError

from ._servers import ETCD_ELECTION_MS, Ensemble
from .conformance import CHECKS, Backend, run_check

TTL_MS = smallest_etcd_ttl_ms(ETCD_ELECTION_MS)


class EtcdBackend(Backend):
    ttl_ms = TTL_MS
    # etcd's leader looks for expired leases every 500 ms, and its revocation is a raft entry.
    expiry_slack_ms = 900.0

    def __init__(self, ensemble: Ensemble) -> None:
        self.url = f"{ensemble.url}/test-{uuid.uuid4().hex[:12]}"  # a fresh namespace each
        self.clients: list[Coordinator] = []

    async def client(self) -> Coordinator:
        client = connect(self.url, request_timeout_s=2.0)
        self.clients.append(client)
        return client

    async def advance(self, ms: float) -> None:
        await asyncio.sleep(ms / 1000.0)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_etcd_backend_conforms(name: str, etcd: Ensemble) -> None:
    async def factory() -> Backend:
        return EtcdBackend(etcd)

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
