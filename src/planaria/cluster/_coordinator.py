"""Calls to the cluster's coordinator from synchronous code: the launcher is synchronous
(a command, a test, a benchmark) and the coordinator clients are asyncio."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from planaria.coord.interface import Coordinator
from planaria.coord.url import connect
from planaria.core.messages import PartitionConfig

__all__ = ["read_coordinator", "run_sync", "with_coordinator"]

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code (also inside a running loop's
    thread, e.g. from a test that is itself async: then on a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def with_coordinator(url: str, call: Callable[[Coordinator], Awaitable[T]], timeout_s: float) -> T:
    """``await call(coordinator)`` over a fresh connection to the coordinator at ``url``;
    ``TimeoutError`` after ``timeout_s``."""

    async def run() -> T:
        async with connect(url) as coordinator:
            return await call(coordinator)

    return run_sync(asyncio.wait_for(run(), timeout_s))


def read_coordinator(url: str, timeout_s: float) -> tuple[set[str], list[PartitionConfig]]:
    """The registered node ids and the partition configs."""
    from planaria import node  # noqa: PLC0415 -- the front loads only what is used

    async def read(coordinator: Coordinator) -> tuple[set[str], list[PartitionConfig]]:
        members = await coordinator.members()
        configs = await node.read_configs(coordinator)
        return set(members), [config for config, _ in configs.values()]

    return with_coordinator(url, read, timeout_s)
