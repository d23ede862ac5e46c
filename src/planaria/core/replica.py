"""One replica of one partition: the primary/backup protocol as a pure state machine.

A :class:`Replica` takes messages, configs and ticks (with the current time of the node's
clock, in ms) and returns a :class:`~planaria.core.messages.Ready`: what to persist, send,
answer and ask the controller. It never reads a clock, a disk or a socket. The runtime (the
simulator or a node process) must:

- execute every Ready **completely and in field order** (persist, then send, then replies,
  then requests) **before** handing the replica its next input; a crash in the middle of a
  Ready loses the rest of it (nothing after an unfinished persist may happen);
- call :meth:`Replica.tick` regularly (every few ms, at least every ``heartbeat_ms / 2``)
  with the node's current lease;
- deliver every :class:`~planaria.core.messages.ConfigUpdate` (or call
  :meth:`Replica.on_config`) whenever the partition's config in the coordinator changes,
  and once after construction;
- after a crash, or when the node learns that its coordinator session expired, throw every
  Replica away and build new ones from the persisted state (``log``, ``epoch``,
  ``commit_index`` of the last Persists that became durable), and only then start the new
  session. A rebuilt replica is a backup: it never serves as primary an epoch it already
  knew (invariant 7), so the controller gives the partition a new epoch.

The protocol (DESIGN.md §4, notes/replication-brief.md): Raft-style log matching with
``(epoch, index)`` versions; an entry commits when every member of the *required set*
(confirmed ISR plus the ISR of a pending proposal) has it durably and |ISR| >= min_insync;
a new primary appends a barrier entry and serves only once it commits and while its lease is
valid; the ISR shrinks (by a :class:`~planaria.core.messages.ProposeIsr` to the controller)
before a write commits without a lagging member.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from planaria.core.messages import (
    Entry,
    Message,
    NodeId,
    PartitionConfig,
    PartitionId,
    Ready,
    Version,
)
from planaria.errors import UsageError

__all__ = [
    "BUGS",
    "Replica",
    "ReplicaSettings",
    "Role",
]

# Known-bug switches (buggify): each breaks one rule on purpose so the checks can prove they
# bite. Replica-side ones live here; the controller-side ones in controller.py.
BUGS = frozenset(
    {
        "ack-before-replicate",  # ack a write once the primary persisted it
        "no-epoch-fence",  # backups accept Appends from older epochs
        "no-lease-wait",  # the primary serves without a valid lease (controller: promotes early)
        "promote-out-of-sync",  # controller only: any live replica may be promoted
        "skip-truncate",  # backups keep a divergent suffix instead of truncating it
    }
)


class Role(enum.StrEnum):
    PRIMARY = "primary"
    BACKUP = "backup"


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """Tunables of a replica; every time in ms of the node's own clock.

    - ``min_insync``: writes are refused (NOT_ENOUGH_REPLICAS) and nothing commits while the
      confirmed ISR has fewer members (invariant 5). 2 with R = 3: one failure keeps the
      partition writable, and an ack always means two durable copies.
    - ``heartbeat_ms``: the primary sends every replica an Append (entries it has not
      acknowledged, or an empty one) at least this often; also the retransmission period
      after message loss.
    - ``replica_lag_ms``: an ISR backup that has not acknowledged a pending entry appended
      that long ago (or sent no successful reply for that long) is proposed for removal.
      Several heartbeats, so one lost message does not shrink the ISR.
    - ``propose_retry_ms``: an unanswered ProposeIsr is sent again after this long.
    - ``pending_writes_max``: writes in the log but not committed yet; beyond it new writes
      get OVERLOADED (back-pressure instead of unbounded memory).
    - ``batch_entries_max``: at most this many entries in one Append.
    - ``bugs``: known-bug switches from :data:`BUGS` (tests of the tests only).
    """

    min_insync: int = 2
    heartbeat_ms: float = 50.0
    replica_lag_ms: float = 300.0
    propose_retry_ms: float = 200.0
    pending_writes_max: int = 1000
    batch_entries_max: int = 64
    bugs: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.min_insync < 1:
            raise UsageError(f"min_insync must be >= 1, got {self.min_insync}")
        for name in ("heartbeat_ms", "replica_lag_ms", "propose_retry_ms"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.pending_writes_max < 1 or self.batch_entries_max < 1:
            raise UsageError("pending_writes_max and batch_entries_max must be >= 1")
        unknown = set(self.bugs) - BUGS
        if unknown:
            raise UsageError(f"unknown bug switch(es): {sorted(unknown)}; known: {sorted(BUGS)}")


class Replica:
    """One partition replica on one node (primary or backup).

    Build it from persisted state: ``log`` (entries with indexes 1, 2, ... in order),
    ``epoch`` (the highest epoch persisted) and ``commit_index`` (the persisted hint;
    entries up to it are applied at once). A new replica is always a backup.
    """

    def __init__(
        self,
        node: NodeId,
        partition: PartitionId,
        settings: ReplicaSettings | None = None,
        *,
        log: Iterable[Entry] = (),
        epoch: int = 0,
        commit_index: int = 0,
    ) -> None:
        raise NotImplementedError

    # --- inputs ---------------------------------------------------------------------------

    def on_config(self, config: PartitionConfig, now_ms: float) -> Ready:
        """The partition's current config from the coordinator (watch or read).

        Older epochs are ignored. A higher epoch is adopted (and persisted); a primary that
        learns of a higher epoch steps down. A config of a *higher* epoch naming this node
        primary promotes it: it appends and persists the barrier entry and starts replicating
        to every replica in ``config.replicas``; it serves only once the barrier commits.
        A config of the epoch this replica already knew naming it primary while it is a
        backup (it was rebuilt after a restart) does not promote it: it waits for a new
        epoch. At the same epoch, the primary adopts the new ISR and drops a pending
        ProposeIsr once ``config.version`` moved past the proposal's expected version.
        """
        raise NotImplementedError

    def on_message(self, message: Message, now_ms: float) -> Ready:
        """Handle one message addressed to this replica's partition.

        - :class:`ClientRequest`: reads and writes (see :meth:`_on_client`); a refusal is
          always certain (not applied); a write is answered only once committed and
          applied; a retry of a request id still in the log waits for that entry; a retry of
          an older sequence number than the client's last applied one gets no answer (the
          client times out: unknown outcome).
        - :class:`Append` / :class:`AppendReply`: replication (fencing, log matching,
          truncation, commit).
        - :class:`ConfigUpdate`: same as :meth:`on_config`.

        Uses the lease given to the last :meth:`tick`. Raises UsageError for a message of
        another partition or a ClientReply.
        """
        raise NotImplementedError

    def tick(self, now_ms: float, lease_until_ms: float) -> Ready:
        """Advance time: heartbeats / retransmissions, ISR shrink/expand proposals.

        ``lease_until_ms`` is the node's lease in its own clock: the send time of the last
        session renewal the coordinator acknowledged, plus ``lease_ms`` (``-inf`` or 0 when
        there is none). The replica keeps it until the next tick; a primary serves only while
        ``now_ms < lease_until_ms``. Call at least every ``heartbeat_ms / 2``.
        """
        raise NotImplementedError

    # --- views -----------------------------------------------------------------------------

    def serving(self, now_ms: float) -> bool:
        """True when this replica may answer linearizable reads and take writes now: it is
        the primary of the config epoch it knows, its barrier committed, and its lease (from
        the last tick) is valid at ``now_ms``."""
        raise NotImplementedError

    @property
    def node(self) -> NodeId:
        raise NotImplementedError

    @property
    def partition(self) -> PartitionId:
        raise NotImplementedError

    @property
    def role(self) -> Role:
        raise NotImplementedError

    @property
    def epoch(self) -> int:
        """The highest epoch this replica has seen (and persisted)."""
        raise NotImplementedError

    @property
    def commit_index(self) -> int:
        raise NotImplementedError

    @property
    def applied_index(self) -> int:
        """Entries up to here are applied to :attr:`applied` (== commit_index after a step)."""
        raise NotImplementedError

    @property
    def last_index(self) -> int:
        raise NotImplementedError

    @property
    def last_version(self) -> Version:
        """(epoch, index) of the last log entry; Version(0, 0) for an empty log."""
        raise NotImplementedError

    @property
    def config(self) -> PartitionConfig | None:
        """The newest config seen (None before the first)."""
        raise NotImplementedError

    @property
    def isr(self) -> frozenset[NodeId]:
        """The primary's required set: confirmed ISR plus a pending proposal's (else the
        config's ISR)."""
        raise NotImplementedError

    @property
    def applied(self) -> Mapping[bytes, tuple[bytes, Version]]:
        """The applied (committed) key-value state: key -> (value, version). Read-only."""
        raise NotImplementedError

    @property
    def dedup(self) -> Mapping[str, int]:
        """Per client id: the last applied write sequence number (replicated state)."""
        raise NotImplementedError

    def entries_after(self, index: int) -> tuple[Entry, ...]:
        """The log entries with index > ``index``, in order."""
        raise NotImplementedError
