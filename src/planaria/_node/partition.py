"""One partition on one node: its Replica, its PartitionLog, and the worker that drives them.

Every input of the replica (client requests, Appends and replies, configs, ticks) goes
through one queue, drained by one task. The task steps the replica on *every* queued input,
then executes the merged Ready in order: persist (one write and one fsync for the whole
batch, in a thread, so the event loop keeps running), send, reply, propose. Inputs that
arrive while an fsync runs form the next batch: group commit across concurrent clients.
Merging is safe because every effect of the batch follows every persist of the batch (a
stricter order than one Ready at a time).

A failed persist (full disk, I/O error) drops the rest of that batch (nothing is sent or
acknowledged), reopens the log (after a failed fsync only a reopen tells the truth) and
rebuilds the replica from what is on disk, as after a crash; until a later persist works,
client writes to the partition are refused with a storage error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from planaria._node.disk import DiskQueue
from planaria.core.messages import (
    Append,
    AppendReply,
    ClientRequest,
    PartitionConfig,
    Persist,
    ProposeIsr,
    Ready,
    Reply,
    Send,
)
from planaria.core.replica import Replica, ReplicaSettings, Role
from planaria.errors import InternalError
from planaria.sim.codec import decode_entry, encode_entry
from planaria.storage import FsyncPolicy, OsFS, PartitionLog, StorageDamaged, StorageError

__all__ = ["PartitionRuntime", "StepInput", "apply_persists"]

log = logging.getLogger("planaria.node")

NO_LEASE = float("-inf")


@dataclass(frozen=True, slots=True)
class _Tick:
    lease_until_ms: float


@dataclass(frozen=True, slots=True)
class _Sync:
    pass


class _Broken(Exception):
    """An inline step failed: the worker rebuilds the replica."""


StepInput = ClientRequest | Append | AppendReply | PartitionConfig | _Tick | _Sync


def apply_persists(log_: PartitionLog, persists: list[Persist], now_ms: float) -> None:
    """Apply Persist effects in order, then make them durable per the log's fsync policy.
    Blocking (runs in a thread)."""
    for persist in persists:
        if persist.epoch > log_.epoch:
            log_.set_epoch(persist.epoch)  # durable at once (atomic meta write)
        if persist.truncate_after is not None and persist.truncate_after < log_.last_index:
            log_.truncate_after(persist.truncate_after)
        if persist.entries:
            first = persist.entries[0].index
            if first != log_.last_index + 1:
                raise InternalError(
                    f"p{persist.partition}: a Persist appends index {first} after log end "
                    f"{log_.last_index}"
                )
            log_.append_many([(e.epoch, encode_entry(e)) for e in persist.entries])
        commit = min(persist.commit_index, log_.last_index)
        if commit > log_.commit_index:
            log_.set_commit_index(commit)
    log_.sync_if_due(now_ms)


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
        disk: DiskQueue,
        clock_ms: Callable[[], float],
        send: Callable[[Send], None],
        reply: Callable[[Reply], None],
        propose: Callable[[ProposeIsr], None],
        on_step_down: Callable[[int], None],
        inbox_max: int = 10_000,
    ) -> None:
        self.node_id = node_id
        self.partition = partition
        self.directory = directory
        self.policy = policy
        self.replica_settings = replica_settings
        self._executor = executor  # opening, recovery, closing
        self._disk = disk  # persists
        self._clock_ms = clock_ms
        self._send = send
        self._reply = reply
        self._propose = propose
        self._on_step_down = on_step_down
        self.inbox_max = inbox_max
        self._inbox: deque[StepInput] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # True while the worker owns the replica: a batch is stepped and not yet executed.
        self._busy = False
        self._broken = False
        self._stepped: tuple[Ready, bool, bool] | None = None  # (ready, was primary, sync)
        self.log: PartitionLog | None = None
        self.replica: Replica = Replica(node_id, partition, replica_settings)
        self.config: PartitionConfig | None = None
        self.storage_failure: StorageError | None = None
        self.persist_batches = 0
        self.persisted_entries = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open (recover) the log and rebuild the replica from it; start the worker."""
        await self._reopen()
        self._task = asyncio.create_task(self._run(), name=f"planaria-p{self.partition}")

    async def _reopen(self) -> None:
        loop = asyncio.get_running_loop()
        if self.log is not None:
            old, self.log = self.log, None
            await loop.run_in_executor(self._executor, _close_quietly, old)
        log_ = await loop.run_in_executor(self._executor, self._open_log)
        entries = await loop.run_in_executor(
            self._executor,
            lambda: [decode_entry(e.epoch, e.index, e.record) for e in log_.entries()],
        )
        self.log = log_
        self.replica = Replica(
            self.node_id,
            self.partition,
            self.replica_settings,
            log=entries,
            epoch=log_.epoch,
            commit_index=log_.commit_index,
        )
        if self.config is not None:
            self._inbox.appendleft(self.config)
            self._wakeup.set()

    def _open_log(self) -> PartitionLog:
        fs = OsFS()
        path = str(self.directory)
        try:
            opened = PartitionLog.open(fs, path, policy=self.policy)
        except StorageDamaged as damage:
            # Not a torn tail: this replica is out of sync; refill it from the primary.
            log.error("p%d: log damaged (%s); wiping it to refill from the primary",
                      self.partition, damage)  # fmt: skip
            PartitionLog.wipe(fs, path)
            opened = PartitionLog.open(fs, path, policy=self.policy)
        if opened.recovery.torn_tail_bytes:
            log.warning(
                "p%d: cut a torn tail of %d bytes (%s)",
                self.partition,
                opened.recovery.torn_tail_bytes,
                opened.recovery.torn_tail_reason,
            )
        return opened

    async def reset(self) -> None:
        """Throw the replica away and rebuild it from disk (the session was lost)."""
        await self._stop_worker()
        self._inbox.clear()
        self._stepped = None
        self._busy = self._broken = False
        await self._reopen()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"planaria-p{self.partition}")

    async def close(self) -> None:
        """Finish the batch in flight, then close the log (sync + meta)."""
        await self._stop_worker()
        if self.log is not None:
            old, self.log = self.log, None
            await asyncio.get_running_loop().run_in_executor(self._executor, _close_quietly, old)

    async def _stop_worker(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await task
            except Exception:
                log.exception("p%d: worker failed", self.partition)

    # ------------------------------------------------------------------ inputs

    def deliver(self, item: StepInput) -> bool:
        """Hand the replica an input; False if refused (inbox full, log not open).

        When the worker is idle the input is stepped at once, and a Ready without anything
        to persist (heartbeats, acks, reads, ticks) is executed at once too: no task switch.
        Anything else waits in the inbox for the worker (in order, behind a pending persist).
        """
        if self._closing:
            return False
        if isinstance(item, ClientRequest) and (
            self.log is None or len(self._inbox) >= self.inbox_max
        ):
            return False
        if isinstance(item, PartitionConfig):
            if self.config is not None and (item.epoch, item.version) < (
                self.config.epoch,
                self.config.version,
            ):
                return True
            self.config = item
        if self._busy or self._inbox or self.log is None:
            self._inbox.append(item)
            self._wakeup.set()
            return True
        was_primary = self.replica.role is Role.PRIMARY
        try:
            ready = self._step(item, Ready(), self._clock_ms())
        except Exception:
            log.exception("p%d: step failed; rebuilding the replica from disk", self.partition)
            self._busy = True
            self._broken = True
            self._wakeup.set()
            return True
        if ready.persist or isinstance(item, _Sync):
            self._busy = True
            self._stepped = (ready, was_primary, isinstance(item, _Sync))
            self._wakeup.set()
        else:
            self._execute(ready, was_primary)
        return True

    def tick(self, lease_until_ms: float) -> None:
        self.deliver(_Tick(lease_until_ms))

    def sync_tick(self) -> None:
        """Ask for an fsync if the interval policy wants one."""
        log_ = self.log
        if log_ is not None and log_.failure is None and log_.sync_due(self._clock_ms()):
            self.deliver(_Sync())

    # ------------------------------------------------------------------ the worker

    async def _run(self) -> None:
        while True:
            if not (self._busy or self._inbox):
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._busy = True
            try:
                if self._broken:
                    raise _Broken
                await self._batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, _Broken):
                    log.exception("p%d: step failed; rebuilding from disk", self.partition)
                self._inbox.clear()
                self._stepped = None
                self._broken = False
                await self._recover()
            finally:
                if not self._inbox and self._stepped is None:
                    self._busy = False

    async def _recover(self) -> None:
        """Reopen the log and rebuild the replica, retrying with backoff while it fails."""
        delay_s = 0.05
        while not self._closing:
            try:
                await self._reopen()
                return
            except Exception:
                log.exception("p%d: reopening the log failed; retrying", self.partition)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)

    def _step(self, item: StepInput, ready: Ready, now: float) -> Ready:
        replica = self.replica
        if isinstance(item, _Tick):
            ready.extend(replica.tick(now, item.lease_until_ms))
        elif isinstance(item, PartitionConfig):
            ready.extend(replica.on_config(item, now))
        elif not isinstance(item, _Sync):
            ready.extend(replica.on_message(item, now))
        return ready

    async def _batch(self) -> None:
        if self._stepped is not None:
            ready, was_primary, sync = self._stepped
            self._stepped = None
        else:
            ready, was_primary, sync = Ready(), self.replica.role is Role.PRIMARY, False
        inbox = self._inbox
        now = self._clock_ms()
        while inbox:
            item = inbox.popleft()
            sync = sync or isinstance(item, _Sync)
            self._step(item, ready, now)
        if ready.persist and self._may_send_early(ready.persist):
            # A primary's Appends may leave while its own fsync runs (as in Raft): backups
            # then persist in parallel. Acks still follow this persist: any input that could
            # commit waits in the inbox until the batch is done.
            early = [send for send in ready.send if isinstance(send.message, Append)]
            if early:
                ready.send = [send for send in ready.send if not isinstance(send.message, Append)]
                for send in early:
                    self._send(send)
        if (ready.persist or sync) and not await self._persist(ready.persist):
            return
        self._execute(ready, was_primary)

    def _may_send_early(self, persists: list[Persist]) -> bool:
        """Only appends in an epoch already durable here, without truncation: a restarted
        replica never leads an epoch it persisted, so no other entry can ever take the
        (epoch, index) of one sent early."""
        log_ = self.log
        return (
            log_ is not None
            and self.replica.role is Role.PRIMARY
            and all(p.truncate_after is None and p.epoch <= log_.epoch for p in persists)
        )

    def _execute(self, ready: Ready, was_primary: bool) -> None:
        for send in ready.send:
            self._send(send)
        for reply in ready.replies:
            self._reply(reply)
        for proposal in ready.requests:
            self._propose(proposal)
        if was_primary and self.replica.role is not Role.PRIMARY:
            self._on_step_down(self.partition)

    async def _persist(self, persists: list[Persist]) -> bool:
        log_ = self.log
        if log_ is None:
            return False
        now = self._clock_ms()
        try:
            await self._disk.run(lambda: apply_persists(log_, persists, now))
        except StorageError as exc:
            self.storage_failure = exc
            log.error(
                "p%d: persist failed, refusing writes and rebuilding from disk: %s",
                self.partition,
                exc,
            )
            self._inbox.clear()
            was_primary = self.replica.role is Role.PRIMARY
            await self._recover()
            if was_primary:
                self._on_step_down(self.partition)
            return False
        if any(p.entries for p in persists):
            self.storage_failure = None
            self.persist_batches += 1
            self.persisted_entries += sum(len(p.entries) for p in persists)
        return True

    # ------------------------------------------------------------------ views

    @property
    def inbox_length(self) -> int:
        return len(self._inbox)


def _close_quietly(log_: PartitionLog) -> None:
    try:
        log_.close()
    except StorageError as exc:
        log.warning("closing the log at %s: %s", log_.path, exc)
