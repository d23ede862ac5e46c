"""Helpers for writing small histories by hand in the check tests."""

from __future__ import annotations

from collections.abc import Hashable

from planaria.check import CheckResult, Event, Verdict, check_operations, operations_from_events
from planaria.check.models import CasRegister, KvModel

Row = tuple[Hashable, str, str, Hashable, Hashable]


def ops_of(*rows: Row):  # type: ignore[no-untyped-def]
    """Operations from (process, type, f, key, value) rows; the row number is the time."""
    events = [
        Event(process, type_, f, key, value, float(t), t)  # type: ignore[arg-type]
        for t, (process, type_, f, key, value) in enumerate(rows, start=1)
    ]
    return operations_from_events(events)


def check_kv(*rows: Row, missing: Hashable = None) -> CheckResult:
    return check_operations(KvModel(missing), ops_of(*rows))


def check_register(*rows: Row) -> CheckResult:
    return check_operations(CasRegister(), ops_of(*rows))


LIN = Verdict.LINEARIZABLE
NOT = Verdict.NOT_LINEARIZABLE
