"""GroupCommitter: batching, durability before the ack, errors, backpressure, policies."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence
from pathlib import Path

import pytest

from planaria.errors import UsageError
from planaria.storage import (
    FsyncPolicy,
    GroupCommitter,
    OsFS,
    PartitionLog,
    SimFS,
    Snapshot,
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
        async with GroupCommitter(log) as committer:
            durable_at_ack: list[bool] = []

            async def writer(n: int) -> int:
                index = await committer.append(1, record_for(n))
                durable_at_ack.append(log.durable_index >= index)
                return index

            indexes = await asyncio.gather(*(writer(n) for n in range(300)))
            assert all(durable_at_ack)
            assert committer.stats.appends == 300
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
        async with GroupCommitter(log) as committer:
            for n in range(5):
                assert await committer.append(1, b"r%d" % n) == n + 1
                assert log.durable_index == n + 1

    fsyncs_before = fs.stats.fsyncs
    asyncio.run(main())
    assert fs.stats.fsyncs - fsyncs_before == 5


def test_write_error_fails_the_whole_batch_and_refuses() -> None:
    fs = SimFS()
    log = open_sim(fs, preallocate_bytes=0)
    log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter(log) as committer:
            assert await committer.append(1, b"ok") == 1
            fs.capacity_bytes = fs.used_bytes() + 60
            results = await asyncio.gather(
                *(committer.append(1, b"z" * 30) for _ in range(8)), return_exceptions=True
            )
            assert all(isinstance(r, StorageFull) for r in results), results
            with pytest.raises(StorageFailed):
                await committer.append(1, b"later")

    asyncio.run(main())
    assert log.last_index == 1
    log.close()
    fs.capacity_bytes = None
    assert [e.record for e in open_sim(fs).entries()] == [b"ok"]


def test_fsync_error_acks_nothing() -> None:
    fs = SimFS()
    log = open_sim(fs)
    log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter(log) as committer:
            fs.fail_next("fsync", errno.EIO)
            results = await asyncio.gather(
                *(committer.append(1, b"x") for _ in range(4)), return_exceptions=True
            )
            assert all(isinstance(r, Exception) and "fsync" in str(r) for r in results)
            assert log.durable_index == 0

    asyncio.run(main())


def test_backpressure_bounds_pending_records() -> None:
    log = open_sim()
    log.set_epoch(1)

    async def main() -> int:
        async with GroupCommitter(log, pending_max=4) as committer:
            seen = 0
            original = log.append_many

            def watching(entries: Sequence[tuple[int, bytes]]) -> int:
                nonlocal seen
                seen = max(seen, len(entries))
                return original(entries)

            log.append_many = watching  # type: ignore[method-assign]
            await asyncio.gather(*(committer.append(1, b"x") for _ in range(50)))
            return seen

    assert asyncio.run(main()) <= 4
    assert log.last_index == 50
    with pytest.raises(UsageError):
        GroupCommitter(log, pending_max=0)


def test_bad_records_fail_alone() -> None:
    log = open_sim()
    log.set_epoch(2)

    async def main() -> None:
        async with GroupCommitter(log) as committer:
            good = asyncio.gather(*(committer.append(2, b"ok") for _ in range(3)))
            with pytest.raises(UsageError):
                await committer.append(3, b"future epoch")
            with pytest.raises(UsageError):
                await committer.append(2, "text")  # type: ignore[arg-type]
            assert sorted(await good) == [1, 2, 3]
        with pytest.raises(UsageError, match="not running"):
            await committer.append(2, b"closed")

    asyncio.run(main())


@pytest.mark.parametrize("policy", ["never", "interval:5"])
def test_lazy_policies_ack_on_write_and_sync_later(policy: str) -> None:
    fs = SimFS()
    log = open_sim(fs, policy=FsyncPolicy.parse(policy))
    log.set_epoch(1)

    async def main() -> None:
        async with GroupCommitter(log) as committer:
            assert await committer.append(1, b"a") == 1
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
