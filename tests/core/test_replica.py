"""Replica scenarios, driven by a tiny in-test world (the simulator proper lives in sim/).

``Pump`` holds one partition on a few nodes: a FIFO network with cuttable links, in-memory
disks that apply every Persist, a coordinator holding the config (changed by CAS through the
real Controller) and a manual clock. Each test tells one story.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.core.controller import Controller, ControllerSettings, SessionView
from planaria.core.messages import (
    Append,
    AppendReply,
    ClientReply,
    ClientRequest,
    ConfigUpdate,
    Delete,
    Entry,
    ErrorCode,
    Get,
    IncrBy,
    Message,
    NodeId,
    Op,
    PartitionConfig,
    Persist,
    ProposeIsr,
    Ready,
    RequestId,
    Set,
    Version,
)
from planaria.core.replica import Replica, ReplicaSettings, Role, merge_appends
from planaria.errors import UsageError

CLIENT = "client"


@dataclass
class Disk:
    log: list[Entry] = field(default_factory=list)
    epoch: int = 0
    commit_index: int = 0
    refused: list[str] = field(default_factory=list)  # what the storage rule refused

    def apply(self, persist: Persist) -> None:
        if persist.truncate_after is not None:
            if persist.truncate_after < self.commit_index:
                # The storage rule (storage.persist): never below the persisted commit index.
                self.refused.append(f"truncate after {persist.truncate_after}")
                return
            del self.log[persist.truncate_after :]
        self.log.extend(persist.entries)
        self.epoch = persist.epoch
        self.commit_index = persist.commit_index


class Pump:
    """One partition, a FIFO network, in-memory disks, a coordinator and the controller."""

    def __init__(
        self,
        nodes: tuple[NodeId, ...] = ("a", "b", "c"),
        *,
        bugs: frozenset[str] = frozenset(),
        **settings: float,
    ) -> None:
        self.now = 0.0
        self.settings = ReplicaSettings(bugs=bugs, **settings)  # type: ignore[arg-type]
        self.controller = Controller(ControllerSettings(bugs=bugs))
        self.nodes = nodes
        self.incarnation = dict.fromkeys(nodes, 1)
        self.lost_log = dict.fromkeys(nodes, 0)  # the loss id the node registers (0: none)
        self.session_alive = dict.fromkeys(nodes, True)
        self.renewed_ms = dict.fromkeys(nodes, 0.0)
        self.lease_until = dict.fromkeys(nodes, math.inf)
        self.disk = {n: Disk() for n in nodes}
        self.replicas: dict[NodeId, Replica] = {n: Replica(n, 0, self.settings) for n in nodes}
        self.down: set[NodeId] = set()
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.network: deque[tuple[NodeId, NodeId, Message]] = deque()
        self.replies: dict[RequestId, list[ClientReply]] = {}
        self.proposals: deque[tuple[NodeId, ProposeIsr]] = deque()
        self.auto_propose = True
        self.trace: list[tuple[NodeId, str]] = []  # effect kinds in execution order
        self.delivered: list[tuple[NodeId, NodeId, Message]] = []
        self.config = self.controller.initial_configs({0: nodes}, self.sessions())[0]
        self.renew()
        self.broadcast()

    def renew(self) -> None:
        """Hand every live replica its node's lease, without letting time pass."""
        for node in self.nodes:
            if node not in self.down:
                self.run(node, self.replicas[node].tick(self.now, self.lease_until[node]))

    # --- the world ---------------------------------------------------------------------------

    def sessions(self) -> dict[NodeId, SessionView]:
        return {
            n: SessionView(
                n,
                self.incarnation[n],
                self.session_alive[n],
                self.renewed_ms[n],
                0.0,
                lost={0: self.lost_log[n]} if self.lost_log[n] else {},
            )
            for n in self.nodes
        }

    def run(self, node: NodeId, ready: Ready) -> None:
        for persist in ready.persist:
            self.disk[node].apply(persist)
            self.trace.append((node, "persist"))
        for send in ready.send:
            self.network.append((node, send.to, send.message))
            self.trace.append((node, "send"))
        for reply in ready.replies:
            self.replies.setdefault(reply.reply.request_id, []).append(reply.reply)
            self.trace.append((node, "reply"))
        for request in ready.requests:
            self.proposals.append((node, request))

    def broadcast(self) -> None:
        for node in self.nodes:
            if node not in self.down:
                self.run(node, self.replicas[node].on_config(self.config, self.now))

    def cas(self, expected_version: int, config: PartitionConfig) -> bool:
        if self.config.version != expected_version:
            return False
        self.config = config
        self.broadcast()
        return True

    def step(self) -> bool:
        """Deliver one message or proposal; False when nothing is in flight."""
        if self.network:
            source, target, message = self.network.popleft()
            if target == CLIENT:
                return True
            if target not in self.down and (source, target) not in self.cut:
                self.delivered.append((source, target, message))
                self.run(target, self.replicas[target].on_message(message, self.now))
            return True
        if self.proposals and self.auto_propose:
            sender, proposal = self.proposals.popleft()
            change = self.controller.on_propose(proposal, sender, self.config)
            if change is not None:
                self.cas(change.expected_version, change.config)
            return True
        return False

    def settle(self, steps_max: int = 10_000) -> None:
        for _ in range(steps_max):
            if not self.step():
                return
        raise AssertionError("the network never went quiet")

    def tick(self, ms: float, *, every_ms: float = 10.0) -> None:
        """Let ``ms`` pass: tick every live replica every ``every_ms``, settling between."""
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + every_ms)
            for node in self.nodes:
                if node not in self.down:
                    ready = self.replicas[node].tick(self.now, self.lease_until[node])
                    self.run(node, ready)
            self.settle()

    def failover(self) -> list[str]:
        reasons = []
        for change in self.controller.decide([self.config], self.sessions(), self.now):
            if self.cas(change.expected_version, change.config):
                reasons.append(change.reason)
        self.settle()
        return reasons

    def crash(self, node: NodeId) -> None:
        self.down.add(node)

    def restart(self, node: NodeId, *, wiped: bool = False) -> Replica:
        """Rebuild ``node`` from its disk under a new session; ``wiped``: the disk came back
        empty (replaced, or its log was damaged) and the node registers the loss."""
        if wiped:
            self.disk[node] = Disk()
        disk = self.disk[node]
        self.replicas[node] = Replica(
            node,
            0,
            self.settings,
            log=list(disk.log),
            epoch=disk.epoch,
            commit_index=disk.commit_index,
            lost=wiped,
        )
        self.incarnation[node] += 1
        if wiped:
            self.lost_log[node] = self.incarnation[node]  # this start's loss
        self.run(node, self.replicas[node].session_opened(self.incarnation[node], self.now))
        self.down.discard(node)
        self.run(node, self.replicas[node].tick(self.now, self.lease_until[node]))
        self.run(node, self.replicas[node].on_config(self.config, self.now))
        return self.replicas[node]

    def isolate(self, node: NodeId) -> None:
        for other in self.nodes:
            if other != node:
                self.cut |= {(node, other), (other, node)}

    def heal(self) -> None:
        self.cut.clear()

    # --- clients -------------------------------------------------------------------------------

    def send(self, node: NodeId, op: Op, rid: RequestId, *, stale_ok: bool = False) -> None:
        request = ClientRequest(0, CLIENT, rid, op, stale_ok=stale_ok)
        self.run(node, self.replicas[node].on_message(request, self.now))

    def call(
        self, node: NodeId, op: Op, rid: RequestId, *, stale_ok: bool = False
    ) -> ClientReply | None:
        """Send and settle; the last reply for ``rid`` (None if unanswered)."""
        self.send(node, op, rid, stale_ok=stale_ok)
        self.settle()
        got = self.replies.get(rid)
        return got[-1] if got else None

    # --- views ---------------------------------------------------------------------------------

    @property
    def primary(self) -> Replica:
        assert self.config.primary is not None
        return self.replicas[self.config.primary]

    def log(self, node: NodeId) -> list[Entry]:
        return list(self.replicas[node].entries_after(0))


def ready_pump(**kwargs: object) -> Pump:
    pump = Pump(**kwargs)  # type: ignore[arg-type]
    pump.settle()
    assert pump.primary.serving(pump.now)
    return pump


def acked(reply: ClientReply | None) -> bool:
    return reply is not None and reply.error is None


# --- the normal write path ------------------------------------------------------------------


def test_write_persists_then_replicates_then_acks_after_every_isr_member() -> None:
    pump = ready_pump()
    primary = pump.replicas["a"]
    request = ClientRequest(0, CLIENT, ("c1", 1), Set(b"k", b"v1"))
    ready = primary.on_message(request, pump.now)
    # One step: the entry is persisted and sent to both backups, nobody is answered yet.
    assert [p.entries[0].op for p in ready.persist] == [Set(b"k", b"v1")]
    assert sorted(s.to for s in ready.send) == ["b", "c"]
    assert ready.replies == []
    pump.run("a", ready)
    # b's ack alone does not commit: c is in the ISR too.
    pump.cut.add(("c", "a"))
    pump.settle()
    assert pump.replies == {}
    assert pump.disk["c"].log[-1].op == Set(b"k", b"v1")  # c has it durably, its ack got lost
    pump.heal()
    pump.tick(60)  # the heartbeat retransmits; c acks again
    [reply] = pump.replies[("c1", 1)]
    assert reply.error is None and reply.applied and reply.value is None
    assert reply.version == Version(1, 2)  # the barrier of epoch 1 sits at index 1
    for node in pump.nodes:
        assert pump.disk[node].log == pump.log("a")
    assert pump.replicas["a"].applied[b"k"] == (b"v1", Version(1, 2))


def test_the_ack_comes_after_the_persist_of_every_copy() -> None:
    pump = ready_pump()
    pump.trace.clear()
    assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1)))
    persists = [i for i, (_, kind) in enumerate(pump.trace) if kind == "persist"]
    [reply_at] = [i for i, (_, kind) in enumerate(pump.trace) if kind == "reply"]
    assert len(persists) == 3 and max(persists) < reply_at


def test_backups_apply_what_the_primary_committed() -> None:
    pump = ready_pump()
    for seq in range(1, 4):
        assert acked(pump.call("a", Set(b"k", b"v%d" % seq), ("c1", seq)))
    pump.tick(60)  # a heartbeat carries the commit index
    for node in ("b", "c"):
        assert pump.replicas[node].applied[b"k"][0] == b"v3"
        assert pump.replicas[node].commit_index == pump.replicas["a"].commit_index


@pytest.mark.parametrize(
    ("before", "op", "applied", "previous", "after"),
    [
        (None, Set(b"k", b"new"), True, None, b"new"),
        (b"old", Set(b"k", b"new"), True, b"old", b"new"),
        (None, Set(b"k", b"new", nx=True), True, None, b"new"),
        (b"old", Set(b"k", b"new", nx=True), False, b"old", b"old"),
        (None, Set(b"k", b"new", xx=True), False, None, None),
        (b"old", Set(b"k", b"new", xx=True), True, b"old", b"new"),
        (b"old", Set(b"k", b"new", if_value=b"old"), True, b"old", b"new"),
        (b"old", Set(b"k", b"new", if_value=b"other"), False, b"old", b"old"),
        (None, Set(b"k", b"new", if_value=b"old"), False, None, None),
        (b"old", Set(b"k", b"new", nx=True, xx=True), False, b"old", b"old"),
        (b"old", Delete(b"k"), True, b"old", None),
        (None, Delete(b"k"), False, None, None),
    ],
)
def test_write_semantics_are_redis_like(
    before: bytes | None,
    op: Set | Delete,
    applied: bool,
    previous: bytes | None,
    after: bytes | None,
) -> None:
    pump = ready_pump(nodes=("a",), min_insync=1)
    if before is not None:
        assert acked(pump.call("a", Set(b"k", before), ("c0", 1)))
    reply = pump.call("a", op, ("c1", 1))
    assert reply is not None and reply.error is None
    assert (reply.applied, reply.value) == (applied, previous)
    assert (reply.version is not None) == applied
    read = pump.call("a", Get(b"k"), ("r", 1))
    assert read is not None and read.value == after and not read.stale


# --- reads and serving -----------------------------------------------------------------------


def test_reads_are_answered_only_by_a_serving_primary() -> None:
    pump = Pump()
    # Before the barrier commits, the primary is not ready; backups redirect.
    assert not pump.replicas["a"].serving(pump.now)
    pump.send("a", Get(b"k"), ("r", 1))
    assert pump.replies[("r", 1)][-1].error is ErrorCode.NOT_READY
    pump.settle()
    assert pump.replicas["a"].serving(pump.now)
    assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1)))
    read = pump.call("a", Get(b"k"), ("r", 2))
    assert read is not None and read.value == b"v" and read.version == Version(1, 2)
    redirect = pump.call("b", Get(b"k"), ("r", 3))
    assert redirect is not None
    assert (redirect.error, redirect.primary_hint) == (ErrorCode.NOT_PRIMARY, "a")
    write_redirect = pump.call("b", Set(b"k", b"x"), ("c1", 2))
    assert write_redirect is not None and write_redirect.error is ErrorCode.NOT_PRIMARY


def test_stale_reads_on_a_backup_say_so() -> None:
    pump = ready_pump()
    assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1)))
    before_heartbeat = pump.call("b", Get(b"k"), ("r", 1), stale_ok=True)
    assert before_heartbeat is not None and before_heartbeat.stale
    assert before_heartbeat.value is None  # b has the entry but not yet the commit point
    pump.tick(60)
    after = pump.call("b", Get(b"k"), ("r", 2), stale_ok=True)
    assert after is not None and after.stale and after.value == b"v"
    on_primary = pump.call("a", Get(b"k"), ("r", 3), stale_ok=True)
    assert on_primary is not None and not on_primary.stale


def test_lease_expiry_stops_serving_until_renewed() -> None:
    pump = ready_pump()
    pump.lease_until["a"] = pump.now + 100
    pump.tick(90)
    assert pump.replicas["a"].serving(pump.now)
    pump.tick(20)
    assert not pump.replicas["a"].serving(pump.now)
    for rid, op in ((("r", 1), Get(b"k")), (("c1", 1), Set(b"k", b"v"))):
        reply = pump.call("a", op, rid)
        assert reply is not None and reply.error is ErrorCode.NOT_READY
    assert pump.replicas["a"].last_index == 1  # the refused write never reached the log
    pump.lease_until["a"] = pump.now + 1000
    pump.tick(10)
    assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1)))


# --- failover, barrier, fencing --------------------------------------------------------------


def expire(pump: Pump, node: NodeId) -> None:
    """``node``'s session expires (its lease surely ran out): it is dead to the controller."""
    pump.session_alive[node] = False
    pump.lease_until[node] = pump.now


def test_new_primary_serves_only_after_its_barrier_commits() -> None:
    pump = ready_pump()
    assert acked(pump.call("a", Set(b"k", b"v1"), ("c1", 1)))
    pump.crash("a")
    expire(pump, "a")
    pump.cut |= {("b", "c")}  # b's barrier cannot reach c yet
    assert pump.failover() == ["primary a session expired: b promoted"]
    b = pump.replicas["b"]
    assert (b.role, b.epoch, pump.config.isr) == (Role.PRIMARY, 2, frozenset("bc"))
    assert b.entries_after(b.last_index - 1) == (Entry(2, 3),)  # the barrier
    assert not b.serving(pump.now)
    reply = pump.call("b", Get(b"k"), ("r", 1))
    assert reply is not None and reply.error is ErrorCode.NOT_READY
    pump.heal()
    pump.tick(60)
    assert b.serving(pump.now)
    read = pump.call("b", Get(b"k"), ("r", 2))
    assert read is not None and read.value == b"v1"


def test_writes_in_flight_at_failover_survive_on_the_new_primary() -> None:
    pump = ready_pump()
    pump.cut |= {("b", "a"), ("c", "a")}  # the acks never come back
    pump.send("a", Set(b"k", b"v"), ("c1", 1))
    pump.settle()
    assert pump.replies == {}
    pump.crash("a")
    expire(pump, "a")
    pump.failover()
    pump.heal()
    pump.tick(60)
    # The client retries at the new primary: the entry is in b's log; it waits for it, once.
    reply = pump.call("b", Set(b"k", b"v"), ("c1", 1))
    assert reply is not None and reply.applied and reply.version == Version(1, 2)
    writes = [e for e in pump.log("b") if e.request_id == ("c1", 1)]
    assert len(writes) == 1


def test_a_stale_epoch_is_rejected_both_ways() -> None:
    pump = ready_pump()
    pump.isolate("a")
    pump.crash("a")
    expire(pump, "a")
    pump.failover()
    pump.tick(60)
    assert pump.replicas["b"].serving(pump.now)
    # The old primary (epoch 1) still talks: c rejects it and names epoch 2.
    old = pump.replicas["a"]
    stale = Append(0, 1, "a", prev_index=1, prev_epoch=1, entries=(), commit_index=1)
    ready = pump.replicas["c"].on_message(stale, pump.now)
    [send] = ready.send
    assert isinstance(send.message, AppendReply)
    assert (send.message.success, send.message.epoch) == (False, 2)
    # ... and the old primary, on that reply, steps down and persists the new epoch.
    back = old.on_message(send.message, pump.now)
    assert old.role is Role.BACKUP and old.epoch == 2
    assert [p.epoch for p in back.persist] == [2]
    # The other way round: a reply from an older epoch does not move the new primary.
    b = pump.replicas["b"]
    commit = b.commit_index
    b.on_message(AppendReply(0, 1, "c", success=True, match_index=99), pump.now)
    assert b.match_index("c") <= b.last_index and b.commit_index == commit
    # Configs of older epochs are ignored.
    assert not pump.replicas["c"].on_config(
        PartitionConfig(0, 1, "a", ("a", "b", "c"), frozenset("abc"), 1), pump.now
    )
    assert pump.replicas["c"].config == pump.config


def test_a_primary_steps_down_on_a_config_of_a_higher_epoch() -> None:
    pump = ready_pump()
    a = pump.replicas["a"]
    pump.cut |= {("b", "a"), ("c", "a")}
    pump.send("a", Set(b"k", b"v"), ("c1", 1))
    newer = PartitionConfig(0, 2, "b", ("a", "b", "c"), frozenset("bc"), 2)
    ready = a.on_config(newer, pump.now)
    assert a.role is Role.BACKUP and not a.serving(pump.now)
    assert [p.epoch for p in ready.persist] == [2]
    reply = a.on_message(ClientRequest(0, CLIENT, ("c1", 2), Get(b"k")), pump.now)
    assert reply.replies[0].reply.error is ErrorCode.NOT_PRIMARY
    assert reply.replies[0].reply.primary_hint == "b"


def test_a_divergent_suffix_is_truncated() -> None:
    pump = ready_pump()
    assert acked(pump.call("a", Set(b"k", b"v1"), ("c1", 1)))
    pump.isolate("a")
    pump.send("a", Set(b"k", b"lost"), ("c1", 2))  # persisted on a only, never acked
    pump.settle()
    assert pump.log("a")[-1].op == Set(b"k", b"lost")
    expire(pump, "a")
    pump.failover()
    pump.tick(60)
    assert acked(pump.call("b", Set(b"k", b"v2"), ("c2", 1)))
    # a comes back (new session, rebuilt as after a restart) and rejoins as a backup.
    pump.crash("a")
    pump.restart("a")
    pump.session_alive["a"] = True
    pump.heal()
    pump.tick(200)
    assert pump.log("a") == pump.log("b") == pump.log("c")
    assert pump.disk["a"].log == pump.log("b")
    assert all(e.op != Set(b"k", b"lost") for e in pump.log("a"))
    assert pump.replicas["a"].applied[b"k"][0] == b"v2"
    assert pump.config.isr == frozenset("abc")  # caught up, added back


def test_a_lagging_backup_catches_up_from_the_log_and_rejoins_the_isr() -> None:
    pump = ready_pump(replica_lag_ms=100, batch_entries_max=4)
    pump.isolate("c")
    for seq in range(1, 11):
        pump.send("a", Set(b"k%d" % seq, b"v"), ("c1", seq))
    pump.tick(200)
    assert pump.config.isr == frozenset("ab")  # shrunk before anything committed without c
    assert all(acked(pump.replies[("c1", s)][-1]) for s in range(1, 11))
    assert pump.replicas["c"].last_index == 1
    pump.heal()
    pump.tick(100)
    assert pump.log("c") == pump.log("a")
    assert pump.replicas["c"].applied == pump.replicas["a"].applied
    assert pump.config.isr == frozenset("abc")


def test_a_write_commits_without_a_lagging_member_only_after_the_isr_shrank() -> None:
    pump = ready_pump(replica_lag_ms=100)
    pump.cut.add(("a", "c"))
    pump.auto_propose = False
    pump.send("a", Set(b"k", b"v"), ("c1", 1))
    pump.tick(150)
    assert ("c1", 1) not in pump.replies
    [(sender, proposal)] = list(pump.proposals)
    assert (sender, proposal.isr, proposal.expected_version) == ("a", frozenset("ab"), 1)
    pump.tick(300)  # no answer from the controller: the proposal is sent again, no ack yet
    assert len(pump.proposals) > 1 and ("c1", 1) not in pump.replies
    pump.auto_propose = True
    pump.settle()
    assert pump.config.isr == frozenset("ab") and pump.config.version == 2
    assert acked(pump.replies[("c1", 1)][-1])


def test_writes_are_refused_below_min_insync() -> None:
    pump = ready_pump(replica_lag_ms=100)
    pump.isolate("a")
    pump.cut -= {("a", CLIENT)}
    pump.tick(150)
    assert pump.config.isr == frozenset("a")
    reply = pump.call("a", Set(b"k", b"v"), ("c1", 1))
    assert reply is not None and reply.error is ErrorCode.NOT_ENOUGH_REPLICAS
    read = pump.call("a", Get(b"k"), ("r", 1))
    assert read is not None and read.error is None  # reads still served under the lease


# --- restart ---------------------------------------------------------------------------------


def test_a_restarted_backup_is_rebuilt_from_its_persisted_log() -> None:
    pump = ready_pump()
    for seq in range(1, 4):
        assert acked(pump.call("a", Set(b"k", b"v%d" % seq), ("c1", seq)))
    pump.tick(60)
    pump.crash("b")
    b = pump.restart("b")
    assert b.role is Role.BACKUP and b.last_index == 4
    # Applied up to the persisted commit hint (the one that came with the last entries).
    assert b.commit_index == pump.disk["b"].commit_index == 3
    assert b.applied[b"k"][0] == b"v2"
    assert b.dedup == {"c1": (1, 2)}
    pump.tick(60)
    assert b.applied[b"k"][0] == b"v3"
    assert acked(pump.call("a", Set(b"k", b"v4"), ("c1", 4)))
    assert pump.log("b") == pump.log("a")


def test_a_restarted_primary_waits_for_a_new_epoch() -> None:
    pump = ready_pump()
    assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1)))
    pump.crash("a")
    a = pump.restart("a")  # came back before its session expired, with a new incarnation
    assert pump.config.primary == "a" and a.role is Role.BACKUP and not a.serving(pump.now)
    reply = pump.call("a", Get(b"k"), ("r", 1))
    assert reply is not None and reply.error is ErrorCode.NOT_READY
    [reason] = pump.failover()
    assert "incarnation 2" in reason
    pump.tick(20)
    assert pump.config.epoch == 2
    assert pump.primary.serving(pump.now)
    read = pump.call(pump.config.primary, Get(b"k"), ("r", 2))
    assert read is not None and read.value == b"v"


def test_a_replica_that_learned_the_epoch_from_a_peer_still_takes_the_lead() -> None:
    pump = ready_pump()
    a = pump.replicas["a"]
    # A reply of epoch 2 fences a (epoch 1) before the config of epoch 2 reaches it...
    a.on_message(AppendReply(0, 2, "b", success=False), pump.now)
    assert (a.role, a.epoch) == (Role.BACKUP, 2)
    # ... and that config names a: it never led epoch 2, so it leads it now.
    newer = PartitionConfig(0, 2, "a", ("a", "b", "c"), frozenset("abc"), 2, 1)
    pump.config = newer
    pump.broadcast()
    pump.settle()
    assert a.role is Role.PRIMARY and a.serving(pump.now)


# --- dedup and back-pressure -----------------------------------------------------------------


def test_a_retried_committed_write_is_answered_from_the_dedup_table() -> None:
    pump = ready_pump()
    first = pump.call("a", Set(b"k", b"v", nx=True), ("c1", 1))
    assert first is not None and first.applied
    last = pump.replicas["a"].last_index
    again = pump.call("a", Set(b"k", b"v", nx=True), ("c1", 1))
    assert again == first  # the same answer, applied=True, not re-run (NX would now fail)
    assert pump.replicas["a"].last_index == last


def test_bug_retry_applies_again_counts_a_retried_increment_twice() -> None:
    pump = ready_pump(bugs=frozenset({"retry-applies-again"}))
    first = pump.call("a", IncrBy(b"n", 1), ("c1", 1))
    again = pump.call("a", IncrBy(b"n", 1), ("c1", 1))
    assert first is not None and first.result == 1
    assert again is not None and again.result == 2  # the retry was applied again
    assert pump.primary.applied[b"n"][0] == b"2"


def test_the_dedup_table_forgets_the_least_recently_written_client_first() -> None:
    pump = ready_pump(dedup_clients_max=2)
    # c1 writes again after c2, so c2 is the least recently written when c3 arrives.
    for request_id in (("c1", 1), ("c2", 1), ("c1", 2), ("c3", 1)):
        assert acked(pump.call("a", Set(b"k", b"v"), request_id))
    pump.tick(60)  # the backups learn the last commit index
    for name in ("a", "b", "c"):  # every replica forgets the same one
        assert sorted(pump.replicas[name].dedup) == ["c1", "c3"], name
    with pytest.raises(UsageError):
        ReplicaSettings(dedup_clients_max=0)


def seq_two_before_seq_one(pump: Pump) -> tuple[ClientReply, ClientReply]:
    """One client's seq 2 reaches the primary (and commits) before its seq 1: both must be
    answered and applied. Returns their replies."""
    pump.send("a", Set(b"k2", b"v2"), ("c1", 2))
    pump.send("a", Set(b"k1", b"v1"), ("c1", 1))
    pump.settle()
    pump.tick(60)
    first, second = pump.replies.get(("c1", 1)), pump.replies.get(("c1", 2))
    assert first is not None, "seq 1 was never answered"
    assert second is not None and acked(second[-1]) and acked(first[-1])
    for node in pump.nodes:
        applied = pump.replicas[node].applied
        assert applied[b"k1"][0] == b"v1" and applied[b"k2"][0] == b"v2", node
    return first[-1], second[-1]


def test_writes_of_one_client_that_arrive_out_of_order_are_all_applied_once() -> None:
    pump = ready_pump()
    one, two = seq_two_before_seq_one(pump)
    assert two.version is not None and one.version is not None and two.version < one.version
    last = pump.primary.last_index
    # Retries (in either order) get the original replies and append nothing.
    assert pump.call("a", Set(b"k1", b"v1"), ("c1", 1)) == one
    assert pump.call("a", Set(b"k2", b"v2"), ("c1", 2)) == two
    assert pump.primary.last_index == last
    for node in pump.nodes:
        assert pump.replicas[node].dedup == {"c1": (1, 2)}, node


def test_bug_dedup_last_only_drops_the_earlier_write_silently() -> None:
    with pytest.raises(AssertionError, match="seq 1 was never answered"):
        seq_two_before_seq_one(ready_pump(bugs=frozenset({"dedup-last-only"})))


def test_a_write_below_the_window_is_refused_as_seq_too_old() -> None:
    pump = ready_pump(dedup_window=4)
    for seq in (1, 2, 10):
        assert acked(pump.call("a", Set(b"k%d" % seq, b"v"), ("c1", seq)))
    assert pump.primary.dedup == {"c1": (10,)}  # 1 and 2 fell out of (6, 10]
    last = pump.primary.last_index
    for seq in (1, 6):  # a retry of a forgotten write, and one never seen but too old
        reply = pump.call("a", Set(b"k%d" % seq, b"again"), ("c1", seq))
        assert reply is not None and reply.error is ErrorCode.SEQ_TOO_OLD
    assert pump.primary.last_index == last
    assert pump.primary.applied[b"k1"][0] == b"v" and b"k6" not in pump.primary.applied
    # Inside the window: applied once, in any order.
    assert acked(pump.call("a", Set(b"k7", b"v"), ("c1", 7)))
    assert pump.primary.dedup == {"c1": (7, 10)}


def test_a_write_that_falls_below_the_window_in_the_log_is_refused_when_it_applies() -> None:
    pump = ready_pump(dedup_window=4)
    # Both pass the check on arrival (nothing applied yet); 10 applies first, so 1 is too old.
    pump.send("a", Set(b"k10", b"v"), ("c1", 10))
    pump.send("a", Set(b"k1", b"v"), ("c1", 1))
    pump.settle()
    [reply] = pump.replies[("c1", 1)]
    assert reply.error is ErrorCode.SEQ_TOO_OLD
    pump.tick(60)
    for node in pump.nodes:
        assert b"k1" not in pump.replicas[node].applied, node
        assert pump.replicas[node].dedup == {"c1": (10,)}, node


def test_the_window_is_rebuilt_by_replay_and_answers_retries_after_failover() -> None:
    pump = ready_pump(dedup_window=4)
    one, two = seq_two_before_seq_one(pump)
    assert acked(pump.call("a", Set(b"k5", b"v"), ("c1", 5)))
    pump.tick(60)
    expected = {"c1": (2, 5)}  # 1 fell out of (1, 5]
    pump.crash("b")
    b = pump.restart("b")  # rebuilt from its log alone
    pump.tick(60)
    assert b.dedup == pump.replicas["a"].dedup == expected
    pump.crash("a")
    expire(pump, "a")
    pump.failover()
    pump.tick(60)
    new_primary = pump.primary
    assert new_primary.node != "a" and new_primary.serving(pump.now)
    assert new_primary.dedup == expected
    retried = pump.call(new_primary.node, Set(b"k2", b"v2"), ("c1", 2))
    assert retried == two  # the stored reply (of epoch 1), not applied again
    too_old = pump.call(new_primary.node, Set(b"k1", b"v1"), ("c1", 1))
    assert too_old is not None and too_old.error is ErrorCode.SEQ_TOO_OLD
    assert one.version is not None and new_primary.applied[b"k1"][1] == one.version
    assert [e.request_id for e in pump.log(new_primary.node)].count(("c1", 2)) == 1


def test_the_dedup_table_is_bounded_by_clients_times_window() -> None:
    pump = ready_pump(dedup_window=3, dedup_clients_max=2)
    for client in ("c1", "c2", "c3"):
        for seq in range(1, 6):
            assert acked(pump.call("a", Set(b"k", b"v"), (client, seq)))
    pump.tick(60)
    for node in pump.nodes:
        assert pump.replicas[node].dedup == {"c2": (3, 4, 5), "c3": (3, 4, 5)}, node
    with pytest.raises(UsageError):
        ReplicaSettings(dedup_window=0)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_interleaving_of_writes_in_flight_applies_each_exactly_once(
    data: st.DataObject,
) -> None:
    window = data.draw(st.integers(1, 8), label="window")
    writes = data.draw(st.integers(1, window), label="writes in flight")
    # Every write is sent once and may be retried; between sends, messages are delivered.
    sends = data.draw(
        st.permutations([*range(1, writes + 1), *data.draw(st.lists(st.integers(1, writes)))])
    )
    pump = ready_pump(dedup_window=window)
    for seq in sends:
        pump.send("a", Set(b"k%d" % seq, b"v%d" % seq), ("c1", seq))
        for _ in range(data.draw(st.integers(0, 6), label="steps")):
            pump.step()
    pump.settle()
    pump.tick(60)
    for seq in range(1, writes + 1):
        replies = pump.replies.get(("c1", seq))
        assert replies, f"seq {seq} never answered"
        assert all(reply == replies[0] and acked(reply) for reply in replies)
        for node in pump.nodes:
            # Applied once: a second application would have moved the key's version.
            assert pump.replicas[node].applied[b"k%d" % seq] == (b"v%d" % seq, replies[0].version)
    in_log = [e.request_id for e in pump.log("a") if e.request_id is not None]
    assert sorted(set(in_log)) == [("c1", seq) for seq in range(1, writes + 1)]


def test_a_retried_pending_write_waits_for_its_entry() -> None:
    pump = ready_pump()
    pump.cut.add(("a", "b"))
    pump.send("a", Set(b"k", b"v"), ("c1", 1))
    pump.send("a", Set(b"k", b"v"), ("c1", 1))
    pump.settle()
    assert ("c1", 1) not in pump.replies
    pump.heal()
    pump.tick(60)
    replies = pump.replies[("c1", 1)]
    assert len(replies) == 2 and replies[0] == replies[1] and replies[0].applied
    assert sum(e.request_id == ("c1", 1) for e in pump.log("a")) == 1


def test_too_many_pending_writes_are_refused_as_overloaded() -> None:
    pump = ready_pump(pending_writes_max=2)
    pump.cut.add(("b", "a"))
    for seq in (1, 2, 3):
        pump.send("a", Set(b"k", b"v"), ("c1", seq))
    assert pump.replies[("c1", 3)][-1].error is ErrorCode.OVERLOADED
    assert ("c1", 1) not in pump.replies
    pump.heal()
    pump.tick(60)
    assert acked(pump.replies[("c1", 2)][-1])


def test_appends_are_batched() -> None:
    pump = ready_pump(batch_entries_max=3)
    pump.isolate("c")
    for seq in range(1, 8):
        assert acked(pump.call("a", Set(b"k", b"v"), ("c1", seq))) is False
    pump.heal()
    pump.delivered.clear()
    pump.tick(100)
    sizes = [
        len(m.entries)
        for _, target, m in pump.delivered
        if isinstance(m, Append) and target == "c" and m.entries
    ]
    assert sizes and max(sizes) == 3 and sum(sizes) >= 7
    assert pump.log("c") == pump.log("a")


def appends_of(entries: list[Entry], cuts: list[int], commits: list[int]) -> list[Append]:
    """A primary's Appends (epoch 2) of ``entries``, cut at ``cuts`` (empty pieces are
    heartbeats), each with a commit index that never decreases."""
    appends: list[Append] = []
    prev = commit = 0
    for number, end in enumerate([*sorted(cuts), len(entries)]):
        piece = tuple(entries[prev:end])
        commit = max(commit, min(commits[number % len(commits)], end))
        prev_epoch = entries[prev - 1].epoch if prev else 0
        appends.append(Append(0, 2, "a", prev, prev_epoch, piece, commit, float(number)))
        prev = max(prev, end)
    return appends


def merged_in_order(appends: list[Append], entries_max: int) -> list[Append]:
    out: list[Append] = []
    for append in appends:
        merged = merge_appends(out[-1], append, entries_max) if out else None
        if merged is None:
            out.append(append)
        else:
            out[-1] = merged
    return out


def stepped(appends: list[Append]) -> tuple[Replica, AppendReply]:
    backup = Replica("b", 0, ReplicaSettings())
    replies = [send.message for a in appends for send in backup.on_message(a, 0.0).send]
    assert all(isinstance(r, AppendReply) and r.success for r in replies)
    last = replies[-1]
    assert isinstance(last, AppendReply)
    return backup, last


@given(
    epochs=st.lists(st.integers(1, 2), min_size=1, max_size=30).map(sorted),
    cuts=st.lists(st.integers(0, 30), max_size=8),
    commits=st.lists(st.integers(0, 30), min_size=1, max_size=8),
    entries_max=st.integers(1, 40),
)
def test_a_merged_append_steps_a_backup_as_its_parts_do(
    epochs: list[int], cuts: list[int], commits: list[int], entries_max: int
) -> None:
    entries = [
        Entry(epoch, index, ("c", index), Set(b"k%d" % index, b"v"))
        for index, epoch in enumerate(epochs, start=1)
    ]
    parts = appends_of(entries, [min(cut, len(entries)) for cut in cuts], commits)
    merged = merged_in_order(parts, entries_max)
    largest_part = max(len(p.entries) for p in parts)
    assert all(len(a.entries) <= max(entries_max, largest_part) for a in merged)
    one_by_one, last_reply = stepped(parts)
    together, merged_reply = stepped(merged)
    assert together.entries_after(0) == one_by_one.entries_after(0) == tuple(entries)
    assert together.commit_index == one_by_one.commit_index
    assert dict(together.applied) == dict(one_by_one.applied)
    assert merged_reply.match_index == last_reply.match_index == len(entries)


def test_appends_merge_only_when_one_continues_the_other() -> None:
    entry = [Entry(2, i, ("c", i), Set(b"k", b"v")) for i in range(1, 5)]
    first = Append(0, 2, "a", 0, 0, (entry[0], entry[1]), 1, sent_ms=5.0)
    then = Append(0, 2, "a", 2, 2, (entry[2],), 2, sent_ms=6.0)
    merged = merge_appends(first, then, 3)
    assert merged == Append(0, 2, "a", 0, 0, tuple(entry[:3]), 2, sent_ms=5.0)
    assert merge_appends(first, then, 2) is None  # over entries_max
    heartbeat = Append(0, 2, "a", 2, 2, (), 1)
    assert merge_appends(first, heartbeat, 2) == first  # a heartbeat adds nothing
    for other in (
        Append(0, 2, "a", 3, 2, (entry[3],), 2),  # a gap
        Append(0, 2, "a", 2, 1, (entry[2],), 2),  # prev epoch differs: not a continuation
        Append(0, 3, "a", 2, 2, (entry[2],), 2),  # a newer epoch
        Append(0, 2, "z", 2, 2, (entry[2],), 2),  # another sender
        Append(1, 2, "a", 2, 2, (entry[2],), 2),  # another partition
    ):
        assert merge_appends(first, other, 10) is None


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_is_refused_clearly() -> None:
    replica = Replica("a", 0)
    with pytest.raises(UsageError, match="partition 1"):
        replica.on_message(ConfigUpdate(PartitionConfig(1, 1, "a", ("a",), frozenset("a"), 1)), 0)
    with pytest.raises(UsageError, match="ClientReply"):
        replica.on_message(ClientReply(0, ("c", 1)), 0)
    with pytest.raises(UsageError, match="index"):
        Replica("a", 0, log=[Entry(1, 2)])
    with pytest.raises(UsageError, match="bug"):
        ReplicaSettings(bugs=frozenset({"no-such-bug"}))
    with pytest.raises(UsageError, match="min_insync"):
        ReplicaSettings(min_insync=0)


# --- the known-bug switches -------------------------------------------------------------------


def test_bug_ack_before_replicate_acks_after_the_local_persist() -> None:
    for bugs, expect_ack in ((frozenset(), False), (frozenset({"ack-before-replicate"}), True)):
        pump = ready_pump(bugs=bugs)
        pump.isolate("a")
        pump.cut -= {("a", CLIENT)}
        assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1))) is expect_ack


def test_bug_no_epoch_fence_lets_an_old_primary_write_to_a_backup() -> None:
    for bugs, accepted in ((frozenset(), False), (frozenset({"no-epoch-fence"}), True)):
        pump = ready_pump(bugs=bugs)
        pump.isolate("a")
        expire(pump, "a")
        pump.failover()
        pump.tick(60)
        c = pump.replicas["c"]
        old = Entry(1, 2, ("c9", 1), Set(b"k", b"old"))
        ready = c.on_message(Append(0, 1, "a", 1, 1, (old,), 1), pump.now)
        [send] = ready.send
        assert isinstance(send.message, AppendReply)
        assert send.message.success is accepted
        assert (old in c.entries_after(0)) is accepted


def test_bug_skip_truncate_keeps_a_divergent_suffix() -> None:
    for bugs, diverged in ((frozenset(), False), (frozenset({"skip-truncate"}), True)):
        pump = ready_pump(bugs=bugs)
        pump.isolate("a")
        pump.send("a", Set(b"k", b"lost"), ("c1", 1))
        pump.settle()
        expire(pump, "a")
        pump.failover()
        pump.tick(60)
        assert acked(pump.call("b", Set(b"k", b"v2"), ("c2", 1)))
        pump.crash("a")
        pump.restart("a")
        pump.session_alive["a"] = True
        pump.heal()
        pump.tick(100)
        assert (pump.log("a") != pump.log("b")) is diverged


def test_bug_no_lease_wait_serves_past_the_lease() -> None:
    for bugs, serves in ((frozenset(), False), (frozenset({"no-lease-wait"}), True)):
        pump = ready_pump(bugs=bugs)
        pump.lease_until["a"] = pump.now + 50
        pump.tick(100)
        assert pump.replicas["a"].serving(pump.now) is serves


# --- random fault schedules (a small property test; the simulator does this at scale) -------

NODE_NAMES = ("a", "b", "c")
actions = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2)),
    st.tuples(st.just("tick"), st.sampled_from([10, 30, 60, 200])),
    st.tuples(st.just("cut"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("heal"), st.just(0)),
    st.tuples(st.just("restart"), st.integers(0, 2)),
    st.tuples(st.just("expire"), st.integers(0, 2)),
    st.tuples(st.just("revive"), st.integers(0, 2)),
)


def check_invariants(pump: Pump, acks: dict[RequestId, Version]) -> None:
    live = [n for n in pump.nodes if n not in pump.down]
    serving = [n for n in live if pump.replicas[n].serving(pump.now)]
    assert len(serving) <= 1, f"two primaries serving: {serving}"
    for x in live:
        for y in live:
            common = min(pump.replicas[x].commit_index, pump.replicas[y].commit_index)
            assert pump.log(x)[:common] == pump.log(y)[:common], "committed prefixes differ"
    for rid, version in acks.items():
        for node in pump.config.isr:
            log = pump.disk[node].log
            assert len(log) >= version.index and log[version.index - 1].request_id == rid, (
                f"acked {rid} at {version} missing on isr member {node}"
            )


@settings(max_examples=60, deadline=None)
@given(schedule=st.lists(actions, min_size=5, max_size=40))
def test_random_fault_schedules_keep_the_invariants(schedule: list[tuple[object, ...]]) -> None:
    run_schedule(schedule)


def test_the_schedule_checks_catch_ack_before_replicate() -> None:
    schedule: list[tuple[object, ...]] = [("cut", 0, 1), ("write", 0), ("tick", 10)]
    run_schedule(schedule)
    with pytest.raises(AssertionError, match="missing on isr member b"):
        run_schedule(schedule, bugs=frozenset({"ack-before-replicate"}))


def run_schedule(schedule: list[tuple[object, ...]], bugs: frozenset[str] = frozenset()) -> None:
    pump = ready_pump(replica_lag_ms=100, bugs=bugs)
    acks: dict[RequestId, Version] = {}
    seq = 0

    def collect() -> None:
        for rid, replies in pump.replies.items():
            for reply in replies:
                if reply.error is None and rid[0] == "w" and reply.version is not None:
                    assert acks.setdefault(rid, reply.version) == reply.version

    for action in schedule:
        kind, arg = action[0], action[1]
        assert isinstance(arg, int)
        node = NODE_NAMES[arg % 3]
        if kind == "write":
            seq += 1
            if node not in pump.down:
                pump.send(node, Set(b"k%d" % (seq % 3), b"v%d" % seq), ("w", seq))
            pump.settle()
        elif kind == "tick":
            pump.tick(arg)
        elif kind == "cut":
            target = action[2]
            assert isinstance(target, int)
            other = NODE_NAMES[target % 3]
            if other != node:
                pump.cut.add((node, other))
        elif kind == "heal":
            pump.heal()
        elif kind == "restart":
            pump.crash(node)
            pump.restart(node)
        elif kind == "expire" and pump.session_alive[node]:
            expire(pump, node)
            pump.crash(node)  # the runtime rebuilds every replica when its session is lost
            pump.restart(node)
            pump.failover()
        elif kind == "revive" and not pump.session_alive[node]:
            pump.session_alive[node] = True
            pump.lease_until[node] = math.inf
            pump.renew()
            pump.failover()
        collect()
        check_invariants(pump, acks)
    # Heal everything: a primary serves again and the replicas converge.
    pump.heal()
    for node in pump.nodes:
        if not pump.session_alive[node]:
            pump.session_alive[node] = True
            pump.incarnation[node] += 1
            pump.lease_until[node] = math.inf
    for _ in range(5):
        pump.failover()
        pump.tick(200)
    collect()
    check_invariants(pump, acks)
    assert pump.primary.serving(pump.now), pump.config
    assert pump.config.isr == frozenset(pump.nodes)
    assert pump.log("a") == pump.log("b") == pump.log("c")
    assert pump.replicas["a"].applied == pump.replicas["b"].applied == pump.replicas["c"].applied


# --- a replica that lost its data (issue 16) ------------------------------------------------


def wipe_and_restart(pump: Pump, node: NodeId) -> Replica:
    pump.crash(node)
    return pump.restart(node, wiped=True)


@pytest.mark.parametrize("bug", [False, True])
def test_a_wiped_backup_rejoining_loses_no_acknowledged_write(bug: bool) -> None:
    # R = 2, min_insync 1: the backup b comes back with an empty log, then the primary dies.
    pump = ready_pump(
        nodes=("a", "b"),
        min_insync=1,
        bugs=frozenset({"wiped-stays-in-sync"}) if bug else frozenset(),
    )
    assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1)))
    wipe_and_restart(pump, "b")
    pump.failover()  # the controller sees b's new session, and its loss
    pump.crash("a")
    pump.session_alive["a"] = False
    pump.failover()
    pump.tick(30)
    if bug:
        # The old behaviour: the empty replica stays in sync, is promoted, and the
        # acknowledged write is gone.
        assert pump.config.primary == "b" and pump.primary.serving(pump.now)
        read = pump.call("b", Get(b"k"), ("r", 1))
        assert read is not None and read.error is None and read.value is None
        return
    # b left the ISR before anything else; nobody is left to promote: the partition refuses.
    assert "b" not in pump.config.isr and pump.config.wiped == (("b", 2),)
    assert pump.config.primary == "a" and not pump.replicas["b"].serving(pump.now)
    refused = pump.call("b", Get(b"k"), ("r", 1))
    assert refused is not None and refused.error is not None
    # a comes back with its log: it leads again, refills b, and b rejoins the ISR.
    pump.session_alive["a"] = True
    pump.restart("a")
    pump.failover()
    pump.tick(200)
    assert pump.config.primary == "a" and pump.config.isr == {"a", "b"}
    read = pump.call("a", Get(b"k"), ("r", 2))
    assert read is not None and read.value == b"v"
    assert pump.log("b") == pump.log("a")


@pytest.mark.parametrize("bug", [False, True])
def test_a_wiped_backup_is_never_promoted_over_an_in_sync_one(bug: bool) -> None:
    # R = 3, min_insync 2: b comes back empty, then the primary a dies.
    pump = ready_pump(bugs=frozenset({"wiped-stays-in-sync"}) if bug else frozenset())
    for seq in range(1, 4):
        assert acked(pump.call("a", Set(b"k", b"v%d" % seq), ("c1", seq)))
    pump.tick(60)  # c persists the commit index
    wipe_and_restart(pump, "b")
    pump.failover()
    pump.crash("a")
    pump.session_alive["a"] = False
    pump.failover()
    pump.tick(100)
    if bug:
        # b (first in preference order) is promoted with an empty log: c is asked to
        # truncate below its commit index, and the storage rule refuses (a node stops there).
        assert pump.config.primary == "b"
        assert pump.disk["c"].refused == ["truncate after 0"]
        return
    assert pump.config.primary == "c" and pump.primary.serving(pump.now)
    assert not pump.disk["c"].refused
    read = pump.call("c", Get(b"k"), ("r", 1))
    assert read is not None and read.value == b"v3"
    # c refills b, which rejoins the ISR through c's catch-up proposal.
    pump.tick(200)
    assert pump.config.isr == {"b", "c"}
    assert pump.log("b") == pump.log("c")


def test_a_primary_refills_a_backup_that_holds_less_than_it_acknowledged() -> None:
    # The controller never hears of the loss here: the primary alone must notice it.
    pump = ready_pump(bugs=frozenset({"wiped-stays-in-sync"}))
    for seq in range(1, 4):
        assert acked(pump.call("a", Set(b"k", b"v%d" % seq), ("c1", seq)))
    pump.tick(60)
    assert pump.primary.match_index("b") == 4
    wipe_and_restart(pump, "b")
    sent_before = len(pump.delivered)
    pump.tick(100)  # settles: no ping-pong between the floored primary and b
    assert len(pump.delivered) - sent_before < 100
    assert pump.log("b") == pump.log("a")
    # A write while b was refilled waited for b's new acks, never its old ones.
    assert acked(pump.call("a", Set(b"k", b"v4"), ("c1", 4)))
    assert pump.log("b") == pump.log("a") and pump.primary.match_index("b") == 5


def test_a_failed_reply_that_moves_nothing_is_answered_after_a_backoff() -> None:
    pump = ready_pump(append_retry_ms=20.0)
    assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1)))
    primary, now = pump.primary, pump.now + 50
    assert {send.to for send in primary.tick(now, math.inf).send} == {"b", "c"}  # heartbeats
    # b refuses where it already matched (a duplicate): no resend at wire speed...
    refusal = AppendReply(0, epoch=1, sender="b", success=False, match_index=0,
                          hint_index=2, echo_sent_ms=now)  # fmt: skip
    assert primary.on_message(refusal, now).send == []
    assert primary.tick(now + 10, math.inf).send == []
    # ...but append_retry_ms after the last one.
    [resend] = primary.tick(now + 20, math.inf).send
    assert resend.to == "b" and isinstance(resend.message, Append)


def test_a_lost_replica_leads_only_a_config_made_for_its_session() -> None:
    pump = ready_pump()
    assert acked(pump.call("a", Set(b"k", b"v"), ("c1", 1)))
    pump.crash("a")
    a = pump.restart("a", wiped=True)  # a stale config still names a, of its old session
    assert pump.config.primary == "a" and pump.config.primary_incarnation == 1
    assert a.role is Role.BACKUP
    [reason] = pump.failover()
    assert "['a'] lost data: out of the isr" in reason
    assert pump.config.primary == "b" and pump.config.wiped == (("a", 2),)
    assert pump.log("a") == pump.log("b")  # refilled by b (and back in the ISR)


def test_a_lost_replica_named_primary_before_it_knows_its_session_leads_once_it_does() -> None:
    lost = Replica("a", 0, ReplicaSettings(), lost=True)
    config = PartitionConfig(0, 3, "a", ("a", "b"), frozenset({"a"}), 5, primary_incarnation=9)
    lost.on_config(config, 0.0)  # the session's open is not acknowledged yet
    roles = [lost.role]
    assert lost.session_opened(8, 1.0).persist == []  # another session's: no
    roles.append(lost.role)
    ready = lost.session_opened(9, 2.0)  # its own: it leads
    roles.append(lost.role)
    assert roles == [Role.BACKUP, Role.BACKUP, Role.PRIMARY]
    assert [p.entries for p in ready.persist] == [(Entry(3, 1),)]
