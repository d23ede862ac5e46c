"""The controller service's membership part on the in-memory coordinator: member records,
the target placement, joining nodes, drains, move progress, and planned transfers applied
through ``apply_proposal`` (no real processes: replicas are played by hand)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from planaria.coord import CheckLeader, MemoryCoordinator, MemoryStore, SessionId
from planaria.coord.layout import config_key, encode_config
from planaria.core.messages import PartitionConfig, ProposeIsr
from planaria.errors import UsageError
from planaria.node import (
    ClusterMetadata,
    ControllerService,
    ControlSettings,
    MemberRecord,
    apply_proposal,
    mark_member,
    membership_target,
    move_progress,
    read_configs,
    read_membership,
    write_cluster_metadata,
)
from test_control import FakeClock, leader_fence  # tests/ is on sys.path (rootdir import)

NODES = ("n1", "n2", "n3")
TTL_MS = 300.0
FAST = ControlSettings(decide_interval_s=0.005, retry_wait_initial_s=0.001, moves_max=8)
PARTITIONS = 6


class World:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.admin = self.client()
        self.clients: dict[str, MemoryCoordinator] = {}
        self.sessions: dict[str, SessionId] = {}

    def client(self) -> MemoryCoordinator:
        return MemoryCoordinator(self.store, clock=self.clock, expiry_check_interval_s=None)

    async def start_node(self, node: str, **meta: str) -> None:
        client = self.clients.setdefault(node, self.client())
        self.sessions[node] = await client.open_session(node, TTL_MS)
        await client.register(self.sessions[node], node, "127.0.0.1:7000", meta)

    def service(self, node: str = "n1") -> ControllerService:
        return ControllerService(
            self.clients[node], node, self.sessions[node], settings=FAST, clock=self.clock,
            rng=random.Random(3),
        )  # fmt: skip

    async def configs(self) -> dict[int, tuple[PartitionConfig, int]]:
        return await read_configs(self.admin)

    async def catch_up(self) -> None:
        """Play the replicas: every learner catches up (joins the ISR), and a primary asked
        to hand over requests the transfer, through apply_proposal."""
        for partition, (config, version) in sorted((await self.configs()).items()):
            if config.learners and not set(config.learners) <= config.isr:
                new = replace(config, isr=config.isr | set(config.learners), version=version + 1)
                await self.admin.set_if_version(
                    config_key(partition), encode_config(new), version=version
                )
            elif config.handoff is not None and config.primary is not None:
                request = ProposeIsr(
                    partition, config.epoch, config.version, config.isr, primary=config.handoff
                )
                assert await apply_proposal(self.admin, request, config.primary) is not None


async def started(
    world: World, extra: tuple[str, ...] = ()
) -> tuple[ControllerService, CheckLeader]:
    await write_cluster_metadata(world.admin, partitions=PARTITIONS, replicas=3, min_insync=2,
                                 nodes=NODES)  # fmt: skip
    for node in (*NODES, *extra):
        await world.start_node(node)
    service = world.service()
    fence = await leader_fence(service)
    await service.reconcile(fence)  # creates the configs
    await service.reconcile(fence)  # records the members
    return service, fence


async def settle(world: World, service: ControllerService, fence: CheckLeader) -> int:
    """Reconcile and play the replicas until nothing changes; the passes it took."""
    for rounds in range(1, 60):
        applied = await service.reconcile(fence)
        await world.catch_up()
        progress = await move_progress(world.admin)
        if applied == 0 and progress is not None and progress.done:
            return rounds
    raise AssertionError(f"moves did not settle: {await move_progress(world.admin)}")


def test_member_records_round_trip_and_refuse_bad_input() -> None:
    record = MemberRecord("n4", 2.0, "z1", "draining")
    assert MemberRecord.decode("n4", record.encode()) == record
    for bad in ({"weight": 0}, {"state": "gone"}, {"node": "a/b"}):
        with pytest.raises(UsageError):
            MemberRecord(**{"node": "n4", **bad})  # type: ignore[arg-type]


def test_the_target_is_placement_over_the_members_that_stay() -> None:
    cluster = ClusterMetadata(4, 3, 2, NODES)
    records = {n: MemberRecord(n) for n in (*NODES, "n4")}
    assert membership_target(cluster, {"n1": MemberRecord("n1")}) is None  # weights unknown
    target = membership_target(cluster, records)
    assert target is not None and {n for r in target.values() for n in r} == {*NODES, "n4"}
    records["n2"] = replace(records["n2"], state="draining")
    drained = membership_target(cluster, records)
    assert drained is not None and all("n2" not in r for r in drained.values())
    records["n3"] = replace(records["n3"], state="removed")
    assert membership_target(cluster, records) is None  # fewer members than replicas


def test_without_membership_changes_nothing_moves() -> None:
    async def main() -> None:
        world = World()
        service, fence = await started(world)
        before = await world.configs()
        assert await service.reconcile(fence) == 0
        assert await world.configs() == before
        records = await read_membership(world.admin)
        assert sorted(records) == list(NODES)
        progress = await move_progress(world.admin)
        assert progress is not None and progress.done

    asyncio.run(main())


def test_a_node_that_registers_joins_and_takes_its_share() -> None:
    async def main() -> None:
        world = World()
        service, fence = await started(world)
        await world.start_node("n4", weight="2")
        await service.reconcile(fence)
        records = {n: r for n, (r, _) in (await read_membership(world.admin)).items()}
        assert records["n4"] == MemberRecord("n4", 2.0, None, "member")
        progress = await move_progress(world.admin)
        assert progress is not None and progress.remaining > 0
        await settle(world, service, fence)
        configs = [c for c, _ in (await world.configs()).values()]
        assert sum("n4" in c.replicas for c in configs) >= PARTITIONS * 3 // 4
        assert all(len(c.replicas) == 3 and not c.learners for c in configs)

    asyncio.run(main())


def test_a_drained_node_ends_up_holding_nothing_and_primaries_hand_over() -> None:
    async def main() -> None:
        world = World()
        service, fence = await started(world, extra=("n4",))
        await settle(world, service, fence)
        before = {p: c for p, (c, _) in (await world.configs()).items()}
        await mark_member(world.admin, "n1", "draining")
        await settle(world, service, fence)
        after = {p: c for p, (c, _) in (await world.configs()).items()}
        assert all("n1" not in c.replicas and "n1" not in c.isr for c in after.values())
        led = [p for p, c in before.items() if c.primary == "n1"]
        assert led and all(after[p].epoch == before[p].epoch + 1 for p in led)  # transfers
        progress = await move_progress(world.admin)
        assert progress is not None and progress.held == {"n1": 0}
        await mark_member(world.admin, "n1", "removed")
        with pytest.raises(UsageError):
            await mark_member(world.admin, "n1", "member")  # a removed id never rejoins

    asyncio.run(main())


def test_a_transfer_request_for_a_config_without_handoff_is_refused() -> None:
    async def main() -> None:
        world = World()
        await started(world)
        config, _ = (await world.configs())[0]
        other = next(n for n in config.replicas if n != config.primary)
        request = ProposeIsr(0, config.epoch, config.version, config.isr, primary=other)
        assert await apply_proposal(world.admin, request, config.primary or "") is None

    asyncio.run(main())
