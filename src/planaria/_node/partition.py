"""One partition on one node: its Replica, its PartitionLog, and the pipeline that drives them.

Every input (client request, Append, AppendReply, config, tick) is stepped at once, on the
event loop. What a step asks for is executed in the order the protocol needs, without
making later inputs wait for the disk:

- a Ready without anything to persist, when nothing is being persisted, is executed at once;
- otherwise its persists join a *stage*, handed at once to the node's ``GroupCommitter``
  (``submit``: callbacks, no task per partition). Persists stepped before the committer
  runs the stage's job join it; a partition's stages are written in order (the committer's
  batches are), each batch with one fsync per log shared with every partition that reached
  the disk meanwhile (group commit), and a stage's effects (sends, client replies, ISR
  proposals) leave only after its persist is durable. Effects of later steps without
  persists join the last stage, so **every effect follows every persist stepped before
  it**: an acknowledgement never precedes the durability of anything it depends on,
  whichever step produced it;
- exception: a primary's Appends leave without waiting for its persist when its epoch is
  already durable here (as a Raft leader sends while it writes): backups persist in
  parallel with the primary. Safe because a replica never leads an epoch it persisted, so
  no other entry can ever take the (epoch, index) of one sent early, and no acknowledgement
  of the primary leaves before its own persist. They leave at the end of the event loop's
  turn, each peer's merged into one (``merge_appends``): writes that arrived together cost
  a backup one message, one step and one reply.

Stepping while a persist is in flight is the one liberty taken with the core's "execute each
Ready before the next input": the replica's memory runs ahead of its disk, but nothing
leaves the node before the disk caught up, which is all that rule protects (a crash loses
exactly what was not durable, and nothing was said about it).

A failed persist (full disk, I/O error) drops every pending effect (nothing is sent or
acknowledged), reopens the log (after a failed fsync only a reopen tells the truth) and
rebuilds the replica from what is on disk, as after a crash; until a later persist works,
client writes to the partition are refused with a storage error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from planaria.core.codec import encode_state
from planaria.core.compaction import SnapshotPolicy
from planaria.core.messages import (
    Append,
    AppendReply,
    ClientRequest,
    PartitionConfig,
    ProposeIsr,
    Ready,
    Reply,
    Send,
)
from planaria.core.replica import Replica, ReplicaSettings, Role, merge_appends
from planaria.storage import (
    FsyncPolicy,
    Journal,
    OsFS,
    PartitionLog,
    StorageDamaged,
    StorageError,
)
from planaria.storage.errors import storage_error_from_os
from planaria.storage.format import Snapshot
from planaria.storage.persist import recovered_state, write_persists

__all__ = [
    "LOST_ALL",
    "NO_LEASE",
    "PartitionRuntime",
    "SessionOpened",
    "StepInput",
    "claim_lost_all",
    "lost_partitions",
    "mark_lost",
    "new_loss_id",
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


@dataclass(slots=True)
class _Stage:
    """Persists written together, and the effects that wait for them."""

    effects: Ready  # its ``persist`` is what this stage writes
    started: bool = False  # the disk has it: only effects may join now
    dropped: bool = False  # the replica is being rebuilt: write nothing, say nothing

    def join(self, ready: Ready) -> None:
        self.effects.extend(ready)

    def write(self, log_: PartitionLog) -> int:
        """The committer's job: the persists joined so far (no more may join)."""
        self.started = True
        if self.dropped:
            return 0
        return write_persists(log_, self.effects.persist)


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
        snapshot_policy: SnapshotPolicy | None = None,
    ) -> None:
        self.node_id = node_id
        self.partition = partition
        self.directory = directory
        self.policy = policy
        self.replica_settings = replica_settings
        self._executor = executor  # opening, recovery, closing
        self._committer = committer  # persists, and closing logs (never during a batch)
        self._journal = journal
        self._clock_ms = clock_ms
        self._send = send
        self._reply = reply
        self._propose = propose
        self._on_step_down = on_step_down
        self._on_storage_failure = on_storage_failure
        self.inbox_max = inbox_max  # client requests whose replies may wait for the disk
        self._session = session  # the node's coordinator session (its incarnation), if any
        self._on_lost = on_lost  # registers the loss of this log (before the replica steps)
        self.loss: int | None = None  # the id of this log's loss, until its config records it
        self._stages: deque[_Stage] = deque()
        self._drained = asyncio.Event()  # no stage pending
        self._drained.set()
        self._recovery: asyncio.Task[None] | None = None
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
        self._held: dict[str, Append] = {}  # per peer, early Appends leaving at turn's end
        self._held_flush_due = False
        self.appends_merged = 0
        self.snapshot_policy = snapshot_policy or SnapshotPolicy()
        self._snapshot_task: asyncio.Task[None] | None = None
        self.snapshots_taken = 0
        self.snapshot_copy_ms = 0.0  # the last snapshot's pause on the event loop

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
        snapshot, entries = await loop.run_in_executor(self._executor, recovered_state, log_)
        self.log = log_
        self.loss = loss
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
            lost=loss is not None,
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
        if isinstance(item, ClientRequest) and (
            self._closing or self._recovering or self._broken or self.overloaded
        ):
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
        if self._closing or self._recovering or self._broken:
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
        elif not (self._closing or self._recovering or self._broken):
            # A backup's tick only records the lease (cheap: most partitions of a node are
            # backups, and every one is ticked every tick_ms).
            ready = self.replica.tick(self._clock_ms(), lease_until_ms)
            if ready:
                self._dispatch(ready)

    def _step(self, item: StepInput) -> Ready:
        replica = self.replica
        now = self._clock_ms()
        if isinstance(item, _Tick):
            return replica.tick(now, item.lease_until_ms)
        if isinstance(item, SessionOpened):
            return replica.session_opened(item.incarnation, now)
        if isinstance(item, PartitionConfig):
            return replica.on_config(item, now)
        return replica.on_message(item, now)

    @property
    def overloaded(self) -> bool:
        """Too many replies wait for the disk: refuse more client requests (BUSY)."""
        return sum(len(stage.effects.replies) for stage in self._stages) >= self.inbox_max

    def _dispatch(self, ready: Ready) -> None:
        if ready.send and self._may_send_early():
            later: list[Send] = []
            for send in ready.send:
                if isinstance(send.message, Append):
                    self._hold(send.to, send.message)
                else:
                    later.append(send)
            ready.send = later
        needs_disk = bool(ready.persist)
        if not self._stages:
            if needs_disk:
                self._submit(_Stage(ready))
            else:
                self._execute(ready)
            return
        tail = self._stages[-1]
        if needs_disk and tail.started:
            self._submit(_Stage(ready))
        else:
            tail.join(ready)  # after every persist stepped before it

    def _submit(self, stage: _Stage) -> None:
        log_ = self.log
        if log_ is None:  # closed under us: nothing of it may leave
            self._break()
            return
        try:
            self._committer.submit(log_, stage.write, functools.partial(self._written, stage))
        except StorageError as exc:  # the log had already failed
            self._storage_failed(exc)
            return
        self._stages.append(stage)
        self._drained.clear()

    def _written(self, stage: _Stage, ok: bool, value: int | BaseException) -> None:
        """The committer's word on a stage (stages end in the order they were submitted)."""
        if stage.dropped or not self._stages or self._stages[0] is not stage:
            return  # dropped by a rebuild meanwhile
        if isinstance(value, BaseException):  # not ok
            if isinstance(value, StorageError):
                self._storage_failed(value)
            else:
                log.error("p%d: persist failed; rebuilding from disk", self.partition,
                          exc_info=value)  # fmt: skip
                self._break()
            return
        self._stages.popleft()
        if not self._stages:
            self._drained.set()
        appended = value
        if appended:
            self.storage_failure = None
            self.persist_batches += 1
            self.persisted_entries += appended
        self._execute(stage.effects)

    def _may_send_early(self) -> bool:
        """A primary's Appends may leave before its own persist when its epoch is durable
        here (see the module docstring)."""
        log_ = self.log
        replica = self.replica
        return (
            log_ is not None
            and replica.role is Role.PRIMARY
            and replica.epoch <= log_.epoch
            and self.storage_failure is None
        )

    def _hold(self, peer: str, append: Append) -> None:
        held = self._held.get(peer)
        if held is not None:
            merged = merge_appends(held, append, self.replica_settings.batch_entries_max)
            if merged is not None:
                self._held[peer] = merged
                self.appends_merged += 1
                return
            self._send(Send(peer, held))
        self._held[peer] = append
        if not self._held_flush_due:
            self._held_flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_held)

    def _flush_held(self) -> None:
        self._held_flush_due = False
        held, self._held = self._held, {}
        for peer, append in held.items():
            self._send(Send(peer, append))

    def _execute(self, ready: Ready) -> None:
        if self._held and ready.send:
            self._flush_held()  # a partition's messages to a peer leave in step order
        sends = _latest_acks(ready.send) if len(ready.send) > 1 else ready.send
        for send in sends:
            self._send(send)
        for reply in ready.replies:
            self._reply(reply)
        for proposal in ready.requests:
            self._propose(proposal)

    # ------------------------------------------------------------------ snapshots

    def _maybe_snapshot(self) -> None:
        """Start a snapshot when the policy says so and none is under way (see
        ``planaria.core.compaction``)."""
        log_ = self.log
        if (
            log_ is None
            or self._closing
            or self._recovering
            or self._broken
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
        copy of each table), serialise it in the executor while writes go on, store it in
        the disk thread (between batches), then compact the replica's memory."""
        started = time.perf_counter()
        view = replica.snapshot()
        self.snapshot_copy_ms = (time.perf_counter() - started) * 1000
        keep = self.snapshot_policy.keep_after(replica, view.index)
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(self._executor, encode_state, view)
            stored = Snapshot(view.index, view.epoch, data)
            saved = await self._committer.call(
                functools.partial(_save_snapshot, stored, keep_after=keep), log_
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
        if self.replica is replica:  # else rebuilt meanwhile, from the disk (compacted)
            replica.compact(keep)

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
        for stage in self._stages:
            stage.dropped = True
        self._stages.clear()
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
        return len(self._stages)


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


def _latest_acks(sends: list[Send]) -> list[Send]:
    """Keep, per primary, only the successful AppendReply that says the most (highest
    epoch, then match index): fewer messages, same meaning (the others count as lost)."""
    best: dict[str, tuple[int, int, int]] = {}  # to -> (epoch, match, position)
    acks = 0
    for position, send in enumerate(sends):
        message = send.message
        if isinstance(message, AppendReply) and message.success:
            acks += 1
            key = (message.epoch, message.match_index, position)
            if send.to not in best or key >= best[send.to]:
                best[send.to] = key
    if acks == len(best):
        return sends
    keep = {position for _, _, position in best.values()}
    return [
        send
        for position, send in enumerate(sends)
        if position in keep or not (isinstance(send.message, AppendReply) and send.message.success)
    ]


def _save_snapshot(snapshot: Snapshot, log_: PartitionLog, *, keep_after: int) -> bool:
    """In the disk thread: store ``snapshot`` unless the log does not reach it yet (the
    replica's memory may run ahead of its disk by the stages in flight)."""
    if log_.last_index < snapshot.index:
        return False
    log_.save_snapshot(snapshot, keep_after=keep_after)
    return True


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
