"""Each known-bug switch makes some seed of a bounded sweep fail, and that same seed passes
without the switch: the checks bite, and they bite because of the bug."""

from __future__ import annotations

import pytest

from planaria.sim.nemesis import FAULT_KINDS
from planaria.sim.run import SimConfig, SimResult, run_seed

from .regressions import REGRESSIONS

SEEDS_MAX = 60
OPS = 300
# Eight partitions: more partitions means more writes in flight when a fault strikes
# (no-epoch-fence needs an uncommitted entry on a deposed primary).
PARTITIONS = 8
# The checks each bug is expected to trip first (others may follow from the same bug).
EXPECTED = {
    "ack-before-replicate": {"ack-not-replicated"},
    # The snapshot's compaction applies uncommitted entries: their replies go out to
    # retries before any backup holds them, or the state diverges from the new primary's, or
    # the replica's commit ran ahead of its partition and it never serves again: writes
    # retried after healing get no answer (seed 5 since a resumed process reads its
    # connections in random order, issue 16 part 3).
    "compact-past-commit": {
        "ack-not-replicated",
        "diverged",
        "lost-write",
        "not-linearizable",
        "no-primary",
        "unresolved",
    },
    # A client's older write in flight is never applied nor answered: its retries after
    # healing get nothing (finding 2 of issue 16).
    "dedup-last-only": {"unresolved"},
    "no-epoch-fence": {"truncated-committed", "diverged", "lost-write", "not-linearizable"},
    "promote-out-of-sync": {"promoted-out-of-sync"},
    # The ack leaves before the ISR's fsyncs of its entry (the monitor's check at send time).
    "release-before-durable": {"ack-not-replicated"},
    "no-lease-wait": {"two-serving", "not-linearizable"},
    # isr-joined-behind: the stale backup is caught when it rejoins the ISR; crashed: the
    # log itself refuses a record of a lower epoch after the stale suffix (seed 2 since the
    # snapshot fault, issue 17).
    "skip-truncate": {
        "crashed",
        "diverged",
        "isr-joined-behind",
        "ack-not-replicated",
        "lost-write",
        "not-linearizable",
    },
    # A node back on a replaced disk stays in sync and is promoted empty (as above).
    "ignore-data-id": {
        "truncated-committed",
        "lost-write",
        "not-linearizable",
        "diverged",
        "no-primary",
    },
    # The empty replica is promoted: a backup truncates below its commit, or reads miss, or
    # (with the snapshot fault's small thresholds) a backup whose snapshot covers the empty
    # primary's first indexes acknowledges them unlogged (seed 19: ack-not-replicated).
    "wiped-stays-in-sync": {
        "ack-not-replicated",
        "truncated-committed",
        "lost-write",
        "not-linearizable",
        "diverged",
        "no-primary",
    },
}
KNOWN_OPEN = {
    (row.seed, row.ops, row.partitions) for row in REGRESSIONS if row.open_bug is not None
}


def _first_failure(bug: str) -> SimResult | None:
    for seed in range(SEEDS_MAX):
        config = SimConfig(
            seed=seed,
            ops=OPS,
            partitions=PARTITIONS,
            faults=frozenset(FAULT_KINDS),
            bugs=frozenset({bug}),
        )
        result = run_seed(config)
        if not result.passed:
            return result
    return None


@pytest.mark.parametrize("bug", sorted(EXPECTED))
def test_a_bounded_sweep_catches_the_bug(bug: str) -> None:
    caught = _first_failure(bug)
    assert caught is not None, f"{bug}: no seed in 0..{SEEDS_MAX - 1} failed"
    assert caught.check in EXPECTED[bug], f"{caught.check}: {caught.detail}"
    assert f"--bug {bug}" in caught.command
    clean = run_seed(
        SimConfig(seed=caught.seed, ops=OPS, partitions=PARTITIONS, faults=frozenset(FAULT_KINDS))
    )
    assert clean.passed or (caught.seed, OPS, PARTITIONS) in KNOWN_OPEN, clean.detail
