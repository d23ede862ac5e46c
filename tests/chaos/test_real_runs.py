"""Two short chaos runs on real planaria processes (about 25 s each on an idle machine):
a correct cluster must lose nothing and stay linearizable through a kill -9, a pause and a
partition of the leader; the same run with the nodes' ``ack-before-replicate`` bug switch
must be caught (acknowledged writes lost or a non-linearizable history).

The schedule is scripted, not random, so both runs hit the leader with every kind of fault:
a kill -9 of the leader is what reliably exposes writes acknowledged before they were
replicated. Partitions need root (iptables); without it the runs use kill and pause only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from planaria.chaos.harness import ChaosConfig, run_chaos
from planaria.chaos.net import partitions_supported
from planaria.chaos.schedule import parse_schedule

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

_WITH_PARTITION = "kill:leader@2+3,pause:leader@7+2.5,partition:leader@11.5+3"
_WITHOUT_PARTITION = "kill:leader@2+3,pause:leader@7+2.5,kill:leader@11.5+3"
DURATION_S = 17.0


def run(tmp_path: Path, bugs: tuple[str, ...] = ()) -> dict[str, Any]:
    spec = _WITH_PARTITION if partitions_supported() is None else _WITHOUT_PARTITION
    config = ChaosConfig(
        out=tmp_path / "out",
        target="planaria",
        duration_s=DURATION_S,
        clients=4,
        seed=11,
        schedule=parse_schedule(spec, nodes=3),
        bugs=bugs,
        check_timeout_s=30.0,
        plots=False,
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


def test_acknowledging_before_replicating_is_caught(tmp_path: Path) -> None:
    results = run(tmp_path, bugs=("ack-before-replicate",))
    assert results["acked_writes_lost"] > 0 or results["linearizable"] is False
