"""Results of a run, computed from a synthetic history (no processes, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from planaria.chaos.results import (
    CompletedOp,
    FaultRecord,
    compare_rows,
    completed_ops,
    counter_results,
    failover_samples,
    longest_write_gap_s,
    passed,
    percentile,
    summarize,
    ttl_results,
)
from planaria.check import CounterReport, Event, check_counters, check_expired_reads


def shard_of(key: str) -> int:
    return int(key.split("-", maxsplit=1)[0][1:])  # "s3-x" -> shard 3


def write(
    process: int, key: str, value: str, start: float, end: float, *, kind: str = "ok"
) -> list[Event]:
    return [
        Event(process, "invoke", "put", key, value, start),
        Event(process, kind, "put", key, value if kind == "ok" else None, end),  # type: ignore[arg-type]
    ]


def ordered(*groups: list[Event]) -> list[Event]:
    return sorted((e for g in groups for e in g), key=lambda e: e.time)


def test_completed_ops_pairs_and_marks_the_unfinished_info() -> None:
    events = ordered(
        write(0, "s0-a", "1", 0.0, 0.5),
        write(1, "s1-b", "2", 0.1, 0.2, kind="fail"),
        [Event(2, "invoke", "get", "s1-b", None, 0.3)],  # never completes
    )
    ops = completed_ops(events, shard_of)
    assert [(op.process, op.type, op.shard) for op in ops] == [
        (0, "ok", 0),
        (1, "fail", 1),
        (2, "info", 1),
    ]
    assert ops[0].latency_s == pytest.approx(0.5)
    assert ops[2].completed_s is None and ops[2].latency_s is None


def test_failover_is_from_the_fault_to_the_first_ack_invoked_after_it() -> None:
    events = ordered(
        write(0, "s0-a", "1", 0.0, 0.1),
        write(0, "s0-a", "2", 0.9, 2.5),  # invoked before the fault: does not count
        write(1, "s0-b", "3", 1.2, 1.7),  # the first one invoked after the fault at 1.0
        write(2, "s1-c", "4", 1.1, 1.3),  # shard 1 was not affected
        write(3, "s2-d", "5", 1.5, 1.6, kind="fail"),  # shard 2 never recovers
    )
    faults = [FaultRecord("kill", "n1", 1.0, 3.0, (0, 2))]
    samples = failover_samples(completed_ops(events, shard_of), faults)
    assert [(s.shard, s.ms) for s in samples] == [(0, pytest.approx(700.0)), (2, None)]


def test_longest_write_gap_counts_from_the_start_to_the_end_of_the_run() -> None:
    events = ordered(
        write(0, "s0-a", "1", 0.0, 0.1),
        write(0, "s0-a", "2", 0.2, 0.3),
        write(1, "s0-b", "3", 0.4, 2.4, kind="info"),  # a write of unknown outcome: no ack
        [Event(2, "invoke", "get", "s0-a", None, 3.0), Event(2, "ok", "get", "s0-a", "2", 3.5)],
    )
    assert longest_write_gap_s(completed_ops(events, shard_of)) == pytest.approx(3.2)
    assert longest_write_gap_s([]) == 0.0


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.99) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def op(shard: int, kind: str, start: float, end: float | None, f: str = "put") -> CompletedOp:
    return CompletedOp(0, f, f"s{shard}-k", shard, kind, start, end)


def test_summarize_has_the_fields_results_json_promises() -> None:
    ops = [
        op(0, "ok", 0.0, 0.1),
        op(0, "ok", 1.1, 1.4),
        op(1, "ok", 1.2, 2.2),
        op(1, "fail", 1.0, 1.0),
        op(1, "info", 1.0, None),
    ]
    faults = [FaultRecord("pause", "n2", 1.0, 2.0, (0, 1))]
    record = summarize(
        ops=ops,
        faults=faults,
        acked_writes_lost=0,
        linearizable=None,
        run={"target": "planaria", "seed": 4, "net": "iptables"},
    )
    assert record["target"] == "planaria" and record["seed"] == 4 and record["net"] == "iptables"
    assert record["ops"] == {"ok": 3, "fail": 1, "info": 1}
    assert record["acked_writes_lost"] == 0 and record["linearizable"] is None
    fo = record["failover_ms"]
    assert (fo["p50"], fo["p99"], fo["max"]) == (400.0, 1200.0, 1200.0)
    assert fo["samples"] == 2 and fo["unrecovered"] == 0
    assert fo["p50_by_kind"] == {"pause": 400.0}
    assert record["faults"] == [
        {"kind": "pause", "node": "n2", "start_s": 1.0, "end_s": 2.0, "affected_shards": [0, 1]}
    ]
    assert record["longest_write_gap_ms"] == pytest.approx(1300.0)  # acks at 0.1, 1.4, 2.2


def test_summarize_without_faults_has_no_failover() -> None:
    record = summarize(
        ops=[op(0, "ok", 0.0, 0.1)], faults=[], acked_writes_lost=3, linearizable=False, run={}
    )
    assert record["failover_ms"]["p50"] is None and record["failover_ms"]["samples"] == 0
    assert record["acked_writes_lost"] == 3 and record["linearizable"] is False


def test_compare_rows_put_runs_side_by_side() -> None:
    base = {"ops": {"ok": 10, "fail": 1, "info": 0}, "faults": [{}, {}]}
    runs: list[dict[str, Any]] = [
        {**base, "target": "planaria", "acked_writes_lost": 0, "linearizable": True,
         "failover_ms": {"p50": 1040.4, "p99": 1200.0, "max": 1300.0, "unrecovered": 0}},
        {**base, "target": "redis-sentinel", "acked_writes_lost": 28373, "linearizable": False,
         "failover_ms": {"p50": 2229.0, "p99": None, "max": None, "unrecovered": 1}},
        {**base, "target": "etcd", "acked_writes_lost": 0, "linearizable": None},
    ]  # fmt: skip
    rows = dict(compare_rows(runs))
    assert rows["target"] == ["planaria", "redis-sentinel", "etcd"]
    assert rows["acked writes lost"] == ["0", "28373", "0"]
    assert rows["linearizable"] == ["yes", "NO", "unknown"]
    assert rows["failover p50 ms"] == ["1040", "2229", "-"]
    assert rows["faults"] == ["2", "2", "2"]


def counter_reports(final: str) -> list[CounterReport]:
    events = [
        Event(0, "invoke", "incr", "c0", 2, 0.0),
        Event(0, "ok", "incr", "c0", 2, 0.1),
        Event(1, "invoke", "incr", "c0", 3, 0.2),
        Event(1, "info", "incr", "c0", None, 0.3),
    ]
    return check_counters(events, {"c0": final})


def test_counter_and_ttl_records_and_the_verdict() -> None:
    base: dict[str, Any] = {"acked_writes_lost": 0, "linearizable": True}
    clean = counter_results(counter_reports("5"))
    assert clean["ok"] and (clean["acked"], clean["unknown"], clean["lost"]) == (1, 1, 0)
    assert clean["keys"][0]["final"] == 5 and clean["keys"][0]["unknown_sum"] == 3
    doubled = counter_results(counter_reports("7"))
    assert not doubled["ok"] and doubled["doubled"] == 2 and doubled["problems"] >= 1
    expiry = check_expired_reads(
        [
            Event(0, "invoke", "set-px", "t0", ("a", 100), 0.0),
            Event(0, "ok", "set-px", "t0", ("a", 100), 0.01),
            Event(1, "invoke", "get", "t0", None, 0.5),
            Event(1, "ok", "get", "t0", "a", 0.51),
        ],
        tolerance_ms=5.0,
    )
    ttl = ttl_results(expiry, wall_step_ms=0.25)
    assert ttl["checked"] and not ttl["ok"] and ttl["expired_reads"] == 1
    assert ttl["wall_step_ms"] == 0.25 and ttl["tolerance_ms"] == 5.0
    assert passed({**base, "counters": clean, "ttl": ttl_results(None, "off")})
    assert not passed({**base, "counters": doubled})
    assert not passed({**base, "counters": clean, "ttl": ttl})
    assert passed(base)  # a record from before counters and TTL keys existed
    skipped = counter_results(None, "etcd target: registers only")
    assert skipped == {"checked": False, "skipped": "etcd target: registers only"}
    rows = dict(compare_rows([{**base, "counters": doubled, "ttl": ttl}, {**base, "ops": {}}]))
    assert rows["counter amount doubled"] == ["2", "-"]
    assert rows["expired reads"] == ["1", "-"]
