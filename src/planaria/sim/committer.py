"""Group commit on a simulated node's disk, in simulated time (the node's ``GroupCommitter``).

As in ``planaria.storage.committer``: the jobs submitted during a turn form a batch that
starts at the end of that turn (a zero-delay event), or once the batch in flight is durable;
a batch runs every job (writes into the ``SimFS`` page cache), then makes each log it
touched durable once (a journal once for all its logs) and checkpoints a journal that is
due. Here the fsync takes a delay drawn from the run's RNG, an event on the world's queue:
a crash before it loses what was not durable (``SimFS.crash``), and the node's replicas
keep stepping meanwhile. Each job's ``done(ok, result)`` is called once its batch is durable.

The disk fault (``crash_before_fsync``) crashes the node right after a batch wrote entries,
before their fsync. A job that raises ``PersistRuleBroken`` (the storage refused a persist)
fails only itself; anything else it raises propagates (a bug in the code under test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from planaria.sim.world import Process
from planaria.storage import PartitionLog
from planaria.storage.persist import PersistRuleBroken

__all__ = ["SimCommitter"]


@dataclass(slots=True)
class _Job:
    log: PartitionLog
    fn: Callable[[PartitionLog], int]  # returns the entries it appended
    done: Callable[[bool, Any], None]
    ok: bool = False
    value: Any = None


@dataclass(slots=True)
class _Batch:
    jobs: list[_Job]
    logs: list[PartitionLog] = field(default_factory=list)


class SimCommitter:
    """One per node incarnation; each batch's fsync takes a delay drawn uniformly in
    [fsync_min_ms, fsync_max_ms] of the node's clock. ``crash_before_fsync()``: the disk
    fault, called after a batch wrote entries; True if it crashed the node."""

    def __init__(
        self,
        process: Process,
        *,
        fsync_min_ms: float,
        fsync_max_ms: float,
        crash_before_fsync: Callable[[], bool],
    ) -> None:
        self._process = process
        self._fsync_min_ms = fsync_min_ms
        self._fsync_max_ms = fsync_max_ms
        self._crash_before_fsync = crash_before_fsync
        self._pending: list[_Job] = []
        self._in_flight: _Batch | None = None
        self._kick_due = False
        self.batches = 0
        self.jobs = 0

    @property
    def idle(self) -> bool:
        return not self._pending and self._in_flight is None

    def submit(
        self,
        log: PartitionLog,
        job: Callable[[PartitionLog], int],
        done: Callable[[bool, Any], None],
    ) -> None:
        """Run ``job(log)`` with the next batch; ``done`` once that batch is durable."""
        self._pending.append(_Job(log, job, done))
        if not self._kick_due:
            self._kick_due = True
            self._process.after_local(0.0, self._kick)

    def _kick(self, _: object = None) -> None:
        """Start the next batch, unless one is in flight (its end starts the next)."""
        self._kick_due = False
        if self._in_flight is not None or not self._pending:
            return
        batch = self._start()
        if batch is None:
            return
        world = self._process.world
        delay_ms = world.rng.uniform(self._fsync_min_ms, self._fsync_max_ms)
        self._process.after_local(delay_ms, self._synced, batch)

    def _start(self) -> _Batch | None:
        """Run the pending jobs (the writes); None when the disk fault crashed the node."""
        jobs, self._pending = self._pending, []
        batch = self._in_flight = _Batch(jobs)
        touched: dict[int, PartitionLog] = {}
        wrote_entries = False
        for job in jobs:
            try:
                job.value = job.fn(job.log)
                job.ok = True
                wrote_entries = wrote_entries or job.value > 0
            except PersistRuleBroken as broken:  # handed to the job's callback
                job.value = broken
            touched.setdefault(id(job.log), job.log)
        batch.logs = list(touched.values())
        if wrote_entries and self._crash_before_fsync():
            return None  # the records were written but the fsync never happened
        return batch

    def _synced(self, batch: _Batch) -> None:
        if self._in_flight is not batch:
            return  # finished early by ``drain``
        self._in_flight = None
        self.batches += 1
        self.jobs += len(batch.jobs)
        for log in batch.logs:
            if not log.closed:
                log.sync()  # the first one fsyncs the journal; the rest find it synced
        journals = {id(j): j for log in batch.logs if (j := log.journal) is not None}
        for journal in journals.values():
            if journal.checkpoint_due:
                journal.checkpoint()
        for job in batch.jobs:
            job.done(job.ok, job.value)
            if not self._process.up:
                return
        if self._pending and not self._kick_due:
            self._kick_due = True
            self._process.after_local(0.0, self._kick)

    def drain(self) -> None:
        """Finish every batch now, the one in flight and the pending ones (before the logs
        are closed and reopened, as the node waits for its stages when it loses its
        session). Stops if the node crashed meanwhile."""
        while self._process.up and not self.idle:
            batch = self._in_flight or self._start()
            if batch is None:
                return
            self._synced(batch)
