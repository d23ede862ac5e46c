"""Four short chaos runs on real planaria processes (about 20 s each on an idle machine):
a correct cluster must lose nothing and stay linearizable through a kill -9, a pause and a
partition of the leader; a run with the nodes' ``ack-before-replicate`` bug switch must be
caught (acknowledged writes lost or a non-linearizable history); a shorter
correct run with its partition made by the fault-injecting proxy; and one with compaction
forced every few seconds (``--snapshot-entries``), which must have taken snapshots.

The schedules are scripted, not random, so the runs hit the leader with every kind of fault;
the bug run partitions the leader twice (see ``BUG_SCHEDULE``). The first two runs partition
with network namespaces as root (``--net auto``), else through the proxy.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from planaria.chaos.harness import ChaosConfig, run_chaos
from planaria.chaos.schedule import parse_schedule

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SCHEDULE = "kill:leader@2+3,pause:leader@7+2.5,partition:leader@11.5+3"
DURATION_S = 17.0
PROXY_SCHEDULE = "partition:leader@1.5+3,kill:leader@5.5+2,pause:leader@8.5+2"
PROXY_DURATION_S = 12.5


def run(
    tmp_path: Path,
    bugs: tuple[str, ...] = (),
    *,
    net: str = "auto",
    spec: str = SCHEDULE,
    duration_s: float = DURATION_S,
    snapshot_entries: int | None = None,
    snapshot_catchup_entries: int | None = None,
) -> dict[str, Any]:
    config = ChaosConfig(
        out=tmp_path / "out",
        target="planaria",
        duration_s=duration_s,
        clients=4,
        seed=11,
        schedule=parse_schedule(spec, nodes=3),
        bugs=bugs,
        check_timeout_s=30.0,
        plots=False,
        net=net,
        snapshot_entries=snapshot_entries,
        snapshot_catchup_entries=snapshot_catchup_entries,
    )
    results = run_chaos(config, Console(file=io.StringIO(), width=120))
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    assert (tmp_path / "out" / "history.jsonl").stat().st_size > 0
    return results


def test_a_correct_cluster_loses_nothing_and_stays_linearizable(tmp_path: Path) -> None:
    results = run(tmp_path)
    assert results["acked_writes_lost"] == 0, results["lost_examples"]
    assert results["linearizable"] is True, results["linearizability_failure"]
    assert results["ops"]["ok"] > 500
    assert len(results["faults"]) == 3
    assert any(fault["affected_shards"] for fault in results["faults"])  # a leader was hit
    assert results["failover_ms"]["unrecovered"] == 0
    assert results["net"] == ("netns" if os.geteuid() == 0 else "proxy")
    # The counters and TTL keys of the default workload: nothing lost, doubled or expired.
    counters, ttl = results["counters"], results["ttl"]
    assert counters["ok"] and counters["acked"] > 0, counters
    assert counters["lost"] == counters["doubled"] == 0
    assert ttl["ok"] and ttl["reads_judged"] > 0 and ttl["expired_reads"] == 0, ttl


def test_the_proxy_partitions_without_losing_anything(tmp_path: Path) -> None:
    results = run(tmp_path, net="proxy", spec=PROXY_SCHEDULE, duration_s=PROXY_DURATION_S)
    assert results["net"] == "proxy"
    assert results["acked_writes_lost"] == 0, results["lost_examples"]
    assert results["linearizable"] is True, results["linearizability_failure"]
    partition = results["faults"][0]
    assert partition["kind"] == "partition" and partition["affected_shards"]
    # the partitioned leader's shards moved: writes on them were acknowledged again
    assert results["failover_ms"]["unrecovered"] == 0
    assert results["failover_ms"]["p50_by_kind"].get("partition") is not None


def test_compaction_forced_every_few_seconds_loses_nothing(tmp_path: Path) -> None:
    """Every partition snapshots and compacts every 10 entries (every second or two at this
    load), keeping 5 for lagging backups, so the leader killed for 3 s comes back needing
    more than its primaries kept: through kill, pause and partition nothing is lost."""
    results = run(tmp_path, snapshot_entries=10, snapshot_catchup_entries=5)
    assert results["acked_writes_lost"] == 0, results["lost_examples"]
    assert results["linearizable"] is True, results["linearizability_failure"]
    assert results["config"]["snapshot_entries"] == 10
    compaction = results["compaction"]
    # Not vacuous: the processes up at the end took snapshots, and every partition's
    # primary holds one (its log compacted behind it).
    assert compaction["snapshots_taken"] > 0, compaction
    assert len(compaction["partitions"]) == 8, compaction
    assert all(p["snapshot_index"] > 0 for p in compaction["partitions"].values()), compaction


# Partitions of the leader are what reliably expose the bug: cut off from its backups and the
# coordinator but not from clients, a node that acknowledges before replicating keeps doing
# so until its lease runs out (about a second of writes nobody else has); a kill -9 only
# loses the few writes in flight. Two partitions, so one unlucky fault cannot hide it.
BUG_SCHEDULE = "partition:leader@2+3,kill:leader@7+2.5,partition:leader@11.5+3"


# Whether a partitioned leader acks writes that are then lost depends on timing: beside two
# CPU burners one run in three caught nothing. The bug must be caught within a few runs.
BUG_RUNS_MAX = 3


@pytest.mark.timeout(150 * BUG_RUNS_MAX)
def test_acknowledging_before_replicating_is_caught(tmp_path: Path) -> None:
    seen = []
    for attempt in range(BUG_RUNS_MAX):
        results = run(tmp_path / f"run{attempt}", bugs=("ack-before-replicate",), spec=BUG_SCHEDULE)
        if results["acked_writes_lost"] > 0 or results["linearizable"] is False:
            return
        seen.append((results["ops"], results["faults"]))
    raise AssertionError(f"not caught in {BUG_RUNS_MAX} runs: {seen}")
