"""A node wiped after its primaries compacted their logs is refilled by snapshot transfer
(over the real bus, in many chunks), catches up on the log after the snapshot and rejoins
every ISR."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from planaria.core.compaction import SnapshotPolicy
from planaria.core.transfer import TransferSettings

from ._cluster import FAST, LocalCluster
from ._writer import Writer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SETTINGS = replace(
    FAST,
    snapshots=SnapshotPolicy(entries=10, log_bytes=1 << 20, catchup_entries=4),
    # Small chunks: one snapshot takes many round trips.
    transfer=TransferSettings(chunk_bytes=512, window_chunks=2, retry_ms=100),
)


def test_a_wiped_node_is_refilled_by_snapshot_transfer_and_rejoins_the_isr(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2, settings=SETTINGS)
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            for i in range(300):
                assert await writer.write_acked(b"k%d" % (i % 40), b"v%d" % i)
            await cluster.crash("n3")
            shutil.rmtree(tmp_path / "n3")  # its disk is replaced by an empty one
            for i in range(300, 400):  # the primaries snapshot and compact on
                assert await writer.write_acked(b"k%d" % (i % 40), b"v%d" % i)

            def compacted_past_everything() -> bool:
                return all(
                    node.partitions[p].replica.base_index > 0
                    for p in range(2)
                    if (primary := cluster.primary_of(p)) is not None
                    for node in [cluster.nodes[primary]]
                )

            await cluster.wait_for(compacted_past_everything, 10.0, "the primaries compacted")
            n3 = await cluster.start_node("n3")

            def refilled_and_in_sync() -> bool:
                for partition in range(2):
                    primary = cluster.primary_of(partition)
                    if primary is None or partition not in n3.partitions:
                        return False
                    reference = cluster.nodes[primary].partitions[partition].replica
                    config = cluster.nodes[primary].partitions[partition].config
                    mine = n3.partitions[partition].replica
                    if (
                        config is None
                        or "n3" not in config.isr
                        or dict(mine.applied) != dict(reference.applied)
                    ):
                        return False
                return True

            await cluster.wait_for(refilled_and_in_sync, 30.0, "n3 refilled and in the ISR")
            assert all(n3.partitions[p].snapshots_installed >= 1 for p in range(2))
            sent = sum(
                int(str(node.info(["cluster"])["Cluster"]["transfers_done"]))
                + int(str(node.info(["cluster"])["Cluster"]["transfers"]))
                for node in cluster.nodes.values()
            )
            assert sent >= 2
            assert await writer.write_acked(b"k0", b"after")
        finally:
            await writer.close()
            await cluster.close()

    asyncio.run(scenario())
