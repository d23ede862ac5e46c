"""SimFS power losses over many seeds: synced records always survive, the log always opens."""

from __future__ import annotations

import errno
from random import Random

import pytest

from planaria.storage import SimFS, Snapshot, StorageError

from ._helpers import open_sim, record_for

SEEDS = 600


def run_schedule(seed: int) -> int:
    """Random appends, syncs, truncations, snapshots and crashes; returns crashes survived."""
    rng = Random(seed)
    fs = SimFS()
    segment_bytes = rng.choice([120, 300, 4096])
    log = open_sim(fs, segment_bytes=segment_bytes)
    durable: dict[int, bytes] = {}  # what must survive any crash
    written: dict[int, bytes] = {}
    crashes = 0
    for _ in range(rng.randint(20, 80)):
        action = rng.random()
        if action < 0.45:
            epoch = log.epoch + (1 if rng.random() < 0.1 else 0)
            if epoch > log.epoch:
                log.set_epoch(max(epoch, 1))
                epoch = log.epoch
            batch = [
                (epoch, record_for(log.last_index + 1 + i, rng.randint(0, 60)))
                for i in range(rng.randint(1, 5))
            ]
            last = log.append_many(batch)
            for offset, (_, record) in enumerate(batch):
                written[last - len(batch) + 1 + offset] = record
        elif action < 0.65:
            log.sync()
            durable.update(written)
        elif action < 0.72 and log.last_index > log.commit_index:
            keep = rng.randint(max(log.commit_index, log.snapshot_index), log.last_index)
            log.truncate_after(keep)
            for table in (durable, written):
                for index in [i for i in table if i > keep]:
                    del table[index]
        elif action < 0.78 and log.last_index > log.snapshot_index:
            index = rng.randint(log.snapshot_index + 1, log.last_index)
            log.set_commit_index(max(index, log.commit_index))
            log.save_snapshot(Snapshot(index, log.epoch_at(index), b"state@%d" % index))
            durable.update(written)  # save_snapshot syncs the log first
        elif action < 0.9:
            fs.crash(rng)
            crashes += 1
            log = open_sim(fs, segment_bytes=segment_bytes)
            check(log, durable)
            written = {e.index: e.record for e in log.entries()}
            durable = dict(written)
    fs.crash(rng)
    check(open_sim(fs, segment_bytes=segment_bytes), durable)
    return crashes + 1


def check(log: object, durable: dict[int, bytes]) -> None:
    from planaria.storage import PartitionLog

    assert isinstance(log, PartitionLog)
    survived = {e.index: e.record for e in log.entries()}
    snapshot_index = log.snapshot_index
    if snapshot_index:
        assert log.snapshot is not None and log.snapshot.data == b"state@%d" % snapshot_index
    for index, record in durable.items():
        if index > snapshot_index:
            assert survived.get(index) == record, f"synced record {index} lost"
    assert list(survived) == list(range(snapshot_index + 1, log.last_index + 1))
    assert log.commit_index <= log.last_index


def test_synced_records_survive_crashes() -> None:
    crashes = sum(run_schedule(seed) for seed in range(SEEDS))
    assert crashes > SEEDS  # the schedules really crash


def test_crash_tears_unsynced_writes() -> None:
    # The fault model bites: across seeds a crash keeps all, none and part of unsynced bytes.
    outcomes = set()
    for seed in range(60):
        fs = SimFS()
        log = open_sim(fs)
        log.set_epoch(1)
        log.append(1, b"a" * 50)
        log.sync()
        log.append_many([(1, b"b" * 50)] * 3)
        fs.crash(Random(seed))
        reopened = open_sim(fs)
        outcomes.add((reopened.last_index, reopened.recovery.torn_tail_bytes > 0))
        assert reopened.last_index >= 1
    assert (1, False) in outcomes and (4, False) in outcomes
    assert any(torn for _, torn in outcomes)


@pytest.mark.parametrize("seed", range(40))
def test_disk_full_at_random_moments(seed: int) -> None:
    rng = Random(seed)
    fs = SimFS(capacity_bytes=rng.randint(100, 2000))
    acked: dict[int, bytes] = {}
    try:
        log = open_sim(fs, segment_bytes=300)
        log.set_epoch(1)
        while True:
            batch = [(1, record_for(log.last_index + 1 + i, 30)) for i in range(rng.randint(1, 4))]
            last = log.append_many(batch)
            log.sync()
            for offset, (_, record) in enumerate(batch):
                acked[last - len(batch) + 1 + offset] = record
    except StorageError as exc:
        assert "disk full" in str(exc)
    fs.crash(rng)
    fs.capacity_bytes = None
    reopened = open_sim(fs, segment_bytes=300)
    assert {e.index: e.record for e in reopened.entries()} == acked


def test_reads_fail_clearly_on_io_errors() -> None:
    fs = SimFS()
    log = open_sim(fs)
    log.set_epoch(1)
    log.append(1, b"x")
    fs.fail_next("read", errno.EIO)
    with pytest.raises(StorageError, match="reading the log failed"):
        log.read(1)
