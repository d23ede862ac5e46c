"""Membership moves: the controller's rebalance steps, the planned transfer, and whole moves
run through real replicas (the Pump of test_replica) from add-learner to remove-leaving."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_replica import Disk, Pump, acked  # tests/core is on sys.path (rootdir import mode)

from planaria.coord.layout import decode_config, encode_config
from planaria.core.controller import (
    Controller,
    SessionView,
    moves_in_progress,
    moves_remaining,
)
from planaria.core.messages import ErrorCode, Get, PartitionConfig, ProposeIsr, Set
from planaria.core.placement import place
from planaria.core.replica import Replica
from planaria.errors import UsageError

MIN_INSYNC = 2


def cfg(
    replicas: str = "abc",
    *,
    isr: str | None = None,
    primary: str | None = "a",
    learners: str = "",
    handoff: str | None = None,
    partition: int = 0,
) -> PartitionConfig:
    return PartitionConfig(
        partition,
        3,
        primary,
        tuple(replicas),
        frozenset(replicas if isr is None else isr),
        7,
        1,
        tuple(learners),
        handoff,
    )


def views(alive: str = "abcde") -> dict[str, SessionView]:
    return {n: SessionView(n, 1, n in alive, 0.0, 1000.0) for n in "abcde"}


def step(
    config: PartitionConfig, target: str, *, alive: str = "abcde", moves_max: int = 4
) -> PartitionConfig | None:
    changes = Controller().rebalance(
        [config],
        views(alive),
        {config.partition: tuple(target)},
        moves_max=moves_max,
        min_insync=MIN_INSYNC,
    )
    assert len(changes) <= 1
    if not changes:
        return None
    assert changes[0].expected_version == config.version
    assert changes[0].config.version == config.version + 1
    return changes[0].config


# --- the controller, one step at a time -----------------------------------------------------


def test_a_move_starts_with_a_learner_outside_the_isr() -> None:
    new = step(cfg(), "bcd")
    assert new is not None
    assert (new.replicas, new.learners, new.isr) == (tuple("abcd"), ("d",), frozenset("abc"))
    assert (new.epoch, new.primary) == (3, "a")  # no new epoch: the primary keeps serving


def test_nothing_happens_while_the_learner_catches_up() -> None:
    assert step(cfg("abcd", isr="abc", learners="d"), "bcd") is None


def test_a_caught_up_learner_replaces_a_leaving_backup() -> None:
    new = step(cfg("abcd", learners="d"), "acd")
    assert new is not None
    assert (new.replicas, new.learners, new.isr) == (tuple("acd"), (), frozenset("acd"))


def test_a_leaving_replica_outside_the_isr_goes_before_one_in_it() -> None:
    new = step(cfg("abcd", isr="acd", learners="d"), "ad" + "e", alive="abcde")
    assert new is not None and "b" not in new.replicas and "c" in new.replicas


def test_a_leaving_primary_hands_over_to_a_staying_isr_member_first() -> None:
    new = step(cfg("abcd", learners="d"), "bcd")
    assert new is not None
    assert (new.handoff, new.primary, new.epoch, new.replicas) == ("b", "a", 3, tuple("abcd"))
    assert step(new, "bcd") is None  # now the primary asks for the transfer


def test_a_handoff_is_cancelled_when_its_target_dies_or_the_primary_may_stay() -> None:
    handing = cfg("abcd", learners="d", handoff="b")
    dead = step(handing, "bcd", alive="acd")
    assert dead is not None and dead.handoff is None
    stays = step(handing, "acd")
    assert stays is not None and stays.handoff is None


def test_no_move_starts_below_min_insync() -> None:
    assert step(cfg(isr="a"), "bcd") is None


def test_a_removal_that_would_leave_the_isr_below_min_insync_waits() -> None:
    # Only a and the learner d are in sync; dropping a... is the primary; dropping b (in
    # the ISR) would leave {a, d} = 2: fine; with min_insync 3 it must wait.
    config = cfg("abcd", isr="abd", learners="d")
    changes = Controller().rebalance(
        [config], views(), {0: tuple("acd")}, moves_max=1, min_insync=3
    )
    assert changes == []


def test_a_learner_that_is_no_longer_wanted_is_dropped() -> None:
    new = step(cfg("abcd", isr="abc", learners="d"), "abc")
    assert new is not None
    assert (new.replicas, new.learners, new.isr) == (tuple("abc"), (), frozenset("abc"))


def test_a_learner_promoted_by_a_failover_becomes_a_member() -> None:
    new = step(cfg("abcd", primary="d", learners="d"), "bcd")
    assert new is not None and new.learners == ()


def test_partitions_that_need_a_failover_are_left_to_decide() -> None:
    assert step(cfg(), "bcd", alive="bcde") is None  # the primary's session expired


def test_moves_max_caps_the_partitions_moving_at_once() -> None:
    configs = [cfg(partition=p) for p in range(4)]
    configs[3] = cfg("abcd", learners="d", partition=3)  # already moving
    target = {p: tuple("bcd") for p in range(4)}
    changes = Controller().rebalance(configs, views(), target, moves_max=2, min_insync=2)
    started = [c.partition for c in changes if c.config.learners and c.partition != 3]
    assert started == [0]
    assert moves_in_progress([*configs, changes[0].config]) == [0, 3]
    with pytest.raises(UsageError):
        Controller().rebalance(configs, views(), target, moves_max=0, min_insync=2)


def test_moves_remaining_counts_replicas_still_to_copy() -> None:
    target = {0: tuple("bcd"), 1: tuple("abc")}
    assert moves_remaining([cfg(), cfg(partition=1)], target) == 1
    assert moves_remaining([cfg("abcd", isr="abc", learners="d"), cfg(partition=1)], target) == 1
    assert moves_remaining([cfg("abcd", learners="d"), cfg(partition=1)], target) == 0


# --- the planned transfer, as the controller judges it ----------------------------------------


def handoff_request(version: int = 7, primary: str = "b") -> ProposeIsr:
    return ProposeIsr(0, 3, version, frozenset("abcd"), primary=primary)


def test_a_valid_transfer_request_makes_the_target_primary_in_a_new_epoch() -> None:
    config = cfg("abcd", learners="d", handoff="b")
    change = Controller().on_propose(handoff_request(), "a", config, views())
    assert change is not None
    new = change.config
    assert (new.epoch, new.primary, new.handoff, new.replicas[0]) == (4, "b", None, "b")
    assert new.isr == frozenset("abcd") and new.primary_incarnation == 1


@pytest.mark.parametrize(
    ("request_", "sender", "alive", "why"),
    [
        (handoff_request(version=6), "a", "abcd", "stale version"),
        (handoff_request(primary="c"), "a", "abcd", "not the handoff target"),
        (handoff_request(), "b", "abcd", "not sent by the primary"),
        (handoff_request(), "a", "acd", "target session dead"),
    ],
)
def test_invalid_transfer_requests_change_nothing(
    request_: ProposeIsr, sender: str, alive: str, why: str
) -> None:
    config = cfg("abcd", learners="d", handoff="b")
    assert Controller().on_propose(request_, sender, config, views(alive)) is None, why
    # Without sessions there is no incarnation to record: never a transfer.
    assert Controller().on_propose(handoff_request(), "a", config) is None


def test_isr_changes_that_drop_the_handoff_target_cancel_the_transfer() -> None:
    config = cfg("abcd", learners="d", handoff="b")
    shrink = ProposeIsr(0, 3, 7, frozenset("acd"))
    change = Controller().on_propose(shrink, "a", config)
    assert change is not None and change.config.handoff is None
    [dead] = Controller().decide([config], views("acde"), 0.0)
    assert dead.config.handoff is None and "b" not in dead.config.isr


def test_the_coordinator_encoding_stays_backward_compatible() -> None:
    plain = PartitionConfig(2, 4, "a", ("a", "b", "c"), frozenset("abc"), 9, 3)
    old_bytes = (
        b'{"epoch":4,"isr":["a","b","c"],"partition":2,"primary":"a",'
        b'"primary_incarnation":3,"replicas":["a","b","c"],"version":9}'
    )
    assert encode_config(plain) == old_bytes
    assert decode_config(old_bytes) == plain
    moving = replace(plain, replicas=tuple("abcd"), learners=("d",), handoff="b")
    assert decode_config(encode_config(moving)) == moving


# --- whole moves through real replicas ----------------------------------------------------------


class MovePump(Pump):
    """The Pump plus the controller's rebalance toward ``target`` after every settle."""

    def __init__(self, target: tuple[str, ...], **kwargs: object) -> None:
        super().__init__(("a", "b", "c", "d"), **kwargs)  # type: ignore[arg-type]
        self.target = {0: target}
        # Start over from a 3-replica partition on a, b, c; d is an empty new node.
        self.network.clear()
        self.disk = {n: Disk() for n in self.nodes}
        self.replicas = {n: Replica(n, 0, self.settings) for n in self.nodes}
        self.config = self.controller.initial_configs({0: ("a", "b", "c")}, self.sessions())[0]
        self.renew()
        self.broadcast()
        self.reasons: list[str] = []
        self.hold_transfers = False
        self.held: list[ProposeIsr] = []

    def step(self) -> bool:
        if self.proposals and self.auto_propose:
            sender, proposal = self.proposals.popleft()
            if proposal.primary is not None and self.hold_transfers:
                self.held.append(proposal)
                return True
            change = self.controller.on_propose(proposal, sender, self.config, self.sessions())
            if change is not None and self.cas(change.expected_version, change.config):
                self.reasons.append(change.reason)
            return True
        return super().step()

    def rebalance(self) -> None:
        for change in self.controller.rebalance(
            [self.config], self.sessions(), self.target, moves_max=1, min_insync=MIN_INSYNC
        ):
            if self.cas(change.expected_version, change.config):
                self.reasons.append(change.reason)
        self.settle()

    def run_moves(self, rounds: int = 30) -> None:
        for _ in range(rounds):
            self.rebalance()
            self.tick(20)
            if set(self.config.replicas) == set(self.target[0]) and not (
                self.config.learners or self.config.handoff
            ):
                return
        raise AssertionError(f"the move did not finish: {self.config} {self.reasons}")


def test_adding_a_node_moves_a_backup_without_a_new_epoch() -> None:
    pump = MovePump(("a", "b", "d"), batch_entries_max=4)
    pump.settle()
    for seq in range(1, 11):
        assert acked(pump.call("a", Set(b"k%d" % seq, b"v%d" % seq), ("c1", seq)))
    pump.run_moves()
    assert set(pump.config.replicas) == set("abd") and pump.config.epoch == 1
    assert pump.log("d") == pump.log("a")  # the learner got the whole log
    assert pump.replicas["d"].applied == pump.replicas["a"].applied
    assert [r for r in pump.reasons if "joins" in r or "leaves" in r] == [
        "d joins as a learner",
        "c leaves",
    ]


def test_a_learner_never_counts_toward_a_commit_before_it_is_in_the_isr() -> None:
    pump = MovePump(("a", "b", "d"))
    pump.settle()
    pump.cut |= {("a", "d"), ("d", "a")}  # the learner hears nothing
    pump.rebalance()
    assert pump.config.learners == ("d",)
    for seq in range(1, 4):
        assert acked(pump.call("a", Set(b"k", b"v%d" % seq), ("c1", seq)))
    assert pump.replicas["d"].last_index == 0 and "d" not in pump.config.isr
    pump.heal()
    pump.run_moves()
    assert pump.replicas["d"].applied == pump.replicas["a"].applied


def test_a_leaving_primary_hands_over_with_only_a_redirect() -> None:
    pump = MovePump(("b", "c", "d"))
    pump.settle()
    assert acked(pump.call("a", Set(b"k", b"before"), ("c1", 1)))
    pump.hold_transfers = True  # hold the transfer request to look at the handoff state
    for _ in range(6):
        pump.rebalance()
        pump.tick(20)
        if pump.config.handoff is not None:
            break
    assert pump.config.handoff is not None and pump.config.primary == "a"
    refused = pump.call("a", Get(b"k"), ("c1-read", 1))
    assert refused is not None and refused.error is ErrorCode.NOT_PRIMARY
    assert refused.primary_hint == pump.config.handoff
    target = pump.config.handoff
    assert any(p.primary == target for p in pump.held)
    pump.hold_transfers = False
    pump.run_moves()
    assert pump.config.primary == target and pump.config.epoch == 2
    assert set(pump.config.replicas) == set("bcd")
    assert any("planned transfer a -> " in r for r in pump.reasons)
    # The old primary's session never expired: no lease wait, yet it serves no more.
    assert pump.session_alive["a"] and not pump.replicas["a"].serving(pump.now)
    read = pump.call(target, Get(b"k"), ("c1-read", 2))
    assert read is not None and read.value == b"before"
    assert acked(pump.call(target, Set(b"k", b"after"), ("c1", 2)))
    pump.tick(60)  # the commit point reaches the backups with the next heartbeat
    assert pump.replicas["d"].applied == pump.replicas[target].applied


# --- the placement the moves aim at -------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    nodes=st.integers(min_value=3, max_value=8),
    partitions=st.integers(min_value=1, max_value=24),
    drain=st.booleans(),
)
def test_rebalance_steps_reach_any_target_keeping_configs_well_formed(
    nodes: int, partitions: int, drain: bool
) -> None:
    """Idealized: learners catch up at once, transfers are granted; every step keeps the
    shape (primary in the ISR, ISR within replicas, ISR never below min_insync) and the
    moves end at the target."""
    names = [f"n{i}" for i in range(nodes + 1)]
    before = place(partitions, names[:nodes], replicas=3)
    after_nodes = names[1:nodes] if drain and nodes > 3 else names
    target = place(partitions, after_nodes, replicas=3)
    sessions = {n: SessionView(n, 1, True, 0.0, 1e9) for n in names}
    controller = Controller()
    configs = controller.initial_configs(before, sessions)
    for _ in range(8 * partitions + 20):
        changes = controller.rebalance(
            list(configs.values()), sessions, target, moves_max=3, min_insync=2
        )
        if not changes:
            break
        for change in changes:
            new = change.config
            if new.learners and new.learners[0] not in new.isr:
                new = replace(new, isr=new.isr | {new.learners[0]})  # caught up
            if new.handoff is not None:
                request = ProposeIsr(new.partition, new.epoch, new.version, new.isr, new.handoff)
                granted = controller.on_propose(request, new.primary or "", new, sessions)
                assert granted is not None
                new = granted.config
            assert new.primary in new.isr and new.isr <= set(new.replicas)
            assert len(new.isr) >= 2
            configs[new.partition] = new
    for partition, config in configs.items():
        assert set(config.replicas) == set(target[partition])
        assert not config.learners and config.handoff is None


def test_a_preferred_primary_that_is_back_in_sync_gets_its_partition_back() -> None:
    # After a failover the partition is led by b, though the placement prefers a.
    failed_over = cfg("bac", primary="b")
    back = step(failed_over, "abc")
    assert back is not None and back.handoff == "a" and back.primary == "b"
    assert step(back, "abc") is None  # kept until b asks for the transfer
    # Not while a is out of the ISR (still catching up) or not alive.
    assert step(cfg("bac", primary="b", isr="bc"), "abc") is None
    assert step(failed_over, "abc", alive="bc") is None
    # Already led by its preferred primary: nothing to do.
    assert step(cfg("abc"), "abc") is None
