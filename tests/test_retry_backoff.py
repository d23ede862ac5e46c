"""planaria.retry backoff: each jitter kind stays inside its AWS-defined bounds (properties)."""

from __future__ import annotations

import math
import random
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.retry import Jitter, RandomLike, RetryState, retry


class Low:
    """Always draws the lower bound."""

    def uniform(self, a: float, b: float, /) -> float:
        return a


class Overshoot:
    """Draws just past the upper bound, as float rounding in ``random.uniform`` can."""

    def uniform(self, a: float, b: float, /) -> float:
        return math.nextafter(b, math.inf)


def waits_of(
    jitter: Jitter,
    rng: RandomLike,
    retries: int,
    *,
    wait_initial_s: float = 0.1,
    wait_max_s: float = 5.0,
    wait_multiplier: float = 2.0,
) -> list[float]:
    """The waits chosen for a call that always fails, with no deadline."""
    waits: list[float] = []

    def record(state: RetryState) -> None:
        assert state.next_wait_s is not None
        waits.append(state.next_wait_s)

    @retry(
        attempts_max=retries + 1,
        timeout_s=None,
        wait_initial_s=wait_initial_s,
        wait_max_s=wait_max_s,
        wait_multiplier=wait_multiplier,
        jitter=jitter,
        rng=rng,
        clock=lambda: 0.0,
        sleep=lambda _s: None,
        before_sleep=record,
        retry_on=ArithmeticError,
    )
    def always_fails() -> None:
        raise ZeroDivisionError

    try:
        always_fails()
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the call was expected to give up")
    assert len(waits) == retries
    return waits


def bases(schedule: dict[str, float], count: int) -> list[float]:
    """The un-jittered exponential waits: initial, times the multiplier, capped."""
    out = [schedule["wait_initial_s"]]
    while len(out) < count:
        out.append(min(schedule["wait_max_s"], out[-1] * schedule["wait_multiplier"]))
    return out


rngs = st.one_of(
    st.integers(0, 2**32).map(random.Random),
    st.sampled_from([Low(), Overshoot()]),
)
settings_fast = settings(max_examples=150, deadline=None)


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, float]:
    max_s = draw(st.floats(0.0, 60.0, allow_nan=False))
    initial_s = draw(st.floats(0.0, max_s, allow_nan=False))
    multiplier = draw(st.floats(1.0, 10.0, allow_nan=False))
    return {"wait_initial_s": initial_s, "wait_max_s": max_s, "wait_multiplier": multiplier}


@settings_fast
@given(schedules(), rngs, st.integers(1, 12), st.sampled_from(list(Jitter)))
def test_every_wait_within_zero_and_cap(
    schedule: dict[str, float], rng: RandomLike, retries: int, jitter: Jitter
) -> None:
    for wait in waits_of(jitter, rng, retries, **schedule):
        assert 0.0 <= wait <= schedule["wait_max_s"]


@settings_fast
@given(schedules(), rngs, st.integers(1, 12))
def test_full_jitter_within_zero_and_base(
    schedule: dict[str, float], rng: RandomLike, retries: int
) -> None:
    waits = waits_of(Jitter.FULL, rng, retries, **schedule)
    expected = bases(schedule, retries)
    for wait, base in zip(waits, expected, strict=True):
        assert 0.0 <= wait <= base


@settings_fast
@given(schedules(), rngs, st.integers(1, 12))
def test_equal_jitter_within_half_and_base(
    schedule: dict[str, float], rng: RandomLike, retries: int
) -> None:
    waits = waits_of(Jitter.EQUAL, rng, retries, **schedule)
    expected = bases(schedule, retries)
    for wait, base in zip(waits, expected, strict=True):
        assert base / 2 <= wait <= base


@settings_fast
@given(schedules(), rngs, st.integers(1, 12))
def test_decorrelated_jitter_within_initial_and_three_times_previous(
    schedule: dict[str, float], rng: RandomLike, retries: int
) -> None:
    waits = waits_of(Jitter.DECORRELATED, rng, retries, **schedule)
    initial_s, max_s = schedule["wait_initial_s"], schedule["wait_max_s"]
    previous = initial_s
    for wait in waits:
        assert initial_s <= wait <= max_s
        assert wait <= max(initial_s, previous * 3)
        previous = wait


@settings_fast
@given(schedules(), rngs, st.integers(1, 12))
def test_no_jitter_is_exact_exponential(
    schedule: dict[str, float], rng: RandomLike, retries: int
) -> None:
    waits = waits_of(Jitter.NONE, rng, retries, **schedule)
    assert waits == bases(schedule, retries)


def test_jitter_actually_spreads_waits() -> None:
    # A fixed seed: full jitter covers [0, base], equal [base/2, base], decorrelated grows.
    options = {"wait_initial_s": 1.0, "wait_max_s": 1.0}
    full = waits_of(Jitter.FULL, random.Random(1), 2000, **options)
    equal = waits_of(Jitter.EQUAL, random.Random(2), 2000, **options)
    assert min(full) < 0.05 and max(full) > 0.95
    assert 0.45 < statistics.fmean(full) < 0.55
    assert min(equal) < 0.55 and max(equal) > 0.95
    assert 0.70 < statistics.fmean(equal) < 0.80
    decorrelated = waits_of(
        Jitter.DECORRELATED, random.Random(3), 200, wait_initial_s=0.1, wait_max_s=20.0
    )
    assert max(decorrelated) > 10.0
    assert len(set(decorrelated)) > 150


def test_seeded_rng_makes_waits_reproducible() -> None:
    first = waits_of(Jitter.FULL, random.Random(42), 6)
    second = waits_of(Jitter.FULL, random.Random(42), 6)
    assert first == second
