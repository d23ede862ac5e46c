"""When a replica's state is snapshotted, and how much of its log the snapshot lets go.

Pure: the runtimes (the node, the simulator) ask :meth:`SnapshotPolicy.due` after their
steps, take :meth:`Replica.snapshot` (an immutable copy, so the replica goes on while it is
serialised and written), store it durably, then compact the replica's memory and the log's
files up to :meth:`SnapshotPolicy.keep_after` (docs/operations.md, "Snapshots").

Why keep entries behind a snapshot at all: a backup that lags needs them, and until
snapshots can be transferred (issue 17) one that needs compacted entries can only be
refilled by a new primary that still holds them. A primary keeps what its slowest peer
lacks, a backup (which does not know its peers) a fixed tail; both at most
``catchup_entries`` behind the snapshot (etcd's ``SnapshotCatchUpEntries``), so memory stays
bounded even while a peer is down.
"""

from __future__ import annotations

from dataclasses import dataclass

from planaria.core.replica import Replica, Role
from planaria.errors import UsageError

__all__ = ["SnapshotPolicy"]


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """``entries``: snapshot once this many entries were applied since the last snapshot;
    ``log_bytes``: or once the log holds this many bytes after it; ``catchup_entries``: at
    most this many entries are kept behind a snapshot for peers that lag."""

    entries: int = 10_000
    log_bytes: int = 16 * 1024 * 1024
    catchup_entries: int = 5_000

    def __post_init__(self) -> None:
        if self.entries < 1 or self.log_bytes < 1 or self.catchup_entries < 0:
            raise UsageError(
                "snapshot entries and bytes must be >= 1, catch-up entries >= 0; got "
                f"{self.entries}, {self.log_bytes}, {self.catchup_entries}"
            )

    def due(self, applied_index: int, snapshot_index: int, log_bytes_after: int) -> bool:
        """Whether to snapshot now: something new is applied and a threshold passed."""
        return applied_index > snapshot_index and (
            applied_index - snapshot_index >= self.entries or log_bytes_after >= self.log_bytes
        )

    def keep_after(self, replica: Replica, snapshot_index: int) -> int:
        """The index up to which memory and disk may drop the log once the snapshot at
        ``snapshot_index`` is durable (never past it, never below the replica's base)."""
        target = max(snapshot_index - self.catchup_entries, 0)
        config = replica.config
        if replica.role is Role.PRIMARY and config is not None:
            peers = [name for name in config.replicas if name != replica.node]
            slowest = min((replica.match_index(name) for name in peers), default=snapshot_index)
            target = max(target, slowest)
        elif replica.role is Role.PRIMARY:
            target = snapshot_index
        return max(min(target, snapshot_index), replica.base_index)
