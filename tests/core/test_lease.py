"""The lease rule holds with the node's clock and the coordinator's clock both drifting."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from planaria.core.lease import lease_max_ms, session_ttl_min_ms
from planaria.errors import UsageError
from planaria.node import DRIFT_MAX, LEASE_MARGIN_MS, NodeSettings
from planaria.sim.coordinator import CoordinatorSettings
from planaria.sim.node import NodeSettings as SimNodeSettings
from planaria.sim.run import SimConfig
from planaria.sim.world import Clock

SENT_TRUE_MS = 1000.0


def _slack_true_ms(
    lease_ms: float, ttl_ms: float, margin_ms: float, node_rate: float, coordinator_rate: float
) -> float:
    """True time between the node noticing its lease ran out and the coordinator expiring
    the session (>= 0: never two primaries). The renewal arrives the instant it is sent (the
    worst case); the clocks' offsets are arbitrary and do not matter."""
    node = Clock(offset_ms=123.0, rate=node_rate)
    coordinator = Clock(offset_ms=-4567.0, rate=coordinator_rate)
    lease_noticed_true_ms = SENT_TRUE_MS + node.true_delay(lease_ms) + margin_ms
    expiry_true_ms = SENT_TRUE_MS + coordinator.true_delay(ttl_ms)
    return expiry_true_ms - lease_noticed_true_ms


def _smallest_accepted_ttl(accepts: Callable[[float], bool], low: float, high: float) -> float:
    """The smallest TTL a validator accepts, by bisection (to 0.001 ms)."""
    assert accepts(high) and not accepts(low)
    while high - low > 0.001:
        middle = (low + high) / 2
        low, high = (low, middle) if accepts(middle) else (middle, high)
    return high


def _node_accepts(lease_ms: float) -> Callable[[float], bool]:
    def accepts(ttl_ms: float) -> bool:
        try:
            NodeSettings(session_ttl_ms=ttl_ms, lease_ms=lease_ms)
        except UsageError:
            return False
        return True

    return accepts


def _sim_accepts(lease_ms: float, tick_ms: float) -> Callable[[float], bool]:
    def accepts(ttl_ms: float) -> bool:
        try:
            SimConfig(
                node=SimNodeSettings(lease_ms=lease_ms, tick_ms=tick_ms),
                coordinator=CoordinatorSettings(session_ttl_ms=ttl_ms),
            )
        except UsageError:
            return False
        return True

    return accepts


RATES = [(1 - DRIFT_MAX, 1 + DRIFT_MAX), (1 + DRIFT_MAX, 1 - DRIFT_MAX), (1.0, 1.0)]


@pytest.mark.parametrize(("node_rate", "coordinator_rate"), RATES)
def test_the_shortest_ttl_a_node_accepts_outlives_its_lease_on_clocks_within_drift(
    node_rate: float, coordinator_rate: float
) -> None:
    """Before the two-sided rule the node accepted 230 ms for a 200 ms lease: with its clock
    slow and the coordinator's fast by 5 %, the session ended 11 ms before the lease did."""
    lease_ms = 200.0
    ttl_ms = _smallest_accepted_ttl(_node_accepts(lease_ms), lease_ms, 10 * lease_ms)
    slack = _slack_true_ms(lease_ms, ttl_ms, LEASE_MARGIN_MS, node_rate, coordinator_rate)
    assert slack >= -0.01


def test_the_shortest_ttl_the_simulator_accepts_outlives_the_lease_on_clocks_within_drift() -> None:
    drift = SimConfig().nemesis.drift_max
    lease_ms, tick_ms = 100.0, 10.0
    ttl_ms = _smallest_accepted_ttl(_sim_accepts(lease_ms, tick_ms), lease_ms, 10 * lease_ms)
    for node_rate, coordinator_rate in [(1 - drift, 1 + drift), (1 + drift, 1 - drift)]:
        slack = _slack_true_ms(lease_ms, ttl_ms, tick_ms, node_rate, coordinator_rate)
        assert slack >= -0.01, (node_rate, coordinator_rate)


def test_the_rule_is_tight_and_the_longest_lease_is_its_inverse() -> None:
    ttl_ms = session_ttl_min_ms(200.0, drift_max=0.05, margin_ms=20.0)
    assert _slack_true_ms(200.0, ttl_ms, 20.0, 0.95, 1.05) == pytest.approx(0.0, abs=1e-9)
    assert lease_max_ms(ttl_ms, drift_max=0.05, margin_ms=20.0) == pytest.approx(200.0)
    assert NodeSettings().session_ttl_ms >= session_ttl_min_ms(
        NodeSettings().lease_ms, drift_max=DRIFT_MAX, margin_ms=LEASE_MARGIN_MS
    )


@pytest.mark.parametrize("drift_max", [-0.1, 1.0, 2.0])
def test_a_drift_bound_outside_0_to_1_is_refused(drift_max: float) -> None:
    with pytest.raises(UsageError, match="drift_max"):
        session_ttl_min_ms(100.0, drift_max=drift_max, margin_ms=0.0)
    with pytest.raises(UsageError, match="drift_max"):
        lease_max_ms(100.0, drift_max=drift_max, margin_ms=0.0)
