"""Snapshot transfer on disk: a snapshot file read in chunks arrives byte for byte in the
receiver's incoming file, is installed atomically (a crash in the middle leaves the old log
or the new snapshot, never a mix, and no incoming file), and a corrupted file is refused."""

from __future__ import annotations

import dataclasses
from random import Random
from typing import Any, cast

import pytest

from planaria.core.codec import encode_entry
from planaria.core.messages import Entry, ReplicaSnapshot, Set, SnapshotChunk, Version
from planaria.core.transfer import SnapshotReceiver, SnapshotSender, TransferSettings
from planaria.storage import PartitionLog, SimFS, StorageDamaged, StorageError, persist
from planaria.storage.fs import AppendFile
from planaria.storage.persist import (
    INCOMING_SNAPSHOT,
    install_received,
    receive_chunk,
    recovered_state,
    save_state,
    snapshot_file,
)

from ._helpers import open_sim

SETTINGS = TransferSettings(chunk_bytes=300, window_chunks=64, bytes_per_s=1e12)


def primary_log(fs: SimFS) -> PartitionLog:
    log = open_sim(fs, "/a/p0")
    log.set_epoch(2)
    writes = [Entry(2, i, ("c", i), Set(b"k%d" % i, b"v" * 50)) for i in range(1, 41)]
    log.append_many([(e.epoch, encode_entry(e)) for e in writes])
    log.sync()
    kv = {b"k%d" % i: (b"v" * 50, Version(2, i)) for i in range(1, 41)}
    save_state(log, ReplicaSnapshot(0, 40, 2, kv, {}))
    return log


def backup_log(fs: SimFS) -> PartitionLog:
    log = open_sim(fs, "/b/p0")
    log.set_epoch(1)
    old = [Entry(1, i, ("d", i), Set(b"old", b"%d" % i)) for i in range(1, 4)]
    log.append_many([(e.epoch, encode_entry(e)) for e in old])
    log.set_commit_index(2)
    log.sync()
    return log


def received(source: PartitionLog, dest: PartitionLog) -> SnapshotChunk:
    """Send the source's snapshot to ``dest``'s incoming file; the last chunk."""
    sender, receiver = SnapshotSender(SETTINGS), SnapshotReceiver("b")
    stored = snapshot_file(source)
    assert stored is not None and stored.index == 40
    sender.want(0, 2, frozenset({"b"}), stored, 0.0)
    reads = sender.poll(0.0)
    assert len(reads) > 3
    for read in reads:
        chunk = read.message(
            "a", source.read_snapshot_file(stored.index, read.offset, read.length), 0
        )
        receipt = receiver.on_chunk(chunk, 1, dest.commit_index)
        assert receipt.write
        receive_chunk(dest, chunk, restart=receipt.restart)
        if receipt.complete:
            return chunk
    raise AssertionError("the transfer did not complete")


def test_a_received_snapshot_replaces_the_log_and_holds_the_primarys_state() -> None:
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    last = received(source, dest)
    assert install_received(dest, last) is True
    assert INCOMING_SNAPSHOT not in fs.listdir("/b/p0")
    assert (dest.snapshot_index, dest.last_index, dest.epoch, dest.commit_index) == (40, 40, 2, 40)
    dest.close()
    snapshot, entries = recovered_state(open_sim(fs, "/b/p0"))
    assert snapshot is not None and entries == []
    assert dict(snapshot.kv) == {b"k%d" % i: (b"v" * 50, Version(2, i)) for i in range(1, 41)}


def test_a_snapshot_the_log_moved_past_meanwhile_is_not_installed() -> None:
    """The last chunk is written, then the log moves past the snapshot before the install
    (a node's replica rebuilt and caught up between two steps of its disk thread): the
    install reports False, removes the incoming file and leaves the log as it is, instead of
    raising (which once left a node's partition refusing clients for good)."""
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    last = received(source, dest)
    dest.set_epoch(2)
    ahead = [Entry(2, i, ("c", i), Set(b"k%d" % i, b"v" * 50)) for i in range(4, 46)]
    dest.truncate_after(3)
    dest.append_many([(e.epoch, encode_entry(e)) for e in ahead])
    dest.set_commit_index(45)
    dest.sync()
    before = (dest.snapshot_index, dest.first_index, dest.last_index, dest.commit_index)
    assert install_received(dest, last) is False
    assert INCOMING_SNAPSHOT not in fs.listdir("/b/p0")
    assert (dest.snapshot_index, dest.first_index, dest.last_index, dest.commit_index) == before


def test_the_received_file_itself_is_installed_not_a_copy_written_again() -> None:
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    last = received(source, dest)
    incoming = fs._dirs["/b/p0"][INCOMING_SNAPSHOT]
    install_received(dest, last)
    (name,) = [n for n in fs.listdir("/b/p0") if n.startswith("snap-")]
    assert fs._dirs["/b/p0"][name] is incoming  # renamed into place, not rewritten
    size = source.snapshot_file_bytes(40)
    assert dest.read_snapshot_file(40, 0, size) == source.read_snapshot_file(40, 0, size)


def test_an_incoming_file_of_the_wrong_size_is_not_installed() -> None:
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    last = received(source, dest)
    extra = dataclasses.replace(last, offset=last.total_bytes, data=b"x")
    receive_chunk(dest, extra, restart=False)
    with pytest.raises(StorageDamaged, match="bytes, expected"):
        install_received(dest, last)
    assert dest.snapshot is None and dest.last_index == 3  # untouched


@pytest.mark.parametrize("op", ["fsync", "fsync_dir"])
@pytest.mark.parametrize("seed", range(4))
def test_a_crash_while_the_file_moves_into_place_leaves_one_state(op: str, seed: int) -> None:
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    last = received(source, dest)
    dest.set_epoch(2)  # no meta write left before the move: the fault strikes the move
    dest.truncate_after(2)
    fs.fail_next(op)
    with pytest.raises(StorageError):
        install_received(dest, last)
    fs.crash(Random(seed))
    reopened = open_sim(fs, "/b/p0")
    assert INCOMING_SNAPSHOT not in fs.listdir("/b/p0")
    snapshot, entries = recovered_state(reopened)
    if snapshot is None:
        assert [e.index for e in entries] == [1, 2]
    else:
        assert snapshot.index == 40 and dict(snapshot.kv)[b"k7"] == (b"v" * 50, Version(2, 7))


@pytest.mark.parametrize("seed", range(8))
def test_a_crash_while_installing_leaves_the_old_log_or_the_snapshot(seed: int) -> None:
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    last = received(source, dest)
    fs.fail_next("rename")  # the snapshot file's rename: the crash strikes mid-install
    with pytest.raises(StorageError):
        install_received(dest, last)
    fs.crash(Random(seed))
    reopened = open_sim(fs, "/b/p0")
    assert INCOMING_SNAPSHOT not in fs.listdir("/b/p0")  # the recovery removed it
    snapshot, entries = recovered_state(reopened)
    if snapshot is None:  # the old log: its committed entries are all there
        assert [e.index for e in entries] == [1, 2, 3] and reopened.snapshot is None
    else:
        assert snapshot.index == 40 and reopened.last_index >= 40


def test_a_corrupted_incoming_file_is_not_installed() -> None:
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    last = received(source, dest)
    fs.damage(f"/b/p0/{INCOMING_SNAPSHOT}", 100)
    with pytest.raises(StorageDamaged, match="checksum"):
        install_received(dest, last)
    assert dest.snapshot is None and dest.last_index == 3  # untouched


def test_a_chunk_that_does_not_follow_the_file_is_refused() -> None:
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    stored = snapshot_file(source)
    assert stored is not None
    chunk = SnapshotChunk(0, 2, "a", 40, 2, 300, stored.total_bytes, stored.checksum, b"x" * 300)
    with pytest.raises(StorageError, match="chunk at 300"):
        receive_chunk(dest, chunk, restart=False)  # the file holds nothing yet


def install_writes() -> int:
    """How many write ops an install takes (SimFS.fail_after counts the same ops)."""
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    last = received(source, dest)
    for count in range(1, 100):
        fs.fail_after(count)
        try:
            install_received(dest, last)
        except StorageError:
            fs.cancel_failures()
            fs = SimFS()  # fresh logs for the next try
            source, dest = primary_log(fs), backup_log(fs)
            last = received(source, dest)
            continue
        fs.cancel_failures()
        return count - 1
    raise AssertionError("an install of more than 100 writes")


@pytest.mark.parametrize("seed", range(3))
def test_a_crash_at_any_write_of_an_install_leaves_the_old_log_or_the_snapshot(
    seed: int,
) -> None:
    """The simulator's ``snapshot`` fault: the crash strikes at any write op of the install.
    The failed log still answers what it holds (seed 35 of the first sweep with the fault
    read ``last_index`` of a log whose new segment failed to be created, and crashed), and
    the recovery finds the old log or the snapshot, with the snapshot's epoch."""
    for write in range(1, install_writes() + 1):
        fs = SimFS()
        source, dest = primary_log(fs), backup_log(fs)
        last = received(source, dest)
        fs.fail_after(write)
        with pytest.raises(StorageError):
            install_received(dest, last)
        assert dest.last_index >= 3 or dest.last_index == 40, write  # still readable
        fs.crash(Random(seed * 1000 + write))
        reopened = open_sim(fs, "/b/p0")
        assert INCOMING_SNAPSHOT not in fs.listdir("/b/p0")
        snapshot, entries = recovered_state(reopened)
        if snapshot is None:
            assert [e.index for e in entries] == [1, 2, 3], write
        else:
            assert snapshot.index == 40 and reopened.last_index >= 40, write
            # The old log's epochs went with its segments (sim seed 390 of the first
            # 1000-seed sweep with the fault: epoch 1 still named at the snapshot's index).
            assert reopened.epoch_at(40) == 2 and reopened.last_epoch == 2, write


def test_a_received_snapshot_is_written_behind_never_leaving_more_than_a_slice_unsynced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left to the page cache, the received snapshot (tens of MB) was flushed at once by the
    install's fsync, and every other fsync on the disk waited for it (ext4, data=ordered):
    each slice of ``RECEIVE_SYNC_BYTES`` is fsynced as it is written."""
    monkeypatch.setattr(persist, "RECEIVE_SYNC_BYTES", 64)
    fs = SimFS()
    source, dest = primary_log(fs), backup_log(fs)
    unsynced_max = 0
    open_append = fs.open_append

    class Tracked:
        def __init__(self, handle: AppendFile) -> None:
            self.handle = handle
            self.unsynced = 0

        def append(self, data: bytes) -> None:
            nonlocal unsynced_max
            self.handle.append(data)
            self.unsynced += len(data)
            unsynced_max = max(unsynced_max, self.unsynced)

        def fsync(self) -> None:
            self.handle.fsync()
            self.unsynced = 0

        def close(self) -> None:
            assert self.unsynced == 0, "closed with bytes not synced"
            self.handle.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

    def tracked(path: str, *, create: bool) -> AppendFile:
        handle = open_append(path, create=create)
        return cast(AppendFile, Tracked(handle)) if path.endswith(INCOMING_SNAPSHOT) else handle

    monkeypatch.setattr(fs, "open_append", tracked)
    fsyncs = fs.stats.fsyncs
    last = received(source, dest)  # chunks of 300 bytes
    assert 0 < unsynced_max <= 64
    assert fs.stats.fsyncs - fsyncs >= last.total_bytes // 64
    assert install_received(dest, last) is True
