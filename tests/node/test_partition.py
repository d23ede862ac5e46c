"""The partition runtime: its pure helpers (reply coalescing), the shared Persist writer, and
its stages (effects wait for the disk; a failed persist says nothing and rebuilds)."""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from planaria.core.messages import (
    Append,
    AppendReply,
    ClientRequest,
    Entry,
    PartitionConfig,
    Persist,
    Reply,
    Send,
    Set,
    SnapshotAck,
    SnapshotChunk,
)
from planaria.core.pipeline import latest_acks
from planaria.core.replica import ReplicaSettings, Role
from planaria.core.transfer import SnapshotReceiver
from planaria.errors import UsageError
from planaria.node._partition import (
    CHUNK_WRITES_MAX,
    LOST_ALL,
    PartitionRuntime,
    RecoveredLogs,
    _without_gc,
    _write_behind,
    _write_paced,
    claim_data_id,
    claim_lost_all,
    drop_data_id_new,
    lost_partitions,
)
from planaria.storage import FsyncPolicy, OsFS, PartitionLog, StorageError, StorageFull
from planaria.storage.format import Snapshot
from planaria.storage.persist import INCOMING_SNAPSHOT, PersistRuleBroken, write_persists

CONFIG = PartitionConfig(0, 1, "n1", ("n1", "n2", "n3"), frozenset({"n1", "n2", "n3"}), 1)


def ack(to: str, match: int, *, epoch: int = 1, success: bool = True) -> Send:
    return Send(to, AppendReply(0, epoch, "n2", success, match, 0 if success else match))


def test_only_the_most_telling_ack_per_primary_is_sent() -> None:
    sends = [ack("n1", 12), ack("n3", 4), ack("n1", 7), ack("n1", 9, success=False)]
    kept = latest_acks(sends)
    assert kept == [ack("n1", 12), ack("n3", 4), ack("n1", 9, success=False)]
    newer_epoch = [ack("n1", 12), ack("n1", 3, epoch=2)]
    assert latest_acks(newer_epoch) == [ack("n1", 3, epoch=2)]
    distinct = [ack("n1", 1), ack("n3", 1)]
    assert latest_acks(distinct) is distinct


def test_persists_apply_in_order_with_truncation_and_epochs(tmp_path: Path) -> None:
    log = PartitionLog.open(OsFS(), str(tmp_path / "p0"), policy=FsyncPolicy("always"))
    write = Set(b"k", b"v")
    first = (Entry(1, 1), Entry(1, 2, ("c", 1), write), Entry(1, 3, ("c", 2), write))
    assert write_persists(log, [Persist(0, None, first, epoch=1, commit_index=2)]) == 3
    assert (log.last_index, log.epoch, log.commit_index) == (3, 1, 2)
    # A new primary's log replaces the uncommitted entry 3 (epoch 2).
    replacement = (Entry(2, 3), Entry(2, 4, ("d", 1), write))
    write_persists(log, [Persist(0, 2, replacement, epoch=2, commit_index=2)])
    assert [(e.epoch, e.index) for e in log.entries()] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    assert log.epoch == 2
    log.close()


@pytest.mark.parametrize(
    ("persist", "rule"),
    [
        (Persist(0, None, (), epoch=1, commit_index=0), "epoch-decreased"),
        (Persist(0, 1, (), epoch=2, commit_index=0), "truncated-committed"),
        (Persist(0, None, (Entry(2, 5),), epoch=2, commit_index=0), "persist-order"),
        (Persist(0, 2, (Entry(2, 4),), epoch=2, commit_index=0), "persist-order"),
    ],
)
def test_a_persist_breaking_a_core_rule_writes_nothing(
    tmp_path: Path, persist: Persist, rule: str
) -> None:
    log = PartitionLog.open(OsFS(), str(tmp_path / "p0"), policy=FsyncPolicy("always"))
    entries = (Entry(2, 1), Entry(2, 2, ("c", 1), Set(b"k", b"v")), Entry(2, 3))
    write_persists(log, [Persist(0, None, entries, epoch=2, commit_index=2)])
    with pytest.raises(PersistRuleBroken) as broken:
        write_persists(log, [persist])
    assert broken.value.rule == rule
    assert (log.last_index, log.epoch, log.commit_index) == (3, 2, 2)
    log.close()


def test_gathered_appends_are_written_before_a_truncation_and_a_broken_rule(
    tmp_path: Path,
) -> None:
    """write_persists gathers consecutive appends into one write: a truncation into what it
    gathered, an epoch change, and a broken rule still find the persists before them
    written, in order."""
    log = PartitionLog.open(OsFS(), str(tmp_path / "p0"), policy=FsyncPolicy("always"))
    write = Set(b"k", b"v")
    one_by_one = [
        Persist(0, None, (Entry(1, index, ("c", index), write),), epoch=1, commit_index=index - 1)
        for index in range(1, 5)
    ]
    # A new primary's (epoch 2) replaces entry 4, gathered but not yet written.
    replaced = Persist(0, 3, (Entry(2, 4), Entry(2, 5)), epoch=2, commit_index=3)
    assert write_persists(log, [*one_by_one, replaced]) == 6
    assert [(e.epoch, e.index) for e in log.entries()] == [
        (1, 1), (1, 2), (1, 3), (2, 4), (2, 5)
    ]  # fmt: skip
    assert (log.epoch, log.commit_index) == (2, 3)
    more = [
        Persist(0, None, (Entry(2, index, ("c", index), write),), epoch=2, commit_index=index - 1)
        for index in (6, 7)
    ]
    out_of_order = Persist(0, None, (Entry(2, 9),), epoch=2, commit_index=6)
    with pytest.raises(PersistRuleBroken) as broken:
        write_persists(log, [*more, out_of_order])
    assert broken.value.rule == "persist-order"
    assert (log.last_index, log.commit_index) == (7, 6)
    log.close()


def last_index(sends: list[Send]) -> int:
    return max(e.index for s in sends if isinstance(s.message, Append) for e in s.message.entries)


class FakeCommitter:
    """Holds every submitted stage until the test says the disk is done with it."""

    def __init__(self) -> None:
        self.jobs: list[tuple[PartitionLog, Callable[[PartitionLog], int], Callable[..., None]]]
        self.jobs = []

    def submit(
        self, log: PartitionLog, job: Callable[[PartitionLog], int], done: Callable[..., None]
    ) -> None:
        self.jobs.append((log, job, done))

    async def call(self, fn: Callable[..., object], *args: object) -> object:
        return fn(*args)

    def finish(self, failure: StorageError | None = None) -> None:
        log, job, done = self.jobs.pop(0)
        if failure is not None:
            done(False, failure)
            return
        value = job(log)
        log.sync()
        done(True, value)


class Harness:
    """A primary's PartitionRuntime on a real log, its disk held by a FakeCommitter."""

    def __init__(
        self,
        directory: Path,
        executor: ThreadPoolExecutor,
        *,
        session: int | None = None,
        data_id_new: bool = False,
        recovered: RecoveredLogs | None = None,
        committer: FakeCommitter | None = None,
        chunk_writer: ThreadPoolExecutor | None = None,
    ) -> None:
        self.sends: list[Send] = []
        self.lost: list[tuple[int, bool]] = []  # (partition, replica built yet) per loss
        self.replies: list[Reply] = []
        self.resigned: list[int] = []
        self.committer = committer if committer is not None else FakeCommitter()
        self.runtime = PartitionRuntime(
            "n1", 0, directory=directory, policy=FsyncPolicy("always"),
            replica_settings=ReplicaSettings(), executor=executor,
            committer=self.committer,  # type: ignore[arg-type]
            clock_ms=lambda: 0.0, send=self.sends.append, reply=self.replies.append,
            propose=lambda proposal: None, on_step_down=lambda partition: None,
            on_storage_failure=self.resigned.append, session=lambda: session,
            on_lost=self._on_lost, data_id_new=lambda: data_id_new, recovered=recovered,
            chunk_writer=chunk_writer,
        )  # fmt: skip

    async def _on_lost(self, partition: int) -> None:
        self.lost.append((partition, self.runtime.loss is not None))


def test_effects_wait_for_their_stage_and_later_persists_join_an_unwritten_one(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            harness = Harness(tmp_path / "p0", executor)
            runtime, committer = harness.runtime, harness.committer
            sends, replies = harness.sends, harness.replies
            await runtime.open()
            runtime.deliver(CONFIG)  # primary of epoch 1: the epoch must be persisted first
            runtime.tick(math.inf)  # the node's lease
            assert sends == [] and len(committer.jobs) == 1  # not even the Appends leave
            committer.finish()
            barrier = last_index(sends)
            for backup in ("n2", "n3"):
                runtime.deliver(AppendReply(0, 1, backup, True, barrier, 0))
            while committer.jobs:
                committer.finish()
            sends.clear()
            for seq in (1, 2):
                assert runtime.deliver(ClientRequest(0, f"c{seq}", ("c", seq), Set(b"k", b"v")))
            # The epoch is durable: the Appends leave without waiting for the disk, at the
            # end of the loop's turn, both writes in one Append per backup; the second write
            # joined the stage of the first, which the disk had not started.
            assert sends == []
            await asyncio.sleep(0)
            appends = [(s.to, s.message) for s in sends if isinstance(s.message, Append)]
            assert [to for to, _ in appends] == ["n2", "n3"]
            for _, append in appends:
                assert [e.request_id for e in append.entries] == [("c", 1), ("c", 2)]
            assert runtime.appends_merged == 2
            assert len(committer.jobs) == 1
            last = last_index(sends)
            for backup in ("n2", "n3"):
                runtime.deliver(AppendReply(0, 1, backup, True, last, 0))
            assert replies == []  # committed, but the primary's own copy is not durable yet
            while committer.jobs:
                committer.finish()
            assert [(r.client, r.reply.error) for r in replies] == [("c1", None), ("c2", None)]
            assert runtime.stages_pending == 0
            await runtime.close()

    asyncio.run(scenario())


def test_a_failed_persist_says_nothing_and_rebuilds_from_disk(tmp_path: Path) -> None:
    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            harness = Harness(tmp_path / "p0", executor)
            runtime, committer = harness.runtime, harness.committer
            await runtime.open()
            runtime.deliver(CONFIG)
            runtime.tick(math.inf)
            runtime.deliver(ClientRequest(0, "client", ("c", 1), Set(b"k", b"v")))
            committer.finish(StorageFull("disk full", path=str(tmp_path)))
            assert harness.sends == [] and harness.replies == []
            assert isinstance(runtime.storage_failure, StorageFull)
            assert harness.resigned == [0]  # the primary hands the partition on
            assert not runtime.deliver(ClientRequest(0, "client", ("c", 2), Set(b"k", b"w")))
            for _ in range(200):  # bounded: the rebuild reopens the log in the executor
                if runtime.deliver(ClientRequest(0, "client", ("c", 3), Set(b"k", b"x"))):
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("the runtime never rebuilt itself")
            assert runtime.log is not None and runtime.log.epoch == 0  # nothing was written
            while committer.jobs:
                committer.finish()
            await runtime.close()

    asyncio.run(scenario())


def test_the_log_the_journal_replay_opened_is_taken_once_then_the_disk_is_read(
    tmp_path: Path,
) -> None:
    log = PartitionLog.open(OsFS(), str(tmp_path / "p0"), policy=FsyncPolicy("always"))
    entries = (Entry(1, 1), Entry(1, 2, ("c", 1), Set(b"k", b"v")))
    write_persists(log, [Persist(0, None, entries, epoch=1, commit_index=2)])
    log.sync()
    recovered = RecoveredLogs()
    recovered.keep(0, log)
    other = PartitionLog.open(OsFS(), str(tmp_path / "p1"))
    with pytest.raises(UsageError):  # one per partition
        recovered.keep(0, other)
    other.close()
    unclaimed = PartitionLog.open(OsFS(), str(tmp_path / "p9"))
    recovered.keep(9, unclaimed)

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            harness = Harness(tmp_path / "p0", executor, recovered=recovered)
            runtime = harness.runtime
            await runtime.open()
            assert runtime.log is log  # not opened a second time
            assert runtime.replica.last_index == 2 and runtime.log.journal is None
            assert recovered.take(0) is None and len(recovered) == 1
            await runtime.reset()  # a rebuild reads the disk again
            assert runtime.log is not log and log.closed
            assert runtime.replica.last_index == 2
            while harness.committer.jobs:
                harness.committer.finish()
            await runtime.close()

    asyncio.run(scenario())
    recovered.close_all()  # the node's, once every partition of its configs opened
    assert unclaimed.closed and len(recovered) == 0 and recovered.take(9) is None
    PartitionLog.open(OsFS(), str(tmp_path / "p9")).close()  # its lock was released


def test_a_damaged_log_is_registered_lost_until_its_config_records_it(tmp_path: Path) -> None:
    log = PartitionLog.open(OsFS(), str(tmp_path / "p0"), policy=FsyncPolicy("always"))
    entries = (Entry(1, 1), Entry(1, 2, ("c", 1), Set(b"k", b"v")))
    write_persists(log, [Persist(0, None, entries, epoch=1, commit_index=2)])
    log.close()
    [segment] = (tmp_path / "p0").glob("seg-*.log")
    data = bytearray(segment.read_bytes())
    data[0] ^= 0xFF  # a bad sector in the segment header: damage, not a torn tail
    segment.write_bytes(bytes(data))

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            harness = Harness(tmp_path / "p0", executor, session=7)
            runtime = harness.runtime
            await runtime.open()
            # Marked, and registered before the replica took any input.
            [(partition, loss)] = lost_partitions(tmp_path).items()
            assert partition == 0 and harness.lost == [(0, True)]
            assert runtime.replica.last_index == 0 and runtime.loss == loss
            # A config of the node's old session names it primary: it does not lead it.
            runtime.deliver(PartitionConfig(0, 1, "n1", ("n1", "n2"), frozenset({"n1"}), 1, 3))
            assert runtime.replica.role is Role.BACKUP
            # The config records the loss: the marker goes.
            recorded = PartitionConfig(
                0, 2, "n2", ("n1", "n2"), frozenset({"n2"}), 2, wiped=(("n1", loss),)
            )
            runtime.deliver(recorded)
            assert lost_partitions(tmp_path) == {} and runtime.loss is None
            while harness.committer.jobs:
                harness.committer.finish()
            await runtime.close()

    asyncio.run(scenario())


def test_a_replaced_disk_makes_every_log_lost(tmp_path: Path) -> None:
    (tmp_path / LOST_ALL).touch()  # what the operator does before starting on a new disk
    loss = claim_lost_all(tmp_path)  # what the node does at start: names the loss
    assert loss is not None and claim_lost_all(tmp_path) == loss

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            harness = Harness(tmp_path / "p0", executor, session=2)
            await harness.runtime.open()
            assert harness.runtime.loss == loss and harness.lost == [(0, True)]
            await harness.runtime.close()

    asyncio.run(scenario())


def test_a_new_data_directory_builds_its_replicas_lost_until_confirmed(tmp_path: Path) -> None:
    data_id, new = claim_data_id(tmp_path)  # the first start: made, and new
    assert new and claim_data_id(tmp_path) == (data_id, True)  # a restart: the same id
    drop_data_id_new(tmp_path)  # every config that lists the node knows it
    assert claim_data_id(tmp_path) == (data_id, False)

    async def scenario(new: bool) -> Role:
        with ThreadPoolExecutor(1) as executor:
            harness = Harness(tmp_path / str(new) / "p0", executor, session=2, data_id_new=new)
            runtime = harness.runtime
            await runtime.open()
            assert harness.lost == []  # nothing registered as lost: the controller judges
            # A config of the node's old session (incarnation 1) names it primary: a
            # replica on a new disk must not lead it (its empty log knows no epoch it led).
            runtime.deliver(PartitionConfig(0, 3, "n1", ("n1", "n2"), frozenset({"n1"}), 5, 1))
            role = runtime.replica.role
            while harness.committer.jobs:
                harness.committer.finish()
            await runtime.close()
            return role

    assert asyncio.run(scenario(True)) is Role.BACKUP
    assert asyncio.run(scenario(False)) is Role.PRIMARY  # what it would do otherwise


def test_incoming_snapshot_chunks_waiting_for_the_disk_are_bounded(tmp_path: Path) -> None:
    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            harness = Harness(tmp_path / "p0", executor)
            runtime = harness.runtime
            await runtime.open()
            receiver = SnapshotReceiver("n1")
            for offset in range(0, 10 * (CHUNK_WRITES_MAX + 4), 10):
                # A peer ignoring acknowledgements: chunks faster than the disk writes them.
                chunk = SnapshotChunk(0, 1, "n2", 5, 1, offset, 1000, 0, b"x" * 10)
                runtime.on_snapshot_chunk(chunk, receiver)
            assert receiver.receiving == {0: (10 * CHUNK_WRITES_MAX, 1000)}  # the rest dropped
            for _ in range(100):  # bounded: the writes finish on the loop
                if len(harness.sends) == CHUNK_WRITES_MAX:
                    break
                await asyncio.sleep(0.001)
            acks = [s.message for s in harness.sends]
            assert [a.next_offset for a in acks if isinstance(a, SnapshotAck)] == list(
                range(10, 10 * CHUNK_WRITES_MAX + 1, 10)
            )
            await runtime.close()

    asyncio.run(scenario())


class HeldCommitter(FakeCommitter):
    """A disk thread busy until released: its calls (``call``) wait."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()

    async def call(self, fn: Callable[..., object], *args: object) -> object:
        await self.released.wait()
        return fn(*args)


def test_incoming_snapshot_chunks_are_written_off_the_disk_thread(tmp_path: Path) -> None:
    """Each received chunk is fsynced as it is written: in the disk thread, that held up
    the node's persists of every partition, and the transfer's acks waited for their
    batches. The chunk writer writes them, in order, while the disk thread is busy."""

    async def scenario() -> None:
        committer = HeldCommitter()
        with ThreadPoolExecutor(1) as executor, ThreadPoolExecutor(1) as chunk_writer:
            harness = Harness(
                tmp_path / "p0", executor, committer=committer, chunk_writer=chunk_writer
            )
            runtime = harness.runtime
            await runtime.open()
            receiver = SnapshotReceiver("n1")
            for offset in range(0, 50, 10):
                chunk = SnapshotChunk(0, 1, "n2", 5, 1, offset, 1000, 0, b"x" * 10)
                runtime.on_snapshot_chunk(chunk, receiver)
            for _ in range(2000):  # the disk thread stays busy all along
                if len(harness.sends) == 5:
                    break
                await asyncio.sleep(0.005)
            acks = [s.message for s in harness.sends if isinstance(s.message, SnapshotAck)]
            assert [a.next_offset for a in acks] == [10, 20, 30, 40, 50]
            assert (tmp_path / "p0" / INCOMING_SNAPSHOT).read_bytes() == b"x" * 50
            committer.released.set()
            await runtime.close()

    asyncio.run(scenario())


def test_recovery_runs_with_the_garbage_collector_paused_then_restored() -> None:
    """The collector is off while a log's state is decoded, then back as it was."""
    was = gc.isenabled()
    try:
        gc.enable()
        assert _without_gc(gc.isenabled) is False
        assert gc.isenabled()
        gc.disable()
        assert _without_gc(lambda: 7) == 7
        assert not gc.isenabled()  # not turned on by the pause's end
        gc.enable()
        frozen = gc.get_freeze_count()
        with pytest.raises(ZeroDivisionError):
            _without_gc(lambda: 1 // 0, freeze=True)
        assert gc.isenabled()
        assert gc.get_freeze_count() == frozen  # a failed decode froze nothing
        decoded = _without_gc(lambda: [[i] for i in range(1000)], freeze=True)
        assert gc.get_freeze_count() >= frozen + len(decoded)  # out of later collections
        assert gc.isenabled()
    finally:
        if not was:
            gc.disable()


def test_a_snapshot_file_rests_as_long_as_its_slices_took_not_its_wait_for_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    rests: list[float] = []
    monkeypatch.setattr("planaria.node._partition.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("planaria.node._partition.time.sleep", rests.append)

    class SlowDisk:
        def write_snapshot_file(
            self, snapshot: Snapshot, *, after_slice: Callable[[], None] | None = None
        ) -> None:
            assert after_slice is not None
            for _ in range(3):
                clock[0] += 0.25  # a slice written and fsynced
                after_slice()

    clock[0] = 50.0  # queued behind other partitions' snapshot files meanwhile
    _write_paced(SlowDisk(), Snapshot(1, 1, b""))
    assert rests == [0.25, 0.25, 0.25]


class _FakeSegment:
    def __init__(self, path: str | None) -> None:
        self.active_segment_path = path


def test_write_behind_writes_the_active_segment_and_tolerates_it_gone(tmp_path: Path) -> None:
    log = PartitionLog.open(OsFS(), str(tmp_path / "p0"))
    log.set_epoch(1)
    log.append_many([(1, b"x" * 100) for _ in range(50)])
    path = log.active_segment_path
    assert path is not None and Path(path).name.startswith("seg-")
    _write_behind(log)  # through another descriptor, while the log's stays open
    assert log.last_index == 50
    log.close()
    _write_behind(_FakeSegment(None))  # mid-install: no segment to write
    _write_behind(_FakeSegment(str(tmp_path / "compacted-meanwhile")))
    # A file that cannot be synced is a storage failure, not a hint to drop.
    with pytest.raises(StorageError, match="ahead"):
        _write_behind(_FakeSegment("/dev/null"))
