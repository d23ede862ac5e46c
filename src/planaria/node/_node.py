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
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from planaria import _native
from planaria.address import format_address, parse_address
from planaria.coord import Coordinator, CoordinatorUnavailable, SessionId
from planaria.core.messages import PartitionConfig
from planaria.errors import UsageError
from planaria.net.commands import (
    ClientOp,
    ConnectionState,
    DbSize,
    Keys,
    NodeRequest,
    RandomKey,
    Scan,
)
from planaria.net.server import RespServer
from planaria.net.topology import Topology
from planaria.node._backup import BackupExports, remove_files
from planaria.node._configs import ConfigFollower
from planaria.node._context import NodeContext
from planaria.node._effects import ReplicaEffects
from planaria.node._keyspace import KeyspaceReads
from planaria.node._memory import MemoryGauge
from planaria.node._metrics import MetricsServer, new_registry
from planaria.node._partition import (
    PartitionRuntime,
    RecoveredLogs,
    mark_lost,
    new_loss_id,
    open_logs_side_by_side,
    open_partition_log,
)
from planaria.node._requests import ClientRequests
from planaria.node._session import SessionKeeper
from planaria.node._settings import BUS_PORT_OFFSET, NodeSettings, monotonic_ms
from planaria.node._tasks import cancel_all
from planaria.node._views import NodeViews
from planaria.storage import (
    FileLock,
    GroupCommitter,
    Journal,
    OsFS,
    PartitionLog,
    StorageError,
    StorageLocked,
    open_node_journal,
)
from planaria.storage.errors import storage_error_from_os

__all__ = ["Node"]

log = logging.getLogger("planaria.node")


class Node:
    """One node process's worth of planaria. ``await node.start()``, then serve until
    ``await node.close()`` (or use ``serve_forever``).

    It composes its parts, each with what it needs: the shared :class:`NodeContext`
    (partitions, tasks, coordinator calls), the :class:`SessionKeeper` (session, lease,
    registration), the :class:`ConfigFollower` (configs, members, opening partitions), the
    :class:`ReplicaEffects` (peer bus, snapshot transfers, ISR proposals), the
    :class:`ClientRequests` (commands waiting for replies) and the :class:`NodeViews` (INFO,
    CLUSTER, BACKUP); it owns the disk (data dir lock, journal, committer, storage threads),
    the RESP server and the tick."""

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
        metrics_listen: str | None = None,
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
        self.loop_beats = 0  # advanced by every tick: the keep-alive thread's sign of life
        self._lock: FileLock | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.storage_threads, thread_name_prefix=f"planaria-{node_id}"
        )
        # Received snapshot chunks, written and fsynced in order (PartitionRuntime).
        self._chunk_writer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"planaria-{node_id}-chunks"
        )
        # Never inline: an fsync on the event loop would stall every other partition's
        # traffic, heartbeats and leases for its duration.
        self._committer = GroupCommitter(inline_when_idle=False, name=f"planaria-{node_id}-disk")
        self._journal: Journal | None = None
        self._recovered_logs = RecoveredLogs()  # opened by the journal replay, until taken
        self._backups = BackupExports(self.data_dir, self._executor, monotonic_ms)  # BACKUP BEGIN
        self._context = NodeContext(node_id, self.settings, coordinator)
        self.partitions = self._context.partitions
        self._keeper = SessionKeeper(
            self._context,
            data_dir=self.data_dir,
            zone=zone,
            weight=weight,
            address=lambda: self.address,
            bus_address=lambda: self.bus_address,
            loop_beats=lambda: self.loop_beats,
            keepalive_connect=keepalive_connect,
            # Late-bound: the requests and the config follower are built below (they use
            # the keeper in turn), and these run only once the node started.
            fail_waiting=lambda partition, why: self._requests.fail_waiting(partition, why),  # noqa: PLW0108
            reload_configs=lambda: self._cluster.reload_configs(),  # noqa: PLW0108
        )
        self._effects = ReplicaEffects(self._context, keeper=self._keeper, executor=self._executor)
        self._cluster = ConfigFollower(
            self._context,
            bus=self._effects.bus,
            keeper=self._keeper,
            create_partition=self._create_partition,
        )
        self._memory = MemoryGauge(self.settings.maxmemory_bytes)
        self._requests = ClientRequests(self._context, cluster=self._cluster, memory=self._memory)
        self._keyspace = KeyspaceReads(self._context, cluster=self._cluster)
        self._server = RespServer(
            self._handle,
            self.host,
            port,
            connections_max=self.settings.connections_max,
            pipeline_depth_max=self.settings.pipeline_depth_max,
            settings={
                "maxmemory": str(self.settings.maxmemory_bytes),
                "maxmemory-policy": "noeviction",
            },
        )
        self._views = NodeViews(
            self._context,
            cluster=self._cluster,
            keeper=self._keeper,
            effects=self._effects,
            requests=self._requests,
            server=self._server,
            committer=self._committer,
            backups=self._backups,
            memory=self._memory,
            ports=lambda: (self.port, self.bus_port),
        )
        # Prometheus metrics over HTTP (node/_metrics.py), when given an address to serve on.
        self._metrics: MetricsServer | None = None
        if metrics_listen is not None:
            self._metrics = MetricsServer(new_registry(self._views), metrics_listen)
            self._views.metrics_address = lambda: self.metrics_url
        self._closed = asyncio.Event()

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

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes this node (None when it serves no metrics). Served on
        every interface (``0.0.0.0``, ``::``), it is named by the host others are told."""
        if self._metrics is None:
            return None
        host = self._metrics.host
        if host in ("0.0.0.0", "::", ""):
            host = (self._advertise or (self.host, self.port))[0]
        return f"http://{format_address(host, self._metrics.port)}/metrics"

    async def start(self) -> None:
        """Lock the data dir, listen, open a session and register, start every loop."""
        loop = asyncio.get_running_loop()
        self._lock_data_dir()
        self._keeper.claim_data_dir()
        self._journal = await loop.run_in_executor(self._executor, self._open_journal)
        await loop.run_in_executor(self._executor, self._clear_backups)
        self._committer.start()
        try:
            self.bus_port = await self._effects.bus.listen(self.bus_host, self.bus_port)
            await self._server.start()
            self.port = self._server.port
            if self._metrics is not None:
                await self._metrics.start()
            self._context.spawn(self._tick_loop(), "tick")
            if self.settings.gc_freeze_interval_ms > 0:
                self._context.spawn(self._gc_freeze_loop(), "gc-freeze")
            deadline_ms = monotonic_ms() + self.settings.start_timeout_ms
            await self._retry_until(deadline_ms, self._keeper.open, "opening a session")
            await self._retry_until(deadline_ms, self._cluster.load_cluster, "reading the cluster")
            await self._retry_until(deadline_ms, self._cluster.watch_all, "watching the configs")
            # Every partition here has opened: the logs none of them took are not ours.
            await loop.run_in_executor(self._executor, self._recovered_logs.close_all)
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
        if self._context.stopping:
            await self._closed.wait()
            return
        self._context.stopping = True
        try:
            await self._server.close()
            if self._metrics is not None:
                await self._metrics.close()
            tasks = {*self._context.tasks, *self._cluster.opening.values()}
            if self._keeper.controller_task is not None:
                tasks.add(self._keeper.controller_task)
            await cancel_all(tasks)
            await self._keeper.stop_keepalives()
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
            await self._effects.bus.close()
            await asyncio.get_running_loop().run_in_executor(self._executor, self._clear_backups)
            self._requests.fail_waiting(None, "the node is shutting down")
            if close_session:
                await self._keeper.close_session()
        finally:
            self._executor.shutdown(wait=True)
            self._chunk_writer.shutdown(wait=True)
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
                open_logs=open_logs_side_by_side(self.settings.storage_threads),
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

    async def _retry_until(
        self, deadline_ms: float, step: Callable[[], Awaitable[None]], what: str
    ) -> None:
        delay_s = 0.05
        while True:
            try:
                await step()
                return
            except (CoordinatorUnavailable, TimeoutError) as exc:
                if monotonic_ms() >= deadline_ms:
                    raise CoordinatorUnavailable(f"{what}: {exc}") from exc
                log.warning("%s: coordinator unreachable (%s); retrying", what, exc)
            await asyncio.sleep(delay_s)  # outside the handler (see _native)
            delay_s = min(delay_s * 2, 1.0)

    async def _create_partition(self, partition: int) -> PartitionRuntime:
        """Open a replica's runtime for ``partition``, wired to the node's parts."""
        settings = self.settings.replica
        min_insync = self._cluster.min_insync
        if min_insync is not None and min_insync != settings.min_insync:
            settings = replace(settings, min_insync=min_insync)
        keeper = self._keeper
        runtime = PartitionRuntime(
            self.node_id,
            partition,
            directory=self.data_dir / f"p{partition}",
            policy=self.settings.fsync,
            replica_settings=settings,
            executor=self._executor,
            committer=self._committer,
            journal=self._journal,
            clock_ms=monotonic_ms,
            send=self._effects.send,
            reply=self._requests.on_reply,
            propose=self._effects.propose,
            on_step_down=self._requests.on_step_down,
            on_storage_failure=self._effects.on_storage_failure,
            inbox_max=self.settings.partition_inbox_max,
            session=keeper.incarnation,
            on_lost=keeper.register_loss,
            data_id_new=lambda: keeper.data_id_new,
            snapshot_policy=self.settings.snapshots,
            recovered=self._recovered_logs,
            freeze_decoded=self.settings.gc_freeze_interval_ms > 0,
            chunk_writer=self._chunk_writer,
        )
        await runtime.open()
        runtime.tick(keeper.lease_until_ms)
        return runtime

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
        while not self._context.stopping:
            await asyncio.sleep(interval_s)
            gc.freeze()

    async def _tick_loop(self) -> None:
        tick_s = self.settings.tick_ms / 1000
        last_sweep_ms = monotonic_ms()
        sender = self._effects.sender
        while not self._context.stopping:
            await asyncio.sleep(tick_s)
            self.loop_beats += 1
            self._memory.refresh()
            self._views.observe_epochs()
            lease = self._keeper.lease_until_ms
            now = monotonic_ms()
            for runtime in self.partitions.values():
                runtime.tick(lease)
                runtime.want_transfers(sender, now)
            self._effects.send_chunks(now)
            now = monotonic_ms()
            if now - last_sweep_ms >= 100:
                last_sweep_ms = now
                self._requests.expire_waiting(now)
                expired = self._backups.expire(now)
                if expired:
                    self._context.spawn(self._remove_files(expired), "backup-expiry")

    # ------------------------------------------------------------------ the front door

    def _handle(self, state: ConnectionState, request: NodeRequest) -> bytes | Awaitable[bytes]:
        if isinstance(request, ClientOp):
            return self._requests.client_op(state, request)
        if isinstance(request, (DbSize, Keys, RandomKey, Scan)):
            return self._keyspace.answer(request)
        return self._views.answer(state, request)

    # ------------------------------------------------------------------ views

    @property
    def session(self) -> SessionId | None:
        """The coordinator session the node holds now (None while it has none)."""
        return self._keeper.session

    @property
    def sessions_lost(self) -> int:
        return self._keeper.sessions_lost

    @property
    def replies_unleased(self) -> int:
        """AppendReplies not sent for want of a lease."""
        return self._effects.replies_unleased

    @property
    def configs(self) -> dict[int, PartitionConfig]:
        """The newest config of every partition the node has read."""
        return self._cluster.configs

    def topology(self) -> Topology:
        """Who serves which slots, from the configs and the registrations."""
        return self._cluster.topology()

    def serving_partitions(self) -> list[int]:
        return self._views.serving_partitions()

    def info(self, sections: Iterable[str] = ()) -> dict[str, dict[str, object]]:
        """INFO's sections: server, cluster (roles, serving), partitions (epoch, lag)."""
        return self._views.info(sections)

    def __repr__(self) -> str:
        return f"Node({self.node_id!r}, {self.address}, partitions={len(self.partitions)})"


def _close_journal(journal: Journal) -> None:
    try:
        journal.close()
    except (StorageError, UsageError) as exc:
        log.warning("closing the journal: %s", exc)
