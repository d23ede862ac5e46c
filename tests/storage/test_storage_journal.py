"""The node journal: one fsync for many partition logs, and crash recovery by replay."""

from __future__ import annotations

import asyncio
from random import Random

import pytest

from planaria.storage import GroupCommitter, Journal, PartitionLog, SimFS, Snapshot

from ._helpers import record_for

SEEDS = 250
PARTITIONS = 4
REPLAYED: list[int] = []  # records each recovery replayed (the tests check replay happens)


def open_all(
    fs: SimFS, checkpoint_bytes: int, segment_bytes: int, *, keep: str = ""
) -> tuple[Journal, dict[int, PartitionLog]]:
    """What a node does at start: open the journal, replay it, open and attach the logs.
    ``keep="use"``: serve from the logs the replay opened, as a node does; ``"compare"``:
    also check that each is what closing and opening it again finds (then use that)."""
    journal = Journal.open(fs, "/node/journal", checkpoint_bytes=checkpoint_bytes)

    def open_log(partition: int, unsynced_after: int | None) -> PartitionLog:
        return PartitionLog.open(
            fs, f"/node/p{partition}", segment_bytes=segment_bytes, unsynced_after=unsynced_after
        )

    kept: dict[int, PartitionLog] = {}
    REPLAYED.append(sum(journal.recover(open_log, kept.__setitem__ if keep else None).values()))
    logs = {}
    for partition in range(PARTITIONS):
        log = kept.pop(partition, None)
        if log is not None and keep == "compare":
            seen = view(log)
            log.close()
            log = None
            reopened = PartitionLog.open(fs, f"/node/p{partition}", segment_bytes=segment_bytes)
            assert view(reopened) == seen
            log = reopened
        if log is None:
            log = PartitionLog.open(fs, f"/node/p{partition}", segment_bytes=segment_bytes)
        log.attach_journal(journal, partition)
        logs[partition] = log
    return journal, logs


def view(log: PartitionLog) -> tuple[object, ...]:
    """Everything a replica and its peers can learn from a log."""
    indexes = range(max(log.first_index, 1), log.last_index + 1)
    return (
        log.first_index, log.last_index, log.durable_index, log.epoch, log.commit_index,
        log.snapshot, [log.epoch_at(i) for i in indexes], list(log.entries(log.first_index)),
        log.log_bytes,
    )  # fmt: skip


def run_schedule(seed: int) -> int:
    """Random appends, journal syncs, truncations, snapshots, checkpoints and crashes over
    several partition logs; returns the crashes survived. A seed in three goes on with
    the logs the replays opened, one in three checks them against reopened ones."""
    rng = Random(seed)
    fs = SimFS()
    checkpoint_bytes = rng.choice([200, 1000, 10**9])
    segment_bytes = rng.choice([200, 600, 1 << 20])
    reuse = ("", "use", "compare")[seed % 3]
    journal, logs = open_all(fs, checkpoint_bytes, segment_bytes, keep=reuse)
    durable: dict[int, dict[int, bytes]] = {p: {} for p in range(PARTITIONS)}
    written: dict[int, dict[int, bytes]] = {p: {} for p in range(PARTITIONS)}
    crashes = 0
    for _ in range(rng.randint(30, 120)):
        action = rng.random()
        partition = rng.randrange(PARTITIONS)
        log = logs[partition]
        if action < 0.5:
            if log.epoch == 0 or rng.random() < 0.05:
                log.set_epoch(log.epoch + 1)
            batch = [
                (log.epoch, record_for(log.last_index + 1 + i, rng.randint(0, 40)))
                for i in range(rng.randint(1, 4))
            ]
            last = log.append_many(batch)
            for offset, (_, record) in enumerate(batch):
                written[partition][last - len(batch) + 1 + offset] = record
        elif action < 0.7:
            # One partition's sync makes every partition's writes durable (one journal fsync).
            log.sync()
            for p in range(PARTITIONS):
                durable[p].update(written[p])
        elif action < 0.76 and log.last_index > max(log.commit_index, log.snapshot_index):
            keep = rng.randint(max(log.commit_index, log.snapshot_index), log.last_index - 1)
            log.truncate_after(keep)
            for table in (durable[partition], written[partition]):
                for index in [i for i in table if i > keep]:
                    del table[index]
        elif action < 0.8 and log.last_index > log.snapshot_index:
            index = rng.randint(log.snapshot_index + 1, log.last_index)
            log.set_commit_index(max(index, log.commit_index))
            log.save_snapshot(Snapshot(index, log.epoch_at(index), b"state@%d" % index))
            for p in range(PARTITIONS):  # save_snapshot syncs (through the journal)
                durable[p].update(written[p])
        elif action < 0.85:
            journal.checkpoint()
            for p in range(PARTITIONS):
                durable[p].update(written[p])
        elif action < 0.93:
            fs.crash(rng)
            crashes += 1
            journal, logs = open_all(fs, checkpoint_bytes, segment_bytes, keep=reuse)
            for p in range(PARTITIONS):
                check(logs[p], durable[p], written[p], seed)
                written[p] = {e.index: e.record for e in logs[p].entries()}
                durable[p] = dict(written[p])
    fs.crash(rng)
    _, logs = open_all(fs, checkpoint_bytes, segment_bytes, keep=reuse)
    for p in range(PARTITIONS):
        check(logs[p], durable[p], written[p], seed)
    return crashes + 1


def check(
    log: PartitionLog, durable: dict[int, bytes], written: dict[int, bytes], seed: int
) -> None:
    survived = {e.index: e.record for e in log.entries()}
    snapshot_index = log.snapshot_index
    for index, record in durable.items():
        if index > snapshot_index:
            assert survived.get(index) == record, f"seed {seed}: synced record {index} lost"
    assert list(survived) == list(range(snapshot_index + 1, log.last_index + 1)), seed
    # Whatever survives is what was last written there: a truncated record never comes back.
    for index, record in survived.items():
        assert written.get(index) == record, f"seed {seed}: record {index} is not the last written"


def test_synced_records_survive_crashes_through_the_journal() -> None:
    REPLAYED.clear()
    crashes = sum(run_schedule(seed) for seed in range(SEEDS))
    assert crashes > SEEDS
    # The crashes really lose unsynced log files: recoveries had records to replay.
    assert sum(1 for count in REPLAYED if count > 0) > SEEDS // 4, REPLAYED[:50]


def test_one_journal_fsync_makes_many_partitions_durable() -> None:
    fs = SimFS()
    journal, logs = open_all(fs, 10**9, 1 << 20)
    for log in logs.values():
        log.set_epoch(1)
    fsyncs = fs.stats.fsyncs
    for log in logs.values():
        log.append(1, b"x" * 20)
    for log in logs.values():
        log.sync()
    assert fs.stats.fsyncs - fsyncs == 1
    assert all(log.durable_index == 1 for log in logs.values())
    assert journal.syncs >= 1


def test_a_truncated_suffix_is_not_replayed_back() -> None:
    fs = SimFS()
    _, logs = open_all(fs, 10**9, 1 << 20)
    log = logs[0]
    log.set_epoch(1)
    log.append_many([(1, b"a"), (1, b"b"), (1, b"c")])
    log.sync()
    log.truncate_after(1)
    log.set_epoch(2)
    log.append(2, b"B")
    log.sync()
    fs.crash(Random(3))
    _, logs = open_all(fs, 10**9, 1 << 20)
    assert [(e.epoch, e.record) for e in logs[0].entries()] == [(1, b"a"), (2, b"B")]


@pytest.mark.parametrize("keep", ["", "use", "compare"])
def test_a_damaged_unsynced_tail_is_cut_and_replayed(keep: str) -> None:
    fs = SimFS()
    journal, logs = open_all(fs, 10**9, 1 << 20)
    log = logs[1]
    log.set_epoch(1)
    log.append_many([(1, record_for(i, 30)) for i in range(1, 6)])
    log.sync()  # durable through the journal only: the log's own file was never synced
    segment = next(n for n in fs.listdir("/node/p1") if n.startswith("seg-"))
    inode = fs._inode(f"/node/p1/{segment}")
    inode.data[60] ^= 0xFF  # a bit flip in the middle of the unsynced records
    inode.synced[:] = inode.data
    for other in logs.values():
        other.close()
    journal.close()
    _, logs = open_all(fs, 10**9, 1 << 20, keep=keep)
    assert [e.record for e in logs[1].entries()] == [record_for(i, 30) for i in range(1, 6)]
    assert REPLAYED[-1] == 5  # cut, then refilled by the replay
    if keep == "use":  # the log served is the one that cut it
        assert logs[1].recovery.torn_tail_bytes > 0


def test_damage_before_the_checkpoint_is_still_damage() -> None:
    from planaria.storage import StorageDamaged

    fs = SimFS()
    journal, logs = open_all(fs, 10**9, 1 << 20)
    log = logs[2]
    log.set_epoch(1)
    log.append_many([(1, record_for(i, 30)) for i in range(1, 6)])
    log.sync()
    journal.checkpoint()  # the log's own file is synced: the journal forgets these records
    log.append(1, b"later")
    log.sync()
    segment = next(n for n in fs.listdir("/node/p2") if n.startswith("seg-"))
    inode = fs._inode(f"/node/p2/{segment}")
    inode.data[60] ^= 0xFF
    inode.synced[:] = inode.data
    for other in logs.values():
        other.close()
    journal.close()
    with pytest.raises(StorageDamaged):
        open_all(fs, 10**9, 1 << 20)


def test_group_committer_syncs_the_journal_once_per_batch() -> None:
    fs = SimFS()
    _, logs = open_all(fs, 10**9, 1 << 20)
    for log in logs.values():
        log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter(inline_when_idle=False) as committer:
            await committer.append(logs[0], 1, b"warm-up")
            fsyncs = fs.stats.fsyncs
            await asyncio.gather(
                *(committer.append(log, 1, b"x") for log in logs.values() for _ in range(5))
            )
            assert fs.stats.fsyncs - fsyncs <= 2  # one batch, maybe two: one fsync each

    asyncio.run(main())


def test_checkpoints_bound_the_journal() -> None:
    fs = SimFS()
    journal, logs = open_all(fs, 2000, 1 << 20)
    for log in logs.values():
        log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter(inline_when_idle=False) as committer:
            for round_ in range(100):
                await asyncio.gather(
                    *(committer.append(log, 1, record_for(round_, 40)) for log in logs.values())
                )

    asyncio.run(main())
    assert journal.checkpoints >= 5
    assert sum(1 for _ in journal.records()) < 100  # the rest were dropped at checkpoints
    for log in logs.values():
        log.close()
    journal.close()
    _, reopened = open_all(fs, 2000, 1 << 20)
    assert all(log.last_index == 100 for log in reopened.values())
