"""AsyncClient against a real local cluster (a coordinator and 3 node processes on loopback,
bounded waits): issue #16, many writes of one client gathered at once, no faults."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from planaria.client import AsyncClient
from planaria.cluster import LocalCluster, free_base_port

pytestmark = pytest.mark.slow

WRITES = 400


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path / "data", nodes=3, partitions=8, base_port=free_base_port(3))
    try:
        local.start(timeout_s=60.0)
        local.wait_serving(timeout_s=30.0)
        yield local
    finally:
        local.stop()


def test_hundreds_of_gathered_writes_of_one_client_all_succeed(cluster: LocalCluster) -> None:
    seeds = list(cluster.addresses.values())

    async def main() -> tuple[list[bool | BaseException], list[bytes | BaseException | None]]:
        async with AsyncClient(seeds, timeout_s=30.0) as db:
            writes = await asyncio.gather(
                *(db.set(f"key:{i}", f"value:{i}") for i in range(WRITES)),
                return_exceptions=True,
            )
            reads = await asyncio.gather(
                *(db.get(f"key:{i}") for i in range(WRITES)), return_exceptions=True
            )
        return writes, reads

    writes, reads = asyncio.run(main())
    failed = [result for result in writes if result is not True]
    assert failed == [], f"{len(failed)} of {WRITES} writes failed, first: {failed[0]!r}"
    assert reads == [f"value:{i}".encode() for i in range(WRITES)]
