"""The controller's decisions, table by table: who is promoted, when, and which CAS."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planaria.core.controller import (
    ConfigChange,
    Controller,
    ControllerSettings,
    SessionView,
)
from planaria.core.messages import PartitionConfig, ProposeIsr
from planaria.errors import UsageError

REPLICAS = ("a", "b", "c")


def config(
    *,
    epoch: int = 3,
    primary: str | None = "a",
    isr: str = "abc",
    version: int = 7,
    incarnation: int = 1,
) -> PartitionConfig:
    return PartitionConfig(0, epoch, primary, REPLICAS, frozenset(isr), version, incarnation)


def sessions(
    alive: str = "abc", *, incarnations: dict[str, int] | None = None, renewed_ms: float = 0.0
) -> dict[str, SessionView]:
    incarnations = incarnations or {}
    return {
        n: SessionView(n, incarnations.get(n, 1), n in alive, renewed_ms, renewed_ms + 1000)
        for n in "abcd"
    }


def decide_one(
    current: PartitionConfig,
    views: dict[str, SessionView],
    *,
    bugs: frozenset[str] = frozenset(),
    now_ms: float = 0.0,
) -> ConfigChange | None:
    controller = Controller(ControllerSettings(suspect_after_ms=50, bugs=bugs))
    changes = controller.decide([current], views, now_ms)
    assert len(changes) <= 1
    return changes[0] if changes else None


def test_initial_configs() -> None:
    controller = Controller()
    placement = {1: ("b", "c", "a"), 0: ("a", "b", "c")}
    configs = controller.initial_configs(placement, sessions("ab", incarnations={"b": 4}))
    assert list(configs) == [0, 1]
    assert configs[1] == PartitionConfig(1, 1, "b", ("b", "c", "a"), frozenset("abc"), 1, 4)
    assert configs[0].primary_incarnation == 1
    assert controller.initial_configs({0: ("c", "a")})[0].primary_incarnation == 0
    with pytest.raises(UsageError, match="twice"):
        controller.initial_configs({0: ("a", "a")})
    with pytest.raises(UsageError, match="no replicas"):
        controller.initial_configs({0: ()})
    restored = controller.initial_configs({0: ("a", "b")}, first_epoch=7)
    assert restored[0].epoch == 7 and restored[0].version == 1
    with pytest.raises(UsageError, match="first_epoch"):
        controller.initial_configs({0: ("a", "b")}, first_epoch=0)


# (story, config, alive sessions, incarnations, new primary, new isr) -- None: no change.
FAILOVERS = [
    ("healthy primary and isr: nothing to do", config(), "abc", {}, None, None),
    ("primary expired: first live isr member", config(), "bc", {}, "b", "bc"),
    ("first isr member dead too", config(), "c", {}, "c", "c"),
    ("only in-sync replicas may lead", config(isr="ab"), "c", {}, None, None),
    ("out-of-sync replica stays out", config(isr="ac"), "bc", {}, "c", "c"),
    ("restarted primary: new epoch, same node", config(), "abc", {"a": 2}, "a", "abc"),
    ("unknown incarnation: confirmed by a new epoch", config(incarnation=0), "abc", {}, "a", "abc"),
    ("no primary at all", config(primary=None, isr="bc"), "abc", {}, "b", "bc"),
]


@pytest.mark.parametrize(
    ("current", "alive", "incarnations", "primary", "isr"),
    [row[1:] for row in FAILOVERS],
    ids=[row[0] for row in FAILOVERS],
)
def test_failover(
    current: PartitionConfig,
    alive: str,
    incarnations: dict[str, int],
    primary: str | None,
    isr: str | None,
) -> None:
    change = decide_one(current, sessions(alive, incarnations=incarnations))
    if primary is None:
        assert change is None
        return
    assert change is not None and isr is not None
    assert change.expected_version == current.version
    new = change.config
    assert (new.primary, new.isr) == (primary, frozenset(isr))
    assert (new.epoch, new.version) == (current.epoch + 1, current.version + 1)
    assert new.primary_incarnation == incarnations.get(primary, 1)
    assert new.replicas == current.replicas


def test_dead_backups_leave_the_isr_without_a_new_epoch() -> None:
    change = decide_one(config(), sessions("ab"))
    assert change is not None
    assert change.config == replace(config(), isr=frozenset("ab"), version=8)


def test_a_silent_primary_is_not_replaced_before_its_session_expires() -> None:
    # Not renewed for a long time, but the coordinator has not expired it: its lease may
    # still be valid, so wait.
    assert decide_one(config(), sessions(renewed_ms=0.0), now_ms=10_000) is None


def test_bug_no_lease_wait_promotes_on_suspicion() -> None:
    bug = frozenset({"no-lease-wait"})
    assert decide_one(config(), sessions(renewed_ms=0.0), bugs=bug, now_ms=10) is None
    change = decide_one(config(), sessions(renewed_ms=0.0), bugs=bug, now_ms=60)
    assert change is not None
    assert (change.config.primary, change.config.isr) == ("b", frozenset("bc"))


def test_bug_promote_out_of_sync_takes_any_live_replica() -> None:
    current = config(isr="ab")
    assert decide_one(current, sessions("c")) is None
    change = decide_one(current, sessions("c"), bugs=frozenset({"promote-out-of-sync"}))
    assert change is not None and change.config.primary == "c"


def test_decisions_come_in_partition_order() -> None:
    configs = [replace(config(), partition=p) for p in (5, 2, 9)]
    changes = Controller().decide(configs, sessions("bc"), 0.0)
    assert [c.partition for c in changes] == [2, 5, 9]
    assert all(c.config.partition == c.partition for c in changes)


def proposal(isr: str, *, epoch: int = 3, version: int = 7) -> ProposeIsr:
    return ProposeIsr(0, epoch, version, frozenset(isr))


# (story, proposal, sender, accepted)
PROPOSALS = [
    ("shrink by the primary", proposal("ab"), "a", True),
    ("expand by the primary", proposal("abc"), "a", False),  # no change: isr is already abc
    ("stale epoch", proposal("ab", epoch=2), "a", False),
    ("stale version", proposal("ab", version=6), "a", False),
    ("not the primary", proposal("ab"), "b", False),
    ("without the primary", proposal("bc"), "a", False),
    ("a node outside the replicas", proposal("abd"), "a", False),
]


@pytest.mark.parametrize(
    ("request_", "sender", "accepted"),
    [row[1:] for row in PROPOSALS],
    ids=[row[0] for row in PROPOSALS],
)
def test_isr_proposals_are_validated(request_: ProposeIsr, sender: str, accepted: bool) -> None:
    change = Controller().on_propose(request_, sender, config())
    assert (change is not None) is accepted
    if change is not None:
        assert change.expected_version == 7
        assert change.config == replace(config(), isr=request_.isr, version=8)


def test_expand_after_a_shrink() -> None:
    change = Controller().on_propose(proposal("abc"), "a", config(isr="a"))
    assert change is not None and change.config.isr == frozenset("abc")


def test_bad_settings() -> None:
    with pytest.raises(UsageError):
        Controller(ControllerSettings(suspect_after_ms=0))


def test_a_proposal_cannot_add_a_dead_node() -> None:
    controller = Controller()
    # c is not alive: it is left out, b still joins, and the version moves.
    change = controller.on_propose(proposal("abc"), "a", config(isr="a"), sessions("ab"))
    assert change is not None
    assert (change.config.isr, change.config.version) == (frozenset("ab"), 8)
    # Nothing else to apply: the version still moves, so the primary drops its proposal and
    # stops waiting for c's acks (its commits would stall until c came back otherwise).
    change = controller.on_propose(proposal("abc"), "a", config(isr="ab"), sessions("ab"))
    assert change is not None
    assert (change.config.isr, change.config.version) == (frozenset("ab"), 8)
    change = controller.on_propose(proposal("ab"), "a", config(isr="a"), sessions("ab"))
    assert change is not None and change.config.isr == frozenset("ab")
    # Removing a dead node is always fine.
    assert controller.on_propose(proposal("a"), "a", config(isr="ab"), sessions("a")) is not None


# --- replicas that lost data (issue 16) ------------------------------------------------------


def lost(views: dict[str, SessionView], *nodes: str, loss: int = 5) -> dict[str, SessionView]:
    """``nodes`` registered with their session that they lost their log of partition 0."""
    return {n: replace(v, lost={0: loss}) if n in nodes else v for n, v in views.items()}


def test_a_member_that_lost_data_leaves_the_isr_once_per_loss() -> None:
    views = lost(sessions(incarnations={"b": 2}), "b")
    change = decide_one(config(), views)
    assert change is not None and "['b'] lost data" in change.reason
    assert change.config == replace(config(), isr=frozenset("ac"), version=8, wiped=(("b", 5),))
    # Recorded: the primary's catch-up may bring it back, and it stays, even when a later
    # session registers the same loss again (the node restarted before it saw the record).
    back = replace(change.config, isr=frozenset("abc"))
    assert decide_one(back, views) is None
    assert decide_one(back, lost(sessions(incarnations={"b": 3}), "b")) is None
    # A new loss is handled again.
    again = decide_one(back, lost(sessions(incarnations={"b": 3}), "b", loss=6))
    assert again is not None and again.config.wiped == (("b", 6),)
    assert again.config.isr == frozenset("ac")
    # A data directory replaced whole counts for every partition.
    views = {n: replace(v, data_lost=7 if n == "c" else 0) for n, v in sessions().items()}
    change = decide_one(config(), views)
    assert change is not None and change.config.isr == frozenset("ab")
    assert change.config.wiped == (("c", 7),)
    # The bug switch brings back the old behaviour.
    assert (
        decide_one(config(), lost(sessions(), "b"), bugs=frozenset({"wiped-stays-in-sync"})) is None
    )


def test_a_member_that_lost_data_is_out_before_the_failover() -> None:
    # The primary died; b (first in preference order) came back empty: c is promoted, in
    # the same CAS that records b's loss.
    change = decide_one(config(), lost(sessions("bc", incarnations={"b": 2}), "b"))
    assert change is not None
    new = change.config
    assert (new.primary, new.isr, new.epoch, new.version) == ("c", frozenset("c"), 4, 8)
    assert new.wiped == (("b", 5),)
    assert "lost data" in change.reason and "c promoted" in change.reason


def test_a_fresh_cluster_registers_no_loss_and_is_left_alone() -> None:
    controller = Controller()
    [initial] = controller.initial_configs({0: REPLICAS}, sessions()).values()
    assert controller.decide([initial], sessions(), 0.0) == []


def test_with_every_in_sync_copy_lost_nobody_is_promoted() -> None:
    # Every replica came back empty (the primary too): the partition refuses, for good,
    # rather than promote an empty replica (no unclean election).
    views = lost(sessions(incarnations={"a": 2, "b": 2, "c": 2}), "a", "b", "c")
    change = decide_one(config(), views)
    assert change is not None
    new = change.config
    assert (new.primary, new.isr, new.epoch) == (None, frozenset(), 3)
    assert "no in-sync replica to promote" in change.reason
    assert decide_one(new, views) is None  # and stays so
    # The primary alone lost data: the others take over.
    change = decide_one(config(), lost(sessions(incarnations={"a": 2}), "a"))
    assert change is not None and (change.config.primary, change.config.isr) == (
        "b",
        frozenset("bc"),
    )


def test_a_proposal_cannot_add_a_node_whose_loss_is_not_recorded() -> None:
    controller = Controller()
    views = lost(sessions(incarnations={"c": 2}), "c")
    change = controller.on_propose(proposal("abc"), "a", config(isr="ab"), views)
    assert change is not None and change.config.isr == frozenset("ab")
    assert "lost data, left out: c" in change.reason
    recorded = replace(config(isr="ab"), wiped=(("c", 5),))
    change = controller.on_propose(proposal("abc"), "a", recorded, views)
    assert change is not None and change.config.isr == frozenset("abc")


# --- replaced disks: the data directory's id (issue 16) ------------------------------------

DISKS = {"a": 11, "b": 12, "c": 13, "d": 14}


def on_disks(views: dict[str, SessionView], **replaced: int) -> dict[str, SessionView]:
    """Every node registers the id of its data directory; ``replaced`` ones a new one."""
    return {n: replace(v, data_id=replaced.get(n, DISKS[n])) for n, v in views.items()}


def known(current: PartitionConfig, **ids: int) -> PartitionConfig:
    """``current`` knowing the data ids of its replicas (``ids`` overriding)."""
    merged = {n: ids.get(n, DISKS[n]) for n in current.replicas}
    return replace(current, data_ids=tuple(sorted(merged.items())))


def test_a_member_back_on_a_replaced_disk_leaves_the_isr_once() -> None:
    # b came back on a new, empty disk that nobody marked: it registers another data id.
    views = on_disks(sessions(incarnations={"b": 2}), b=99)
    change = decide_one(known(config()), views)
    assert change is not None and "['b'] lost data" in change.reason
    assert change.config == replace(
        known(config(), b=99), isr=frozenset("ac"), version=8, wiped=(("b", 99),)
    )
    # Recorded with the new id: the primary's catch-up may bring it back, and it stays.
    back = replace(change.config, isr=frozenset("abc"))
    assert decide_one(back, views) is None
    assert decide_one(back, on_disks(sessions(incarnations={"b": 3}), b=99)) is None
    # Another new disk is another loss.
    again = decide_one(back, on_disks(sessions(incarnations={"b": 4}), b=100))
    assert again is not None and again.config.wiped == (("b", 100),)
    assert again.config.isr == frozenset("ac") and again.config.data_id("b") == 100


def test_a_primary_back_on_a_replaced_disk_is_never_promoted() -> None:
    # The primary's session ended (a planned stop), it came back on a new disk: b is
    # promoted in the same CAS that takes a out and records its loss.
    views = on_disks(sessions(incarnations={"a": 2}), a=98)
    change = decide_one(known(config()), views)
    assert change is not None
    new = change.config
    assert (new.primary, new.isr, new.epoch) == ("b", frozenset("bc"), 4)
    assert new.wiped == (("a", 98),) and new.data_id("a") == 98
    # With nobody else in sync, nobody is promoted.
    alone = decide_one(known(config(isr="a")), views)
    assert alone is not None
    assert (alone.config.primary, alone.config.isr) == (None, frozenset())


def test_the_operators_marker_and_a_new_data_id_are_one_loss() -> None:
    # lost-all on the new disk: the marker's loss id is recorded (the node then drops the
    # marker), and the new data id with it.
    views = {
        n: replace(v, data_lost=7) if n == "c" else v
        for n, v in on_disks(sessions(incarnations={"c": 2}), c=97).items()
    }
    change = decide_one(known(config()), views)
    assert change is not None
    assert change.config.wiped == (("c", 7),) and change.config.data_id("c") == 97
    assert decide_one(change.config, views) is None


def test_unknown_data_ids_are_adopted_without_taking_anyone_out() -> None:
    # Configs from before data ids (an upgrade): every live replica's id is adopted, the
    # ISR is left alone; a dead replica's id waits for its next session.
    views = on_disks(sessions("ab"))
    old = config(isr="ab")
    change = decide_one(old, views)
    assert change is not None and "adopted" in change.reason
    assert change.config == replace(old, version=8, data_ids=(("a", 11), ("b", 12)))
    assert decide_one(change.config, views) is None
    # Older nodes register no data id: nothing to adopt.
    assert decide_one(config(), sessions()) is None
    # A node no config lists (a brand-new one) changes nothing either.
    assert decide_one(known(config()), on_disks(sessions(), d=55)) is None


def test_initial_configs_know_the_data_ids() -> None:
    [initial] = Controller().initial_configs({0: REPLICAS}, on_disks(sessions())).values()
    assert initial.data_ids == (("a", 11), ("b", 12), ("c", 13))
    assert Controller().decide([initial], on_disks(sessions()), 0.0) == []


def test_a_proposal_cannot_add_a_node_back_on_a_replaced_disk() -> None:
    controller = Controller()
    views = on_disks(sessions(incarnations={"c": 2}), c=96)
    current = known(config(isr="ab"))
    change = controller.on_propose(proposal("abc"), "a", current, views)
    assert change is not None and change.config.isr == frozenset("ab")
    assert "lost data, left out: c" in change.reason
    assert change.config.data_id("c") == 13  # the change of id is decide's, with the loss


def test_a_learner_joins_with_its_data_id() -> None:
    current = known(config())
    [change] = Controller().rebalance(
        [current], on_disks(sessions("abcd")), {0: ("a", "b", "d")}, moves_max=1, min_insync=2
    )
    assert change.config.learners == ("d",) and change.config.data_id("d") == 14


def test_ignore_data_id_bug_keeps_a_replaced_disk_in_sync() -> None:
    views = on_disks(sessions(incarnations={"b": 2}), b=99)
    change = decide_one(known(config()), views, bugs=frozenset({"ignore-data-id"}))
    assert change is not None and change.config.isr == frozenset("abc")
    assert change.config.wiped == () and change.config.data_id("b") == 99
