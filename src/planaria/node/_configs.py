"""What a node knows of the cluster (:class:`ConfigFollower`): the partition count, every
partition's config and every member's address, followed by watches and a poll; it opens a
partition's replica when a config names this node, and derives the slot topology."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from planaria.address import parse_address
from planaria.coord import (
    CONFIGS_PREFIX,
    MEMBERS_PREFIX,
    CoordinatorUnavailable,
    EventKind,
    MalformedRecord,
    Watch,
    decode_config,
    partition_of_key,
)
from planaria.core.messages import PartitionConfig
from planaria.errors import UsageError
from planaria.net.topology import NodeAddress, Topology
from planaria.node._context import NodeContext
from planaria.node._control import read_cluster_metadata, read_configs
from planaria.node._partition import PartitionRuntime
from planaria.node._session import SessionKeeper
from planaria.node._transport import PeerBus
from planaria.storage import StorageError

__all__ = ["ConfigFollower"]

log = logging.getLogger("planaria.node")


class ConfigFollower:
    """Follows the coordinator's configs and member registrations. A config that names
    this node opens its partition (``create_partition`` makes the runtime, added to the
    context's ``partitions``); a member's bus address goes to ``bus``; every config read
    may let ``keeper`` forget a recorded disk loss or confirm a new data id."""

    def __init__(
        self,
        context: NodeContext,
        *,
        bus: PeerBus,
        keeper: SessionKeeper,
        create_partition: Callable[[int], Awaitable[PartitionRuntime]],
    ) -> None:
        self._context = context
        self._node_id = context.node_id
        self._coordinator = context.coordinator
        self._bus = bus
        self._keeper = keeper
        self._create_partition = create_partition
        self.configs: dict[int, PartitionConfig] = {}
        self.partition_count: int | None = None
        self.min_insync: int | None = None
        self.addresses: dict[str, NodeAddress] = {}
        self._topology: Topology | None = None
        self.opening: dict[int, asyncio.Task[None]] = {}

    async def load_cluster(self) -> None:
        try:
            metadata = await self._context.coord(read_cluster_metadata(self._coordinator))
        except MalformedRecord as exc:
            log.error("%s", exc)
            return
        if metadata is not None:
            self.partition_count = metadata.partitions
            self.min_insync = metadata.min_insync

    async def watch_all(self) -> None:
        # Watch first, then read: nothing is missed.
        configs_watch = await self._context.coord(self._coordinator.watch(CONFIGS_PREFIX))
        members_watch = await self._context.coord(self._coordinator.watch(MEMBERS_PREFIX))
        self._context.spawn(self._config_events(configs_watch), "configs-watch")
        self._context.spawn(self._member_events(members_watch), "members-watch")
        await self._reload_members()
        await self._reload_configs_once()
        self._context.spawn(self._poll_loop(), "poll")

    async def _config_events(self, watch: Watch) -> None:
        async with watch:
            async for event in watch:
                try:
                    if event.kind is EventKind.RESET:
                        await self._reload_configs_once()
                        continue
                    partition = partition_of_key(event.key)
                    if partition is None:
                        continue
                    item = await self._context.coord(self._coordinator.get(event.key))
                    if item is not None:
                        await self._on_config(decode_config(item.value))
                except (CoordinatorUnavailable, MalformedRecord) as exc:
                    log.warning("reading a config after a watch event: %s", exc)

    async def _member_events(self, watch: Watch) -> None:
        async with watch:
            async for _event in watch:
                try:
                    await self._reload_members()
                except CoordinatorUnavailable as exc:
                    log.warning("reading the members: %s", exc)

    async def _poll_loop(self) -> None:
        # Watches deliver at least once, but a reconnection may lose events: re-read too.
        while not self._context.stopping:
            await asyncio.sleep(self._context.settings.config_poll_ms / 1000)
            try:
                await self._reload_configs_once()
                await self._reload_members()
            except CoordinatorUnavailable as exc:
                log.debug("poll: %s", exc)

    async def reload_configs(self) -> None:
        try:
            await self._reload_configs_once()
        except CoordinatorUnavailable as exc:
            log.info("reloading configs: %s", exc)

    async def _reload_configs_once(self) -> None:
        if self.partition_count is None:
            await self.load_cluster()
        configs = await self._context.coord(read_configs(self._coordinator))
        for config, _ in configs.values():
            await self._on_config(config)

    async def _reload_members(self) -> None:
        members = await self._context.coord(self._coordinator.members())
        changed = False
        for node, registration in members.items():
            try:
                host, port = parse_address(registration.address, what="member address")
            except UsageError as exc:
                log.error("member %s: %s", node, exc)
                continue
            address = NodeAddress(host, port)
            if self.addresses.get(node) != address:
                self.addresses[node] = address
                changed = True
            bus = registration.meta().get("bus")
            if bus is not None and node != self._node_id:
                self._bus.set_address(node, bus)
        if changed:
            self._topology = None

    async def _on_config(self, config: PartitionConfig) -> None:
        known = self.configs.get(config.partition)
        if known is not None and (config.epoch, config.version) <= (known.epoch, known.version):
            return
        self.configs[config.partition] = config
        self._topology = None
        runtime = self._context.partitions.get(config.partition)
        if runtime is None and self._node_id in config.replicas:
            runtime = await self._open_partition(config.partition)
        if runtime is not None:
            runtime.deliver(config)
        if config.wiped:
            self._keeper.forget_lost_all(self.configs)
        self._keeper.confirm_data_id(self.configs, self.partition_count)

    async def _open_partition(self, partition: int) -> PartitionRuntime | None:
        opening = self.opening.get(partition)
        if opening is None:
            opening = asyncio.create_task(self._add_partition(partition))
            self.opening[partition] = opening
        try:
            await asyncio.shield(opening)
        except StorageError as exc:
            log.error("p%d: cannot open its log: %s", partition, exc)
        finally:
            if opening.done():
                self.opening.pop(partition, None)
        return self._context.partitions.get(partition)

    async def _add_partition(self, partition: int) -> None:
        runtime = await self._create_partition(partition)
        self._context.partitions[partition] = runtime

    def topology(self) -> Topology:
        """Who serves which slots, from the configs and the registrations."""
        if self._topology is not None:
            return self._topology
        count = self.partition_count or len(self.configs)
        known = self.addresses
        configs: list[PartitionConfig] = []
        for config in self.configs.values():
            if config.partition >= count:
                continue
            primary = config.primary if config.primary in known else None
            configs.append(
                replace(config, primary=primary, isr=frozenset(n for n in config.isr if n in known))
            )
        if count:
            self._topology = Topology.from_configs(dict(known), configs, count)
        else:
            self._topology = Topology(dict(known), ())
        return self._topology
