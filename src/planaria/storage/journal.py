"""``Journal``: one write-ahead journal for every partition log of a node (pure).

Why: with one log file per partition, a node that writes to N partitions needs N fsyncs per
batch, and a disk does only a few thousand fsyncs a second. With a journal, every record a
partition log appends is also written to the node's journal, and making a batch durable is
**one** fsync of the journal, however many partitions it touched (etcd's WAL, or RocksDB's
shared WAL, do the same). The partition logs' own files are synced only at a *checkpoint*
(every ``checkpoint_bytes`` of journal), when a segment fills and on close.

Files: the journal is itself a ``PartitionLog`` (segments, checksums, torn-tail recovery) in
its own directory; each record carries (partition, kind, epoch, index) and, for an append, the
partition's record. A checkpoint syncs every attached partition log, then stores a snapshot
of the journal (which partition was synced up to which index) so the segments behind it are
deleted.

Recovery (``recover``, before any partition log opens for service): every record after the
last checkpoint is replayed, in order, into its partition log: appends that the log lost
(unsynced pages) are written again, a record that differs replaces the log's suffix, and a
truncation marker is applied again, so nothing cut off is resurrected. A partition log's
unsynced tail may be damaged anywhere after what the checkpoint synced: that is cut, not
reported as damage (the journal holds it). Then each log is synced and the journal is
checkpointed empty. A node keeps the logs the replay opened (``keep``) and serves from them:
opening a log (reading and checking its snapshot, scanning its segments) was half of a
restart's time, and a log synced after its replay is the log a second opening would find.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from planaria.errors import UsageError
from planaria.storage.errors import StorageDamaged, StorageFailed
from planaria.storage.format import Snapshot
from planaria.storage.fs import FileLayer
from planaria.storage.log import FsyncPolicy, PartitionLog

__all__ = [
    "Journal",
    "JournalRecord",
    "OpenLogs",
    "close_logs",
    "open_logs_in_order",
    "open_node_journal",
]

CHECKPOINT_BYTES_DEFAULT = 32 * 1024 * 1024
SEGMENT_BYTES_DEFAULT = 8 * 1024 * 1024
APPEND = 1
TRUNCATE = 2
_HEAD = struct.Struct("<IBQQ")  # partition, kind, epoch, index
_SYNCED = struct.Struct("<IQ")  # partition, index synced at the checkpoint
_JOURNAL_EPOCH = 1


@dataclass(frozen=True, slots=True)
class JournalRecord:
    partition: int
    kind: int  # APPEND or TRUNCATE
    epoch: int
    index: int  # the appended record's index, or the index a truncation kept up to
    record: bytes


def _decode(payload: bytes) -> JournalRecord:
    partition, kind, epoch, index = _HEAD.unpack_from(payload)
    return JournalRecord(partition, kind, epoch, index, payload[_HEAD.size :])


class Journal:
    """Open with ``Journal.open``; attach partition logs with ``PartitionLog.attach_journal``."""

    def __init__(self, log: PartitionLog, checkpoint_bytes: int) -> None:
        self.log = log
        self.checkpoint_bytes = checkpoint_bytes
        self._attached: dict[int, PartitionLog] = {}
        self._dirty = False
        self._bytes_since_checkpoint = 0
        self.checkpoints = 0
        self.syncs = 0

    @classmethod
    def open(
        cls,
        fs: FileLayer,
        path: str,
        *,
        checkpoint_bytes: int = CHECKPOINT_BYTES_DEFAULT,
        segment_bytes: int = SEGMENT_BYTES_DEFAULT,
        preallocate_bytes: int = 1024 * 1024,
    ) -> Journal:
        """Open (recover) the journal at ``path``; ``StorageDamaged`` if it is damaged
        before its tail (then the node's logs cannot be trusted: see ``recover``)."""
        if checkpoint_bytes < 1:
            raise UsageError(f"checkpoint_bytes must be >= 1, got {checkpoint_bytes}")
        log = PartitionLog.open(
            fs,
            path,
            policy=FsyncPolicy("always"),
            segment_bytes=min(segment_bytes, max(checkpoint_bytes, 4096)),
            preallocate_bytes=preallocate_bytes,
            snapshots_kept=1,  # a checkpoint replaces the last: its records are gone
        )
        if log.epoch < _JOURNAL_EPOCH:
            log.set_epoch(_JOURNAL_EPOCH)
        return cls(log, checkpoint_bytes)

    # ------------------------------------------------------------------ state

    @property
    def failure(self) -> StorageFailed | None:
        return self.log.failure

    @property
    def attached(self) -> Mapping[int, PartitionLog]:
        return self._attached

    def records(self) -> Iterator[JournalRecord]:
        """Every record after the last checkpoint, in order."""
        for entry in self.log.entries(self.log.snapshot_index + 1):
            yield _decode(entry.record)

    def synced_at_checkpoint(self) -> dict[int, int]:
        """Per partition, the index its log was synced up to at the last checkpoint."""
        snapshot = self.log.snapshot
        if snapshot is None:
            return {}
        data = snapshot.data
        return dict(_SYNCED.iter_unpack(data[: len(data) - len(data) % _SYNCED.size]))

    @property
    def checkpoint_due(self) -> bool:
        return self._bytes_since_checkpoint >= self.checkpoint_bytes

    # ------------------------------------------------------------------ writing

    def attach(self, partition: int, log: PartitionLog) -> None:
        current = self._attached.get(partition)
        if current is not None and current is not log and not current.closed:
            raise UsageError(f"partition {partition} already has an open log in this journal")
        self._attached[partition] = log

    def detach(self, partition: int, log: PartitionLog) -> None:
        if self._attached.get(partition) is log:
            del self._attached[partition]

    def add_entries(
        self, partition: int, first_index: int, entries: Sequence[tuple[int, bytes]]
    ) -> None:
        """Journal appended records (not yet durable: ``sync``)."""
        payloads = [
            (_JOURNAL_EPOCH, _HEAD.pack(partition, APPEND, epoch, first_index + offset) + record)
            for offset, (epoch, record) in enumerate(entries)
        ]
        self.log.append_many(payloads)
        self._dirty = True
        self._bytes_since_checkpoint += sum(len(payload) for _, payload in payloads)

    def add_truncate(self, partition: int, after: int) -> None:
        """Journal a truncation (not yet durable: ``sync``)."""
        self.log.append(_JOURNAL_EPOCH, _HEAD.pack(partition, TRUNCATE, 0, after))
        self._dirty = True

    def sync(self) -> bool:
        """Make every journaled record durable (one fsync); False if there was nothing new."""
        if not self._dirty:
            return False
        self.log.sync()
        self._dirty = False
        self.syncs += 1
        return True

    def checkpoint(self) -> None:
        """Sync every attached partition log's own files, then drop the journal behind them."""
        synced: dict[int, int] = {}
        for partition, log in list(self._attached.items()):
            if log.closed:
                del self._attached[partition]
                continue
            log.sync_files()
            synced[partition] = log.last_index
        self.sync()
        if self.log.last_index > self.log.snapshot_index:
            data = b"".join(_SYNCED.pack(p, index) for p, index in sorted(synced.items()))
            self.log.save_snapshot(Snapshot(self.log.last_index, _JOURNAL_EPOCH, data))
        self._bytes_since_checkpoint = 0
        self.checkpoints += 1

    def close(self) -> None:
        """Close the journal (attached logs must be closed first: their close syncs them)."""
        open_logs = [p for p, log in self._attached.items() if not log.closed]
        if open_logs:
            raise UsageError(f"close the partition logs first (still open: {open_logs})")
        self.log.close()

    # ------------------------------------------------------------------ recovery

    def recover(
        self,
        open_log: Callable[[int, int | None], PartitionLog | None],
        keep: Callable[[int, PartitionLog], None] | None = None,
        *,
        open_logs: OpenLogs | None = None,
    ) -> dict[int, int]:
        """Replay every record after the last checkpoint into its partition log, sync them,
        and checkpoint. ``open_log(partition, unsynced_after)`` opens a partition's log,
        tolerating damage after index ``unsynced_after`` (None: none tolerated), or returns
        None when it wiped a damaged log (nothing to replay: it is refilled from its
        primary). Each log is then closed, or, with ``keep``, made durable as its close
        would (files and meta synced) and given to ``keep(partition, log)`` open: the
        caller owns it (and closes it). ``open_logs(open_log, wanted)`` opens them all
        (``open_logs_in_order`` by default; a node opens them side by side, see
        ``OpenLogs``); the replay itself is in partition order. Returns how many records
        were replayed per partition."""
        pending: dict[int, list[JournalRecord]] = {}
        for record in self.records():
            pending.setdefault(record.partition, []).append(record)
        synced = self.synced_at_checkpoint()
        wanted: dict[int, int | None] = {}
        for partition, records in sorted(pending.items()):
            firsts = [r.index for r in records if r.kind == APPEND]
            unsynced_after = synced.get(partition)
            if firsts:
                first_pending = min(firsts) - 1
                unsynced_after = (
                    first_pending if unsynced_after is None else min(unsynced_after, first_pending)
                )
            wanted[partition] = unsynced_after
        opened = (open_logs or open_logs_in_order)(open_log, wanted)
        replayed: dict[int, int] = {}
        try:
            for partition, log in list(opened.items()):
                if log is None:
                    continue
                replayed[partition] = _replay(log, pending[partition])
                if keep is not None:
                    # What close does but let go: the checkpoint below forgets these records.
                    log.sync_files()
                    log.persist_meta()
                    keep(partition, log)
                    del opened[partition]
                else:
                    del opened[partition]
                    log.close()
        finally:
            close_logs(opened)  # those not replayed yet, after a failure
        self.checkpoint()
        return replayed


# How a recovery opens the logs it replays into: ``open_logs(open_log, wanted)`` calls
# ``open_log(partition, unsynced_after)`` for each partition of ``wanted`` (in any order, or
# several at once) and returns what each gave, in ``wanted``'s order; if one fails, it closes
# those opened (``close_logs``) and raises the first failure.
OpenLogs: TypeAlias = Callable[
    [Callable[[int, int | None], PartitionLog | None], Mapping[int, int | None]],
    dict[int, PartitionLog | None],
]


def open_logs_in_order(
    open_log: Callable[[int, int | None], PartitionLog | None],
    wanted: Mapping[int, int | None],
) -> dict[int, PartitionLog | None]:
    """The ``OpenLogs`` of a simulated node: one after another."""
    opened: dict[int, PartitionLog | None] = {}
    try:
        for partition, unsynced_after in wanted.items():
            opened[partition] = open_log(partition, unsynced_after)
    except BaseException:
        close_logs(opened)
        raise
    return opened


def close_logs(logs: Mapping[int, PartitionLog | None]) -> None:
    """Close every open log of ``logs`` (after a failure: the first error of a close is
    raised once all were tried, chained to the failure being handled)."""
    error: BaseException | None = None
    for log in logs.values():
        if log is None or log.closed:
            continue
        try:
            log.close()
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error


def _superseded(records: Sequence[JournalRecord]) -> list[bool]:
    """Which appends a later truncation cut off (the log's files may already be cut: a
    truncation is applied to them durably at once)."""
    superseded = [False] * len(records)
    cut_after: int | None = None  # the lowest truncation point after the current record
    for position in range(len(records) - 1, -1, -1):
        record = records[position]
        if record.kind == TRUNCATE:
            cut_after = record.index if cut_after is None else min(cut_after, record.index)
        elif cut_after is not None and record.index > cut_after:
            superseded[position] = True
    return superseded


def _replay(log: PartitionLog, records: Sequence[JournalRecord]) -> int:
    done = 0
    for record, superseded in zip(records, _superseded(records), strict=True):
        if record.kind == TRUNCATE:
            if record.index < log.last_index:
                log.truncate_after(max(record.index, log.snapshot_index, log.commit_index))
            continue
        index = record.index
        if superseded or index <= max(log.snapshot_index, log.commit_index):
            # Cut off later, covered by a snapshot, or committed (the log's entry there is
            # final: an older record at that index was replaced before it committed).
            continue
        if index <= log.last_index:
            if log.epoch_at(index) == record.epoch:
                continue  # the log kept it
            log.truncate_after(index - 1)
        if index != log.last_index + 1:
            raise StorageDamaged(
                f"journal replay: record {index} of partition {record.partition} does not "
                f"follow the log's end {log.last_index}",
                path=log.path,
            )
        if record.epoch > log.epoch:
            log.set_epoch(record.epoch)
        log.append(record.epoch, record.record)
        done += 1
    return done


def open_node_journal(
    fs: FileLayer,
    path: str,
    open_log: Callable[[int, int | None], PartitionLog | None],
    wipe_all: Callable[[], None],
    *,
    checkpoint_bytes: int = CHECKPOINT_BYTES_DEFAULT,
    keep: Callable[[int, PartitionLog], None] | None = None,
    open_logs: OpenLogs | None = None,
) -> tuple[Journal, dict[int, int]]:
    """What a node (or a simulated one) does at start: open its journal and replay it into
    the partition logs (see ``Journal.recover``; ``keep`` receives the logs it opened,
    open). A journal damaged before its tail leaves no log trustworthy: ``wipe_all()`` must
    then clear every partition log (they are refilled from their primaries) and the journal
    starts empty. Returns the journal and what ``recover`` replayed."""
    try:
        journal = Journal.open(fs, path, checkpoint_bytes=checkpoint_bytes)
    except StorageDamaged:
        PartitionLog.wipe(fs, path)
        wipe_all()
        return Journal.open(fs, path, checkpoint_bytes=checkpoint_bytes), {}
    try:
        return journal, journal.recover(open_log, keep, open_logs=open_logs)
    except BaseException:
        journal.log.close()
        raise
