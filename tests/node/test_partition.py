"""The partition runtime's pure helpers (reply coalescing) and the shared Persist writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from planaria._node.partition import _latest_acks
from planaria.core.messages import AppendReply, Entry, Persist, Send, Set
from planaria.core.persist import PersistRuleBroken, write_persists
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
