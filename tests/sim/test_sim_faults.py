"""Every fault kind actually happens, and has the effect it claims."""

from __future__ import annotations

import pytest

from planaria.errors import UsageError
from planaria.sim.nemesis import NemesisSettings, parse_faults
from planaria.sim.run import SimConfig, SimResult, run_seed


def _sweep(faults: str, seeds: range, ops: int = 150) -> list[SimResult]:
    return [run_seed(SimConfig(seed=s, ops=ops, faults=parse_faults(faults))) for s in seeds]


def _total(results: list[SimResult], stat: str) -> float:
    return sum(result.stats[stat] for result in results)


@pytest.mark.parametrize(
    ("kind", "effect"),
    [
        ("crash", "restarts"),
        ("disk", "restarts"),
        ("pause", "held_events"),
        ("partition", "messages_cut"),
        ("loss", "messages_lost"),
        ("loss", "messages_duplicated"),
        ("drift", "clock_rate_spread"),
    ],
)
def test_each_fault_kind_is_injected_and_has_its_effect(kind: str, effect: str) -> None:
    results = _sweep(kind, range(3))
    assert all(result.passed for result in results), [r.detail for r in results]
    assert sum(result.faults.get(kind, 0) for result in results) > 0
    assert _total(results, effect) > 0


def test_with_drift_the_coordinator_clock_runs_fast_by_the_bound() -> None:
    """Fast is the direction that races the leases: sessions end early (core.lease)."""
    (drifting,) = _sweep("drift", range(1))
    (steady,) = _sweep("none", range(1))
    assert drifting.passed, drifting.detail
    assert drifting.stats["coordinator_clock_rate"] == 1 + NemesisSettings().drift_max
    assert steady.stats["coordinator_clock_rate"] == 1.0


def test_disk_faults_lose_unsynced_records_and_tear_tails_that_recovery_cuts_off() -> None:
    results = _sweep("disk", range(10))
    assert _total(results, "records_lost") > 0
    assert _total(results, "torn_tails") > 0
    assert all(result.passed for result in results), [r.detail for r in results]


def test_wiped_nodes_register_their_loss_and_are_refilled() -> None:
    results = _sweep("wipe", range(4))
    assert all(result.passed for result in results), [r.detail for r in results]
    assert sum(result.faults.get("wipe", 0) for result in results) > 0
    assert _total(results, "damaged_logs") > 0  # a damaged journal wipes every log
    assert _total(results, "losses_recorded") > 0  # the controller took them out of the ISR


def test_long_pauses_and_partitions_expire_sessions_and_change_configs() -> None:
    results = _sweep("pause,partition", range(4))
    assert _total(results, "sessions_expired") > 0
    assert _total(results, "config_changes") > 0


def test_no_faults_means_none_injected_and_nothing_lost() -> None:
    (result,) = _sweep("none", range(1))
    assert result.passed
    assert result.faults == {}
    assert result.stats["messages_lost"] == result.stats["messages_cut"] == 0
    assert result.info_operations == 0
    assert result.stats["acks_checked"] > 0


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(UsageError, match="unknown fault"):
        parse_faults("crash,meteor")


def test_snapshot_faults_crash_snapshots_tear_files_and_cut_transfers() -> None:
    """The ``snapshot`` fault (with its drawn thresholds) crashes nodes inside snapshots,
    tears snapshot files found at restarts, and, with partitions and loss, transfers are cut
    midway and resumed, and primaries change during them; every run passes."""
    results = _sweep("snapshot,partition,loss", range(6))
    assert all(result.passed for result in results), [r.detail for r in results]
    assert sum(result.faults.get("snapshot", 0) for result in results) > 0
    for stat in (
        "snapshot_crashes",
        "snapshots_torn",
        "snapshots_installed",
        "transfers_resends",
        "transfers_superseded",
    ):
        assert _total(results, stat) > 0, stat
