"""The simulated group committer (durable only after a seeded fsync delay, batches shared by
every log of the node), and the node's pipeline running on it in whole runs."""

from __future__ import annotations

from dataclasses import replace

from planaria.sim.committer import SimCommitter
from planaria.sim.node import NodeSettings
from planaria.sim.run import SimConfig, run_seed
from planaria.sim.world import Process, World
from planaria.storage import PartitionLog, SimFS

FSYNC_MS = 5.0


class Disk(Process):
    def __init__(self, world: World) -> None:
        super().__init__(world, "n1")
        self.fs = SimFS()

    def on_crash(self) -> None:
        self.fs.crash(self.world.rng)


def _log(disk: Disk, partition: int) -> PartitionLog:
    log = PartitionLog.open(disk.fs, f"/data/p{partition}")
    log.set_epoch(1)
    return log


def _append(log: PartitionLog) -> int:
    log.append(1, b"record")
    return 1


def test_a_batch_is_durable_after_its_fsync_delay_for_every_log_in_it() -> None:
    world = World(1)
    disk = Disk(world)
    committer = SimCommitter(
        disk, fsync_min_ms=FSYNC_MS, fsync_max_ms=FSYNC_MS, crash_before_fsync=lambda: False
    )
    logs = [_log(disk, 0), _log(disk, 1)]
    done: list[tuple[float, bool, object]] = []
    for log in logs:  # in the same turn: one batch
        committer.submit(log, _append, lambda ok, value: done.append((world.now_ms, ok, value)))
    world.run_until(FSYNC_MS - 0.1)
    assert done == [] and [log.last_index for log in logs] == [1, 1]  # written, not durable
    assert [log.durable_index for log in logs] == [0, 0]
    world.run_until(FSYNC_MS)
    assert done == [(FSYNC_MS, True, 1), (FSYNC_MS, True, 1)]
    assert [log.durable_index for log in logs] == [1, 1]
    assert (committer.batches, committer.jobs) == (1, 2)


def test_a_crash_before_the_fsync_says_nothing_and_keeps_what_was_durable() -> None:
    world = World(2)
    disk = Disk(world)
    committer = SimCommitter(
        disk, fsync_min_ms=FSYNC_MS, fsync_max_ms=FSYNC_MS, crash_before_fsync=lambda: False
    )
    log = _log(disk, 0)
    done: list[bool] = []
    committer.submit(log, _append, lambda ok, value: done.append(ok))
    world.run_until(FSYNC_MS)
    committer.submit(log, _append, lambda ok, value: done.append(ok))
    world.run_until(FSYNC_MS + 1.0)  # the second record is written, its fsync is not done
    world.crash("n1")
    world.run_until(3 * FSYNC_MS)
    assert done == [True]  # the second write is never reported done
    reopened = PartitionLog.open(disk.fs, "/data/p0")
    assert reopened.last_index >= 1  # the durable record survives; the other may not


def test_the_disk_fault_crashes_after_the_write_before_the_fsync() -> None:
    world = World(3)
    disk = Disk(world)

    def crash() -> bool:
        world.crash("n1")
        return True

    committer = SimCommitter(disk, fsync_min_ms=1.0, fsync_max_ms=1.0, crash_before_fsync=crash)
    log = _log(disk, 0)
    done: list[bool] = []
    committer.submit(log, _append, lambda ok, value: done.append(ok))
    world.run_until(10.0)
    assert not disk.up and done == [] and log.durable_index == 0


def test_runs_batch_persists_and_refuse_requests_past_the_inbox_limit() -> None:
    result = run_seed(SimConfig(seed=1, ops=150, faults=frozenset()))
    assert result.passed, result.detail
    stats = result.stats
    assert stats["persist_jobs"] > stats["fsync_batches"] > 0  # group commit across partitions
    assert stats["busy_refusals"] == 0
    # At the limit: a partition with one reply waiting for the disk refuses the next request
    # (the client retries it), and the run still passes.
    busy = run_seed(
        SimConfig(seed=1, ops=150, faults=frozenset(), node=replace(NodeSettings(), inbox_max=1))
    )
    assert busy.passed, busy.detail
    assert busy.stats["busy_refusals"] > 0
