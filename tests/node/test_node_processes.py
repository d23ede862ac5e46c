"""Real node processes and the embedded coordinator on loopback: kill -9, SIGSTOP, and a
full-cluster kill -9 with fsync always. No acknowledged write may be lost."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from planaria.core.slots import keyslot, partition_of_slot

from ._procs import ProcCluster
from ._writer import Writer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def victim_of(cluster: ProcCluster) -> tuple[str, set[int]]:
    """The node that is primary for the most partitions, and those partitions."""
    serving = cluster.serving()
    victim = Counter(serving.values()).most_common(1)[0][0]
    return victim, {p for p, node in serving.items() if node == victim}


async def write_through_fault(
    cluster: ProcCluster,
    victim: str,
    affected: set[int],
    signum: int,
    *,
    timeout_s: float,
) -> tuple[Writer, float]:
    """Write with 8 workers, send ``signum`` to ``victim``, write on until every affected
    partition acknowledged a write after it. Returns the writer and the failover time (s)."""
    others = [cluster.address(n) for n in cluster.names if n != victim]
    writer = Writer([cluster.address(victim), *others], timeout_s=timeout_s)
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            await writer.write(f"w{worker}-{i}".encode(), f"v{i}".encode())
            i += 1

    def acked_after(moment: float) -> set[int]:
        """Partitions with a write acknowledged by another node than the victim since."""
        return {
            partition_of_slot(keyslot(key), cluster.partitions)
            for t, key, address in writer.ack_times
            if t > moment and address != cluster.address(victim)
        }

    workers = [asyncio.create_task(load(w)) for w in range(8)]
    await asyncio.sleep(0.5)
    assert writer.acked, cluster.logs()
    cluster.signal(victim, signum)
    faulted_at = time.monotonic()
    writer.seeds = others
    deadline = faulted_at + 20.0
    while not affected <= acked_after(faulted_at):
        assert time.monotonic() < deadline, cluster.logs()
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*workers)
    failover_s = min(
        t
        for t, key, address in writer.ack_times
        if t > faulted_at
        and address != cluster.address(victim)
        and partition_of_slot(keyslot(key), cluster.partitions) in affected
    )
    return writer, failover_s - faulted_at


def rejoined(cluster: ProcCluster, node: str) -> bool:
    """Every primary lists ``node`` in its ISR with no replica lagging (INFO partitions)."""
    seen = 0
    for name in cluster.names:
        info = cluster.info(name) or {}
        for field, value in info.items():
            if not (field.startswith("p") and field[1:].isdigit() and isinstance(value, dict)):
                continue
            if value.get("role") != "primary":
                continue
            seen += 1
            if node not in str(value.get("isr", "")).split("|") or value.get("lag") != 0:
                return False
    return seen == cluster.partitions


async def read_back(seeds: list[str], acked: dict[bytes, bytes]) -> list[bytes]:
    """The acknowledged keys whose value reads back differently."""
    reader = Writer(seeds)
    try:
        return [key for key, value in acked.items() if await reader.command(b"GET", key) != value]
    finally:
        await reader.close()


def test_kill9_of_a_primary_during_writes_loses_no_acked_write(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path)
    try:
        cluster.start()
        victim, affected = victim_of(cluster)

        async def scenario() -> None:
            writer, failover_s = await write_through_fault(
                cluster, victim, affected, signal.SIGKILL, timeout_s=2.0
            )
            print(f"failover after kill -9: {failover_s * 1000:.0f} ms, {len(writer.acked)} acked")
            assert failover_s < 5.0, cluster.logs()
            lost = await read_back(writer.seeds, writer.acked)
            await writer.close()
            assert lost == [], cluster.logs()

        asyncio.run(scenario())
        # The killed node restarts from its data directory, catches up and rejoins every ISR.
        cluster.start_node(victim)
        cluster.wait_serving(20.0)
        deadline = time.monotonic() + 20.0
        while not rejoined(cluster, victim):
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.1)
    finally:
        cluster.stop()


def test_sigstop_of_a_primary_is_detected_and_it_steps_down_after_sigcont(
    tmp_path: Path,
) -> None:
    cluster = ProcCluster(tmp_path)
    try:
        cluster.start()
        victim, affected = victim_of(cluster)
        epochs_before = cluster.epochs(victim)

        async def scenario() -> None:
            writer, failover_s = await write_through_fault(
                cluster, victim, affected, signal.SIGSTOP, timeout_s=0.5
            )
            print(f"failover after SIGSTOP: {failover_s * 1000:.0f} ms")
            assert failover_s < 5.0, cluster.logs()
            assert cluster.procs[victim].poll() is None  # paused, not dead: nothing closed
            cluster.signal(victim, signal.SIGCONT)
            lost = await read_back(writer.seeds, writer.acked)
            await writer.close()
            assert lost == [], cluster.logs()

        asyncio.run(scenario())
        deadline = time.monotonic() + 10.0
        while True:
            info = cluster.info(victim)
            if info is not None and int(str(info["sessions_lost"])) >= 1:
                break
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.05)
        serving_on_victim = {p for p, node in cluster.serving([victim]).items()}
        # The old primary stepped down: whatever it serves again (the preferred-leader
        # balance hands partitions back once it caught up) it serves in a newer epoch.
        epochs_now = cluster.epochs(victim)
        stale = {p for p in serving_on_victim & affected if epochs_now[p] <= epochs_before[p]}
        assert not stale, (stale, epochs_before, epochs_now, cluster.logs())
        cluster.wait_serving(10.0)
    finally:
        cluster.stop()


def test_full_cluster_kill9_and_restart_keeps_every_acked_write(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path, partitions=4)
    try:
        cluster.start()
        seeds = [cluster.address(n) for n in cluster.names]

        async def write_some() -> dict[bytes, bytes]:
            writer = Writer(seeds)
            keys = [f"d{i}".encode() for i in range(300)]
            for start in range(0, len(keys), 30):
                await asyncio.gather(*(writer.write(k, k[::-1]) for k in keys[start : start + 30]))
            await writer.close()
            return writer.acked

        acked = asyncio.run(write_some())
        assert len(acked) == 300
        for name in [*cluster.names, "coordinator"]:
            cluster.signal(name, signal.SIGKILL)
        cluster.start_coordinator()
        for name in cluster.names:
            cluster.start_node(name)
        cluster.wait_serving(30.0)
        assert asyncio.run(read_back(seeds, acked)) == [], cluster.logs()
    finally:
        cluster.stop()


def test_a_dead_coordinator_stops_serving_at_the_lease_end_and_nodes_resume(
    tmp_path: Path,
) -> None:
    cluster = ProcCluster(tmp_path, partitions=4)
    try:
        cluster.start()
        cluster.signal("coordinator", signal.SIGKILL)
        killed_at = time.monotonic()
        # Nodes stop serving once their lease ran out (200 ms): never two primaries.
        deadline = killed_at + 5.0
        while cluster.serving():
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.02)
        assert all(cluster.procs[n].poll() is None for n in cluster.names)  # none crashed
        cluster.start_coordinator()
        cluster.wait_serving(20.0)

        async def write() -> bool:
            writer = Writer([cluster.address(n) for n in cluster.names])
            try:
                return await writer.write(b"after-the-coordinator", b"1")
            finally:
                await writer.close()

        assert asyncio.run(write())
    finally:
        cluster.stop()
