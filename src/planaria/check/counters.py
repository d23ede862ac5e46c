"""The counter check: no acknowledged increment lost, none applied twice (pure).

A counter key starts absent (0) and is only ever incremented. Its history holds ``incr``
operations (the invocation's value is the amount, ``None`` meaning 1; an ``ok`` completion's
value is the counter's new value, as INCRBY answers) and ``get`` reads (an ``ok`` value is
the counter as a string or int, ``None`` for absent: 0). An ``incr`` that completes ``fail``
certainly was not applied; ``info``, or no completion at all, is unknown: it may have been
applied once, or not at all.

Amounts must be positive: then every application gives a new, higher value. The rules, for
each counter key (``counter-lost``: an acknowledged increment is missing; ``counter-doubled``:
more was applied than was sent):

- the final value (read after healing) is at least the sum of the acknowledged amounts
  (``counter-lost``) and at most that plus the amounts of unknown outcome
  (``counter-doubled``);
- no two acknowledged increments answered the same value (``counter-lost``: one of them
  was never applied, it got the other's answer), and the final value is at least every
  value one answered (``counter-lost``);
- real time: every value observed during the run (a read, or the value an increment
  answered) lies between ``low``, the amounts of the increments acknowledged before the
  observation was invoked (plus its own, for an increment), and ``high``, the amounts of
  the increments invoked before it completed and not failed. Sound for any linearizable
  counter: an increment that completed before the read began took effect before it, one
  invoked after the read ended cannot have. Below ``low`` is ``counter-lost`` (the counter
  went backwards), above ``high`` ``counter-doubled``. Times come from one clock: a recorder
  that stamps invocations before sending and completions after the answer keeps it sound.

Work and memory are O(n log n) and O(n) in the history; the problems kept are bounded
(:data:`PROBLEMS_MAX` per key).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from planaria.check.history import Event

__all__ = [
    "COUNTER_CHECKS",
    "PROBLEMS_MAX",
    "CounterProblem",
    "CounterReport",
    "check_counters",
]

COUNTER_CHECKS: Final = ("counter-lost", "counter-doubled")
PROBLEMS_MAX: Final = 5  # per key: the first few say enough


@dataclass(frozen=True, slots=True)
class CounterProblem:
    """One broken rule: ``check`` is ``counter-lost`` or ``counter-doubled``."""

    check: str
    key: str
    detail: str


@dataclass(slots=True)
class CounterReport:
    """One counter key: its increments by outcome, the final value, what was observed."""

    key: str
    acked: int = 0
    acked_sum: int = 0
    failed: int = 0
    unknown: int = 0
    unknown_sum: int = 0
    final: int | None = None  # None: no final value was given for the key
    observations: int = 0  # reads and answered values checked against real time
    problems: list[CounterProblem] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Acknowledged amount missing from the final value (0 when none)."""
        if self.final is None:
            return 0
        return max(0, self.acked_sum - self.final)

    @property
    def doubled(self) -> int:
        """Amount in the final value beyond every increment that may have been applied."""
        if self.final is None:
            return 0
        return max(0, self.final - self.acked_sum - self.unknown_sum)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "acked": self.acked,
            "acked_sum": self.acked_sum,
            "failed": self.failed,
            "unknown": self.unknown,
            "unknown_sum": self.unknown_sum,
            "final": self.final,
            "lost": self.lost,
            "doubled": self.doubled,
            "observations": self.observations,
            "problems": [{"check": p.check, "detail": p.detail} for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class _Op:
    f: str
    amount: int
    type: str  # ok, fail, info (no completion: info)
    invoked: float
    completed: float | None
    value: Hashable


def _amount(value: Hashable) -> int:
    amount = 1 if value is None else int(str(value))
    if amount <= 0:
        raise ValueError(f"counter increments must be positive, not {amount}")
    return amount


def _number(value: Hashable) -> int:
    return 0 if value is None else int(str(value))


def _pair(events: Iterable[Event]) -> dict[str, list[_Op]]:
    """Each process's invocation with its next completion, by key."""
    pending: dict[Hashable, Event] = {}
    ops: dict[str, list[_Op]] = {}

    def add(invoke: Event, kind: str, completed: float | None, value: Hashable) -> None:
        if invoke.f not in ("incr", "get"):
            return
        amount = _amount(invoke.value) if invoke.f == "incr" else 0
        op = _Op(invoke.f, amount, kind, invoke.time, completed, value)
        ops.setdefault(str(invoke.key), []).append(op)

    for event in events:
        if event.type == "invoke":
            pending[event.process] = event
            continue
        invoke = pending.pop(event.process, None)
        if invoke is not None:
            add(invoke, event.type, event.time, event.value)
    for invoke in pending.values():
        add(invoke, "info", None, None)
    return ops


def check_counters(
    events: Iterable[Event], final: Mapping[Hashable, Hashable]
) -> list[CounterReport]:
    """One report per counter key of ``events`` (sorted by key); see the module docstring.
    ``final`` maps a key to its value read after every operation ended (a key with
    increments but missing from ``final`` reads as absent: 0)."""
    reports: list[CounterReport] = []
    for key, ops in sorted(_pair(events).items()):
        reports.append(_check_key(key, ops, final.get(key)))
    return reports


def _check_key(key: str, ops: list[_Op], final_value: Hashable) -> CounterReport:
    report = CounterReport(key)
    incrs = [op for op in ops if op.f == "incr"]
    acked = [op for op in incrs if op.type == "ok"]
    report.acked = len(acked)
    report.acked_sum = sum(op.amount for op in acked)
    report.failed = sum(op.type == "fail" for op in incrs)
    unknown = [op for op in incrs if op.type not in ("ok", "fail")]
    report.unknown = len(unknown)
    report.unknown_sum = sum(op.amount for op in unknown)
    report.final = _number(final_value)

    def problem(check: str, detail: str) -> None:
        if len(report.problems) < PROBLEMS_MAX:
            report.problems.append(CounterProblem(check, key, f"counter {key}: {detail}"))

    answered = sorted(_number(op.value) for op in acked)
    repeated = [a for a, b in itertools.pairwise(answered) if a == b]
    if repeated:
        problem(
            "counter-lost",
            f"two acknowledged increments answered the same value {repeated[0]}: one of them "
            "was never applied",
        )
    if answered and report.final < answered[-1]:
        problem(
            "counter-lost",
            f"final value {report.final} is below the value {answered[-1]} an acknowledged "
            "increment answered",
        )
    if report.final < report.acked_sum:
        problem(
            "counter-lost",
            f"final value {report.final} < {report.acked_sum}, the sum of {report.acked} "
            "acknowledged increments",
        )
    if report.final > report.acked_sum + report.unknown_sum:
        problem(
            "counter-doubled",
            f"final value {report.final} > {report.acked_sum} acknowledged + "
            f"{report.unknown_sum} of unknown outcome ({report.unknown} increments): one was "
            "applied twice",
        )
    _check_real_time(ops, acked, problem, report)
    return report


def _check_real_time(
    ops: list[_Op],
    acked: list[_Op],
    problem: Callable[[str, str], None],
    report: CounterReport,
) -> None:
    """Every observed value between what had surely been applied and what may have been."""
    done = sorted((op.completed, op.amount) for op in acked if op.completed is not None)
    done_times = [t for t, _ in done]
    done_sums = list(itertools.accumulate((a for _, a in done), initial=0))
    sent = sorted((op.invoked, op.amount) for op in ops if op.f == "incr" and op.type != "fail")
    sent_times = [t for t, _ in sent]
    sent_sums = list(itertools.accumulate((a for _, a in sent), initial=0))
    for op in ops:
        if op.type != "ok" or op.completed is None:
            continue
        observed = _number(op.value)
        # Acknowledged strictly before this was invoked: surely applied before it.
        low = done_sums[bisect.bisect_left(done_times, op.invoked)]
        if op.f == "incr":
            low += op.amount
        # Invoked no later than this completed (and not failed): may have been applied.
        high = sent_sums[bisect.bisect_right(sent_times, op.completed)]
        report.observations += 1
        what = "an increment answered" if op.f == "incr" else "a read returned"
        span = f"[{op.invoked:.3f}, {op.completed:.3f}]"
        if observed < low:
            problem(
                "counter-lost",
                f"{what} {observed} in {span}, below {low} that increments acknowledged "
                "before it had made: the counter went backwards",
            )
        elif observed > high:
            problem(
                "counter-doubled",
                f"{what} {observed} in {span}, above {high}, every increment invoked by "
                "then: one was applied twice",
            )
