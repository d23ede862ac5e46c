"""What every part of a node shares (:class:`NodeContext`): who it is, its settings and
coordinator, the replicas it holds, its background tasks, and whether it is stopping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

from planaria.coord import Coordinator, CoordinatorUnavailable
from planaria.node._partition import PartitionRuntime
from planaria.node._settings import NodeSettings

__all__ = ["NodeContext"]

log = logging.getLogger("planaria.node")


class NodeContext:
    """The state a node's parts share. ``partitions`` is the one table of the replicas'
    runtimes (the config follower fills it; sends, requests and views read it); ``tasks``
    holds every background task :meth:`spawn` started until it ends; ``stopping`` is set
    once by ``Node.close``, and every loop ends on it."""

    def __init__(self, node_id: str, settings: NodeSettings, coordinator: Coordinator) -> None:
        self.node_id = node_id
        self.settings = settings
        self.coordinator = coordinator
        self.partitions: dict[int, PartitionRuntime] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` in the background, named after the node; its failure is logged."""
        task = asyncio.create_task(coro, name=f"planaria-{self.node_id}-{name}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def coord(self, call: Awaitable[Any]) -> Any:
        """Await a coordinator call, for at most ``coordinator_timeout_ms``."""
        try:
            return await asyncio.wait_for(call, self.settings.coordinator_timeout_ms / 1000)
        except TimeoutError as exc:
            raise CoordinatorUnavailable("the coordinator did not answer in time") from exc
