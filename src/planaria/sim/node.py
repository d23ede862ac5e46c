"""A simulated node: a thin runtime around the core's replicas, on a simulated disk.

Per partition it assigns, a node holds one :class:`~planaria.core.replica.Replica` and one
:class:`~planaria.storage.PartitionLog` on the node's own :class:`~planaria.storage.SimFS`.
It renews its coordinator session (which gives the lease) and ticks its replicas. Every Ready
goes through the node's own effect ordering, :class:`~planaria.core.pipeline.Pipeline` (one
per partition, as in ``node/_partition.py``): its persists are written (through the real
storage code) by a simulated group committer (:mod:`planaria.sim.committer`) that batches
the persists of every partition of the node and makes each batch durable after a random
fsync delay, while the replicas keep stepping; sends, replies and ISR proposals leave only
once what they follow is durable (a primary's Appends earlier, held and merged per peer
until the end of the turn), exactly as the node orders them. A config that lists the node
for a partition it does not host yet (a membership move made it a learner) creates that
partition's log and an empty replica. A crash loses memory and the disk's unsynced writes
(every batch whose fsync had not happened); a restart recovers every log (a torn tail is
cut off by the storage code) and rebuilds the replicas from it, under a new session.

A node that lost data (a damaged log or journal, wiped at start) writes a marker per lost
log holding the loss's id before anything else, builds those replicas ``lost`` and
registers the loss with every session (:class:`~planaria.sim.wire.Renew`) until it sees
the config record that id (``PartitionConfig.wiped``): a restart before that registers the
same loss again (the controller handles each loss once). A replaced disk
(:meth:`SimNode.wipe`) is marked by nobody: the node finds no ``data-id`` there, makes
another (``storage/identity.py``, as the real node) and registers it with every session;
the controller, which knows the old one, handles the change as a loss of every log. While
its data id is new (until every config that lists it knows the id) the node builds its
replicas ``lost``.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Protocol

from planaria.core.compaction import SnapshotPolicy
from planaria.core.messages import (
    Append,
    AppendReply,
    ClientReply,
    ClientRequest,
    ConfigUpdate,
    ErrorCode,
    Get,
    PartitionConfig,
    ProposeIsr,
    Ready,
    Reply,
    RequestId,
    Send,
    SnapshotAck,
    SnapshotChunk,
    Version,
)
from planaria.core.pipeline import Pipeline, Stage, may_send_early
from planaria.core.replica import Replica, ReplicaSettings, Role
from planaria.core.transfer import SnapshotReceiver, SnapshotSender, TransferSettings
from planaria.errors import UsageError
from planaria.sim.committer import SimCommitter
from planaria.sim.monitor import Violation
from planaria.sim.network import Network
from planaria.sim.wire import ConfigRead, ConfigSnapshot, IsrRequest, Renew, RenewAck
from planaria.sim.world import Process, World
from planaria.storage import (
    Journal,
    PartitionLog,
    SimFS,
    StorageDamaged,
    StorageError,
    open_node_journal,
)
from planaria.storage.format import SEGMENT_HEADER
from planaria.storage.fs import join
from planaria.storage.identity import confirm_data_id, create_data_id, read_data_id
from planaria.storage.persist import (
    PersistRuleBroken,
    install_received,
    receive_chunk,
    recovered_state,
    save_state,
    snapshot_file,
    write_persists,
)

__all__ = ["NodeSettings", "SimNode"]

COORDINATOR = "coord"
NO_LEASE = float("-inf")
# Open-session nonces: process incarnation * this + the number of the wish in the incarnation.
NONCES_PER_INCARNATION = 1_000_000
FIRST_NONCE = 1  # the first incarnation's first wish
DATA = "/data"
LOST_ALL = "lost-all"  # marker: the whole data directory was replaced (the operator's)
DISK_ID_SHIFT = 32  # data ids: (the node's disks so far) << this | a number of the node
# A node's wall clock (Unix ms, for key expiry) is its drifting local clock plus this: a
# late-2023 date, so expiry times look like real ones.
SIM_WALL_EPOCH_MS = 1_700_000_000_000


def _lost_marker(partition: int) -> str:
    return f"lost-p{partition}"


@dataclass(frozen=True)
class NodeSettings:
    tick_ms: float = 10.0
    config_poll_ms: float = 100.0  # re-read the configs (a pushed update may be lost)
    session_renew_ms: float = 30.0
    lease_ms: float = 100.0
    segment_bytes: int = 32 * 1024
    preallocate_bytes: int = 4096
    # Small, so runs checkpoint the journal often (the production default is 32 MiB).
    journal_checkpoint_bytes: int = 16 * 1024
    # Small, so snapshots and compaction happen all through a run, under every fault.
    snapshots: SnapshotPolicy = field(
        default_factory=lambda: SnapshotPolicy(entries=20, log_bytes=2048, catchup_entries=100)
    )
    # Small chunks and a slow pace, so a transfer spans many messages (and faults).
    transfer: TransferSettings = field(
        default_factory=lambda: TransferSettings(
            chunk_bytes=1024,
            window_chunks=2,
            bytes_per_s=1024 * 1024,
            retry_ms=50.0,
            retry_max_ms=1000.0,
            transfers_max=4,
        )
    )
    # A batch of persists is durable this long after it was written (drawn uniformly): a
    # disk's fsync takes from a fraction of a ms to ~10 ms. With ``fsync_max_drawn`` each
    # run draws its disks' longest delay, ``fsync_max_ms`` or a fifth of it (``planaria
    # sim --fsync-max-ms`` fixes it): slow disks let two replicas crash inside one write's
    # fsync (what clients see of release-before-durable), fast ones let a stale Append
    # reach a backup before a commit it learned is durable (no-epoch-fence).
    fsync_min_ms: float = 0.1
    fsync_max_ms: float = 10.0
    fsync_max_drawn: bool = True
    # Client requests are refused (OVERLOADED) while this many replies wait for the disk.
    inbox_max: int = 10_000

    def __post_init__(self) -> None:
        if not 0 <= self.fsync_min_ms <= self.fsync_max_ms:
            raise UsageError(
                f"need 0 <= fsync_min_ms <= fsync_max_ms, got {self.fsync_min_ms} and "
                f"{self.fsync_max_ms}"
            )


class Hooks(Protocol):
    """What the checks observe in a node (the monitor implements it)."""

    def on_ack(
        self, node: SimNode, partition: int, request_id: RequestId, version: Version | None
    ) -> None: ...

    def on_read(self, node: SimNode, key: bytes, reply: ClientReply) -> None: ...


class SimNode(Process):
    def __init__(
        self,
        world: World,
        network: Network,
        pid: str,
        *,
        partitions: Sequence[int],
        settings: NodeSettings,
        replica_settings: ReplicaSettings,
        hooks: Hooks,
        rebuild_on_refusal: bool = False,
    ) -> None:
        super().__init__(world, pid)
        self.network = network
        self.partitions = tuple(sorted(partitions))
        self.settings = settings
        self.replica_settings = replica_settings
        self.hooks = hooks
        # True (``--checks history``): a persist the storage rules refuse rebuilds the
        # replica from disk, as the real node does, instead of failing the run.
        self.rebuild_on_refusal = rebuild_on_refusal
        self.persists_refused = 0
        self.busy_refusals = 0  # client requests refused: too many replies waited for the disk
        # Over every incarnation: group-commit batches and their jobs, Appends merged.
        self.fsync_batches = 0
        self.persist_jobs = 0
        self.appends_merged = 0
        self.fs = SimFS()
        self.logs: dict[int, PartitionLog] = {}
        self.journal: Journal | None = None
        # The logs of the last incarnation, kept after a crash so the checks can still ask
        # what was durable on this node.
        self.last_logs: dict[int, PartitionLog] = {}
        self.replicas: dict[int, Replica] = {}
        self.pipelines: dict[int, Pipeline] = {}  # per partition, for this incarnation
        self.committer = self._new_committer()
        self.session: int | None = None
        self.nonce = 0
        self.sessions_opened = 0
        self.lease_until_ms = NO_LEASE
        self.ticked_lease_ms = NO_LEASE  # the lease the replicas got at the last tick
        self.crash_mid_write = False
        # The ``snapshot`` fault: the node crashes at this write op (counted from 1) of its
        # next snapshot or snapshot install (None: not armed).
        self.crash_mid_snapshot: int | None = None
        self.crash_install_only = False  # ...of its next install only
        self.snapshot_crashes = 0  # crashes inside a snapshot's save (any fault)
        self.install_crashes = 0  # ...inside a received snapshot's install
        self.snapshots_torn = 0  # snapshot files found damaged at a start (fallback or wipe)
        self.stale_installs = 0  # snapshots installed from an older epoch (the bug only)
        self.writes: set[tuple[str, int]] = set()  # request ids of writes received
        # Where each write's entry was persisted here: an ack without a version (a cas that
        # did not swap, a delete of a missing key) is checked at this place.
        self.persisted_at: dict[tuple[str, int], Version] = {}
        self.crash_requested: Callable[[SimNode], None] | None = None
        self.recoveries_torn = 0
        self.recoveries_damaged = 0
        self.sessions_lost = 0
        self.records_lost = 0  # log records a crash took (never synced)
        self.last_index_at_crash: dict[int, int] = {}
        self.wiped_at_start: set[int] = set()  # logs wiped as damaged in this start
        # For the checks (the node finds out by itself): the next start is on a new disk.
        self.data_replaced = False
        self.disks = 0  # data directories this node made an id for
        self.data_id = 0  # its data directory's id (registered with every session)
        self.data_id_new = False  # ...which the configs may not know yet
        self.wipes = 0
        self.snapshots_taken = 0
        # Snapshot transfers (memory: a crash forgets them); totals over every incarnation.
        self.sender = SnapshotSender(settings.transfer)
        self.receiver = SnapshotReceiver(pid, replica_settings.bugs)
        self.snapshots_installed = 0
        # The senders' and receivers' counts of earlier incarnations (a crash forgets them).
        self._transfer_counts: dict[str, int] = {}
        # For the checks: per partition, how many times this node lost its log, and the log
        # as it was before the last loss (what it held durably then still counts for acks).
        self.log_generation: dict[int, int] = {}
        self.lost_logs: dict[int, PartitionLog] = {}
        self.markers: dict[str, int] = {}  # the loss markers on the disk: their loss ids
        self.recorded: set[int] = set()  # with LOST_ALL: partitions that recorded the loss
        network.register(pid, self.on_message)

    # ------------------------------------------------------------------ lifecycle

    def on_start(self) -> None:
        self._open_logs()
        self.data_replaced = False
        self.claim_data_id()
        self._rebuild_replicas()
        self._new_session()
        self._poll(None)
        self.after_local(self.settings.tick_ms, self._tick)

    def on_crash(self) -> None:
        self.last_index_at_crash = {p: log.last_index for p, log in self.logs.items()}
        self._count_pipeline_work()
        self.committer = self._new_committer()  # counted: the next start begins from zero
        self.replicas = {}
        self.pipelines = {}
        self.last_logs = self.logs
        self.logs = {}
        self.lease_until_ms = NO_LEASE
        self.session = None  # the next start opens a new one
        self.crash_mid_write = False
        self.crash_mid_snapshot = None
        self.fs.cancel_failures()
        self.writes.clear()
        self.persisted_at.clear()
        self.journal = None
        counts = self.transfer_counts
        counts["aborted"] += len(self.sender.transfers)  # cut by the crash
        self._transfer_counts = counts
        self.sender = SnapshotSender(self.settings.transfer)
        self.receiver = SnapshotReceiver(self.pid, self.replica_settings.bugs)
        self.fs.crash(self.world.rng)

    @property
    def transfer_counts(self) -> dict[str, int]:
        """This node's snapshot transfers over every incarnation: as sender ``started``,
        ``completed``, ``aborted`` (or cut by a crash of this node), ``superseded`` (aborted:
        no longer primary of their epoch), ``resends`` (resumed after no progress: cut
        midway); as receiver ``stale_refused`` and ``stale_taken`` chunks (of an older
        epoch; taken only with the bug install-without-epoch-check)."""
        sender, receiver = self.sender, self.receiver
        now = {
            "started": sender.started,
            "completed": sender.completed,
            "aborted": sender.aborted,
            "superseded": sender.superseded,
            "resends": sender.resends,
            "stale_refused": receiver.stale_refused,
            "stale_taken": receiver.stale_taken,
        }
        return {name: count + self._transfer_counts.get(name, 0) for name, count in now.items()}

    def wipe(self, *, whole_disk: bool) -> None:
        """While the node is down: its disk is replaced (``whole_disk``: an empty one, and
        nobody tells the node) or its journal is damaged (the start wipes every log). A
        journal with nothing to damage is replaced with the disk."""
        self.wipes += 1
        journal = join(DATA, "journal")
        segments = (
            []
            if whole_disk or not self.fs.is_dir(journal)
            else [
                join(journal, name)
                for name in self.fs.listdir(journal)
                if name.startswith("seg-")
                and self.fs.size(join(journal, name)) > SEGMENT_HEADER.size
            ]
        )
        if segments:
            self.world.trace.add(self.world.now_ms, self.pid, "journal damaged", segments[0])
            self.fs.damage(segments[0], 0)
            return
        self.world.trace.add(self.world.now_ms, self.pid, "disk replaced")
        self.fs = SimFS()
        self.data_replaced = True

    def tear_snapshot(self, rng: Random, *, spare: Callable[[int], bool]) -> str:
        """While the node is down: the newest snapshot file of one of its partitions (drawn;
        not one ``spare`` names) loses its tail, as on a disk that lost it. What was done."""
        candidates = []
        for partition in self.partitions:
            directory = f"{DATA}/p{partition}"
            if spare(partition) or not self.fs.is_dir(directory):
                continue
            names = [
                n
                for n in self.fs.listdir(directory)
                if n.startswith("snap-") and n.endswith(".snap")
            ]
            if names:  # zero-padded indexes: the newest is the greatest name
                candidates.append((partition, join(directory, max(names)), len(names)))
        if not candidates:
            return "no snapshot to tear (or only of last in-sync copies)"
        partition, path, count = candidates[rng.randrange(len(candidates))]
        size = self.fs.size(path)
        keep = rng.randrange(size)
        self.fs.tear(path, keep)
        older = "an older one is there" if count > 1 else "the only one"
        return f"p{partition}: {path} cut from {size} to {keep} bytes ({older})"

    def claim_data_id(self) -> int:
        """The data directory's id, made now if the disk has none (as the real node does,
        durably, in storage/identity.py), unique to the node and the disk."""
        self.fs.makedirs(DATA)
        found = read_data_id(self.fs, DATA)
        if found is None:
            self.disks += 1
            made = self.disks << DISK_ID_SHIFT | zlib.crc32(self.pid.encode())
            create_data_id(self.fs, DATA, made)
            found = (made, True)
        self.data_id, self.data_id_new = found
        return self.data_id

    def confirm_data_id_in(self, configs: Sequence[PartitionConfig]) -> None:
        """If every config of ``configs`` (all of them) that lists the node knows its data
        id, the id is new no more."""
        if self.data_id_new and all(
            c.data_id(self.pid) == self.data_id for c in configs if self.pid in c.replicas
        ):
            confirm_data_id(self.fs, DATA)
            self.data_id_new = False

    def _mark_lost(self, name: str) -> None:
        """Durably, before this start does anything else: the log ``name`` names was lost,
        in a loss named by this start (unique to the node)."""
        loss = self.incarnation + 1
        marker = self.fs.open_append(join(DATA, name), create=True)
        marker.append(str(loss).encode())
        marker.fsync()
        marker.close()
        self.fs.fsync_dir(DATA)
        self.markers[name] = loss

    def _unmark(self, name: str) -> None:
        self.fs.remove(join(DATA, name))
        self.fs.fsync_dir(DATA)
        del self.markers[name]

    def _read_markers(self) -> dict[str, int]:
        names = [n for n in self.fs.listdir(DATA) if n.startswith("lost-")]
        return {n: int(self.fs.read(join(DATA, n), 0, self.fs.size(join(DATA, n)))) for n in names}

    def _lost(self, partition: int) -> bool:
        return (
            self.data_id_new or LOST_ALL in self.markers or _lost_marker(partition) in self.markers
        )

    def lost_report(self) -> tuple[tuple[tuple[int, int], ...], int]:
        """What the node registers: (partition, loss id) per log it lost, and the loss id
        of its whole data directory (0: none)."""
        if not self.markers:
            return (), 0
        markers = self.markers
        lost = tuple(
            (p, markers[_lost_marker(p)]) for p in self.partitions if _lost_marker(p) in markers
        )
        return lost, markers.get(LOST_ALL, 0)

    def _note_recorded(self, config: PartitionConfig) -> None:
        """The config records the node's loss of the partition: forget the marker."""
        if not self.markers:
            return
        loss = config.wiped_loss(self.pid)
        marker = _lost_marker(config.partition)
        if loss is not None and self.markers.get(marker) == loss:
            self._unmark(marker)
        if loss is not None and self.markers.get(LOST_ALL) == loss:
            self.recorded.add(config.partition)
            if self.recorded >= set(self.partitions):
                self._unmark(LOST_ALL)

    def _open_logs(self) -> None:
        """As the node does at start: open the journal and replay it into the partition
        logs (the same ``open_node_journal``), then open and attach every log (those the
        replay opened are kept, as the node keeps them); then mark every log wiped as
        damaged as lost."""
        previous = self.last_logs
        self.wiped_at_start = set()
        self.recorded = set()
        kept: dict[int, PartitionLog] = {}
        self.journal, replayed = open_node_journal(
            self.fs,
            "/data/journal",
            self._recover_log,
            self._wipe_all,
            checkpoint_bytes=self.settings.journal_checkpoint_bytes,
            keep=kept.__setitem__,
        )
        self._note_torn_tail("journal", self.journal.log)
        if replayed:
            self.world.trace.add(self.world.now_ms, self.pid, "journal replayed", replayed)
        for partition in self.partitions:
            self._open_log(partition, kept.pop(partition, None))
        for unclaimed in kept.values():
            unclaimed.close()
        self.last_logs = dict(self.logs)
        self.markers = self._read_markers()
        for partition in sorted(self.wiped_at_start):
            self._mark_lost(_lost_marker(partition))
        lost = set(self.logs) if self.data_replaced else self.wiped_at_start
        for partition in sorted(lost):
            self.log_generation[partition] = self.log_generation.get(partition, 0) + 1
            if partition in previous:
                self.lost_logs[partition] = previous[partition]

    def _recover_log(self, partition: int, unsynced_after: int | None) -> PartitionLog | None:
        path = f"/data/p{partition}"
        try:
            log = self._open(path, unsynced_after)
        except StorageDamaged as damage:
            self._damaged(path, damage)
            return None
        self._note_torn_tail(f"p{partition}", log)
        return log

    def _note_torn_tail(self, what: str, log: PartitionLog) -> None:
        for damaged in log.recovery.damaged_snapshots:
            self.snapshots_torn += 1
            self.world.trace.add(
                self.world.now_ms, self.pid, f"recovered {what}", f"fell back from {damaged}"
            )
        if log.recovery.torn_tail_bytes:
            self.recoveries_torn += 1
            self.world.trace.add(
                self.world.now_ms,
                self.pid,
                f"recovered {what}",
                f"torn tail {log.recovery.torn_tail_bytes} bytes: {log.recovery.torn_tail_reason}",
            )

    def _wipe_all(self) -> None:
        self.world.trace.add(self.world.now_ms, self.pid, "journal damaged: wiping every log")
        # Every partition log directory (SimFS.listdir lists files only).
        for partition in self.partitions:
            path = f"/data/p{partition}"
            if self.fs.is_dir(path):
                self.recoveries_damaged += 1
                PartitionLog.wipe(self.fs, path)
                self.wiped_at_start.add(partition)

    def _damaged(self, path: str, damage: StorageDamaged) -> None:
        # Not a torn tail: this replica must be refilled from its primary.
        self.recoveries_damaged += 1
        if damage.path is not None and "/snap-" in damage.path:
            self.snapshots_torn += 1  # the only snapshot: the log is refilled from a peer
        self.world.trace.add(self.world.now_ms, self.pid, "storage damaged", str(damage))
        PartitionLog.wipe(self.fs, path)
        self.wiped_at_start.add(int(path.rsplit("/p", 1)[1]))

    def _open_log(self, partition: int, recovered: PartitionLog | None = None) -> PartitionLog:
        path = f"/data/p{partition}"
        if recovered is not None:
            log = recovered  # opened (and its repairs noted) by the journal replay
        else:
            try:
                log = self._open(path)
            except StorageDamaged as damage:
                self._damaged(path, damage)
                log = self._open(path)
            self._note_torn_tail(f"p{partition}", log)
        if self.journal is not None:
            log.attach_journal(self.journal, partition)
        self.logs[partition] = log
        before = self.last_index_at_crash.pop(partition, log.last_index)
        self.records_lost += max(0, before - log.last_index)
        return log

    def _open(self, path: str, unsynced_after: int | None = None) -> PartitionLog:
        return PartitionLog.open(
            self.fs,
            path,
            segment_bytes=self.settings.segment_bytes,
            preallocate_bytes=self.settings.preallocate_bytes,
            unsynced_after=unsynced_after,
        )

    def _rebuild_replicas(self) -> None:
        self.replicas = {}
        for partition, log in self.logs.items():
            self.replicas[partition] = self._replica_from(partition, log)

    def _replica_from(self, partition: int, log: PartitionLog) -> Replica:
        snapshot, entries = recovered_state(log)
        replica = Replica(
            self.pid,
            partition,
            self.replica_settings,
            snapshot=snapshot,
            log=entries,
            epoch=log.epoch,
            commit_index=log.commit_index,
            lost=self._lost(partition),
        )
        if self.session is not None:
            replica.session_opened(self.session, self.local_now())  # no config yet: no effect
        return replica

    def _host(self, partition: int) -> Replica:
        """Start hosting ``partition`` (a move made this node a learner): its log (on disk
        from now on, so a restart reopens it) and a replica built from it."""
        self.partitions = tuple(sorted({*self.partitions, partition}))
        log = self._open_log(partition)
        self.last_logs[partition] = log
        replica = self.replicas[partition] = self._replica_from(partition, log)
        self.world.trace.add(self.world.now_ms, self.pid, f"hosts p{partition}")
        return replica

    def _new_session(self) -> None:
        """Ask the coordinator for a new session; no lease until it answers."""
        self.sessions_opened += 1
        self.nonce = self.incarnation * NONCES_PER_INCARNATION + self.sessions_opened
        self.session = None
        self.lease_until_ms = NO_LEASE
        self._renew(self.nonce)

    def _renew(self, nonce: int) -> None:
        if nonce != self.nonce:
            return
        lost, data_lost = self.lost_report()
        renew = Renew(
            self.pid, nonce, self.session, self.local_now(), lost, data_lost, self.data_id
        )
        self.network.send(self.pid, COORDINATOR, renew)
        self.after_local(self.settings.session_renew_ms, self._renew, nonce)

    def _poll(self, _: Any) -> None:
        self.network.send(self.pid, COORDINATOR, ConfigRead())
        self.after_local(self.settings.config_poll_ms, self._poll)

    def _tick(self, _: Any) -> None:
        now = self.local_now()
        self.ticked_lease_ms = self.lease_until_ms
        for partition in self.partitions:
            replica = self.replicas.get(partition)
            if replica is not None:
                wall_ms = now + SIM_WALL_EPOCH_MS
                self._execute(partition, replica.tick(now, self.lease_until_ms, wall_ms))
                if self.up and self.replicas.get(partition) is replica:  # not rebuilt
                    self._maybe_snapshot(partition, replica)
                if not self.up:
                    return
                self._want_transfers(partition, now)
        self._send_chunks(now)
        self.after_local(self.settings.tick_ms, self._tick)

    def _want_transfers(self, partition: int, now: float) -> None:
        """Tell the sender which peers the partition's primary here must refill."""
        replica = self.replicas[partition]
        needing = replica.peers_needing_snapshot if replica.role is Role.PRIMARY else frozenset()
        if not needing:
            self.sender.stop(partition)
            return
        self.sender.want(
            partition, replica.epoch, needing, snapshot_file(self.logs[partition]), now
        )

    def _send_chunks(self, now: float) -> None:
        """The chunks the sender lets go now, read from the snapshot files (one at a time:
        memory holds a chunk, never a whole snapshot)."""
        for read in self.sender.poll(now):
            try:
                data = self.logs[read.partition].read_snapshot_file(
                    read.snapshot.index, read.offset, read.length
                )
            except StorageError as gone:  # replaced by a newer snapshot: start over
                self.world.trace.add(self.world.now_ms, self.pid, "snapshot replaced", gone)
                self.sender.file_gone(read.partition, read.to)
                continue
            self.network.send(self.pid, read.to, read.message(self.pid, data, now))

    def _maybe_snapshot(self, partition: int, replica: Replica) -> None:
        """Snapshot and compact when the policy says so, as the node does (here at once,
        between the committer's batches). A pending disk fault strikes in the middle of it:
        the snapshot's rename fails and the node crashes, leaving its temporary file."""
        log = self.logs[partition]
        policy = self.settings.snapshots
        if not policy.due(
            replica.applied_index, log.snapshot_index, log.bytes_after(log.snapshot_index)
        ):
            return
        view = replica.snapshot()
        if not log.holds(view.index, view.epoch):
            return  # stages in flight: the disk has not caught up with memory yet
        keep = policy.keep_after(replica, view.index)
        if "compact-past-commit" in self.replica_settings.bugs:
            keep = replica.last_index  # the bug: the snapshot's compaction takes it all
        torn = self._arm_crash(install=False)
        try:
            save_state(log, view, keep_after=min(keep, view.index))
        except StorageError as failure:
            if not torn:
                raise
            self.snapshot_crashes += 1
            self._crash_armed("crash mid-snapshot", failure)
            return
        if torn:  # the snapshot took fewer writes: the crash comes right after it
            self.snapshot_crashes += 1
            self._crash_armed("crash after a snapshot", f"p{partition} at {view.index}")
            return
        replica.compact(keep)
        self.snapshots_taken += 1

    def _arm_crash(self, *, install: bool) -> bool:
        """Before a snapshot's save or install: whether a pending fault strikes in it. The
        ``disk`` fault fails its rename (the temporary file is left behind); the
        ``snapshot`` fault fails the write op it drew (a torn temporary file, a rename
        whose directory entry may not last, a compaction cut short...)."""
        if self.crash_mid_snapshot is not None and (install or not self.crash_install_only):
            self.fs.fail_after(self.crash_mid_snapshot)
            return True
        if self.crash_mid_write:
            self.fs.fail_next("rename")
            return True
        return False

    def _crash_armed(self, what: str, detail: object) -> None:
        op = self.fs.failed_op if self.fs.failed_op is not None else "none"
        self.fs.cancel_failures()
        self.fs.failed_op = None
        self.world.trace.add(self.world.now_ms, self.pid, what, f"(at {op}) {detail}")
        if self.crash_requested is not None:
            self.crash_requested(self)

    # ------------------------------------------------------------------ messages

    def on_message(self, src: str, message: object) -> None:
        now = self.local_now()
        if isinstance(message, ClientRequest | Append | AppendReply):
            replica = self.replicas.get(message.partition)
            if replica is None:
                if isinstance(message, ClientRequest):
                    refusal = ClientReply(
                        message.partition, message.request_id, error=ErrorCode.NOT_PRIMARY
                    )
                    self.network.send(self.pid, src, refusal)
                return
            if isinstance(message, ClientRequest) and self._overloaded(message.partition):
                busy = ClientReply(
                    message.partition, message.request_id, error=ErrorCode.OVERLOADED
                )
                self.busy_refusals += 1
                self.network.send(self.pid, src, busy)  # the node's BUSY
                return
            if isinstance(message, ClientRequest) and not isinstance(message.op, Get):
                self.writes.add(message.request_id)
            ready = replica.on_message(message, now)
            if isinstance(message, ClientRequest) and isinstance(message.op, Get):
                for answer in ready.replies:
                    if answer.reply.error is None and not answer.reply.stale:
                        self.hooks.on_read(self, message.op.key, answer.reply)
            self._execute(message.partition, ready)
        elif isinstance(message, SnapshotChunk):
            self._on_chunk(message, now)
        elif isinstance(message, SnapshotAck):
            self.sender.on_ack(message, now)
            self._send_chunks(now)
        elif isinstance(message, ConfigUpdate):
            self._on_config(message.config, now)
        elif isinstance(message, ConfigSnapshot):
            for config in message.configs:
                self._on_config(config, now)
                if not self.up:
                    return
            self.confirm_data_id_in(message.configs)
        elif isinstance(message, RenewAck):
            self._on_renew_ack(message)

    def _on_chunk(self, chunk: SnapshotChunk, now: float) -> None:
        """A chunk of a snapshot for a replica here: written to the incoming file; the last
        one (verified) is installed in place of the log and the replica rebuilt from it. A
        pending disk fault strikes in the middle of the install (the node crashes)."""
        replica = self.replicas.get(chunk.partition)
        if replica is None:
            return
        log = self.logs[chunk.partition]
        receipt = self.receiver.on_chunk(chunk, replica.epoch, replica.commit_index)
        if receipt.write:
            try:
                receive_chunk(log, chunk, restart=receipt.restart)
            except StorageError as lost:
                self.world.trace.add(self.world.now_ms, self.pid, "incoming snapshot lost", lost)
                self.receiver.drop(chunk.partition)
                restart = dataclasses.replace(receipt.ack, next_offset=0)  # from the start
                self.network.send(self.pid, chunk.sender, restart)
                return
        if not receipt.complete:
            self.network.send(self.pid, chunk.sender, receipt.ack)
            return
        # As a refused persist: the replica's pending effects go, it is rebuilt from disk.
        self._pipeline(chunk.partition).drop()
        torn = self._arm_crash(install=True)
        try:
            # Always installed here: the chunk was checked against the replica in this
            # same event (the node's disk thread leaves a gap: install_received's False).
            installed = install_received(log, chunk)
        except StorageError as failure:
            if not torn:
                raise
            self.install_crashes += 1
            self._crash_armed("crash mid-install", failure)
            return
        if torn:
            self.install_crashes += 1
            self._crash_armed("crash after an install", f"p{chunk.partition}")
            return
        self.snapshots_installed += installed
        self.stale_installs += installed and chunk.epoch < replica.epoch
        self.world.trace.add(
            self.world.now_ms,
            self.pid,
            f"p{chunk.partition} installed snapshot",
            f"at {chunk.snapshot_index} from {chunk.sender}",
        )
        config = replica.config
        rebuilt = self.replicas[chunk.partition] = self._replica_from(chunk.partition, log)
        if config is not None:
            self._execute(chunk.partition, rebuilt.on_config(config, now))
        self.network.send(self.pid, chunk.sender, self.receiver.installed(chunk, rebuilt.epoch))

    def _on_config(self, config: PartitionConfig, now: float) -> None:
        replica = self.replicas.get(config.partition)
        if replica is None and self.pid in config.replicas:
            replica = self._host(config.partition)
        if replica is not None:
            self._note_recorded(config)
            self._execute(config.partition, replica.on_config(config, now))

    def _on_renew_ack(self, ack: RenewAck) -> None:
        if ack.nonce != self.nonce:
            return
        if ack.ok:
            if self.session is None:
                self.session = ack.session
                now = self.local_now()
                for partition, replica in list(self.replicas.items()):
                    self._execute(partition, replica.session_opened(ack.session, now))
                    if not self.up:
                        return
            if ack.session == self.session:
                lease = ack.sent_local_ms + self.settings.lease_ms
                self.lease_until_ms = max(self.lease_until_ms, lease)
            return
        if self.session is None:
            # The session opened for this wish expired before any ack reached us (we never
            # held its lease): wish for another, or we would ask for the dead one forever.
            self._new_session()
            return
        if ack.session != self.session:
            return
        # The coordinator expired this session: our lease is gone and the controller may
        # have promoted someone else. Start over from the disk under a new session.
        self.world.trace.add(self.world.now_ms, self.pid, "session expired", ack.session)
        self.sessions_lost += 1
        # As the node's reset: the stages pending finish first (their effects leave), then
        # every replica is rebuilt from the disk.
        self.committer.drain()
        if not self.up:
            return
        for pipeline in self.pipelines.values():
            pipeline.drop()
        for log in self.logs.values():
            log.close()
        if self.journal is not None:
            self.journal.close()
        for partition in self.partitions:
            self.receiver.drop(partition)  # reopening a log removes its incoming file
        self.session = None
        self._open_logs()
        self._rebuild_replicas()
        self._new_session()
        self.network.send(self.pid, COORDINATOR, ConfigRead())

    # ------------------------------------------------------------------ effects

    def _count_pipeline_work(self) -> None:
        """Add this incarnation's pipeline and committer counts to the totals."""
        self.fsync_batches += self.committer.batches
        self.persist_jobs += self.committer.jobs
        self.appends_merged += sum(p.appends_merged for p in self.pipelines.values())

    def _new_committer(self) -> SimCommitter:
        settings = self.settings
        return SimCommitter(
            self,
            fsync_min_ms=settings.fsync_min_ms,
            fsync_max_ms=settings.fsync_max_ms,
            crash_before_fsync=self._crash_before_fsync,
        )

    def _pipeline(self, partition: int) -> Pipeline:
        pipeline = self.pipelines.get(partition)
        if pipeline is None:
            pipeline = self.pipelines[partition] = Pipeline(
                submit=lambda stage: self._submit(partition, stage),
                send=self._send,
                reply=self._reply,
                propose=self._propose,
                flush_soon=self._flush_soon,
                batch_entries_max=self.replica_settings.batch_entries_max,
                bugs=self.replica_settings.bugs,
            )
        return pipeline

    def _overloaded(self, partition: int) -> bool:
        """Too many replies wait for the disk: refuse more client requests."""
        pipeline = self.pipelines.get(partition)
        return pipeline is not None and pipeline.replies_waiting >= self.settings.inbox_max

    def _execute(self, partition: int, ready: Ready) -> None:
        """Hand ``ready`` to the partition's pipeline: what may leave now leaves, the rest
        once the persists before it are durable."""
        if not ready:
            return
        early = may_send_early(self.replicas[partition], self.logs[partition].epoch)
        self._pipeline(partition).dispatch(ready, may_send_early=early)

    def _submit(self, partition: int, stage: Stage) -> bool:
        log = self.logs[partition]
        self.committer.submit(
            log,
            lambda log: self._write(stage, log),
            lambda ok, value: self._written(partition, stage, ok, value),
        )
        return True

    def _write(self, stage: Stage, log: PartitionLog) -> int:
        """The committer's job for a stage: its persists (none if dropped meanwhile)."""
        persists = stage.start()
        try:
            appended = write_persists(log, persists)
        except PersistRuleBroken as broken:
            if not self.rebuild_on_refusal:
                raise Violation(broken.rule, f"{self.pid}: {broken}") from None
            raise
        for persist in persists:
            for entry in persist.entries:
                if entry.request_id is not None:
                    self.persisted_at[entry.request_id] = Version(entry.epoch, entry.index)
        return appended

    def _written(self, partition: int, stage: Stage, ok: bool, value: object) -> None:
        pipeline = self._pipeline(partition)
        if not pipeline.current(stage):
            return  # dropped by a rebuild meanwhile
        if isinstance(value, PersistRuleBroken):  # not ok
            self._rebuild_refused(partition, value)
            return
        pipeline.durable(stage)

    def _crash_before_fsync(self) -> bool:
        """The disk fault: the records were written but the fsync never happens."""
        if not self.crash_mid_write:
            return False
        self.world.trace.add(self.world.now_ms, self.pid, "crash mid-write")
        if self.crash_requested is not None:
            self.crash_requested(self)
        return not self.up

    def _flush_soon(self, flush: Callable[[], None]) -> None:
        """At the end of this turn: after the events already due now."""
        self.after_local(0.0, lambda _: flush())

    def _send(self, effect: Send) -> None:
        self.network.send(self.pid, effect.to, effect.message)

    def _reply(self, answer: Reply) -> None:
        """A client reply leaves the node: the ack monitor checks it now."""
        reply = answer.reply
        if reply.error is None and reply.request_id in self.writes:
            version = reply.version or self.persisted_at.get(reply.request_id)
            self.hooks.on_ack(self, reply.partition, reply.request_id, version)
        self.network.send(self.pid, answer.client, reply)

    def _propose(self, proposal: ProposeIsr) -> None:
        self.world.trace.add(self.world.now_ms, self.pid, "propose isr", proposal)
        self.network.send(self.pid, COORDINATOR, IsrRequest(self.pid, proposal))

    def _rebuild_refused(self, partition: int, broken: PersistRuleBroken) -> None:
        """The storage refused a persist: drop every pending effect and rebuild the replica
        from what is on disk (it learns its config again from the next push or poll), as the
        real node does."""
        self.persists_refused += 1
        self.world.trace.add(
            self.world.now_ms, self.pid, f"p{partition} persist refused ({broken.rule})", broken
        )
        self._pipeline(partition).drop()
        self.receiver.drop(partition)
        self.replicas[partition] = self._replica_from(partition, self.logs[partition])
        self.network.send(self.pid, COORDINATOR, ConfigRead())
