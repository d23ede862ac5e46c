"""GroupCommitter: batching, durability before the ack, errors, backpressure, policies."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from planaria._native import compiled
from planaria.errors import UsageError
from planaria.storage import (
    FsyncPolicy,
    GroupCommitter,
    OsFS,
    PartitionLog,
    SimFS,
    Snapshot,
    StorageError,
    StorageFailed,
    StorageFull,
)

from ._helpers import CountingFS, open_sim, record_for


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    fs = CountingFS(OsFS())
    log = PartitionLog.open(fs, str(tmp_path))
    log.set_epoch(1)
    fsyncs_before = fs.fsyncs

    async def main() -> list[int]:
        async with GroupCommitter() as committer:
            durable_at_ack: list[bool] = []

            async def writer(n: int) -> int:
                index = await committer.append(log, 1, record_for(n))
                durable_at_ack.append(log.durable_index >= index)
                return index

            indexes = await asyncio.gather(*(writer(n) for n in range(300)))
            assert all(durable_at_ack)
            assert committer.stats.jobs == 300
            assert committer.stats.batch_size_max > 1
            return list(indexes)

    indexes = asyncio.run(main())
    assert sorted(indexes) == list(range(1, 301))
    fsyncs = fs.fsyncs - fsyncs_before
    assert 1 <= fsyncs < 300 / 4, fsyncs
    log.close()
    log = PartitionLog.open(OsFS(), str(tmp_path))
    assert len(list(log.entries())) == 300
    log.close()


def test_single_writer_gets_one_fsync_per_append() -> None:
    fs = SimFS()
    log = open_sim(fs)
    log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter() as committer:
            for n in range(5):
                assert await committer.append(log, 1, b"r%d" % n) == n + 1
                assert log.durable_index == n + 1

    fsyncs_before = fs.stats.fsyncs
    asyncio.run(main())
    assert fs.stats.fsyncs - fsyncs_before == 5


def test_write_error_fails_the_whole_batch_and_refuses() -> None:
    fs = SimFS()
    log = open_sim(fs, preallocate_bytes=0)
    log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter(inline_when_idle=False) as committer:
            assert await committer.append(log, 1, b"ok") == 1
            fs.capacity_bytes = fs.used_bytes() + 60
            results = await asyncio.gather(
                *(committer.append(log, 1, b"z" * 30) for _ in range(8)), return_exceptions=True
            )
            # Nothing of the failed batch is acknowledged: the records written before the
            # full disk were never synced (their outcome is unknown, as after a crash).
            assert all(isinstance(r, StorageError) for r in results), results
            assert any(isinstance(r, StorageFull) for r in results), results
            with pytest.raises(StorageFailed):
                await committer.append(log, 1, b"later")

    asyncio.run(main())
    assert log.durable_index == 1
    log.close()
    fs.capacity_bytes = None
    records = [e.record for e in open_sim(fs).entries()]
    assert records[0] == b"ok" and set(records[1:]) <= {b"z" * 30}, records


def test_fsync_error_acks_nothing() -> None:
    fs = SimFS()
    log = open_sim(fs)
    log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter() as committer:
            fs.fail_next("fsync", errno.EIO)
            results = await asyncio.gather(
                *(committer.append(log, 1, b"x") for _ in range(4)), return_exceptions=True
            )
            assert all(isinstance(r, Exception) and "fsync" in str(r) for r in results)
            assert log.durable_index == 0

    asyncio.run(main())


def test_backpressure_bounds_pending_records() -> None:
    log = open_sim()
    log.set_epoch(1)

    async def main() -> int:
        async with GroupCommitter(pending_max=4) as committer:
            await asyncio.gather(*(committer.append(log, 1, b"x") for _ in range(50)))
            return committer.stats.batch_size_max

    assert 1 <= asyncio.run(main()) <= 4
    assert log.last_index == 50
    with pytest.raises(UsageError):
        GroupCommitter(pending_max=0)


def test_one_batch_syncs_each_log_once_and_a_failing_log_fails_alone() -> None:
    healthy_fs, failing_fs = SimFS(), SimFS()  # so a fault hits the failing log only
    healthy, failing = open_sim(healthy_fs, "/a"), open_sim(failing_fs, "/b")
    for log in (healthy, failing):
        log.set_epoch(1)

    def fsyncs() -> int:
        return healthy_fs.stats.fsyncs + failing_fs.stats.fsyncs

    async def main() -> None:
        async with GroupCommitter(inline_when_idle=False) as committer:
            fsyncs_before = fsyncs()
            await asyncio.gather(
                *(committer.append(log, 1, b"x") for log in (healthy, failing) for _ in range(10))
            )
            # Twenty writes to two logs, one batch after the first: at most 2 fsyncs each.
            assert fsyncs() - fsyncs_before <= 4
            failing_fs.fail_next("fsync", errno.EIO)
            results = await asyncio.gather(
                *(committer.append(log, 1, b"y") for log in (healthy, failing) for _ in range(5)),
                return_exceptions=True,
            )
            assert results[:5] == [11, 12, 13, 14, 15]
            assert all(isinstance(r, StorageFailed) for r in results[5:]), results
            assert healthy.durable_index == 15
            assert failing.failure is not None

    asyncio.run(main())


def test_a_raising_job_fails_only_its_caller() -> None:
    log = open_sim()
    log.set_epoch(1)

    def bad_job(_: PartitionLog) -> int:
        raise ValueError("a bug in one job")

    async def main() -> None:
        async with GroupCommitter(inline_when_idle=False) as committer:
            results = await asyncio.gather(
                committer.append(log, 1, b"a"),
                committer.write(log, bad_job),
                committer.append(log, 1, b"b"),
                return_exceptions=True,
            )
            assert results[0] == 1 and results[2] == 2
            assert isinstance(results[1], ValueError)
            assert log.durable_index == 2

    asyncio.run(main())


def test_bad_records_fail_alone() -> None:
    log = open_sim()
    log.set_epoch(2)

    async def main() -> None:
        async with GroupCommitter() as committer:
            good = asyncio.gather(*(committer.append(log, 2, b"ok") for _ in range(3)))
            with pytest.raises(UsageError):
                await committer.append(log, 3, b"future epoch")
            # Compiled (planaria._native), mypyc checks the annotation before the body can.
            with pytest.raises(TypeError if compiled() else UsageError):
                await committer.append(log, 2, "text")  # type: ignore[arg-type]
            assert sorted(await good) == [1, 2, 3]
        with pytest.raises(UsageError, match="not running"):
            await committer.append(log, 2, b"closed")

    asyncio.run(main())


@pytest.mark.parametrize("policy", ["never", "interval:5"])
def test_lazy_policies_ack_on_write_and_sync_later(policy: str) -> None:
    fs = SimFS()
    log = open_sim(fs, policy=FsyncPolicy.parse(policy))
    log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter() as committer:
            assert await committer.append(log, 1, b"a") == 1
            assert log.durable_index == 0  # acknowledged as written, not as durable
            if policy.startswith("interval"):
                for _ in range(200):
                    await asyncio.sleep(0.002)
                    if log.durable_index == 1:
                        break
                assert log.durable_index == 1
            await committer.call(log.save_snapshot, Snapshot(1, 1, b"s"))
        assert log.durable_index == 1  # close syncs

    asyncio.run(main())


def test_submit_calls_back_in_order_once_durable_and_jobs_joined_before_the_batch() -> None:
    fs = SimFS()
    logs = [open_sim(fs, f"/data/p{n}") for n in range(2)]
    for log in logs:
        log.set_epoch(1)
    seen: list[tuple[int, bool, object, int]] = []

    async def main() -> None:
        async with GroupCommitter(inline_when_idle=False) as committer:
            fsyncs_before = fs.stats.fsyncs
            for n in range(6):
                log = logs[n % 2]

                def done(ok: bool, value: object, n: int = n, log: PartitionLog = log) -> None:
                    seen.append((n, ok, value, log.durable_index))

                def job(log_: PartitionLog, n: int = n) -> int:
                    return log_.append(1, b"r%d" % n)

                committer.submit(log, job, done)
            assert seen == []  # nothing is answered before the disk is
            for _ in range(100):  # bounded: the disk thread answers within a few turns
                if len(seen) == 6:
                    break
                await asyncio.sleep(0.005)
            # One batch: every job submitted in the same turn of the loop shares it.
            assert committer.stats.batches == 1
            assert fs.stats.fsyncs - fsyncs_before <= 2  # one per log
            assert committer.stats.inline == 0

    asyncio.run(main())
    assert [n for n, *_ in seen] == list(range(6))  # in the order submitted
    for _n, ok, index, durable in seen:
        assert ok and isinstance(index, int) and durable >= index


def test_submit_to_a_failed_log_raises_at_once_and_a_bad_callback_strands_nobody() -> None:
    fs = SimFS()
    log = open_sim(fs, preallocate_bytes=0)
    log.set_epoch(1)
    seen: list[tuple[bool, object]] = []

    def boom(ok: bool, value: object) -> None:
        raise RuntimeError("a writer's own bug")

    async def main() -> None:
        async with GroupCommitter(inline_when_idle=False) as committer:
            committer.submit(log, lambda log_: log_.append(1, b"a"), boom)
            committer.submit(log, lambda log_: log_.append(1, b"b"), lambda *o: seen.append(o))
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.005)
            assert seen == [(True, 2)]  # answered although the callback before it raised
            fs.capacity_bytes = fs.used_bytes()
            committer.submit(log, lambda log_: log_.append(1, b"z" * 64), lambda *o: seen.append(o))
            for _ in range(100):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.005)
            ok, error = seen[1]
            assert not ok and isinstance(error, StorageFull)
            with pytest.raises(StorageFailed):  # refused before anything is queued
                committer.submit(log, lambda log_: log_.append(1, b"c"), lambda *o: None)
        with pytest.raises(UsageError):  # closed
            committer.submit(log, lambda log_: 0, lambda *o: None)

    asyncio.run(main())
    assert log.durable_index == 2
