"""A history the checker cannot decide within its limits fails the seed, never passes it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from planaria.check import CheckResult, Operation, PartitionResult, Verdict
from planaria.check.models import Model
from planaria.sim import run as sim_run
from planaria.sim.run import SimConfig, run_seed


def test_an_undecided_history_fails_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(model: Model, operations: Sequence[Operation], **_: Any) -> CheckResult:
        reason = "ran out of memory: the search passed the 1024 MB limit"
        part = PartitionResult("k", Verdict.UNKNOWN, tuple(operations), reason=reason)
        return CheckResult(Verdict.UNKNOWN, model.name, (part,))

    monkeypatch.setattr(sim_run, "check_operations", out_of_memory)
    result = run_seed(SimConfig(seed=1, ops=60, partitions=2, faults=frozenset()))
    assert not result.passed
    assert result.check == "history-unknown"
    assert result.detail is not None and "ran out of memory" in result.detail
