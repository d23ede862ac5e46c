"""Nodes in one event loop on one MemoryStore: routing, failover, catch-up, bad input."""

from __future__ import annotations

import asyncio
import errno
import functools
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from planaria._native import compiled
from planaria.coord import MemoryCoordinator
from planaria.core.messages import EXPIRE_KEYS_PER_ENTRY, ExpireKeys, PartitionConfig
from planaria.core.replica import Role
from planaria.core.slots import keyslot, partition_of_slot
from planaria.errors import UsageError
from planaria.node import Node, NodeSettings
from planaria.storage import StorageFull, StorageLocked

from ._cluster import LocalCluster
from ._writer import Writer

pytestmark = pytest.mark.timeout(60)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def key_of(partition: int, partitions: int, prefix: str = "k") -> bytes:
    """A key whose slot belongs to ``partition``."""
    for i in range(100_000):
        key = f"{prefix}{i}".encode()
        if partition_of_slot(keyslot(key), partitions) == partition:
            return key
    raise AssertionError("no key found")


def test_settings_refuse_a_lease_longer_than_the_session() -> None:
    with pytest.raises(UsageError, match="session_ttl_ms"):
        NodeSettings(session_ttl_ms=200, lease_ms=200)
    with pytest.raises(UsageError, match="loop_stall_max_ms"):
        NodeSettings(loop_stall_max_ms=100)


def test_redis_py_cluster_writes_reads_and_moved(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path)
        await cluster.start()
        try:
            first = next(iter(cluster.nodes.values()))
            seed = aredis.RedisCluster(host="127.0.0.1", port=first.port)
            for i in range(60):
                assert await seed.set(f"key{i}", f"value{i}")
            assert await seed.get("key7") == b"value7"
            assert await seed.set("key7", "x", nx=True) is None  # NX on an existing key
            assert await seed.delete("key8") == 1
            assert await seed.exists("key8", "key9") == 1
            await seed.aclose()
            # A plain client asking the wrong node is redirected to the primary.
            key = key_of(0, cluster.partitions)
            primary = cluster.primary_of(0)
            other = next(n for n in cluster.nodes.values() if n.node_id != primary)
            plain = aredis.Redis(port=other.port)
            with pytest.raises(redis.exceptions.MovedError) as moved:
                await plain.set(key, b"v")
            assert str(moved.value).split()[1] == cluster.nodes[str(primary)].address
            # READONLY reads may come from a backup (stale reads, honestly labelled).
            owner = aredis.Redis(port=cluster.nodes[str(primary)].port)
            assert await owner.set(key, b"v1")
            await plain.execute_command("READONLY")
            deadline = time.monotonic() + 2
            while await plain.get(key) != b"v1":  # a backup applies once it learns the commit
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            info = await plain.info()
            assert info["planaria_node"] == other.node_id
            assert info["compiled"] == ("yes" if compiled() else "no")
            assert info["partitions_here"] == cluster.partitions
            cluster_info = (await plain.execute_command("CLUSTER", "INFO")).decode()
            assert "cluster_state:ok" in cluster_info
            slots = await plain.execute_command("CLUSTER", "SLOTS")
            assert sum(end - start + 1 for start, end, *_ in slots) == 16384
            await plain.aclose()
            await owner.aclose()
        finally:
            await cluster.close()

    run(scenario())


def test_redis_py_cluster_counts_and_strings_through_the_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path)
        await cluster.start()
        try:
            seed = aredis.RedisCluster(
                host="127.0.0.1", port=next(iter(cluster.nodes.values())).port
            )
            assert [await seed.incr("hits") for _ in range(5)] == [1, 2, 3, 4, 5]
            assert await seed.incrby("hits", 10) == 15
            assert await seed.decr("hits") == 14
            assert await seed.incrbyfloat("price", 10.5) == 10.5
            assert await seed.incrbyfloat("price", 0.1) == 10.6
            assert await seed.append("greeting", "hello") == 5
            assert await seed.setrange("greeting", 0, "J") == 5
            assert await seed.getrange("greeting", 0, -1) == b"Jello"
            assert await seed.strlen("greeting") == 5
            assert await seed.getset("greeting", "bye") == b"Jello"
            assert await seed.getdel("greeting") == b"bye"
            assert await seed.setnx("once", "1") is True
            assert await seed.setnx("once", "2") is False
            assert await seed.mset({"{u}a": "1", "{u}b": "2"}) is True
            assert await seed.mget("{u}a", "{u}b", "{u}c") == [b"1", b"2", None]
            assert await seed.msetnx({"{u}b": "3", "{u}c": "4"}) is False
            await seed.set("text", "x")
            with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
                await seed.incr("text")
            await seed.aclose()
            # Every replica applied the same log: the backups hold the same counter.
            key = b"hits"
            partition = partition_of_slot(keyslot(key), cluster.partitions)

            def replicas_agree() -> bool:
                held = [
                    node.partitions[partition].replica.applied.get(key)
                    for node in cluster.nodes.values()
                    if partition in node.partitions
                ]
                return len(held) == 3 and all(v is not None and v[0] == b"14" for v in held)

            await cluster.wait_for(replicas_agree, 10.0, "every replica holds hits = 14")
        finally:
            await cluster.close()

    run(scenario())


def test_redis_py_expiry_and_active_expiry_through_the_log(tmp_path: Path) -> None:
    """SET EX, EXPIRE, TTL, PERSIST, GETEX through redis-py; then more keys than one active
    expiry entry takes expire at once and every replica drops all of them (the primary's
    entries, in slices: backups never expire a key on their own)."""
    keys_count = 3 * EXPIRE_KEYS_PER_ENTRY + 1

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2)
        await cluster.start()
        try:
            seed = aredis.RedisCluster(
                host="127.0.0.1", port=next(iter(cluster.nodes.values())).port
            )
            assert await seed.set("session", "s", ex=100) is True
            assert 50 <= await seed.ttl("session") <= 100  # loose: a loaded machine
            assert await seed.expire("session", 200, gt=True) is True
            assert await seed.persist("session") is True
            assert await seed.ttl("session") == -1
            assert await seed.getex("session", pxat=4_000_000_000_000) == b"s"
            assert await seed.pexpiretime("session") == 4_000_000_000_000
            assert await seed.setex("gone", 100, "x") is True
            assert await seed.expire("gone", -1) is True
            assert await seed.get("gone") is None
            # Many keys of one slot expire together, soon.
            pipe = seed.pipeline(transaction=False)
            for i in range(keys_count):
                pipe.set(f"{{e}}{i}", "v", px=300)
            assert all(await pipe.execute())
            await seed.aclose()
            partition = partition_of_slot(keyslot(b"{e}"), cluster.partitions)
            expiring = {f"{{e}}{i}".encode() for i in range(keys_count)}

            def every_replica_dropped_them() -> bool:
                replicas = [
                    node.partitions[partition].replica
                    for node in cluster.nodes.values()
                    if partition in node.partitions
                ]
                return len(replicas) == 3 and all(
                    not expiring & replica.applied.keys() and not expiring & set(replica.expiries)
                    for replica in replicas
                )

            await cluster.wait_for(every_replica_dropped_them, 20.0, "the keys expired")
            primary = cluster.primary_of(partition)
            assert primary is not None
            replica = cluster.nodes[primary].partitions[partition].replica
            slices = [
                entry.op.keys
                for entry in replica.entries_after(replica.base_index)
                if isinstance(entry.op, ExpireKeys)
            ]
            assert slices and max(len(keys) for keys in slices) <= EXPIRE_KEYS_PER_ENTRY
            if replica.base_index == 0:  # nothing compacted: every slice is still there
                assert sum(len(keys) for keys in slices) >= keys_count
        finally:
            await cluster.close()

    run(scenario())


def test_primary_crash_fails_over_and_keeps_every_acked_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path)
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            counts = Counter(cluster.primary_of(p) for p in range(cluster.partitions))
            victim = counts.most_common(1)[0][0]
            assert victim is not None
            affected = {p for p in range(cluster.partitions) if cluster.primary_of(p) == victim}
            writer.seeds = [n.address for n in cluster.nodes.values() if n.node_id != victim]
            stop = asyncio.Event()

            async def load(worker: int) -> None:
                i = 0
                while not stop.is_set():
                    await writer.write(f"w{worker}-{i}".encode(), f"v{i}".encode())
                    i += 1

            workers = [asyncio.create_task(load(w)) for w in range(4)]
            await asyncio.sleep(0.2)
            before = len(writer.acked)
            killed_at = time.monotonic()
            await cluster.crash(victim)
            await cluster.wait_for(
                lambda: affected <= cluster.serving(), 10.0, "the victim's partitions served"
            )
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*workers)
            assert before > 0 and len(writer.acked) > before
            first_after = min(
                t
                for t, key, _node in writer.ack_times
                if t > killed_at and partition_of_slot(keyslot(key), cluster.partitions) in affected
            )
            assert first_after - killed_at < 5.0
            reader = Writer(writer.seeds)
            for key, value in writer.acked.items():
                assert await reader.command(b"GET", key) == value, key
            await reader.close()
        finally:
            await writer.close()
            await cluster.close()

    run(scenario())


def test_a_second_process_with_the_same_node_id_waits_for_the_old_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rescheduled pod starts while the old one, cut off from the coordinator, still
    serves under its lease. If it took the registration over, the controller would see a
    new incarnation and fail the old one's partitions over at once: two primaries until
    the old lease ran out. It must wait for the old session to end instead; and the old
    one, still reaching its peers, must stop acking Appends as n1 once out of lease."""

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path)
        await cluster.start()
        old = cluster.nodes["n1"]
        old_session = old.session
        assert old_session is not None and old.serving_partitions()
        overlaps: list[tuple[int, str, str]] = []
        sampling = True

        def servers() -> dict[int, list[str]]:
            nodes = {*cluster.nodes.values(), old, *([new] if new is not None else [])}
            found: dict[int, list[str]] = {}
            for node in nodes:
                for partition in node.serving_partitions():
                    found.setdefault(partition, []).append(f"{node.node_id}@{id(node)}")
            return found

        async def sample() -> None:
            while sampling:
                for partition, names in servers().items():
                    if len(names) > 1:
                        overlaps.append((partition, names[0], names[1]))
                await asyncio.sleep(0.002)

        new: Node | None = None
        sampler = asyncio.create_task(sample())
        cluster.coordinators["n1"].disconnect()  # cut off: renews nothing, serves its lease
        # The pod's volume follows it (an empty disk is another matter: a wiped replica).
        shutil.copytree(tmp_path / "n1", tmp_path / "n1-rescheduled")
        new_coordinator = MemoryCoordinator(cluster.store)
        new = Node(
            "n1",
            listen="127.0.0.1:0",
            bus_listen="127.0.0.1:0",
            coordinator=new_coordinator,
            data_dir=tmp_path / "n1-rescheduled",
            settings=cluster.settings,
        )
        starting = asyncio.create_task(new.start())
        try:
            while True:  # one read a turn: the old session may end between two reads
                member = (await cluster.admin.members()).get("n1")
                if member is None or member.session != old_session:
                    break
                assert not starting.done(), "started while the old session held the id"
                await asyncio.sleep(0.01)
            # Whoever holds n1 now (if anyone) took it only after the old session ended.
            assert not cluster.store.session_info(old_session).alive, "took over"
            await asyncio.wait_for(starting, 10.0)
            assert (await cluster.admin.members())["n1"].session == new.session
            # The old pod lives on, cut off from the coordinator but not from its peers: out
            # of lease it acks no Append, or a primary would count them as the new n1's.
            cluster.nodes["n1"] = new
            await cluster.wait_for(cluster.all_serving, 10.0, "every partition served")
            writer = Writer([node.address for node in cluster.nodes.values()])
            for i in range(40):
                assert await writer.write_acked(f"after{i}".encode(), b"v")
            await writer.close()
            assert overlaps == []
            # Had the old pod's acks counted as the new n1's, a partition would have been
            # handed to the new n1 without entries it "acked": it then asks its backups to
            # truncate committed entries (refused by the persist rules, logged).
            assert not [r for r in caplog.records if "persist failed" in r.getMessage()]
            assert old.replies_unleased > 0 and not old.serving_partitions()
        finally:
            sampling = False
            await sampler
            if not starting.done():
                starting.cancel()
            if cluster.nodes.get("n1") is not new:
                await new.close()
            await old.close(close_session=False)
            await new_coordinator.close()
            await cluster.close()

    run(scenario())


def test_restarted_node_catches_up_and_rejoins_the_isr(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=4)
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            for i in range(20):
                assert await writer.write_acked(f"a{i}".encode(), b"1")
            await cluster.crash("n3")
            writer.seeds = [cluster.nodes["n1"].address, cluster.nodes["n2"].address]
            await cluster.wait_for(cluster.all_serving, 10.0, "served without n3")
            for i in range(40):
                assert await writer.write_acked(f"b{i}".encode(), b"2")
            with pytest.raises(StorageLocked):  # one process per data directory
                node = Node(
                    "n1",
                    listen="127.0.0.1:0",
                    bus_listen="127.0.0.1:0",
                    coordinator=cluster.admin,
                    data_dir=tmp_path / "n1",
                )
                await node.start()
            await cluster.start_node("n3")

            def caught_up() -> bool:
                for partition in range(cluster.partitions):
                    primary = cluster.primary_of(partition)
                    if primary is None:
                        return False
                    runtime = cluster.nodes[primary].partitions[partition]
                    config = runtime.config
                    if config is None or "n3" not in config.isr:
                        return False
                    behind = runtime.replica.match_index("n3") < runtime.replica.last_index
                    if primary != "n3" and behind:
                        return False
                return True

            await cluster.wait_for(caught_up, 10.0, "n3 caught up and back in every ISR")
            n3 = cluster.nodes["n3"]
            # Preferred-leader balance: partitions whose placement prefers n3 come back to it.
            await cluster.wait_for(
                lambda: any(r.replica.role is Role.PRIMARY for r in n3.partitions.values()),
                10.0,
                "n3 leads its preferred partitions again",
            )
            # A backup applies what the primary's next Append says is committed.
            await cluster.wait_for(
                lambda: sum(len(r.replica.applied) for r in n3.partitions.values()) == 60,
                5.0,
                "n3 applied every acknowledged write",
            )
        finally:
            await writer.close()
            await cluster.close()

    run(scenario())


def test_coordinator_loss_stops_serving_then_the_node_rejoins(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=4)
        await cluster.start()
        try:
            victim = cluster.primary_of(0)
            assert victim is not None
            node = cluster.nodes[victim]
            mine = set(node.serving_partitions())
            cluster.coordinators[victim].disconnect()
            # Its lease runs out: it stops serving (never two primaries), and the others
            # take over once its session expired.
            await cluster.wait_for(lambda: not node.serving_partitions(), 2.0, "lease ran out")
            await cluster.wait_for(
                lambda: mine <= {p for n in cluster.nodes.values() for p in n.serving_partitions()},
                10.0,
                "failover",
            )
            cluster.coordinators[victim].reconnect()
            await cluster.wait_for(lambda: node.sessions_lost == 1, 5.0, "session loss noticed")
            await cluster.wait_for(
                lambda: all(
                    c is not None and victim in c.isr
                    for c in (r.config for r in node.partitions.values())
                ),
                10.0,
                "rejoined every ISR",
            )
        finally:
            await cluster.close()

    run(scenario())


def test_bad_input_keeps_the_node_healthy(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2)
        await cluster.start()
        try:
            node = cluster.nodes["n1"]
            loop = asyncio.get_running_loop()

            def garbage(port: int, payload: bytes) -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                    chunks = []
                    while chunk := sock.recv(4096):
                        chunks.append(chunk)
                    return b"".join(chunks)

            reply = await loop.run_in_executor(
                None, garbage, node.port, b"*2\r\n$3\r\nGET\r\n:1\r\n"
            )
            assert reply.startswith(b"-ERR Protocol error")
            # Garbage on the replication bus closes that connection only.
            reply = await loop.run_in_executor(
                None, garbage, node.bus_port, b"\x00\x00\x00\x05hello"
            )
            assert reply == b""
            client = aredis.Redis(port=node.port)
            with pytest.raises(redis.ResponseError, match="unknown command"):
                await client.execute_command("FLUSHALL")
            with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
                await client.execute_command("GET")
            with pytest.raises(redis.ResponseError):
                await client.set(b"k" * 10_000, b"v")
            assert await client.ping()
            writer = Writer([node.address])
            assert await writer.write_acked(b"after", b"garbage")
            await writer.close()
            await client.aclose()
        finally:
            await cluster.close()

    run(scenario())


def test_fsync_always_cluster_serves_with_group_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2, settings=NodeSettings())
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            keys = [f"g{i}".encode() for i in range(200)]
            results = await asyncio.gather(*(writer.write(k, b"v") for k in keys))
            assert all(results)
            runtimes = [r for n in cluster.nodes.values() for r in n.partitions.values()]
            entries = sum(r.persisted_entries for r in runtimes)
            batches = sum(r.persist_batches for r in runtimes)
            assert entries >= 3 * len(keys)
            assert batches < entries  # concurrent writes share fsyncs
        finally:
            await writer.close()
            await cluster.close()

    run(scenario())


def test_full_disk_refuses_the_write_and_the_primary_resigns(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2)
        await cluster.start()
        try:
            primary = cluster.primary_of(0)
            assert primary is not None
            node = cluster.nodes[primary]
            runtime = node.partitions[0]
            assert runtime.log is not None
            segment = runtime.log._active  # the open segment file

            def epoch_of_p0() -> int:
                return max(n.configs[0].epoch for n in cluster.nodes.values() if 0 in n.configs)

            epoch_before = epoch_of_p0()

            def disk_full(data: bytes) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            segment.append = disk_full  # type: ignore[method-assign, union-attr]
            client = aredis.Redis(port=node.port)
            key = key_of(0, cluster.partitions)
            with pytest.raises(redis.ResponseError, match="UNKNOWN"):
                await client.set(key, b"never acked")
            assert runtime.storage_failures == 1
            assert isinstance(runtime.last_storage_error, StorageFull)
            # The primary resigned: another in-sync replica took the partition (a new
            # epoch; the preferred-leader balance may hand it back once the node recovered),
            # and writes go on; the one that met the full disk was never acknowledged.
            await cluster.wait_for(lambda: epoch_of_p0() > epoch_before, 5.0, "resigned")
            assert await client.ping()
            writer = Writer([n.address for n in cluster.nodes.values()])
            assert await writer.write_acked(key, b"after")
            assert await writer.write_acked(key_of(1, cluster.partitions), b"fine")
            assert await writer.command(b"GET", key) == b"after"
            await writer.close()
            await client.aclose()
        finally:
            await cluster.close()

    run(scenario())


def test_a_retried_reqid_write_is_applied_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2)
        await cluster.start()
        try:
            key = key_of(0, cluster.partitions)
            primary = cluster.primary_of(0)
            assert primary is not None
            client = aredis.Redis(port=cluster.nodes[primary].port)
            assert await client.execute_command("SET", key, "v1", "REQID", "client-a", "1")
            assert await client.delete(key) == 1  # a plain write in between
            # The retry gets the stored reply and is not applied again.
            assert await client.execute_command("SET", key, "v1", "REQID", "client-a", "1")
            assert await client.get(key) is None
            # SET ... GET: a retry answers the old value the first try saw (the stored
            # reply keeps it, in snapshots too), not the value now.
            await client.set(key, "old")
            client.set_response_callback("SET", lambda reply, **_: reply)  # type: ignore[arg-type]
            assert (
                await client.execute_command("SET", key, "new", "GET", "REQID", "client-a", "2")
                == b"old"
            )
            assert await client.set(key, "newer") == b"OK"
            assert (
                await client.execute_command("SET", key, "new", "GET", "REQID", "client-a", "2")
                == b"old"
            )
            assert await client.get(key) == b"newer"
            await client.aclose()
        finally:
            await cluster.close()

    run(scenario())


def test_reqid_writes_out_of_order_apply_once_and_too_old_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2)
        await cluster.start()
        try:
            primary = cluster.primary_of(0)
            assert primary is not None
            client = aredis.Redis(port=cluster.nodes[primary].port)
            keys = [key_of(0, cluster.partitions, f"k{seq}:") for seq in range(3)]

            async def write(key: bytes, seq: int) -> object:
                return await client.execute_command("SET", key, "v", "REQID", "client-b", seq)

            # Seq 100 lands before seq 90 (inside the default window of 64): both apply.
            assert await write(keys[0], 100) and await write(keys[1], 90)
            assert await client.get(keys[0]) == await client.get(keys[1]) == b"v"
            await client.delete(keys[1])
            assert await write(keys[1], 90)  # a retry: the stored reply, not applied again
            assert await client.get(keys[1]) is None
            with pytest.raises(redis.ResponseError, match="SEQTOOOLD"):
                await write(keys[2], 36)  # 100 - 64: below the window
            assert await client.get(keys[2]) is None
            await client.aclose()
        finally:
            await cluster.close()

    run(scenario())


def test_a_node_on_a_replaced_disk_leaves_every_isr_until_refilled(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=4)
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            for i in range(20):
                assert await writer.write_acked(f"a{i}".encode(), b"1")
            await cluster.crash("n3")
            shutil.rmtree(tmp_path / "n3")  # the disk is replaced...
            (tmp_path / "n3").mkdir()
            (tmp_path / "n3" / "lost-all").touch()  # ...and the operator says so
            writer.seeds = [cluster.nodes["n1"].address, cluster.nodes["n2"].address]
            n3 = await cluster.start_node("n3")

            def recorded_and_refilled() -> bool:
                losses = set()
                for partition in range(cluster.partitions):
                    config = n3.configs.get(partition)
                    if config is None or partition not in n3.partitions:
                        return False
                    if "n3" not in config.isr:
                        return False
                    losses.add(config.wiped_loss("n3"))
                # One loss (the disk's), recorded everywhere; then the marker went.
                return len(losses) == 1 and None not in losses and n3._keeper.lost_all is None

            await cluster.wait_for(recorded_and_refilled, 10.0, "n3 recorded lost, then back")
            assert not (tmp_path / "n3" / "lost-all").exists()
            await cluster.wait_for(
                lambda: sum(len(r.replica.applied) for r in n3.partitions.values()) == 20,
                5.0,
                "n3 refilled with every acknowledged write",
            )
        finally:
            await writer.close()
            await cluster.close()

    run(scenario())


@pytest.mark.slow
def test_a_node_back_on_an_empty_disk_nobody_marked_is_refilled_first(tmp_path: Path) -> None:
    """No ``lost-all``: the new disk's data id alone tells the controller (issue 16)."""

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=4)
        await cluster.start()
        writer = Writer([n.address for n in cluster.nodes.values()])
        try:
            for i in range(20):
                assert await writer.write_acked(f"a{i}".encode(), b"1")
            old_id = cluster.nodes["n3"]._keeper.data_id
            assert all(c.data_id("n3") == old_id for c in cluster.nodes["n1"].configs.values())
            await cluster.crash("n3")
            shutil.rmtree(tmp_path / "n3")  # the disk is replaced, and nobody says so
            (tmp_path / "n3").mkdir()
            writer.seeds = [cluster.nodes["n1"].address, cluster.nodes["n2"].address]
            n3 = await cluster.start_node("n3")
            new_id = n3._keeper.data_id
            assert new_id != old_id
            watched = cluster.nodes["n1"]
            adopted_in_sync: list[PartitionConfig] = []

            def recorded_and_refilled() -> bool:
                # In sync under the new id without that loss recorded: counted in sync empty.
                adopted_in_sync.extend(
                    c
                    for c in watched.configs.values()
                    if "n3" in c.isr and c.data_id("n3") == new_id and c.wiped_loss("n3") != new_id
                )
                return (
                    all(
                        "n3" in c.isr and c.wiped_loss("n3") == new_id and c.data_id("n3") == new_id
                        for c in (n3.configs.get(p) for p in range(cluster.partitions))
                        if c is not None
                    )
                    and len(n3.configs) == cluster.partitions
                )

            await cluster.wait_for(recorded_and_refilled, 10.0, "n3 recorded lost, then back")
            assert adopted_in_sync == []
            await cluster.wait_for(
                lambda: sum(len(r.replica.applied) for r in n3.partitions.values()) == 20,
                5.0,
                "n3 refilled with every acknowledged write",
            )
            # Every config knows the new id: it is new no more (its marker went).
            await cluster.wait_for(
                lambda: not n3._keeper.data_id_new, 5.0, "the new data id confirmed"
            )
            assert not (tmp_path / "n3" / "data-id-new").exists()
        finally:
            await writer.close()
            await cluster.close()

    run(scenario())


def test_redis_benchmark_cluster_mode_against_nodes(tmp_path: Path) -> None:
    """``redis-benchmark --cluster`` (Redis' own tool, unchanged) finds the nodes through
    CLUSTER NODES / SLOTS and runs its tests against them; every INCR counts once."""
    if shutil.which("redis-benchmark") is None:
        pytest.skip("redis-benchmark not found (apt-get install redis-tools)")
    requests = 600

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=4)
        await cluster.start()
        try:
            await cluster.wait_for(cluster.all_serving, 30.0, "serving")
            port = cluster.nodes["n1"].port
            loop = asyncio.get_running_loop()
            argv = ["redis-benchmark", "--cluster", "-p", str(port), "-q", "-c", "4"]
            argv += ["-t", "set,get,incr,mset,hset,sadd", "-n", str(requests)]
            done = await loop.run_in_executor(
                None,
                functools.partial(
                    subprocess.run, argv, capture_output=True, text=True, timeout=120, check=False
                ),
            )
            assert done.returncode == 0, done.stdout + done.stderr
            for test in ("SET:", "GET:", "INCR:", "MSET (10 keys):", "HSET:", "SADD:"):
                assert test in done.stdout, done.stdout + done.stderr
            counted = 0
            for partition in range(cluster.partitions):
                primary = cluster.primary_of(partition)
                assert primary is not None
                applied = cluster.nodes[primary].partitions[partition].replica.applied
                counted += sum(
                    int(value)
                    for key, (value, _) in applied.items()
                    if key.startswith(b"counter") and isinstance(value, bytes)
                )
            assert counted == requests  # every INCR applied once, none lost
        finally:
            await cluster.close()

    run(scenario())
