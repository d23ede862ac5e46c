"""Every message, log entry, config and effect of the replication protocol.

The protocol (docs/design.md §4, PacificA / Kafka-ISR style) is a set of pure state machines:
messages and the time go in, a :class:`Ready` comes out. The runtime that drives them (the
simulator, or a node process with sockets and disks) must execute a Ready **in order**, as
etcd's raft does:

1. ``persist``: make every :class:`Persist` durable (log truncation and appends, epoch);
2. ``send``: hand every :class:`Send` to the network (best effort: it may be lost);
3. ``replies``: answer clients (an acknowledgement only ever follows step 1);
4. ``requests``: forward every :class:`ProposeIsr` to the controller (best effort).

Everything here is immutable and made of plain values (str, int, bytes, tuples), so a message
can be logged, compared, hashed, duplicated and replayed by the simulator, and serialized
(msgpack) by the real transport.

Vocabulary:

- a *node* holds *replicas*, one per partition it is assigned; one replica of a partition is
  the *primary*, the rest are *backups*;
- every write gets a *version* ``(epoch, index)``: the epoch of the primary that took it and its
  place in the partition's log; the first entry of every epoch is an :class:`Entry` with
  ``op=None`` (the new primary's barrier: once it commits, everything before it did too);
- the *config* of a partition lives in the coordinator and changes only by compare-and-set on
  its ``version``; ``isr`` (the in-sync replicas) always includes the primary.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from planaria.errors import UsageError

__all__ = [
    "DEDUP_WINDOW",
    "EXPIRE_KEYS_PER_ENTRY",
    "STRING_BYTES_MAX",
    "Append",
    "AppendReply",
    "AppendTo",
    "AppliedWrites",
    "ClearExpiry",
    "ClientReply",
    "ClientRequest",
    "ConfigUpdate",
    "Delete",
    "Entry",
    "ErrorCode",
    "Expire",
    "ExpireKeys",
    "Get",
    "GetEx",
    "GetExpiry",
    "HashDelete",
    "HashIncrBy",
    "HashIncrByFloat",
    "HashSet",
    "HashValue",
    "IncrBy",
    "IncrByFloat",
    "MSet",
    "Message",
    "NodeId",
    "Op",
    "PartitionConfig",
    "PartitionId",
    "Persist",
    "ProposeIsr",
    "Ready",
    "Rename",
    "ReplicaSnapshot",
    "Reply",
    "RequestId",
    "Result",
    "Send",
    "Set",
    "SetAdd",
    "SetPop",
    "SetRange",
    "SetRemove",
    "SetStore",
    "SetValue",
    "SnapshotAck",
    "SnapshotChunk",
    "Value",
    "ValueRead",
    "Version",
    "WriteOp",
]

NodeId: TypeAlias = str
PartitionId: TypeAlias = int
# (client id, sequence number): unique per client write; retries reuse it (invariant 8).
RequestId: TypeAlias = tuple[str, int]
# How far apart a client's sequence numbers in flight may be: replicas remember this many
# below the highest applied (``ReplicaSettings.dedup_window``), planaria's client never
# spreads wider (its ``write_window``).
DEDUP_WINDOW = 64


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """Where a write sits in a partition's history: compared by epoch, then index."""

    epoch: int
    index: int


# --- client operations -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Get:
    key: bytes


@dataclass(frozen=True, slots=True)
class Set:
    """SET key value [NX | XX] [IFEQ if_value] [EX | PX | EXAT | PXAT | KEEPTTL]: at most
    one of the conditions. ``expire_ms``: the key's expiry, in Unix ms (EXAT/PXAT), or with
    ``relative`` a delay (EX/PX) that the primary turns into an absolute time by its clock
    before it logs the op (a logged op is never relative). No expiry and no ``keep_ttl``:
    the key's TTL is cleared, as a plain SET does."""

    key: bytes
    value: bytes
    nx: bool = False  # only if the key does not exist
    xx: bool = False  # only if the key exists
    if_value: bytes | None = None  # only if the current value equals this (compare-and-set)
    expire_ms: int | None = None
    relative: bool = False
    keep_ttl: bool = False
    get: bool = False  # SET ... GET, GETSET: it reads the old value (WRONGTYPE on a hash)


@dataclass(frozen=True, slots=True)
class Delete:
    """DEL, UNLINK (any type); with ``get`` GETDEL (a string only: WRONGTYPE otherwise)."""

    key: bytes
    get: bool = False


@dataclass(frozen=True, slots=True)
class Expire:
    """EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: give the key the expiry ``expire_ms`` (Unix ms;
    with ``relative`` a delay the primary makes absolute before logging), if the key exists
    and the conditions hold (``nx``: it has none; ``xx``: it has one; ``gt``/``lt``: the new
    one is later/earlier, no expiry counting as infinite). A time not after the entry's
    deletes the key. Result: 1 if it did, else 0."""

    key: bytes
    expire_ms: int
    relative: bool = False
    nx: bool = False
    xx: bool = False
    gt: bool = False
    lt: bool = False


@dataclass(frozen=True, slots=True)
class Rename:
    """RENAME / RENAMENX (``nx``): ``key``'s value, of any type, and its expiry move to
    ``new_key`` (one slot with it), replacing what that held (with ``nx``: only if it held
    nothing); the moved key's version is this entry's. Fails with ``ERR no such key`` when
    ``key`` does not exist. Result: 1 if it moved, 0 if not (RENAMENX)."""

    key: bytes
    new_key: bytes
    nx: bool = False


@dataclass(frozen=True, slots=True)
class ClearExpiry:
    """PERSIST: remove the key's expiry. Result: 1 if it had one, else 0."""

    key: bytes


@dataclass(frozen=True, slots=True)
class GetEx:
    """GETEX key [EX | PX | EXAT | PXAT | PERSIST]: the value (``value`` of the reply), and
    the key's expiry set to ``expire_ms`` (as :class:`Expire` makes it absolute; a time not
    after the entry's deletes the key) or removed (``persist``). ``error``: the expiry the
    client sent is invalid; as in Redis it fails only when the key exists."""

    key: bytes
    expire_ms: int | None = None
    relative: bool = False
    persist: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ExpireKeys:
    """Active expiry, proposed by the primary itself (no request id): delete each of
    ``keys`` whose expiry is before the entry's time (``Entry.time_ms``) when it applies
    (a key given a new expiry or persisted since stays). At most
    :data:`EXPIRE_KEYS_PER_ENTRY` keys."""

    keys: tuple[bytes, ...]

    @property
    def key(self) -> bytes:
        return self.keys[0]


@dataclass(frozen=True, slots=True)
class GetExpiry:
    """TTL, PTTL (``relative``: the ms left), EXPIRETIME, PEXPIRETIME (the Unix ms): a read.
    The reply's ``result``: -2 when the key does not exist, -1 when it has no expiry."""

    key: bytes
    relative: bool = False


# The most keys one active-expiry entry deletes (:class:`ExpireKeys`): a million keys that
# expire at once go in slices of this many, each a small entry, so writes interleave.
EXPIRE_KEYS_PER_ENTRY = 128


# The longest string a write may make (Redis' own limit, its default proto-max-bulk-len);
# a node lowers it for its own writes (each op carries the bound it was taken under).
STRING_BYTES_MAX = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class IncrBy:
    """INCR, INCRBY, DECR, DECRBY: add ``delta`` to the key's value read as a signed 64-bit
    integer (a missing key counts as 0). Result: the new value; fails, changing nothing, on a
    value that is not such an integer or a sum out of range."""

    key: bytes
    delta: int


@dataclass(frozen=True, slots=True)
class IncrByFloat:
    """INCRBYFLOAT: add ``delta`` (the increment as sent; a valid float, the server checked)
    to the key's value, in x87 extended precision as redis-server computes it
    (core/strings.py). Result: the new value as stored; fails, changing nothing, on a value
    that is not a float or a result that is not finite."""

    key: bytes
    delta: bytes


@dataclass(frozen=True, slots=True)
class AppendTo:
    """APPEND: add ``value`` at the end of the key's value (a missing key counts as empty).
    Result: the new length; fails when it would pass ``bytes_max``."""

    key: bytes
    value: bytes
    bytes_max: int = STRING_BYTES_MAX


@dataclass(frozen=True, slots=True)
class SetRange:
    """SETRANGE: overwrite the key's value from ``offset`` (>= 0) with ``value``, padding
    with zero bytes. Result: the new length; fails when it would pass ``bytes_max``."""

    key: bytes
    offset: int
    value: bytes
    bytes_max: int = STRING_BYTES_MAX


@dataclass(frozen=True, slots=True)
class MSet:
    """MSET / MSETNX: set every ``(key, value)`` of ``pairs`` (one slot) in one entry; with
    ``nx``, only if none of the keys exists. ``applied`` says whether it did."""

    pairs: tuple[tuple[bytes, bytes], ...]
    nx: bool = False

    @property
    def key(self) -> bytes:
        """The first key (the one that routes it: all share a slot)."""
        return self.pairs[0][0]


# --- hashes and sets (core/containers.py applies them) -------------------------------------


class HashValue(dict[bytes, bytes]):
    """A hash's fields and values, in insertion order (as a small Redis hash lists them).
    ``generation``: the replica's snapshot generation it was made in; one made before the
    last snapshot is shared with it and never changed (a write copies it first)."""

    __slots__ = ("generation",)

    def __init__(self, *args: object, generation: int = -1) -> None:
        super().__init__(*args)
        self.generation = generation


class SetValue(dict[bytes, None]):
    """A set's members (a dict for an order that is the same on every replica, which
    SPOP's deterministic choice needs); ``generation`` as :class:`HashValue`'s."""

    __slots__ = ("generation",)

    def __init__(self, *args: object, generation: int = -1) -> None:
        super().__init__(*args)
        self.generation = generation


# What a key holds: a string, a hash or a set. An empty hash or set is never stored.
Value: TypeAlias = bytes | HashValue | SetValue


@dataclass(frozen=True, slots=True)
class HashSet:
    """HSET key field value [field value ...]: set each field of ``items`` (in order; a
    field twice ends with the last value). Result: how many fields were new. With ``nx``
    (HSETNX, one item): only a field not there yet; result 1 if it was set, else 0."""

    key: bytes
    items: tuple[tuple[bytes, bytes], ...]
    nx: bool = False


@dataclass(frozen=True, slots=True)
class HashDelete:
    """HDEL key field [field ...]. Result: how many were there; the hash goes with its last."""

    key: bytes
    fields: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class HashIncrBy:
    """HINCRBY: as :class:`IncrBy` on a field. Result: the new value."""

    key: bytes
    field: bytes
    delta: int


@dataclass(frozen=True, slots=True)
class HashIncrByFloat:
    """HINCRBYFLOAT: as :class:`IncrByFloat` on a field (``delta`` as sent, a finite
    float: the server checked). Result: the new value as stored."""

    key: bytes
    field: bytes
    delta: bytes


@dataclass(frozen=True, slots=True)
class SetAdd:
    """SADD key member [member ...]. Result: how many were new."""

    key: bytes
    members: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SetRemove:
    """SREM key member [member ...]. Result: how many were there; the set goes with its last."""

    key: bytes
    members: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SetPop:
    """SPOP key [count]: remove members chosen by a generator seeded with the entry's
    version (the primary's choice of epoch and index, so every replica removes the same
    ones). Result: the member or None (``count`` None), else a tuple of the members."""

    key: bytes
    count: int | None = None


@dataclass(frozen=True, slots=True)
class SetStore:
    """SINTERSTORE, SUNIONSTORE, SDIFFSTORE (``kind``: inter, union, diff): ``key`` (the
    destination, any type, its expiry cleared) becomes the result over ``sources`` (one slot
    with it), or is deleted when the result is empty. Result: the result's size."""

    key: bytes
    sources: tuple[bytes, ...]
    kind: str


@dataclass(frozen=True, slots=True)
class ValueRead:
    """A read of a hash or set (HGET, HGETALL, SMEMBERS, SINTER, HSCAN, ...): ``command``
    (lower case) with its ``args`` after the key, and ``others`` the further keys (SINTER,
    SUNION, SDIFF; one slot). core/containers.py answers it from the applied state."""

    key: bytes
    command: str
    args: tuple[bytes, ...] = ()
    others: tuple[bytes, ...] = ()
    error: str | None = None  # HSCAN/SSCAN's bad option: fails only on a hash/set there


# Every write is one of these; core/strings.py applies them (the one dispatch), so a new
# command adds a dataclass here and a case there (and a kind in core/codec.py).
WriteOp: TypeAlias = (
    Set
    | Delete
    | IncrBy
    | IncrByFloat
    | AppendTo
    | SetRange
    | MSet
    | Expire
    | ClearExpiry
    | GetEx
    | ExpireKeys
    | HashSet
    | HashDelete
    | HashIncrBy
    | HashIncrByFloat
    | SetAdd
    | SetRemove
    | SetPop
    | SetStore
    | Rename
)
Op: TypeAlias = Get | GetExpiry | ValueRead | WriteOp
# What a write answers besides ``value``/``applied``: a number (INCR, APPEND, SETRANGE), a
# string (INCRBYFLOAT), or a list (SPOP with a count; reads of hashes and sets: HMGET's
# items may be None, SMISMEMBER's are numbers).
Result: TypeAlias = int | bytes | tuple[bytes | int | None, ...] | None


class ErrorCode(enum.StrEnum):
    """Why a replica refused a client request. Every refusal means: certainly not applied by
    this request, except SEQ_TOO_OLD (an earlier attempt of the same request id may have been
    applied; the replica can no longer tell)."""

    NOT_PRIMARY = "not-primary"  # ask ``primary_hint``, or refresh the map
    NOT_READY = "not-ready"  # the primary is reconciling, or its lease is not valid
    NOT_ENOUGH_REPLICAS = "not-enough-replicas"  # |ISR| < min_insync (invariant 5)
    STALE_EPOCH = "stale-epoch"  # the request named an older epoch than the replica's
    OVERLOADED = "overloaded"  # too many pending writes: back off and retry
    # The write's sequence number is at or below the client's highest applied one minus the
    # dedup window: not applied now, and whether an earlier attempt was is forgotten.
    SEQ_TOO_OLD = "seq-too-old"


@dataclass(frozen=True, slots=True)
class ClientRequest:
    partition: PartitionId
    client: str  # where the reply goes (the runtime's address for the client connection)
    request_id: RequestId  # writes: unique per write; reads: unique per read attempt
    op: Op
    stale_ok: bool = False  # a read any replica may answer from its applied state


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The answer to one :class:`ClientRequest`.

    On success ``error`` is None; ``value`` is the value read (Get) or the previous value
    (Set/Delete); ``applied`` says whether a conditional write took effect (Set NX/XX/IFEQ,
    MSet NX) or a Delete found the key; ``version`` is the write's version, or for a read the
    version of the value read (None for a missing key). ``stale`` marks a read from a backup.
    ``result``: what a counter or string write computed (see :data:`Result`).
    ``failure``: the write was applied to the state and failed as the command does in Redis
    (nothing changed); Redis' error reply, e.g. ``"ERR value is not an integer or out of
    range"``. Both are replicated state: the dedup table keeps them for retries.
    """

    partition: PartitionId
    request_id: RequestId
    error: ErrorCode | None = None
    value: bytes | None = None
    applied: bool = False
    version: Version | None = None
    stale: bool = False
    primary_hint: NodeId | None = None
    epoch: int = 0
    result: Result = None
    failure: str | None = None


# --- the replicated log --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One log record. ``op is None`` marks the first entry of an epoch (the barrier); an
    op without a request id is the primary's own (:class:`ExpireKeys`). ``time_ms``: the
    primary's clock (Unix ms) when it logged the entry, 0 when unknown (an older log):
    every replica applies the op at that time, so a key past its expiry then is gone for
    it on every replica alike."""

    epoch: int
    index: int
    request_id: RequestId | None = None
    op: WriteOp | None = None
    time_ms: int = 0


# --- replicated state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppliedWrites:
    """One client's applied writes in one partition: the sequence numbers inside its dedup
    window, ascending (the last is the highest applied), and their replies. Never changed
    in place (a write makes a new one), so a snapshot shares them with the live table."""

    seqs: tuple[int, ...] = ()
    replies: Mapping[int, ClientReply] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    """The replicated state of a partition as of log position (``index``, ``epoch``): what
    applying entries 1..``index`` gave. Immutable: the replica goes on writing while it is
    serialised (``kv`` and ``dedup`` are copies taken at :meth:`Replica.snapshot`).

    ``dedup``: per client id, least recently written first (the order decides which client
    ``dedup_clients_max`` forgets first), its applied writes inside ``dedup_window``.
    """

    partition: PartitionId
    index: int
    epoch: int
    kv: Mapping[bytes, tuple[Value, Version]]
    dedup: Mapping[str, AppliedWrites]
    dedup_window: int = DEDUP_WINDOW
    # key -> its expiry in Unix ms, only keys of ``kv`` (none in states from before TTLs).
    expires: Mapping[bytes, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.index < 0 or self.epoch < 0:
            raise UsageError(f"bad snapshot position ({self.index}, {self.epoch})")


@dataclass(frozen=True, slots=True)
class PartitionConfig:
    """A partition's config as stored in the coordinator; changed only by CAS on ``version``.

    ``epoch`` grows by one on every change of primary. ``isr`` includes the primary (when
    there is one). ``replicas`` is the preference list from placement, primary first.

    Membership changes (docs/membership.md): ``learners`` are replicas being added by a
    move, listed at the end of ``replicas`` too (so every runtime hosts and feeds them like
    any replica) but not counted as members of the preference list until the move completes;
    a learner joins the ISR like any caught-up backup, and never counts toward a commit
    before it is in the ISR. ``handoff`` names the ISR member a primary that must move hands
    over to (a planned transfer): while it is set the primary takes no new requests, and
    once the target caught up, the primary asks for the transfer itself
    (:class:`ProposeIsr` with ``primary``).

    ``wiped`` records the replicas that came back having lost data (a wiped, damaged or
    replaced log; docs/operations.md), as ``(node, loss id)``, one per node (the latest; the
    node names each loss with an id it keeps until it sees it recorded): the controller took
    each out of the ISR when it first saw the loss (invariant 7: it rejoins outside the ISR),
    and only the primary's catch-up brings it back. A primary that sees a node's entry
    change forgets what it knew of that node's log.

    ``data_ids`` records, per replica, the id of the data directory (``data-id``, a random
    number made at its first start) under which the controller last saw it: a node that
    registers another one while listed here came back on an empty or replaced disk, and
    the controller handles it as a loss of every log (recorded in ``wiped`` under the new
    id). A replica with no entry yet (a config from before data ids) adopts what it registers.
    """

    partition: PartitionId
    epoch: int
    primary: NodeId | None
    replicas: tuple[NodeId, ...]
    isr: frozenset[NodeId]
    version: int
    # The coordinator session incarnation of ``primary`` when it was made primary (0: not
    # known). A primary whose node now runs a different incarnation restarted, and a
    # restarted replica never serves an epoch it may have served before (invariant 7): the
    # controller must bump the epoch.
    primary_incarnation: int = 0
    learners: tuple[NodeId, ...] = ()
    handoff: NodeId | None = None
    wiped: tuple[tuple[NodeId, int], ...] = ()
    data_ids: tuple[tuple[NodeId, int], ...] = ()

    def data_id(self, node: NodeId) -> int | None:
        """The id of the data directory ``node`` was last seen with here, if known."""
        for name, data_id in self.data_ids:
            if name == node:
                return data_id
        return None

    def wiped_loss(self, node: NodeId) -> int | None:
        """The id of ``node``'s last loss of data recorded here, if any."""
        for name, loss in self.wiped:
            if name == node:
                return loss
        return None


# --- messages between replicas (and from the coordinator) -------------------------------------


@dataclass(frozen=True, slots=True)
class Append:
    """Primary -> backup: entries after ``(prev_index, prev_epoch)``; also the heartbeat.

    A backup accepts it only when its log holds an entry at ``prev_index`` of ``prev_epoch``
    (the log-matching check); it then truncates anything after ``prev_index`` that differs and
    appends. ``commit_index`` lets it apply what is committed.
    """

    partition: PartitionId
    epoch: int
    sender: NodeId
    prev_index: int
    prev_epoch: int
    entries: tuple[Entry, ...]
    commit_index: int
    sent_ms: float = 0.0  # the primary's clock when sent, echoed back (lag/RTT measurement)


@dataclass(frozen=True, slots=True)
class AppendReply:
    """Backup -> primary. On success ``match_index`` is the last index now known equal to
    the primary's log (durably persisted before this reply). On failure, ``hint_index`` is
    where the primary should retry from (the backup's log end, or the start of the
    conflicting epoch). A reply with a higher ``epoch`` than the primary's fences it.
    """

    partition: PartitionId
    epoch: int
    sender: NodeId
    success: bool
    match_index: int = 0
    hint_index: int = 0
    echo_sent_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    """Coordinator -> node: the current config of a partition (from a watch or a read)."""

    config: PartitionConfig


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Primary -> backup that needs entries the primary compacted: bytes ``offset`` ..
    ``offset + len(data)`` of the primary's snapshot file at (``snapshot_index``,
    ``snapshot_epoch``), ``total_bytes`` long, whose body (all but the last 4 bytes) has
    CRC32 ``checksum`` (the file's own trailer). ``epoch`` is the primary's (fencing, as
    an Append's). The transfer is driven by :mod:`planaria.core.transfer`."""

    partition: PartitionId
    epoch: int
    sender: NodeId
    snapshot_index: int
    snapshot_epoch: int
    offset: int
    total_bytes: int
    checksum: int
    data: bytes
    sent_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """Backup -> primary: the next offset of the snapshot at ``snapshot_index`` it wants
    (a resend point after a loss: it keeps only what arrived in order). ``installed``: it
    holds the snapshot (or a newer state) now, its log goes on from ``snapshot_index``;
    ``refused``: it will not take this snapshot (older than its commit index, or a stale
    epoch: then ``epoch`` is its own, higher one)."""

    partition: PartitionId
    epoch: int
    sender: NodeId
    snapshot_index: int
    next_offset: int
    installed: bool = False
    refused: bool = False
    echo_sent_ms: float = 0.0


Message: TypeAlias = (
    ClientRequest | ClientReply | Append | AppendReply | ConfigUpdate | SnapshotChunk | SnapshotAck
)


# --- effects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Persist:
    """Make durable, in this order: drop every entry after ``truncate_after`` (if not None),
    append ``entries``, and record ``epoch`` (the highest epoch this replica has seen) and
    ``commit_index`` (a hint: recovery may recompute it, it is never used to ack)."""

    partition: PartitionId
    truncate_after: int | None
    entries: tuple[Entry, ...]
    epoch: int
    commit_index: int


@dataclass(frozen=True, slots=True)
class Send:
    to: NodeId
    message: Message


@dataclass(frozen=True, slots=True)
class Reply:
    client: str
    reply: ClientReply


@dataclass(frozen=True, slots=True)
class ProposeIsr:
    """Primary -> controller: please CAS the ISR of ``partition`` from ``expected_version`` to
    ``isr``. The primary keeps requiring acks from every member of the old ISR and of the new
    one until it sees the resulting config (so no write is acked by fewer copies than the
    coordinator's ISR, whichever way the CAS goes).

    With ``primary`` set it is a planned transfer instead: the primary (which stopped
    serving when it saw the config's ``handoff``) asks the controller to make ``primary``
    (the config's ``handoff`` target) primary in a new epoch; ``isr`` is then the config's."""

    partition: PartitionId
    epoch: int
    expected_version: int
    isr: frozenset[NodeId]
    primary: NodeId | None = None


@dataclass(slots=True)
class Ready:
    """What one step of a state machine asks its runtime to do, in field order."""

    persist: list[Persist] = field(default_factory=list)
    send: list[Send] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    requests: list[ProposeIsr] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.persist or self.send or self.replies or self.requests)

    def extend(self, other: Ready) -> None:
        self.persist.extend(other.persist)
        self.send.extend(other.send)
        self.replies.extend(other.replies)
        self.requests.extend(other.requests)
