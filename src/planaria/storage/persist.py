"""Applying a Ready's ``Persist`` effects to a partition log, and storing and loading replica
state snapshots: one copy, used by the node and by the simulator (which runs it on its
simulated disk).

The core promises three things about what it asks to persist, and this is where they are
enforced, so a broken promise stops the write instead of corrupting the log:

- a replica's persisted epoch never decreases (``epoch-decreased``);
- nothing at or below the persisted commit index is ever truncated (``truncated-committed``);
- appended entries continue the log without a gap (``persist-order``).

A broken rule raises :class:`PersistRuleBroken` (an ``InternalError``: our bug) before
anything of that ``Persist`` is written; the node then rebuilds the replica from disk, the
simulator reports the rule as a violation. Making the writes durable is the caller's part
(``PartitionLog.sync_if_due`` or a ``GroupCommitter``).
"""

from __future__ import annotations

from collections.abc import Sequence

from planaria.core.codec import decode_entry, decode_state, encode_entry, encode_state
from planaria.core.messages import Entry, Persist, ReplicaSnapshot, SnapshotChunk
from planaria.core.transfer import CHECKSUM_BYTES, SnapshotFile
from planaria.errors import InternalError
from planaria.storage.errors import StorageDamaged, StorageMissing, storage_error_from_os
from planaria.storage.format import Snapshot, decode_snapshot
from planaria.storage.fs import join
from planaria.storage.log import PartitionLog

__all__ = [
    "INCOMING_SNAPSHOT",
    "RECEIVE_SYNC_BYTES",
    "PersistRuleBroken",
    "install_received",
    "receive_chunk",
    "recovered_state",
    "save_state",
    "snapshot_file",
    "write_persists",
]

# Where a snapshot being received is written, in the log's directory (a ``.tmp`` file:
# the log's recovery removes it, so a crash mid-transfer leaves nothing behind).
INCOMING_SNAPSHOT = "incoming-snapshot.tmp"
# A received snapshot is fsynced a slice of this many bytes at a time (see receive_chunk).
RECEIVE_SYNC_BYTES = 256 * 1024


class PersistRuleBroken(InternalError):
    """The core asked to persist something its own rules forbid (see the module docstring)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def write_persists(log: PartitionLog, persists: Sequence[Persist]) -> int:
    """Apply ``persists`` (all for this log's partition) in order, without syncing; returns
    the number of entries appended. Consecutive appends go to the log in one write (a
    group commit's stage holds one persist per client write): only an epoch change or a
    truncation, which must follow the appends before them, or a broken rule, which must find
    the persists before it written, writes what was gathered first."""
    appended = 0
    gathered: list[tuple[int, bytes]] = []  # entries of the persists so far, not yet written
    end_gathered = log.last_index  # the log's end once they are
    commit = log.commit_index  # the commit index recorded once they are
    for persist in persists:
        where = f"p{persist.partition}"
        if persist.epoch < log.epoch:
            _write_gathered(log, gathered, commit)
            raise PersistRuleBroken(
                "epoch-decreased", f"{where} persists epoch {persist.epoch} after {log.epoch}"
            )
        end = end_gathered  # the log's end once this persist's truncation is done
        truncate_after = persist.truncate_after
        if truncate_after is not None and truncate_after < end:
            if truncate_after < commit:
                _write_gathered(log, gathered, commit)
                raise PersistRuleBroken(
                    "truncated-committed",
                    f"{where} truncates after {truncate_after} below its persisted "
                    f"commit index {commit}",
                )
            end = truncate_after
        if persist.entries and persist.entries[0].index != end + 1:
            _write_gathered(log, gathered, commit)
            raise PersistRuleBroken(
                "persist-order",
                f"{where} appends index {persist.entries[0].index} after log end {end}",
            )
        if persist.epoch > log.epoch or end < end_gathered:
            _write_gathered(log, gathered, commit)
            gathered = []
            if persist.epoch > log.epoch:
                log.set_epoch(persist.epoch)  # durable at once (atomic meta write)
            if end < log.last_index:
                log.truncate_after(end)
        if persist.entries:
            gathered += [(e.epoch, encode_entry(e)) for e in persist.entries]
            appended += len(persist.entries)
        end_gathered = end + len(persist.entries)
        commit = max(commit, min(persist.commit_index, end_gathered))
    _write_gathered(log, gathered, commit)
    return appended


def _write_gathered(log: PartitionLog, gathered: list[tuple[int, bytes]], commit: int) -> None:
    """Append the gathered entries, then record ``commit`` (at most their end)."""
    if gathered:
        log.append_many(gathered)
    if commit > log.commit_index:
        log.set_commit_index(commit)


def save_state(
    log: PartitionLog, snapshot: ReplicaSnapshot, *, keep_after: int | None = None
) -> None:
    """Serialise a replica's state snapshot and store it durably in ``log`` (atomically,
    then compacting the log behind the snapshots kept, keeping every record after
    ``keep_after``). Blocking and CPU-bound: a node runs it off its event loop;
    ``snapshot`` is immutable, so the replica goes on meanwhile."""
    stored = Snapshot(snapshot.index, snapshot.epoch, encode_state(snapshot))
    log.save_snapshot(stored, keep_after=keep_after)


def recovered_state(
    log: PartitionLog, *, entries_before_snapshot: int | None = None
) -> tuple[ReplicaSnapshot | None, list[Entry]]:
    """What a replica is rebuilt from: the log's snapshot (None: none) and the entries its
    files still hold: every one after the snapshot, and before it (kept for peers that lag)
    all of them, or at most ``entries_before_snapshot``. Compaction drops whole segments
    only, so the files may hold a segment's worth of entries the snapshot covers: decoding
    them all made a restart's time grow with the writes made, not the data held."""
    stored = log.snapshot
    snapshot = None if stored is None else decode_state(stored.index, stored.epoch, stored.data)
    first = log.first_index
    if entries_before_snapshot is not None:
        first = max(first, log.snapshot_index + 1 - entries_before_snapshot)
    try:
        records = list(log.entries(first))
    except StorageDamaged as damage:
        if first > log.snapshot_index:
            raise
        # A record the snapshot covers, kept for lagging peers, failed its checksum (those
        # are checked when read: ``format.scan_records``): the state is whole without it,
        # and a peer that needs it gets the snapshot instead. Said in ``recovery``.
        log.recovery.covered_damage = str(damage)
        records = list(log.entries(log.snapshot_index + 1))
    entries = [decode_entry(e.epoch, e.index, e.record) for e in records]
    return snapshot, entries


def snapshot_file(log: PartitionLog) -> SnapshotFile | None:
    """The log's latest stored snapshot file as a transfer sends it (None: it has none);
    its checksum is the file's own CRC32 trailer. StorageMissing if it was just replaced."""
    stored = log.snapshot
    if stored is None:
        return None
    size = log.snapshot_file_bytes(stored.index)
    trailer = log.read_snapshot_file(stored.index, size - CHECKSUM_BYTES, CHECKSUM_BYTES)
    return SnapshotFile(stored.index, stored.epoch, size, int.from_bytes(trailer, "little"))


def receive_chunk(log: PartitionLog, chunk: SnapshotChunk, *, restart: bool) -> None:
    """Write a received chunk at the end of the log's incoming snapshot file (emptied
    first when ``restart``); StorageMissing if the file no longer holds what came before
    (a reopened log removed it): the transfer must start over.

    Written behind: fsynced a slice of at most ``RECEIVE_SYNC_BYTES`` at a time, so that a
    refill never leaves more than that of dirty pages. Left to the page cache, a snapshot's
    tens of MB were flushed at once by the install's fsync, and on ext4 (data=ordered)
    every other fsync on the disk (the foreground writes' group commits, other nodes'
    too) waited for that flush in the same journal commit (docs/BENCHMARKS.md)."""
    path = join(log.path, INCOMING_SNAPSHOT)
    try:
        handle = log.fs.open_append(path, create=True)
        try:
            if restart:
                handle.truncate(0)
            if handle.size() != chunk.offset:
                raise StorageMissing(
                    f"incoming snapshot holds {handle.size()} bytes, chunk at {chunk.offset}",
                    path=path,
                )
            for start in range(0, len(chunk.data), RECEIVE_SYNC_BYTES):
                handle.append(chunk.data[start : start + RECEIVE_SYNC_BYTES])
                handle.fsync()
        finally:
            handle.close()
    except OSError as exc:  # a disk error: the transfer starts over (as for StorageMissing)
        raise storage_error_from_os(exc, "writing a received chunk", path) from exc


def install_received(log: PartitionLog, chunk: SnapshotChunk) -> bool:
    """Install the snapshot whose last chunk (``chunk``) was just received and verified:
    check the incoming file again as it is on disk (its size, its CRC, its layout, and that
    it is the announced snapshot), record the sender's epoch, and replace the log by the
    snapshot atomically (``PartitionLog.install_snapshot``), the file itself fsynced and
    renamed into place: the bytes are not decoded into state nor written a second time.
    StorageDamaged if the file does not hold the announced snapshot. False (the file
    removed, the log untouched) if the log already stands past the snapshot: a node writes
    the last chunk and installs it in steps of its disk thread, and its replica may have
    moved on meanwhile (rebuilt from its disk, caught up, snapshotted): it holds that state
    already, as ``SnapshotReceiver.on_chunk`` answers when a chunk arrives that late."""
    path = join(log.path, INCOMING_SNAPSHOT)
    if chunk.snapshot_index < max(log.snapshot_index, log.commit_index):
        try:
            log.fs.remove(path)
        except OSError as exc:
            raise storage_error_from_os(exc, "removing the received snapshot", path) from exc
        return False
    try:
        size = log.fs.size(path)
        data = log.fs.read(path, 0, size) if size == chunk.total_bytes else b""
    except OSError as exc:
        raise storage_error_from_os(exc, "reading the received snapshot", path) from exc
    if size != chunk.total_bytes:
        raise StorageDamaged(
            f"received snapshot holds {size} bytes, expected {chunk.total_bytes}", path=path
        )
    decoded = decode_snapshot(data)
    if isinstance(decoded, str):
        raise StorageDamaged(f"received snapshot: {decoded}", path=path)
    if (decoded.index, decoded.epoch) != (chunk.snapshot_index, chunk.snapshot_epoch):
        raise StorageDamaged(
            f"received snapshot is at ({decoded.index}, {decoded.epoch}), expected "
            f"({chunk.snapshot_index}, {chunk.snapshot_epoch})",
            path=path,
        )
    if chunk.epoch > log.epoch:
        log.set_epoch(chunk.epoch)
    log.install_snapshot(decoded, from_file=INCOMING_SNAPSHOT)
    return True
