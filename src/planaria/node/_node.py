"""One planaria node: the core's replicas driven by real time, sockets and disks.

A :class:`Node` serves clients over RESP (``listen``), replicates to its peers over the bus
(msgpack frames on the RESP port + 10000), keeps a coordinator session alive (its lease),
stands as a controller candidate, and holds one replica per partition whose config names it.
Each replica is driven by :class:`~planaria.node._partition.PartitionRuntime`: persist
(group commit, fsync in the node's disk thread), then send, then reply, then propose, as
docs/design.md says (a primary's Appends may leave during its own fsync; see that module).

Timing defaults (``NodeSettings``), tuned for failover in about 0.3 s after kill -9 or
SIGSTOP without spurious failovers under full load: keep-alive every 50 ms (from a thread of
its own when ``keepalive_connect`` is given, as ``planaria node`` does), lease 200 ms from
the send time of the last acknowledged keep-alive, session TTL 300 ms (>= (lease / 0.95 +
20 ms) * 1.05: core.lease), ticks every 20 ms, heartbeats every 100 ms, ISR lag limit 1 s.

Request ids: a write's REQID (planaria's client) is used as is; a plain Redis client's
write gets a fresh id per command (``<node>.<boot nonce>`` and a node-wide sequence), so
its retries may apply twice, as with Redis itself.

Robustness: a coordinator that cannot be reached never stops the node (it keeps serving under
its lease, then stops serving until the coordinator answers again); an expired session
rebuilds every replica from disk under a new session; an event loop that makes no progress
for ``loop_stall_max_ms`` (seen from the keep-alive thread) ends the process with exit code
:data:`EXIT_LOOP_STALLED`, renewing nothing more, so its session expires, its partitions fail
over and a supervisor restarts it (see docs/operations.md); a storage failure refuses that
partition's writes; a bad peer frame closes that peer connection; client input errors get a
RESP error. Every exception is logged.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from planaria import _native
from planaria.address import format_address, parse_address
from planaria.coord import (
    CONFIGS_PREFIX,
    MEMBERS_PREFIX,
    Conflict,
    Coordinator,
    CoordinatorUnavailable,
    EventKind,
    MalformedRecord,
    NodeIdInUse,
    SessionExpired,
    SessionId,
    Watch,
    config_key,
    decode_config,
    encode_config,
    partition_of_key,
)
from planaria.core.compaction import SnapshotPolicy
from planaria.core.controller import Controller
from planaria.core.lease import session_ttl_min_ms
from planaria.core.messages import (
    Append,
    AppendReply,
    ClientReply,
    ClientRequest,
    ErrorCode,
    PartitionConfig,
    ProposeIsr,
    Reply,
    RequestId,
    Send,
    SnapshotAck,
    SnapshotChunk,
)
from planaria.core.replica import ReplicaSettings, Role
from planaria.core.slots import partition_of_slot
from planaria.core.transfer import ChunkRead, SnapshotReceiver, SnapshotSender, TransferSettings
from planaria.errors import UsageError
from planaria.net import resp
from planaria.net.commands import (
    BackupBegin,
    BackupEnd,
    BackupRead,
    ClientOp,
    ClusterInfo,
    ClusterMyId,
    ClusterNodes,
    ClusterShards,
    ClusterSlots,
    ConnectionState,
    Info,
    NodeRequest,
    error_reply,
    render_info,
    render_reply,
)
from planaria.net.server import RespServer
from planaria.net.topology import (
    NodeAddress,
    Topology,
    cluster_info,
    cluster_nodes,
    cluster_shards,
    cluster_slots,
    node_id_hex,
)
from planaria.node._backup import BackupExports, remove_files
from planaria.node._control import (
    ControllerService,
    apply_proposal,
    read_cluster_metadata,
    read_configs,
    sessions_from_members,
)
from planaria.node._lease import KeepAliveThread, LoopWatchdog, keep_alive_forever
from planaria.node._partition import (
    LOST_ALL,
    NO_LEASE,
    PartitionRuntime,
    RecoveredLogs,
    SessionOpened,
    claim_data_id,
    claim_lost_all,
    drop_data_id_new,
    lost_partitions,
    mark_lost,
    new_loss_id,
    open_partition_log,
)
from planaria.node._tasks import cancel_all
from planaria.node._transport import PeerBus
from planaria.storage import (
    FileLock,
    FsyncPolicy,
    GroupCommitter,
    Journal,
    OsFS,
    PartitionLog,
    StorageError,
    StorageLocked,
    open_node_journal,
)
from planaria.storage.errors import storage_error_from_os

__all__ = ["EXIT_LOOP_STALLED", "Node", "NodeSettings"]

log = logging.getLogger("planaria.node")

BUS_PORT_OFFSET = 10_000  # Redis Cluster's bus convention
DRIFT_MAX = 0.05  # relative clock-rate drift the lease rule allows for, of every clock
LEASE_MARGIN_MS = 20.0
# The exit code of a node whose event loop stalled (EX_TEMPFAIL: restart it).
EXIT_LOOP_STALLED = 75


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
    # Every this often, whatever survived so far is frozen out of the garbage collector's
    # full collections (see Node._gc_freeze_loop); 0 turns it off.
    gc_freeze_interval_ms: float = 1000.0
    # An event loop that makes no progress this long (seen from the keep-alive thread) ends
    # the process: past its lease it serves nothing, yet the thread would keep its session.
    # Far above any pause of a healthy loop under load; a SIGSTOP does not count.
    loop_stall_max_ms: float = 3000.0

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
        if self.storage_threads < 1 or self.partition_inbox_max < 1:
            raise UsageError("storage_threads and partition_inbox_max must be >= 1")


class _Answer:
    """The replies to one client command's items (``op.ops``), gathered by callbacks as the
    partition answers them, and rendered once all are in: into ``future`` when the command
    had to wait, else kept in ``rendered`` (no future, no callback hop per item)."""

    __slots__ = ("future", "missing", "op", "partition", "rendered", "replies", "unknown")

    def __init__(self, op: ClientOp, partition: int) -> None:
        self.op = op
        self.partition = partition
        self.replies: list[ClientReply | None] = [None] * len(op.ops)
        self.missing = len(op.ops)
        self.unknown: str | None = None  # why an item left without an answer
        self.rendered: bytes | None = None
        self.future: asyncio.Future[bytes] | None = None

    @property
    def done(self) -> bool:
        return self.missing == 0 or self.unknown is not None


def _now_ms() -> float:
    return time.monotonic() * 1000.0


def _unknown(partition: int, why: str) -> bytes:
    return resp.error(
        f"UNKNOWN partition {partition}: {why}; the write may or may not have been applied"
    )


class Node:
    """One node process's worth of planaria. ``await node.start()``, then serve until
    ``await node.close()`` (or use ``serve_forever``)."""

    def __init__(
        self,
        node_id: str,
        *,
        listen: str,
        coordinator: Coordinator,
        data_dir: str | os.PathLike[str],
        settings: NodeSettings | None = None,
        zone: str | None = None,
        weight: float = 1.0,
        bus_listen: str | None = None,
        advertise: str | None = None,
        bus_advertise: str | None = None,
        keepalive_connect: Callable[[], Coordinator] | None = None,
    ) -> None:
        if not node_id or "/" in node_id or not node_id.isprintable() or " " in node_id:
            raise UsageError(f"a node id is printable text without '/' or spaces: {node_id!r}")
        if not weight > 0:
            raise UsageError(f"weight must be > 0, got {weight}")
        self.node_id = node_id
        self.host, port = parse_address(listen, what="listen address", listen=True)
        self.port = port
        if bus_listen is None:
            bus_listen = format_address(self.host, port + BUS_PORT_OFFSET if port else 0)
        self.bus_host, self.bus_port = parse_address(bus_listen, what="bus address", listen=True)
        # What the node tells others (registration, MOVED, CLUSTER SLOTS) when that differs
        # from where it listens: a proxy or NAT in between.
        self._advertise = None if advertise is None else parse_address(advertise, what="advertise")
        self._bus_advertise = (
            None if bus_advertise is None else parse_address(bus_advertise, what="bus advertise")
        )
        self.coordinator = coordinator
        self.data_dir = Path(data_dir)
        self.settings = settings if settings is not None else NodeSettings()
        self.zone = zone
        self.weight = weight
        self.session: SessionId | None = None
        self.lease_until_ms = NO_LEASE
        self.configs: dict[int, PartitionConfig] = {}
        self.partitions: dict[int, PartitionRuntime] = {}
        self.partition_count: int | None = None
        self.min_insync: int | None = None
        self.started_ms = _now_ms()
        self.sessions_lost = 0
        self.replies_unleased = 0  # AppendReplies not sent: no lease (see _send)
        self.loop_beats = 0  # advanced by every tick: the keep-alive thread's sign of life
        self._addresses: dict[str, NodeAddress] = {}
        self._topology: Topology | None = None
        self._lock: FileLock | None = None
        self._lost_all: int | None = None  # a replaced disk's loss id, until recorded
        self._data_id = 0  # the data directory's id (storage/identity.py), once started
        self._data_id_new = False  # ...made at a start the configs may not know yet
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.storage_threads, thread_name_prefix=f"planaria-{node_id}"
        )
        # Never inline: an fsync on the event loop would stall every other partition's
        # traffic, heartbeats and leases for its duration.
        self._committer = GroupCommitter(inline_when_idle=False, name=f"planaria-{node_id}-disk")
        self._journal: Journal | None = None
        self._recovered_logs = RecoveredLogs()  # opened by the journal replay, until taken
        self._bus = PeerBus(node_id, self._on_peer_message)
        self._sender = SnapshotSender(self.settings.transfer)
        self._receiver = SnapshotReceiver(node_id, self.settings.replica.bugs)
        self._chunk_reads: asyncio.Task[None] | None = None  # reads in order, one at a time
        self._backups = BackupExports(self.data_dir, self._executor, _now_ms)  # BACKUP BEGIN
        self._server = RespServer(
            self._handle,
            self.host,
            port,
            connections_max=self.settings.connections_max,
            pipeline_depth_max=self.settings.pipeline_depth_max,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._controller_task: asyncio.Task[None] | None = None
        self._opening: dict[int, asyncio.Task[None]] = {}
        # token -> (the command's answer, the item's position in it, deadline in ms)
        self._waiting: dict[str, tuple[_Answer, int, float]] = {}
        self._tokens = itertools.count(1)
        # Request ids for plain Redis clients: one client id per node process (a boot nonce
        # makes it unique across restarts) and a node-wide sequence, assigned in the order
        # requests reach each partition, so every partition sees it increase. One id per
        # process, not per connection, keeps the replicated dedup table small.
        self._seq = itertools.count(1)
        self._client_id = f"{node_id}.{secrets.token_hex(4)}"
        self._closed = asyncio.Event()
        self._stopping = False
        self._session_lock = asyncio.Lock()
        # A second coordinator client for keep-alives in their own thread (None: on the loop).
        self._keepalive_connect = keepalive_connect
        self._keepalive_thread: KeepAliveThread | None = None
        self._lease_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        """The RESP address others are told (``advertise``, else where it listens)."""
        host, port = self._advertise or (self.host, self.port)
        return format_address(host, port)

    @property
    def bus_address(self) -> str:
        """The bus address peers are told (``bus_advertise``, else where it listens)."""
        host, port = self._bus_advertise or (self.bus_host, self.bus_port)
        return format_address(host, port)

    async def start(self) -> None:
        """Lock the data dir, listen, open a session and register, start every loop."""
        self._loop = asyncio.get_running_loop()
        self._lock_data_dir()
        self._lost_all = claim_lost_all(self.data_dir)
        self._data_id, self._data_id_new = claim_data_id(self.data_dir)
        self._journal = await self._loop.run_in_executor(self._executor, self._open_journal)
        await self._loop.run_in_executor(self._executor, self._clear_backups)
        self._committer.start()
        try:
            self.bus_port = await self._bus.listen(self.bus_host, self.bus_port)
            await self._server.start()
            self.port = self._server.port
            self._spawn(self._tick_loop(), "tick")
            if self.settings.gc_freeze_interval_ms > 0:
                self._spawn(self._gc_freeze_loop(), "gc-freeze")
            deadline_ms = _now_ms() + self.settings.start_timeout_ms
            await self._retry_until(deadline_ms, self._open_session, "opening a session")
            await self._retry_until(deadline_ms, self._load_cluster, "reading the cluster")
            await self._retry_until(deadline_ms, self._watch_all, "watching the configs")
            # Every partition here has opened: the logs none of them took are not ours.
            await self._loop.run_in_executor(self._executor, self._recovered_logs.close_all)
        except BaseException as exc:
            failure: BaseException | None = exc
        else:
            failure = None
        if failure is not None:  # closes outside the handler (see _native: no await in except)
            await self.close(close_session=True)
            raise failure
        log.info(
            "node %s ready: resp %s, bus %s, session %s, data %s, %s",
            self.node_id, self.address, self.bus_address, self.session, self.data_dir,
            "compiled (mypyc)" if _native.compiled() else "pure Python",
        )  # fmt: skip

    async def serve_forever(self) -> None:
        """Run until :meth:`close` is called (from a signal handler, say)."""
        await self._closed.wait()

    async def close(self, *, close_session: bool = True) -> None:
        """Stop serving: no new requests, finish the persists in flight, close the logs,
        then end the session so the controller fails over at once. With
        ``close_session=False`` the session is left to expire (as after a crash)."""
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        try:
            await self._server.close()
            tasks = {*self._tasks, *self._opening.values()}
            if self._controller_task is not None:
                tasks.add(self._controller_task)
            await cancel_all(tasks)
            if self._keepalive_thread is not None:
                await asyncio.to_thread(self._keepalive_thread.stop)
            await asyncio.gather(*(runtime.close() for runtime in self.partitions.values()))
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._recovered_logs.close_all
            )
            await self._committer.close()
            if self._journal is not None:
                journal, self._journal = self._journal, None
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, _close_journal, journal
                )
            await self._bus.close()
            await asyncio.get_running_loop().run_in_executor(self._executor, self._clear_backups)
            self._fail_waiting(None, "the node is shutting down")
            if close_session and self.session is not None:
                try:
                    await asyncio.wait_for(
                        self.coordinator.close_session(self.session),
                        self.settings.coordinator_timeout_ms / 1000,
                    )
                except (CoordinatorUnavailable, TimeoutError, UsageError) as exc:
                    log.warning("closing the session failed (it will expire): %s", exc)
        finally:
            self._executor.shutdown(wait=True)
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            self._closed.set()
            log.info("node %s stopped", self.node_id)

    def _open_journal(self) -> Journal:
        """Open the node's journal and replay it into the partition logs (blocking)."""
        fs = OsFS()

        def open_log(partition: int, unsynced_after: int | None) -> PartitionLog | None:
            directory = self.data_dir / f"p{partition}"
            policy = self.settings.fsync
            return open_partition_log(directory, partition, policy, unsynced_after=unsynced_after)

        def wipe_all() -> None:
            log.error("the journal is damaged: wiping every log here to refill them")
            loss = new_loss_id()
            for directory in self.data_dir.glob("p[0-9]*"):
                mark_lost(directory, loss)
                PartitionLog.wipe(fs, str(directory))

        try:
            journal, replayed = open_node_journal(
                fs, str(self.data_dir / "journal"), open_log, wipe_all,
                keep=self._recovered_logs.keep,
            )  # fmt: skip
        except BaseException:
            self._recovered_logs.close_all()
            raise
        if replayed:
            log.info("journal: replayed %d records into %d partition logs",
                     sum(replayed.values()), len(replayed))  # fmt: skip
        return journal

    def _clear_backups(self) -> None:
        """Remove the backup snapshots left by an earlier process or this one (blocking)."""
        try:
            self._backups.clear()
        except OSError as exc:  # they only take space: log and go on
            log.warning("%s", storage_error_from_os(exc, "removing", str(self._backups.directory)))

    def _lock_data_dir(self) -> None:
        fs = OsFS()
        path = str(self.data_dir)
        try:
            fs.makedirs(path)
            self._lock = fs.lock(path)
        except OSError as exc:
            error = storage_error_from_os(exc, "locking the data directory", path)
            if isinstance(error, StorageLocked):
                raise StorageLocked(
                    f"{exc.strerror or exc}: another node process uses it", path=path
                ) from exc
            raise error from exc

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"planaria-{self.node_id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def _retry_until(
        self, deadline_ms: float, step: Callable[[], Awaitable[None]], what: str
    ) -> None:
        delay_s = 0.05
        while True:
            try:
                await step()
                return
            except (CoordinatorUnavailable, TimeoutError) as exc:
                if _now_ms() >= deadline_ms:
                    raise CoordinatorUnavailable(f"{what}: {exc}") from exc
                log.warning("%s: coordinator unreachable (%s); retrying", what, exc)
            await asyncio.sleep(delay_s)  # outside the handler (see _native)
            delay_s = min(delay_s * 2, 1.0)

    async def _coord(self, call: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(call, self.settings.coordinator_timeout_ms / 1000)
        except TimeoutError as exc:
            raise CoordinatorUnavailable("the coordinator did not answer in time") from exc

    # ------------------------------------------------------------------ session and lease

    async def _open_session(self) -> None:
        if self.session is None:
            sent_ms = _now_ms()
            session = await self._coord(
                self.coordinator.open_session(self.node_id, self.settings.session_ttl_ms)
            )
            with self._lease_lock:
                self.session = session
                self.lease_until_ms = sent_ms + self.settings.lease_ms
        await self._register(self.session, self._registration_metadata())
        for runtime in self.partitions.values():
            runtime.deliver(SessionOpened(int(self.session)))
        if self._controller_task is not None:
            self._controller_task.cancel()
        self._controller_task = asyncio.create_task(
            self._controller_loop(self.session), name=f"planaria-{self.node_id}-controller"
        )
        if self._keepalive_connect is None:
            if not any(t.get_name().endswith("-keepalive") for t in self._tasks):
                self._spawn(self._keepalive_loop(), "keepalive")
        elif self._keepalive_thread is None:
            self._keepalive_thread = KeepAliveThread(
                self._keepalive_connect,
                interval_ms=self.settings.keepalive_interval_ms,
                timeout_ms=self.settings.lease_ms,
                on_ack=self._on_keepalive_ack,
                on_expired=self._on_keepalive_expired,
                watchdog=LoopWatchdog(
                    lambda: self.loop_beats,
                    stall_max_ms=self.settings.loop_stall_max_ms,
                    step_max_ms=2 * self.settings.keepalive_interval_ms,
                ),
                on_stalled=self._on_loop_stalled,
            )
            self._keepalive_thread.start(self.session)
        else:
            self._keepalive_thread.set_session(self.session)

    async def _register(self, session: SessionId, metadata: dict[str, str]) -> None:
        """Register under ``session``. While another live session holds the node id (this
        node's previous incarnation, whose lease may still run, or another process with the
        same id), renew ours and wait for it to end, up to ``start_timeout_ms``: taking the
        registration over would let the controller fail over before the old lease ran out."""
        deadline_ms = _now_ms() + self.settings.start_timeout_ms
        warned = False
        while True:
            try:
                await self._coord(
                    self.coordinator.register(session, self.node_id, self.address, metadata)
                )
                return
            except NodeIdInUse as exc:
                if _now_ms() >= deadline_ms:
                    raise
                if not warned:
                    log.warning("%s; waiting for it to end", exc)
                    warned = True
            await asyncio.sleep(self.settings.keepalive_interval_ms / 1000)
            sent_ms = _now_ms()
            await self._coord(self.coordinator.keep_alive(session))
            self._on_keepalive_ack(session, sent_ms)

    def _on_keepalive_ack(self, session: SessionId, sent_ms: float) -> None:
        # Called from the keep-alive thread too: a lock keeps the check and the write whole.
        with self._lease_lock:
            if session == self.session:
                self.lease_until_ms = max(self.lease_until_ms, sent_ms + self.settings.lease_ms)

    def _on_keepalive_expired(self, session: SessionId) -> None:
        """From the keep-alive thread: hand the loss over to the event loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._session_expired, session)

    def _on_loop_stalled(self, stalled_ms: float) -> None:
        """From the keep-alive thread, which renews no more: the loop is wedged, so nothing
        on it can step down or rebuild. Exit at once, as after kill -9 (what was
        acknowledged is on disk): the session expires within its TTL, the partitions fail
        over, and a supervisor restarts the node from its data."""
        if self._stopping:
            return  # closing: the tick is cancelled before the keep-alive thread stops
        log.critical(
            "node %s: event loop stalled for %.0f ms (limit %.0f ms, lease %.0f ms): leaving "
            "the cluster, exit code %d (restart me)",
            self.node_id, stalled_ms, self.settings.loop_stall_max_ms, self.settings.lease_ms,
            EXIT_LOOP_STALLED,
        )  # fmt: skip
        logging.shutdown()  # flush the log line: os._exit skips every other cleanup
        os._exit(EXIT_LOOP_STALLED)

    def _session_expired(self, session: SessionId) -> None:
        if session == self.session and not self._stopping:
            self._spawn(self._session_lost(session), "session-lost")

    async def _keepalive_loop(self) -> None:
        """Keep-alives on the event loop (when no keep-alive thread is configured)."""
        await keep_alive_forever(
            self.coordinator,
            session=lambda: self.session,
            stopped=lambda: self._stopping,
            interval_ms=self.settings.keepalive_interval_ms,
            timeout_ms=self.settings.lease_ms,
            on_ack=self._on_keepalive_ack,
            on_expired=self._session_expired,
        )

    async def _session_lost(self, session: SessionId) -> None:
        """The coordinator expired our session: another node may lead our partitions now.
        Rebuild every replica from disk and start over under a new session."""
        async with self._session_lock:
            if self.session != session:
                return  # already handled
            self.sessions_lost += 1
            log.warning("session %s expired: rebuilding every replica from disk", self.session)
            with self._lease_lock:
                self.session = None
                self.lease_until_ms = NO_LEASE
            if self._controller_task is not None:
                self._controller_task.cancel()
            for runtime in list(self.partitions.values()):
                await runtime.reset()
            self._fail_waiting(None, "the node lost its coordinator session")
            delay_s = 0.05
            while not self._stopping:
                try:
                    await self._open_session()
                    break
                except (CoordinatorUnavailable, SessionExpired, NodeIdInUse) as exc:
                    log.warning("reopening a session: %s", exc)
                    self.session = None
                await asyncio.sleep(delay_s)  # outside the handler (see _native)
                delay_s = min(delay_s * 2, 1.0)
            for runtime in self.partitions.values():
                if runtime.config is not None:
                    runtime.deliver(runtime.config)
            self._spawn(self._reload_configs(), "reload")

    def _registration_metadata(self) -> dict[str, str]:
        metadata = {
            "bus": self.bus_address,
            "weight": repr(self.weight),
            "pid": str(os.getpid()),
        }
        if self.zone is not None:
            metadata["zone"] = self.zone
        # The controller takes this node out of these partitions' ISRs (invariant 7):
        # "<partition>:<loss id>,...", and "all:<loss id>" for a replaced disk.
        losses = [f"{p}:{loss}" for p, loss in sorted(lost_partitions(self.data_dir).items())]
        if self._lost_all is not None:
            losses.append(f"all:{self._lost_all}")
        if losses:
            metadata["lost"] = ",".join(losses)
        # A new disk has another: the controller then takes this node out of every ISR.
        metadata["data-id"] = str(self._data_id)
        return metadata

    def _confirm_data_id(self) -> None:
        """A new data id stops being new once the node read every config and each one
        that lists it knows the id (then a restart may trust what its logs say they led)."""
        if not self._data_id_new or self.partition_count is None:
            return
        if len(self.configs) < self.partition_count:
            return
        for config in self.configs.values():
            if self.node_id in config.replicas and config.data_id(self.node_id) != self._data_id:
                return
        self._data_id_new = False
        drop_data_id_new(self.data_dir)

    def _forget_lost_all(self) -> None:
        """A replaced disk's marker goes once every config listing this node records its
        loss (then nothing it holds counts as in sync by mistake)."""
        loss = self._lost_all
        if loss is None:
            return
        for config in self.configs.values():
            if self.node_id in config.replicas and config.wiped_loss(self.node_id) != loss:
                return
        self._lost_all = None
        marker = self.data_dir / LOST_ALL
        fs = OsFS()
        try:
            fs.remove(str(marker))
            fs.fsync_dir(str(self.data_dir))
        except OSError as exc:
            # Kept, it only registers the loss again at the next start: log and go on.
            log.warning("%s", storage_error_from_os(exc, "removing", str(marker)))

    async def _register_loss(self, partition: int) -> None:
        """A log found damaged when its partition opened: register the loss with the
        session before the replica steps (a new session registers it anyway)."""
        delay_s = 0.05
        while not self._stopping and self.session is not None:
            try:
                await self._coord(
                    self.coordinator.register(
                        self.session, self.node_id, self.address, self._registration_metadata()
                    )
                )
                return
            except SessionExpired:
                return  # the next session registers it
            except CoordinatorUnavailable as exc:
                log.warning("p%d: registering the loss of its log: %s", partition, exc)
            await asyncio.sleep(delay_s)  # outside the handler (see _native)
            delay_s = min(delay_s * 2, 1.0)

    def _session_incarnation(self) -> int | None:
        return None if self.session is None else int(self.session)

    async def _controller_loop(self, session: SessionId) -> None:
        delay_s = 0.1
        while not self._stopping:
            try:
                service = ControllerService(self.coordinator, self.node_id, session)
                await service.run()
                return
            except asyncio.CancelledError:
                raise
            except SessionExpired:
                return  # the keep-alive loop starts over with a new session
            except CoordinatorUnavailable as exc:
                log.info("controller: coordinator unreachable (%s); retrying", exc)
            except Exception:
                log.exception("controller failed; restarting it")
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 2.0)

    # ------------------------------------------------------------------ ticks

    async def _remove_files(self, paths: list[Path]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, remove_files, paths)

    async def _gc_freeze_loop(self) -> None:
        """Keep garbage-collector pauses short. The replicas hold their logs in memory, and
        a full collection scans every object while holding the GIL (with a million entries:
        ~250 ms on an idle machine of this kind, seconds on a loaded one; see
        benchmarks/bench_node_internals.py), so after minutes of load one pause would
        outlast the session TTL and fail the node over for nothing. Objects that survived
        until a freeze are never scanned again (young ones still are, cheaply); the cost is
        that a reference cycle frozen while alive is never reclaimed."""
        interval_s = self.settings.gc_freeze_interval_ms / 1000
        while not self._stopping:
            await asyncio.sleep(interval_s)
            gc.freeze()

    async def _tick_loop(self) -> None:
        tick_s = self.settings.tick_ms / 1000
        last_sweep_ms = _now_ms()
        while not self._stopping:
            await asyncio.sleep(tick_s)
            self.loop_beats += 1
            lease = self.lease_until_ms
            now = _now_ms()
            for runtime in self.partitions.values():
                runtime.tick(lease)
                runtime.want_transfers(self._sender, now)
            self._send_chunks(now)
            now = _now_ms()
            if now - last_sweep_ms >= 100:
                last_sweep_ms = now
                self._expire_waiting(now)
                expired = self._backups.expire(now)
                if expired:
                    self._spawn(self._remove_files(expired), "backup-expiry")

    # ------------------------------------------------------------------ configs and members

    async def _load_cluster(self) -> None:
        try:
            metadata = await self._coord(read_cluster_metadata(self.coordinator))
        except MalformedRecord as exc:
            log.error("%s", exc)
            return
        if metadata is not None:
            self.partition_count = metadata.partitions
            self.min_insync = metadata.min_insync

    async def _watch_all(self) -> None:
        # Watch first, then read: nothing is missed.
        configs_watch = await self._coord(self.coordinator.watch(CONFIGS_PREFIX))
        members_watch = await self._coord(self.coordinator.watch(MEMBERS_PREFIX))
        self._spawn(self._config_events(configs_watch), "configs-watch")
        self._spawn(self._member_events(members_watch), "members-watch")
        await self._reload_members()
        await self._reload_configs_once()
        self._spawn(self._poll_loop(), "poll")

    async def _config_events(self, watch: Watch) -> None:
        async with watch:
            async for event in watch:
                try:
                    if event.kind is EventKind.RESET:
                        await self._reload_configs_once()
                        continue
                    partition = partition_of_key(event.key)
                    if partition is None:
                        continue
                    item = await self._coord(self.coordinator.get(event.key))
                    if item is not None:
                        await self._on_config(decode_config(item.value))
                except (CoordinatorUnavailable, MalformedRecord) as exc:
                    log.warning("reading a config after a watch event: %s", exc)

    async def _member_events(self, watch: Watch) -> None:
        async with watch:
            async for _event in watch:
                try:
                    await self._reload_members()
                except CoordinatorUnavailable as exc:
                    log.warning("reading the members: %s", exc)

    async def _poll_loop(self) -> None:
        # Watches deliver at least once, but a reconnection may lose events: re-read too.
        while not self._stopping:
            await asyncio.sleep(self.settings.config_poll_ms / 1000)
            try:
                await self._reload_configs_once()
                await self._reload_members()
            except CoordinatorUnavailable as exc:
                log.debug("poll: %s", exc)

    async def _reload_configs(self) -> None:
        try:
            await self._reload_configs_once()
        except CoordinatorUnavailable as exc:
            log.info("reloading configs: %s", exc)

    async def _reload_configs_once(self) -> None:
        if self.partition_count is None:
            await self._load_cluster()
        configs = await self._coord(read_configs(self.coordinator))
        for config, _ in configs.values():
            await self._on_config(config)

    async def _reload_members(self) -> None:
        members = await self._coord(self.coordinator.members())
        changed = False
        for node, registration in members.items():
            try:
                host, port = parse_address(registration.address, what="member address")
            except UsageError as exc:
                log.error("member %s: %s", node, exc)
                continue
            address = NodeAddress(host, port)
            if self._addresses.get(node) != address:
                self._addresses[node] = address
                changed = True
            bus = registration.meta().get("bus")
            if bus is not None and node != self.node_id:
                self._bus.set_address(node, bus)
        if changed:
            self._topology = None

    async def _on_config(self, config: PartitionConfig) -> None:
        known = self.configs.get(config.partition)
        if known is not None and (config.epoch, config.version) <= (known.epoch, known.version):
            return
        self.configs[config.partition] = config
        self._topology = None
        runtime = self.partitions.get(config.partition)
        if runtime is None and self.node_id in config.replicas:
            runtime = await self._open_partition(config.partition)
        if runtime is not None:
            runtime.deliver(config)
        if config.wiped:
            self._forget_lost_all()
        self._confirm_data_id()

    async def _open_partition(self, partition: int) -> PartitionRuntime | None:
        opening = self._opening.get(partition)
        if opening is None:
            opening = asyncio.create_task(self._create_partition(partition))
            self._opening[partition] = opening
        try:
            await asyncio.shield(opening)
        except StorageError as exc:
            log.error("p%d: cannot open its log: %s", partition, exc)
        finally:
            if opening.done():
                self._opening.pop(partition, None)
        return self.partitions.get(partition)

    async def _create_partition(self, partition: int) -> None:
        settings = self.settings.replica
        if self.min_insync is not None and self.min_insync != settings.min_insync:
            settings = replace(settings, min_insync=self.min_insync)
        runtime = PartitionRuntime(
            self.node_id,
            partition,
            directory=self.data_dir / f"p{partition}",
            policy=self.settings.fsync,
            replica_settings=settings,
            executor=self._executor,
            committer=self._committer,
            journal=self._journal,
            clock_ms=_now_ms,
            send=self._send,
            reply=self._on_reply,
            propose=self._propose,
            on_step_down=self._on_step_down,
            on_storage_failure=self._on_storage_failure,
            inbox_max=self.settings.partition_inbox_max,
            session=self._session_incarnation,
            on_lost=self._register_loss,
            data_id_new=lambda: self._data_id_new,
            snapshot_policy=self.settings.snapshots,
            recovered=self._recovered_logs,
            freeze_decoded=self.settings.gc_freeze_interval_ms > 0,
        )
        await runtime.open()
        runtime.tick(self.lease_until_ms)
        self.partitions[partition] = runtime

    # ------------------------------------------------------------------ effects

    def _send(self, send: Send) -> None:
        if send.to == self.node_id:
            self._on_peer_message(send.message)
        elif isinstance(send.message, AppendReply) and _now_ms() >= self.lease_until_ms:
            # Out of lease, our session may have expired and another process may hold our
            # node id now (a rescheduled pod): a primary would count our acks as its. The
            # lease rule makes us stop before the coordinator frees the id; the controller
            # drops a backup whose session expired from the ISR anyway.
            self.replies_unleased += 1
        else:
            self._bus.send(send.to, send.message)

    def _on_peer_message(self, message: Append | AppendReply | Any) -> None:
        if isinstance(message, SnapshotAck):
            self._sender.on_ack(message, _now_ms())
            self._send_chunks(_now_ms())
            return
        if not isinstance(message, Append | AppendReply | SnapshotChunk):
            log.warning("dropping an unexpected peer message %s", type(message).__name__)
            return
        runtime = self.partitions.get(message.partition)
        if runtime is None:
            return
        if isinstance(message, SnapshotChunk):
            runtime.on_snapshot_chunk(message, self._receiver)
        else:
            runtime.deliver(message)

    def _send_chunks(self, now_ms: float) -> None:
        """Send the chunks the sender lets go now, read from the snapshot files in the
        storage threads (one batch at a time, so they leave in order)."""
        if self._chunk_reads is not None and not self._chunk_reads.done():
            return  # the next tick or ack polls again
        reads = self._sender.poll(now_ms)
        if reads:
            self._chunk_reads = self._spawn(self._read_and_send(reads), "snapshot-chunks")

    async def _read_and_send(self, reads: list[ChunkRead]) -> None:
        logs = {read.partition: self.partitions[read.partition].log for read in reads
                if read.partition in self.partitions}  # fmt: skip

        def read_all() -> list[bytes | StorageError]:
            found: list[bytes | StorageError] = []
            for read in reads:
                log_ = logs.get(read.partition)
                try:
                    if log_ is None:
                        raise StorageError(f"p{read.partition} is closed")
                    found.append(
                        log_.read_snapshot_file(read.snapshot.index, read.offset, read.length)
                    )
                except StorageError as exc:
                    found.append(exc)
            return found

        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._executor, read_all)
        now = _now_ms()
        for read, data in zip(reads, found, strict=True):
            if isinstance(data, StorageError):  # replaced by a newer snapshot: start over
                log.info("p%d: snapshot transfer to %s: %s", read.partition, read.to, data)
                self._sender.file_gone(read.partition, read.to)
                continue
            self._bus.send(read.to, read.message(self.node_id, data, now))

    def _propose(self, proposal: ProposeIsr) -> None:
        self._spawn(self._apply_proposal(proposal), f"propose-p{proposal.partition}")

    async def _apply_proposal(self, proposal: ProposeIsr) -> None:
        try:
            await self._coord(apply_proposal(self.coordinator, proposal, self.node_id))
        except (CoordinatorUnavailable, SessionExpired) as exc:
            log.info("p%d: ISR proposal not applied (%s)", proposal.partition, exc)
        except Exception:
            log.exception("p%d: applying an ISR proposal failed", proposal.partition)

    def _on_reply(self, reply: Reply) -> None:
        waiting = self._waiting.pop(reply.client, None)
        if waiting is None:
            return
        answer, position, _deadline_ms = waiting
        if answer.done:  # an earlier item left unanswered: the command already was
            return
        answer.replies[position] = reply.reply
        answer.missing -= 1
        if answer.missing == 0:
            self._finish(answer)

    def _unanswered(self, answer: _Answer, why: str) -> None:
        if not answer.done:
            answer.unknown = why
            self._finish(answer)

    def _finish(self, answer: _Answer) -> None:
        if answer.unknown is not None:
            if answer.op.is_write:
                rendered = _unknown(answer.partition, answer.unknown)
            else:
                rendered = resp.error(f"TRYAGAIN partition {answer.partition}: {answer.unknown}")
        else:
            rendered = self._render(answer.op, [r for r in answer.replies if r is not None])
        if answer.future is None:
            answer.rendered = rendered
        elif not answer.future.done():
            answer.future.set_result(rendered)

    def _on_storage_failure(self, partition: int) -> None:
        self._spawn(self._resign(partition), f"resign-p{partition}")

    async def _resign(self, partition: int) -> None:
        """This primary's disk failed: its replica is rebuilt as a backup that may never
        lead this epoch again, so hand the partition to another in-sync replica now rather
        than leave it unavailable. The controller's own failover rule decides, seeing this
        node as dead for this partition (safe: this node no longer serves it), by CAS."""
        try:
            item = await self._coord(self.coordinator.get(config_key(partition)))
            if item is None:
                return
            config = decode_config(item.value)
            if config.primary != self.node_id:
                return
            members = await self._coord(self.coordinator.members())
            others = {node: reg for node, reg in members.items() if node != self.node_id}
            for change in Controller().decide([config], sessions_from_members(others), 0.0):
                await self._coord(
                    self.coordinator.set_if_version(
                        config_key(partition), encode_config(change.config), version=item.version
                    )
                )
                log.warning("p%d: resigned after a storage failure: %s", partition, change.reason)
        except (CoordinatorUnavailable, Conflict) as exc:
            log.warning("p%d: could not resign after a storage failure: %s", partition, exc)

    def _on_step_down(self, partition: int) -> None:
        self._fail_waiting(partition, "its primary stepped down before the write committed")

    def _fail_waiting(self, partition: int | None, why: str) -> None:
        for token, (answer, _position, _deadline) in list(self._waiting.items()):
            if partition is None or answer.partition == partition:
                del self._waiting[token]
                self._unanswered(answer, why)

    def _expire_waiting(self, now_ms: float) -> None:
        why = f"not committed within {self.settings.write_timeout_ms:.0f} ms"
        for token, (answer, _position, deadline_ms) in list(self._waiting.items()):
            if now_ms >= deadline_ms:
                del self._waiting[token]
                self._unanswered(answer, why)

    # ------------------------------------------------------------------ clients

    def _handle(self, state: ConnectionState, request: NodeRequest) -> bytes | Awaitable[bytes]:
        if isinstance(request, ClientOp):
            return self._client_op(state, request)
        if isinstance(request, Info):
            return render_info(self.info(request.sections))
        if isinstance(request, ClusterMyId):
            return resp.bulk(node_id_hex(self.node_id).encode())
        if isinstance(request, BackupBegin):
            runtime = self.partitions.get(request.partition)
            return self._backups.begin(request.partition, runtime, self.node_id)
        if isinstance(request, BackupRead):
            return self._backups.read(request.token, request.offset, request.length)
        if isinstance(request, BackupEnd):
            return self._backups.end(request.token)
        topology = self.topology()
        if isinstance(request, ClusterSlots):
            return cluster_slots(topology)
        if isinstance(request, ClusterShards):
            return cluster_shards(topology, state.protocol)
        if isinstance(request, ClusterNodes):
            return cluster_nodes(topology, self.node_id)
        if isinstance(request, ClusterInfo):
            return cluster_info(topology, self.node_id)
        raise UsageError(f"unsupported request {type(request).__name__}")

    def _moved(self, op: ClientOp, partition: int, primary: str | None) -> bytes:
        address = self._addresses.get(primary) if primary is not None else None
        if address is not None and primary == self.node_id:
            return resp.error(f"TRYAGAIN partition {partition} is opening on this node")
        moved_to = None if address is None else str(address)
        return error_reply(
            ErrorCode.NOT_PRIMARY, slot=op.slot, partition=partition, moved_to=moved_to
        )

    def _client_op(self, state: ConnectionState, op: ClientOp) -> bytes | Awaitable[bytes]:
        count = self.partition_count
        if count is None:
            return resp.error("CLUSTERDOWN the cluster has no partitions yet")
        partition = partition_of_slot(op.slot, count)
        config = self.configs.get(partition)
        primary = config.primary if config is not None else None
        stale_ok = state.readonly and not op.is_write
        runtime = self.partitions.get(partition)
        if runtime is None or (primary != self.node_id and not stale_ok):
            return self._moved(op, partition, primary)
        if op.is_write and runtime.storage_failure is not None:
            return resp.error(
                f"CLUSTERDOWN partition {partition} cannot persist writes on this node: "
                f"{runtime.storage_failure}"
            )
        answer = _Answer(op, partition)
        tokens: list[str] = []
        deadline_ms = _now_ms() + self.settings.write_timeout_ms
        request_id: RequestId | None = getattr(op, "request_id", None)
        for position, item in enumerate(op.ops):
            rid = request_id if request_id is not None else (self._client_id, next(self._seq))
            token = f"c{next(self._tokens)}"
            request = ClientRequest(partition, token, rid, item, stale_ok=stale_ok)
            self._waiting[token] = (answer, position, deadline_ms)
            tokens.append(token)
            if not runtime.deliver(request):
                for done in tokens:  # so replies to earlier items never reach the answer
                    self._waiting.pop(done, None)
                if runtime.overloaded:
                    return resp.error(f"BUSY partition {partition} has too many queued requests")
                return resp.error(
                    f"TRYAGAIN partition {partition} is reopening its log on this node"
                )
        if answer.rendered is not None:
            return answer.rendered  # answered while stepping (reads, refusals)
        answer.future = asyncio.get_running_loop().create_future()
        return answer.future

    def _render(self, op: ClientOp, replies: list[ClientReply]) -> bytes:
        hint = next((r.primary_hint for r in replies if r.error is not None), None)
        address = self._addresses.get(hint) if hint is not None and hint != self.node_id else None
        return render_reply(op, replies, moved_to=str(address) if address else None)

    # ------------------------------------------------------------------ views

    def topology(self) -> Topology:
        """Who serves which slots, from the configs and the registrations."""
        if self._topology is not None:
            return self._topology
        count = self.partition_count or len(self.configs)
        known = self._addresses
        configs: list[PartitionConfig] = []
        for config in self.configs.values():
            if config.partition >= count:
                continue
            primary = config.primary if config.primary in known else None
            configs.append(
                replace(config, primary=primary, isr=frozenset(n for n in config.isr if n in known))
            )
        if count:
            self._topology = Topology.from_configs(dict(known), configs, count)
        else:
            self._topology = Topology(dict(known), ())
        return self._topology

    def serving_partitions(self) -> list[int]:
        now = _now_ms()
        return sorted(p for p, r in self.partitions.items() if r.replica.serving(now))

    def info(self, sections: Iterable[str] = ()) -> dict[str, dict[str, object]]:
        """INFO's sections: server, cluster (roles, serving), partitions (epoch, lag)."""
        now = _now_ms()
        primaries = sum(r.replica.role is Role.PRIMARY for r in self.partitions.values())
        result: dict[str, dict[str, object]] = {
            "Server": {
                "redis_version": "7.0.0",
                "planaria_node": self.node_id,
                "process_id": os.getpid(),
                "tcp_port": self.port,
                "bus_port": self.bus_port,
                "uptime_in_seconds": int((now - self.started_ms) / 1000),
                "session": self.session if self.session is not None else "none",
                "lease_remaining_ms": max(0, int(self.lease_until_ms - now))
                if self.lease_until_ms > now
                else 0,
                "sessions_lost": self.sessions_lost,
                "replies_unleased": self.replies_unleased,
                "fsync": self.settings.fsync.mode,
                "compiled": "yes" if _native.compiled() else "no",  # mypyc hot modules
            },
            "Cluster": {
                "cluster_enabled": 1,
                "partitions_total": self.partition_count or 0,
                "partitions_here": len(self.partitions),
                "primaries": primaries,
                "backups": len(self.partitions) - primaries,
                "serving": len(self.serving_partitions()),
                "connected_clients": self._server.connections,
                "pending_writes": len(self._waiting),
                "gc_frozen_objects": gc.get_freeze_count(),
                "disk_jobs": self._committer.stats.jobs,
                "disk_jobs_inline": self._committer.stats.inline,
                "disk_batches": self._committer.stats.batches,
                "disk_fsyncs": self._committer.stats.syncs,
                "appends_merged": sum(r.appends_merged for r in self.partitions.values()),
                # Snapshot transfers: sending now / done / aborted, bytes sent, installed here.
                "transfers": len(self._sender.transfers),
                "transfers_done": self._sender.completed,
                "transfers_aborted": self._sender.aborted,
                "transfer_bytes_sent": self._sender.bytes_sent,
                "transfers_receiving": len(self._receiver.receiving),
                "snapshots_installed": sum(r.snapshots_installed for r in self.partitions.values()),
                # Snapshots taken for planaria backup (BACKUP BEGIN): open now, taken in all.
                "backups_open": len(self._backups),
                "backups_taken": self._backups.exported,
            },
            "Partitions": {
                f"p{p}": self._partition_line(r, now) for p, r in sorted(self.partitions.items())
            },
        }
        wanted = {s.lower() for s in sections} - {"all", "everything", "default"}
        if wanted:
            result = {name: body for name, body in result.items() if name.lower() in wanted}
        return result

    def _partition_line(self, runtime: PartitionRuntime, now_ms: float) -> str:
        replica = runtime.replica
        config = runtime.config
        lag = 0
        if replica.role is Role.PRIMARY and config is not None:
            peers = [n for n in config.replicas if n != self.node_id]
            lag = max((replica.last_index - replica.match_index(n) for n in peers), default=0)
        isr = "|".join(sorted(config.isr)) if config is not None else ""
        return (
            f"role={replica.role},serving={int(replica.serving(now_ms))},epoch={replica.epoch},"
            f"last={replica.last_index},commit={replica.commit_index},isr={isr},lag={lag},"
            f"storage={'failed' if runtime.storage_failure else 'ok'},"
            f"storage_failures={runtime.storage_failures},"
            f"{_log_fields(runtime)},"
            f"transfers={sum(p == runtime.partition for p, _ in self._sender.transfers)}"
        )

    def __repr__(self) -> str:
        return f"Node({self.node_id!r}, {self.address}, partitions={len(self.partitions)})"


def _log_fields(runtime: PartitionRuntime) -> str:
    """INFO's snapshot and log fields of a partition: where its snapshot stands, what its
    log files hold, the entries in memory, and the peers that need a snapshot transfer."""
    log_ = runtime.log
    replica = runtime.replica
    snapshot_index = log_.snapshot_index if log_ is not None else 0
    log_entries = log_.log_entries if log_ is not None else 0
    log_bytes = log_.log_bytes if log_ is not None else 0
    return (
        f"snapshot_index={snapshot_index},log_entries={log_entries},log_bytes={log_bytes},"
        f"memory_entries={replica.log_entries},snapshots={runtime.snapshots_taken},"
        f"needs_snapshot={len(replica.peers_needing_snapshot)}"
    )


def _close_journal(journal: Journal) -> None:
    try:
        journal.close()
    except (StorageError, UsageError) as exc:
        log.warning("closing the journal: %s", exc)
