"""The expired-read check: no read returns a key set with a relative expiry after that
expiry passed (pure).

A TTL key's history holds ``set-px`` operations (the invocation's value is ``[value, ttl_ms]``:
SET key value PX ttl_ms) and ``get`` reads (an ``ok`` value is what the read returned,
``None`` for absent). Values are unique per history (a value set twice is judged by its
last acknowledged SET, and not at all if a SET of it had an unknown outcome).

The server makes the relative expiry absolute by its own clock when it takes the SET, some
time between the SET's invocation and its completion: the key's expiry lies in
``[invoked + ttl, completed + ttl]``. A read that returned the value although it was
invoked after ``completed + ttl + tolerance`` is an ``expired-read``. The times must come
from the clock the server judges expiry by, up to the tolerance (on one host: the same
clock; ``planaria chaos`` states its tolerance and why). SETs whose outcome is unknown are
not judged (the server may have taken them at any later time); neither are reads of values
no acknowledged SET wrote.

Work and memory are linear in the history; the examples kept are bounded
(:data:`EXAMPLES_MAX`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from planaria.check.history import Event

__all__ = ["EXAMPLES_MAX", "SET_PX", "ExpiredRead", "ExpiryReport", "check_expired_reads"]

SET_PX: Final = "set-px"
EXAMPLES_MAX: Final = 10


@dataclass(frozen=True, slots=True)
class ExpiredRead:
    """A read that returned ``value`` ``late_ms`` past its SET's latest possible expiry."""

    key: str
    value: str
    set_completed: float
    ttl_ms: float
    read_invoked: float
    late_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "set_completed": round(self.set_completed, 4),
            "ttl_ms": self.ttl_ms,
            "read_invoked": round(self.read_invoked, 4),
            "late_ms": round(self.late_ms, 1),
        }


@dataclass(slots=True)
class ExpiryReport:
    """What the check saw: SETs by outcome, the reads it judged, the violations."""

    tolerance_ms: float
    keys: int = 0
    sets_acked: int = 0
    sets_failed: int = 0
    sets_unknown: int = 0
    reads: int = 0
    reads_judged: int = 0  # reads that returned the value of an acknowledged SET
    reads_past_expiry_within_tolerance: int = 0  # returned it past expiry, not past tolerance
    expired_reads: int = 0
    examples: list[ExpiredRead] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.expired_reads == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "tolerance_ms": self.tolerance_ms,
            "keys": self.keys,
            "sets_acked": self.sets_acked,
            "sets_failed": self.sets_failed,
            "sets_unknown": self.sets_unknown,
            "reads": self.reads,
            "reads_judged": self.reads_judged,
            "reads_past_expiry_within_tolerance": self.reads_past_expiry_within_tolerance,
            "expired_reads": self.expired_reads,
            "examples": [e.to_json() for e in self.examples],
        }


@dataclass(frozen=True, slots=True)
class _Set:
    completed: float
    ttl_ms: float


def _set_argument(value: Hashable) -> tuple[str, float]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{SET_PX} takes [value, ttl_ms], not {value!r}")
    written, ttl_ms = value
    return str(written), float(ttl_ms)


def check_expired_reads(
    events: Iterable[Event], *, tolerance_ms: float, ms_per_time_unit: float = 1000.0
) -> ExpiryReport:
    """Judge every read of ``events`` (see the module docstring); event times are in units
    of ``ms_per_time_unit`` milliseconds (1000: seconds)."""
    if tolerance_ms < 0:
        raise ValueError(f"tolerance_ms must be >= 0, not {tolerance_ms}")
    report = ExpiryReport(tolerance_ms)
    pending: dict[Hashable, Event] = {}
    sets: dict[tuple[str, str], _Set] = {}
    unknown: set[tuple[str, str]] = set()
    reads: list[tuple[str, str, float]] = []  # (key, value, invoked)
    keys: set[str] = set()
    for event in events:
        if event.type == "invoke":
            pending[event.process] = event
            continue
        invoke = pending.pop(event.process, None)
        if invoke is None:
            continue
        key = str(invoke.key)
        if invoke.f == SET_PX:
            keys.add(key)
            written, ttl_ms = _set_argument(invoke.value)
            if event.type == "ok":
                report.sets_acked += 1
                sets[(key, written)] = _Set(event.time, ttl_ms)
            elif event.type == "fail":
                report.sets_failed += 1
            else:
                report.sets_unknown += 1
                unknown.add((key, written))
        elif invoke.f == "get" and event.type == "ok":
            report.reads += 1
            if event.value is not None:
                reads.append((key, str(event.value), invoke.time))
    for invoke in pending.values():
        if invoke.f == SET_PX:
            keys.add(str(invoke.key))
            report.sets_unknown += 1
            unknown.add((str(invoke.key), _set_argument(invoke.value)[0]))
    report.keys = len(keys)
    for key, value, invoked in reads:
        setter = sets.get((key, value))
        if setter is None or (key, value) in unknown:
            continue
        report.reads_judged += 1
        late_ms = (invoked - setter.completed) * ms_per_time_unit - setter.ttl_ms
        if late_ms <= 0:
            continue
        if late_ms <= tolerance_ms:
            report.reads_past_expiry_within_tolerance += 1
            continue
        report.expired_reads += 1
        if len(report.examples) < EXAMPLES_MAX:
            report.examples.append(
                ExpiredRead(key, value, setter.completed, setter.ttl_ms, invoked, late_ms)
            )
    return report
