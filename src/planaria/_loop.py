"""The event loop planaria's own processes run on: uvloop (libuv, in C).

A node spends most of its time in event-loop machinery (callbacks, socket reads and writes,
timers); uvloop does that work in C. An A/B of fresh clusters under redis-benchmark gave
about 15% more durable SET/s and 13% less node CPU per SET than the standard loop
(docs/BENCHMARKS.md, third session). Library code never depends on it: everything also
runs on asyncio's default loop (the tests run nodes in-process on it).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from planaria.errors import MissingExtra

try:
    import uvloop
except ImportError as exc:
    raise MissingExtra("uvloop", "server") from exc

__all__ = ["run"]

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` on a new uvloop loop."""
    return uvloop.run(main)
