"""Coordination: sessions, ephemeral registration, versioned compare-and-set, watches and
controller election, behind one interface (:class:`Coordinator`) that the memory, ZooKeeper
and etcd backends implement alike. See docs/coordination.md.

``MemoryStore`` (the pure state machine the simulator drives) and everything here but
``MemoryCoordinator`` import without asyncio; ``MemoryCoordinator`` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planaria.coord.errors import (
    Conflict,
    CoordinatorUnavailable,
    LeadershipLost,
    MalformedRecord,
    NodeIdInUse,
    SessionExpired,
    VersionConflict,
)
from planaria.coord.interface import Coordinator, Watch
from planaria.coord.layout import (
    CONFIGS_PREFIX,
    CONTROLLER_ELECTION,
    MEMBERS_PREFIX,
    Registration,
    config_key,
    decode_config,
    decode_registration,
    encode_config,
    encode_registration,
    member_key,
    partition_of_key,
)
from planaria.coord.memory import MemoryStore, WatchId
from planaria.coord.types import (
    Candidate,
    CheckLeader,
    CheckVersion,
    Create,
    DeleteIfVersion,
    EventKind,
    SessionId,
    SessionInfo,
    SetIfVersion,
    TxnOp,
    VersionedValue,
    WatchEvent,
)

if TYPE_CHECKING:
    from planaria.coord.memory_async import MemoryCoordinator

__all__ = [
    "CONFIGS_PREFIX",
    "CONTROLLER_ELECTION",
    "MEMBERS_PREFIX",
    "Candidate",
    "CheckLeader",
    "CheckVersion",
    "Conflict",
    "Coordinator",
    "CoordinatorUnavailable",
    "Create",
    "DeleteIfVersion",
    "EventKind",
    "LeadershipLost",
    "MalformedRecord",
    "MemoryCoordinator",
    "MemoryStore",
    "NodeIdInUse",
    "Registration",
    "SessionExpired",
    "SessionId",
    "SessionInfo",
    "SetIfVersion",
    "TxnOp",
    "VersionConflict",
    "VersionedValue",
    "Watch",
    "WatchEvent",
    "WatchId",
    "config_key",
    "decode_config",
    "decode_registration",
    "encode_config",
    "encode_registration",
    "member_key",
    "partition_of_key",
]


def __getattr__(name: str) -> Any:
    if name == "MemoryCoordinator":
        from planaria.coord.memory_async import MemoryCoordinator  # noqa: PLC0415 (lazy: asyncio)

        return MemoryCoordinator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
