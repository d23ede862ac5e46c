"""The key-space commands on a cluster of in-process nodes: DBSIZE, KEYS, SCAN, RANDOMKEY,
TYPE and UNLINK through redis-py's cluster client and raw connections, a SCAN cursor carried
from a crashed primary to the partition's new one, and the KEYS cap."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from planaria.client import AsyncClient, CommandRefused
from planaria.core.keyspace import ORDER_BITS
from planaria.core.slots import keyslot, partition_of_slot, slot_range
from planaria.net.commands import SCAN_COUNT_MAX

from ._cluster import FAST, LocalCluster

pytestmark = pytest.mark.timeout(120)


class Raw:
    """One connection to one node, no redirects (a node-wide command is the node's)."""

    def __init__(self, port: int) -> None:
        self.client = aredis.Redis(host="127.0.0.1", port=port)

    async def call(self, *args: object) -> object:
        return await self.client.execute_command(*args)

    async def keys(self, pattern: str = "*") -> list[bytes]:
        reply = await self.client.execute_command("KEYS", pattern)
        assert isinstance(reply, list), reply
        return reply

    async def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        reply = await self.client.execute_command("SCAN", cursor, "COUNT", count)
        assert isinstance(reply, list | tuple) and len(reply) == 2, reply
        return int(reply[0]), list(reply[1])


def test_keyspace_commands_through_redis_py_and_per_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=8)
        await cluster.start()
        seed = aredis.RedisCluster(host="127.0.0.1", port=next(iter(cluster.nodes.values())).port)
        try:
            keys = [f"key:{i}".encode() for i in range(120)]
            await seed.mset_nonatomic({key: b"v" for key in keys})  # split per slot
            # planaria's client: every primary of the map (a planaria node is primary of
            # some partitions and backup of others, which redis-py's cluster client does not
            # model: it takes a node for a replica if it is one anywhere; compatibility.md).
            async with AsyncClient([n.address for n in cluster.nodes.values()]) as db:
                assert await db.dbsize() == 120
                assert sorted(await db.keys("key:*")) == sorted(keys)
                assert sorted(await db.keys("key:1?")) == [b"key:1%d" % i for i in range(10)]
                assert sorted([key async for key in db.scan_iter(count=7)]) == sorted(keys)
                assert sorted([k async for k in db.scan_iter(match="key:2*", _type="STRING")]) == (
                    sorted(k for k in keys if k.startswith(b"key:2"))
                )
                assert [k async for k in db.scan_iter(_type="hash")] == []
                assert await db.randomkey() in keys
                assert await db.type("key:5") == "string"
            assert await seed.type("key:1") == b"string"
            assert await seed.type("nope") == b"none"
            assert await seed.randomkey() in keys
            assert await seed.unlink("key:1", "key:2", "nope") == 2  # split per slot
            assert await seed.exists("key:1", "key:3") == 1
            with pytest.raises(redis.exceptions.ClusterCrossSlotError):
                await seed.execute_command(
                    "UNLINK", "key:3", "key:4", target_nodes=seed.get_random_node()
                )
            # Per node: each counts, lists and scans the partitions it leads, nothing else.
            total = 0
            for node in cluster.nodes.values():
                led = {
                    p for p in range(cluster.partitions) if cluster.primary_of(p) == node.node_id
                }
                mine = sorted(
                    k
                    for k in keys
                    if k not in (b"key:1", b"key:2")
                    and partition_of_slot(keyslot(k), cluster.partitions) in led
                )
                raw = Raw(node.port)
                assert await raw.call("DBSIZE") == len(mine)
                assert sorted(await raw.keys()) == mine
                scanned: list[bytes] = []
                cursor = 0
                while True:
                    cursor, found = await raw.scan(cursor, 5)
                    scanned += found
                    if cursor == 0:
                        break
                assert sorted(scanned) == mine  # no changes: each key once
                total += len(mine)
                await raw.client.aclose()
            assert total == 118
        finally:
            await seed.aclose()
            await cluster.close()

    asyncio.run(scenario())


def test_a_scan_cursor_goes_on_at_the_new_primary_after_a_crash(tmp_path: Path) -> None:
    """Scan partition P from its first slot on its primary A, with keys coming and going;
    crash A midway; the same cursor given to P's new primary goes on where A stopped: every
    key of P present all along is returned by one or the other."""

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=4)
        await cluster.start()
        seed = aredis.RedisCluster(host="127.0.0.1", port=next(iter(cluster.nodes.values())).port)
        raws: list[Raw] = []
        try:
            partition = 1
            slots = slot_range(partition, cluster.partitions)
            stable = [k for k in (f"s{i}".encode() for i in range(3000)) if keyslot(k) in slots][
                :150
            ]
            await seed.mset_nonatomic({key: b"v" for key in stable})
            old = cluster.primary_of(partition)
            assert old is not None
            raw = Raw(cluster.nodes[old].port)
            raws.append(raw)
            cursor = slots.start << ORDER_BITS
            returned: list[bytes] = []
            noise = 0
            while len(returned) < 60:  # about 40 % of the way
                cursor, found = await raw.scan(cursor, 5)
                returned += found
                assert cursor != 0
                await seed.set(f"noise{noise}", b"x")  # keys come ...
                await seed.delete(f"noise{noise // 2}")  # ... and go
                noise += 1
            await cluster.crash(old)
            await cluster.wait_for(
                lambda: cluster.primary_of(partition) not in (None, old), 20.0, "a new primary"
            )
            new = cluster.primary_of(partition)
            assert new is not None
            raw = Raw(cluster.nodes[new].port)
            raws.append(raw)
            end = slots.stop << ORDER_BITS
            for _ in range(1000):
                try:
                    step, found = await raw.scan(cursor, 5)
                except redis.exceptions.TryAgainError:  # a partition still reconciling
                    # (redis-py strips the TRYAGAIN prefix from the message: match the type)
                    await asyncio.sleep(0.05)
                    continue
                cursor = step
                returned += found
                if cursor == 0 or cursor >= end:
                    break
            missing = set(stable) - set(returned)
            assert not missing, f"{len(missing)} keys present all along were never returned"
        finally:
            for raw in raws:
                await raw.client.aclose()
            await seed.aclose()
            await cluster.close()

    asyncio.run(scenario())


def test_keys_past_the_cap_is_refused_and_scan_still_walks_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=1, settings=replace(FAST, keys_max=20))
        await cluster.start()
        primary = cluster.primary_of(0)
        assert primary is not None
        raw = Raw(cluster.nodes[primary].port)
        try:
            for i in range(20):
                await raw.call("SET", f"k{i}", "v")
            assert len(await raw.keys()) == 20
            await raw.call("SET", "k20", "v")
            with pytest.raises(redis.exceptions.ResponseError, match="over its limit of 20"):
                await raw.keys()
            cursor, seen = 0, set()
            while True:
                cursor, found = await raw.scan(cursor, 1000)  # capped per call, not refused
                seen |= set(found)
                if cursor == 0:
                    break
            assert len(seen) == 21
            assert await raw.call("DBSIZE") == 21
            # COUNT is a hint: one call visits at most SCAN_COUNT_MAX keys, however many.
            tagged = [part for i in range(SCAN_COUNT_MAX + 100) for part in (f"{{t}}{i}", "v")]
            await raw.call("MSET", *tagged)
            cursor, found = await raw.scan(0, 10**9)
            assert cursor != 0 and len(found) == SCAN_COUNT_MAX
        finally:
            await raw.client.aclose()
            await cluster.close()

    asyncio.run(scenario())


def test_a_restarted_node_builds_no_key_index_until_a_scan_needs_one(tmp_path: Path) -> None:
    """Opening partitions (from snapshots and logs) builds no key index; the first SCAN
    builds one on each partition the node leads, once for several SCANs at a time, and
    none on the partitions it backs up."""
    from planaria.core.compaction import SnapshotPolicy

    async def scenario() -> None:
        settings = replace(FAST, snapshots=SnapshotPolicy(entries=20, catchup_entries=5))
        cluster = LocalCluster(tmp_path, partitions=4, settings=settings)
        await cluster.start()
        seed = aredis.RedisCluster(host="127.0.0.1", port=next(iter(cluster.nodes.values())).port)
        raw: Raw | None = None
        try:
            keys = [f"key:{i}".encode() for i in range(300)]
            for start in range(0, len(keys), 10):  # many log entries: snapshots are taken
                await seed.mset_nonatomic({key: b"v" for key in keys[start : start + 10]})
            name = "n1"
            runtimes = cluster.nodes[name].partitions
            await cluster.wait_for(
                lambda: all(runtime.snapshots_taken > 0 for runtime in runtimes.values()),
                30.0,
                "a snapshot of every partition",
            )
            await cluster.crash(name)
            node = await cluster.start_node(name)
            await cluster.wait_for(cluster.all_serving, 30.0, "every partition served")
            await cluster.wait_for(
                lambda: bool(node.serving_partitions()), 30.0, "the restarted node leads one"
            )
            for runtime in node.partitions.values():
                assert runtime.replica.key_index is None
                assert runtime.replica.key_index_builds == 0
            led = set(node.serving_partitions())
            raw = Raw(node.port)
            replies = await asyncio.gather(*(raw.scan(0, 10_000) for _ in range(4)))
            mine = {k for k in keys if partition_of_slot(keyslot(k), cluster.partitions) in led}
            assert all(cursor == 0 and set(found) == mine for cursor, found in replies)
            for partition, runtime in node.partitions.items():
                built = runtime.replica.key_index_builds
                assert built == (1 if partition in led else 0), (partition, built)
        finally:
            if raw is not None:
                await raw.client.aclose()
            await seed.aclose()
            await cluster.close()

    asyncio.run(scenario())


def test_info_keyspace_counts_the_led_keys_and_their_expiries(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=1)
        await cluster.start()
        try:
            await cluster.wait_for(cluster.all_serving, 30.0, "serving")
            primary = cluster.primary_of(0)
            assert primary is not None
            backup = next(name for name in cluster.nodes if name != primary)
            client = aredis.Redis(port=cluster.nodes[primary].port)
            try:
                assert "db0" not in await client.info("keyspace")  # empty: no line, as Redis
                await client.set("plain", "v")
                await client.set("soon", "v", px=100_000)
                await client.set("later", "v", px=300_000)
                db0 = (await client.info("keyspace"))["db0"]
                assert (db0["keys"], db0["expires"]) == (3, 2)
                assert 100_000 < db0["avg_ttl"] <= 200_000  # (100 + 300) / 2 s, a bit less
            finally:
                await client.aclose()
            # A backup leads nothing here: its INFO counts no keys (DBSIZE's rule).
            other = aredis.Redis(port=cluster.nodes[backup].port)
            try:
                assert "db0" not in await other.info("keyspace")
            finally:
                await other.aclose()
        finally:
            await cluster.close()

    asyncio.run(scenario())


def test_the_client_renames_a_key_with_its_expiry_and_type(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2)
        await cluster.start()
        try:
            await cluster.wait_for(cluster.all_serving, 30.0, "serving")
            async with AsyncClient([n.address for n in cluster.nodes.values()]) as db:
                await db.set("{u}a", "1", px=600_000)
                assert await db.rename("{u}a", "{u}b")
                assert await db.get("{u}b") == b"1" and await db.get("{u}a") is None
                assert 0 < await db.pttl("{u}b") <= 600_000  # the expiry moved with it
                await db.sadd("{u}s", "x")
                assert not await db.renamenx("{u}s", "{u}b")  # {u}b is taken
                assert await db.renamenx("{u}s", "{u}t")
                assert await db.type("{u}t") == "set"
                with pytest.raises(CommandRefused, match="no such key"):
                    await db.rename("{u}gone", "{u}c")
        finally:
            await cluster.close()

    asyncio.run(scenario())
