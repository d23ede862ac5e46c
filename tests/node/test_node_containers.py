"""Hashes and sets on a cluster of in-process nodes: through redis-py's cluster client and
planaria's own, every replica applying the same log (SPOP's choice too), a failover that
keeps them, and a crashed node that catches up to them from its data directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from planaria.client import AsyncClient
from planaria.core.messages import HashValue, SetValue
from planaria.core.slots import keyslot, partition_of_slot

from ._cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def _held(cluster: LocalCluster, key: bytes) -> list[object]:
    """The value of ``key`` on every replica of its partition (None where absent)."""
    partition = partition_of_slot(keyslot(key), cluster.partitions)
    found: list[object] = []
    for node in cluster.nodes.values():
        runtime = node.partitions.get(partition)
        if runtime is not None:
            value = runtime.replica.applied.get(key)
            found.append(None if value is None else value[0])
    return found


def test_hashes_and_sets_through_redis_py_and_planarias_client(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = LocalCluster(tmp_path)
        await cluster.start()
        seed = aredis.RedisCluster(host="127.0.0.1", port=next(iter(cluster.nodes.values())).port)
        try:
            assert await seed.hset("user:1", "name", "ada", mapping={"age": "36"}) == 2
            assert await seed.hget("user:1", "name") == b"ada"
            assert await seed.hgetall("user:1") == {b"name": b"ada", b"age": b"36"}
            assert await seed.hincrby("user:1", "age", 1) == 37
            assert await seed.hincrbyfloat("user:1", "score", 0.1) == 0.1
            assert await seed.hmget("user:1", ["name", "nope"]) == [b"ada", None]
            assert await seed.hlen("user:1") == 3
            assert await seed.hexists("user:1", "age") is True
            assert await seed.hstrlen("user:1", "name") == 3
            assert not await seed.hsetnx("user:1", "name", "bob")
            assert await seed.type("user:1") == b"hash"
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await seed.get("user:1")
            assert await seed.sadd("{t}tags", "a", "b", "c") == 3
            assert await seed.sadd("{t}more", "b", "c", "d") == 3
            assert await seed.smembers("{t}tags") == {b"a", b"b", b"c"}
            assert await seed.sinter(["{t}tags", "{t}more"]) == {b"b", b"c"}
            assert await seed.sunionstore("{t}all", ["{t}tags", "{t}more"]) == 4
            assert [bool(x) for x in await seed.smismember("{t}all", ["a", "z"])] == [True, False]
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await seed.sadd("user:1", "x")
            assert await seed.expire("user:1", 100) is True
            assert 0 < await seed.ttl("user:1") <= 100
            async with AsyncClient([n.address for n in cluster.nodes.values()]) as db:
                assert await db.hgetall("user:1") == {b"name": b"ada", b"age": b"37",
                                                      b"score": b"0.1"}  # fmt: skip
                assert await db.hset("h", items=["f", "1", "g", "2"]) == 2
                assert await db.hdel("h", "f", "nope") == 1
                assert await db.hkeys("h") == [b"g"] and await db.hvals("h") == [b"2"]
                assert await db.hscan("h") == (0, {b"g": b"2"})
                assert await db.hincrbyfloat("h", "g", 0.5) == 2.5
                assert await db.sadd("s", "x", "y", "z") == 3
                popped = await db.spop("s", 2)
                assert isinstance(popped, list) and len(popped) == 2
                assert await db.scard("s") == 1
                assert await db.srandmember("s") in {b"x", b"y", b"z"}
                assert await db.sismember("s", popped[0]) is False
                assert await db.sscan("s", match="*") == (0, list(await db.smembers("s")))
                assert await db.sdiff("{t}tags", "{t}more") == {b"a"}
                assert await db.sinterstore("{t}none", ["{t}tags", "{t}nope"]) == 0
                assert await db.type("s") == "set"
                assert await db.srem("s", *(await db.smembers("s"))) == 1
                assert await db.exists("s") is False
            # Every replica applied the same log: the same hash, the same set after SPOP.
            for key in (b"h", b"s", b"{t}all"):

                def agree(key: bytes = key) -> bool:
                    held = _held(cluster, key)
                    return len(held) == 3 and all(value == held[0] for value in held)

                await cluster.wait_for(agree, 10.0, f"every replica holds the same {key!r}")
            assert isinstance(_held(cluster, b"h")[0], HashValue)
            assert isinstance(_held(cluster, b"{t}all")[0], SetValue)
        finally:
            await seed.aclose()
            await cluster.close()

    run(scenario())


def test_hashes_and_sets_survive_a_failover_and_a_restart(tmp_path: Path) -> None:
    """Crash the primary of a hash's partition: the new primary serves the hash and set as
    written; the crashed node, started again on its data directory, catches up to the same."""

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=2)
        await cluster.start()
        try:
            async with AsyncClient([n.address for n in cluster.nodes.values()]) as db:
                fields = {f"f{i}": str(i) for i in range(300)}
                assert await db.hset("{x}h", mapping=fields) == 300
                assert await db.sadd("{x}s", *fields) == 300
                assert len(await db.spop("{x}s", 10) or []) == 10
            partition = partition_of_slot(keyslot(b"{x}h"), cluster.partitions)
            old = cluster.primary_of(partition)
            assert old is not None
            expected = _held(cluster, b"{x}h"), _held(cluster, b"{x}s")
            await cluster.crash(old)
            await cluster.wait_for(
                lambda: cluster.primary_of(partition) not in (None, old), 30.0, "a new primary"
            )
            async with AsyncClient([n.address for n in cluster.nodes.values()]) as db:
                assert await db.hgetall("{x}h") == {
                    k.encode(): v.encode() for k, v in fields.items()
                }
                assert await db.scard("{x}s") == 290
                assert await db.hincrby("{x}h", "f1", 1) == 2
            await cluster.start_node(old)

            def caught_up() -> bool:
                held = _held(cluster, b"{x}h")
                return len(held) == 3 and all(value == held[0] for value in held)

            await cluster.wait_for(caught_up, 30.0, "the restarted node holds the same hash")
            sets = _held(cluster, b"{x}s")
            assert all(value == expected[1][0] for value in sets)
        finally:
            await cluster.close()

    run(scenario())
