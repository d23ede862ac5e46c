"""Replica state snapshots on disk: the state codec, atomic writes, fallback from a damaged
snapshot, compaction that keeps disk use to the live data, and reopening from the tail."""

from __future__ import annotations

from random import Random
from types import MappingProxyType

import pytest

from planaria.core.codec import decode_state, encode_entry, encode_state, encode_state_parts
from planaria.core.messages import (
    AppliedWrites,
    ClientReply,
    Entry,
    ReplicaSnapshot,
    Set,
    Version,
)
from planaria.core.replica import Replica
from planaria.errors import InternalError
from planaria.storage import PartitionLog, SimFS, Snapshot, StorageDamaged, StorageError
from planaria.storage.persist import recovered_state, save_state

from ._helpers import open_sim

PATH = "/data/p0"


def fill(log: PartitionLog, count: int) -> None:
    """Append ``count`` protocol entries (epoch 1) and sync."""
    if log.epoch < 1:
        log.set_epoch(1)
    first = log.last_index + 1
    writes = [Entry(1, i, ("c", i), Set(b"k", b"%d" % i)) for i in range(first, first + count)]
    log.append_many([(e.epoch, encode_entry(e)) for e in writes])
    log.sync()


def state_at(index: int) -> ReplicaSnapshot:
    reply = ClientReply(3, ("c1", 7), value=b"old", applied=True, version=Version(1, 6), epoch=1)
    nothing = ClientReply(3, ("c2", 1), applied=False, epoch=1)
    return ReplicaSnapshot(
        partition=3,
        index=index,
        epoch=1,
        kv=MappingProxyType(
            {b"k": (b"v@%d" % index, Version(1, index)), b"": (b"", Version(1, 2))}
        ),
        dedup=MappingProxyType(
            {"c2": AppliedWrites((1,), {1: nothing}), "c1": AppliedWrites((7,), {7: reply})}
        ),
        dedup_window=16,
    )


def test_the_state_codec_round_trips_in_order() -> None:
    state = state_at(9)
    back = decode_state(9, 1, encode_state(state))
    assert back == state
    assert list(back.dedup) == ["c2", "c1"]  # least recently written first, as stored


def test_the_state_codec_round_trips_many_keys_column_by_column() -> None:
    rng = Random(5)
    kv = {
        rng.randbytes(rng.randrange(0, 40)): (
            rng.randbytes(rng.randrange(0, 300)),
            Version(rng.randrange(1, 9), rng.randrange(1, 1 << 40)),
        )
        for _ in range(2_000)
    }
    state = ReplicaSnapshot(3, 50, 2, MappingProxyType(kv), MappingProxyType({}))
    back = decode_state(50, 2, encode_state(state))
    assert back == state and list(back.kv) == list(kv)
    assert all(type(version) is Version for _, version in back.kv.values())
    assert hash(back.kv[next(iter(kv))][1]) == hash(kv[next(iter(kv))][1])


@pytest.mark.parametrize("cut", [1, 9, 17, 400])
def test_a_state_that_does_not_parse_is_our_bug_not_a_crash(cut: int) -> None:
    data = encode_state(state_at(9))
    with pytest.raises(InternalError, match="does not parse"):
        decode_state(9, 1, data[:-cut])
    with pytest.raises(InternalError, match="does not parse"):
        decode_state(9, 1, data + b"x")


def saved_states(fs: SimFS, rounds: int, per_round: int = 10) -> PartitionLog:
    log = open_sim(fs, segment_bytes=400)
    for _ in range(rounds):
        fill(log, per_round)
        log.set_commit_index(log.last_index)
        save_state(log, state_at(log.last_index - 2))
    return log


def snapshot_files(fs: SimFS) -> list[str]:
    return [name for name in fs.listdir(PATH) if name.startswith("snap-")]


def test_reopen_loads_the_newest_snapshot_and_replays_only_the_log_it_keeps() -> None:
    fs = SimFS()
    log = saved_states(fs, 20)
    assert log.snapshot_index == 198 and len(snapshot_files(fs)) == 2
    log.close()
    log = open_sim(fs, segment_bytes=400)
    snapshot, entries = recovered_state(log)
    assert snapshot == state_at(198)
    # Kept: the log from the older snapshot's segment on (never from 1), to the end.
    assert 188 - 10 < entries[0].index <= 189 and entries[-1].index == 200
    assert log.recovery.records == len(entries) < 30


@pytest.mark.parametrize("before", [0, 3, 1000])
def test_a_rebuild_decodes_at_most_the_entries_asked_for_before_the_snapshot(
    before: int,
) -> None:
    """The files keep whole segments the snapshot covers; a node's rebuild takes only its
    catch-up tail of them (its replica would drop the rest at its next compaction)."""
    fs = SimFS()
    log = open_sim(fs, segment_bytes=1 << 20)  # one segment: nothing compacted
    fill(log, 60)
    log.set_commit_index(60)
    save_state(log, state_at(50))
    snapshot, entries = recovered_state(log, entries_before_snapshot=before)
    assert snapshot == state_at(50) and entries[-1].index == 60
    assert entries[0].index == max(1, 51 - before)
    assert [e.index for e in recovered_state(log)[1]] == list(range(1, 61))  # all, by default
    replica = Replica("n1", 3, snapshot=snapshot, log=entries, epoch=1, commit_index=60)
    assert replica.applied_index == 60 and replica.last_index == 60


def test_disk_use_follows_the_live_data_not_the_writes() -> None:
    fs = SimFS()
    log = saved_states(fs, 10)
    small = log.log_bytes
    log.close()
    log = saved_states(fs, 200)
    assert log.last_index == 2100
    assert log.log_bytes <= 2 * small and log.log_entries < 40
    assert len(snapshot_files(fs)) == 2


def corrupt(fs: SimFS, name: str) -> None:
    inode = fs._dirs[PATH][name]
    inode.data[len(inode.data) // 2] ^= 0x10


def test_a_damaged_snapshot_falls_back_to_the_older_one() -> None:
    fs = SimFS()
    saved_states(fs, 5).close()
    older, newest = snapshot_files(fs)
    corrupt(fs, newest)
    log = open_sim(fs, segment_bytes=400)
    assert log.snapshot_index == 38 and log.recovery.damaged_snapshots[0].startswith(newest)
    snapshot, entries = recovered_state(log)
    assert snapshot == state_at(38) and entries[-1].index == 50
    assert snapshot_files(fs) == [older]  # the damaged one is gone


def test_with_no_good_snapshot_left_the_partition_is_damaged() -> None:
    fs = SimFS()
    saved_states(fs, 5).close()
    for name in snapshot_files(fs):
        corrupt(fs, name)
    with pytest.raises(StorageDamaged, match="checksum"):
        open_sim(fs, segment_bytes=400)


def test_a_fallback_the_log_no_longer_reaches_is_damage() -> None:
    fs = SimFS()
    log = open_sim(fs, segment_bytes=400)
    fill(log, 10)
    log.save_snapshot(Snapshot(8, 1, encode_state(state_at(8))))
    log.install_snapshot(Snapshot(100, 1, encode_state(state_at(100))))
    assert len(snapshot_files(fs)) == 1  # an install leaves nothing older to fall back to
    log.close()
    corrupt(fs, snapshot_files(fs)[0])
    with pytest.raises(StorageDamaged):
        open_sim(fs, segment_bytes=400)


@pytest.mark.parametrize("seed", range(40))
def test_a_crash_while_a_snapshot_is_written_leaves_a_good_state(seed: int) -> None:
    """Power loss at a random write or fsync of a snapshot round: reopening finds the old
    snapshot or the new one, whole, and the log it needs."""
    rng = Random(seed)
    fs = SimFS()
    log = saved_states(fs, 3)
    fill(log, 10)
    log.set_commit_index(log.last_index)
    ops = ["append", "fsync", "rename", "fsync_dir", "remove"]
    fs.fail_next(rng.choice(ops))
    with pytest.raises(StorageError):  # every op picked happens in a snapshot round
        save_state(log, state_at(log.last_index - 1))
    fs.crash(rng)
    log = open_sim(fs, segment_bytes=400)
    snapshot, entries = recovered_state(log)
    assert snapshot in (state_at(28), state_at(39))
    assert snapshot is not None and entries[0].index <= snapshot.index + 1
    assert [e.index for e in entries] == list(range(entries[0].index, log.last_index + 1))
    assert not [name for name in fs.listdir(PATH) if name.endswith(".tmp")]


def test_the_recovered_log_rebuilds_a_replica() -> None:
    from planaria.core.replica import Replica

    fs = SimFS()
    log = open_sim(fs)
    log.set_epoch(1)
    entries = [Entry(1, 1)] + [Entry(1, i, ("c", i), Set(b"k", b"%d" % i)) for i in range(2, 9)]
    log.append_many([(e.epoch, encode_entry(e)) for e in entries])
    log.set_commit_index(8)
    source = Replica("a", 0, log=entries, epoch=1, commit_index=8)
    save_state(log, source.snapshot())
    log.close()
    snapshot, kept = recovered_state(open_sim(fs))
    replica = Replica("a", 0, snapshot=snapshot, log=kept, epoch=1, commit_index=8)
    assert replica.applied == source.applied and replica.dedup == source.dedup


def test_a_snapshot_of_the_whole_log_lets_a_big_segment_go() -> None:
    """Segments far larger than a snapshot interval: the segment a snapshot covers is sealed
    so the next compaction can drop it (the active one never goes)."""
    fs = SimFS()
    log = open_sim(fs, segment_bytes=1 << 20)
    for _ in range(50):
        fill(log, 10)
        log.set_commit_index(log.last_index)
        save_state(log, state_at(log.last_index))
    assert log.last_index == 500
    assert log.log_entries <= 20 and log.first_index > 480


def test_the_catch_up_tail_kept_behind_a_snapshot_survives_a_reopen() -> None:
    fs = SimFS()
    log = open_sim(fs, segment_bytes=400)
    for _ in range(10):
        fill(log, 10)
        log.set_commit_index(log.last_index)
        save_state(log, state_at(log.last_index), keep_after=log.last_index - 30)
    assert log.first_index <= 71  # every record after keep_after is kept
    first = log.first_index
    log.close()
    log = open_sim(fs, segment_bytes=400)
    assert log.first_index == first and log.snapshot_index == 100
    snapshot, entries = recovered_state(log)
    assert snapshot == state_at(100)
    assert entries[0].index == first and entries[-1].index == 100


def big_state(keys: int) -> ReplicaSnapshot:
    kv = {b"key-%d" % i: (b"v" * (i % 7), Version(1, i + 1)) for i in range(keys)}
    return ReplicaSnapshot(3, keys, 1, MappingProxyType(kv), state_at(keys).dedup, 16)


@pytest.mark.parametrize(("keys", "per_part"), [(0, 1), (1, 1), (1000, 7), (1000, 1024)])
def test_the_state_encoded_in_pieces_is_the_same_bytes(keys: int, per_part: int) -> None:
    state = big_state(keys)
    parts = list(encode_state_parts(state, keys_per_part=per_part))
    # The work is cut in steps of ``per_part`` keys, each ending with an empty piece where a
    # node gives its event loop a turn; the pieces after the last step cost nothing.
    assert parts.count(b"") == -(-keys // per_part)
    assert b"".join(parts) == encode_state(state)
    assert decode_state(keys, 1, b"".join(parts)) == state


def test_a_snapshot_file_written_ahead_is_put_in_place_by_save() -> None:
    """write_snapshot_file (off the disk thread) then save_snapshot(prewritten=True): the
    same snapshot as one written in place, and no temporary file left."""
    fs = SimFS()
    log = saved_states(fs, 2)
    fill(log, 10)
    log.set_commit_index(log.last_index)
    stored = Snapshot(25, 1, encode_state(state_at(25)))
    log.write_snapshot_file(stored)
    assert [n for n in fs.listdir(PATH) if n.endswith(".tmp")] == [f"snap-{25:020d}.snap.pre.tmp"]
    log.save_snapshot(stored, prewritten=True)
    assert log.snapshot_index == 25
    assert not [n for n in fs.listdir(PATH) if n.endswith(".tmp")]
    log.close()
    snapshot, _entries = recovered_state(open_sim(fs, segment_bytes=400))
    assert snapshot == state_at(25)


def test_a_snapshot_file_written_ahead_is_discarded_or_removed_on_open() -> None:
    fs = SimFS()
    log = saved_states(fs, 2)
    fill(log, 10)
    log.write_snapshot_file(Snapshot(25, 1, encode_state(state_at(25))))
    log.discard_snapshot_file(25)
    log.discard_snapshot_file(25)  # gone already: nothing to do
    assert not [n for n in fs.listdir(PATH) if n.endswith(".tmp")]
    log.write_snapshot_file(Snapshot(26, 1, encode_state(state_at(26))))
    log.close()  # a crash before the rename: the next open removes the file
    log = open_sim(fs, segment_bytes=400)
    assert log.snapshot_index == 18
    assert not [n for n in fs.listdir(PATH) if n.endswith(".tmp")]


def test_a_failed_write_of_a_snapshot_file_ahead_leaves_the_log_writable() -> None:
    """The file is written outside the disk thread: a failure reaches the caller (the node
    then treats its storage as failed) without touching the log's own state."""
    fs = SimFS()
    log = saved_states(fs, 2)
    fs.fail_next("fsync")
    with pytest.raises(StorageError):
        log.write_snapshot_file(Snapshot(18, 1, encode_state(state_at(18))))
    assert log.failure is None
    fill(log, 1)


def test_sealing_and_compacting_later_gives_the_same_log() -> None:
    """save_snapshot(seal=False) then seal_and_compact (a node's two turns between write
    batches) leaves the files one save_snapshot leaves; reopened between the two, the
    log is whole (the old segments are still there)."""
    one, two = SimFS(), SimFS()
    for fs in (one, two):
        log = saved_states(fs, 3)
        fill(log, 10)
        log.set_commit_index(log.last_index)
        stored = Snapshot(38, 1, encode_state(state_at(38)))
        if fs is one:
            log.save_snapshot(stored)
        else:
            log.save_snapshot(stored, seal=False)
            log.close()
            log = open_sim(fs, segment_bytes=400)
            assert log.snapshot_index == 38 and log.first_index < 28
            log.seal_and_compact()
        log.close()
    assert one.listdir(PATH) == two.listdir(PATH)
    snapshot, entries = recovered_state(open_sim(two, segment_bytes=400))
    assert snapshot == state_at(38) and entries[-1].index == 40


def test_a_segment_the_snapshot_covers_is_checked_when_read_not_when_opened() -> None:
    from planaria.storage.format import RECORD_HEADER, SEGMENT_HEADER

    fs = SimFS()
    log = open_sim(fs, segment_bytes=400)
    for _ in range(6):  # a batch goes into one segment
        fill(log, 5)
    log.set_commit_index(30)
    # keep_after=0: compaction keeps every segment (the ones for a lagging peer's catch-up).
    log.save_snapshot(Snapshot(25, 1, encode_state(state_at(25))), keep_after=0)
    fill(log, 5)
    log.close()
    firsts = sorted(int(n[4:24]) for n in fs.listdir(PATH) if n.startswith("seg-"))
    assert firsts[0] == 1 and firsts[1] - 1 <= 25  # the first segment is wholly covered
    inode = fs._dirs[PATH][f"seg-{firsts[0]:020d}.log"]
    inode.data[SEGMENT_HEADER.size + RECORD_HEADER.size + 2] ^= 0x10  # record 1's payload
    inode.synced[:] = inode.data
    log = open_sim(fs, segment_bytes=400)  # opening it does not read record 1
    assert log.recovery.segments_unchecked >= 1 and log.first_index == 1
    with pytest.raises(StorageDamaged, match="checksum"):  # reading it does
        log.read(1)
    assert log.read(firsts[1])[0].index == firsts[1]  # the rest reads
    # A restart that wants the entries before the snapshot for catch-up leaves them out,
    # says why, and has the whole state and every entry after the snapshot.
    snapshot, entries = recovered_state(log)
    assert snapshot == state_at(25) and [e.index for e in entries] == list(range(26, 36))
    assert log.recovery.covered_damage is not None and "checksum" in log.recovery.covered_damage
    log.close()
    # The same damage after the snapshot is found at the opening, as before.
    fs = SimFS()
    log = open_sim(fs, segment_bytes=400)
    for _ in range(6):
        fill(log, 5)
    log.close()
    inode = fs._dirs[PATH]["seg-00000000000000000001.log"]
    inode.data[SEGMENT_HEADER.size + RECORD_HEADER.size + 2] ^= 0x10
    inode.synced[:] = inode.data
    with pytest.raises(StorageDamaged, match="not the last segment"):
        open_sim(fs, segment_bytes=400)
