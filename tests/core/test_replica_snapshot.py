"""A replica whose log starts after a snapshot: building one, log matching across the base,
truncation never into it, peers that need compacted entries, and compaction's own rule."""

from __future__ import annotations

import pytest
from test_replica import Pump, acked, expire, ready_pump  # tests/core is on sys.path

from planaria.core.messages import Append, AppendReply, Entry, Set
from planaria.core.replica import Replica, merge_appends
from planaria.errors import UsageError


def written(pump: Pump, count: int, *, first_seq: int = 1) -> None:
    for seq in range(first_seq, first_seq + count):
        assert acked(pump.call("a", Set(b"k%d" % (seq % 3), b"v%d" % seq), ("c1", seq)))
    pump.tick(60)  # backups learn the commit index


def rebuilt(pump: Pump, node: str) -> Replica:
    """``node`` rebuilt from its own snapshot plus the log after it (as after a restart)."""
    old = pump.replicas[node]
    view = old.snapshot()
    return Replica(
        node,
        0,
        pump.settings,
        snapshot=view,
        log=old.entries_after(view.index),
        epoch=old.epoch,
        commit_index=old.commit_index,
    )


def test_a_replica_built_from_a_snapshot_holds_the_same_state() -> None:
    pump = ready_pump()
    written(pump, 6)
    b = pump.replicas["b"]
    copy = rebuilt(pump, "b")
    assert copy.applied == b.applied and copy.dedup == b.dedup
    assert copy.base_index == b.applied_index and copy.log_entries == 0
    assert copy.last_version == b.last_version and copy.commit_index == b.commit_index
    # The dedup window survived: a retry of an applied write gets its stored reply.
    pump.replicas["b"] = copy
    pump.crash("a")
    expire(pump, "a")
    pump.failover()
    pump.tick(60)
    assert pump.config.primary == "b"
    retry = pump.call("b", Set(b"k0", b"v6"), ("c1", 6))
    assert retry is not None and retry.version is not None and retry.version.index == 7


def test_a_snapshot_is_an_immutable_copy() -> None:
    pump = ready_pump()
    written(pump, 3)
    view = pump.replicas["a"].snapshot()
    before = (dict(view.kv), dict(view.dedup))
    written(pump, 3, first_seq=4)
    assert (dict(view.kv), dict(view.dedup)) == before
    assert view.index == 4 and view.epoch == pump.replicas["a"].epoch_at(4)
    with pytest.raises(TypeError):
        view.kv[b"x"] = (b"y", view.kv[b"k1"][1])  # type: ignore[index]


def test_replication_goes_on_across_compacted_logs() -> None:
    pump = ready_pump()
    written(pump, 5)
    for node in "abc":
        replica = pump.replicas[node]
        replica.compact(replica.commit_index)
        assert replica.base_index == 6 and replica.log_entries == 0
    written(pump, 5, first_seq=6)
    a, b, c = (pump.replicas[n] for n in "abc")
    assert b.entries_after(6) == a.entries_after(6) and c.applied == a.applied
    # A failover: the new primary's barrier follows its base, the backups take it.
    pump.crash("a")
    expire(pump, "a")
    pump.failover()
    pump.tick(60)
    assert acked(pump.call(pump.config.primary or "", Set(b"k", b"after"), ("c2", 1)))
    pump.tick(60)
    assert pump.replicas["b"].applied == pump.replicas["c"].applied


def test_an_append_reaching_below_the_base_is_taken_from_the_base_on() -> None:
    log = [Entry(1, 1)] + [Entry(1, i, ("c", i), Set(b"k", b"%d" % i)) for i in range(2, 9)]
    source = Replica("b", 0, log=log, epoch=1, commit_index=5)
    backup = rebuilt_from(source)
    assert backup.base_index == 5 and backup.last_index == 5
    first = Append(0, 1, "a", 2, 1, tuple(log[2:5]), 5)  # entries 3..5: all at or below it
    then = Append(0, 1, "a", 5, 1, tuple(log[5:8]), 7)  # 6..8
    merged = merge_appends(first, then, 64)
    assert merged is not None
    for append in (first, merged):
        ready = backup.on_message(append, 0)
        [send] = ready.send
        reply = send.message
        assert isinstance(reply, AppendReply) and reply.success
        assert reply.match_index == append.prev_index + len(append.entries)
    assert backup.last_index == 8 and backup.commit_index == 7
    assert backup.entries_after(5) == tuple(log[5:8])
    with pytest.raises(UsageError, match="compacted"):
        backup.entries_after(4)


def rebuilt_from(source: Replica) -> Replica:
    view = source.snapshot()
    return Replica("b", 0, snapshot=view, epoch=source.epoch, commit_index=view.index)


def test_truncation_never_reaches_into_the_base() -> None:
    log = [Entry(1, 1)] + [Entry(1, i, ("c", i), Set(b"k", b"%d" % i)) for i in range(2, 5)]
    backup = Replica("b", 0, log=log, epoch=1, commit_index=3)
    backup.compact(3)
    # A new primary (epoch 2) replaces the uncommitted entry 4: truncation after 3.
    new = (Entry(2, 4), Entry(2, 5, ("d", 1), Set(b"k", b"new")))
    ready = backup.on_message(Append(0, 2, "c", 3, 1, new, 5), 0)
    assert ready.persist[0].truncate_after == 3
    assert backup.entries_after(3) == new and backup.applied[b"k"][0] == b"new"
    # An entry at the base with another epoch is a conflict it cannot truncate: refused.
    conflict = Append(0, 3, "a", 4, 2, (Entry(3, 5),), 5)
    backup.compact(5)
    reply = backup.on_message(Append(0, 3, "a", 5, 9, (), 5), 0).send[0].message
    assert isinstance(reply, AppendReply) and not reply.success
    assert backup.base_index == 5 and backup.last_index == 5
    reply = backup.on_message(conflict, 0).send[0].message
    assert isinstance(reply, AppendReply) and not reply.success
    assert backup.applied[b"k"][0] == b"new"


def test_a_peer_behind_the_base_is_reported_as_needing_a_snapshot() -> None:
    pump = ready_pump(replica_lag_ms=100)
    pump.isolate("c")
    pump.cut -= {("a", "b"), ("b", "a")}
    for seq in range(1, 7):
        pump.send("a", Set(b"k", b"v%d" % seq), ("c1", seq))
    pump.tick(200)
    assert pump.config.isr == frozenset("ab")
    assert all(acked(pump.replies[("c1", seq)][-1]) for seq in range(1, 7))
    primary = pump.replicas["a"]
    primary.compact(primary.commit_index)
    assert primary.peers_needing_snapshot == frozenset()
    pump.heal()
    sent_before = len(pump.delivered)
    pump.tick(500)
    assert primary.peers_needing_snapshot == frozenset("c") and primary.snapshots_needed == 1
    assert pump.config.isr == frozenset("ab")  # it stays out of the ISR
    to_c = [m for _, t, m in pump.delivered[sent_before:] if t == "c" and isinstance(m, Append)]
    # Only probes at the base, about one a heartbeat (no resend at wire speed).
    assert to_c and all(m.entries == () and m.prev_index == primary.base_index for m in to_c)
    assert len(to_c) <= 500 / pump.settings.heartbeat_ms + 2
    # The others go on.
    written(pump, 2, first_seq=7)


def test_compaction_past_the_commit_index_is_refused() -> None:
    pump = ready_pump()
    pump.isolate("a")
    pump.send("a", Set(b"k", b"uncommitted"), ("c1", 1))
    pump.settle()
    a = pump.replicas["a"]
    assert a.last_index == a.commit_index + 1
    with pytest.raises(UsageError, match="commit index"):
        a.compact(a.last_index)
    a.compact(a.commit_index)  # up to it is fine
    with pytest.raises(UsageError, match="log ends"):
        a.compact(a.last_index + 1)


@pytest.mark.parametrize("bug", [False, True])
def test_bug_compact_past_commit_keeps_a_write_that_never_committed(bug: bool) -> None:
    pump = ready_pump(bugs=frozenset({"compact-past-commit"}) if bug else frozenset())
    assert acked(pump.call("a", Set(b"k", b"v1"), ("c1", 1)))
    pump.tick(60)
    pump.isolate("a")
    pump.send("a", Set(b"k", b"lost"), ("c1", 2))  # persisted on a only, never acked
    pump.settle()
    a = pump.replicas["a"]
    a.compact(a.last_index if bug else a.commit_index)
    expire(pump, "a")
    pump.failover()
    pump.tick(60)
    assert acked(pump.call("b", Set(b"k", b"v2"), ("c2", 1)))
    pump.heal()
    pump.tick(300)
    # The check: every replica converges to the primary's state.
    converged = pump.replicas["a"].applied == pump.replicas["b"].applied
    assert converged is not bug
