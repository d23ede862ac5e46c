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
  session. A rebuilt replica is a backup: it never leads an epoch it was rebuilt with (a
  previous incarnation may have led it; invariant 7), so the controller gives the partition
  a new epoch (it notices the new session incarnation).

The protocol (docs/design.md §4): Raft-style log matching with
``(epoch, index)`` versions; an entry commits when every member of the *required set*
(confirmed ISR plus the ISR of a pending proposal) has it durably and |ISR| >= min_insync;
a new primary appends a barrier entry and serves only once it commits and while its lease is
valid; the ISR shrinks (by a :class:`~planaria.core.messages.ProposeIsr` to the controller)
before a write commits without a lagging member.
"""

from __future__ import annotations

import enum
from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from planaria.core.containers import WRONGTYPE, read_value
from planaria.core.expiry import Expiries
from planaria.core.keyspace import BUILD_SLICE_KEYS, KeyIndex, LazyKeyIndex, type_name, write_keys
from planaria.core.messages import (
    DEDUP_WINDOW,
    EXPIRE_KEYS_PER_ENTRY,
    Append,
    AppendReply,
    AppliedWrites,
    ClientReply,
    ClientRequest,
    ConfigUpdate,
    Entry,
    ErrorCode,
    Expire,
    ExpireKeys,
    Get,
    GetEx,
    GetExpiry,
    Message,
    NodeId,
    PartitionConfig,
    PartitionId,
    Persist,
    ProposeIsr,
    Ready,
    ReplicaSnapshot,
    Reply,
    RequestId,
    Send,
    Set,
    SnapshotAck,
    SnapshotChunk,
    Value,
    ValueRead,
    Version,
    WriteOp,
)
from planaria.core.strings import apply_write
from planaria.errors import UsageError

__all__ = [
    "BUGS",
    "Replica",
    "ReplicaSettings",
    "Role",
    "merge_appends",
]

# Known-bug switches (buggify): each breaks one rule on purpose so the checks can prove they
# bite. Replica-side ones live here; the controller-side ones in controller.py.
BUGS = frozenset(
    {
        "ack-before-replicate",  # ack a write once the primary persisted it
        "backup-expires-on-its-own",  # a backup deletes the keys its own clock says expired
        "backup-unserving",  # node only: BACKUP BEGIN snapshots a replica that does not serve
        "compact-past-commit",  # compact() drops (and applies) entries not committed yet
        "dedup-last-only",  # remember only a client's last write: an older one gets no answer
        "ignore-data-id",  # controller only: a replica back on a replaced disk stays in sync
        # transfer only (core/transfer.py): install a snapshot from a stale epoch's primary
        "install-without-epoch-check",
        "no-epoch-fence",  # backups accept Appends from older epochs
        "no-lease-wait",  # the primary serves without a valid lease (controller: promotes early)
        "promote-out-of-sync",  # controller only: any live replica may be promoted
        "read-ignores-expiry",  # reads answer a key past its expiry
        "release-before-durable",  # pipeline only: effects leave before their persists are durable
        "scan-build-unreconciled",  # a lazy key index build ignores the writes made during it
        "scan-index-stale",  # the scan order index never learns of added or removed keys
        # the request-id table is never consulted: a write retried after it applied (a
        # timeout, a failover) is logged and applied again (an INCR counts twice)
        "retry-applies-again",
        "skip-truncate",  # backups keep a divergent suffix instead of truncating it
        "snapshot-shares-containers",  # later writes change the hashes and sets of a snapshot
        "wiped-stays-in-sync",  # controller only: a replica that lost its log stays in the ISR
    }
)


# The reads (a tuple, not a union built on every request: the write path checks it too).
_READ_OPS = (Get, GetExpiry, ValueRead)


def _sets_expiry(op: WriteOp) -> bool:
    return isinstance(op, (Set, Expire, GetEx)) and op.expire_ms is not None


def merge_appends(first: Append, then: Append, entries_max: int) -> Append | None:
    """One Append that a backup steps exactly as ``first`` followed by ``then``, or None when
    there is none within ``entries_max`` entries: same partition, sender and epoch, and
    ``then`` starts where ``first`` ends (a heartbeat after entries merges into them).

    Equivalent because log matching makes ``first``'s last entry ``then``'s prev, and the
    later commit index is the larger (a primary's commit only grows within its epoch).
    """
    last_epoch = first.entries[-1].epoch if first.entries else first.prev_epoch
    if (
        then.prev_index != first.prev_index + len(first.entries)
        or then.prev_epoch != last_epoch
        or then.epoch != first.epoch
        or then.partition != first.partition
        or then.sender != first.sender
        or len(first.entries) + len(then.entries) > entries_max
    ):
        return None
    return Append(
        partition=first.partition,
        epoch=first.epoch,
        sender=first.sender,
        prev_index=first.prev_index,
        prev_epoch=first.prev_epoch,
        entries=first.entries + then.entries,
        commit_index=max(first.commit_index, then.commit_index),
        sent_ms=first.sent_ms,
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
    - ``append_retry_ms``: after a failed AppendReply that moves the resend point nowhere
      (a duplicate, or a backup refusing the same Append again), the next Append to that
      backup waits this long instead of going out at once (no ping-pong at wire speed).
    - ``pending_writes_max``: writes in the log but not committed yet; beyond it new writes
      get OVERLOADED (back-pressure instead of unbounded memory).
    - ``batch_entries_max``: at most this many entries in one Append.
    - ``dedup_window``: per client id, the request-id table (exactly-once) remembers the
      reply of every applied write whose sequence number is within this many of the client's
      highest applied one (``highest - dedup_window < seq <= highest``): such a write is
      applied once whatever order its attempts arrive in, and a retry gets the stored reply.
      A write at or below ``highest - dedup_window`` is refused with SEQ_TOO_OLD (whether
      an earlier attempt was applied is forgotten). planaria's client never lets its
      sequence numbers in flight spread wider than this (its ``write_window``).
    - ``dedup_clients_max``: the table keeps at most this many client ids (so at most
      ``dedup_clients_max * dedup_window`` replies); the one that wrote least recently is
      forgotten first. The order is the log's, so every replica forgets the same ones. A
      client forgotten this way (idle while this many others wrote) could see a retry
      applied twice.
    - ``expire_keys_per_entry``: active expiry deletes at most this many keys per log
      entry (one such entry in flight at a time), so that many keys expiring at once
      become many small entries between the clients' writes, not one that stalls them.
    - ``bugs``: known-bug switches from :data:`BUGS` (tests of the tests only).
    """

    min_insync: int = 2
    heartbeat_ms: float = 50.0
    replica_lag_ms: float = 300.0
    propose_retry_ms: float = 200.0
    append_retry_ms: float = 10.0
    pending_writes_max: int = 1000
    batch_entries_max: int = 64
    dedup_window: int = DEDUP_WINDOW
    dedup_clients_max: int = 100_000
    expire_keys_per_entry: int = EXPIRE_KEYS_PER_ENTRY
    bugs: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.min_insync < 1:
            raise UsageError(f"min_insync must be >= 1, got {self.min_insync}")
        for name in ("heartbeat_ms", "replica_lag_ms", "propose_retry_ms", "append_retry_ms"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        limits = (
            self.pending_writes_max,
            self.batch_entries_max,
            self.dedup_window,
            self.dedup_clients_max,
            self.expire_keys_per_entry,
        )
        if min(limits) < 1:
            raise UsageError(
                "pending_writes_max, batch_entries_max, dedup_window, dedup_clients_max and "
                "expire_keys_per_entry must be >= 1"
            )
        unknown = set(self.bugs) - BUGS
        if unknown:
            raise UsageError(f"unknown bug switch(es): {sorted(unknown)}; known: {sorted(BUGS)}")


@dataclass(slots=True)
class _Peer:
    """What a primary knows about one other replica during its epoch."""

    next_index: int  # the next entry to send
    match_index: int = 0  # known equal to ours up to here (durable there)
    acked: bool = False  # replied with success at least once this epoch
    last_ok_ms: float = 0.0  # last successful reply (or the promotion)
    last_sent_ms: float = float("-inf")
    sent_from: int = 0  # the first entry of the last Append sent
    retry_due: bool = False  # a failed reply asked for a resend: after append_retry_ms
    # The send time of the newest Append whose successful reply confirmed match_index.
    match_sent_ms: float = float("-inf")
    # Replies to Appends sent before this are about a log the backup lost: ignored.
    stale_before_ms: float = float("-inf")

    # Entries it needs were compacted away (next_index <= the log's base): it can only be
    # refilled by a snapshot transfer; until then it gets probes and stays out of the ISR.
    needs_snapshot: bool = False

    def forget(self, now_ms: float) -> None:
        """The backup lost (part of) its log: nothing it acknowledged before counts."""
        self.match_index = 0
        self.acked = False
        self.match_sent_ms = float("-inf")
        self.stale_before_ms = now_ms


class Replica:
    """One partition replica on one node (primary or backup).

    Build it from persisted state: ``snapshot`` (None: the empty state at index 0),
    ``log`` (consecutive entries that go on from the snapshot: the first may be at or
    before ``snapshot.index + 1``; entries up to the snapshot are kept for catch-up, not
    applied again), ``epoch`` (the highest epoch persisted) and ``commit_index`` (the
    persisted hint; entries up to it are applied at once). A new replica is always a backup.

    The in-memory log starts after a *base* (``base_index``, with its epoch): entries up to
    it were compacted away (:meth:`compact`), and every log-matching rule treats the base
    like an entry of that epoch. The base is always committed: nothing at or below it is
    ever truncated, and a peer that needs entries at or below it is reported as needing a
    snapshot (:attr:`peers_needing_snapshot`) instead of being sent them.

    ``lost``: the node lost (part of) this log (it was wiped, damaged or replaced), so
    what it persisted no longer says which epochs a previous incarnation led. It then leads
    only a config that made it primary under its current session (``primary_incarnation``;
    the runtime tells it the session with :meth:`session_opened`), never an older one.
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
        lost: bool = False,
        snapshot: ReplicaSnapshot | None = None,
    ) -> None:
        self._node = node
        self._lost = lost
        self._session: int | None = None
        self._partition = partition
        self._settings = settings if settings is not None else ReplicaSettings()
        self._bugs = self._settings.bugs
        self._log: list[Entry] = list(log)
        if snapshot is not None and snapshot.partition != partition:
            raise UsageError(f"snapshot of p{snapshot.partition} given to p{partition}")
        applied_index = snapshot.index if snapshot is not None else 0
        # The base: the snapshot's position, or the first kept entry before it.
        self._base_index = applied_index
        self._base_epoch = applied_epoch = snapshot.epoch if snapshot is not None else 0
        if self._log and self._log[0].index == 1:
            self._base_index, self._base_epoch = 0, 0  # the whole log is still there
        elif self._log and self._log[0].index <= applied_index:
            first = self._log.pop(0)
            if first.index == applied_index and first.epoch != applied_epoch:
                raise UsageError(f"log entry {first.index} disagrees with the snapshot")
            self._base_index, self._base_epoch = first.index, first.epoch
        previous = Entry(self._base_epoch, self._base_index)
        for entry in self._log:
            if entry.index != previous.index + 1:
                raise UsageError(f"log entry index {entry.index} does not follow {previous.index}")
            if entry.epoch < previous.epoch:
                raise UsageError(f"log entry {entry.index} has a lower epoch than its predecessor")
            if entry.index == applied_index and entry.epoch != applied_epoch:
                raise UsageError(f"log entry {entry.index} disagrees with the snapshot")
            previous = entry
        if previous.index < applied_index:
            raise UsageError(f"the log ends at {previous.index}, before its snapshot")
        if epoch < 0 or commit_index < 0:
            raise UsageError("epoch and commit_index must be >= 0")
        self._epoch = max(epoch, previous.epoch)
        # The epochs a previous incarnation may have served as primary: never again (inv. 7).
        self._recovered_epoch = self._epoch
        self._role = Role.BACKUP
        self._config: PartitionConfig | None = None
        self._lease_until_ms = float("-inf")
        self._commit_index = applied_index
        self._applied_index = applied_index
        self._kv: dict[bytes, tuple[Value, Version]] = (
            dict(snapshot.kv) if snapshot is not None else {}
        )
        # Which hashes and sets a write may change in place: those made in this generation,
        # which every snapshot ends (its copy of _kv shares them; core/containers.py). From
        # 1, so the containers of the snapshot built from (generation -1) are copied.
        self._generation = 1
        # Replicated state: the keys' expiries (Unix ms), only keys of _kv.
        self._expiries = Expiries(snapshot.expires if snapshot is not None else None)
        # The keys in scan order (SCAN, KEYS, RANDOMKEY): derived from ``_kv``, the same
        # order on every replica (core/keyspace.py). Built only when a key-space read asks
        # (start_key_index, then key_index_step between other work), then kept in step by
        # every apply; dropped when the replica stops being primary. Nothing until then.
        self._keys = LazyKeyIndex(self._kv, reconcile="scan-build-unreconciled" not in self._bugs)
        # Replicated state, rebuilt from the log: least recently written client first.
        self._dedup: dict[str, AppliedWrites] = dict(snapshot.dedup) if snapshot is not None else {}
        # The node's wall clock minus its monotonic one (``tick``'s ``wall_ms``), and the
        # latest time logged: this replica's clock for expiry never goes below it, so a new
        # primary with a clock behind goes on from the times its predecessor logged.
        self._wall_offset_ms = 0.0
        self._log_time_ms = max((entry.time_ms for entry in self._log), default=0)
        self._expiry_index = 0  # this primary's active-expiry entry in flight (0: none)
        # The last entry in the log that sets an expiry (0: none): see _on_client.
        self._expiry_set_index = max(
            (e.index for e in self._log if e.op is not None and _sets_expiry(e.op)), default=0
        )
        # Transitions of a peer to needing a snapshot (a counter for status and the sim).
        self._snapshots_needed = 0
        # The bug keeps a window of one: only the last write.
        self._dedup_window = 1 if "dedup-last-only" in self._bugs else self._settings.dedup_window
        # primary state (reset on every promotion)
        self._barrier_index = 0
        self._promoted_ms = 0.0
        self._peers: dict[NodeId, _Peer] = {}
        self._append_ms: dict[int, float] = {}
        self._in_log: dict[RequestId, int] = {}  # uncommitted writes -> their index
        self._waiters: dict[RequestId, list[str]] = {}
        self._proposal: ProposeIsr | None = None
        self._proposal_sent_ms = 0.0
        self._advance_commit(min(commit_index, self.last_index), Ready())

    # --- inputs ---------------------------------------------------------------------------

    def on_config(self, config: PartitionConfig, now_ms: float) -> Ready:
        """The partition's current config from the coordinator (watch or read).

        Older epochs are ignored. A higher epoch is adopted (and persisted); a primary that
        learns of a higher epoch steps down. A config naming this node primary promotes it
        (it appends and persists the barrier entry and starts replicating to every replica in
        ``config.replicas``; it serves only once the barrier commits) unless its epoch is one
        this replica was rebuilt with (a previous incarnation may have led it): then it
        waits for a new epoch. At the same epoch, the primary adopts the new ISR and drops a
        pending ProposeIsr once ``config.version`` moved past the proposal's expected
        version.
        """
        self._check_partition(config.partition)
        ready = Ready()
        if config.epoch < self._epoch:
            return ready
        if self._config is not None and (config.epoch, config.version) <= (
            self._config.epoch,
            self._config.version,
        ):
            return ready
        previous = self._config
        self._config = config
        may_lead = self._may_lead(config)
        if config.epoch > self._epoch:
            self._step_down()
            self._epoch = config.epoch
            if may_lead:
                self._promote(now_ms, ready)
            else:
                ready.persist.append(self._persist(None, ()))
            return ready
        if self._role is Role.BACKUP and may_lead:
            # This incarnation learned the epoch from a peer before its config: it never led it.
            self._promote(now_ms, ready)
            return ready
        if self._role is Role.PRIMARY:
            if config.primary != self._node:
                self._step_down()
                return ready
            if self._proposal is not None and config.version > self._proposal.expected_version:
                self._proposal = None
            self._sync_peers(now_ms)
            for name, peer in self._peers.items():
                wiped = config.wiped_loss(name)
                if previous is not None and wiped != previous.wiped_loss(name):
                    peer.forget(now_ms)  # its loss is recorded: only new acks count
            # A smaller required set may let entries commit now.
            self._try_commit(ready)
        return ready

    def on_message(self, message: Message, now_ms: float) -> Ready:
        """Handle one message addressed to this replica's partition.

        - :class:`ClientRequest`: reads and writes. A refusal is always certain (not
          applied, but SEQ_TOO_OLD). A write is answered only once committed and applied
          (a primary that steps down drops the waiting requests: the client times out,
          unknown outcome). A client's writes may arrive in any order: each is applied once
          (see ``ReplicaSettings.dedup_window``). A retry of a request id still in the log
          waits for that entry; a retry of an applied write inside the client's window gets
          the stored reply; a write at or below the window gets SEQ_TOO_OLD, at once or,
          if it was already in the log, when that entry applies. ``stale_ok`` reads are
          answered by any replica from its applied state, marked ``stale`` unless it serves.
        - :class:`Append` / :class:`AppendReply`: replication (fencing, log matching,
          truncation, commit).
        - :class:`ConfigUpdate`: same as :meth:`on_config`.

        Uses the lease given to the last :meth:`tick`. Raises UsageError for a message of
        another partition or a ClientReply.
        """
        if isinstance(message, ConfigUpdate):
            return self.on_config(message.config, now_ms)
        if isinstance(message, (ClientReply, SnapshotChunk, SnapshotAck)):
            raise UsageError(
                f"a replica does not take {type(message).__name__} messages "
                "(snapshot transfers go to core/transfer.py)"
            )
        self._check_partition(message.partition)
        if isinstance(message, ClientRequest):
            return self._on_client(message, now_ms)
        if isinstance(message, Append):
            return self._on_append(message)
        return self._on_append_reply(message, now_ms)

    def session_opened(self, incarnation: int, now_ms: float) -> Ready:
        """The node's coordinator session (its incarnation) for this replica's lifetime;
        matters only for a ``lost`` replica (see the class), which takes the lead now if
        the config it holds was made for this session."""
        self._session = incarnation
        ready = Ready()
        config = self._config
        if (
            self._role is Role.BACKUP
            and config is not None
            and config.epoch == self._epoch
            and self._may_lead(config)
        ):
            self._promote(now_ms, ready)
        return ready

    def _may_lead(self, config: PartitionConfig) -> bool:
        """``config`` names this replica primary of an epoch no previous incarnation of it
        may have led (for a lost log: one made for its current session)."""
        return (
            config.primary == self._node
            and config.epoch > self._recovered_epoch
            and (not self._lost or config.primary_incarnation == self._session)
        )

    def tick(self, now_ms: float, lease_until_ms: float, wall_ms: float | None = None) -> Ready:
        """Advance time: heartbeats / retransmissions, ISR shrink/expand proposals, and on a
        serving primary active expiry (an :class:`ExpireKeys` entry for keys past their
        expiry, at most ``expire_keys_per_entry``, one in flight at a time).

        ``lease_until_ms`` is the node's lease in its own clock: the send time of the last
        session renewal the coordinator acknowledged, plus ``lease_ms`` (``-inf`` or 0 when
        there is none). The replica keeps it until the next tick; a primary serves only while
        ``now_ms < lease_until_ms``. Call at least every ``heartbeat_ms / 2``.

        ``wall_ms``: the node's wall clock (Unix ms) at ``now_ms``, for key expiry (kept as
        an offset from ``now_ms`` until the next tick that gives one; none yet: 0).
        """
        self._lease_until_ms = lease_until_ms
        if wall_ms is not None:
            self._wall_offset_ms = wall_ms - now_ms
        ready = Ready()
        if self._role is not Role.PRIMARY:
            if "backup-expires-on-its-own" in self._bugs and self._expiries:
                clock_ms = self._clock_ms(now_ms)
                keys_index = self._keys
                for key in self._expiries.due(clock_ms, self._settings.expire_keys_per_entry):
                    before = keys_index.before_write((key,)) if keys_index.tracking else ()
                    self._kv.pop(key, None)
                    self._key_index_done(before)
                    self._expiries.discard(key)
            return ready
        for name in sorted(self._peers):
            peer = self._peers[name]
            wait_ms = (
                self._settings.append_retry_ms if peer.retry_due else self._settings.heartbeat_ms
            )
            if now_ms - peer.last_sent_ms >= wait_ms:
                if peer.acked:
                    # Resend whatever is unacknowledged (a lost Append or reply).
                    peer.next_index = peer.match_index + 1
                self._send_append(name, peer, now_ms, ready)
        self._maybe_propose_isr(now_ms, ready)
        self._maybe_expire(now_ms, ready)
        return ready

    def _clock_ms(self, now_ms: float) -> int:
        """This replica's clock for expiry (Unix ms): the node's wall clock, never below
        the latest time logged."""
        return max(int(now_ms + self._wall_offset_ms), self._log_time_ms)

    def _maybe_expire(self, now_ms: float, ready: Ready) -> None:
        """Active expiry: log the deletion of keys whose expiry passed (a slice of them),
        unless one such entry is still in flight or the log is full."""
        if (
            not self._expiries
            or self._expiry_index > self._applied_index
            or not self.serving(now_ms)
            or self.last_index - self._commit_index >= self._settings.pending_writes_max
        ):
            return
        clock_ms = self._clock_ms(now_ms)
        keys = self._expiries.due(clock_ms, self._settings.expire_keys_per_entry)
        if not keys:
            return
        entry = Entry(self._epoch, self.last_index + 1, None, ExpireKeys(tuple(keys)), clock_ms)
        self._expiry_index = entry.index
        self._append_entry(entry, now_ms, ready)

    # --- views -----------------------------------------------------------------------------

    def serving(self, now_ms: float) -> bool:
        """True when this replica may answer linearizable reads and take writes now: it is
        the primary of the config epoch it knows, its barrier committed, it is not handing
        over (the config names no ``handoff``), and its lease (from the last tick) is valid
        at ``now_ms``."""
        return (
            self._role is Role.PRIMARY
            and self._config is not None
            and self._config.primary == self._node
            and self._config.epoch == self._epoch
            and self._config.handoff is None
            and self._commit_index >= self._barrier_index
            and (now_ms < self._lease_until_ms or "no-lease-wait" in self._bugs)
        )

    @property
    def node(self) -> NodeId:
        return self._node

    @property
    def partition(self) -> PartitionId:
        return self._partition

    @property
    def settings(self) -> ReplicaSettings:
        return self._settings

    @property
    def role(self) -> Role:
        return self._role

    @property
    def epoch(self) -> int:
        """The highest epoch this replica has seen (and persisted)."""
        return self._epoch

    @property
    def commit_index(self) -> int:
        return self._commit_index

    @property
    def applied_index(self) -> int:
        """Entries up to here are applied to :attr:`applied` (== commit_index after a step)."""
        return self._applied_index

    @property
    def last_index(self) -> int:
        return self._base_index + len(self._log)

    @property
    def last_version(self) -> Version:
        """(epoch, index) of the last log entry (or of the base when none is kept);
        Version(0, 0) for an empty log."""
        if not self._log:
            return Version(self._base_epoch, self._base_index)
        return Version(self._log[-1].epoch, self._log[-1].index)

    @property
    def base_index(self) -> int:
        """The in-memory log holds the entries after this one (0: from the first)."""
        return self._base_index

    @property
    def log_entries(self) -> int:
        """How many entries the in-memory log holds."""
        return len(self._log)

    @property
    def peers_needing_snapshot(self) -> frozenset[NodeId]:
        """As primary: the peers that need entries this log no longer holds (they get only
        probes and stay out of the ISR until a snapshot refills them)."""
        return frozenset(name for name, peer in self._peers.items() if peer.needs_snapshot)

    @property
    def snapshots_needed(self) -> int:
        """How many times a peer of this replica was found to need a snapshot."""
        return self._snapshots_needed

    def epoch_at(self, index: int) -> int:
        """The epoch of the entry at ``index`` (the base's at the base; 0 at 0)."""
        if index == self._base_index:
            return self._base_epoch
        if not self._base_index < index <= self.last_index:
            raise UsageError(
                f"index {index} is not in the log ({self._base_index}..{self.last_index})"
            )
        return self._log[index - self._base_index - 1].epoch

    def snapshot(self) -> ReplicaSnapshot:
        """The replicated state at :attr:`applied_index`, as an immutable copy (one
        C-speed copy of each table; the entries in them are shared, never changed)."""
        if "snapshot-shares-containers" not in self._bugs:
            self._generation += 1  # the hashes and sets it shares are never changed again
        return ReplicaSnapshot(
            partition=self._partition,
            index=self._applied_index,
            epoch=self.epoch_at(self._applied_index),
            kv=MappingProxyType(dict(self._kv)),
            dedup=MappingProxyType(dict(self._dedup)),
            dedup_window=self._dedup_window,
            expires=MappingProxyType(self._expiries.copy_times()),
        )

    def compact(self, index: int) -> None:
        """Drop the in-memory entries up to ``index`` (a durable snapshot covers them).

        Only committed entries may go: a snapshot never covers one a new primary could
        still truncate. Raises UsageError past the commit index (with the
        ``compact-past-commit`` bug, applies the entries up to ``index`` as if committed).
        """
        if index <= self._base_index:
            return
        if index > self.last_index:
            raise UsageError(f"cannot compact to {index}: the log ends at {self.last_index}")
        if index > self._commit_index:
            if "compact-past-commit" not in self._bugs:
                raise UsageError(
                    f"cannot compact to {index}: only entries up to the commit index "
                    f"{self._commit_index} may be compacted"
                )
            self._advance_commit(index, Ready())  # the bug: treat them as committed
        self._base_epoch = self.epoch_at(index)
        del self._log[: index - self._base_index]
        self._base_index = index

    @property
    def config(self) -> PartitionConfig | None:
        """The newest config seen (None before the first)."""
        return self._config

    @property
    def isr(self) -> frozenset[NodeId]:
        """The primary's required set: confirmed ISR plus a pending proposal's (else the
        config's ISR)."""
        return self._required()

    @property
    def barrier_index(self) -> int:
        """Index of this primary's barrier entry (0 when not primary)."""
        return self._barrier_index

    @property
    def applied(self) -> Mapping[bytes, tuple[Value, Version]]:
        """The applied (committed) key-value state: key -> (value, version). Read-only."""
        return MappingProxyType(self._kv)

    @property
    def expiries(self) -> Expiries:
        """The applied keys' expiries: key -> Unix ms (replicated state). Read-only."""
        return self._expiries

    def clock_ms(self, now_ms: float) -> int:
        """The time (Unix ms) this replica judges expiry by at ``now_ms``."""
        return self._clock_ms(now_ms)

    @property
    def key_index(self) -> KeyIndex | None:
        """The applied keys in scan order (SCAN, KEYS, RANDOMKEY), once built (else None:
        see :meth:`start_key_index`). Read it, never change it."""
        return self._keys.index

    @property
    def key_index_building(self) -> bool:
        """Whether a build of the key index runs (started, not complete, not dropped)."""
        return self._keys.building

    @property
    def key_index_builds(self) -> int:
        """How many builds of the key index this replica started."""
        return self._keys.builds

    def start_key_index(self) -> bool:
        """Start building the key index unless it is built or building; whether it started.
        The caller then calls :meth:`key_index_step` until it answers True (writes may be
        applied between steps), or until the build is dropped (the replica stepped down)."""
        return self._keys.start()

    def key_index_step(self, max_keys: int = BUILD_SLICE_KEYS) -> bool:
        """One bounded slice of the build: whether the index is complete now."""
        return self._keys.step(max_keys)

    @property
    def dedup(self) -> Mapping[str, tuple[int, ...]]:
        """Per client id: the sequence numbers of its applied writes inside its dedup window,
        ascending; the last is its highest (replicated state, equal on every replica that
        applied the same log prefix)."""
        return {client: tuple(applied.seqs) for client, applied in sorted(self._dedup.items())}

    def match_index(self, peer: NodeId) -> int:
        """As primary: the index up to which ``peer`` is known to match (0 if unknown)."""
        state = self._peers.get(peer)
        return state.match_index if state is not None else 0

    def entries_after(self, index: int) -> tuple[Entry, ...]:
        """The log entries with index > ``index``, in order (from the base on: raises
        UsageError for an ``index`` below it)."""
        if index < self._base_index:
            raise UsageError(f"entries after {index} were compacted (base {self._base_index})")
        return tuple(self._log[index - self._base_index :])

    def __repr__(self) -> str:
        return (
            f"Replica({self._node!r}, p{self._partition}, {self._role}, epoch={self._epoch}, "
            f"base={self._base_index}, last={self.last_index}, commit={self._commit_index})"
        )

    # --- client requests -------------------------------------------------------------------

    def _on_client(self, request: ClientRequest, now_ms: float) -> Ready:
        ready = Ready()
        serving = self.serving(now_ms)
        op = request.op
        if isinstance(op, _READ_OPS):
            if serving or request.stale_ok:
                ready.replies.append(Reply(request.client, self._read(request, serving, now_ms)))
            else:
                ready.replies.append(self._refusal(request, self._not_serving_error()))
            return ready
        if not serving:
            ready.replies.append(self._refusal(request, self._not_serving_error()))
            return ready
        seen = self._seen(request.request_id)
        if isinstance(seen, ClientReply):
            ready.replies.append(Reply(request.client, seen))
            return ready
        if seen is not None:
            if "dedup-last-only" not in self._bugs:  # the bug: no answer at all
                ready.replies.append(self._refusal(request, seen))
            return ready
        if request.request_id in self._in_log:
            self._waiters.setdefault(request.request_id, []).append(request.client)
            return ready
        if self._config is not None and len(self._config.isr) < self._settings.min_insync:
            ready.replies.append(self._refusal(request, ErrorCode.NOT_ENOUGH_REPLICAS))
            return ready
        if self.last_index - self._commit_index >= self._settings.pending_writes_max:
            ready.replies.append(self._refusal(request, ErrorCode.OVERLOADED))
            return ready
        index = self.last_index + 1
        # The entry's time matters only where a key may have an expiry when it applies: an
        # expiry set by this op or applied, or one in the log before it. Without, it is left
        # out (0), so a store that uses no TTL logs (and pays) what it did before.
        expiring = op if isinstance(op, (Set, Expire, GetEx)) else None
        expire_ms = expiring.expire_ms if expiring is not None else None
        timed = (
            expire_ms is not None
            or self._expiry_set_index > self._applied_index
            or bool(self._expiries)
        )
        clock_ms = self._clock_ms(now_ms) if timed else 0
        if expiring is not None and expire_ms is not None:
            self._expiry_set_index = index
            if expiring.relative:
                # The primary decides the absolute time; every replica applies the logged one.
                op = replace(expiring, expire_ms=clock_ms + expire_ms, relative=False)
        entry = Entry(self._epoch, index, request.request_id, op, clock_ms)
        self._in_log[request.request_id] = entry.index
        self._waiters[request.request_id] = [request.client]
        self._append_entry(entry, now_ms, ready)
        return ready

    def _append_entry(self, entry: Entry, now_ms: float, ready: Ready) -> None:
        """Log an entry of this primary and start replicating it."""
        self._log.append(entry)
        self._log_time_ms = max(self._log_time_ms, entry.time_ms)
        self._append_ms[entry.index] = now_ms
        ready.persist.append(self._persist(None, (entry,)))
        for name in sorted(self._peers):
            peer = self._peers[name]
            if peer.acked and peer.next_index == entry.index:
                self._send_append(name, peer, now_ms, ready)
        self._try_commit(ready)

    def _read(self, request: ClientRequest, serving: bool, now_ms: float) -> ClientReply:
        """A read from the applied state, as of this replica's clock: a key past its expiry
        is not there (a backup's stale read judges by its own clock, as a Redis replica)."""
        op = request.op
        if isinstance(op, ValueRead):
            return self._read_value(request, op, serving, now_ms)
        key = op.key
        found = self._kv.get(key)
        expire_ms = self._expiries.get_time(key) if found is not None else None
        clock_ms = self._clock_ms(now_ms)
        if (
            expire_ms is not None
            and expire_ms < clock_ms
            and "read-ignores-expiry" not in self._bugs
        ):
            found = expire_ms = None
        result: int | bytes | None = None
        failure: str | None = None
        value = found[0] if found is not None else None
        if isinstance(op, GetExpiry):
            if found is None:
                result = -2
            elif expire_ms is None:
                result = -1
            else:
                result = max(expire_ms - clock_ms, 0) if op.relative else expire_ms
        if value is not None and not isinstance(value, bytes):
            # A hash or set: GET's WRONGTYPE, and its type's name for TYPE and EXISTS.
            if not isinstance(op, GetExpiry):
                result, failure = type_name(value).encode(), WRONGTYPE
            value = None
        return ClientReply(
            partition=self._partition,
            request_id=request.request_id,
            value=value,
            version=found[1] if found is not None else None,
            stale=not serving,
            epoch=self._epoch,
            result=result,
            failure=failure,
        )

    def _read_value(
        self, request: ClientRequest, op: ValueRead, serving: bool, now_ms: float
    ) -> ClientReply:
        """A read of a hash or set (core/containers.py), keys past their expiry not there."""
        kv, expiries = self._kv, self._expiries
        clock_ms = self._clock_ms(now_ms)
        ignore_expiry = "read-ignores-expiry" in self._bugs

        def live(key: bytes) -> Value | None:
            found = kv.get(key)
            if found is None:
                return None
            expire_ms = expiries.get_time(key)
            if expire_ms is not None and expire_ms < clock_ms and not ignore_expiry:
                return None
            return found[0]

        client, seq = request.request_id
        result, failure = read_value(op, live, f"{client}:{seq}")
        return ClientReply(
            partition=self._partition,
            request_id=request.request_id,
            stale=not serving,
            epoch=self._epoch,
            result=result,
            failure=failure,
        )

    def _not_serving_error(self) -> ErrorCode:
        config = self._config
        if config is not None and config.handoff is not None and config.primary == self._node:
            return ErrorCode.NOT_PRIMARY  # a planned transfer: a brief redirect
        if self._role is Role.PRIMARY or (config is not None and config.primary == self._node):
            return ErrorCode.NOT_READY
        return ErrorCode.NOT_PRIMARY

    def _refusal(self, request: ClientRequest, error: ErrorCode) -> Reply:
        config = self._config
        hint = None if config is None else config.handoff or config.primary
        reply = ClientReply(
            partition=self._partition,
            request_id=request.request_id,
            error=error,
            primary_hint=hint,
            epoch=self._epoch,
        )
        return Reply(request.client, reply)

    # --- replication: backup side ----------------------------------------------------------

    def _on_append(self, append: Append) -> Ready:
        ready = Ready()
        reply_epoch = self._epoch
        if append.epoch < self._epoch:
            if "no-epoch-fence" not in self._bugs or self._role is Role.PRIMARY:
                ready.send.append(self._append_reply(append, self._epoch, False, 0, 0))
                return ready
            reply_epoch = append.epoch  # the bug: pretend to be of the sender's epoch
        epoch_changed = False
        if append.epoch > self._epoch:
            self._step_down()
            self._epoch = append.epoch
            reply_epoch = append.epoch
            epoch_changed = True
        elif append.epoch == self._epoch and self._role is Role.PRIMARY:
            # Two primaries of one epoch cannot exist (one config per epoch): refuse.
            ready.send.append(self._append_reply(append, self._epoch, False, 0, 0))
            return ready
        prev, prev_epoch, entries = append.prev_index, append.prev_epoch, append.entries
        if prev < self._base_index:
            # Entries up to the base are committed (a snapshot covers them), so equal to the
            # primary's: skip them, and check the one at the base against the base's epoch.
            skip = min(self._base_index - prev, len(entries))
            if skip:
                prev, prev_epoch = prev + skip, entries[skip - 1].epoch
                entries = entries[skip:]
        if prev < self._base_index:
            pass  # every entry sent is below the base: nothing to check or add
        elif prev > self.last_index or (prev > 0 and self.epoch_at(prev) != prev_epoch):
            if epoch_changed:
                ready.persist.append(self._persist(None, ()))
            hint = self._mismatch_hint(prev)
            ready.send.append(self._append_reply(append, reply_epoch, False, 0, hint))
            return ready
        truncate_after: int | None = None
        appended: list[Entry] = []
        for offset, entry in enumerate(entries, start=1):
            index = prev + offset
            if entry.index != index:
                raise UsageError(f"Append entries are not consecutive after {prev}")
            if index <= self.last_index:
                if self.epoch_at(index) == entry.epoch or "skip-truncate" in self._bugs:
                    continue
                # index > prev >= base: never truncates into the snapshot.
                truncate_after = index - 1
                del self._log[index - 1 - self._base_index :]
                self._forget_after(index - 1)
            self._log.append(entry)
            self._log_time_ms = max(self._log_time_ms, entry.time_ms)
            if entry.op is not None and _sets_expiry(entry.op):
                self._expiry_set_index = entry.index
            appended.append(entry)
        match = append.prev_index + len(append.entries)
        commit = max(self._commit_index, min(append.commit_index, match))
        if truncate_after is not None or appended or epoch_changed:
            # The commit hint is persisted with the entries it covers.
            ready.persist.append(self._persist(truncate_after, tuple(appended), commit))
        self._advance_commit(commit, ready)
        ready.send.append(self._append_reply(append, reply_epoch, True, match, 0))
        return ready

    def _mismatch_hint(self, prev: int) -> int:
        """Where the primary should retry from: our log end, or before the conflicting
        epoch's first entry (never below what we know is committed)."""
        if prev > self.last_index:
            return self.last_index
        conflict_epoch = self.epoch_at(prev)
        first = prev
        while first > self._base_index + 1 and self.epoch_at(first - 1) == conflict_epoch:
            first -= 1
        return max(first - 1, min(self._commit_index, prev - 1))

    def _append_reply(
        self, append: Append, epoch: int, success: bool, match: int, hint: int
    ) -> Send:
        reply = AppendReply(
            partition=self._partition,
            epoch=epoch,
            sender=self._node,
            success=success,
            match_index=match,
            hint_index=hint,
            echo_sent_ms=append.sent_ms,
        )
        return Send(append.sender, reply)

    # --- replication: primary side ---------------------------------------------------------

    def _on_append_reply(self, reply: AppendReply, now_ms: float) -> Ready:
        ready = Ready()
        if reply.epoch > self._epoch:
            self._step_down()
            self._epoch = reply.epoch
            ready.persist.append(self._persist(None, ()))
            return ready
        if self._role is not Role.PRIMARY or reply.epoch < self._epoch:
            return ready
        peer = self._peers.get(reply.sender)
        if peer is None or reply.echo_sent_ms < peer.stale_before_ms:
            return ready
        if reply.success:
            match = min(reply.match_index, self.last_index)
            if match >= peer.match_index:
                peer.match_sent_ms = max(peer.match_sent_ms, reply.echo_sent_ms)
            peer.match_index = max(peer.match_index, match)
            peer.acked = True
            peer.retry_due = False
            peer.last_ok_ms = now_ms
            peer.next_index = max(peer.next_index, peer.match_index + 1)
            self._try_commit(ready)
            if peer.next_index <= self.last_index:
                self._send_append(reply.sender, peer, now_ms, ready)
            self._maybe_propose_isr(now_ms, ready)
        else:
            hint = min(reply.hint_index, self.last_index)
            if hint < peer.match_index and reply.echo_sent_ms > peer.match_sent_ms:
                # It holds less than it acknowledged after that: it lost data. Nothing it
                # acknowledged counts any more (as an ISR member it now holds commits back
                # and is proposed out of the ISR as lagging).
                peer.forget(now_ms)
            retry_from = max(peer.match_index, hint) + 1
            progress = retry_from < peer.sent_from
            peer.next_index = retry_from
            if progress:
                self._send_append(reply.sender, peer, now_ms, ready)
            else:
                peer.retry_due = True  # the tick resends after append_retry_ms
        return ready

    def _send_append(self, name: NodeId, peer: _Peer, now_ms: float, ready: Ready) -> None:
        start = peer.next_index
        base = self._base_index
        if start <= base:
            # It needs entries that were compacted away: only a snapshot can refill it.
            # Until then, a probe at the base once a heartbeat (it succeeds if the peer does
            # hold the base after all), never the missing entries.
            if not peer.needs_snapshot:
                peer.needs_snapshot = True
                self._snapshots_needed += 1
            if now_ms - peer.last_sent_ms < self._settings.heartbeat_ms:
                return
            entries: tuple[Entry, ...] = ()
            prev = base
        else:
            peer.needs_snapshot = False
            offset = start - 1 - base
            entries = tuple(self._log[offset : offset + self._settings.batch_entries_max])
            prev = start - 1
        append = Append(
            partition=self._partition,
            epoch=self._epoch,
            sender=self._node,
            prev_index=prev,
            prev_epoch=self.epoch_at(prev),
            entries=entries,
            commit_index=self._commit_index,
            sent_ms=now_ms,
        )
        if start > base:
            peer.next_index = start + len(entries)  # else it keeps needing a snapshot
        peer.last_sent_ms = now_ms
        peer.sent_from = start
        peer.retry_due = False
        ready.send.append(Send(name, append))

    def _required(self) -> frozenset[NodeId]:
        if self._config is None:
            return frozenset()
        if self._proposal is None:
            return self._config.isr
        return self._config.isr | self._proposal.isr

    def _try_commit(self, ready: Ready) -> None:
        if self._role is not Role.PRIMARY or self._config is None:
            return
        if "ack-before-replicate" in self._bugs:
            self._advance_commit(self.last_index, ready)
            return
        if len(self._config.isr) < self._settings.min_insync:
            return
        candidate = self.last_index
        for name in self._required():
            if name == self._node:
                continue
            peer = self._peers.get(name)
            candidate = min(candidate, peer.match_index if peer is not None else 0)
        self._advance_commit(candidate, ready)

    def _maybe_propose_isr(self, now_ms: float, ready: Ready) -> None:
        config = self._config
        if config is None or self._role is not Role.PRIMARY:
            return
        if self._proposal is not None:
            if now_ms - self._proposal_sent_ms >= self._settings.propose_retry_ms:
                self._proposal_sent_ms = now_ms
                ready.requests.append(self._proposal)
            return
        desired = set(config.isr)
        for name in sorted(config.isr - {self._node}):
            if self._lagging(name, now_ms):
                desired.discard(name)
        for name in sorted(set(config.replicas) - config.isr):
            peer = self._peers.get(name)
            if (
                peer is not None
                and peer.acked
                and now_ms - peer.last_ok_ms <= 2 * self._settings.heartbeat_ms  # alive now
                and peer.match_index >= max(self._barrier_index, self._commit_index)
                and not self._lagging(name, now_ms)
            ):
                desired.add(name)
        if desired != config.isr:
            self._proposal = ProposeIsr(
                partition=self._partition,
                epoch=self._epoch,
                expected_version=config.version,
                isr=frozenset(desired),
            )
        elif self._handoff_ready():
            self._proposal = ProposeIsr(
                partition=self._partition,
                epoch=self._epoch,
                expected_version=config.version,
                isr=config.isr,
                primary=config.handoff,
            )
        else:
            return
        self._proposal_sent_ms = now_ms
        ready.requests.append(self._proposal)

    def _handoff_ready(self) -> bool:
        """A planned transfer may be asked for: the config names an ISR member to hand over
        to, everything in our log committed (no write waits on us), and the target holds
        all of it (so it serves as soon as its barrier commits)."""
        config = self._config
        if config is None or config.handoff is None or config.handoff not in config.isr:
            return False
        peer = self._peers.get(config.handoff)
        return (
            peer is not None
            and self._commit_index == self.last_index
            and peer.match_index >= self.last_index
        )

    def _lagging(self, name: NodeId, now_ms: float) -> bool:
        peer = self._peers.get(name)
        if peer is None:
            return True  # not a replica any more
        lag_ms = self._settings.replica_lag_ms
        if now_ms - peer.last_ok_ms > lag_ms:
            return True
        if peer.match_index >= self.last_index:
            return False
        oldest_missing_ms = self._append_ms.get(peer.match_index + 1, self._promoted_ms)
        return now_ms - oldest_missing_ms > lag_ms

    def _promote(self, now_ms: float, ready: Ready) -> None:
        self._role = Role.PRIMARY
        self._promoted_ms = now_ms
        barrier = Entry(self._epoch, self.last_index + 1)
        self._log.append(barrier)
        self._barrier_index = barrier.index
        self._append_ms = {barrier.index: now_ms}
        self._in_log = {}
        self._expiry_index = 0
        # Keys a deposed primary's unapplied ExpireKeys took out of the index come back.
        self._expiries.reindex()
        base = self._base_index
        for entry in self._log[self._applied_index - base : barrier.index - 1 - base]:
            if entry.request_id is not None:
                self._in_log[entry.request_id] = entry.index
        self._waiters = {}
        self._proposal = None
        self._peers = {}
        self._sync_peers(now_ms)
        ready.persist.append(self._persist(None, (barrier,)))
        for name in sorted(self._peers):
            self._send_append(name, self._peers[name], now_ms, ready)
        self._try_commit(ready)

    def _sync_peers(self, now_ms: float) -> None:
        if self._config is None:
            return
        wanted = [name for name in self._config.replicas if name != self._node]
        for name in list(self._peers):
            if name not in wanted:
                del self._peers[name]
        for name in wanted:
            if name not in self._peers:
                # Probe at the barrier: a backup in sync accepts it at once.
                self._peers[name] = _Peer(next_index=self._barrier_index, last_ok_ms=now_ms)

    def _step_down(self) -> None:
        if self._role is Role.PRIMARY:
            self._role = Role.BACKUP
            self._barrier_index = 0
            self._peers = {}
            self._append_ms = {}
            self._in_log = {}
            self._waiters = {}
            self._proposal = None
            self._expiry_index = 0
            # Only a primary answers key-space reads: a backup pays nothing for an index.
            self._keys.drop()

    # --- log and state -----------------------------------------------------------------------

    def _persist(
        self, truncate_after: int | None, entries: tuple[Entry, ...], commit: int | None = None
    ) -> Persist:
        return Persist(
            partition=self._partition,
            truncate_after=truncate_after,
            entries=entries,
            epoch=self._epoch,
            commit_index=self._commit_index if commit is None else commit,
        )

    def _forget_after(self, index: int) -> None:
        for request_id in [rid for rid, at in self._in_log.items() if at > index]:
            del self._in_log[request_id]

    def _advance_commit(self, commit: int, ready: Ready) -> None:
        commit = min(commit, self.last_index)
        if commit <= self._commit_index:
            return
        self._commit_index = commit
        while self._applied_index < commit:
            entry = self._log[self._applied_index - self._base_index]
            self._applied_index += 1
            self._append_ms.pop(entry.index, None)
            if entry.op is None:
                continue
            if entry.request_id is None:  # the primary's own (active expiry)
                keys_index = self._keys
                op = entry.op
                before = keys_index.before_write(write_keys(op)) if keys_index.tracking else ()
                apply_write(self._kv, entry.op, Version(entry.epoch, entry.index),
                            self._expiries, entry.time_ms, self._generation)  # fmt: skip
                self._key_index_done(before)
                continue
            self._in_log.pop(entry.request_id, None)
            reply = self._apply(entry, entry.request_id, entry.op)
            waiters = self._waiters.pop(entry.request_id, ())
            if reply is not None:
                ready.replies.extend(Reply(client, reply) for client in waiters)

    def _seen(self, request_id: RequestId) -> ClientReply | ErrorCode | None:
        """What the dedup table knows of a write: its stored reply if it was applied,
        SEQ_TOO_OLD at or below its client's window, None if it may be applied now."""
        if "retry-applies-again" in self._bugs:
            return None  # the bug: every retry is news
        client_id, seq = request_id
        applied = self._dedup.get(client_id)
        if applied is None or not applied.seqs:
            return None
        if seq <= applied.seqs[-1] - self._dedup_window:
            return ErrorCode.SEQ_TOO_OLD
        return applied.replies.get(seq)

    def _remember(self, client_id: str, seq: int, reply: ClientReply) -> None:
        """Record an applied write in its client's window, dropping what fell below it."""
        # Re-inserted, so the table's order is least recently written first; a new
        # AppliedWrites each time, since snapshots share the old one.
        old = self._dedup.pop(client_id, None) or AppliedWrites()
        seqs = list(old.seqs)
        if seq not in old.replies:  # applied again only with the retry-applies-again bug
            insort(seqs, seq)
        replies = dict(old.replies)
        replies[seq] = reply
        below = bisect_right(seqs, seqs[-1] - self._dedup_window)
        for dropped in seqs[:below]:
            del replies[dropped]
        self._dedup[client_id] = AppliedWrites(tuple(seqs[below:]), replies)
        if len(self._dedup) > self._settings.dedup_clients_max:
            del self._dedup[next(iter(self._dedup))]

    def _apply(self, entry: Entry, request_id: RequestId, op: WriteOp) -> ClientReply | None:
        """Apply one committed write once per request id; return its (stored) reply, a
        SEQ_TOO_OLD refusal for one below its client's window (not applied), or None for
        that with the ``dedup-last-only`` bug (no answer)."""
        seen = self._seen(request_id)
        if isinstance(seen, ClientReply):
            return seen
        if seen is not None:
            if "dedup-last-only" in self._bugs:
                return None
            return ClientReply(
                partition=self._partition, request_id=request_id, error=seen, epoch=entry.epoch
            )
        version = Version(entry.epoch, entry.index)
        keys_index = self._keys
        before = keys_index.before_write(write_keys(op)) if keys_index.tracking else ()
        previous, take, result, failure = apply_write(
            self._kv, op, version, self._expiries, entry.time_ms, self._generation
        )
        self._key_index_done(before)
        reply = ClientReply(
            partition=self._partition,
            request_id=request_id,
            value=previous,
            applied=take,
            version=version if take else None,
            epoch=entry.epoch,
            result=result,
            failure=failure,
        )
        self._remember(request_id[0], request_id[1], reply)
        return reply

    def _key_index_done(self, before: tuple[tuple[bytes, bool], ...]) -> None:
        """Bring the key index in step with the keys an apply added or removed."""
        if before and "scan-index-stale" not in self._bugs:  # the bug: it never learns
            self._keys.after_write(before)

    def _check_partition(self, partition: PartitionId) -> None:
        if partition != self._partition:
            raise UsageError(
                f"message for partition {partition} given to replica of {self._partition}"
            )
