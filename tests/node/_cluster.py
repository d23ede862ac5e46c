"""In-process clusters of Nodes on one MemoryStore (one MemoryCoordinator per node)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from planaria.coord import MemoryCoordinator, MemoryStore
from planaria.node import CLUSTER_KEY, Node, NodeSettings
from planaria.storage import FsyncPolicy

FAST = NodeSettings(fsync=FsyncPolicy("never"))


class LocalCluster:
    def __init__(
        self,
        root: Path,
        *,
        nodes: int = 3,
        partitions: int = 8,
        replicas: int = 3,
        settings: NodeSettings = FAST,
        metrics: bool = False,
    ) -> None:
        self.root = root
        self.names = [f"n{i + 1}" for i in range(nodes)]
        self.partitions = partitions
        self.replicas = replicas
        self.settings = settings
        self.metrics = metrics  # each node serves Prometheus metrics on a free port
        self.store = MemoryStore()
        self.nodes: dict[str, Node] = {}
        self.coordinators: dict[str, MemoryCoordinator] = {}
        self.admin = MemoryCoordinator(self.store)

    async def start(self) -> None:
        spec = {
            "partitions": self.partitions,
            "replicas": self.replicas,
            "min_insync": 2,
            "nodes": self.names,
        }
        await self.admin.create(CLUSTER_KEY, json.dumps(spec).encode())
        await asyncio.gather(*(self.start_node(name) for name in self.names))
        await self.wait_for(self.all_serving, 10.0, "every partition served")

    async def start_node(self, name: str) -> Node:
        coordinator = MemoryCoordinator(self.store)
        node = Node(
            name,
            listen="127.0.0.1:0",
            bus_listen="127.0.0.1:0",
            coordinator=coordinator,
            data_dir=self.root / name,
            settings=self.settings,
            metrics_listen="127.0.0.1:0" if self.metrics else None,
        )
        await node.start()
        self.nodes[name] = node
        self.coordinators[name] = coordinator
        return node

    async def crash(self, name: str) -> None:
        """Stop a node without closing its session: the controller must wait for expiry."""
        node = self.nodes.pop(name)
        await node.close(close_session=False)
        coordinator = self.coordinators.pop(name)
        coordinator.disconnect()  # its session now expires by TTL

    def serving(self) -> set[int]:
        return {p for node in self.nodes.values() for p in node.serving_partitions()}

    def all_serving(self) -> bool:
        return self.serving() == set(range(self.partitions))

    def primary_of(self, partition: int) -> str | None:
        for node in self.nodes.values():
            if partition in node.serving_partitions():
                return node.node_id
        return None

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {what}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for node in list(self.nodes.values()):
            await node.close()
        for coordinator in self.coordinators.values():
            await coordinator.close()
        await self.admin.close()
