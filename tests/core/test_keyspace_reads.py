"""The node's side of the lazy key index (node/_keyspace.py): a key-space read that needs
an index waits for its build, run in slices by one task and shared by every read waiting;
the build follows the partition when its replica is replaced (a snapshot installed, the
log reopened) or steps down while it runs; DBSIZE never builds one; and past the deadline
the read answers TRYAGAIN. Replicas here are the pure ones of tests/core's Pump, served by a
:class:`KeyspaceReads` over a stand-in for the node's table of partitions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import cast

import hiredis
import pytest
from test_replica import Pump, ready_pump  # tests/core is on sys.path

from planaria.coord import Coordinator
from planaria.core.messages import PartitionConfig, Set
from planaria.core.replica import Replica, Role
from planaria.net.commands import DbSize, KeyspaceRead, RandomKey, Scan
from planaria.node._configs import ConfigFollower
from planaria.node._context import NodeContext
from planaria.node._keyspace import KeyspaceReads
from planaria.node._partition import PartitionRuntime
from planaria.node._settings import NodeSettings

pytestmark = pytest.mark.timeout(60)

SLICE = 4  # keys a build slice indexes here: a build of 40 keys takes 10 turns of the loop


def _pump_with_keys(prefix: str, count: int) -> Pump:
    pump = ready_pump()
    for n in range(count):
        reply = pump.call("a", Set(f"{prefix}{n}".encode(), b"v"), (prefix, n + 1))
        assert reply is not None and reply.error is None
    return pump


class Stand:
    """One partition (0 of 1) led by node "a": the runtime, configs and reads of a node."""

    def __init__(self, pump: Pump, settings: NodeSettings | None = None) -> None:
        self.context = NodeContext("a", settings or NodeSettings(), cast(Coordinator, None))
        self.runtime = SimpleNamespace(replica=pump.replicas["a"])
        self.context.partitions[0] = cast(PartitionRuntime, self.runtime)
        self.cluster = SimpleNamespace(partition_count=1, configs={0: pump.config})
        self.reads = KeyspaceReads(self.context, cluster=cast(ConfigFollower, self.cluster))

    def serve(self, pump: Pump) -> None:
        """The partition's replica is now ``pump``'s "a" (as a rebuild from disk makes one)."""
        self.runtime.replica = pump.replicas["a"]
        self.cluster.configs = {0: pump.config}

    def answer(self, request: KeyspaceRead) -> asyncio.Future[bytes]:
        answered = self.reads.answer(request)
        assert not isinstance(answered, bytes), answered  # it must wait for a build
        return asyncio.ensure_future(answered)

    async def turns_until(self, slices: int) -> None:
        deadline = time.monotonic() + 30.0
        while self.reads.slices < slices:
            assert time.monotonic() < deadline, f"the build never ran {slices} slices"
            await asyncio.sleep(0)


def _parsed(reply: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(reply)
    return reader.gets()


def _scanned(reply: bytes) -> tuple[int, set[bytes]]:
    parsed = _parsed(reply)
    assert isinstance(parsed, list), parsed
    return int(parsed[0]), set(parsed[1])


ALL = Scan(cursor=0, count=10_000)


@pytest.fixture(autouse=True)
def _small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("planaria.node._keyspace.BUILD_SLICE_KEYS", SLICE)


def test_reads_wait_for_one_shared_build_run_in_slices_and_dbsize_needs_none() -> None:
    pump = _pump_with_keys("k", 40)
    replica = pump.replicas["a"]
    stand = Stand(pump)

    async def scenario() -> None:
        assert stand.reads.answer(DbSize()) == b":40\r\n"
        assert replica.key_index_builds == 0  # DBSIZE built nothing
        scans = [stand.answer(ALL) for _ in range(3)]
        random_key = stand.answer(RandomKey())
        assert stand.reads.building == (0,)
        await stand.turns_until(2)
        assert replica.key_index_building and not any(scan.done() for scan in scans)
        pump.call("a", Set(b"written-meanwhile", b"v"), ("w", 1))  # a write between slices
        replies = await asyncio.gather(*scans)
        want = set(replica.applied)
        assert all(_scanned(reply) == (0, want) for reply in replies)
        assert _parsed(await random_key) in want
        assert replica.key_index_builds == 1  # one build for all four reads
        assert stand.reads.slices >= 41 // SLICE  # in slices of SLICE keys
        assert not stand.reads.building
        # Built: answered at once from now on, and kept in step with the writes.
        pump.call("a", Set(b"after", b"v"), ("w", 2))
        answered = stand.reads.answer(ALL)
        assert isinstance(answered, bytes)
        assert _scanned(answered) == (0, want | {b"after"})

    asyncio.run(scenario())


def test_a_replica_rebuilt_during_the_build_gets_a_build_of_its_own() -> None:
    """A snapshot installed (or the log reopened) replaces the partition's replica while
    its build runs: the waiting read answers from the new replica's own index."""
    old_pump = _pump_with_keys("old", 40)
    new_pump = _pump_with_keys("new", 30)
    stand = Stand(old_pump)

    async def scenario() -> None:
        scan = stand.answer(ALL)
        await stand.turns_until(2)
        old = old_pump.replicas["a"]
        assert old.key_index_building
        stand.serve(new_pump)
        assert _scanned(await scan) == (0, set(new_pump.replicas["a"].applied))
        assert new_pump.replicas["a"].key_index_builds == 1
        assert old.key_index is None  # its build was left (the replica is thrown away)

    asyncio.run(scenario())


def test_a_primary_that_steps_down_during_the_build_drops_it_and_the_read_goes_on() -> None:
    pump = _pump_with_keys("k", 40)
    replica = pump.replicas["a"]
    stand = Stand(pump)

    async def scenario() -> None:
        scan = stand.answer(ALL)
        await stand.turns_until(2)
        newer = PartitionConfig(0, 2, "b", ("a", "b", "c"), frozenset("bc"), 2)
        replica.on_config(newer, pump.now)
        stand.cluster.configs = {0: newer}
        assert replica.role is Role.BACKUP and not replica.key_index_building
        # Node "a" leads nothing now: the SCAN answers from nothing, as Redis Cluster's
        # master of no slots would.
        assert _scanned(await scan) == (0, set())
        assert replica.key_index is None and replica.key_index_builds == 1
        assert not stand.reads.building

    asyncio.run(scenario())


def test_a_read_whose_build_outlasts_the_deadline_answers_tryagain() -> None:
    pump = _pump_with_keys("k", 40)
    stand = Stand(pump, replace(NodeSettings(), write_timeout_ms=1e-9))

    async def scenario() -> None:
        reply = await stand.answer(ALL)
        assert reply.startswith(b"-TRYAGAIN the key index of partition(s) [0]"), reply
        # The build goes on for the next read, which finds it done or further along.
        replica: Replica = pump.replicas["a"]
        deadline = time.monotonic() + 30.0
        while replica.key_index is None:
            assert time.monotonic() < deadline, "the build never ended"
            await asyncio.sleep(0)
        assert replica.key_index is not None and replica.key_index_builds == 1

    asyncio.run(scenario())


def test_a_read_waiting_for_a_build_when_the_node_stops_answers_at_once() -> None:
    pump = _pump_with_keys("k", 40)
    stand = Stand(pump)

    async def scenario() -> None:
        scan = stand.answer(ALL)
        await stand.turns_until(1)
        stand.context.stopping = True  # as Node.close sets it; the builder ends on it
        reply = await asyncio.wait_for(scan, 30.0)
        assert reply == b"-TRYAGAIN the node is shutting down\r\n"
        assert not stand.reads.building

    asyncio.run(scenario())


class BrokenBuild:
    """A serving primary whose index build fails (a bug): the waiting reads must fail
    with it, not wait for their deadline."""

    role = Role.PRIMARY
    key_index = None
    key_index_building = True
    applied: dict[bytes, object] = {}  # noqa: RUF012

    def serving(self, now_ms: float) -> bool:
        return True

    def start_key_index(self) -> bool:
        return True

    def key_index_step(self, max_keys: int) -> bool:
        raise RuntimeError("the build broke")


def test_a_build_that_fails_fails_the_reads_waiting_for_it() -> None:
    pump = _pump_with_keys("k", 1)
    stand = Stand(pump)
    stand.runtime.replica = BrokenBuild()

    async def scenario() -> None:
        scans = [stand.answer(ALL) for _ in range(2)]
        for scan in scans:
            with pytest.raises(RuntimeError, match="the build broke"):
                await asyncio.wait_for(scan, 30.0)
        assert not stand.reads.building

    asyncio.run(scenario())
