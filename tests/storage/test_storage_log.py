"""PartitionLog on SimFS: appends, reads, epochs, truncation, snapshots, policies, errors."""

from __future__ import annotations

import errno

import pytest

from planaria._native import compiled
from planaria.errors import UsageError
from planaria.storage import (
    FsyncPolicy,
    PartitionLog,
    SimFS,
    Snapshot,
    StorageDamaged,
    StorageFailed,
    StorageFull,
    StorageLocked,
    StorageMissing,
    StorageReadOnly,
)

from ._helpers import fill, open_sim, record_for


def test_append_read_and_reopen() -> None:
    fs = SimFS()
    log = open_sim(fs)
    assert (log.first_index, log.last_index, log.last_epoch) == (1, 0, 0)
    assert fill(log, 5) == [1, 2, 3, 4, 5]
    log.set_epoch(2)
    assert log.append(2, b"") == 6
    log.close()
    log = open_sim(fs)
    entries = list(log.entries())
    assert [e.index for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].record == record_for(1) and entries[5].record == b""
    assert [e.epoch for e in entries] == [1] * 5 + [2]
    assert log.epoch == 2 and log.durable_index == 6
    assert [e.index for e in log.read(3, count_max=2)] == [3, 4]
    assert [e.index for e in log.read(2, bytes_max=1)] == [2]
    assert log.read(7) == []
    with pytest.raises(UsageError):
        log.read(8)


def test_bad_appends_are_usage_errors() -> None:
    log = open_sim(record_bytes_max=10)
    with pytest.raises(UsageError, match="set_epoch"):
        log.append(1, b"x")
    log.set_epoch(3)
    log.append(3, b"x")
    with pytest.raises(UsageError, match="must be >="):
        log.append(2, b"x")
    # Compiled (planaria._native), mypyc checks the annotation before the body can say why.
    with pytest.raises(TypeError if compiled() else UsageError, match="bytes"):
        log.append(3, "text")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="> 10"):
        log.append(3, b"x" * 11)
    with pytest.raises(UsageError):
        log.set_epoch(2)
    assert log.last_index == 1


def test_segments_roll_and_recover() -> None:
    fs = SimFS()
    log = open_sim(fs, segment_bytes=200)
    fill(log, 40)
    segments = [n for n in fs.listdir("/data/p0") if n.startswith("seg-")]
    assert len(segments) > 5
    log.close()
    log = open_sim(fs, segment_bytes=200)
    assert log.recovery.segments == len(segments)
    assert [e.record for e in log.entries()] == [record_for(i) for i in range(1, 41)]


def test_epochs_and_truncation() -> None:
    fs = SimFS()
    log = open_sim(fs, segment_bytes=150)
    fill(log, 4, epoch=1)
    fill(log, 3, epoch=3)
    fill(log, 3, epoch=4)
    assert [log.epoch_at(i) for i in (1, 4, 5, 7, 8, 10)] == [1, 1, 3, 3, 4, 4]
    assert log.last_index_in_epoch(1) == 4
    assert log.last_index_in_epoch(2) == 4
    assert log.last_index_in_epoch(3) == 7
    assert log.last_index_in_epoch(9) == 10
    log.set_commit_index(3)
    with pytest.raises(UsageError, match="commit index"):
        log.truncate_after(2)
    log.truncate_after(5)
    assert (log.last_index, log.last_epoch, log.durable_index) == (5, 3, 5)
    log.set_epoch(5)
    log.append(5, b"new")
    log.sync()
    log.close()
    log = open_sim(fs, segment_bytes=150)
    assert [(e.epoch, e.index) for e in log.entries()][-3:] == [(1, 4), (3, 5), (5, 6)]
    assert log.commit_index == 3  # persisted on close
    log.truncate_after(3)
    assert log.last_epoch == 1 and log.last_index == 3


def test_snapshot_compaction_and_recovery() -> None:
    fs = SimFS()
    log = open_sim(fs, segment_bytes=200)
    fill(log, 30)
    log.set_commit_index(30)
    segments_before = len([n for n in fs.listdir("/data/p0") if n.startswith("seg-")])
    log.save_snapshot(Snapshot(20, 1, b"state@20", {b"req-1": b"ok"}))
    segments_after = len([n for n in fs.listdir("/data/p0") if n.startswith("seg-")])
    assert segments_after < segments_before
    assert log.first_index <= 21
    fill(log, 5)
    log.save_snapshot(Snapshot(33, 1, b"state@33", {}))
    # The newest two are kept (the older one is the fallback), the log from the older on.
    assert [n for n in fs.listdir("/data/p0") if n.startswith("snap-")] == [
        "snap-00000000000000000020.snap",
        "snap-00000000000000000033.snap",
    ]
    assert log.first_index <= 21
    log.close()
    log = open_sim(fs, segment_bytes=200)
    assert log.snapshot == Snapshot(33, 1, b"state@33", {})
    assert [e.index for e in log.entries()] == [34, 35]
    assert log.epoch_at(33) == 1
    with pytest.raises(UsageError):
        log.truncate_after(32)
    with pytest.raises(UsageError):
        log.save_snapshot(Snapshot(36, 1, b""))


def test_install_snapshot_replaces_log() -> None:
    fs = SimFS()
    log = open_sim(fs)
    fill(log, 5)
    log.install_snapshot(Snapshot(100, 7, b"from primary", {b"r": b"1"}))
    assert (log.first_index, log.last_index, log.epoch, log.last_epoch) == (101, 100, 7, 7)
    assert log.commit_index == 100
    assert log.append(7, b"next") == 101
    log.sync()
    log.close()
    log = open_sim(fs)
    assert log.snapshot is not None and log.snapshot.data == b"from primary"
    assert [e.index for e in log.entries()] == [101]


def test_fsync_policies_sync_when_told() -> None:
    for text, expected in [("always", [True, True]), ("never", [False, False])]:
        log = open_sim(policy=FsyncPolicy.parse(text))
        log.set_epoch(1)
        synced = []
        for now_ms in (0.0, 1.0):
            log.append(1, b"x")
            synced.append(log.sync_if_due(now_ms))
        assert synced == expected
        assert log.durable_index == (2 if text == "always" else 0)
        log.sync()  # never still syncs when told
        assert log.durable_index == 2
    log = open_sim(policy=FsyncPolicy("interval", 50))
    log.set_epoch(1)
    log.append(1, b"x")
    assert log.sync_if_due(0.0) is False  # starts the interval clock
    log.append(1, b"y")
    assert log.sync_if_due(49.0) is False
    assert log.sync_if_due(50.0) is True and log.durable_index == 2
    assert log.sync_if_due(200.0) is False  # nothing new to sync
    with pytest.raises(UsageError):
        FsyncPolicy.parse("sometimes")
    with pytest.raises(UsageError):
        FsyncPolicy.parse("interval:abc")
    with pytest.raises(UsageError):
        FsyncPolicy("interval", 0)


def test_disk_full_keeps_nothing_half_written_and_refuses() -> None:
    fs = SimFS()
    log = open_sim(fs, preallocate_bytes=0)
    fill(log, 10)
    fs.capacity_bytes = fs.used_bytes() + 70  # room for part of a batch only
    with pytest.raises(StorageFull, match="disk full"):
        log.append_many([(1, b"y" * 40)] * 3)
    with pytest.raises(StorageFailed, match="refuses writes until reopened"):
        log.append(1, b"z")
    with pytest.raises(StorageFailed):
        log.sync()
    assert log.last_index == 10 and log.durable_index == 10
    log.close()
    log = open_sim(fs)
    assert log.recovery.torn_tail_bytes == 0  # cut back at once, not left for recovery
    assert [e.record for e in log.entries()] == [record_for(i) for i in range(1, 11)]


def test_preallocation_is_trimmed_and_gives_way_to_a_full_disk() -> None:
    fs = SimFS()
    log = open_sim(fs, preallocate_bytes=4096)
    fill(log, 3)
    segment = "/data/p0/seg-00000000000000000001.log"
    assert fs.size(segment) >= 4096  # zeros ahead of the writes
    log.close()
    assert fs.size(segment) < 200  # trimmed on close
    log = open_sim(fs, preallocate_bytes=4096)
    fs.capacity_bytes = fs.used_bytes() + 100  # no room to preallocate, some to write
    log.append(1, b"fits")
    log.sync()
    with pytest.raises(StorageFull):
        log.append(1, b"y" * 200)
    log.close()
    assert [e.record for e in open_sim(fs).entries()][-1] == b"fits"


def test_fsync_failure_fails_and_refuses() -> None:
    fs = SimFS()
    log = open_sim(fs)
    fill(log, 2)
    log.append(1, b"unsure")
    fs.fail_next("fsync", errno.EIO)
    with pytest.raises(Exception, match="fsync of the log failed") as info:
        log.sync()
    assert log.durable_index == 2
    assert isinstance(log.failure, StorageFailed) and log.failure.cause is info.value
    with pytest.raises(StorageFailed):
        log.append(1, b"more")
    log.close()
    assert open_sim(fs).last_index in (2, 3)


def test_read_only_missing_and_locked() -> None:
    fs = SimFS()
    with pytest.raises(StorageMissing, match="does not exist"):
        open_sim(fs, create=False)
    log = open_sim(fs)
    with pytest.raises(StorageLocked, match="locked"):
        open_sim(fs)
    fill(log, 1)
    fs.read_only = True
    with pytest.raises(StorageReadOnly, match="read-only"):
        log.append(1, b"x")
    log.close()
    fs.read_only = False
    log = open_sim(fs)
    assert log.last_index == 1
    fs.read_only = True
    with pytest.raises(StorageReadOnly):
        log.set_epoch(9)
    assert log.epoch == 1


def test_corrupt_snapshot_or_meta_is_damage() -> None:
    for name in ("meta", "snap-00000000000000000002.snap"):
        fs = SimFS()
        log = open_sim(fs)
        fill(log, 3)
        log.save_snapshot(Snapshot(2, 1, b"s"))
        log.close()
        inode = fs._dirs["/data/p0"][name]
        inode.data[5] ^= 0x10
        with pytest.raises(StorageDamaged, match="checksum"):
            open_sim(fs)
        PartitionLog.wipe(fs, "/data/p0")
        assert open_sim(fs).last_index == 0


def test_closed_log_refuses() -> None:
    log = open_sim()
    log.close()
    with pytest.raises(UsageError, match="closed"):
        log.set_epoch(1)
