"""The nemesis schedule: random (seeded) and scripted."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.chaos.schedule import (
    FAULT_KINDS,
    LEADER,
    Fault,
    format_schedule,
    parse_faults,
    parse_schedule,
    random_schedule,
)
from planaria.errors import UsageError


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    duration_s=st.floats(5.0, 300.0),
    kinds=st.lists(st.sampled_from(FAULT_KINDS), min_size=1, max_size=3, unique=True),
    nodes=st.integers(3, 7),
)
def test_random_schedule_is_sequential_bounded_and_valid(
    seed: int, duration_s: float, kinds: list[str], nodes: int
) -> None:
    faults = random_schedule(random.Random(seed), duration_s=duration_s, kinds=kinds, nodes=nodes)
    for before, after in itertools.pairwise(faults):
        assert after.start_s > before.end_s  # one fault at a time, healed in between
    for fault in faults:
        assert fault.kind in kinds
        assert fault.start_s >= 2.0
        assert fault.end_s <= duration_s - 3.0  # a quiet tail to recover before the reads
        assert fault.node == LEADER or 1 <= int(fault.node[1:]) <= nodes


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    def make(seed: int) -> tuple[Fault, ...]:
        return random_schedule(random.Random(seed), duration_s=60, kinds=FAULT_KINDS, nodes=3)

    assert make(7) == make(7)
    assert make(7) != make(8)


def test_a_short_run_sees_every_kind() -> None:
    for seed in range(20):
        faults = random_schedule(random.Random(seed), duration_s=20, kinds=FAULT_KINDS, nodes=3)
        assert {fault.kind for fault in faults} == set(FAULT_KINDS), seed


def test_too_short_a_run_has_no_faults() -> None:
    assert random_schedule(random.Random(1), duration_s=4, kinds=["kill"], nodes=3) == ()


def test_scripted_schedule_round_trips() -> None:
    faults = parse_schedule("pause:n2@8+3, kill@2+3,partition:leader@14+4", nodes=3)
    assert [f.kind for f in faults] == ["kill", "pause", "partition"]  # sorted by start
    assert faults[0] == Fault("kill", LEADER, 2.0, 3.0)
    assert faults[1].node == "n2" and faults[1].end_s == 11.0
    assert parse_schedule(format_schedule(faults), nodes=3) == faults


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kill@2+3,pause@4+1", "overlap"),
        ("explode@1+1", "unknown fault"),
        ("kill:n4@1+1", "only 3 nodes"),
        ("kill:x@1+1", "leader"),
        ("kill@1", re.escape("KIND[:NODE]@START+DURATION")),
        ("kill@1+0", "duration > 0"),
        ("", "no faults"),
    ],
)
def test_bad_scripted_schedules_are_refused(text: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_schedule(text, nodes=3)


def test_parse_faults() -> None:
    assert parse_faults("kill, pause,kill") == ("kill", "pause")
    with pytest.raises(UsageError):
        parse_faults("kill,melt")
    with pytest.raises(UsageError):
        parse_faults(" , ")


def test_random_schedule_refuses_bad_input() -> None:
    with pytest.raises(UsageError):
        random_schedule(random.Random(1), duration_s=60, kinds=[], nodes=3)
    with pytest.raises(UsageError):
        random_schedule(random.Random(1), duration_s=60, kinds=["melt"], nodes=3)
    with pytest.raises(UsageError):
        random_schedule(random.Random(1), duration_s=60, kinds=["kill"], nodes=0)
