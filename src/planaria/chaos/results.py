"""What a chaos run measured, computed from its history and its faults (pure).

Times are seconds on the history's clock (the recorder's, from the start of the workload).
Availability: for each fault and each shard it affected (the shards the faulted node led when
the fault started), the failover time is from the fault's start to the completion of the
first acknowledged write on that shard invoked at or after the start; a shard with no such
write before the run ended is counted as ``unrecovered``. The longest gap is the longest
stretch of the workload with no acknowledged write at all.

Counters and TTL keys (:func:`counter_results`, :func:`ttl_results`): the reports of
``planaria.check.counters`` and ``planaria.check.expiry``, or why they were skipped. A run
passes (:func:`passed`) when no acknowledged write is lost, the history is linearizable, no
counter increment is lost or doubled, and no read returned an expired key.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from planaria.check import CounterReport, Event, ExpiryReport

__all__ = [
    "WRITE_FUNCTIONS",
    "CompletedOp",
    "FailoverSample",
    "FaultRecord",
    "compare_rows",
    "completed_ops",
    "counter_results",
    "failover_samples",
    "longest_write_gap_s",
    "passed",
    "percentile",
    "summarize",
    "ttl_results",
]

WRITE_FUNCTIONS: Final = frozenset({"put", "cas"})


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """A fault as it happened: the node it hit (resolved from ``leader``), its window, and
    the shards that node led when it started."""

    kind: str
    node: str
    start_s: float
    end_s: float
    affected: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "affected_shards": list(self.affected),
        }


@dataclass(frozen=True, slots=True)
class CompletedOp:
    """An invocation with its completion (``type`` ok, fail or info; ``None`` when it never
    completed), for latency and availability."""

    process: Hashable
    f: str
    key: str
    shard: int
    type: str
    invoked_s: float
    completed_s: float | None

    @property
    def latency_s(self) -> float | None:
        return None if self.completed_s is None else self.completed_s - self.invoked_s


def completed_ops(events: Iterable[Event], shard_of: Callable[[str], int]) -> list[CompletedOp]:
    """Pair each process's invocation with its next completion, in invocation order."""
    pending: dict[Hashable, Event] = {}
    done: list[CompletedOp] = []
    for event in events:
        if event.type == "invoke":
            pending[event.process] = event
            continue
        invoke = pending.pop(event.process, None)
        if invoke is None:
            continue
        key = str(invoke.key)
        done.append(
            CompletedOp(
                invoke.process, invoke.f, key, shard_of(key), event.type, invoke.time, event.time
            )
        )
    for invoke in pending.values():
        key = str(invoke.key)
        done.append(
            CompletedOp(invoke.process, invoke.f, key, shard_of(key), "info", invoke.time, None)
        )
    done.sort(key=lambda op: op.invoked_s)
    return done


@dataclass(frozen=True, slots=True)
class FailoverSample:
    fault: int  # index into the faults
    shard: int
    ms: float | None  # None: no acknowledged write on the shard after the fault


def failover_samples(
    ops: Sequence[CompletedOp], faults: Sequence[FaultRecord]
) -> list[FailoverSample]:
    """One sample per (fault, affected shard); see the module docstring."""
    acked: dict[int, list[CompletedOp]] = {}
    for op in ops:
        if op.type == "ok" and op.f in WRITE_FUNCTIONS and op.completed_s is not None:
            acked.setdefault(op.shard, []).append(op)
    samples: list[FailoverSample] = []
    for index, fault in enumerate(faults):
        for shard in fault.affected:
            firsts = [
                op.completed_s
                for op in acked.get(shard, ())
                if op.invoked_s >= fault.start_s and op.completed_s is not None
            ]
            ms = (min(firsts) - fault.start_s) * 1000 if firsts else None
            samples.append(FailoverSample(index, shard, ms))
    return samples


def longest_write_gap_s(ops: Sequence[CompletedOp]) -> float:
    """The longest time between consecutive acknowledged writes (any key), from the first
    invocation to the last completion of the run."""
    times = sorted(
        op.completed_s
        for op in ops
        if op.type == "ok" and op.f in WRITE_FUNCTIONS and op.completed_s is not None
    )
    if not ops:
        return 0.0
    begin = min(op.invoked_s for op in ops)
    end = max((op.completed_s if op.completed_s is not None else op.invoked_s) for op in ops)
    points = [begin, *times, end]
    return max(b - a for a, b in itertools.pairwise(points)) if len(points) > 1 else 0.0


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in [0, 1]); None for no values."""
    if not values:
        return None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"percentile fraction must be in [0, 1], not {fraction}")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def summarize(
    *,
    ops: Sequence[CompletedOp],
    faults: Sequence[FaultRecord],
    acked_writes_lost: int,
    linearizable: bool | None,
    run: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``results.json`` record: ``run`` (target, seed, net method, ...) plus the
    measurements."""
    counts = Counter(op.type for op in ops)
    samples = failover_samples(ops, faults)
    measured = [s.ms for s in samples if s.ms is not None]
    by_kind: dict[str, list[float]] = {}
    for sample in samples:
        if sample.ms is not None:
            by_kind.setdefault(faults[sample.fault].kind, []).append(sample.ms)
    return {
        **run,
        "acked_writes_lost": acked_writes_lost,
        "linearizable": linearizable,
        "ops": {"ok": counts["ok"], "fail": counts["fail"], "info": counts["info"]},
        "failover_ms": {
            "p50": _rounded(percentile(measured, 0.5)),
            "p99": _rounded(percentile(measured, 0.99)),
            "max": _rounded(max(measured, default=None)),
            "samples": len(measured),
            "unrecovered": sum(1 for s in samples if s.ms is None),
            "p50_by_kind": {k: _rounded(percentile(v, 0.5)) for k, v in sorted(by_kind.items())},
        },
        "longest_write_gap_ms": round(longest_write_gap_s(ops) * 1000, 1),
        "faults": [fault.to_json() for fault in faults],
    }


def counter_results(
    reports: Sequence[CounterReport] | None, skipped: str | None = None
) -> dict[str, Any]:
    """The ``counters`` record: totals and one row per key (None: not run, ``skipped`` why)."""
    if reports is None:
        return {"checked": False, "skipped": skipped}
    return {
        "checked": True,
        "skipped": None,
        "ok": all(r.ok for r in reports),
        "acked": sum(r.acked for r in reports),
        "unknown": sum(r.unknown for r in reports),
        "failed": sum(r.failed for r in reports),
        "lost": sum(r.lost for r in reports),
        "doubled": sum(r.doubled for r in reports),
        "problems": sum(len(r.problems) for r in reports),
        "keys": [r.to_json() for r in reports],
    }


def ttl_results(
    report: ExpiryReport | None, skipped: str | None = None, wall_step_ms: float = 0.0
) -> dict[str, Any]:
    """The ``ttl`` record (None: not run, ``skipped`` why); ``wall_step_ms``: how far the
    wall clock moved against the monotonic one during the run (added to the tolerance)."""
    if report is None:
        return {"checked": False, "skipped": skipped}
    return {
        "checked": True,
        "skipped": None,
        "ok": report.ok,
        "wall_step_ms": round(wall_step_ms, 3),
        **report.to_json(),
    }


def passed(results: Mapping[str, Any]) -> bool:
    """PASS: nothing acknowledged lost, linearizable, counters and TTL reads clean (a
    record without the counter or TTL part, from before they existed, is judged without)."""
    extra_ok = all(bool(results.get(part, {}).get("ok", True)) for part in ("counters", "ttl"))
    return results["acked_writes_lost"] == 0 and results["linearizable"] is True and extra_ok


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def compare_rows(results: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """The side-by-side table of several runs: (measure, one cell per run)."""

    def get(record: Mapping[str, Any], *path: str) -> Any:
        value: Any = record
        for name in path:
            value = value.get(name) if isinstance(value, Mapping) else None
        return value

    def linearizable(record: Mapping[str, Any]) -> str:
        value = record.get("linearizable")
        return "unknown" if value is None else _cell(bool(value))

    measures: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
        ("target", lambda r: _cell(r.get("target"))),
        ("seed", lambda r: _cell(r.get("seed"))),
        ("net method", lambda r: _cell(r.get("net"))),
        ("duration s", lambda r: _cell(r.get("duration_s"))),
        ("faults", lambda r: _cell(len(r.get("faults", [])))),
        ("ops ok", lambda r: _cell(get(r, "ops", "ok"))),
        ("ops fail", lambda r: _cell(get(r, "ops", "fail"))),
        ("ops info", lambda r: _cell(get(r, "ops", "info"))),
        ("acked writes lost", lambda r: _cell(r.get("acked_writes_lost"))),
        ("linearizable", linearizable),
        ("counter increments acked", lambda r: _cell(get(r, "counters", "acked"))),
        ("counter amount lost", lambda r: _cell(get(r, "counters", "lost"))),
        ("counter amount doubled", lambda r: _cell(get(r, "counters", "doubled"))),
        ("counter problems", lambda r: _cell(get(r, "counters", "problems"))),
        ("TTL reads judged", lambda r: _cell(get(r, "ttl", "reads_judged"))),
        ("expired reads", lambda r: _cell(get(r, "ttl", "expired_reads"))),
        ("failover p50 ms", lambda r: _cell(get(r, "failover_ms", "p50"))),
        ("failover p99 ms", lambda r: _cell(get(r, "failover_ms", "p99"))),
        ("failover max ms", lambda r: _cell(get(r, "failover_ms", "max"))),
        ("unrecovered shards", lambda r: _cell(get(r, "failover_ms", "unrecovered"))),
        ("longest write gap ms", lambda r: _cell(r.get("longest_write_gap_ms"))),
    ]
    return [(name, [render(record) for record in results]) for name, render in measures]
