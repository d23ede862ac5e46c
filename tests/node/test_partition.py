"""The partition runtime's pure helpers: reply coalescing and applying Persist effects."""

from __future__ import annotations

from pathlib import Path

from planaria._node.partition import _latest_acks, apply_persists
from planaria.core.messages import AppendReply, Entry, Persist, Send, Set
from planaria.storage import FsyncPolicy, OsFS, PartitionLog


def ack(to: str, match: int, *, epoch: int = 1, success: bool = True) -> Send:
    return Send(to, AppendReply(0, epoch, "n2", success, match, 0 if success else match))


def test_only_the_most_telling_ack_per_primary_is_sent() -> None:
    sends = [ack("n1", 12), ack("n3", 4), ack("n1", 7), ack("n1", 9, success=False)]
    kept = _latest_acks(sends)
    assert kept == [ack("n1", 12), ack("n3", 4), ack("n1", 9, success=False)]
    newer_epoch = [ack("n1", 12), ack("n1", 3, epoch=2)]
    assert _latest_acks(newer_epoch) == [ack("n1", 3, epoch=2)]
    distinct = [ack("n1", 1), ack("n3", 1)]
    assert _latest_acks(distinct) is distinct


def test_persists_apply_in_order_with_truncation_and_epochs(tmp_path: Path) -> None:
    log = PartitionLog.open(OsFS(), str(tmp_path / "p0"), policy=FsyncPolicy("always"))
    write = Set(b"k", b"v")
    first = (Entry(1, 1), Entry(1, 2, ("c", 1), write), Entry(1, 3, ("c", 2), write))
    apply_persists(log, [Persist(0, None, first, epoch=1, commit_index=2)], 0.0)
    assert (log.last_index, log.epoch, log.commit_index) == (3, 1, 2)
    # A new primary's log replaces the uncommitted entry 3 (epoch 2).
    replacement = (Entry(2, 3), Entry(2, 4, ("d", 1), write))
    apply_persists(log, [Persist(0, 2, replacement, epoch=2, commit_index=2)], 0.0)
    assert [(e.epoch, e.index) for e in log.entries()] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    assert log.epoch == 2
    log.close()
