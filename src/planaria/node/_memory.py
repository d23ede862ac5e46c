"""A node's memory limit, as Redis' ``maxmemory`` with the ``noeviction`` policy: once the
node's memory passes the limit, commands that may grow the data (Redis' ``denyoom`` ones:
SET, INCR, APPEND, ...) are refused with Redis' OOM error; reads, deletes and expiry changes
go on, so a client can always make room.

What is measured is the process's resident set size (``/proc/self/statm``), read on every
tick of the node (20 ms): Redis counts its allocator's bytes, a Python process has no such
count that is cheap to read. RSS includes the interpreter and the log in memory, not only
the keys, and it does not fall at once when keys are deleted (the allocator keeps freed
memory for reuse); a limit is set with that headroom in mind (docs/operations.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from planaria.errors import UsageError

__all__ = ["OOM_ERROR", "MemoryGauge", "parse_memory", "resident_bytes"]

# Redis 7's reply, byte for byte (server.c, shared.oomerr).
OOM_ERROR = "OOM command not allowed when used memory > 'maxmemory'."

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size in bytes (Linux)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


class MemoryGauge:
    """The node's used memory, refreshed by :meth:`refresh`, against ``maxmemory_bytes``
    (0: no limit, and nothing is read)."""

    def __init__(
        self, maxmemory_bytes: int, read_bytes: Callable[[], int] = resident_bytes
    ) -> None:
        if maxmemory_bytes < 0:
            raise UsageError(f"maxmemory must be >= 0 bytes (0: no limit), not {maxmemory_bytes}")
        self.maxmemory_bytes = maxmemory_bytes
        self._read_bytes = read_bytes
        self.used_bytes = 0
        self.refused = 0  # commands refused for memory, for INFO
        self.refresh()

    def refresh(self) -> None:
        if self.maxmemory_bytes:
            self.used_bytes = self._read_bytes()

    @property
    def full(self) -> bool:
        """Whether commands that may grow the data are refused now."""
        return 0 < self.maxmemory_bytes < self.used_bytes


def parse_memory(text: str) -> int:
    """A byte count as Redis' configuration writes one: ``1000``, ``1k`` (1000), ``1kb``
    (1024), ``m``/``mb``, ``g``/``gb``, in any case."""
    units = {"k": 1000, "kb": 1024, "m": 10**6, "mb": 1 << 20, "g": 10**9, "gb": 1 << 30}
    lowered = text.strip().lower()
    number, unit = lowered, ""
    for suffix in sorted(units, key=len, reverse=True):
        if lowered.endswith(suffix):
            number, unit = lowered[: -len(suffix)], suffix
            break
    if not number.isdigit():
        raise UsageError(f"not a memory size: {text!r} (bytes, or with k, kb, m, mb, g, gb)")
    return int(number) * units.get(unit, 1)
