"""The controller service and its helpers against MemoryCoordinator with a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence

import pytest

from planaria.coord import (
    CONTROLLER_ELECTION,
    CheckLeader,
    Coordinator,
    LeadershipLost,
    MalformedRecord,
    MemoryCoordinator,
    MemoryStore,
    Registration,
    SessionId,
    TxnOp,
    config_key,
    encode_config,
)
from planaria.core.messages import PartitionConfig, ProposeIsr
from planaria.errors import UsageError
from planaria.node import (
    ClusterMetadata,
    ControllerService,
    ControlSettings,
    apply_proposal,
    read_cluster_metadata,
    read_configs,
    sessions_from_members,
    write_cluster_metadata,
)

NODES = ("n1", "n2", "n3")
TTL_MS = 300.0
FAST = ControlSettings(decide_interval_s=0.005, retry_wait_initial_s=0.001, retry_wait_max_s=0.005)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s

    def advance_ms(self, ms: float) -> None:
        self.now_s += ms / 1000.0


class World:
    """One store, a fake clock, a client per node with its session and registration."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.admin = self.client()
        self.clients: dict[str, MemoryCoordinator] = {}
        self.sessions: dict[str, SessionId] = {}

    def client(self) -> MemoryCoordinator:
        return MemoryCoordinator(self.store, clock=self.clock, expiry_check_interval_s=None)

    async def start_node(self, node: str) -> MemoryCoordinator:
        client = self.clients.setdefault(node, self.client())
        self.sessions[node] = await client.open_session(node, TTL_MS)
        await client.register(self.sessions[node], node, f"127.0.0.1:{7000 + len(self.sessions)}")
        return client

    def service(self, node: str) -> ControllerService:
        return ControllerService(
            self.clients[node], node, self.sessions[node], settings=FAST, clock=self.clock,
            rng=random.Random(3),
        )  # fmt: skip

    async def expire(self, node: str) -> None:
        """Only ``node`` stops renewing: its session runs out."""
        for _ in range(4):
            for other, session in self.sessions.items():
                if other != node:
                    await self.clients[other].keep_alive(session)
            self.clock.advance_ms(TTL_MS / 3)
            await self.admin.check_expiry()
        assert not self.store.session_info(self.sessions[node]).alive

    async def configs(self) -> dict[int, PartitionConfig]:
        return {p: c for p, (c, _) in (await read_configs(self.admin)).items()}


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.002)


async def leader_fence(service: ControllerService) -> CheckLeader:
    candidate = await service.coordinator.campaign(CONTROLLER_ELECTION, service.session)
    return CheckLeader(CONTROLLER_ELECTION, candidate.token)


def test_cluster_metadata_round_trip_and_validation() -> None:
    async def main() -> None:
        world = World()
        assert await read_cluster_metadata(world.admin) is None
        meta = await write_cluster_metadata(
            world.admin, partitions=8, replicas=3, min_insync=2, nodes=NODES
        )
        assert await read_cluster_metadata(world.admin) == meta
        again = await write_cluster_metadata(
            world.admin, partitions=8, replicas=3, min_insync=2, nodes=NODES
        )
        assert again == meta  # a retried `planaria up` is fine
        with pytest.raises(UsageError):
            await write_cluster_metadata(
                world.admin, partitions=16, replicas=3, min_insync=2, nodes=NODES
            )
        for bad in [(0, 3, 2, NODES), (8, 4, 2, NODES), (8, 3, 4, NODES), (8, 2, 1, ("a", "a"))]:
            with pytest.raises(UsageError):
                ClusterMetadata(*bad)
        with pytest.raises(MalformedRecord):
            ClusterMetadata.decode(b'{"partitions": 8}')

    asyncio.run(main())


def test_configs_are_created_once_every_expected_node_registered() -> None:
    async def main() -> None:
        world = World()
        await write_cluster_metadata(world.admin, partitions=8, replicas=3, min_insync=2,
                                     nodes=NODES)  # fmt: skip
        await world.start_node("n1")
        await world.start_node("n2")
        service = world.service("n1")
        fence = await leader_fence(service)
        assert await service.reconcile(fence) == 0
        assert await world.configs() == {}  # n3 has not registered yet
        await world.start_node("n3")
        assert await service.reconcile(fence) == 8
        configs = await world.configs()
        assert sorted(configs) == list(range(8))
        for config in configs.values():
            assert config.epoch == 1 and config.isr == frozenset(config.replicas)
            assert sorted(config.replicas) == sorted(NODES)
            assert config.primary_incarnation == world.sessions[config.primary or ""]
        assert await service.reconcile(fence) == 0  # nothing more to do: created once

    asyncio.run(main())


def test_a_dead_primary_fails_over_to_a_live_isr_member() -> None:
    async def main() -> None:
        world = World()
        await write_cluster_metadata(world.admin, partitions=6, replicas=3, min_insync=2,
                                     nodes=NODES)  # fmt: skip
        for node in NODES:
            await world.start_node(node)
        task = asyncio.create_task(world.service("n2").run())
        await until(lambda: _has_configs(world, 6))
        before = await world.configs()
        led_by_n1 = [p for p, c in before.items() if c.primary == "n1"]
        assert led_by_n1
        await world.expire("n1")  # n1's session (so its registration) is gone

        async def failed_over() -> bool:
            now = await world.configs()
            return all(now[p].primary not in (None, "n1") for p in led_by_n1) and all(
                "n1" not in c.isr for c in now.values()
            )

        await until(failed_over)
        after = await world.configs()
        for p in led_by_n1:
            assert after[p].epoch == before[p].epoch + 1
            assert after[p].primary in before[p].isr
            assert after[p].primary_incarnation == world.sessions[after[p].primary or ""]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


async def _has_configs(world: World, count: int) -> bool:
    return len(await world.configs()) == count


def test_a_deposed_controller_cannot_write() -> None:
    async def main() -> None:
        world = World()
        await write_cluster_metadata(world.admin, partitions=4, replicas=3, min_insync=2,
                                     nodes=NODES)  # fmt: skip
        for node in NODES:
            await world.start_node(node)
        stale, fresh = world.service("n1"), world.service("n2")
        stale_fence = await leader_fence(stale)
        await stale.reconcile(stale_fence)
        # n1's candidacy goes (as if its session had expired and come back): n2 leads.
        current = await world.admin.leader(CONTROLLER_ELECTION)
        assert current is not None
        await world.clients["n1"].resign(current)
        fresh_fence = await leader_fence(fresh)
        assert fresh_fence.token > stale_fence.token
        before = await read_configs(world.admin)
        await world.expire("n3")  # something to decide
        with pytest.raises(LeadershipLost):
            await stale.reconcile(stale_fence)
        assert await read_configs(world.admin) == before  # the stale one wrote nothing
        # Even a write that skips the leader check fails inside the fenced transaction.
        config, version = before[0]
        with pytest.raises(LeadershipLost):
            await world.clients["n1"].multi([stale_fence, _set(config_key(0), config, version)])
        assert await fresh.reconcile(fresh_fence) > 0

    asyncio.run(main())


def _set(key: str, config: PartitionConfig, version: int) -> TxnOp:
    from planaria.coord import SetIfVersion

    return SetIfVersion(key, encode_config(config), version)


class Meddling(MemoryCoordinator):
    """Before its first multi, someone else changes partition 0's config (a conflict)."""

    meddled = False
    multis = 0

    async def multi(self, ops: Sequence[TxnOp]) -> list[int | None]:
        self.multis += 1
        if not self.meddled:
            self.meddled = True
            item = self.store.get(config_key(0))
            assert item is not None
            self.store.set_if_version(config_key(0), item.value, version=item.version)
        return await super().multi(ops)


def test_conflicts_are_reread_and_redecided() -> None:
    async def main() -> None:
        world = World()
        await write_cluster_metadata(world.admin, partitions=4, replicas=3, min_insync=2,
                                     nodes=NODES)  # fmt: skip
        for node in NODES:
            await world.start_node(node)
        service = world.service("n1")
        fence = await leader_fence(service)
        await service.reconcile(fence)
        await world.expire("n3")
        meddling = Meddling(world.store, clock=world.clock, expiry_check_interval_s=None)
        service.coordinator = meddling
        await service.reconcile(fence)
        assert meddling.meddled and meddling.multis > 4  # the conflicting CAS ran again
        configs = await world.configs()
        assert all("n3" not in c.isr and c.primary != "n3" for c in configs.values())

    asyncio.run(main())


def test_an_unreachable_coordinator_is_retried_not_fatal() -> None:
    async def main() -> None:
        world = World()
        await write_cluster_metadata(world.admin, partitions=4, replicas=3, min_insync=2,
                                     nodes=NODES)  # fmt: skip
        for node in NODES:
            await world.start_node(node)
        service = world.service("n1")
        link = service.coordinator = world.client()  # its own connection, cut below
        task = asyncio.create_task(service.run())
        await until(lambda: _has_configs(world, 4))
        link.disconnect()
        await world.expire("n3")
        await asyncio.sleep(0.02)  # the service meets CoordinatorUnavailable meanwhile
        assert not task.done()
        link.reconnect()

        async def n3_gone() -> bool:
            return all("n3" not in c.isr for c in (await world.configs()).values())

        await until(n3_gone)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_apply_proposal_validates_and_cases() -> None:
    async def main() -> None:
        world = World()
        await write_cluster_metadata(world.admin, partitions=2, replicas=3, min_insync=2,
                                     nodes=NODES)  # fmt: skip
        for node in NODES:
            await world.start_node(node)
        service = world.service("n1")
        await service.reconcile(await leader_fence(service))
        config = (await world.configs())[0]
        primary = config.primary or ""
        backup = next(n for n in config.replicas if n != primary)
        shrunk = config.isr - {backup}
        proposal = ProposeIsr(0, config.epoch, config.version, shrunk)
        coordinator: Coordinator = world.clients[primary]
        assert await apply_proposal(coordinator, proposal, backup) is None  # not the primary
        new = await apply_proposal(coordinator, proposal, primary)
        assert new is not None and new.isr == shrunk and new.version == config.version + 1
        assert (await world.configs())[0] == new
        assert await apply_proposal(coordinator, proposal, primary) is None  # stale now
        grow = ProposeIsr(0, new.epoch, new.version, config.isr)
        assert await apply_proposal(coordinator, grow, primary) == (await world.configs())[0]

    asyncio.run(main())


def test_a_registration_says_which_logs_the_node_lost() -> None:
    def member(node: str, session: int, lost: str | None) -> Registration:
        meta = () if lost is None else (("lost", lost),)
        return Registration(node, f"{node}:1", meta, SessionId(session), 1)

    views = sessions_from_members(
        {
            "n1": member("n1", 4, None),
            "n2": member("n2", 5, "3:17,7:17"),
            "n3": member("n3", 6, "all:20"),
            "n4": member("n4", 8, "3:x"),
        }
    )
    assert (views["n1"].lost, views["n1"].data_lost) == ({}, 0)
    assert views["n2"].lost == {3: 17, 7: 17} and views["n2"].lost_log(7) == 17
    assert views["n2"].lost_log(1) is None
    assert views["n3"].data_lost == 20 and views["n3"].lost_log(1) == 20
    assert views["n4"].lost_log(0) is not None  # unreadable: every log counts as lost


def test_a_registration_says_which_data_directory_the_node_runs_on() -> None:
    def member(node: str, data_id: str | None) -> Registration:
        meta = () if data_id is None else (("data-id", data_id),)
        return Registration(node, f"{node}:1", meta, SessionId(4), 1)

    views = sessions_from_members(
        {"n1": member("n1", "123"), "n2": member("n2", None), "n3": member("n3", "x1")}
    )
    assert (views["n1"].data_id, views["n1"].lost_log(0)) == (123, None)
    assert views["n2"].data_id == 0  # an older node: nothing to compare
    assert views["n3"].data_id == 0 and views["n3"].lost_log(0) is not None  # unreadable


def test_a_restored_cluster_creates_its_first_configs_at_its_first_epoch() -> None:
    """A cluster laid out by ``planaria restore`` records ``first_epoch`` (above its logs'
    epochs); the metadata of every other cluster stays as it was (no such field)."""

    async def main() -> None:
        world = World()
        meta = await write_cluster_metadata(
            world.admin, partitions=4, replicas=3, min_insync=2, nodes=NODES, first_epoch=9
        )
        assert await read_cluster_metadata(world.admin) == meta
        assert b"first_epoch" not in ClusterMetadata(4, 3, 2, NODES).encode()
        assert ClusterMetadata.decode(ClusterMetadata(4, 3, 2, NODES).encode()).first_epoch == 1
        with pytest.raises(UsageError):
            ClusterMetadata(4, 3, 2, NODES, first_epoch=0)
        for node in NODES:
            await world.start_node(node)
        service = world.service("n1")
        assert await service.reconcile(await leader_fence(service)) == 4
        assert {config.epoch for config in (await world.configs()).values()} == {9}

    asyncio.run(main())
