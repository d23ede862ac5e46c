"""A node's tunables (:class:`NodeSettings`), the lease rule's constants and its clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from planaria.core.compaction import SnapshotPolicy
from planaria.core.lease import session_ttl_min_ms
from planaria.core.replica import ReplicaSettings
from planaria.core.transfer import TransferSettings
from planaria.errors import UsageError
from planaria.storage import FsyncPolicy

__all__ = [
    "BUS_PORT_OFFSET",
    "DRIFT_MAX",
    "EXIT_LOOP_STALLED",
    "LEASE_MARGIN_MS",
    "NodeSettings",
    "monotonic_ms",
]

BUS_PORT_OFFSET = 10_000  # Redis Cluster's bus convention
DRIFT_MAX = 0.05  # relative clock-rate drift the lease rule allows for, of every clock
LEASE_MARGIN_MS = 20.0
# The exit code of a node whose event loop stalled (EX_TEMPFAIL: restart it).
EXIT_LOOP_STALLED = 75


def monotonic_ms() -> float:
    """The node's clock: monotonic, in ms."""
    return time.monotonic() * 1000.0


@dataclass(frozen=True)
class NodeSettings:
    """Tunables of a node (times in ms of the node's monotonic clock).

    ``session_ttl_ms`` must be at least ``(lease_ms / 0.95 + 20) * 1.05`` so that once the
    coordinator expires the session, the node's lease surely ran out, with the node's and the
    coordinator's clocks each drifting by up to 5 % (``planaria.core.lease``).
    """

    session_ttl_ms: float = 300.0
    lease_ms: float = 200.0
    keepalive_interval_ms: float = 50.0
    tick_ms: float = 20.0
    config_poll_ms: float = 500.0
    write_timeout_ms: float = 30_000.0  # a pending write is answered UNKNOWN after this
    coordinator_timeout_ms: float = 2_000.0
    start_timeout_ms: float = 30_000.0  # how long start() waits for the coordinator
    fsync: FsyncPolicy = field(default_factory=FsyncPolicy)
    # Heartbeats every 100 ms (a node holds many partitions: each heartbeats every peer);
    # an ISR backup is dropped after 1 s without progress, so a busy disk or a loaded
    # machine does not shrink ISRs spuriously (a dead backup leaves sooner: its session
    # expires after session_ttl_ms and the controller removes it).
    replica: ReplicaSettings = field(
        default_factory=lambda: ReplicaSettings(heartbeat_ms=100.0, replica_lag_ms=1000.0)
    )
    connections_max: int = 10_000
    pipeline_depth_max: int = 1024
    partition_inbox_max: int = 10_000  # replies waiting for a partition's disk; then BUSY
    # When each partition snapshots its state and compacts its log (docs/operations.md).
    snapshots: SnapshotPolicy = field(default_factory=SnapshotPolicy)
    # Snapshot transfers to backups that need compacted entries: chunking, window, and the
    # byte rate of all of them together (``planaria node --snapshot-transfer-bytes-per-s``).
    transfer: TransferSettings = field(default_factory=TransferSettings)
    storage_threads: int = 4  # opening, recovering and closing logs (persists: one thread)
    # Redis' maxmemory with the noeviction policy, against the process's RSS (node/_memory.py):
    # past it, commands that may grow the data are refused with Redis' OOM error. 0: no limit.
    maxmemory_bytes: int = 0
    # Every this often, whatever survived so far is frozen out of the garbage collector's
    # full collections (see Node._gc_freeze_loop); 0 turns it off.
    gc_freeze_interval_ms: float = 1000.0
    # An event loop that makes no progress this long (seen from the keep-alive thread) ends
    # the process: past its lease it serves nothing, yet the thread would keep its session.
    # Far above any pause of a healthy loop under load; a SIGSTOP does not count.
    loop_stall_max_ms: float = 3000.0
    # KEYS answers an error instead of walking more keys than this (the node's partitions it
    # leads, together): one KEYS holds the event loop for its whole walk; SCAN does not.
    keys_max: int = 100_000

    def __post_init__(self) -> None:
        for name in (
            "session_ttl_ms", "lease_ms", "keepalive_interval_ms", "tick_ms", "config_poll_ms",
            "write_timeout_ms", "coordinator_timeout_ms", "start_timeout_ms", "loop_stall_max_ms",
        ):  # fmt: skip
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        ttl_min_ms = session_ttl_min_ms(
            self.lease_ms, drift_max=DRIFT_MAX, margin_ms=LEASE_MARGIN_MS
        )
        if self.session_ttl_ms < ttl_min_ms:
            raise UsageError(
                f"session_ttl_ms {self.session_ttl_ms} must be >= (lease_ms / {1 - DRIFT_MAX} "
                f"+ {LEASE_MARGIN_MS}) * {1 + DRIFT_MAX} = {ttl_min_ms:.1f} "
                f"(lease_ms = {self.lease_ms})"
            )
        if self.keepalive_interval_ms >= self.lease_ms:
            raise UsageError("keepalive_interval_ms must be shorter than lease_ms")
        if self.loop_stall_max_ms <= 2 * self.keepalive_interval_ms:
            raise UsageError("loop_stall_max_ms must exceed two keep-alive intervals")
        if self.storage_threads < 1 or self.partition_inbox_max < 1 or self.keys_max < 1:
            raise UsageError("storage_threads, partition_inbox_max and keys_max must be >= 1")
        if self.maxmemory_bytes < 0:
            raise UsageError(
                f"maxmemory_bytes must be >= 0 (0: no limit), not {self.maxmemory_bytes}"
            )
