"""``GroupCommitter``: asyncio writers share fsyncs (group commit) on one ``PartitionLog``.

Writers ``await committer.append(epoch, record)`` and get the record's index back. A single
flusher task takes every pending record, writes them with one ``append_many``, runs one fsync
in a dedicated thread (``os.fsync`` releases the GIL, so the event loop keeps running) and
then resolves all their futures. Records that arrive while an fsync runs form the next batch,
so under load one fsync covers many writes, and with a single writer the cost is one write
and one fsync, as it must be.

With fsync policy ``always`` an index is returned only once its record is on disk. With
``interval`` it is returned once written, and a timer syncs every ``interval_ms``; with
``never`` it is returned once written. A failed write or fsync fails every waiter of that batch
with the storage error (nothing is acknowledged) and the log refuses all later writes with
``StorageFailed`` until it is reopened. At most ``pending_max`` records wait at once; further
writers wait for room (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from planaria.errors import UsageError
from planaria.storage.errors import StorageError
from planaria.storage.log import PartitionLog

__all__ = ["CommitStats", "GroupCommitter"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass
class CommitStats:
    appends: int = 0
    batches: int = 0
    syncs: int = 0
    batch_size_max: int = 0


class GroupCommitter:
    """Group commit for one log. Use as ``async with GroupCommitter(log) as committer:``."""

    def __init__(self, log: PartitionLog, *, pending_max: int = 4096) -> None:
        if pending_max < 1:
            raise UsageError(f"pending_max must be >= 1, got {pending_max}")
        self.log = log
        self.stats = CommitStats()
        self._pending_max = pending_max
        self._pending: list[tuple[int, bytes, asyncio.Future[int]]] = []
        self._slots = asyncio.Semaphore(pending_max)
        self._wakeup = asyncio.Event()
        self._exclusive = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planaria-fsync")
        self._flusher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self._crashed: BaseException | None = None
        self._queued_epoch = log.last_epoch

    async def __aenter__(self) -> GroupCommitter:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._flusher is not None:
            raise UsageError("the committer is already started")
        self._flusher = asyncio.create_task(self._flush_forever(), name="planaria-group-commit")
        if self.log.policy.mode == "interval":
            self._ticker = asyncio.create_task(self._sync_forever(), name="planaria-fsync-timer")

    async def append(self, epoch: int, record: bytes) -> int:
        """Append one record; returns its index once the fsync policy says it is done."""
        if self._flusher is None or self._closing:
            raise UsageError("the committer is not running (use start() or async with)")
        if self._crashed is not None:
            raise self._crashed
        failure = self.log.failure
        if failure is not None:
            raise failure
        # Checked here, so one bad record cannot fail the whole batch it would join.
        if not isinstance(record, bytes):
            raise UsageError(f"a record must be bytes, not {type(record).__name__}")
        if not self._queued_epoch <= epoch <= self.log.epoch:
            raise UsageError(
                f"record epoch {epoch} must be in {self._queued_epoch}..{self.log.epoch}"
            )
        self._queued_epoch = epoch
        async with self._slots:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._pending.append((epoch, record, future))
            self._wakeup.set()
            return await future

    async def call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a blocking log operation (snapshot, truncate, set_epoch...) in the fsync thread,
        between batches, without blocking the event loop."""
        async with self._exclusive:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: fn(*args, **kwargs)
            )

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[PartitionLog]:
        """Direct access to the log between batches (for quick, non-blocking operations)."""
        async with self._exclusive:
            yield self.log

    async def close(self) -> None:
        """Finish every pending write, sync (unless the log failed) and stop. The log stays open."""
        if self._flusher is None or self._closing:
            return
        self._closing = True
        self._wakeup.set()
        try:
            await self._flusher
            if self._ticker is not None:
                self._ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ticker
            if self.log.failure is None:
                await self.call(self.log.sync)
        finally:
            self._executor.shutdown(wait=True)

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            # Anything that arrives while this batch is written and synced forms the next one.
            batch, self._pending = self._pending, []
            async with self._exclusive:
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[int, bytes, asyncio.Future[int]]]) -> None:
        log = self.log
        try:
            last = log.append_many([(epoch, record) for epoch, record, _ in batch])
            if log.policy.mode == "always":
                await asyncio.get_running_loop().run_in_executor(self._executor, log.sync)
                self.stats.syncs += 1
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if log.failure is None:
                # Not a storage error: a bug. Stop taking writes rather than guess.
                self._crashed = exc
            return
        self.stats.appends += len(batch)
        self.stats.batches += 1
        self.stats.batch_size_max = max(self.stats.batch_size_max, len(batch))
        first = last - len(batch) + 1
        for offset, (_, _, future) in enumerate(batch):
            if not future.done():
                future.set_result(first + offset)

    async def _sync_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self.log.policy.interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            if self.log.failure is not None:
                return
            async with self._exclusive:
                if self.log.sync_due(loop.time() * 1000):
                    try:
                        await loop.run_in_executor(
                            self._executor, self.log.sync, loop.time() * 1000
                        )
                    except StorageError:
                        return  # the log now refuses writes; every append reports log.failure
                    self.stats.syncs += 1
