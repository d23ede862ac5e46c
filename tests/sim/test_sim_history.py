"""``--checks history``: a run judged only by what a client sees.

The in-run monitors are off (a persist the storage refuses rebuilds the replica, as the
real node does); what is left is the clients' history (linearizability, stale reads, lost
writes), the final reads, the writes retried after healing, the liveness checks and the
replicas' convergence at the end. Every known bug switch must still be caught, and clean
runs must pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from planaria.check.history import operations_from_events
from planaria.sim.monitor import HISTORY_CHECKS
from planaria.sim.nemesis import FAULT_KINDS
from planaria.sim.run import SimConfig, run_seed

from .regressions import REGRESSIONS

HISTORY_ROWS = [row for row in REGRESSIONS if row.checks == "history" and row.bugs]
CLEAN_SEEDS = range(8)
CLEAN_OPS = 120


def test_every_known_bug_switch_has_a_history_only_seed() -> None:
    from planaria.cli._sim import BUG_NAMES, BUGS_MONITOR_ONLY, BUGS_NOT_REACHED

    caught = {bug for row in HISTORY_ROWS for bug in row.bugs}
    assert caught == set(BUG_NAMES) - set(BUGS_NOT_REACHED) - set(BUGS_MONITOR_ONLY)


@pytest.mark.parametrize(
    "row", HISTORY_ROWS, ids=[f"{'+'.join(r.bugs)}-seed{r.seed}" for r in HISTORY_ROWS]
)
def test_the_bug_is_caught_by_history_checks_and_the_seed_passes_without_it(row: object) -> None:
    from .regressions import Regression

    assert isinstance(row, Regression)
    caught = run_seed(row.config())
    assert not caught.passed, f"{row.bugs} not caught by seed {row.seed}"
    assert caught.check in HISTORY_CHECKS and caught.check == row.expect, caught.detail
    assert "--checks history" in caught.command
    clean = run_seed(replace(row.config(), bugs=frozenset()))
    assert clean.passed, f"{clean.check}: {clean.detail}"


@pytest.mark.parametrize("seed", CLEAN_SEEDS)
def test_clean_runs_pass_with_history_checks_only(seed: int) -> None:
    config = SimConfig(seed=seed, ops=CLEAN_OPS, checks="history", faults=frozenset(FAULT_KINDS))
    result = run_seed(config)
    assert result.passed, f"{result.check}: {result.detail}\nreplay: {result.command}"


def test_clients_keep_several_operations_in_flight_under_one_id() -> None:
    result = run_seed(SimConfig(seed=3, ops=150, checks="history"))
    assert result.passed, result.detail
    operations = operations_from_events(result.history)
    # Processes are "<client>.<n>": several of one client overlap in time.
    by_client: dict[str, list[tuple[float, float]]] = {}
    for op in operations:
        span = (op.call, op.ret if op.ret is not None else float("inf"))
        by_client.setdefault(str(op.process).split(".")[0], []).append(span)
    overlapping = Counter(
        client
        for client, spans in by_client.items()
        for (a_call, a_ret), (b_call, _) in zip(sorted(spans), sorted(spans)[1:], strict=False)
        if b_call < a_ret
    )
    assert len(overlapping) == 5 and min(overlapping.values()) > 5
    kinds = Counter(op.f for op in operations)
    assert kinds["stale-read"] > 0 and kinds["get"] > 0 and kinds["put"] > 0
