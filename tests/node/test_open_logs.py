"""A node's start opens the partition logs its journal replays into side by side."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from planaria.errors import UsageError
from planaria.node._partition import open_logs_side_by_side
from planaria.storage import Journal, OpenLogs, OsFS, PartitionLog, Snapshot


def record_for(index: int) -> bytes:
    return (b"record-%d-" % index).ljust(30, b"x")


def journaled_logs(root: str, partitions: int) -> None:
    """Logs on the real disk, and journal records after its last checkpoint for them."""
    fs = OsFS()
    journal = Journal.open(fs, f"{root}/journal", checkpoint_bytes=10**9)
    journal.recover(lambda p, u: None)
    for partition in range(partitions):
        log = PartitionLog.open(fs, f"{root}/p{partition}")
        log.attach_journal(journal, partition)
        log.set_epoch(1)
        log.append_many([(1, record_for(i)) for i in range(1, 20 + partition)])
        if partition % 2:
            log.set_commit_index(10)
            log.save_snapshot(Snapshot(10, 1, b"state of p%d" % partition))
        log.append_many([(1, record_for(i)) for i in range(20 + partition, 40)])
        log.sync()
        log.close()
    journal.close()


def view(log: PartitionLog) -> tuple[object, ...]:
    return (
        log.first_index, log.last_index, log.epoch, log.commit_index, log.snapshot,
        list(log.entries(log.first_index)), log.log_bytes,
    )  # fmt: skip


def recover_from(
    root: str, open_logs: OpenLogs | None
) -> tuple[dict[int, int], dict[int, tuple[object, ...]]]:
    fs = OsFS()
    journal = Journal.open(fs, f"{root}/journal", checkpoint_bytes=10**9)
    kept: dict[int, PartitionLog] = {}

    def open_log(partition: int, unsynced_after: int | None) -> PartitionLog:
        return PartitionLog.open(fs, f"{root}/p{partition}", unsynced_after=unsynced_after)

    replayed = journal.recover(open_log, kept.__setitem__, open_logs=open_logs)
    views = {partition: view(log) for partition, log in kept.items()}
    for log in kept.values():
        log.close()
    journal.close()
    return replayed, views


def test_logs_opened_side_by_side_recover_as_one_by_one(tmp_path: Path) -> None:
    journaled_logs(str(tmp_path / "node"), partitions=6)
    shutil.copytree(tmp_path / "node", tmp_path / "copy")
    one_by_one = recover_from(str(tmp_path / "node"), None)
    side_by_side = recover_from(str(tmp_path / "copy"), open_logs_side_by_side(4))
    assert sorted(one_by_one[1]) == list(range(6))
    assert side_by_side == one_by_one


def test_a_failed_open_closes_the_logs_opened_beside_it(tmp_path: Path) -> None:
    root = str(tmp_path / "node")
    journaled_logs(root, partitions=6)
    fs = OsFS()
    journal = Journal.open(fs, f"{root}/journal", checkpoint_bytes=10**9)
    opened: list[PartitionLog] = []

    def open_log(partition: int, unsynced_after: int | None) -> PartitionLog:
        if partition == 3:
            raise OSError(5, "input/output error (injected)")
        log = PartitionLog.open(fs, f"{root}/p{partition}", unsynced_after=unsynced_after)
        opened.append(log)
        return log

    with pytest.raises(OSError, match="injected"):
        journal.recover(open_log, lambda p, log: None, open_logs=open_logs_side_by_side(4))
    assert len(opened) == 5
    assert all(log.closed for log in opened)
    with pytest.raises(UsageError, match="threads"):
        open_logs_side_by_side(0)
