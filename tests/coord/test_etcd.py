"""EtcdCoordinator against a real 3-member etcd cluster on loopback: the conformance suite,
TTL rules, a member killed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from planaria.coord.etcd import EtcdCoordinator, smallest_etcd_ttl_ms
from planaria.coord.url import connect
from planaria.errors import UsageError

from ._ensemble_backend import EnsembleBackend
from ._servers import ETCD_ELECTION_MS, Ensemble
from .conformance import CHECKS, Backend, run_check

TTL_MS = smallest_etcd_ttl_ms(ETCD_ELECTION_MS)


CUT_CHECKS = {"unreachable_backend_raises_unknown_outcome"}


def make_backend(ensemble: Ensemble, name: str) -> Backend:
    if name in CUT_CHECKS:  # a long TTL: the session must outlive the cut's timeouts
        return EnsembleBackend(
            ensemble, ttl_ms=5000.0, expiry_slack_ms=900.0, request_timeout_s=0.3, proxied=True
        )
    return EnsembleBackend(ensemble, ttl_ms=TTL_MS, expiry_slack_ms=900.0)


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
