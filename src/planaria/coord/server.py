"""The embedded coordinator: a ``MemoryStore`` served over TCP (``planaria coordinator``).

**Protocol.** Frames of ``planaria.net.frame`` (4-byte length, msgpack) carrying the
dataclasses of :data:`COORD_CODEC`. The client sends requests, each with a request id
``rid``; the server answers every request with one :class:`Reply` (same ``rid``), in order,
and pushes :class:`Event` frames for the connection's watches at any time. A malformed frame
closes that connection only.

**Time.** Sessions expire on the server's monotonic clock, from a timer armed at
``store.next_expiry_ms()`` (and before every request). Never on a connection close: a
closed connection does not prove that the process behind it is dead (docs/design.md §4).

**Persistence** (``data_dir``). Every change except a renewal (keys, ephemeral or not,
session opens and ends, election tokens) is appended to the log in ``coord-log/`` (the
storage layer's ``PartitionLog``, the format of every journal in planaria) as one record
(a msgpack batch) and fdatasync'ed before the request is answered or anything else runs:
what any client saw is durable. When the records pass ``journal_compact_bytes`` the whole
state becomes the log's snapshot (written atomically) and the records behind it go. On start
the snapshot and the records after it are replayed (a torn tail is cut off; damage before
it refuses to start); restored sessions get a full TTL from the restart, as ZooKeeper gives
after a leader change, so nodes keep their sessions. Files of the earlier format
(``coord.snapshot``, ``coord.journal``) are migrated once and renamed ``*.migrated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
import typing
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planaria.coord.errors import (
    Conflict,
    LeadershipLost,
    NodeIdInUse,
    SessionExpired,
    VersionConflict,
)
from planaria.coord.memory import MemoryStore, StoreState, WatchId
from planaria.coord.types import (
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
from planaria.errors import InternalError, PlanariaError, UsageError
from planaria.net.frame import Codec, FrameDecoder, FrameError
from planaria.storage import FsyncPolicy, PartitionLog
from planaria.storage.errors import StorageError
from planaria.storage.format import Snapshot
from planaria.storage.osfs import OsFS

__all__ = [
    "COORD_CODEC",
    "COORD_FRAME_BYTES_MAX",
    "DEFAULT_PORT",
    "CampaignRequest",
    "CloseSessionRequest",
    "CoordinatorServer",
    "CoordinatorStopped",
    "Event",
    "GetRequest",
    "KeepAliveRequest",
    "ListRequest",
    "MultiRequest",
    "OpenSessionRequest",
    "RegisterRequest",
    "Reply",
    "Request",
    "ResignRequest",
    "ServerLimits",
    "SessionAliveRequest",
    "UnwatchRequest",
    "WatchRequest",
    "WireError",
    "WireItem",
    "WireOp",
    "error_from_wire",
    "error_to_wire",
    "item_from_wire",
    "item_to_wire",
    "ops_from_wire",
    "ops_to_wire",
]

log = logging.getLogger("planaria.coord.server")

DEFAULT_PORT = 7000
# Values are at most 512 KiB (types.VALUE_BYTES_MAX); a multi or a listing may hold several.
COORD_FRAME_BYTES_MAX = 8 * 1024 * 1024


class CoordinatorStopped(InternalError):
    """The server could not make a change durable and stopped serving (fail-stop: after a
    failed fsync nothing it holds in memory can be trusted to be on disk)."""


# --- wire messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireItem:
    key: str
    value: bytes
    version: int
    session: int | None


@dataclass(frozen=True, slots=True)
class WireOp:
    """One transaction operation: ``kind`` is the op's class name; ``key`` is the election
    of a CheckLeader and ``version`` its token."""

    kind: str
    key: str
    value: bytes = b""
    version: int = 0
    session: int | None = None


@dataclass(frozen=True, slots=True)
class WireError:
    """A definite error: ``kind`` names the exception class (nothing was applied)."""

    kind: str
    message: str
    key: str | None = None
    expected: int | None = None
    actual: int | None = None
    op_index: int = 0
    token: int | None = None
    leader_token: int | None = None
    session: int | None = None


@dataclass(frozen=True, slots=True)
class OpenSessionRequest:
    rid: int
    owner: str
    ttl_ms: float


@dataclass(frozen=True, slots=True)
class KeepAliveRequest:
    rid: int
    session: int


@dataclass(frozen=True, slots=True)
class CloseSessionRequest:
    rid: int
    session: int


@dataclass(frozen=True, slots=True)
class SessionAliveRequest:
    rid: int
    session: int


@dataclass(frozen=True, slots=True)
class GetRequest:
    rid: int
    key: str


@dataclass(frozen=True, slots=True)
class ListRequest:
    rid: int
    prefix: str


@dataclass(frozen=True, slots=True)
class MultiRequest:
    rid: int
    ops: tuple[WireOp, ...]


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    rid: int
    session: int
    node_id: str
    address: str
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CampaignRequest:
    """Enter the candidacy (idempotent per session); the client waits for leadership."""

    rid: int
    election: str
    session: int
    value: bytes


@dataclass(frozen=True, slots=True)
class ResignRequest:
    rid: int
    election: str
    token: int


@dataclass(frozen=True, slots=True)
class WatchRequest:
    rid: int
    prefix: str


@dataclass(frozen=True, slots=True)
class UnwatchRequest:
    rid: int
    watch_id: int


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to request ``rid``: ``error`` set, or the results in the other fields
    (``number``: a session or watch id, a token, an expiry, a bool as 0/1)."""

    rid: int
    error: WireError | None = None
    items: tuple[WireItem, ...] = ()
    versions: tuple[int | None, ...] = ()
    number: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A watch event pushed by the server (``kind``: put, delete or reset)."""

    watch_id: int
    kind: str
    key: str
    version: int | None


Request = (
    OpenSessionRequest
    | KeepAliveRequest
    | CloseSessionRequest
    | SessionAliveRequest
    | GetRequest
    | ListRequest
    | MultiRequest
    | RegisterRequest
    | CampaignRequest
    | ResignRequest
    | WatchRequest
    | UnwatchRequest
)
_REQUEST_TYPES = typing.get_args(Request)

# --- journal records ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _JPut:
    item: WireItem


@dataclass(frozen=True, slots=True)
class _JDelete:
    key: str


@dataclass(frozen=True, slots=True)
class _JOpen:
    session: int
    owner: str
    ttl_ms: float


@dataclass(frozen=True, slots=True)
class _JEnd:
    session: int
    owner: str
    ttl_ms: float
    ended_by: str


@dataclass(frozen=True, slots=True)
class _JToken:
    election: str
    token: int


@dataclass(frozen=True, slots=True)
class _JBatch:
    records: tuple[_JPut | _JDelete | _JOpen | _JEnd | _JToken, ...]


@dataclass(frozen=True, slots=True)
class _JSnapshot:
    items: tuple[WireItem, ...]
    sessions: tuple[_JOpen, ...]
    ended: tuple[_JEnd, ...]
    session_ids_issued: int
    tokens: tuple[_JToken, ...]


COORD_CODEC = Codec(
    {
        1: WireItem,
        2: WireOp,
        3: WireError,
        4: OpenSessionRequest,
        5: KeepAliveRequest,
        6: CloseSessionRequest,
        7: SessionAliveRequest,
        8: GetRequest,
        9: ListRequest,
        10: MultiRequest,
        11: RegisterRequest,
        12: CampaignRequest,
        13: ResignRequest,
        14: WatchRequest,
        15: UnwatchRequest,
        16: Reply,
        17: Event,
    },
    frame_bytes_max=COORD_FRAME_BYTES_MAX,
)
_JOURNAL_CODEC = Codec(
    {1: WireItem, 2: _JPut, 3: _JDelete, 4: _JOpen, 5: _JEnd, 6: _JToken, 7: _JBatch, 8: _JSnapshot}
)

# --- conversions shared with the client --------------------------------------------------


def item_to_wire(item: VersionedValue) -> WireItem:
    return WireItem(item.key, item.value, item.version, item.session)


def item_from_wire(item: WireItem) -> VersionedValue:
    session = None if item.session is None else SessionId(item.session)
    return VersionedValue(item.key, item.value, item.version, session)


def ops_to_wire(ops: Iterable[TxnOp]) -> tuple[WireOp, ...]:
    wire: list[WireOp] = []
    for op in ops:
        if isinstance(op, Create):
            wire.append(WireOp("Create", op.key, op.value, 0, op.session))
        elif isinstance(op, SetIfVersion):
            wire.append(WireOp("SetIfVersion", op.key, op.value, op.version))
        elif isinstance(op, DeleteIfVersion | CheckVersion):
            wire.append(WireOp(type(op).__name__, op.key, b"", op.version))
        else:
            wire.append(WireOp("CheckLeader", op.election, b"", op.token))
    return tuple(wire)


def ops_from_wire(ops: Iterable[WireOp]) -> list[TxnOp]:
    out: list[TxnOp] = []
    for op in ops:
        if op.kind == "Create":
            session = None if op.session is None else SessionId(op.session)
            out.append(Create(op.key, op.value, session))
        elif op.kind == "SetIfVersion":
            out.append(SetIfVersion(op.key, op.value, op.version))
        elif op.kind == "DeleteIfVersion":
            out.append(DeleteIfVersion(op.key, op.version))
        elif op.kind == "CheckVersion":
            out.append(CheckVersion(op.key, op.version))
        elif op.kind == "CheckLeader":
            out.append(CheckLeader(op.key, op.version))
        else:
            raise UsageError(f"unknown transaction operation {op.kind!r}")
    return out


def error_to_wire(exc: PlanariaError) -> WireError:
    if isinstance(exc, VersionConflict):
        return WireError(
            "VersionConflict", str(exc), key=exc.key, expected=exc.expected,
            actual=exc.actual, op_index=exc.op_index,
        )  # fmt: skip
    if isinstance(exc, LeadershipLost):
        return WireError(
            "LeadershipLost", str(exc), key=exc.election, op_index=exc.op_index,
            token=exc.token, leader_token=exc.leader_token,
        )  # fmt: skip
    if isinstance(exc, NodeIdInUse):
        return WireError("NodeIdInUse", str(exc), key=exc.node_id, session=exc.holder)
    if isinstance(exc, Conflict):
        return WireError("Conflict", str(exc), op_index=exc.op_index)
    if isinstance(exc, SessionExpired):
        return WireError("SessionExpired", str(exc), session=exc.session)
    if isinstance(exc, UsageError):
        return WireError("UsageError", str(exc))
    return WireError("InternalError", f"{type(exc).__name__}: {exc}")


def error_from_wire(error: WireError) -> PlanariaError:
    """The exception a :class:`WireError` stands for (raised by the client)."""
    if error.kind == "VersionConflict" and error.key is not None:
        return VersionConflict(
            error.key, expected=error.expected, actual=error.actual, op_index=error.op_index
        )
    if error.kind == "LeadershipLost" and error.key is not None and error.token is not None:
        return LeadershipLost(
            error.key, token=error.token, leader_token=error.leader_token, op_index=error.op_index
        )
    if error.kind == "NodeIdInUse" and error.key is not None and error.session is not None:
        return NodeIdInUse(error.key, holder=error.session)
    if error.kind == "Conflict":
        return Conflict(error.message, op_index=error.op_index)
    if error.kind == "SessionExpired" and error.session is not None:
        return SessionExpired(error.session, error.message)
    if error.kind == "UsageError":
        return UsageError(error.message)
    return InternalError(f"coordinator: {error.message}")


# --- persistence -------------------------------------------------------------------------

_Record = _JPut | _JDelete | _JOpen | _JEnd | _JToken
_LOG_EPOCH = 1  # the log's records need an epoch; the coordinator's never changes


class _Journal:
    """The durable state of a store in ``directory``: a ``PartitionLog`` (``planaria.storage``:
    segments with a checksum per record, torn-tail recovery, atomic snapshots, a lock against
    a second process) whose records are batches of changes and whose snapshot is the whole
    state. The node's journal is the same log, so every journal has one record format."""

    LOG = "coord-log"
    LEGACY = ("coord.snapshot", "coord.journal")  # the earlier format: read once, then renamed

    def __init__(self, directory: Path, *, compact_bytes: int) -> None:
        self.directory = directory
        self.compact_bytes = compact_bytes
        self._log: PartitionLog | None = None
        self.size = 0  # bytes of records since the snapshot

    def load(self, now_ms: float, session_id_floor: int) -> MemoryStore:
        """Recover the log (a torn tail is cut; damage before it raises ``StorageDamaged``),
        replay snapshot and records, and keep the log open for appends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / self.LOG
        legacy = None if path.exists() else _read_legacy(self.directory, self.LEGACY)
        log_ = PartitionLog.open(
            OsFS(),
            str(path),
            policy=FsyncPolicy("always"),
            segment_bytes=max(self.compact_bytes, 4096),
            preallocate_bytes=0,
        )
        self._log = log_
        if log_.epoch < _LOG_EPOCH:
            log_.set_epoch(_LOG_EPOCH)
        state = _MutableState(issued=session_id_floor)
        snapshot = log_.snapshot
        if snapshot is not None:
            state.load_snapshot(_decode_as(bytes(snapshot.data), _JSnapshot, path))
        self.size = 0
        for entry in log_.entries():
            for record in _decode_as(entry.record, _JBatch, path).records:
                state.apply(record)
            self.size += len(entry.record)
        for part in legacy or ():
            if isinstance(part, _JSnapshot):
                state.load_snapshot(part)
            else:
                for record in part.records:
                    state.apply(record)
        store = MemoryStore.from_state(state.freeze(), now_ms)
        if legacy is not None:
            self.compact(store)  # durable in the new log before the old files go
            for name in self.LEGACY:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.directory / name, self.directory / f"{name}.migrated")
            log.info("coordinator: migrated %s into %s", " and ".join(self.LEGACY), path)
        return store

    def append(self, records: list[_Record]) -> None:
        """One batch, durable (fdatasync) before this returns."""
        log_ = self._open_log()
        payload = _JOURNAL_CODEC.encode(_JBatch(tuple(records)))
        log_.append(_LOG_EPOCH, payload)
        log_.sync()
        self.size += len(payload)

    def compact(self, store: MemoryStore) -> None:
        """Store the whole state as the log's snapshot (atomically), dropping the records
        behind it. Replaying a record over a newer snapshot is harmless (idempotent)."""
        log_ = self._open_log()
        state = store.export_state()
        snapshot = _JSnapshot(
            items=tuple(item_to_wire(i) for i in state.items),
            sessions=tuple(_JOpen(sid, owner, ttl) for sid, owner, ttl in state.sessions),
            ended=tuple(_end_record(info) for info in state.ended),
            session_ids_issued=state.session_ids_issued,
            tokens=tuple(_JToken(e, t) for e, t in state.sequences),
        )
        if log_.last_index == log_.snapshot_index:  # a snapshot needs a record to stand at
            log_.append(_LOG_EPOCH, _JOURNAL_CODEC.encode(_JBatch(())))
        data = _JOURNAL_CODEC.encode(snapshot)
        log_.save_snapshot(Snapshot(log_.last_index, _LOG_EPOCH, data))
        self.size = 0

    def close(self) -> None:
        if self._log is not None:
            log_, self._log = self._log, None
            log_.close()

    def _open_log(self) -> PartitionLog:
        if self._log is None:
            raise InternalError("the journal is not open")
        return self._log


_T = typing.TypeVar("_T")


def _decode_as(payload: bytes, kind: type[_T], path: Path) -> _T:
    try:
        decoded = _JOURNAL_CODEC.decode(payload)
    except FrameError as exc:
        raise InternalError(f"{path}: undecodable record: {exc}") from exc
    if not isinstance(decoded, kind):
        raise InternalError(f"{path}: expected {kind.__name__}, found {type(decoded).__name__}")
    return decoded


_LEGACY_HEADER = struct.Struct(">II")  # payload length, CRC32 of the payload


def _read_legacy(directory: Path, names: tuple[str, str]) -> list[_JSnapshot | _JBatch] | None:
    """What the files of the earlier format hold (snapshot, then journal batches), if
    they exist; a torn or corrupt record ends a file, as it did then."""
    paths = [directory / name for name in names]
    if not any(path.exists() for path in paths):
        return None
    parts: list[_JSnapshot | _JBatch] = []
    for path in paths:
        data = path.read_bytes() if path.exists() else b""
        offset = 0
        while offset + _LEGACY_HEADER.size <= len(data):
            length, crc = _LEGACY_HEADER.unpack_from(data, offset)
            start = offset + _LEGACY_HEADER.size
            payload = data[start : start + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            decoded = _JOURNAL_CODEC.decode(payload)
            if isinstance(decoded, _JSnapshot | _JBatch):
                parts.append(decoded)
            offset = start + length
    return parts


def _end_record(info: SessionInfo) -> _JEnd:
    return _JEnd(info.session, info.owner, info.ttl_ms, info.ended_by or "expired")


@dataclass
class _MutableState:
    items: dict[str, WireItem] = field(default_factory=dict)
    sessions: dict[int, _JOpen] = field(default_factory=dict)
    ended: dict[int, _JEnd] = field(default_factory=dict)
    issued: int = 0
    tokens: dict[str, int] = field(default_factory=dict)

    def load_snapshot(self, snapshot: _JSnapshot) -> None:
        self.issued = max(self.issued, snapshot.session_ids_issued)
        records: list[_Record] = [_JPut(item) for item in snapshot.items]
        records += [*snapshot.sessions, *snapshot.ended, *snapshot.tokens]
        for record in records:
            self.apply(record)

    def apply(self, record: _Record) -> None:
        if isinstance(record, _JPut):
            self.items[record.item.key] = record.item
        elif isinstance(record, _JDelete):
            self.items.pop(record.key, None)
        elif isinstance(record, _JOpen):
            if record.session not in self.ended:
                self.sessions[record.session] = record
            self.issued = max(self.issued, record.session)
        elif isinstance(record, _JEnd):
            self.sessions.pop(record.session, None)
            self.ended[record.session] = record
            self.items = {k: v for k, v in self.items.items() if v.session != record.session}
        else:
            self.tokens[record.election] = max(self.tokens.get(record.election, 0), record.token)

    def freeze(self) -> StoreState:
        return StoreState(
            items=tuple(item_from_wire(self.items[k]) for k in sorted(self.items)),
            sessions=tuple(
                (SessionId(s.session), s.owner, s.ttl_ms)
                for s in sorted(self.sessions.values(), key=lambda s: s.session)
            ),
            ended=tuple(
                SessionInfo(
                    SessionId(e.session), e.owner, e.ttl_ms, 0.0, 0.0, False, 0.0, e.ended_by
                )
                for e in sorted(self.ended.values(), key=lambda e: e.session)
            ),
            session_ids_issued=self.issued,
            sequences=tuple(sorted(self.tokens.items())),
        )


# --- the server --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """- ``connections_max``: further connections are closed at once.
    - ``watches_max``: per connection (a further watch request gets a UsageError).
    - ``frame_bytes_max``: a larger frame closes the connection (protocol error).
    - ``pending_bytes_max``: unsent bytes to a client that does not read; beyond it the
      server stops pushing events (its watches turn into one RESET) and reading requests.
    - ``journal_compact_bytes``: the journal is compacted into a snapshot beyond this.
    """

    connections_max: int = 1024
    watches_max: int = 256
    frame_bytes_max: int = COORD_FRAME_BYTES_MAX
    pending_bytes_max: int = 4 * 1024 * 1024
    journal_compact_bytes: int = 4 * 1024 * 1024


class _Connection:
    def __init__(
        self, server: CoordinatorServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.watches: set[WatchId] = set()
        writer.transport.set_write_buffer_limits(high=server.limits.pending_bytes_max)
        self.has_events = asyncio.Event()
        self.closed = False

    def notify(self, _watch_id: WatchId) -> None:
        self.has_events.set()

    async def push_events(self) -> None:
        store = self.server.store
        while not self.closed:
            await self.has_events.wait()
            self.has_events.clear()
            for wid in sorted(self.watches):
                for event in store.drain_events(wid):
                    self.writer.write(
                        COORD_CODEC.frame(Event(wid, event.kind.value, event.key, event.version))
                    )
            # A client that does not read: stop draining; the store's queues turn into RESETs.
            await self.writer.drain()

    def drop_watches(self) -> None:
        for wid in self.watches:
            self.server.store.unwatch(wid)
        self.watches.clear()


class CoordinatorServer:
    """Serves one ``MemoryStore`` to many clients. ``clock`` returns seconds (monotonic);
    inject a fake one in tests and call :meth:`check_expiry` after moving it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: ServerLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.limits = limits if limits is not None else ServerLimits()
        self._clock = clock
        self._codec = (
            COORD_CODEC
            if self.limits.frame_bytes_max == COORD_FRAME_BYTES_MAX
            else Codec(COORD_CODEC.tags, frame_bytes_max=self.limits.frame_bytes_max)
        )
        self._journal = (
            None
            if data_dir is None
            else _Journal(Path(data_dir), compact_bytes=self.limits.journal_compact_bytes)
        )
        self.store = MemoryStore()
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()
        self._changes_watch: WatchId | None = None
        self._pending: list[_Record] = []
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._timer: asyncio.Task[None] | None = None
        self._rearm = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()  # connection handlers

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Load the data directory (if any), bind, and start the expiry timer."""
        # Session ids start above the wall clock in ms, so an id (a process's incarnation)
        # is not reused even by a coordinator that lost its data directory.
        id_floor = int(time.time() * 1000)
        if self._journal is not None:
            self.store = self._journal.load(self._now_ms(), id_floor)
            restored = len(self.store.sessions())
            if restored:
                log.info("restored %d sessions with a full TTL from now", restored)
        else:
            empty = StoreState((), (), (), id_floor, ())
            self.store = MemoryStore.from_state(empty, self._now_ms())
        # Every change under "/", to journal it (drained after every operation).
        self._changes_watch = self.store.watch("/")
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        self._timer = asyncio.get_running_loop().create_task(self._expiry_loop())

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def stop(self) -> None:
        """Close every connection and the journal (sessions are kept in the data dir)."""
        if self._server is not None:
            self._server.close()
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._journal is not None:
            self._journal.close()

    async def __aenter__(self) -> CoordinatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- time ----------------------------------------------------------------------------

    def _now_ms(self) -> float:
        known = self.store.now_ms
        now_ms = round(self._clock() * 1000.0, 3)
        return now_ms if known is None or now_ms > known else known

    def check_expiry(self) -> list[SessionInfo]:
        """Expire every session due now (journaled); returns those that expired."""
        expired = self.store.expire(self._now_ms())
        for info in expired:
            log.info("session %d of %s expired", info.session, info.owner)
        self._pending.extend(_end_record(info) for info in expired)
        self._commit()
        return expired

    async def _expiry_loop(self) -> None:
        while self.failure is None:
            try:
                self.check_expiry()
            except CoordinatorStopped:
                return
            deadline = self.store.next_expiry_ms()
            delay_s = 1.0 if deadline is None else max(0.0, (deadline - self._now_ms()) / 1000.0)
            self._rearm.clear()
            with contextlib.suppress(TimeoutError):
                # A sub-ms early wake-up just loops once more.
                await asyncio.wait_for(self._rearm.wait(), min(delay_s, 1.0) + 0.0005)

    # --- journaling ----------------------------------------------------------------------

    def _commit(self) -> None:
        """Journal what the last operation changed, durably, before anything else runs."""
        if self.failure is not None:
            return
        if self._changes_watch is not None:
            for event in self.store.drain_events(self._changes_watch):
                self._pending.append(self._change_record(event))
        if not self._pending:
            return
        records, self._pending = self._pending, []
        if self._journal is None:
            return
        try:
            self._journal.append(records)
            if self._journal.size > self._journal.compact_bytes:
                self._journal.compact(self.store)
        except (OSError, StorageError) as exc:
            self._fail(exc)
            raise CoordinatorStopped(f"cannot persist a change: {exc}") from exc

    def _fail(self, exc: BaseException) -> None:
        """Stop serving at once: no reply may follow a change that is not durable."""
        where = None if self._journal is None else self._journal.directory
        log.critical("coordinator stopping: cannot persist to %s: %s", where, exc)
        self.failure = exc
        self.failed.set()
        if self._server is not None:
            self._server.close()
        for connection in self._connections:
            connection.writer.transport.abort()

    def _change_record(self, event: WatchEvent) -> _Record:
        if event.kind is EventKind.RESET:
            raise InternalError("the journal's change queue overflowed")
        item = self.store.get(event.key)
        if item is None:
            return _JDelete(event.key)
        return _JPut(item_to_wire(item))

    # --- connections ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.limits.connections_max:
            log.warning("refusing a connection: %d open", len(self._connections))
            writer.close()
            return
        connection = _Connection(self, reader, writer)
        self._connections.add(connection)
        handler = asyncio.current_task()
        if handler is not None:
            self._tasks.add(handler)
        pusher = asyncio.get_running_loop().create_task(connection.push_events())
        try:
            await self._read_requests(connection)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: its sessions live on until their TTL
        except FrameError as exc:
            peer = writer.get_extra_info("peername")
            log.warning("closing the connection of %s: %s", peer, exc)
        except CoordinatorStopped:
            pass  # logged once by _fail
        finally:
            connection.closed = True
            connection.drop_watches()
            self._connections.discard(connection)
            pusher.cancel()
            writer.close()
            if handler is not None:
                self._tasks.discard(handler)

    async def _read_requests(self, connection: _Connection) -> None:
        decoder = FrameDecoder(self._codec)
        while True:
            data = await connection.reader.read(65536)
            if not data:
                return
            decoder.feed(data)
            for message in decoder.messages():
                reply = self.handle(message, connection)
                connection.writer.write(self._frame_reply(reply))
            await connection.writer.drain()

    def _frame_reply(self, reply: Reply) -> bytes:
        try:
            return self._codec.frame(reply)
        except UsageError as exc:  # e.g. a listing larger than a frame
            return self._codec.frame(Reply(reply.rid, error=error_to_wire(exc)))

    # --- requests ------------------------------------------------------------------------

    def handle(self, request: object, connection: _Connection | None = None) -> Reply:
        """Apply one request to the store (durably) and return its reply."""
        if self.failure is not None:
            raise CoordinatorStopped("the coordinator stopped after a persistence failure")
        if not isinstance(request, _REQUEST_TYPES):
            raise FrameError(f"protocol error: {type(request).__name__} is not a request")
        rid = request.rid
        now_ms = self._now_ms()
        try:
            self._pending.extend(_end_record(i) for i in self.store.expire(now_ms))
            return self._apply(request, rid, now_ms, connection)
        except CoordinatorStopped:
            raise
        except PlanariaError as exc:
            return Reply(rid, error=error_to_wire(exc))
        finally:
            self._commit()

    def _apply(
        self, request: object, rid: int, now_ms: float, connection: _Connection | None
    ) -> Reply:
        store = self.store
        if isinstance(request, KeepAliveRequest):
            return Reply(rid, number=int(store.renew(SessionId(request.session), now_ms)))
        if isinstance(request, GetRequest):
            found = store.get(request.key)
            return Reply(rid, items=() if found is None else (item_to_wire(found),))
        if isinstance(request, ListRequest):
            return Reply(rid, items=tuple(map(item_to_wire, store.list_prefix(request.prefix))))
        if isinstance(request, MultiRequest):
            versions = store.multi(ops_from_wire(request.ops), now_ms)
            return Reply(rid, versions=tuple(versions))
        if isinstance(request, OpenSessionRequest):
            session = store.open_session(request.owner, request.ttl_ms, now_ms)
            info = store.session_info(session)
            self._pending.append(_JOpen(session, info.owner, info.ttl_ms))
            self._rearm.set()
            return Reply(rid, number=session)
        if isinstance(request, CloseSessionRequest):
            was_alive = store.session_info(SessionId(request.session)).alive
            info = store.close_session(SessionId(request.session), now_ms)
            if was_alive:
                self._pending.append(_end_record(info))
            return Reply(rid)
        if isinstance(request, SessionAliveRequest):
            return Reply(rid, number=int(store.session_info(SessionId(request.session)).alive))
        if isinstance(request, RegisterRequest):
            registration = store.register(
                SessionId(request.session), request.node_id, request.address,
                dict(request.metadata), now_ms,
            )  # fmt: skip
            found = store.get(f"/members/{registration.node_id}")
            return Reply(rid, items=() if found is None else (item_to_wire(found),))
        if isinstance(request, CampaignRequest):
            candidate = store.campaign(
                request.election, SessionId(request.session), request.value, now_ms
            )
            self._pending.append(_JToken(candidate.election, candidate.token))
            return Reply(rid, number=candidate.token)
        if isinstance(request, ResignRequest):
            return Reply(rid, number=int(store.resign(request.election, request.token, now_ms)))
        if isinstance(request, WatchRequest):
            return self._watch(rid, request.prefix, connection)
        if isinstance(request, UnwatchRequest):
            if connection is not None and request.watch_id in connection.watches:
                connection.watches.discard(WatchId(request.watch_id))
                store.unwatch(WatchId(request.watch_id))
            return Reply(rid)
        raise InternalError(f"unhandled request {type(request).__name__}")

    def _watch(self, rid: int, prefix: str, connection: _Connection | None) -> Reply:
        if connection is None:
            raise UsageError("a watch needs a connection")
        if len(connection.watches) >= self.limits.watches_max:
            raise UsageError(f"at most {self.limits.watches_max} watches per connection")
        wid = self.store.watch(prefix, notify=connection.notify)
        connection.watches.add(wid)
        return Reply(rid, number=wid)
