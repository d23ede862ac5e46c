"""``PartitionLog``: one partition's durable log of (epoch, index, record), with snapshots.

Pure logic over a ``FileLayer`` (no os, time, threading or asyncio), so the simulator runs this
very code on ``SimFS``. Time comes in as ``now_ms`` arguments.

Directory layout::

    LOCK                          held while the log is open (two processes cannot share it)
    meta                          current epoch + commit point (replaced atomically)
    snap-<index>.snap             the latest snapshots (each written atomically), newest
                                  first; an older one is the fallback for a damaged newer one
    seg-<first index>.log         segments, each a header then records (see ``format``)

Writing: ``append``/``append_many`` write records (not yet durable); ``sync()`` makes them
durable; ``sync_if_due(now_ms)`` applies the fsync policy. ``GroupCommitter`` (asyncio) drives
both for a node. Any write or fsync error puts the log in a refusing state: every later write
raises ``StorageFailed`` until the log is reopened, because after a failed fsync the page cache
no longer tells the truth about the disk.

Compaction: ``save_snapshot`` seals the active segment when the snapshot covers part of it and
removes every whole segment behind the oldest snapshot kept (``snapshots_kept``, default 2), so
disk use follows the live data: the kept snapshots plus the log since the oldest of them.

Recovery on open: load the newest snapshot that passes its checks (a damaged one is removed and
reported, and the next older one is tried: the log behind it is still there; none left that
the log continues from is ``StorageDamaged``), scan every segment, check every record's checksum,
index and epoch order (in a sealed segment the snapshot wholly covers, the framing only: its
records are checked when read, see ``format.scan_records``). A bad record in the last
segment with no valid record after it is a torn tail (a write cut short by a crash): it is
cut off and reported in ``recovery``. Anything else
(a bad record followed by good ones, a bad older segment, a gap, a bad snapshot or meta file)
raises ``StorageDamaged``: the replica is out of sync and must be refilled from the primary
(``PartitionLog.wipe`` clears it for that).

The persisted commit point may lag the in-memory one (it is written by ``persist_meta``, on
snapshots and on close): a commit point only grows, and a replica that restarts with an older
one learns the newer one from its primary, so lagging is safe where writing it on every
commit would cost two more fsyncs per batch.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from planaria.errors import UsageError
from planaria.storage.errors import (
    StorageDamaged,
    StorageError,
    StorageFailed,
    StorageFull,
    StorageMissing,
    storage_error_from_os,
)
from planaria.storage.format import (
    RECORD_HEADER,
    SEGMENT_HEADER,
    Entry,
    Meta,
    Snapshot,
    decode_meta,
    decode_segment_header,
    decode_snapshot,
    encode_meta,
    encode_record,
    encode_segment_header,
    encode_snapshot,
    encode_snapshot_parts,
    find_record_after,
    scan_records,
)
from planaria.storage.fs import AppendFile, FileLayer, FileLock, join, write_atomic

if TYPE_CHECKING:
    from planaria.storage.journal import Journal

__all__ = ["META_NAME", "FsyncPolicy", "PartitionLog", "RecoveryReport", "snapshot_name"]

META_NAME = "meta"
SEGMENT_BYTES_DEFAULT = 64 * 1024 * 1024
RECORD_BYTES_MAX_DEFAULT = 16 * 1024 * 1024
PREALLOCATE_BYTES_DEFAULT = 1024 * 1024
_READ_BYTES_DEFAULT = 1024 * 1024


@dataclass(frozen=True)
class FsyncPolicy:
    """When appended records are fsynced.

    ``always`` (default): before any acknowledgement (the group committer batches many writes
    into one fsync). ``interval``: at most every ``interval_ms``; a crash may lose that much.
    ``never``: only on ``sync()``, snapshots, segment rolls and close; the OS decides otherwise.
    """

    mode: Literal["always", "interval", "never"] = "always"
    interval_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("always", "interval", "never"):
            raise UsageError(f"unknown fsync policy {self.mode!r}; use always, interval or never")
        if self.mode == "interval" and not self.interval_ms > 0:
            raise UsageError(f"fsync interval must be > 0 ms, got {self.interval_ms}")

    @classmethod
    def parse(cls, text: str) -> FsyncPolicy:
        """``"always"``, ``"never"`` or ``"interval:<ms>"``."""
        mode, _, interval = text.partition(":")
        if mode == "interval":
            try:
                return cls("interval", float(interval))
            except ValueError:
                raise UsageError(f"bad fsync interval in {text!r}; use interval:<ms>") from None
        if interval:
            raise UsageError(f"fsync policy {mode!r} takes no argument")
        return cls(mode)  # type: ignore[arg-type]  # validated in __post_init__


@dataclass
class RecoveryReport:
    """What opening the log found and repaired."""

    records: int = 0
    segments: int = 0
    snapshot_index: int = 0
    torn_tail_bytes: int = 0
    torn_tail_reason: str | None = None
    removed_files: list[str] = field(default_factory=list)
    # Snapshots that failed their checks (removed; an older one was used): "name: why".
    damaged_snapshots: list[str] = field(default_factory=list)
    # Set when the persisted commit point was beyond the recovered log (possible only with
    # fsync policy interval/never): the log end it was clamped to.
    commit_index_clamped_from: int | None = None
    # Sealed segments the snapshot covers, whose records' checksums are checked when read,
    # not at the opening (``format.scan_records(checksums=False)``).
    segments_unchecked: int = 0
    # Set by ``persist.recovered_state`` when one of those records failed its checksum as it
    # was read for the catch-up entries kept before the snapshot (left out): why.
    covered_damage: str | None = None


@dataclass
class _Segment:
    first_index: int
    path: str
    offsets: array[int]
    end: int

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1


def _segment_name(first_index: int) -> str:
    return f"seg-{first_index:020d}.log"


# A snapshot file written ahead of ``save_snapshot`` (``write_snapshot_file``): a name of
# its own, so it never meets the temporary file of another snapshot at the same index (an
# installed one); ``.tmp``, so recovery removes it.
_PREWRITTEN_SUFFIX = ".pre.tmp"
_PREWRITE_SYNC_BYTES = 256 * 1024


def snapshot_name(index: int) -> str:
    """The file name of the stored snapshot at ``index`` (restores write it too)."""
    return f"snap-{index:020d}.snap"


def _all_zero(buf: memoryview) -> bool:
    return bytes(buf).count(0) == len(buf)


def _parse_index(name: str, prefix: str, suffix: str) -> int | None:
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    digits = name[len(prefix) : len(name) - len(suffix)]
    return int(digits) if digits.isdigit() else None


class PartitionLog:
    """An open partition log. Create with ``PartitionLog.open``; close with ``close()``."""

    def __init__(
        self,
        fs: FileLayer,
        *,
        path: str,
        lock: FileLock,
        policy: FsyncPolicy,
        segment_bytes: int,
        record_bytes_max: int,
        preallocate_bytes: int,
        snapshots_kept: int = 2,
    ) -> None:
        self.fs = fs
        self.path = path
        self.policy = policy
        self.recovery = RecoveryReport()
        self._lock: FileLock | None = lock
        self._segment_bytes = segment_bytes
        self._record_bytes_max = record_bytes_max
        self._preallocate_bytes = preallocate_bytes
        self._segments: list[_Segment] = []
        self._segment_firsts: list[int] = []
        self._epochs: list[tuple[int, int]] = []  # (epoch, first index of that epoch)
        self._active: AppendFile | None = None
        self._meta = Meta()
        self._meta_dirty = False
        self._snapshot: Snapshot | None = None
        self._snapshots_kept = snapshots_kept
        self._snapshot_indexes: list[int] = []  # the snapshot files on disk, ascending
        self._durable_index = 0
        self._dir_dirty = False
        self._last_sync_ms: float | None = None
        self._failure: StorageFailed | None = None
        self._journal: Journal | None = None
        self._journal_partition = 0
        self._files_dirty = False  # records written that only the journal made durable
        self._unsynced_after: int | None = None  # recovery: see ``open``

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        fs: FileLayer,
        path: str,
        *,
        policy: FsyncPolicy | None = None,
        create: bool = True,
        segment_bytes: int = SEGMENT_BYTES_DEFAULT,
        record_bytes_max: int = RECORD_BYTES_MAX_DEFAULT,
        preallocate_bytes: int = PREALLOCATE_BYTES_DEFAULT,
        unsynced_after: int | None = None,
        snapshots_kept: int = 2,
    ) -> PartitionLog:
        """Lock ``path``, recover snapshot + log, and return the open log.

        Raises ``StorageMissing`` (no such directory and ``create`` is false, or no disk),
        ``StorageReadOnly``, ``StorageLocked`` (another process has it open) or
        ``StorageDamaged`` (corruption before the tail: refill this replica).

        ``preallocate_bytes``: segments grow by this many zero bytes ahead of the writes, so an
        fsync rewrites allocated blocks instead of committing a file-size change (about a third
        cheaper on ext4); 0 turns it off. Zeros after the last record are a clean end.

        ``unsynced_after``: records after this index were made durable by a journal, not by
        this log's files (see ``planaria.storage.journal``): damage among them in the last
        segment is a torn tail, cut off for the journal to replay, not ``StorageDamaged``.

        ``snapshots_kept``: how many snapshot files stay on disk (the log is kept from the
        oldest on): more than one lets recovery fall back from a damaged newest snapshot.
        """
        if segment_bytes <= SEGMENT_HEADER.size:
            raise UsageError(f"segment_bytes must exceed {SEGMENT_HEADER.size}")
        if snapshots_kept < 1:
            raise UsageError(f"snapshots_kept must be >= 1, got {snapshots_kept}")
        try:
            if not fs.is_dir(path):
                if not create:
                    raise StorageMissing("data directory does not exist", path=path)
                fs.makedirs(path)
            lock = fs.lock(path)
        except OSError as exc:
            raise storage_error_from_os(exc, "opening the data directory", path) from exc
        log = cls(
            fs,
            path=path,
            lock=lock,
            policy=policy or FsyncPolicy(),
            segment_bytes=segment_bytes,
            record_bytes_max=record_bytes_max,
            preallocate_bytes=max(0, preallocate_bytes),
            snapshots_kept=snapshots_kept,
        )
        log._unsynced_after = unsynced_after
        try:
            log._recover()
        except BaseException:
            log._release()
            raise
        return log

    @classmethod
    def wipe(cls, fs: FileLayer, path: str) -> None:
        """Delete a (damaged) log's files so the replica can be refilled from its primary."""
        try:
            lock = fs.lock(path)
            try:
                for name in fs.listdir(path):
                    if name != "LOCK":
                        fs.remove(join(path, name))
                fs.fsync_dir(path)
            finally:
                lock.release()
        except OSError as exc:
            raise storage_error_from_os(exc, "wiping the log", path) from exc

    def _recover(self) -> None:
        try:
            self._recover_files()
        except OSError as exc:
            raise storage_error_from_os(exc, "recovering the log", self.path) from exc

    def _recover_files(self) -> None:
        fs, report = self.fs, self.recovery
        names = fs.listdir(self.path)
        for name in names:
            if name.endswith(".tmp"):
                self._remove(name)
        if META_NAME in names:
            meta = decode_meta(fs.read(self._file(META_NAME), 0, fs.size(self._file(META_NAME))))
            if isinstance(meta, str):
                raise StorageDamaged(meta, path=self._file(META_NAME))
            self._meta = meta
        snapshots = sorted(
            (index, name)
            for name in names
            if (index := _parse_index(name, "snap-", ".snap")) is not None
        )
        while snapshots:
            index, name = snapshots.pop()
            snapshot = decode_snapshot(fs.read(self._file(name), 0, fs.size(self._file(name))))
            if not isinstance(snapshot, str) and snapshot.index != index:
                snapshot = f"snapshot holds index {snapshot.index}"
            if isinstance(snapshot, str):
                if not snapshots:
                    raise StorageDamaged(snapshot, path=self._file(name))
                # An older one is still there, with the log behind it: fall back to it.
                report.damaged_snapshots.append(f"{name}: {snapshot}")
                self._remove(name)
                continue
            self._snapshot = snapshot
            report.snapshot_index = index
            self._snapshot_indexes = [older for older, _ in snapshots] + [index]
            break
        snapshot_index = self.snapshot_index
        segment_names = sorted(
            (first, name)
            for name in names
            if (first := _parse_index(name, "seg-", ".log")) is not None
        )
        last_epoch = 0
        for position, (first, name) in enumerate(segment_names):
            is_last = position == len(segment_names) - 1
            # Sealed, and every record in it at or below the snapshot: framing checked now,
            # checksums when read (see ``scan_records``).
            covered = not is_last and segment_names[position + 1][0] - 1 <= snapshot_index
            segment, last_epoch = self._recover_segment(
                first, name, is_last, last_epoch, covered=covered
            )
            if segment is None:
                continue
            if self._segments and segment.first_index != self._segments[-1].last_index + 1:
                if self._segments[-1].last_index <= snapshot_index:
                    # Covered by the snapshot and cut off from the rest: left over from a
                    # snapshot install. (Covered segments that connect stay: the tail kept
                    # for catch-up; the next compaction decides.)
                    self._drop_recovered_segments()
                    # Scanned again on its own: its first epoch was taken for the dropped
                    # segments' last one when equal, and named by nobody.
                    segment, last_epoch = self._recover_segment(first, name, is_last, 0)
                    if segment is not None:
                        self._segments.append(segment)
                    continue
                raise StorageDamaged(
                    f"gap: segment starts at {segment.first_index}, previous ends at "
                    f"{self._segments[-1].last_index}",
                    path=segment.path,
                )
            self._segments.append(segment)
        if self._segments and self._segments[-1].last_index < snapshot_index:
            self._drop_recovered_segments()  # an install cut short: the snapshot has it all
        if self._segments and self._segments[0].first_index > snapshot_index + 1:
            # (A fallback snapshot the log does not reach back to lands here too.)
            raise StorageDamaged(
                f"log starts at {self._segments[0].first_index} but the snapshot ends at "
                f"{snapshot_index}",
                path=self.path,
            )
        if self._dir_dirty:
            fs.fsync_dir(self.path)
            self._dir_dirty = False
        if not self._segments:
            self._create_segment(snapshot_index + 1)
        else:
            self._active = fs.open_append(self._segments[-1].path, create=False)
            self._active.seek(self._segments[-1].end)
        self._segment_firsts = [s.first_index for s in self._segments]
        if self._snapshot is not None and (
            not self._epochs or self._epochs[0][1] > self._snapshot.index
        ):
            self._epochs.insert(0, (self._snapshot.epoch, self._snapshot.index))
        self._durable_index = self.last_index
        if self._meta.commit_index > self.last_index:
            report.commit_index_clamped_from = self._meta.commit_index
            self._meta = Meta(self._meta.epoch, self.last_index)
            self._meta_dirty = True
        if self._meta.epoch < self.last_epoch:
            self._meta = Meta(self.last_epoch, self._meta.commit_index)
            self._meta_dirty = True
        report.records = self.last_index - self.first_index + 1
        report.segments = len(self._segments)

    def _drop_recovered_segments(self) -> None:
        """Remove the segments recovered so far (a snapshot covers them) and the epochs
        they recorded (left behind, they named the epoch of the snapshot's index, and of
        the entries after it, wrongly)."""
        for segment in self._segments:
            self._remove(segment.path.rsplit("/", 1)[-1])
        self._segments = []
        self._epochs = []

    def _recover_segment(
        self, first: int, name: str, is_last: bool, last_epoch: int, *, covered: bool = False
    ) -> tuple[_Segment | None, int]:
        path = self._file(name)
        buf = memoryview(self.fs.read(path, 0, self.fs.size(path)))
        header_first = decode_segment_header(buf)
        if header_first is None:
            if is_last and len(buf) <= SEGMENT_HEADER.size:
                # The crash hit while the segment was being created: nothing was in it.
                self.recovery.torn_tail_bytes += len(buf)
                self.recovery.torn_tail_reason = "segment header cut short"
                self._remove(name)
                return None, last_epoch
            raise StorageDamaged("bad segment header", path=path, offset=0)
        if header_first != first:
            raise StorageDamaged(f"segment header says it starts at {header_first}", path=path)
        scan = scan_records(buf, SEGMENT_HEADER.size, first, last_epoch, checksums=not covered)
        if covered:
            self.recovery.segments_unchecked += 1
            if scan.error is not None:  # framing alone is not the last word
                scan = scan_records(buf, SEGMENT_HEADER.size, first, last_epoch)
        if scan.error is not None and _all_zero(buf[scan.end :]):
            pass  # preallocated space: a clean end
        elif scan.error is not None:
            bad_index = first + len(scan.offsets)
            if not is_last:
                raise StorageDamaged(
                    f"{scan.error} (not the last segment)", path=path, offset=scan.end
                )
            journaled = self._unsynced_after is not None and bad_index > self._unsynced_after
            if not journaled and find_record_after(buf, scan.end, bad_index) is not None:
                raise StorageDamaged(
                    f"{scan.error}, with valid records after it", path=path, offset=scan.end
                )
            self.recovery.torn_tail_bytes += len(buf) - scan.end
            self.recovery.torn_tail_reason = f"{scan.error} at byte {scan.end} of {name}"
            handle = self.fs.open_append(path, create=False)
            try:
                handle.truncate(scan.end)
                handle.fsync()
            finally:
                handle.close()
        self._epochs.extend(scan.epochs)
        if scan.epochs:
            last_epoch = scan.epochs[-1][0]
        offsets = array("Q", scan.offsets)
        return _Segment(first, path, offsets, scan.end), last_epoch

    # ------------------------------------------------------------------ state

    @property
    def first_index(self) -> int:
        """The first index still in the log (records before it live only in the snapshot)."""
        return self._segments[0].first_index

    @property
    def last_index(self) -> int:
        """The last index appended (0 for an empty log without a snapshot)."""
        return self._segments[-1].last_index

    @property
    def last_epoch(self) -> int:
        return self._epochs[-1][0] if self._epochs else 0

    @property
    def durable_index(self) -> int:
        """Every record up to here is on disk."""
        return self._durable_index

    @property
    def epoch(self) -> int:
        """The current epoch as persisted by ``set_epoch``."""
        return self._meta.epoch

    @property
    def commit_index(self) -> int:
        return self._meta.commit_index

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def snapshot_index(self) -> int:
        return self._snapshot.index if self._snapshot is not None else 0

    @property
    def active_segment_path(self) -> str | None:
        """The file appends go to (None while a snapshot install replaces the segments).
        Read from another thread (a write-behind hint), it may be a roll behind."""
        segments = self._segments
        return segments[-1].path if segments else None

    @property
    def log_entries(self) -> int:
        """How many records the log's files hold (from ``first_index`` on)."""
        return self.last_index - self.first_index + 1

    @property
    def log_bytes(self) -> int:
        """The bytes of records and segment headers the log's files hold."""
        return sum(segment.end for segment in self._segments)

    def bytes_after(self, index: int) -> int:
        """The bytes of the records after ``index`` (from the log's start if before it)."""
        total = 0
        for segment in reversed(self._segments):
            if segment.last_index <= index:
                break
            position = index + 1 - segment.first_index
            start = segment.offsets[position] if position > 0 else SEGMENT_HEADER.size
            total += segment.end - start
        return total

    def _compaction_floor(self) -> int:
        """Whole segments up to here may go: the oldest kept snapshot covers them."""
        return self._snapshot_indexes[0] if self._snapshot_indexes else 0

    @property
    def journal(self) -> Journal | None:
        return self._journal

    @property
    def closed(self) -> bool:
        return self._lock is None

    @property
    def failure(self) -> StorageFailed | None:
        """Why the log refuses writes, or None while it is healthy."""
        return self._failure

    def holds(self, index: int, epoch: int) -> bool:
        """Whether the log has the record (``index``, ``epoch``) past its snapshot, hence (log
        matching) every record up to it as the replica that wrote them has them. A replica's
        memory may run ahead of its log (persists in flight): an entry it applied may not be
        here yet, or an older epoch's record may still stand at its index."""
        return (
            max(self.snapshot_index + 1, self.first_index) <= index <= self.last_index
            and self.epoch_at(index) == epoch
        )

    def epoch_at(self, index: int) -> int:
        """The epoch of the record at ``index`` (or of the snapshot, at its index)."""
        if index == 0:
            return 0
        if not self.first_index <= index <= self.last_index and index != self.snapshot_index:
            raise UsageError(f"index {index} is not in the log ({self._range()})")
        position = bisect.bisect_right(self._epochs, index, key=lambda pair: pair[1]) - 1
        return self._epochs[position][0] if position >= 0 else 0

    def last_index_in_epoch(self, epoch: int) -> int:
        """The last index whose epoch is <= ``epoch`` (where a reconciling replica truncates)."""
        position = bisect.bisect_right(self._epochs, epoch, key=lambda pair: pair[0])
        if position == len(self._epochs):
            return self.last_index
        return self._epochs[position][1] - 1

    def _range(self) -> str:
        return f"{self.first_index}..{self.last_index}"

    # ------------------------------------------------------------------ writing

    def append(self, epoch: int, record: bytes) -> int:
        """Write one record (not yet durable); returns its index."""
        return self.append_many(((epoch, record),))

    def append_many(self, entries: Sequence[tuple[int, bytes]]) -> int:
        """Write records in one go (not yet durable); returns the last index."""
        self._check_writable()
        last_epoch, index = self.last_epoch, self.last_index
        total = 0
        for epoch, record in entries:
            if not isinstance(record, bytes):
                raise UsageError(f"a record must be bytes, not {type(record).__name__}")
            if len(record) > self._record_bytes_max:
                raise UsageError(f"record of {len(record)} bytes > {self._record_bytes_max}")
            if not last_epoch <= epoch <= self._meta.epoch:
                raise UsageError(
                    f"record epoch {epoch} must be >= the last record's ({last_epoch}) and <= "
                    f"the current epoch ({self._meta.epoch}; raise it with set_epoch first)"
                )
            last_epoch = epoch
            total += RECORD_HEADER.size + len(record)
        if not entries:
            return index
        active = self._segments[-1]
        if active.offsets and active.end + total > self._segment_bytes:
            self._roll_segment()
            active = self._segments[-1]
        parts = []
        new_epochs = []
        offsets = []
        offset = active.end
        last_epoch = self.last_epoch
        for epoch, record in entries:
            index += 1
            encoded = encode_record(epoch, index, record)
            parts.append(encoded)
            offsets.append(offset)
            offset += len(encoded)
            if epoch != last_epoch:
                new_epochs.append((epoch, index))
                last_epoch = epoch
        self._write(active, b"".join(parts))
        first_new = self.last_index + 1
        active.offsets.extend(offsets)
        active.end = offset
        self._epochs.extend(new_epochs)
        if self._journal is not None:
            self._files_dirty = True
            try:
                self._journal.add_entries(self._journal_partition, first_new, entries)
            except StorageError as exc:
                self._fail(exc)  # what is written here is durable only through the journal
                raise
        return index

    def _write(self, segment: _Segment, data: bytes) -> None:
        assert self._active is not None
        needed = segment.end + len(data)
        if self._preallocate_bytes and needed > self._active.size():
            self._preallocate(segment, needed)
        try:
            self._active.append(data)
        except OSError as exc:
            error = storage_error_from_os(exc, "appending to the log", segment.path)
            try:
                # Leave nothing half-written: cut back to the last good record.
                self._active.truncate(segment.end)
            except OSError as truncate_exc:
                error.add_note(f"cutting back to byte {segment.end} also failed: {truncate_exc}")
            self._fail(error)
            raise error from exc

    def _preallocate(self, segment: _Segment, needed: int) -> None:
        assert self._active is not None
        allocated = self._active.size()
        target = max(needed, min(needed + self._preallocate_bytes, self._segment_bytes))
        try:
            self._active.preallocate(target)
        except OSError as exc:
            error = storage_error_from_os(exc, "preallocating a segment", segment.path)
            if not isinstance(error, StorageFull):
                self._fail(error)
                raise error from exc
            # Best effort: give the space back and let the write itself meet the full disk.
            try:
                self._active.truncate(max(allocated, segment.end))
            except OSError as truncate_exc:
                error = storage_error_from_os(truncate_exc, "trimming a segment", segment.path)
                self._fail(error)
                raise error from truncate_exc

    def _trim(self) -> None:
        """Give back the preallocated space after the last record (and make it durable)."""
        active = self._active
        segment = self._segments[-1]
        if active is None or active.size() <= segment.end:
            return
        try:
            active.truncate(segment.end)
            active.fsync()
        except OSError as exc:
            error = storage_error_from_os(exc, "trimming a segment", segment.path)
            self._fail(error)
            raise error from exc

    def sync(self, now_ms: float | None = None) -> None:
        """Make every appended record durable: one fsync of this log's files, or, with a
        journal attached, of the node's journal (one fsync for every partition)."""
        self._check_writable()
        if now_ms is not None:
            self._last_sync_ms = now_ms
        if self._journal is None:
            self.sync_files()
            return
        try:
            self._journal.sync()
        except StorageError as exc:
            self._fail(exc)
            raise
        self._durable_index = self.last_index

    def sync_files(self) -> None:
        """fsync this log's own files (plus the directory's if it changed)."""
        self._check_writable()
        target = self.last_index
        if target == self._durable_index and not self._dir_dirty and not self._files_dirty:
            return
        assert self._active is not None
        try:
            self._active.fsync()
            if self._dir_dirty:
                self.fs.fsync_dir(self.path)
                self._dir_dirty = False
        except OSError as exc:
            error = storage_error_from_os(exc, "fsync of the log", self._segments[-1].path)
            self._fail(error)
            raise error from exc
        self._durable_index = target
        self._files_dirty = False

    def attach_journal(self, journal: Journal, partition: int) -> None:
        """From now on, journal every append and truncation in ``journal`` (the node's), and
        let ``sync`` make them durable through it (see ``planaria.storage.journal``)."""
        self._check_writable()
        journal.attach(partition, self)
        self._journal = journal
        self._journal_partition = partition

    def sync_due(self, now_ms: float) -> bool:
        """Whether the fsync policy wants a sync now."""
        if self._durable_index == self.last_index or self.policy.mode == "never":
            return False
        if self.policy.mode == "always" or self._last_sync_ms is None:
            return True
        return now_ms - self._last_sync_ms >= self.policy.interval_ms

    def sync_if_due(self, now_ms: float) -> bool:
        """Apply the fsync policy; True if it synced."""
        if self._last_sync_ms is None:
            self._last_sync_ms = now_ms
        if not self.sync_due(now_ms):
            return False
        self.sync(now_ms)
        return True

    def _roll_segment(self) -> None:
        # The sealed segment is synced first: recovery treats damage in any segment but the
        # last as real damage, never as a torn tail.
        self.sync_files()
        self._trim()
        self._create_segment(self.last_index + 1)
        self._segment_firsts.append(self._segments[-1].first_index)

    def _create_segment(self, first_index: int) -> None:
        name = _segment_name(first_index)
        path = self._file(name)
        if self._active is not None:
            self._active.close()
            self._active = None
        try:
            handle = self.fs.open_append(path, create=True)
            self._active = handle
            handle.truncate(0)
            handle.append(encode_segment_header(first_index))
            handle.fsync()
            self.fs.fsync_dir(self.path)
        except OSError as exc:
            error = storage_error_from_os(exc, "creating a segment", path)
            self._fail(error)
            raise error from exc
        self._segments.append(_Segment(first_index, path, array("Q"), SEGMENT_HEADER.size))

    def set_epoch(self, epoch: int) -> None:
        """Durably record a new current epoch (before acting in it: epoch fencing)."""
        self._check_writable()
        if epoch < self._meta.epoch:
            raise UsageError(f"epoch {epoch} is older than the current {self._meta.epoch}")
        if epoch == self._meta.epoch:
            return
        self._persist_meta(Meta(epoch, self._meta.commit_index))

    def set_commit_index(self, index: int) -> None:
        """Record the commit point (persisted lazily: see the module docstring)."""
        if index < self._meta.commit_index:
            raise UsageError(f"commit index {index} < the current {self._meta.commit_index}")
        if index > self.last_index:
            raise UsageError(f"commit index {index} is past the log end {self.last_index}")
        if index != self._meta.commit_index:
            self._meta = Meta(self._meta.epoch, index)
            self._meta_dirty = True

    def persist_meta(self) -> None:
        """Durably write the epoch and commit point if they changed."""
        self._check_writable()
        if self._meta_dirty:
            self._persist_meta(self._meta)

    def _persist_meta(self, meta: Meta) -> None:
        # Memory follows the disk: a failed write leaves the old epoch in effect.
        self._write_atomic(META_NAME, encode_meta(meta))
        self._meta = meta
        self._meta_dirty = False

    def _write_atomic(self, name: str, data: bytes) -> None:
        try:
            write_atomic(self.fs, self.path, name, data)
        except OSError as exc:
            error = storage_error_from_os(exc, f"writing {name}", self._file(name + ".tmp"))
            self._fail(error)
            raise error from exc

    def _move_atomic(self, source: str, name: str, *, synced: bool = False) -> None:
        """Make the file ``source`` (in the log's directory) durable (unless ``synced``: it
        already is) and rename it to ``name``: as ``_write_atomic`` without writing the
        bytes a second time."""
        path = self._file(source)
        try:
            if not synced:
                handle = self.fs.open_append(path, create=False)
                try:
                    handle.fsync()
                finally:
                    handle.close()
            self.fs.rename(path, self._file(name))
            self.fs.fsync_dir(self.path)
        except OSError as exc:
            error = storage_error_from_os(exc, f"moving {source} to {name}", path)
            self._fail(error)
            raise error from exc

    def truncate_after(self, index: int) -> None:
        """Durably drop every record after ``index`` (a divergent, uncommitted suffix)."""
        self._check_writable()
        if index >= self.last_index:
            return
        if index < self._meta.commit_index:
            raise UsageError(f"cannot truncate to {index}: commit index is {self.commit_index}")
        if index < max(self.snapshot_index, self.first_index - 1):
            raise UsageError(f"cannot truncate to {index}: the log starts at {self.first_index}")
        self._journal_truncation(index)
        try:
            removed = False
            while len(self._segments) > 1 and self._segments[-1].first_index > index:
                if self._active is not None:
                    self._active.close()
                    self._active = None
                self.fs.remove(self._segments.pop().path)
                self._segment_firsts.pop()
                removed = True
            if removed:
                self.fs.fsync_dir(self.path)
            segment = self._segments[-1]
            if self._active is None:
                self._active = self.fs.open_append(segment.path, create=False)
            keep = index - segment.first_index + 1
            segment.end = segment.offsets[keep] if keep < len(segment.offsets) else segment.end
            del segment.offsets[keep:]
            self._active.truncate(segment.end)
            self._active.fsync()
        except OSError as exc:
            error = storage_error_from_os(exc, "truncating the log", self.path)
            self._fail(error)
            raise error from exc
        while self._epochs and self._epochs[-1][1] > index:
            self._epochs.pop()
        self._durable_index = min(self._durable_index, index)

    def _journal_truncation(self, index: int) -> None:
        """With a journal, the truncation is journaled (and synced) before the files change,
        so a replay after a crash never brings back what was cut off."""
        if self._journal is None:
            return
        try:
            self._journal.add_truncate(self._journal_partition, index)
            self._journal.sync()
        except StorageError as exc:
            self._fail(exc)
            raise

    # ------------------------------------------------------------------ snapshots

    def write_snapshot_file(
        self, snapshot: Snapshot, *, after_slice: Callable[[], None] | None = None
    ) -> None:
        """Write ``snapshot``'s file under a temporary name and fsync it: the slow part of
        storing a snapshot, which may run in another thread while the log takes writes (it
        touches only that file, never the log's state). ``save_snapshot(prewritten=True)``
        then puts it in place (a crash before leaves a temporary file, removed on open), or
        :meth:`discard_snapshot_file` removes it. It is written and fsynced a slice at a
        time, ``after_slice`` called after each (the node rests there)."""
        tmp = self._file(snapshot_name(snapshot.index) + _PREWRITTEN_SUFFIX)
        try:
            handle = self.fs.open_append(tmp, create=True)
            try:
                handle.truncate(0)
                unsynced = 0
                for part in encode_snapshot_parts(snapshot):
                    for start in range(0, len(part), _PREWRITE_SYNC_BYTES):
                        piece = bytes(part[start : start + _PREWRITE_SYNC_BYTES])
                        handle.append(piece)
                        unsynced += len(piece)
                        if unsynced >= _PREWRITE_SYNC_BYTES:
                            # A slice at a time: one big flush would hold up the fsyncs of
                            # the writes meanwhile (on ext4 they wait for the same journal
                            # commit, with the dirty pages it flushes).
                            handle.fsync()
                            unsynced = 0
                            if after_slice is not None:
                                after_slice()
                handle.fsync()
            finally:
                handle.close()
        except OSError as exc:
            raise storage_error_from_os(exc, "writing a snapshot file", tmp) from exc

    def discard_snapshot_file(self, index: int) -> None:
        """Remove the file ``write_snapshot_file`` wrote for ``index`` (if any)."""
        tmp = self._file(snapshot_name(index) + _PREWRITTEN_SUFFIX)
        try:
            self.fs.remove(tmp)
        except FileNotFoundError:
            return  # never written
        except OSError as exc:
            raise storage_error_from_os(exc, "removing a snapshot file", tmp) from exc

    def save_snapshot(
        self,
        snapshot: Snapshot,
        *,
        keep_after: int | None = None,
        prewritten: bool = False,
        seal: bool = True,
    ) -> None:
        """Durably store a snapshot of the state up to ``snapshot.index``, then compact
        (keeping every record after ``keep_after`` too, if given). ``prewritten``: its
        file was written by ``write_snapshot_file``; only the rename is left to do.
        ``seal=False``: leave the sealing and compaction to :meth:`seal_and_compact`."""
        self._check_writable()
        if not self.snapshot_index <= snapshot.index <= self.last_index:
            raise UsageError(
                f"snapshot index {snapshot.index} must be in {self.snapshot_index}.."
                f"{self.last_index}"
            )
        if snapshot.index and snapshot.epoch != self.epoch_at(snapshot.index):
            raise UsageError(
                f"snapshot epoch {snapshot.epoch} != the log's {self.epoch_at(snapshot.index)}"
            )
        self.sync()
        if self._journal is not None:
            # The files themselves must reach the snapshot: a journal replay skips what a
            # snapshot covers, so it could not refill a lost tail below it.
            self.sync_files()
        if prewritten:
            name = snapshot_name(snapshot.index) + _PREWRITTEN_SUFFIX
            self._store_snapshot(snapshot, from_file=name, synced=True)
        else:
            self._store_snapshot(snapshot)
        if seal:
            self.seal_and_compact(keep_after)

    def seal_and_compact(self, keep_after: int | None = None) -> None:
        """Seal the active segment if the newest snapshot covers (part of) it, so that a
        compaction drops it, then compact. ``save_snapshot(seal=False)`` leaves this for
        later: a node runs it in a turn of its own between write batches, so that the
        batches wait for two short steps rather than one long one."""
        self._check_writable()
        active = self._segments[-1]
        if active.offsets and active.first_index <= self.snapshot_index:
            self._roll_segment()
        self.compact(keep_after)

    def install_snapshot(self, snapshot: Snapshot, *, from_file: str | None = None) -> None:
        """Replace the whole log by a snapshot received from the primary (a far-behind replica).

        Records after ``snapshot.index`` are dropped as well: the primary resends them.
        ``from_file``: a file in the log's directory (a ``.tmp``, so that recovery removes
        it if this is cut short) that holds exactly ``encode_snapshot(snapshot)``, already
        verified: it is fsynced and renamed into place instead of being written again.
        """
        self._check_writable()
        if snapshot.index < self.snapshot_index or snapshot.index < self.commit_index:
            raise UsageError(f"snapshot at {snapshot.index} is older than this replica's state")
        if snapshot.epoch > self.epoch:
            self.set_epoch(snapshot.epoch)
        # Recovery drops every segment that ends at or before the snapshot, so after the
        # truncation below a crash at any step leaves either the old or the new state.
        self.truncate_after(max(min(self.last_index, snapshot.index), self.first_index - 1))
        self._store_snapshot(snapshot, from_file=from_file)
        self._remove_snapshots(self._snapshot_indexes[:-1])  # the log no longer reaches them
        old = self._segments
        self._segments = []
        try:
            self._create_segment(snapshot.index + 1)
        except StorageError:
            self._segments = old  # failed now: the old view stays readable (e.g. last_index)
            raise
        self._segment_firsts = [snapshot.index + 1]
        try:
            for segment in old:
                if segment.path != self._segments[0].path:
                    self.fs.remove(segment.path)
            self.fs.fsync_dir(self.path)
        except OSError as exc:
            error = storage_error_from_os(exc, "removing replaced segments", self.path)
            self._fail(error)
            raise error from exc
        self._epochs = [(snapshot.epoch, snapshot.index)]
        self._durable_index = snapshot.index
        if snapshot.index > self._meta.commit_index:
            self._persist_meta(Meta(self._meta.epoch, snapshot.index))

    def snapshot_file_bytes(self, index: int) -> int:
        """The size of the stored snapshot file at ``index`` (StorageMissing if it is gone)."""
        path = self._file(snapshot_name(index))
        try:
            return self.fs.size(path)
        except OSError as exc:
            raise storage_error_from_os(exc, "reading a snapshot file", path) from exc

    def read_snapshot_file(self, index: int, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of the stored snapshot file at ``index`` (what a
        snapshot transfer sends); StorageMissing once a newer snapshot replaced it."""
        path = self._file(snapshot_name(index))
        try:
            data = self.fs.read(path, offset, length)
        except OSError as exc:
            raise storage_error_from_os(exc, "reading a snapshot file", path) from exc
        if len(data) != length:
            raise StorageMissing(f"snapshot file cut short at {offset + len(data)}", path=path)
        return data

    def _store_snapshot(
        self, snapshot: Snapshot, *, from_file: str | None = None, synced: bool = False
    ) -> None:
        name = snapshot_name(snapshot.index)
        if from_file is None:
            self._write_atomic(name, encode_snapshot(snapshot))
        else:
            self._move_atomic(from_file, name, synced=synced)
        self._snapshot = snapshot
        kept = [index for index in self._snapshot_indexes if index < snapshot.index]
        self._snapshot_indexes = [*kept, snapshot.index]
        self._remove_snapshots(self._snapshot_indexes[: -self._snapshots_kept])

    def _remove_snapshots(self, indexes: Sequence[int]) -> None:
        try:
            for index in list(indexes):
                self.fs.remove(self._file(snapshot_name(index)))
                self._snapshot_indexes.remove(index)
                self._dir_dirty = True
        except OSError as exc:
            error = storage_error_from_os(exc, "removing an old snapshot", self.path)
            self._fail(error)
            raise error from exc

    def compact(self, keep_after: int | None = None) -> int:
        """Remove whole segments every kept snapshot covers (never the active one, nor one
        holding a record after ``keep_after``); returns how many."""
        self._check_writable()
        removed = 0
        floor = self._compaction_floor()
        if keep_after is not None:
            floor = min(floor, keep_after)
        try:
            while len(self._segments) > 1 and self._segments[0].last_index <= floor:
                self.fs.remove(self._segments.pop(0).path)
                self._segment_firsts.pop(0)
                removed += 1
            if removed or self._dir_dirty:
                self.fs.fsync_dir(self.path)
                self._dir_dirty = False
        except OSError as exc:
            error = storage_error_from_os(exc, "compacting the log", self.path)
            self._fail(error)
            raise error from exc
        return removed

    # ------------------------------------------------------------------ reading

    def read(
        self, from_index: int, *, count_max: int = 1 << 30, bytes_max: int = _READ_BYTES_DEFAULT
    ) -> list[Entry]:
        """Records from ``from_index`` on, at least one (if any), at most ``count_max`` and
        about ``bytes_max`` bytes. Checksums are checked again: bit rot raises StorageDamaged.
        """
        if not self.first_index <= from_index <= self.last_index + 1:
            raise UsageError(f"index {from_index} is not in the log ({self._range()})")
        if from_index > self.last_index or count_max <= 0:
            return []
        position = bisect.bisect_right(self._segment_firsts, from_index) - 1
        segment = self._segments[position]
        first = from_index - segment.first_index
        count = min(count_max, len(segment.offsets) - first)
        start = segment.offsets[first]
        end_position = first + count
        end = segment.offsets[end_position] if end_position < len(segment.offsets) else segment.end
        while end - start > bytes_max and end_position > first + 1:
            end_position = max(first + 1, first + (end_position - first) // 2)
            end = segment.offsets[end_position]
        try:
            buf = memoryview(self.fs.read(segment.path, start, end - start))
        except OSError as exc:
            raise storage_error_from_os(exc, "reading the log", segment.path) from exc
        scan = scan_records(buf, 0, from_index, self.epoch_at(from_index))
        if scan.error is not None or len(scan.offsets) != end_position - first:
            raise StorageDamaged(
                scan.error or "record vanished", path=segment.path, offset=start + scan.end
            )
        return [Entry(*self._decode(buf, offset)) for offset in scan.offsets]

    @staticmethod
    def _decode(buf: memoryview, offset: int) -> tuple[int, int, bytes]:
        _, length, epoch, index = RECORD_HEADER.unpack_from(buf, offset)
        body = offset + RECORD_HEADER.size
        return epoch, index, bytes(buf[body : body + length])

    def entries(self, from_index: int | None = None) -> Iterator[Entry]:
        """Every record from ``from_index`` (default: just after the snapshot) to the end."""
        index = self.snapshot_index + 1 if from_index is None else from_index
        index = max(index, self.first_index)
        while index <= self.last_index:
            batch = self.read(index)
            yield from batch
            index = batch[-1].index + 1

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Sync (unless the log failed), persist the meta file and release the lock."""
        try:
            if self._failure is None and self._lock is not None:
                self.sync_files()
                self._trim()
                self.persist_meta()
        finally:
            if self._journal is not None:
                self._journal.detach(self._journal_partition, self)
            self._release()

    def _release(self) -> None:
        if self._active is not None:
            handle, self._active = self._active, None
            try:
                handle.close()
            finally:
                self._release_lock()
        else:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.release()

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _file(self, name: str) -> str:
        return join(self.path, name)

    def _remove(self, name: str) -> None:
        self.fs.remove(self._file(name))
        self.recovery.removed_files.append(name)
        self._dir_dirty = True

    def _check_writable(self) -> None:
        if self._lock is None:
            raise UsageError(f"the log at {self.path} is closed")
        if self._failure is not None:
            raise self._failure

    def _fail(self, error: StorageError) -> None:
        if self._failure is None:
            self._failure = StorageFailed(
                "an earlier write failed", path=error.path or self.path, cause=error
            )
