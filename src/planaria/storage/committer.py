"""``GroupCommitter``: asyncio writers share fsyncs (group commit) across any number of logs.

A writer hands the committer a *write job* for one ``PartitionLog`` (``write(log, job)``, or
``append(log, epoch, record)`` for one record) and gets the job's result back once the
log's fsync policy says the write is done; or, without a task or future per write,
``submit(log, job, done)``, and ``done(ok, value)`` is called on the event loop then (the
node's partitions use this). Jobs that arrive while a batch is on the disk form
the next batch; a batch runs every job on the event loop (writes into the page cache), then
makes each log it touched durable once (``sync_if_due``; a journal once for all its logs) in
one disk thread (``os.fsync`` releases the GIL, so the event loop keeps running). So under
load one fsync covers every write that arrived meanwhile. No job runs while the disk thread
syncs, so the logs are never touched by two threads at once.

When writes come one at a time (the committer is idle and its last round held a single
job), a job runs at once on the caller's thread instead: handing one write to a thread and
back costs as much as the fsync itself, and a lone writer then pays one write and one fsync,
as it must. A writer first yields to the event loop once; only if no other writer arrived
meanwhile does its job run inline. Writers that arrive together (or during that fsync) form a
threaded batch, and once rounds hold several jobs the committer stays threaded until they
thin out to one again.

With fsync policy ``always`` a result is returned only once the job's writes are on disk;
with ``interval`` once written (a timer syncs due logs every ``interval_ms``); with ``never``
once written. A job that raises fails only its caller; a storage failure of a log (failed
write or fsync) fails every job of that log in the batch (nothing is acknowledged), and the
log refuses all later writes with ``StorageFailed`` until it is reopened. At most
``pending_max`` jobs of ``write`` wait at once; further writers wait for room
(backpressure; ``submit``'s callers bound their own queues).

The batches are driven by callbacks, not a task: a batch starts one turn of the loop after
its first job arrived (so the jobs of every callback running now join it), or as soon as the
previous batch is durable, and the disk thread hands its result back with one
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from planaria.errors import UsageError
from planaria.storage.errors import StorageError
from planaria.storage.log import PartitionLog

__all__ = ["CommitStats", "GroupCommitter"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_logger = logging.getLogger("planaria.storage")


@dataclass
class CommitStats:
    jobs: int = 0
    batches: int = 0  # threaded batches
    inline: int = 0  # jobs run at once because the committer was idle
    syncs: int = 0
    batch_size_max: int = 0


class _DiskThread:
    """One thread for blocking disk calls. Leaner than a ThreadPoolExecutor per call (no
    work item, no concurrent future to chain): a queue in, ``call_soon_threadsafe`` out."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[
            tuple[Callable[[], Any], Callable[[bool, Any], None], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name=name, daemon=True)
        self._worker.start()

    def run(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self.run_then(functools.partial(fn, *args), functools.partial(_settle_future, future))
        return future

    def run_then(self, fn: Callable[[], Any], then: Callable[[bool, Any], None]) -> None:
        """Run ``fn`` in the thread; then ``then(ok, result or exception)`` on the loop."""
        self._calls.put((fn, then, asyncio.get_running_loop()))

    def stop(self) -> None:
        """Finish the calls queued, then end the thread (blocks until it has)."""
        self._calls.put(None)
        self._worker.join()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, then, loop = call
            try:
                ok, value = True, fn()
            except BaseException as exc:  # handed to the caller's callback (or future)
                ok, value = False, exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits this
                loop.call_soon_threadsafe(then, ok, value)


def _settle_future(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return  # its awaiting task was cancelled
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


@dataclass(slots=True)
class _Job:
    log: PartitionLog
    fn: Callable[[PartitionLog], Any]
    done: Callable[[bool, Any], None]
    ok: bool = False
    value: Any = None


def _now_ms() -> float:
    return asyncio.get_running_loop().time() * 1000.0


def _run_jobs(jobs: list[_Job]) -> list[PartitionLog]:
    """Run every job (writes to the page cache: fast); returns the logs they touched."""
    touched: dict[int, PartitionLog] = {}
    for job in jobs:
        try:
            job.value = job.fn(job.log)
            job.ok = True
        except Exception as exc:  # handed to the job's callback
            job.value = exc
        touched.setdefault(id(job.log), job.log)
    return list(touched.values())


def _sync_batch(logs: list[PartitionLog], now_ms: float) -> int:
    """The disk thread's part of a batch: make the logs durable per their policy, then
    checkpoint a journal that is due. Returns the number of fsyncs."""
    syncs = _sync_all(logs, now_ms)
    _checkpoint_journals(logs)
    return syncs


def _checkpoint_journals(logs: list[PartitionLog]) -> None:
    """Checkpoint the journal behind these logs when it is due (between batches, in the disk
    thread, so no log is written meanwhile). A failure is recorded as the journal's
    ``failure``: every log behind it then refuses writes."""
    for journal in {id(j): j for log in logs if (j := log.journal) is not None}.values():
        if journal.checkpoint_due and journal.failure is None:
            with contextlib.suppress(StorageError):
                journal.checkpoint()


class GroupCommitter:
    """Group commit over many logs. Use as ``async with GroupCommitter() as committer:``."""

    def __init__(
        self,
        *,
        pending_max: int = 4096,
        inline_when_idle: bool = True,
        name: str = "planaria-fsync",
    ) -> None:
        if pending_max < 1:
            raise UsageError(f"pending_max must be >= 1, got {pending_max}")
        self.stats = CommitStats()
        self.inline_when_idle = inline_when_idle
        self._pending: list[_Job] = []
        self._in_flight: list[_Job] | None = None  # the batch the disk thread is syncing
        self._kick_due = False  # a call_soon of _kick is scheduled
        self._drained = asyncio.Event()  # no batch in flight
        self._drained.set()
        self._slots = asyncio.Semaphore(pending_max)
        self._exclusive = asyncio.Lock()
        self._disk = _DiskThread(name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self._lazy_logs: dict[int, PartitionLog] = {}  # interval-policy logs the timer syncs
        self._last_round_jobs = 0  # jobs in the last batch (1 for an inline job)
        self._arriving = 0  # writers between arrival and queueing (or running inline)

    async def __aenter__(self) -> GroupCommitter:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._closing

    def start(self) -> None:
        if self._loop is not None:
            raise UsageError("the committer is already started")
        self._loop = asyncio.get_running_loop()
        self._ticker = asyncio.create_task(self._sync_forever(), name="planaria-fsync-timer")

    def submit(
        self,
        log: PartitionLog,
        job: Callable[[PartitionLog], _T],
        done: Callable[[bool, _T | BaseException], None],
    ) -> None:
        """Run ``job(log)`` with the next batch; ``done(True, result)`` on the event loop once
        the write is done, or ``done(False, exception)``. Raises at once (nothing queued) when
        the committer is not running or the log has already failed."""
        self._accept(log)
        self._pending.append(_Job(log, job, done))
        self._schedule_kick()

    async def write(self, log: PartitionLog, job: Callable[[PartitionLog], _T]) -> _T:
        """Run ``job(log)`` with the next batch; its result once the write is done."""
        self._accept(log)
        if self.inline_when_idle and self._idle():
            self._arriving += 1
            try:
                await asyncio.sleep(0)  # let writers that arrive with this one show up
            finally:
                self._arriving -= 1
            if self._arriving == 0 and self._idle():
                return self._run_inline(log, job)
        async with self._slots:
            future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
            self.submit(log, job, functools.partial(_settle_future, future))
            return await future

    async def append(self, log: PartitionLog, epoch: int, record: bytes) -> int:
        """Append one record; returns its index once the fsync policy says it is done."""
        # Checked here, so one bad record cannot fail the whole batch it would join.
        if not isinstance(record, bytes):
            raise UsageError(f"a record must be bytes, not {type(record).__name__}")
        if not log.last_epoch <= epoch <= log.epoch:
            raise UsageError(f"record epoch {epoch} must be in {log.last_epoch}..{log.epoch}")
        return await self.write(log, lambda log_: log_.append(epoch, record))

    async def call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a blocking log operation (snapshot, truncate, set_epoch...) in the disk thread,
        between batches, without blocking the event loop."""
        async with self.exclusive():
            return await self._disk.run(lambda: fn(*args, **kwargs))

    def exclusive(self) -> _Exclusive:
        """Hold off batches (for quick, non-blocking direct use of a log): ``async with``."""
        return _Exclusive(self)

    async def close(self) -> None:
        """Finish every pending write, sync the interval-policy logs (unless failed), stop.
        The logs stay open."""
        if self._loop is None or self._closing:
            return
        self._closing = True
        try:
            while self._pending or self._in_flight is not None:
                if self._in_flight is not None:
                    await self._drained.wait()
                elif self._exclusive.locked():
                    async with self._exclusive:
                        pass  # its end schedules the next batch
                else:
                    self._schedule_kick()
                    await asyncio.sleep(0)  # the batch starts
            if self._ticker is not None:
                self._ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ticker
            for log in self._lazy_logs.values():
                if log.failure is None and not log.closed:
                    await self.call(log.sync)
        finally:
            self._disk.stop()

    def _accept(self, log: PartitionLog) -> None:
        if not self.running:
            raise UsageError("the committer is not running (use start() or async with)")
        failure = log.failure
        if failure is not None:
            raise failure
        if log.policy.mode == "interval":
            self._lazy_logs.setdefault(id(log), log)

    def _idle(self) -> bool:
        return (
            self._last_round_jobs <= 1
            and not self._pending
            and self._in_flight is None
            and not self._exclusive.locked()
        )

    def _run_inline(self, log: PartitionLog, job: Callable[[PartitionLog], _T]) -> _T:
        self.stats.jobs += 1
        self.stats.inline += 1
        self._last_round_jobs = 1
        try:
            result = job(log)
        finally:
            self.stats.syncs += _sync_all([log], _now_ms())
            _checkpoint_journals([log])
        failure = log.failure
        if failure is not None:
            raise failure
        return result

    def _schedule_kick(self) -> None:
        if not self._kick_due and self._loop is not None:
            self._kick_due = True
            self._loop.call_soon(self._kick)

    def _kick(self) -> None:
        """Start the next batch, unless one is in flight (its end starts the next) or an
        exclusive holder keeps batches off (its end schedules this again)."""
        self._kick_due = False
        if self._in_flight is not None or not self._pending or self._exclusive.locked():
            return
        batch, self._pending = self._pending, []
        # The writes run here, on the event loop: they only fill the page cache, and running
        # them in the disk thread would make the two threads trade the GIL for every job.
        # Only the fsyncs go to the disk thread, while no job runs.
        logs = _run_jobs(batch)
        self._in_flight = batch
        self._drained.clear()
        self._disk.run_then(functools.partial(_sync_batch, logs, _now_ms()), self._synced)

    def _synced(self, ok: bool, value: Any) -> None:
        batch, self._in_flight = self._in_flight or [], None
        self._drained.set()
        self._last_round_jobs = len(batch)
        stats = self.stats
        stats.jobs += len(batch)
        stats.batches += 1
        stats.batch_size_max = max(stats.batch_size_max, len(batch))
        if ok:
            stats.syncs += value
        # Jobs that arrive from here on (effects of this batch) form the next batch, which
        # starts as soon as this batch's callbacks have run.
        for job in batch:
            failure = job.log.failure
            try:
                if not ok:
                    job.done(False, value)  # the disk thread itself failed: a bug, surfaced
                elif not job.ok:
                    job.done(False, job.value)  # its own error says the most
                elif failure is not None:
                    job.done(False, failure)
                else:
                    job.done(True, job.value)
            except Exception:
                # One writer's callback failing must not strand the rest of the batch.
                _logger.exception("a group-commit callback failed")
        if self._pending:
            self._schedule_kick()

    async def _sync_forever(self) -> None:
        while True:
            logs = [log for log in self._lazy_logs.values() if not log.closed]
            self._lazy_logs = {id(log): log for log in logs}
            wait_ms = min((log.policy.interval_ms for log in logs), default=50.0)
            await asyncio.sleep(wait_ms / 1000)
            due = [log for log in logs if log.failure is None and log.sync_due(_now_ms())]
            if not due:
                continue
            async with self.exclusive():
                syncs = await self._disk.run(_sync_all, due, _now_ms())
            self.stats.syncs += syncs


def _sync_all(logs: list[PartitionLog], now_ms: float) -> int:
    """Sync each log its policy wants synced (a journal once for all its logs); returns the
    number of fsyncs. A failed sync is recorded as the log's ``failure``: the caller fails
    that log's jobs with it, and the log refuses later writes."""
    syncs = 0
    for log in logs:
        if log.failure is None and not log.closed:
            journal = log.journal
            journal_syncs = journal.syncs if journal is not None else 0
            with contextlib.suppress(StorageError):
                synced = log.sync_if_due(now_ms)
                syncs += journal.syncs - journal_syncs if journal is not None else synced
    return syncs


class _Exclusive:
    """``GroupCommitter.exclusive()``: a class, not an async generator, so mypyc compiles it."""

    def __init__(self, committer: GroupCommitter) -> None:
        self._committer = committer

    async def __aenter__(self) -> None:
        committer = self._committer
        await committer._exclusive.acquire()
        try:
            await committer._drained.wait()  # the batch in flight finishes first
        except BaseException:
            committer._exclusive.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        committer = self._committer
        if committer._pending:
            committer._schedule_kick()  # runs once the lock is free
        committer._exclusive.release()
