"""Circuit breaker: state machine on a fake clock, call forms, listeners, real concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import pybreaker
import pytest

from planaria.breaker import BreakerState, CircuitBreaker
from planaria.errors import CircuitOpenError, UsageError

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def fail() -> None:
    raise Boom("dependency down")


def outcomes(breaker: CircuitBreaker, pattern: str) -> None:
    """Run one call per letter: 's' succeeds, 'f' fails (the Boom is swallowed here)."""
    for letter in pattern:
        if letter == "s":
            assert breaker.call(ok) == "ok"
        else:
            with pytest.raises(Boom):
                breaker.call(fail)


def make(clock: FakeClock | None = None, **kwargs: Any) -> CircuitBreaker:
    settings: dict[str, Any] = {"window_size": 10, "calls_min": 4, "open_s": 10.0}
    settings.update(kwargs)
    return CircuitBreaker("dep", clock=clock or FakeClock(), **settings)


def trip(breaker: CircuitBreaker) -> None:
    outcomes(breaker, "ffff")
    assert breaker.state is OPEN


# ------------------------------------------------------------------ closed -> open


def test_a_new_breaker_is_closed_and_passes_results_through() -> None:
    breaker = make()
    assert breaker.state is CLOSED

    def add(a: int, b: int = 0) -> int:
        return a + b

    assert breaker.call(add, 2, b=3) == 5
    stats = breaker.stats
    assert (stats.name, stats.state, stats.calls_total, stats.successes_total) == (
        "dep",
        CLOSED,
        1,
        1,
    )


def test_calls_min_is_respected_before_tripping() -> None:
    breaker = make(calls_min=4)
    outcomes(breaker, "fff")
    assert breaker.state is CLOSED  # 100% failures, but only 3 calls seen
    outcomes(breaker, "f")
    assert breaker.state is OPEN
    assert breaker.stats.opens_total == 1


def test_a_success_that_reaches_calls_min_can_trip() -> None:
    breaker = make(calls_min=4)
    outcomes(breaker, "fffs")  # 75% >= 50% once the 4th call is in
    assert breaker.state is OPEN


def test_failure_rate_below_threshold_stays_closed() -> None:
    breaker = make(failure_rate_threshold=0.5)
    outcomes(breaker, "sfssfssfss" * 3)  # 30%
    assert breaker.state is CLOSED
    assert breaker.stats.failure_rate == pytest.approx(0.3)


def test_count_window_forgets_calls_older_than_its_size() -> None:
    breaker = make(window_size=5, calls_min=5, failure_rate_threshold=0.6)
    outcomes(breaker, "ssff")
    outcomes(breaker, "s")  # window: s s f f s = 40%
    outcomes(breaker, "ss")  # window: f f s s s
    assert breaker.stats.window_calls == 5
    assert breaker.stats.window_failures == 2
    outcomes(breaker, "f")  # window: f s s s f = 40%
    assert breaker.state is CLOSED
    outcomes(breaker, "f")  # window: s s s f f = 40%
    outcomes(breaker, "f")  # window: s s f f f = 60%
    assert breaker.state is OPEN


def test_time_window_counts_only_recent_calls() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "dep",
        window_s=10.0,
        window_buckets=10,
        calls_min=4,
        failure_rate_threshold=0.6,
        open_s=5.0,
        clock=clock,
    )
    outcomes(breaker, "fff")
    clock.advance(10.5)  # those failures age out of the window
    outcomes(breaker, "fss")
    assert breaker.stats.window_calls == 3
    assert breaker.state is CLOSED
    clock.advance(3.0)
    outcomes(breaker, "f")  # 2 of 4 recent calls failed: below 60%
    assert breaker.state is CLOSED
    outcomes(breaker, "f")  # 3 of 5
    assert breaker.state is OPEN


def test_time_window_calls_min_counts_calls_in_the_window_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", window_s=4.0, window_buckets=4, calls_min=3, clock=clock)
    for _ in range(6):  # one failure every 3 s: never 3 in one 4 s window
        outcomes(breaker, "f")
        clock.advance(3.0)
    assert breaker.state is CLOSED
    assert breaker.stats.failures_total == 6


def test_slow_calls_trip_the_breaker() -> None:
    clock = FakeClock()
    breaker = make(clock, slow_call_s=1.0, slow_call_rate_threshold=0.5)

    def slow() -> str:
        clock.advance(1.5)
        return "late"

    outcomes(breaker, "ss")
    assert breaker.call(slow) == "late"
    assert breaker.state is CLOSED
    assert breaker.call(slow) == "late"  # 2 slow of 4
    assert breaker.state is OPEN
    assert breaker.stats.slow_calls_total == 2
    assert breaker.stats.failures_total == 0


# ------------------------------------------------------------------ open, half-open, backoff


def test_open_breaker_refuses_with_remaining_time() -> None:
    clock = FakeClock()
    breaker = make(clock, open_s=10.0)
    trip(breaker)
    clock.advance(4.0)
    called: list[int] = []
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(called.append, 1)
    assert called == []
    assert refused.value.name == "dep"
    assert refused.value.remaining_s == pytest.approx(6.0)
    assert breaker.stats.refused_total == 1
    assert breaker.stats.open_remaining_s == pytest.approx(6.0)


def test_half_open_after_open_s_and_a_good_trial_closes() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_calls=2)
    trip(breaker)
    clock.advance(9.99)
    assert breaker.state is OPEN
    clock.advance(0.01)
    assert breaker.state is HALF_OPEN
    outcomes(breaker, "s")
    assert breaker.state is HALF_OPEN  # one of two trials
    outcomes(breaker, "s")
    assert breaker.state is CLOSED
    assert breaker.stats.window_calls == 0  # a new closed stay starts with an empty window


def test_half_open_trial_limit_refuses_extra_calls() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_calls=2)
    trip(breaker)
    clock.advance(10.0)
    refusals: list[CircuitOpenError] = []

    def third_call() -> str:
        try:
            breaker.call(ok)
        except CircuitOpenError as error:
            refusals.append(error)
        return "trial 2"

    def nested_trials() -> str:
        return breaker.call(third_call)  # trial 2 in flight while trial 1 is

    assert breaker.call(nested_trials) == "trial 2"
    assert len(refusals) == 1
    assert refusals[0].remaining_s == 0.0
    assert breaker.state is CLOSED  # both trials succeeded


def test_a_failed_trial_reopens_with_backoff_up_to_the_maximum() -> None:
    clock = FakeClock()
    breaker = make(clock, open_s=10.0, open_backoff=2.0, open_max_s=35.0, half_open_calls=1)
    trip(breaker)
    expected_open_s = [20.0, 35.0, 35.0]
    waited = 10.0
    for open_s in expected_open_s:
        clock.advance(waited)
        outcomes(breaker, "f")  # the trial fails
        assert breaker.state is OPEN
        with pytest.raises(CircuitOpenError) as refused:
            breaker.call(ok)
        assert refused.value.remaining_s == pytest.approx(open_s)
        waited = open_s
    clock.advance(waited)
    outcomes(breaker, "s")
    assert breaker.state is CLOSED
    trip(breaker)  # the backoff was reset by the close
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(ok)
    assert refused.value.remaining_s == pytest.approx(10.0)


def test_half_open_reopens_as_soon_as_failures_make_it_certain() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_calls=4, failure_rate_threshold=0.5)
    trip(breaker)
    clock.advance(10.0)
    outcomes(breaker, "sf")
    assert breaker.state is HALF_OPEN  # 1 failure of 4 trials: the rest decide
    outcomes(breaker, "f")  # 2 of 4: 50% is certain
    assert breaker.state is OPEN


def test_half_open_closes_when_trials_stay_below_threshold() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_calls=4, failure_rate_threshold=0.5)
    trip(breaker)
    clock.advance(10.0)
    outcomes(breaker, "fsss")
    assert breaker.state is CLOSED


def test_slow_trials_reopen() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_calls=1, slow_call_s=1.0)
    trip(breaker)
    clock.advance(10.0)

    def slow() -> None:
        clock.advance(2.0)

    breaker.call(slow)
    assert breaker.state is OPEN


# ------------------------------------------------------------------ what counts as what


class NotFound(KeyError):
    pass


def test_excluded_exceptions_propagate_and_count_as_successes() -> None:
    breaker = make(exclude=(KeyError,))

    def missing() -> None:
        raise NotFound("no such key")

    for _ in range(10):
        with pytest.raises(NotFound):
            breaker.call(missing)
    assert breaker.state is CLOSED
    stats = breaker.stats
    assert (stats.excluded_total, stats.successes_total, stats.failures_total) == (10, 10, 0)
    outcomes(breaker, "ffff")  # 4 of 10 in the window: below 50%
    assert breaker.state is CLOSED
    outcomes(breaker, "f")
    assert breaker.state is OPEN


def test_an_excluded_exception_is_a_good_half_open_trial() -> None:
    clock = FakeClock()
    breaker = make(clock, exclude=(KeyError,), half_open_calls=1)
    trip(breaker)
    clock.advance(10.0)
    with pytest.raises(KeyError):
        breaker.call(dict[str, int]().__getitem__, "k")
    assert breaker.state is CLOSED


def test_cancellation_is_not_recorded_and_frees_the_trial_slot() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_calls=1)
    outcomes(breaker, "fff")

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.stats.window_calls == 3  # not recorded: no trip
    outcomes(breaker, "f")
    clock.advance(10.0)
    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)  # the only trial slot ...
    assert breaker.state is HALF_OPEN
    outcomes(breaker, "s")  # ... was given back
    assert breaker.state is CLOSED


def test_outcomes_from_an_earlier_period_are_not_counted() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_calls=1)

    def operator_opens_meanwhile() -> str:
        breaker.open(5.0)
        return "late"

    assert breaker.call(operator_opens_meanwhile) == "late"
    assert breaker.stats.calls_stale == 1
    clock.advance(5.0)
    assert breaker.state is HALF_OPEN  # the late success was not taken for a trial
    outcomes(breaker, "s")
    assert breaker.state is CLOSED


# ------------------------------------------------------------------ operator controls


def test_manual_open_holds_until_close() -> None:
    clock = FakeClock()
    seen: list[tuple[BreakerState, BreakerState]] = []
    breaker = make(clock, listeners=[lambda b, o, n: seen.append((o, n))])
    breaker.open(1.0)
    breaker.open()  # already open: extended, not a new transition
    assert seen == [(CLOSED, OPEN)]
    clock.advance(1e6)
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(ok)
    assert refused.value.remaining_s == float("inf")
    breaker.close()
    assert seen == [(CLOSED, OPEN), (OPEN, CLOSED)]
    assert breaker.call(ok) == "ok"
    assert breaker.stats.refused_total == 1  # close() keeps the totals


def test_reset_returns_to_a_new_breaker() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    breaker.reset()
    stats = breaker.stats
    assert stats.state is CLOSED
    assert (stats.calls_total, stats.opens_total, stats.window_calls) == (0, 0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_size": 10, "window_s": 5.0},
        {"window_size": 0},
        {"window_size": 5, "calls_min": 6},
        {"calls_min": 0},
        {"failure_rate_threshold": 0.0},
        {"failure_rate_threshold": 1.5},
        {"slow_call_rate_threshold": 0.0},
        {"slow_call_s": 0.0},
        {"open_s": 0.0},
        {"open_s": 10.0, "open_max_s": 5.0},
        {"open_backoff": 0.5},
        {"half_open_calls": 0},
        {"window_s": -1.0},
        {"window_s": 1.0, "window_buckets": 0},
        {"exclude": ("KeyError",)},
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        CircuitBreaker("dep", **kwargs)


def test_bad_manual_open_duration_is_rejected() -> None:
    with pytest.raises(UsageError):
        make().open(-1.0)


# ------------------------------------------------------------------ listeners


def test_listeners_see_every_transition_in_order() -> None:
    clock = FakeClock()
    seen: list[tuple[str, BreakerState, BreakerState]] = []
    first = make(clock, half_open_calls=1, listeners=[lambda b, o, n: seen.append(("a", o, n))])
    first.add_listener(lambda b, o, n: seen.append(("b", o, n)))
    trip(first)
    clock.advance(10.0)
    outcomes(first, "f")
    clock.advance(20.0)
    outcomes(first, "s")
    assert seen == [
        ("a", CLOSED, OPEN),
        ("b", CLOSED, OPEN),
        ("a", OPEN, HALF_OPEN),
        ("b", OPEN, HALF_OPEN),
        ("a", HALF_OPEN, OPEN),
        ("b", HALF_OPEN, OPEN),
        ("a", OPEN, HALF_OPEN),
        ("b", OPEN, HALF_OPEN),
        ("a", HALF_OPEN, CLOSED),
        ("b", HALF_OPEN, CLOSED),
    ]


def test_a_failing_listener_is_logged_and_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[BreakerState] = []

    def broken(breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("listener bug")

    breaker = make(listeners=[broken, lambda b, o, n: seen.append(b.stats.state)])
    with caplog.at_level(logging.ERROR, logger="planaria.breaker"):
        outcomes(breaker, "fff")
        with pytest.raises(Boom):  # the call's own error, not the listener's
            breaker.call(fail)
    assert breaker.state is OPEN
    assert seen == [OPEN]  # the next listener ran, and could read the stats
    [record] = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "closed -> open" in record.getMessage()


def test_remove_listener() -> None:
    seen: list[BreakerState] = []

    def listener(breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        seen.append(new)

    breaker = make(listeners=[listener])
    breaker.remove_listener(listener)
    trip(breaker)
    assert seen == []
    with pytest.raises(UsageError):
        breaker.remove_listener(listener)


# ------------------------------------------------------------------ call forms


def test_decorator_on_a_sync_function() -> None:
    breaker = make()

    @breaker
    def add(a: int, b: int) -> int:
        """Adds."""
        if a < 0:
            raise Boom
        return a + b

    assert add(1, 2) == 3
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    for _ in range(3):  # s f f f: 75% of calls_min 4
        with pytest.raises(Boom):
            add(-1, 0)
    with pytest.raises(CircuitOpenError):
        add(1, 2)


def test_decorator_on_an_async_function_is_async() -> None:
    breaker = make()

    @breaker
    async def fetch(key: str) -> str:
        await asyncio.sleep(0)
        if key == "bad":
            raise Boom
        return key.upper()

    assert inspect.iscoroutinefunction(fetch)

    async def scenario() -> None:
        assert await fetch("a") == "A"
        for _ in range(3):
            with pytest.raises(Boom):
                await fetch("bad")
        with pytest.raises(CircuitOpenError):
            await fetch("a")

    asyncio.run(scenario())
    assert breaker.stats.successes_total == 1


def test_context_manager_records_the_exception_leaving_the_block() -> None:
    breaker = make()
    with breaker:
        pass
    for _ in range(3):
        with pytest.raises(Boom), breaker:
            raise Boom
    assert breaker.state is OPEN
    ran = False
    with pytest.raises(CircuitOpenError), breaker:
        ran = True
    assert not ran
    stats = breaker.stats
    assert (stats.successes_total, stats.failures_total) == (1, 3)


def test_async_context_manager_and_call_async() -> None:
    breaker = make()

    async def down() -> None:
        await asyncio.sleep(0)
        raise Boom

    async def scenario() -> None:
        async with breaker:
            await asyncio.sleep(0)
        assert await breaker.call_async(asyncio.sleep, 0, result="r") == "r"
        with pytest.raises(Boom):
            async with breaker:
                await down()
        with pytest.raises(Boom):
            await breaker.call_async(down)  # s s f f: 50% of calls_min 4

    asyncio.run(scenario())
    assert breaker.state is OPEN
    assert breaker.stats.successes_total == 2


def test_exiting_a_block_that_was_not_entered_is_an_error() -> None:
    with pytest.raises(UsageError):
        make().__exit__(None, None, None)


# ------------------------------------------------------------------ concurrency


def run_threads(target: Callable[[], object], count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10.0)
    return errors


def test_threads_run_the_protected_call_in_parallel() -> None:
    breaker = CircuitBreaker("dep")
    barrier = threading.Barrier(8, timeout=5.0)  # passes only if all 8 are inside at once
    errors = run_threads(lambda: breaker.call(barrier.wait), 8)
    assert errors == []
    assert breaker.stats.successes_total == 8


def test_the_concurrency_check_bites_on_a_serializing_breaker() -> None:
    # pybreaker holds its lock while the call runs: the same barrier cannot fill.
    serializing = pybreaker.CircuitBreaker(fail_max=1000)
    barrier = threading.Barrier(3, timeout=0.2)
    errors = run_threads(lambda: serializing.call(barrier.wait), 3)
    assert errors and all(isinstance(e, threading.BrokenBarrierError) for e in errors)


def test_async_tasks_run_the_protected_call_concurrently() -> None:
    breaker = CircuitBreaker("dep")

    async def scenario() -> None:
        barrier = asyncio.Barrier(5)
        async with asyncio.timeout(5.0):
            await asyncio.gather(*(breaker.call_async(barrier.wait) for _ in range(5)))

    asyncio.run(scenario())
    assert breaker.stats.successes_total == 5


def test_counts_stay_exact_under_threads() -> None:
    breaker = CircuitBreaker("dep", window_size=50, calls_min=50, failure_rate_threshold=1.0)
    per_thread = 2000

    def work() -> None:
        for i in range(per_thread):
            if i % 4 == 0:
                with contextlib.suppress(Boom):
                    breaker.call(fail)
            else:
                breaker.call(ok)

    switch_interval_s = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as finely as the GIL allows
    try:
        assert run_threads(work, 4) == []
    finally:
        sys.setswitchinterval(switch_interval_s)
    stats = breaker.stats
    assert stats.state is CLOSED
    assert stats.calls_total == 4 * per_thread
    assert stats.failures_total == per_thread
    assert stats.window_calls == 50
