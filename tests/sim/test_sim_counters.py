"""The counter workload: clients INCR counter keys beside the registers, under every fault,
and the run checks that no acknowledged increment is lost and none is applied twice. Each
check is shown to bite on a mutation it alone catches."""

from __future__ import annotations

from dataclasses import replace

import pytest

import planaria.core.replica
from planaria._native import compiled
from planaria.core.expiry import Expiries
from planaria.core.messages import IncrBy, Version, WriteOp
from planaria.core.replica import Replica
from planaria.core.strings import Outcome, State, apply_write
from planaria.sim.nemesis import FAULT_KINDS
from planaria.sim.run import SimConfig, replay_command, run_seed


def counters(seed: int, **options: float) -> SimConfig:
    return SimConfig(seed=seed, counters=2, faults=frozenset(FAULT_KINDS), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(4))
def test_counters_beside_registers_lose_nothing_under_faults(seed: int) -> None:
    result = run_seed(counters(seed))
    assert result.passed, f"{result.check}: {result.detail}\n{result.command}"
    assert "--counters 2" in result.command


def test_a_counter_only_run_answers_every_increment() -> None:
    result = run_seed(counters(0, counter_share=1.0))
    assert result.passed, result.detail
    assert result.ok_operations >= 300  # the increments and the final reads
    assert "--counter-share 1" in replay_command(counters(0, counter_share=1.0))


def test_without_counters_the_register_runs_are_unchanged() -> None:
    # No counter keys: the workload draws nothing more, so every seed replays as before.
    plain, zero = run_seed(SimConfig(seed=3)), run_seed(SimConfig(seed=3, counters=0))
    assert plain.summary() == zero.summary()
    assert [str(e) for e in plain.history] == [str(e) for e in zero.history]


# Monkeypatching reaches only the Python sources: `make test` runs tests/sim again against
# them after the compiled pass.
MUTATES_SOURCES = pytest.mark.skipif(compiled(), reason="patches the compiled replica")


@MUTATES_SOURCES
def test_counter_doubled_bites_when_retries_skip_the_dedup_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The mutation: the replica never finds a request id (a retried INCR applies again).
    monkeypatch.setattr(Replica, "_seen", lambda self, request_id: None)
    result = run_seed(counters(0, counter_share=1.0))
    assert not result.passed and result.check == "counter-doubled", result.detail


def test_counter_doubled_bites_on_the_retry_applies_again_switch() -> None:
    # The same rule broken by the replica's switch (the one `planaria chaos --bug` uses).
    config = replace(counters(0, counter_share=1.0), bugs=frozenset({"retry-applies-again"}))
    result = run_seed(config)
    assert not result.passed and result.check == "counter-doubled", result.detail


@MUTATES_SOURCES
def test_counter_lost_bites_when_an_increment_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    def lossy(  # noqa: PLR0917 (apply_write's own positional signature)
        state: State,
        op: WriteOp,
        version: Version,
        expiries: Expiries | None = None,
        now_ms: int = 0,
        generation: int = 0,
    ) -> Outcome:
        if isinstance(op, IncrBy) and version.index % 7 == 0:
            op = IncrBy(op.key, 0)  # the mutation: this increment is lost, yet acknowledged
        return apply_write(state, op, version, expiries, now_ms, generation)

    monkeypatch.setattr(planaria.core.replica, "apply_write", lossy)
    result = run_seed(counters(0, counter_share=1.0))
    assert not result.passed and result.check == "counter-lost", result.detail
