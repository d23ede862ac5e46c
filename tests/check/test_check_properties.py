"""Properties: histories of a real sequential register are linearizable; a read of a value
nobody wrote is not."""

from __future__ import annotations

from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.check import CasRegister, Event, check_operations, check_partition
from planaria.check import operations_from_events as pair

OpSpec = tuple[str, int, int, int, int, str]  # f, argument, start, length, point, outcome

op_specs = st.lists(
    st.tuples(
        st.sampled_from(["read", "write", "cas"]),
        st.integers(0, 3),
        st.integers(0, 40),
        st.integers(1, 15),
        st.integers(0, 1000),
        st.sampled_from(["ok", "ok", "ok", "info-applied", "info-lost"]),
    ),
    min_size=1,
    max_size=12,
)


def run_register(specs: list[OpSpec]) -> list[Event]:
    """Run the ops against a real register at a point inside each interval; record events."""
    timed: list[
        tuple[float, int, int, str, tuple[str, Hashable]]
    ] = []  # (time, kind, process, type, value)
    ops = []
    for process, (f, argument, start, length, point, outcome) in enumerate(specs):
        at = start + length * point / 1000
        ops.append((at, process, f, argument, start, start + length, outcome))
    value: Hashable = None
    for at, process, f, argument, start, end, outcome in sorted(ops):
        del at
        arg: Hashable = (argument, (argument + 1) % 4) if f == "cas" else argument
        if f == "read":
            arg = None
        result: Hashable = arg
        status = "ok"
        if outcome == "info-lost":
            status = "info"
        elif f == "read":
            result = value
        elif f == "write":
            value = argument
        elif value == argument:
            value = (argument + 1) % 4
        else:
            status = "fail"  # the cas compared unequal: certainly no effect
        if outcome == "info-applied":
            status = "info"
        timed.append((float(start), 0, process, "invoke", (f, arg)))
        timed.append((float(end), 1, process, status, (f, result)))
    events = []
    for line, (time, _, process, type_, (f, v)) in enumerate(sorted(timed), start=1):
        events.append(Event(process, type_, f, None, v, time, line))  # type: ignore[arg-type]
    return events


@settings(max_examples=150, deadline=None)
@given(op_specs)
def test_real_register_histories_are_linearizable(specs: list[OpSpec]) -> None:
    result = check_operations(CasRegister(), pair(run_register(specs)))
    assert str(result.verdict) == "linearizable"


class _NoPrecheck(CasRegister):
    def impossible(self, ops: object) -> None:
        return None


@settings(max_examples=150, deadline=None)
@given(op_specs, st.integers(0, 1000))
def test_reading_a_value_never_written_is_caught(specs: list[OpSpec], pick: int) -> None:
    ops = pair(run_register(specs))
    reads = [op for op in ops if op.f == "read" and op.known]
    if not reads:
        specs = [*specs, ("read", 0, 100, 1, 0, "ok")]
        ops = pair(run_register(specs))
        reads = [op for op in ops if op.f == "read" and op.known]
    victim = reads[pick % len(reads)]
    mutated = tuple(op if op.index != victim.index else _with_output(op, 99) for op in ops)
    assert str(check_operations(CasRegister(), mutated).verdict) == "not-linearizable"
    # and the search alone, without the cheap pre-check, agrees
    assert str(check_partition(_NoPrecheck(), None, mutated).verdict) == "not-linearizable"


def _with_output(op, output):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(op, output=output)
