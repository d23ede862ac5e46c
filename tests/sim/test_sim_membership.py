"""Membership changes as nemesis events: nodes join, drain and leave while every other
fault goes on; every check holds, the moves finish, and runs stay deterministic."""

from __future__ import annotations

import pytest

from planaria.sim.nemesis import ALL_FAULT_KINDS, MEMBERSHIP, NemesisSettings, parse_faults
from planaria.sim.run import SimConfig, run_seed

MIXED = frozenset(ALL_FAULT_KINDS)
SEEDS = 40
CHUNKS = 2
OPS = 80
# Short runs get faults (and membership changes) more often.
NEMESIS = NemesisSettings(gap_mean_ms=50.0, duration_max_ms=400.0, membership_share=0.2)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_membership_changes_mixed_with_every_fault(chunk: int) -> None:
    failures, changes, moves = [], 0, 0
    for seed in range(chunk, SEEDS, CHUNKS):
        result = run_seed(SimConfig(seed=seed, ops=OPS, faults=MIXED, nemesis=NEMESIS))
        changes += result.faults.get(MEMBERSHIP, 0)
        moves += int(result.stats["moves"])
        if not result.passed:
            failures.append(f"{result.check}: {result.detail}\n  replay: {result.command}")
    assert not failures, "\n".join(failures)
    assert changes > SEEDS // CHUNKS  # several changes per run on average
    assert moves > changes  # and every change moved replicas


def test_moves_alone_reach_the_target_placement_on_every_seed() -> None:
    for seed in range(6):
        config = SimConfig(seed=seed, ops=150, faults=frozenset({MEMBERSHIP}), nemesis=NEMESIS)
        result = run_seed(config)
        assert result.passed, f"{result.check}: {result.detail}\n  replay: {result.command}"
        assert result.info_operations == 0  # no fault: every operation got a certain answer
        assert result.stats["moves"] > 0


def test_a_membership_run_replays_identically() -> None:
    def run() -> tuple[list[object], list[str], dict[str, object]]:
        result = run_seed(SimConfig(seed=5, ops=100, faults=MIXED, trace_keep=None))
        return result.history, result.full_trace, result.summary()

    first, second = run(), run()
    assert first == second
    assert any("membership" in line for line in first[1])


def test_membership_is_a_fault_kind_but_not_a_default_one() -> None:
    assert MEMBERSHIP in parse_faults("crash,membership")
    assert MEMBERSHIP not in SimConfig().faults
    assert "membership" in run_seed(SimConfig(seed=1, ops=40, faults=MIXED)).command
