"""TTL keys in the simulator (``planaria sim --ttls N``): clean runs pass with reads of keys
with an expiry checked against the primary's clock (``expired-read``) and the replicas'
expiries compared (``diverged``); the bug switches that break expiry are caught
(tests/sim/regressions.py keeps their seeds)."""

from __future__ import annotations

import pytest

from planaria.sim.nemesis import FAULT_KINDS
from planaria.sim.run import SimConfig, run_seed


@pytest.mark.parametrize("seed", range(4))
def test_clean_runs_with_ttl_keys_pass_and_check_their_reads(seed: int) -> None:
    result = run_seed(SimConfig(seed=seed, ops=200, ttls=4, faults=frozenset(FAULT_KINDS)))
    assert result.passed, f"{result.check}: {result.detail}\nreplay: {result.command}"
    assert result.stats["expiry_checks"] > 0
    assert "--ttls 4" in result.command


def test_the_expired_read_seed_passes_without_its_bug() -> None:
    config = SimConfig(seed=1, ttls=4, faults=frozenset(FAULT_KINDS))
    assert run_seed(config).passed
    caught = run_seed(SimConfig(seed=1, ttls=4, faults=frozenset(FAULT_KINDS),
                                bugs=frozenset({"read-ignores-expiry"})))  # fmt: skip
    assert caught.check == "expired-read", caught.detail
