from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from planaria.client import AsyncClient, Client


class FakeTime:
    """Real monotonic time plus every backoff wait, which costs nothing: socket timeouts are
    real (and short in these tests), retry waits are not."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return time.monotonic() + self.offset_s

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset_s += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)


class Blocking:
    """An AsyncClient driven from plain test code, so every scenario runs on both clients."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if inspect.isasyncgenfunction(attr):  # scan_iter: drained into a list
            return lambda *args, **kwargs: self.loop.run_until_complete(
                _drain(attr(*args, **kwargs))
            )
        if not inspect.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: self.loop.run_until_complete(attr(*args, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())

    def finish(self) -> None:
        self.close()
        self.loop.close()


Connect = Callable[..., Any]


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, fake_time: FakeTime) -> Iterator[Connect]:
    """``connect(seeds, **options)``: a Client, or an AsyncClient behind ``Blocking``."""
    made: list[Any] = []

    def make(seeds: Any, **options: Any) -> Any:
        options.setdefault("rng", random.Random(7))
        options.setdefault("clock", fake_time.clock)
        client: Any
        if request.param == "sync":
            client = Client(seeds, sleep=fake_time.sleep, **options)
        else:
            client = Blocking(AsyncClient(seeds, async_sleep=fake_time.async_sleep, **options))
        made.append(client)
        return client

    yield make
    for client in made:
        if isinstance(client, Blocking):
            client.finish()
        else:
            client.close()


async def _drain(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]
