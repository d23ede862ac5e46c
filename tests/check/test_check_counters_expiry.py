"""The counter and expired-read checkers on hand-made histories: each rule bites on the
history that breaks it, and histories a correct server may give pass."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from planaria.check import Event, check_counters, check_expired_reads
from planaria.check.counters import PROBLEMS_MAX
from planaria.check.expiry import EXAMPLES_MAX, SET_PX


def op(
    process: Hashable,
    f: str,
    key: str,
    argument: Hashable,
    *,
    kind: str = "ok",
    result: Hashable = None,
    at: tuple[float, float],
) -> list[Event]:
    invoked, completed = at
    return [
        Event(process, "invoke", f, key, argument, invoked),
        Event(process, kind, f, key, result, completed),  # type: ignore[arg-type]
    ]


def ordered(*ops: list[Event]) -> list[Event]:
    return sorted((e for events in ops for e in events), key=lambda e: e.time)


def checks(events: list[Event], final: dict[Hashable, Hashable]) -> list[str]:
    (report,) = check_counters(events, final)
    return [p.check for p in report.problems]


# ---------------------------------------------------------------- counters


def test_increments_acknowledged_in_order_pass() -> None:
    events = ordered(
        op(0, "incr", "c", 2, result=2, at=(0.0, 1.0)),
        op(1, "incr", "c", 3, result=5, at=(2.0, 3.0)),
        op(2, "get", "c", None, result="5", at=(4.0, 5.0)),
    )
    (report,) = check_counters(events, {"c": "5"})
    assert report.ok and report.acked == 2 and report.acked_sum == 5
    assert report.lost == 0 and report.doubled == 0 and report.observations == 3


def test_a_lost_increment_is_caught() -> None:
    events = ordered(
        op(0, "incr", "c", 1, result=1, at=(0.0, 1.0)),
        op(1, "incr", "c", 1, result=2, at=(2.0, 3.0)),
    )
    assert checks(events, {"c": "1"}) == ["counter-lost", "counter-lost"]
    (report,) = check_counters(events, {"c": "1"})
    assert report.lost == 1


def test_a_doubled_increment_is_caught() -> None:
    events = ordered(
        op(0, "incr", "c", 1, result=1, at=(0.0, 1.0)),
        op(1, "incr", "c", 1, result=3, at=(2.0, 3.0)),  # applied twice: answered the second
    )
    assert checks(events, {"c": "3"}) == ["counter-doubled", "counter-doubled"]
    (report,) = check_counters(events, {"c": 3})
    assert report.doubled == 1


@pytest.mark.parametrize("final", ["1", "3"])
def test_an_unknown_increment_is_fine_applied_or_not(final: str) -> None:
    events = ordered(
        op(0, "incr", "c", 1, result=1, at=(0.0, 1.0)),
        op(1, "incr", "c", 2, kind="info", at=(1.5, 2.0)),
        op(2, "incr", "c", 1, kind="fail", at=(2.5, 2.6)),  # certainly not applied
    )
    (report,) = check_counters(events, {"c": final})
    assert report.ok, report.problems
    assert (report.acked, report.unknown, report.failed) == (1, 1, 1)


def test_an_invocation_without_completion_counts_as_unknown() -> None:
    events = [
        *op(0, "incr", "c", 1, result=1, at=(0.0, 1.0)),
        Event(1, "invoke", "incr", "c", 4, 2.0),
    ]
    (report,) = check_counters(events, {"c": "5"})
    assert report.ok and report.unknown_sum == 4
    assert checks(events, {"c": "6"}) == ["counter-doubled"]


def test_a_failed_increment_that_was_applied_is_doubled() -> None:
    events = op(0, "incr", "c", 1, kind="fail", at=(0.0, 1.0))
    assert checks(events, {"c": "1"}) == ["counter-doubled"]


def test_two_increments_answered_the_same_value() -> None:
    events = ordered(
        op(0, "incr", "c", 1, result=1, at=(0.0, 1.0)),
        op(1, "incr", "c", 1, result=1, at=(0.5, 1.5)),
    )
    assert "counter-lost" in checks(events, {"c": "2"})


def test_a_read_that_goes_backwards_in_real_time() -> None:
    events = ordered(
        op(0, "incr", "c", 1, result=1, at=(0.0, 1.0)),
        op(1, "get", "c", None, at=(2.0, 3.0)),  # absent after an acknowledged incr
    )
    assert checks(events, {"c": "1"}) == ["counter-lost"]


def test_a_read_concurrent_with_an_increment_may_see_either() -> None:
    for seen in (None, "1"):
        events = ordered(
            op(0, "incr", "c", 1, result=1, at=(0.0, 2.0)),
            op(1, "get", "c", None, result=seen, at=(1.0, 1.5)),
        )
        assert checks(events, {"c": "1"}) == []


def test_a_read_above_everything_invoked_by_then_is_doubled() -> None:
    events = ordered(
        op(0, "incr", "c", 1, result=1, at=(0.0, 1.0)),
        op(1, "get", "c", None, result="2", at=(1.5, 2.0)),
        op(2, "incr", "c", 1, result=2, at=(3.0, 4.0)),  # invoked after the read ended
    )
    assert checks(events, {"c": "2"}) == ["counter-doubled"]


def test_non_positive_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        check_counters(op(0, "incr", "c", 0, result=0, at=(0.0, 1.0)), {})


def test_problems_kept_per_key_are_bounded() -> None:
    events = ordered(
        *(
            op(i, "incr", "c", 1, result=1, at=(2.0 * i, 2.0 * i + 1))
            for i in range(3 * PROBLEMS_MAX)
        )
    )
    (report,) = check_counters(events, {"c": "1"})
    assert len(report.problems) == PROBLEMS_MAX


def test_reports_are_per_key_and_ignore_other_functions() -> None:
    events = ordered(
        op(0, "incr", "b", None, result=1, at=(0.0, 1.0)),
        op(1, "incr", "a", None, result=1, at=(0.0, 1.0)),
        op(2, "put", "a", "x", result="x", at=(2.0, 3.0)),
    )
    reports = check_counters(events, {"a": "1", "b": "1"})
    assert [r.key for r in reports] == ["a", "b"] and all(r.ok for r in reports)
    assert reports[0].to_json()["acked_sum"] == 1


# ---------------------------------------------------------------- expired reads

TOLERANCE_MS = 5.0


def set_px(
    process: Hashable, value: str, ttl_ms: float, invoked: float, done: float
) -> list[Event]:
    return op(
        process, SET_PX, "t", (value, ttl_ms), kind="ok", result=(value, ttl_ms), at=(invoked, done)
    )


def get(process: Hashable, seen: str | None, invoked: float, done: float) -> list[Event]:
    return op(process, "get", "t", None, result=seen, at=(invoked, done))


def test_a_read_after_expiry_and_tolerance_is_an_expired_read() -> None:
    events = ordered(set_px(0, "a", 200, 0.0, 0.1), get(1, "a", 0.4, 0.41))
    report = check_expired_reads(events, tolerance_ms=TOLERANCE_MS)
    assert report.expired_reads == 1 and not report.ok
    (example,) = report.examples
    assert example.value == "a" and example.late_ms == pytest.approx(100.0)


def test_a_read_just_inside_the_tolerance_passes() -> None:
    # completed 0.1 s + 200 ms = 0.3 s; read invoked 3 ms later: within 5 ms.
    events = ordered(set_px(0, "a", 200, 0.0, 0.1), get(1, "a", 0.303, 0.31))
    report = check_expired_reads(events, tolerance_ms=TOLERANCE_MS)
    assert report.ok and report.reads_past_expiry_within_tolerance == 1
    assert not check_expired_reads(events, tolerance_ms=2.0).ok


def test_reads_before_the_latest_possible_expiry_pass() -> None:
    # Invoked before completed + ttl: the server may have taken the SET late.
    events = ordered(set_px(0, "a", 200, 0.0, 0.1), get(1, "a", 0.25, 0.35), get(1, None, 0.5, 0.6))
    report = check_expired_reads(events, tolerance_ms=0.0)
    assert report.ok and report.reads_judged == 1 and report.reads == 2


def test_a_later_set_of_the_same_value_is_the_one_judged() -> None:
    events = ordered(
        set_px(0, "a", 100, 0.0, 0.1),
        set_px(0, "a", 1000, 0.5, 0.6),
        get(1, "a", 0.9, 1.0),
    )
    assert check_expired_reads(events, tolerance_ms=TOLERANCE_MS).ok


def test_sets_of_unknown_outcome_are_not_judged() -> None:
    events = ordered(
        op(0, SET_PX, "t", ("a", 100), kind="info", at=(0.0, 0.1)),
        get(1, "a", 5.0, 5.1),
        [Event(2, "invoke", SET_PX, "t", ("b", 100), 6.0)],
        get(1, "b", 9.0, 9.1),
    )
    report = check_expired_reads(events, tolerance_ms=TOLERANCE_MS)
    assert report.ok and report.sets_unknown == 2 and report.reads_judged == 0


def test_expired_read_examples_are_bounded() -> None:
    events = ordered(
        set_px(0, "a", 10, 0.0, 0.01),
        *(get(i + 1, "a", 1.0 + i, 1.5 + i) for i in range(2 * EXAMPLES_MAX)),
    )
    report = check_expired_reads(events, tolerance_ms=TOLERANCE_MS)
    assert report.expired_reads == 2 * EXAMPLES_MAX and len(report.examples) == EXAMPLES_MAX


def test_expiry_check_refuses_a_negative_tolerance_and_a_bad_argument() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        check_expired_reads([], tolerance_ms=-1.0)
    with pytest.raises(ValueError, match="ttl_ms"):
        check_expired_reads(op(0, SET_PX, "t", "a", at=(0.0, 1.0)), tolerance_ms=1.0)
