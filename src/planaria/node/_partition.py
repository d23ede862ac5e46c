"""One partition on one node: its Replica, its PartitionLog, and the pipeline that drives them.

Every input (client request, Append, AppendReply, config, tick) is stepped at once, on the
event loop. When each effect of a step may leave, relative to the persists in flight, is
decided by :class:`planaria.core.pipeline.Pipeline` (its docstring gives the reasoning), the
same code the simulator runs: here its stages are written by the node's ``GroupCommitter``
(``submit``: callbacks, no task per partition) and the Appends it holds leave at the end of
the event loop's turn (``call_soon``).

A failed persist (full disk, I/O error) drops every pending effect (nothing is sent or
acknowledged), reopens the log (after a failed fsync only a reopen tells the truth) and
rebuilds the replica from what is on disk, as after a crash; until a later persist works,
client writes to the partition are refused with a storage error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from planaria.core.codec import encode_state_parts
from planaria.core.compaction import SnapshotPolicy
from planaria.core.messages import (
    Append,
    AppendReply,
    ClientRequest,
    PartitionConfig,
    ProposeIsr,
    Ready,
    ReplicaSnapshot,
    Reply,
    Send,
    SnapshotAck,
    SnapshotChunk,
)
from planaria.core.pipeline import Pipeline, Stage, may_send_early
from planaria.core.replica import Replica, ReplicaSettings, Role
from planaria.core.transfer import SnapshotReceiver, SnapshotSender
from planaria.errors import UsageError
from planaria.storage import (
    FsyncPolicy,
    Journal,
    OpenLogs,
    OsFS,
    PartitionLog,
    StorageDamaged,
    StorageError,
    close_logs,
)
from planaria.storage.errors import storage_error_from_os
from planaria.storage.format import Snapshot
from planaria.storage.identity import DATA_ID_MAX, confirm_data_id, create_data_id, read_data_id
from planaria.storage.persist import (
    install_received,
    receive_chunk,
    recovered_state,
    snapshot_file,
    write_persists,
)

# Incoming snapshot chunks waiting for the disk thread, per partition; more are dropped (a
# sender keeps a few in flight: only a misbehaving peer reaches this).
CHUNK_WRITES_MAX = 16

__all__ = [
    "CHUNK_WRITES_MAX",
    "LOST_ALL",
    "NO_LEASE",
    "PartitionRuntime",
    "RecoveredLogs",
    "SessionOpened",
    "StepInput",
    "claim_data_id",
    "claim_lost_all",
    "drop_data_id_new",
    "lost_partitions",
    "mark_lost",
    "new_loss_id",
    "open_logs_side_by_side",
    "open_partition_log",
]

log = logging.getLogger("planaria.node")

NO_LEASE = float("-inf")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Tick:
    lease_until_ms: float


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """The node's coordinator session (its incarnation) opened."""

    incarnation: int


StepInput = ClientRequest | Append | AppendReply | PartitionConfig | _Tick | SessionOpened


class Committer(Protocol):
    """What a partition needs of the node's ``GroupCommitter`` (tests hold the disk with a
    fake one)."""

    def submit(
        self,
        log: PartitionLog,
        job: Callable[[PartitionLog], int],
        done: Callable[[bool, Any], None],
    ) -> None: ...

    def call(self, fn: Callable[[PartitionLog], _T], log: PartitionLog, /) -> Awaitable[_T]: ...


class RecoveredLogs:
    """The partition logs a node's journal replay opened (``open_node_journal``'s
    ``keep``), held open until their partitions open and take them: a start opens each log
    once, not once to replay the journal and again to serve (reading and checking every
    snapshot and segment twice was half of a restart). At most one per partition directory;
    ``close_all`` closes those no partition took. Thread-safe (the storage threads)."""

    def __init__(self) -> None:
        self._logs: dict[int, PartitionLog] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._logs)

    def keep(self, partition: int, log_: PartitionLog) -> None:
        with self._lock:
            previous = self._logs.get(partition)
            if previous is not None and previous is not log_:
                raise UsageError(f"p{partition} already has a recovered log")
            self._logs[partition] = log_

    def take(self, partition: int) -> PartitionLog | None:
        """The partition's recovered log (once: later calls get None), if still open."""
        with self._lock:
            taken = self._logs.pop(partition, None)
        return taken if taken is not None and not taken.closed else None

    def close_all(self) -> None:
        """Close every log no partition took (blocking)."""
        with self._lock:
            logs, self._logs = list(self._logs.values()), {}
        for log_ in logs:
            _close_quietly(log_)


class PartitionRuntime:
    """Drives one replica. Effects leave through the callbacks given at construction."""

    def __init__(
        self,
        node_id: str,
        partition: int,
        *,
        directory: Path,
        policy: FsyncPolicy,
        replica_settings: ReplicaSettings,
        executor: Executor,
        committer: Committer,
        journal: Journal | None = None,
        clock_ms: Callable[[], float],
        send: Callable[[Send], None],
        reply: Callable[[Reply], None],
        propose: Callable[[ProposeIsr], None],
        on_step_down: Callable[[int], None],
        on_storage_failure: Callable[[int], None] = lambda partition: None,
        inbox_max: int = 10_000,
        session: Callable[[], int | None] = lambda: None,
        on_lost: Callable[[int], Awaitable[None]] | None = None,
        data_id_new: Callable[[], bool] = lambda: False,
        snapshot_policy: SnapshotPolicy | None = None,
        recovered: RecoveredLogs | None = None,
        freeze_decoded: bool = False,
        chunk_writer: Executor | None = None,
    ) -> None:
        self.node_id = node_id
        self.partition = partition
        self.directory = directory
        self.policy = policy
        self.replica_settings = replica_settings
        self._executor = executor  # opening, recovery, closing
        self._committer = committer  # persists, and closing logs (never during a batch)
        # Writes received snapshot chunks: one thread, so in order (None: the committer's
        # disk thread). Not the disk thread: each chunk is fsynced as written (see
        # receive_chunk), and there it held up this node's persists of every other
        # partition, and the acks a transfer waits for sat behind their batches.
        self._chunk_writer = chunk_writer
        self._journal = journal
        self._recovered = recovered  # the log the journal replay opened: the first open's
        self._freeze_decoded = freeze_decoded  # see _without_gc
        self._clock_ms = clock_ms
        self._on_step_down = on_step_down
        self._on_storage_failure = on_storage_failure
        self.inbox_max = inbox_max  # client requests whose replies may wait for the disk
        self._session = session  # the node's coordinator session (its incarnation), if any
        self._on_lost = on_lost  # registers the loss of this log (before the replica steps)
        # The data directory's id is new (the configs may not know it): maybe a new disk.
        self._data_id_new = data_id_new
        self.loss: int | None = None  # the id of this log's loss, until its config records it
        self._pipeline = Pipeline(
            submit=self._submit,
            send=send,
            reply=reply,
            propose=propose,
            flush_soon=_call_soon,
            batch_entries_max=replica_settings.batch_entries_max,
            bugs=replica_settings.bugs,
        )
        self._drained = asyncio.Event()  # no stage pending
        self._drained.set()
        self._recovery: asyncio.Task[None] | None = None
        self._chunk_tasks: set[asyncio.Task[None]] = set()  # incoming chunks being written
        self._closing = False
        self._recovering = True  # until the log is open; inputs but configs are dropped
        self._broken = False  # a step raised: rebuild from disk
        self.log: PartitionLog | None = None
        self.replica: Replica = Replica(node_id, partition, replica_settings)
        self.config: PartitionConfig | None = None
        self.storage_failure: StorageError | None = None  # the last one, until a write works
        self.storage_failures = 0
        self.last_storage_error: StorageError | None = None  # kept after writes work again
        self.persist_batches = 0
        self.persisted_entries = 0
        self.snapshot_policy = snapshot_policy or SnapshotPolicy()
        self._snapshot_task: asyncio.Task[None] | None = None
        self.snapshots_taken = 0
        self.snapshot_copy_ms = 0.0  # the last snapshot's pause on the event loop
        self._send_now = send  # snapshot acks leave at once (they follow no persist)
        self.snapshots_installed = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open (recover) the log and rebuild the replica from it."""
        await self._reopen()

    async def _reopen(self) -> None:
        self._recovering = True
        loop = asyncio.get_running_loop()
        if self.log is not None:
            old, self.log = self.log, None
            await self._committer.call(_close_quietly, old)
        log_, loss = await loop.run_in_executor(self._executor, self._open_log)
        snapshot, entries = await loop.run_in_executor(
            self._executor,
            functools.partial(_without_gc, freeze=self._freeze_decoded),
            functools.partial(
                recovered_state,
                log_,
                entries_before_snapshot=self.snapshot_policy.catchup_entries,
            ),
        )
        self.log = log_
        self.loss = loss
        if log_.recovery.covered_damage is not None:
            log.warning(
                "p%d: a record the snapshot covers is damaged (%s): catch-up starts after "
                "the snapshot", self.partition, log_.recovery.covered_damage,
            )  # fmt: skip
        if loss is not None and self._on_lost is not None:
            # The controller must know before it may count this replica in sync.
            await self._on_lost(self.partition)
        self.replica = Replica(
            self.node_id,
            self.partition,
            self.replica_settings,
            snapshot=snapshot,
            log=entries,
            epoch=log_.epoch,
            commit_index=log_.commit_index,
            lost=loss is not None or self._data_id_new(),
        )
        session = self._session()
        if session is not None:
            self.replica.session_opened(session, self._clock_ms())  # no config yet: no effect
        self._recovering = False
        if self.config is not None:
            self.deliver(self.config)

    def _open_log(self) -> tuple[PartitionLog, int | None]:
        """The log (recovered, or wiped and empty) and the id of its loss not yet recorded
        in its config, if any."""
        opened = None if self._recovered is None else self._recovered.take(self.partition)
        if opened is None:  # (a reopen always reads the disk again)
            opened = open_partition_log(self.directory, self.partition, self.policy)
        if opened is None:  # wiped: start empty, to be refilled from the primary
            opened = PartitionLog.open(OsFS(), str(self.directory), policy=self.policy)
        if self._journal is not None:
            opened.attach_journal(self._journal, self.partition)
        loss = _read_loss(_lost_marker(self.directory))
        return opened, loss if loss is not None else _read_loss(self.directory.parent / LOST_ALL)

    async def reset(self) -> None:
        """Throw the replica away and rebuild it from disk (the session was lost)."""
        await self._quiesce()
        self._closing = False
        await self._reopen()

    async def close(self) -> None:
        """Finish the stages pending (persists, then their effects), then close the log."""
        await self._quiesce()
        if self.log is not None:
            old, self.log = self.log, None
            await self._committer.call(_close_quietly, old)

    async def _quiesce(self) -> None:
        """Take no more inputs; let the stages pending finish (or a rebuild end)."""
        self._closing = True
        if self._snapshot_task is not None:
            await asyncio.wait([self._snapshot_task])  # its outcome is logged by itself
        if self._chunk_tasks:
            await asyncio.wait(list(self._chunk_tasks))
        if self._recovery is not None:
            task, self._recovery = self._recovery, None
            try:
                await task
            except Exception:
                log.exception("p%d: rebuilding failed", self.partition)
        await self._drained.wait()
        self._drop_stages()

    # ------------------------------------------------------------------ inputs

    def deliver(self, item: StepInput) -> bool:
        """Step the replica on ``item`` now; False if a client request is refused (the log
        is not open, or too many replies already wait for the disk)."""
        if isinstance(item, ClientRequest) and (self._out_of_service or self.overloaded):
            return False
        if isinstance(item, PartitionConfig):
            if self.config is not None and (item.epoch, item.version) < (
                self.config.epoch,
                self.config.version,
            ):
                return True
            self.config = item
            if self.loss is not None and item.wiped_loss(self.node_id) == self.loss:
                self._loss_recorded()
        if self._out_of_service:
            return True  # dropped, as a network may drop it (configs are fed again later)
        replica = self.replica
        was_primary = replica.role is Role.PRIMARY
        try:
            ready = self._step(item)
        except Exception:
            log.exception("p%d: step failed; rebuilding the replica from disk", self.partition)
            self._break()
            return True
        if ready:  # most ticks of most partitions ask for nothing
            self._dispatch(ready)
        if was_primary and replica.role is not Role.PRIMARY:
            self._on_step_down(self.partition)
        return True

    def _loss_recorded(self) -> None:
        """The config records the loss of the log: its marker may go (a later restart then
        rejoins outside the ISR, where the loss left it; ``lost-all`` is the node's)."""
        marker = _lost_marker(self.directory)
        loss, self.loss = self.loss, None
        try:
            if _read_loss(marker) == loss:
                OsFS().remove(str(marker))
                OsFS().fsync_dir(str(marker.parent))
        except OSError as exc:
            # Kept, it only registers the loss again at the next start: log and go on.
            log.warning(
                "p%d: %s", self.partition, storage_error_from_os(exc, "removing", str(marker))
            )

    def tick(self, lease_until_ms: float) -> None:
        self._maybe_snapshot()
        if self.replica.role is Role.PRIMARY:
            self.deliver(_Tick(lease_until_ms))
        elif not (self._out_of_service):
            # A backup's tick only records the lease (cheap: most partitions of a node are
            # backups, and every one is ticked every tick_ms).
            ready = self.replica.tick(self._clock_ms(), lease_until_ms, _wall_ms())
            if ready:
                self._dispatch(ready)

    def _step(self, item: StepInput) -> Ready:
        replica = self.replica
        now = self._clock_ms()
        if isinstance(item, _Tick):
            return replica.tick(now, item.lease_until_ms, _wall_ms())
        if isinstance(item, SessionOpened):
            return replica.session_opened(item.incarnation, now)
        if isinstance(item, PartitionConfig):
            return replica.on_config(item, now)
        return replica.on_message(item, now)

    @property
    def overloaded(self) -> bool:
        """Too many replies wait for the disk: refuse more client requests (BUSY)."""
        return self._pipeline.replies_waiting >= self.inbox_max

    def _dispatch(self, ready: Ready) -> None:
        self._pipeline.dispatch(ready, may_send_early=self._may_send_early())

    def _submit(self, stage: Stage) -> bool:
        """The pipeline's writer port: the committer writes ``stage`` with its next batch."""
        log_ = self.log
        if log_ is None:  # closed under us: nothing of it may leave
            self._break()
            return False
        try:
            self._committer.submit(
                log_, _stage_writer(stage), functools.partial(self._written, stage)
            )
        except StorageError as exc:  # the log had already failed
            self._storage_failed(exc)
            return False
        self._drained.clear()
        return True

    def _written(self, stage: Stage, ok: bool, value: int | BaseException) -> None:
        """The committer's word on a stage (stages end in the order they were submitted)."""
        if not self._pipeline.current(stage):
            return  # dropped by a rebuild meanwhile
        if isinstance(value, BaseException):  # not ok
            if isinstance(value, StorageError):
                self._storage_failed(value)
            else:
                log.error("p%d: persist failed; rebuilding from disk", self.partition,
                          exc_info=value)  # fmt: skip
                self._break()
            return
        appended = value
        if appended:
            self.storage_failure = None
            self.persist_batches += 1
            self.persisted_entries += appended
        self._pipeline.durable(stage)
        if not self._pipeline.stages_pending:
            self._drained.set()

    def _may_send_early(self) -> bool:
        """A primary's Appends may leave before its own persist when its epoch is durable
        here (see the module docstring)."""
        log_ = self.log
        return (
            log_ is not None
            and self.storage_failure is None
            and may_send_early(self.replica, log_.epoch)
        )

    @property
    def _out_of_service(self) -> bool:
        """Closing, or its replica being rebuilt from disk: it takes no new work."""
        return self._closing or self._recovering or self._broken

    # ------------------------------------------------------------------ snapshots

    def _maybe_snapshot(self) -> None:
        """Start a snapshot when the policy says so and none is under way (see
        ``planaria.core.compaction``)."""
        log_ = self.log
        if (
            log_ is None
            or self._out_of_service
            or (self._snapshot_task is not None and not self._snapshot_task.done())
        ):
            return
        replica = self.replica
        # Read without the disk thread's lock: a hint only (ints and a short list).
        snapshot_index = log_.snapshot_index
        bytes_after = log_.bytes_after(snapshot_index)
        if self.snapshot_policy.due(replica.applied_index, snapshot_index, bytes_after):
            self._snapshot_task = asyncio.create_task(
                self._snapshot(log_, replica), name=f"planaria-p{self.partition}-snapshot"
            )

    async def _snapshot(self, log_: PartitionLog, replica: Replica) -> None:
        """Snapshot without stalling the partition: copy the state on the loop (one C-speed
        copy of each table), serialise it on the loop a piece per turn while writes go on,
        write and fsync its file in the executor, then rename it into place in the disk
        thread (between batches: the only part that holds writes off) and compact the
        replica's memory."""
        started = time.perf_counter()
        view = replica.snapshot()
        self.snapshot_copy_ms = (time.perf_counter() - started) * 1000
        keep = self.snapshot_policy.keep_after(replica, view.index)
        loop = asyncio.get_running_loop()
        try:
            parts = await _encode_in_turns(view)
            encoded = time.perf_counter()
            stored = await loop.run_in_executor(
                self._executor, _join_and_write_paced, log_, view.index, view.epoch, parts
            )
            await loop.run_in_executor(self._executor, _write_behind, log_)
            written = time.perf_counter()
            saved = await self._committer.call(
                functools.partial(_save_snapshot, stored, keep_after=keep), log_
            )
            if saved:  # sealing and compacting in a turn of its own (two short holds)
                await self._committer.call(
                    functools.partial(PartitionLog.seal_and_compact, keep_after=keep), log_
                )
        except StorageError as exc:
            if self.log is log_:
                self._storage_failed(exc)
            return
        except Exception:
            log.exception("p%d: snapshot at %d failed", self.partition, view.index)
            if self.log is log_:
                self._break()
            return
        if not saved:
            return  # the disk had not caught up with the applied index: the next tick retries
        self.snapshots_taken += 1
        # When each snapshot ran and what it cost (bench_snapshots.py reads these lines).
        stored_at = time.perf_counter()
        log.info(
            "p%d: snapshot at %d stored, %d keys: %.1f ms on the loop, %.0f ms in all "
            "(encoding %.0f ms, file %.0f ms, rename %.0f ms)",
            self.partition,
            view.index,
            len(view.kv),
            self.snapshot_copy_ms,
            (stored_at - started) * 1000,
            (encoded - started) * 1000,
            (written - encoded) * 1000,
            (stored_at - written) * 1000,
        )
        if self.replica is replica:  # else rebuilt meanwhile, from the disk (compacted)
            replica.compact(keep)

    def committed_view(self, now_ms: float) -> tuple[ReplicaSnapshot, int] | None:
        """For a backup: the replicated state at the commit index and the replica's epoch,
        if it serves now (then, as for a linearizable read, every write acknowledged before
        now is in it); None if it does not."""
        if self._out_of_service:
            return None
        replica = self.replica
        if not replica.serving(now_ms) and "backup-unserving" not in self.replica_settings.bugs:
            return None
        return replica.snapshot(), replica.epoch

    # ------------------------------------------------------------------ snapshot transfer

    def want_transfers(self, sender: SnapshotSender, now_ms: float) -> None:
        """Tell the node's sender which peers this partition's primary must refill."""
        replica = self.replica
        log_ = self.log
        usable = not (self._out_of_service) and log_ is not None
        needing = replica.peers_needing_snapshot if replica.role is Role.PRIMARY else frozenset()
        if not usable or not needing or log_ is None:
            sender.stop(self.partition)
            return
        try:
            stored = snapshot_file(log_)
        except StorageError as exc:  # replaced under us: the next tick sees the new one
            log.info("p%d: snapshot file not readable now: %s", self.partition, exc)
            return
        sender.want(self.partition, replica.epoch, needing, stored, now_ms)

    def on_snapshot_chunk(self, chunk: SnapshotChunk, receiver: SnapshotReceiver) -> None:
        """A chunk of a snapshot for this replica: written to the incoming file (in order) by
        the chunk writer; the last one, verified, is installed in place of the log in the
        disk thread and the replica is rebuilt from it (as after a restart), then the
        primary is told."""
        log_ = self.log
        if log_ is None or self._out_of_service or len(self._chunk_tasks) >= CHUNK_WRITES_MAX:
            return  # dropped, as on a network: the sender resends
        replica = self.replica
        receipt = receiver.on_chunk(chunk, replica.epoch, replica.commit_index)
        if not receipt.write:
            self._send_now(Send(chunk.sender, receipt.ack))
            return
        task = asyncio.create_task(
            self._write_chunk(log_, chunk, receipt.ack, receiver, restart=receipt.restart,
                              complete=receipt.complete),
            name=f"planaria-p{self.partition}-chunk",
        )  # fmt: skip
        self._chunk_tasks.add(task)
        task.add_done_callback(self._chunk_tasks.discard)

    async def _write_chunk(
        self,
        log_: PartitionLog,
        chunk: SnapshotChunk,
        ack: SnapshotAck,
        receiver: SnapshotReceiver,
        *,
        restart: bool,
        complete: bool,
    ) -> None:
        write = functools.partial(receive_chunk, log_, chunk=chunk, restart=restart)
        try:
            if self._chunk_writer is None:
                await self._committer.call(lambda _log: write(), log_)
            else:
                await asyncio.get_running_loop().run_in_executor(self._chunk_writer, write)
        except StorageError as exc:
            log.warning("p%d: incoming snapshot: %s; starting over", self.partition, exc)
            receiver.drop(self.partition)
            self._send_now(Send(chunk.sender, dataclasses.replace(ack, next_offset=0)))
            return
        if not complete:
            self._send_now(Send(chunk.sender, ack))
            return
        if self.log is not log_ or self._closing:
            return  # reopened meanwhile: the sender resends
        # Like a rebuild: nothing pending of the old replica may still leave.
        self._recovering = True
        self._drop_stages()
        install_started = time.perf_counter()
        try:
            installed = await self._committer.call(
                functools.partial(install_received, chunk=chunk), log_
            )
        except StorageError as exc:
            self._recovering = False
            self._storage_failed(exc)
            return
        except Exception:
            # Never left recovering (refusing every client) by a failure nobody awaits.
            log.exception("p%d: installing a snapshot failed; rebuilding from disk", self.partition)
            self._recovering = False
            self._break()
            return
        if installed:
            self.snapshots_installed += 1
        installed_at = time.perf_counter()
        log.info(
            "p%d: %s the snapshot at %d from %s (%.0f ms)",
            self.partition,
            "installed" if installed else "already past (not installed)",
            chunk.snapshot_index,
            chunk.sender,
            (installed_at - install_started) * 1000,
        )
        self._recovering = False
        self._break()  # rebuilt from the disk, now the snapshot (retrying as any rebuild)
        if self._recovery is not None:
            await asyncio.shield(self._recovery)
        log.info(
            "p%d: rebuilt from the installed snapshot in %.0f ms",
            self.partition,
            (time.perf_counter() - installed_at) * 1000,
        )
        self._send_now(Send(chunk.sender, receiver.installed(chunk, self.replica.epoch)))

    # ------------------------------------------------------------------ failures

    def _storage_failed(self, exc: StorageError) -> None:
        self.storage_failure = exc
        self.storage_failures += 1
        self.last_storage_error = exc
        log.error(
            "p%d: persist failed, refusing writes and rebuilding from disk: %s",
            self.partition,
            exc,
        )
        was_primary = self.replica.role is Role.PRIMARY
        self._break()
        if was_primary:
            self._on_storage_failure(self.partition)

    def _break(self) -> None:
        """Drop every pending effect and rebuild the replica from disk (in a task)."""
        if self._broken:
            return
        self._broken = True
        self._drop_stages()
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(
                self._recover(), name=f"planaria-p{self.partition}-rebuild"
            )

    def _drop_stages(self) -> None:
        self._pipeline.drop()
        self._drained.set()

    async def _recover(self) -> None:
        """Reopen the log and rebuild the replica (retrying with backoff while that fails)."""
        if self.replica.role is Role.PRIMARY:
            self._on_step_down(self.partition)
        delay_s = 0.05
        while not self._closing:
            self._broken = False
            try:
                await self._reopen()
            except Exception:
                log.exception("p%d: reopening the log failed; retrying", self.partition)
                reopened = False
            else:
                reopened = True
            if not reopened:  # waits outside the handler (see _native: no await in except)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)
                continue
            if not self._broken:  # else the step of the config fed after reopening failed
                return
            self._drop_stages()
        self._broken = False

    # ------------------------------------------------------------------ views

    @property
    def stages_pending(self) -> int:
        """Stages waiting for the disk (the one being written included)."""
        return self._pipeline.stages_pending

    @property
    def appends_merged(self) -> int:
        return self._pipeline.appends_merged


def open_logs_side_by_side(threads: int) -> OpenLogs:
    """The journal recovery's ``OpenLogs`` of a node: ``threads`` logs opened at once.
    Opening reads and checksums a log's snapshot and segments, which release the GIL: two
    threads opened 16 logs holding 1 GB in 0.64 s instead of 1.0 s (docs/BENCHMARKS.md,
    restart)."""
    if threads < 1:
        raise UsageError(f"threads must be >= 1, not {threads}")

    def open_logs(
        open_log: Callable[[int, int | None], PartitionLog | None],
        wanted: Mapping[int, int | None],
    ) -> dict[int, PartitionLog | None]:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="planaria-open") as pool:
            futures = {p: pool.submit(open_log, p, u) for p, u in wanted.items()}
        opened: dict[int, PartitionLog | None] = {}
        failure: BaseException | None = None
        for partition, future in futures.items():
            error = future.exception()
            if error is None:
                opened[partition] = future.result()
            elif failure is None:
                failure = error
        if failure is not None:
            close_logs(opened)
            raise failure
        return opened

    return open_logs


def open_partition_log(
    directory: Path, partition: int, policy: FsyncPolicy, *, unsynced_after: int | None = None
) -> PartitionLog | None:
    """Open (recover) a partition's log, saying so when a torn tail was cut; None when it
    was damaged before its tail and has been wiped (the replica is refilled from its
    primary). Blocking. ``unsynced_after``: see ``PartitionLog.open``."""
    fs, path = OsFS(), str(directory)
    try:
        opened = PartitionLog.open(fs, path, policy=policy, unsynced_after=unsynced_after)
    except StorageDamaged as damage:
        log.error("p%d: log damaged (%s); wiping it to refill from the primary",
                  partition, damage)  # fmt: skip
        mark_lost(directory, new_loss_id())
        PartitionLog.wipe(fs, path)
        return None
    if opened.recovery.torn_tail_bytes:
        log.warning(
            "p%d: cut a torn tail of %d bytes (%s)",
            partition,
            opened.recovery.torn_tail_bytes,
            opened.recovery.torn_tail_reason,
        )
    return opened


def _without_gc(work: Callable[[], _T], *, freeze: bool = False) -> _T:
    """``work()`` with the cyclic garbage collector paused (for ``recovered_state``:
    decoding a snapshot builds millions of objects, none of them garbage, and the full
    collections their number set off walked them all again and again, about a third of a
    restart's decode). Re-enabled only if it was enabled: another thread's decode may run
    meanwhile. ``freeze`` (a node whose freeze loop runs): when ``work`` returns, every
    object there is goes out of later collections at once (``gc.freeze``, as the loop does
    each second), so that the first collections after the pause do not walk the decoded
    state, young for the collector, through every generation (16 partitions' of them: a
    second of a restart)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    done = False
    try:
        result = work()
        done = True
        return result
    finally:
        if paused:
            if done and freeze:
                gc.freeze()
            gc.enable()


def _stage_writer(stage: Stage) -> Callable[[PartitionLog], int]:
    """The committer's job for ``stage``: write the persists joined so far (no more may join)."""
    return lambda log_: write_persists(log_, stage.start())


def _call_soon(fn: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_soon(fn)


class ActiveSegment(Protocol):
    """What ``_write_behind`` needs of a ``PartitionLog`` (a test gives it a fake)."""

    @property
    def active_segment_path(self) -> str | None: ...


def _write_behind(log_: ActiveSegment) -> None:
    """Write the log's active segment's dirty pages to disk now, outside the disk thread.
    A snapshot's rename must first fsync that segment (a journal replay skips what a
    snapshot covers), in the disk thread, holding write batches off: with the journal the
    segment's own pages are otherwise written only at checkpoints, and that fsync had the
    megabytes since the last one to write. Afterwards it finds little. A hint only: the
    fsync in the disk thread is what makes the segment durable (an fdatasync through another
    descriptor of the same file, while the disk thread appends, is safe), and a segment
    removed meanwhile (compacted) has nothing left to write."""
    path = log_.active_segment_path
    if path is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise storage_error_from_os(exc, "writing a segment's pages ahead", path) from exc
    finally:
        os.close(fd)


def _save_snapshot(snapshot: Snapshot, log_: PartitionLog, *, keep_after: int) -> bool:
    """In the disk thread: store ``snapshot`` (its file written by ``write_snapshot_file``)
    unless the log does not hold its last entry yet (the replica's memory may run ahead of
    its disk by the stages in flight)."""
    if not log_.holds(snapshot.index, snapshot.epoch):
        log_.discard_snapshot_file(snapshot.index)
        return False
    log_.save_snapshot(snapshot, keep_after=keep_after, prewritten=True, seal=False)
    return True


# Encoding a snapshot runs on the event loop (a thread would hold the GIL against it
# instead, and each time the loop waits for the GIL it waits up to the interpreter's switch
# interval, 5 ms, several times per write), a turn of at most _ENCODE_TURN_S at a time,
# then pauses so that it takes at most _ENCODE_LOOP_SHARE of the loop's time: writes slow
# down by at most about 1 / (1 - share) while a snapshot is taken, and a snapshot takes
# about 1 / share times its encoding time (measured in benchmarks/bench_snapshots.py).
_ENCODE_TURN_S = 0.0005
_ENCODE_LOOP_SHARE = 0.1


class SnapshotFileWriter(Protocol):
    """What ``_write_paced`` needs of a ``PartitionLog`` (a test times it with a fake)."""

    def write_snapshot_file(
        self, snapshot: Snapshot, *, after_slice: Callable[[], None] | None = None
    ) -> None: ...


def _join_and_write_paced(
    log_: SnapshotFileWriter, index: int, epoch: int, parts: list[bytes]
) -> Snapshot:
    """In a storage thread: the snapshot of the encoded ``parts`` (joined here: a large
    join releases the GIL, and on the loop the copy of megabytes held every write up),
    its file written by ``_write_paced``."""
    snapshot = Snapshot(index, epoch, b"".join(parts))
    _write_paced(log_, snapshot)
    return snapshot


def _write_paced(log_: SnapshotFileWriter, snapshot: Snapshot) -> None:
    """``log_.write_snapshot_file(snapshot)``, resting after each slice as long as it took,
    timed from when the write begins: paced from when it was queued, a write that waited
    for a storage thread (16 partitions' snapshots, 4 threads) rested as long as it had
    waited after its first slice, and a snapshot's file took minutes."""
    log_.write_snapshot_file(snapshot, after_slice=_rest_as_long())


def _rest_as_long() -> Callable[[], None]:
    """For ``write_snapshot_file``'s slices: after each, rest as long as it took, so the
    snapshot file takes at most half the disk's time from the writes' fsyncs."""
    last = time.monotonic()

    def rest() -> None:
        nonlocal last
        time.sleep(time.monotonic() - last)
        last = time.monotonic()

    return rest


async def _encode_in_turns(view: ReplicaSnapshot) -> list[bytes]:
    """``encode_state(view)`` in pieces (joined, the same bytes), encoded on the event loop
    a piece at a time."""
    parts = []
    pause_s = _ENCODE_TURN_S * (1 - _ENCODE_LOOP_SHARE) / _ENCODE_LOOP_SHARE
    turn_started = time.perf_counter()
    for part in encode_state_parts(view, keys_per_part=128):
        parts.append(part)
        if time.perf_counter() - turn_started >= _ENCODE_TURN_S:
            await asyncio.sleep(pause_s)
            turn_started = time.perf_counter()
    return parts


def _close_quietly(log_: PartitionLog) -> None:
    try:
        log_.close()
    except StorageError as exc:
        log.warning("closing the log at %s: %s", log_.path, exc)


LOST_PREFIX = "lost-"
# In a data directory: all of it was lost (a replaced disk; the operator creates it before
# the node's first start on the new disk, docs/operations.md).
LOST_ALL = "lost-all"


def _lost_marker(directory: Path) -> Path:
    """Next to a partition's log directory: the log was lost (wiped as damaged, with the
    journal, or a replaced disk), and its config does not record it yet."""
    return directory.parent / f"{LOST_PREFIX}{directory.name}"


def _wall_ms() -> float:
    """The wall clock in Unix ms: the time keys' expiries are judged by (a primary's own)."""
    return time.time() * 1000.0


def new_loss_id() -> int:
    """A name for a loss of data found at this start, unique to the node (the wall clock in
    ms: a restart takes longer than that)."""
    return time.time_ns() // 1_000_000


def mark_lost(directory: Path, loss: int) -> None:
    """Durably mark the log in ``directory`` lost (loss id ``loss``), before it is wiped
    (blocking): every session registers the loss until the partition's config records it."""
    write_loss(_lost_marker(directory), loss)


def write_loss(marker: Path, loss: int) -> None:
    fs = OsFS()
    try:
        fs.makedirs(str(marker.parent))
        created = fs.open_append(str(marker), create=True)
        try:
            created.truncate(0)
            created.append(str(loss).encode())
            created.fsync()
        finally:
            created.close()
        fs.fsync_dir(str(marker.parent))
    except OSError as exc:
        raise storage_error_from_os(exc, "marking the log lost", str(marker)) from exc


def _read_loss(marker: Path) -> int | None:
    """The loss id in ``marker``; None without one (or an empty one: not claimed yet)."""
    try:
        text = marker.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error_from_os(exc, "reading", str(marker)) from exc
    return int(text) if text.isdigit() else None


def lost_partitions(data_dir: Path) -> dict[int, int]:
    """Partition -> loss id, for every log this node lost, by their markers (blocking)."""
    lost: dict[int, int] = {}
    for path in data_dir.glob(f"{LOST_PREFIX}p*"):
        name, loss = path.name[len(LOST_PREFIX) + 1 :], _read_loss(path)
        if name.isdigit() and loss is not None:
            lost[int(name)] = loss
    return lost


def claim_data_id(data_dir: Path) -> tuple[int, bool]:
    """The data directory's id, made (random, durably) at its first start, and whether it
    is new: the configs may not know it yet (blocking; storage/identity.py)."""
    fs = OsFS()
    try:
        found = read_data_id(fs, str(data_dir))
        if found is not None:
            return found
        data_id = 1 + secrets.randbelow(DATA_ID_MAX)
        create_data_id(fs, str(data_dir), data_id)
    except OSError as exc:
        raise storage_error_from_os(exc, "making the data id", str(data_dir)) from exc
    log.info("new data directory %s: data id %d", data_dir, data_id)
    return data_id, True


def drop_data_id_new(data_dir: Path) -> None:
    """The configs know the data directory's id: it is new no more (blocking)."""
    try:
        confirm_data_id(OsFS(), str(data_dir))
    except OSError as exc:
        # Kept, it only builds the replicas ``lost`` again at the next start: log and go on.
        log.warning(
            "%s", storage_error_from_os(exc, "removing the new data id marker", str(data_dir))
        )


def claim_lost_all(data_dir: Path) -> int | None:
    """The loss id of a replaced disk (``lost-all``, created empty by the operator: named
    now, durably), or None without one (blocking)."""
    marker = data_dir / LOST_ALL
    if not marker.exists():
        return None
    loss = _read_loss(marker)
    if loss is None:
        loss = new_loss_id()
        write_loss(marker, loss)
    return loss
