"""A node snapshots its partitions under writes, compacts memory and disk, reports it in
INFO, and a restarted node rebuilds its replicas from the snapshot plus the log's tail."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from planaria.cluster import partition_lines
from planaria.core.codec import encode_state
from planaria.core.compaction import SnapshotPolicy
from planaria.core.messages import ReplicaSnapshot, Version
from planaria.node._partition import _encode_in_turns

from ._cluster import FAST, LocalCluster
from ._writer import Writer

SNAPSHOTS = replace(
    FAST, snapshots=SnapshotPolicy(entries=10, log_bytes=1 << 20, catchup_entries=4)
)


def test_snapshots_bound_the_log_and_a_restart_starts_from_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2, settings=SNAPSHOTS)
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            for i in range(300):
                assert await writer.write_acked(b"k%d" % (i % 10), b"v%d" % i)

            def compacted() -> bool:
                return all(
                    runtime.log is not None
                    and runtime.log.snapshot_index > runtime.replica.applied_index - 10
                    and runtime.replica.log_entries <= 10 + 4
                    # The disk thread compacts the files after it stored a snapshot (the
                    # snapshot index shows first): wait for that too.
                    and runtime.log.log_entries < 50
                    for node in cluster.nodes.values()
                    for runtime in node.partitions.values()
                )

            def replicas() -> str:
                return ", ".join(
                    f"{node.node_id}/p{partition} {runtime.replica.role.name} applied "
                    f"{runtime.replica.applied_index} snapshot "
                    f"{runtime.log.snapshot_index if runtime.log else None} entries "
                    f"{runtime.replica.log_entries} on disk "
                    f"{runtime.log.log_entries if runtime.log else None}"
                    for node in cluster.nodes.values()
                    for partition, runtime in node.partitions.items()
                )

            # Under load a snapshot can take long enough for a segment to fill behind it;
            # the next snapshot seals and drops that segment, but none is due once the
            # writes stop. So a round of writes more each time the logs stay long (bounded).
            for round_ in range(21):
                settled = time.monotonic() + 5.0
                while not compacted() and time.monotonic() < settled:
                    await asyncio.sleep(0.01)
                if compacted():
                    break
                assert round_ < 20, f"not compacted after {round_} more rounds: {replicas()}"
                for i in range(30):
                    assert await writer.write_acked(b"k%d" % (i % 10), b"w%d" % i)
            n1 = cluster.nodes["n1"]
            lines = partition_lines(
                {k: str(v) for k, v in n1.info(["partitions"])["Partitions"].items()}
            )
            assert all(int(line["snapshot_index"]) > 50 for line in lines.values())
            assert all(int(line["log_entries"]) < 50 for line in lines.values())
            await n1.close()
            del cluster.nodes["n1"]
            await cluster.coordinators.pop("n1").close()
            n1 = await cluster.start_node("n1")
            for runtime in n1.partitions.values():
                # Rebuilt from the snapshot and the few records after it.
                assert runtime.log is not None and runtime.log.recovery.snapshot_index > 50
                assert runtime.log.recovery.records < 50
            await cluster.wait_for(cluster.all_serving, 30.0, "served again")

            def same_state() -> bool:
                for partition, runtime in n1.partitions.items():
                    primary = cluster.primary_of(partition)
                    if primary is None:
                        return False
                    reference = cluster.nodes[primary].partitions[partition].replica
                    if dict(runtime.replica.applied) != dict(reference.applied):
                        return False
                return True

            await cluster.wait_for(same_state, 30.0, "the restarted node holds the state")
            assert await writer.write_acked(b"k0", b"after")
        finally:
            await writer.close()
            await cluster.close()

    asyncio.run(scenario())


def test_a_snapshot_is_encoded_in_turns_that_let_the_loop_run() -> None:
    """The node encodes a snapshot on its event loop a piece at a time: the bytes are
    encode_state's, and other tasks run while it encodes (200,000 keys take well over the
    1 ms a turn may last, on any machine)."""
    kv = {b"key-%d" % i: (b"v" * 10, Version(1, i + 1)) for i in range(200_000)}
    view = ReplicaSnapshot(0, 200_000, 1, MappingProxyType(kv), MappingProxyType({}), 64)

    async def scenario() -> tuple[bytes, int]:
        turns = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal turns
            while not done.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        counted = turns
        data = b"".join(await _encode_in_turns(view))
        done.set()
        await task
        return data, turns - counted

    data, turns_meanwhile = asyncio.run(scenario())
    assert data == encode_state(view)
    assert turns_meanwhile > 1
