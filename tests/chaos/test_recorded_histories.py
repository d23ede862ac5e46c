"""The counter and expired-read checks on histories recorded from real planaria nodes
(tests/data/chaos/README.md says how each was made): each bug switch's history fails its
check, and a clean one passes."""

from __future__ import annotations

from pathlib import Path

from planaria.chaos.harness import EXPIRY_TOLERANCE_MS
from planaria.check import Event, check_counters, check_expired_reads
from planaria.check.parse import parse_events

DATA = Path(__file__).parent.parent / "data" / "chaos"


def events(name: str) -> list[Event]:
    return list(parse_events((DATA / name).read_text().splitlines(), format="jsonl"))


def test_a_retried_increment_applied_twice_is_counter_doubled() -> None:
    (report,) = check_counters(events("counter-retry-applies-again.jsonl"), {"c9": "223"})
    assert report.acked_sum == 218 and report.unknown == 0
    assert report.doubled == 5
    assert {p.check for p in report.problems} == {"counter-doubled"}


def test_the_same_counter_passes_with_the_value_it_should_have() -> None:
    history = events("counter-retry-applies-again.jsonl")
    # Without the final read and the values only a doubled increment gave, nothing is wrong
    # with the first increments: the check does not fire on a prefix before the faults.
    prefix = [e for e in history if e.time < 5.0]
    (report,) = check_counters(prefix, {"c9": str(_last_answer(prefix))})
    assert report.ok, report.problems


def _last_answer(history: list[Event]) -> int:
    return max(int(str(e.value)) for e in history if e.f == "incr" and e.type == "ok")


def test_a_read_past_expiry_is_an_expired_read() -> None:
    report = check_expired_reads(
        events("ttl-read-ignores-expiry.jsonl"), tolerance_ms=EXPIRY_TOLERANCE_MS
    )
    assert report.expired_reads >= 2
    assert {e.value for e in report.examples} == {"5.226"}


def test_a_clean_ttl_history_has_no_expired_read() -> None:
    report = check_expired_reads(events("ttl-clean.jsonl"), tolerance_ms=EXPIRY_TOLERANCE_MS)
    assert report.ok and report.reads_judged > 20
    assert report.reads > report.reads_judged  # some reads found the key expired
