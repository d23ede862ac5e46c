"""planaria.retry: decorator (sync and async), loops, stops, hooks, stats, fallback, budget use.

Every test injects a fake clock and fake sleeps: nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from planaria.errors import (
    CircuitOpenError,
    NotPrimary,
    PeerError,
    Unavailable,
    UnknownOutcome,
    UsageError,
)
from planaria.retry import (
    DEFAULT_RETRY_ON,
    Jitter,
    RetryBudget,
    Retrying,
    RetryOptions,
    RetryPolicy,
    RetryState,
    StopReason,
    is_testing,
    retry,
    retry_stats,
    retry_testing,
    set_testing,
)


class FakeTime:
    """A clock that only moves when someone sleeps (or a test advances it)."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.sleeps: list[float] = []
        self.clock_reads = 0

    def clock(self) -> float:
        self.clock_reads += 1
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds

    def options(self, **overrides: Any) -> RetryOptions:
        options: dict[str, Any] = {
            "clock": self.clock,
            "sleep": self.sleep,
            "async_sleep": self.async_sleep,
            "rng": random.Random(7),
        }
        options.update(overrides)
        return options  # type: ignore[return-value]


class Script:
    """Plays a script: each call raises the next exception or returns the next value."""

    def __init__(self, *steps: object, time: FakeTime | None = None, cost_s: float = 0.0) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.raised: list[BaseException] = []
        self.time = time
        self.cost_s = cost_s

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        if self.time is not None:
            self.time.now_s += self.cost_s
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, BaseException):
            self.raised.append(step)
            raise step
        return step


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture(autouse=True)
def _testing_off() -> Iterator[None]:
    # The switch is process-wide: make sure no test leaks it into another.
    set_testing(False)
    yield
    set_testing(False)


# --------------------------------------------------------------------------- success path


def test_bare_decorator_returns_value_and_keeps_metadata() -> None:
    @retry
    def add(a: int, b: int = 1) -> int:
        """Adds."""
        return a + b

    assert add(2, b=3) == 5
    assert add.__name__ == "add"
    assert add.__doc__ == "Adds."
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)  # type: ignore[attr-defined]


def test_success_at_once_never_reads_clock_or_sleeps(fake: FakeTime) -> None:
    budget = RetryBudget(clock=fake.clock)
    reads_after_budget = fake.clock_reads
    target = Script("ok")
    wrapped = retry(**fake.options(budget=budget))(target)
    assert [wrapped() for _ in range(3)] == ["ok"] * 3
    assert fake.clock_reads == reads_after_budget
    assert fake.sleeps == []
    assert retry_stats(wrapped).calls == 3
    assert retry_stats(wrapped).retries == 0


def test_decorates_methods() -> None:
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        @retry(sleep=lambda _s: None)
        def bump(self, by: int) -> int:
            self.n += by
            if self.n < 3:
                raise ConnectionError("not yet")
            return self.n

    assert Counter().bump(1) == 3


# --------------------------------------------------------------------------- stops


def test_retries_until_success(fake: FakeTime) -> None:
    target = Script(ConnectionError("a"), TimeoutError("b"), "ok")
    wrapped = retry(**fake.options())(target)
    assert wrapped() == "ok"
    assert target.calls == 3
    assert len(fake.sleeps) == 2


def test_passes_arguments_on_every_attempt(fake: FakeTime) -> None:
    seen: list[tuple[object, ...]] = []

    @retry(**fake.options())
    def record(a: int, *, b: str) -> int:
        seen.append((a, b))
        if len(seen) < 2:
            raise ConnectionError
        return a

    assert record(4, b="x") == 4
    assert seen == [(4, "x"), (4, "x")]


def test_attempts_max_bounds_attempts_and_reraises_last_error(fake: FakeTime) -> None:
    errors = [ConnectionError(f"e{i}") for i in range(5)]
    target = Script(*errors, "never")
    wrapped = retry(**fake.options(attempts_max=3, timeout_s=None))(target)
    with pytest.raises(ConnectionError) as caught:
        wrapped()
    assert caught.value is errors[2]
    assert target.calls == 3
    assert len(fake.sleeps) == 2


def test_attempts_max_one_means_no_retry(fake: FakeTime) -> None:
    target = Script(ConnectionError("once"), "ok")
    wrapped = retry(**fake.options(attempts_max=1))(target)
    with pytest.raises(ConnectionError):
        wrapped()
    assert target.calls == 1
    assert fake.sleeps == []


def test_default_policy_bounds_attempts_and_time() -> None:
    policy = RetryPolicy()
    assert policy.attempts_max == 5
    assert policy.timeout_s == 30.0
    assert policy.jitter is Jitter.FULL
    assert policy.retry_on == DEFAULT_RETRY_ON


def test_deadline_stops_slow_attempts(fake: FakeTime) -> None:
    # Each attempt costs 0.3 s and waits are 0.1 s. The 1 s deadline counts from the first
    # failure: attempts fail at +0.0, +0.4, +0.8 (a 0.1 s wait still fits) and +1.2 (past it).
    target = Script(ConnectionError("slow"), time=fake, cost_s=0.3)
    gave_up: list[RetryState] = []
    options = fake.options(
        attempts_max=100,
        timeout_s=1.0,
        wait_initial_s=0.1,
        wait_multiplier=1.0,
        jitter="none",
        on_give_up=gave_up.append,
    )
    with pytest.raises(ConnectionError):
        retry(**options)(target)()
    assert target.calls == 4
    assert fake.sleeps == pytest.approx([0.1, 0.1, 0.1])
    assert gave_up[0].stop_reason is StopReason.TIMEOUT
    assert gave_up[0].elapsed_s == pytest.approx(1.2)


def test_wait_that_would_cross_deadline_is_not_taken(fake: FakeTime) -> None:
    target = Script(ConnectionError("down"))
    gave_up: list[RetryState] = []
    options = fake.options(
        attempts_max=10,
        timeout_s=1.0,
        wait_initial_s=0.6,
        wait_max_s=0.6,
        jitter="none",
        on_give_up=gave_up.append,
    )
    with pytest.raises(ConnectionError):
        retry(**options)(target)()
    # 0.6 fits; the next 0.6 would end at 1.2 > 1.0: give up without sleeping it.
    assert fake.sleeps == [0.6]
    assert target.calls == 2
    assert gave_up[0].stop_reason is StopReason.TIMEOUT
    assert gave_up[0].next_wait_s is None


def test_exponential_backoff_without_jitter(fake: FakeTime) -> None:
    options = fake.options(
        attempts_max=7, timeout_s=None, wait_initial_s=0.1, wait_max_s=1.0, jitter=Jitter.NONE
    )
    with pytest.raises(TimeoutError):
        retry(**options)(Script(TimeoutError()))()
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_many_attempts_do_not_overflow(fake: FakeTime) -> None:
    options = fake.options(
        attempts_max=3000, timeout_s=None, wait_max_s=2.0, wait_multiplier=10.0, jitter="none"
    )
    with pytest.raises(ConnectionError):
        retry(**options)(Script(ConnectionError()))()
    assert len(fake.sleeps) == 2999
    assert max(fake.sleeps) == 2.0


# --------------------------------------------------------------------------- what is retried


@pytest.mark.parametrize(
    "error",
    [ConnectionError(), ConnectionResetError(), TimeoutError(), PeerError(), NotPrimary()],
)
def test_default_retries_transient_errors(fake: FakeTime, error: Exception) -> None:
    target = Script(error, "ok")
    assert retry(**fake.options())(target)() == "ok"
    assert target.calls == 2


@pytest.mark.parametrize(
    "error", [ValueError("bad"), KeyError("k"), UsageError("x"), UnknownOutcome("maybe")]
)
def test_non_retryable_errors_propagate_at_once(fake: FakeTime, error: Exception) -> None:
    target = Script(error, "ok")
    wrapped = retry(**fake.options())(target)
    with pytest.raises(type(error)) as caught:
        wrapped()
    assert caught.value is error
    assert target.calls == 1
    assert fake.sleeps == []
    assert fake.clock_reads == 0
    assert retry_stats(wrapped).give_ups == 0


def test_non_retryable_error_after_retries_propagates(fake: FakeTime) -> None:
    target = Script(ConnectionError(), ValueError("fatal"), "ok")
    with pytest.raises(ValueError, match="fatal"):
        retry(**fake.options())(target)()
    assert target.calls == 2


def test_unknown_outcome_retried_only_when_opted_in(fake: FakeTime) -> None:
    target = Script(UnknownOutcome("timed out"), "ok")
    wrapped = retry(**fake.options(retry_on=(*DEFAULT_RETRY_ON, UnknownOutcome)))(target)
    assert wrapped() == "ok"
    assert target.calls == 2


def test_retry_on_single_type(fake: FakeTime) -> None:
    target = Script(KeyError("k"), "ok")
    assert retry(**fake.options(retry_on=KeyError))(target)() == "ok"
    with pytest.raises(ConnectionError):
        retry(**fake.options(retry_on=KeyError))(Script(ConnectionError(), "ok"))()


def test_retry_on_predicate(fake: FakeTime) -> None:
    def is_busy(error: Exception) -> bool:
        return isinstance(error, OSError) and "busy" in str(error)

    target = Script(OSError("busy"), OSError("busy"), "ok")
    assert retry(**fake.options(retry_on=is_busy))(target)() == "ok"
    assert target.calls == 3
    other = Script(OSError("gone"), "ok")
    with pytest.raises(OSError, match="gone"):
        retry(**fake.options(retry_on=is_busy))(other)()
    assert other.calls == 1


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_cancellation_never_retried_even_if_predicate_says_yes(
    fake: FakeTime, error: BaseException
) -> None:
    target = Script(error, "ok")
    wrapped = retry(**fake.options(retry_on=lambda _e: True))(target)
    with pytest.raises(type(error)):
        wrapped()
    assert target.calls == 1
    assert fake.sleeps == []


def test_cancellation_never_retried_by_base_exception_type(fake: FakeTime) -> None:
    target = Script(KeyboardInterrupt(), "ok")
    with pytest.raises(KeyboardInterrupt):
        retry(**fake.options(retry_on=BaseException))(target)()
    assert target.calls == 1


# --------------------------------------------------------------------------- results


def test_retry_on_result_until_accepted(fake: FakeTime) -> None:
    target = Script(None, None, "value")
    wrapped = retry(**fake.options(retry_on_result=lambda r: r is None))(target)
    assert wrapped() == "value"
    assert target.calls == 3


def test_retry_on_result_gives_up_with_last_result(fake: FakeTime) -> None:
    target = Script("busy-1", "busy-2", "busy-3")
    gave_up: list[RetryState] = []
    options = fake.options(
        attempts_max=3, retry_on_result=lambda r: r.startswith("busy"), on_give_up=gave_up.append
    )
    assert retry(**options)(target)() == "busy-3"
    assert gave_up[0].result == "busy-3"
    assert gave_up[0].exception is None


def test_result_and_exception_retries_mix(fake: FakeTime) -> None:
    target = Script(None, ConnectionError(), "ok")
    assert retry(**fake.options(retry_on_result=lambda r: r is None))(target)() == "ok"
    assert target.calls == 3


# --------------------------------------------------------------------------- give-up outcome


def _raise_here(error: Exception) -> None:
    raise error  # the frame a preserved traceback must end in


def test_give_up_reraises_original_with_original_traceback(fake: FakeTime) -> None:
    error = ConnectionError("lost")

    @retry(**fake.options(attempts_max=2))
    def call() -> None:
        _raise_here(error)

    with pytest.raises(ConnectionError) as caught:
        call()
    assert caught.value is error
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    innermost = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert innermost.name == "_raise_here"
    assert innermost.line == "raise error  # the frame a preserved traceback must end in"


def test_first_error_is_not_chained_to_later_ones(fake: FakeTime) -> None:
    first, last = ConnectionError("first"), ConnectionError("last")
    with pytest.raises(ConnectionError) as caught:
        retry(**fake.options(attempts_max=2))(Script(first, last))()
    assert caught.value is last
    assert caught.value.__context__ is None


def test_fallback_value(fake: FakeTime) -> None:
    wrapped = retry(**fake.options(attempts_max=2, fallback="stale"))(Script(ConnectionError()))
    assert wrapped() == "stale"
    assert retry_stats(wrapped).give_ups == 1


def test_fallback_callable_receives_last_exception(fake: FakeTime) -> None:
    errors = [ConnectionError("1"), ConnectionError("2")]
    seen: list[BaseException | None] = []

    def fallback(error: BaseException | None) -> str:
        seen.append(error)
        return "from-cache"

    wrapped = retry(**fake.options(attempts_max=2, fallback=fallback))(Script(*errors))
    assert wrapped() == "from-cache"
    assert seen == [errors[1]]


def test_fallback_after_result_give_up_receives_none(fake: FakeTime) -> None:
    seen: list[BaseException | None] = []

    def fallback(error: BaseException | None) -> str:
        seen.append(error)
        return "default"

    options = fake.options(attempts_max=2, retry_on_result=lambda r: r is None, fallback=fallback)
    assert retry(**options)(Script(None))() == "default"
    assert seen == [None]


def test_fallback_not_used_for_non_retryable_error(fake: FakeTime) -> None:
    with pytest.raises(ValueError):
        retry(**fake.options(fallback="x"))(Script(ValueError()))()


# --------------------------------------------------------------------------- pushback hints


def test_retry_after_ms_sets_minimum_wait(fake: FakeTime) -> None:
    target = Script(Unavailable("busy", retry_after_ms=2500), "ok")
    options = fake.options(wait_initial_s=0.01, wait_max_s=0.02, timeout_s=10.0)
    assert retry(**options)(target)() == "ok"
    assert fake.sleeps == [2.5]


def test_retry_after_ms_on_any_exception(fake: FakeTime) -> None:
    class Throttled(Exception):
        retry_after_ms = 700

    target = Script(Throttled(), "ok")
    assert retry(**fake.options(retry_on=Throttled, jitter="none"))(target)() == "ok"
    assert fake.sleeps == [0.7]


def test_retry_after_ms_shorter_than_backoff_keeps_backoff(fake: FakeTime) -> None:
    target = Script(PeerError(retry_after_ms=1), "ok")
    assert retry(**fake.options(wait_initial_s=0.5, jitter="none"))(target)() == "ok"
    assert fake.sleeps == [0.5]


@pytest.mark.parametrize("hint", [None, -5, float("nan"), "soon", True])
def test_unusable_retry_after_ms_is_ignored(fake: FakeTime, hint: object) -> None:
    error = ConnectionError()
    error.retry_after_ms = hint  # type: ignore[attr-defined]
    assert retry(**fake.options(wait_initial_s=0.25, jitter="none"))(Script(error, "ok"))() == "ok"
    assert fake.sleeps == [0.25]


def test_retry_after_ms_bounded_by_deadline(fake: FakeTime) -> None:
    target = Script(PeerError(retry_after_ms=60_000), "ok")
    gave_up: list[RetryState] = []
    with pytest.raises(PeerError):
        retry(**fake.options(timeout_s=5.0, on_give_up=gave_up.append))(target)()
    assert fake.sleeps == []
    assert gave_up[0].stop_reason is StopReason.TIMEOUT


# --------------------------------------------------------------------------- hooks and stats


def test_hooks_receive_attempt_records(fake: FakeTime) -> None:
    errors = [ConnectionError("1"), ConnectionError("2"), ConnectionError("3")]
    slept: list[RetryState] = []
    gave_up: list[RetryState] = []

    @retry(
        **fake.options(
            attempts_max=3,
            wait_initial_s=0.5,
            jitter="none",
            before_sleep=slept.append,
            on_give_up=gave_up.append,
        )
    )
    def flaky() -> None:
        fake.now_s += 0.25
        raise errors.pop(0)

    with pytest.raises(ConnectionError, match="3"):
        flaky()
    assert [s.attempt for s in slept] == [1, 2]
    assert [str(s.exception) for s in slept] == ["1", "2"]
    assert [s.next_wait_s for s in slept] == [0.5, 1.0]
    assert [s.elapsed_s for s in slept] == pytest.approx([0.0, 0.75])
    assert all(s.stop_reason is None for s in slept)
    assert all(s.name.endswith("flaky") for s in slept)
    assert len(gave_up) == 1
    last = gave_up[0]
    assert (last.attempt, last.next_wait_s, last.stop_reason) == (3, None, StopReason.ATTEMPTS)
    assert str(last.exception) == "3"
    assert last.elapsed_s == pytest.approx(0.5 + 0.25 + 1.0 + 0.25)
    with pytest.raises(AttributeError):
        last.attempt = 9  # type: ignore[misc]


def test_hook_error_propagates(fake: FakeTime) -> None:
    def broken(_state: RetryState) -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        retry(**fake.options(before_sleep=broken))(Script(ConnectionError(), "ok"))()


def test_stats_count_calls_retries_and_give_ups(fake: FakeTime) -> None:
    target = Script(ConnectionError(), "ok", ConnectionError(), ConnectionError(), "ok")
    wrapped = retry(**fake.options(attempts_max=2))(target)
    assert wrapped() == "ok"  # 2 attempts
    with pytest.raises(ConnectionError):
        wrapped()  # 2 attempts, give up
    assert wrapped() == "ok"  # 1 attempt
    stats = retry_stats(wrapped)
    assert (stats.calls, stats.attempts, stats.retries, stats.give_ups) == (3, 5, 2, 1)
    assert wrapped.retry_stats is stats  # type: ignore[attr-defined]
    assert "give_ups=1" in repr(stats)


def test_stats_are_per_function(fake: FakeTime) -> None:
    decorate = retry(**fake.options())
    first, second = decorate(Script("a")), decorate(Script("b"))
    first()
    first()
    second()
    assert (retry_stats(first).calls, retry_stats(second).calls) == (2, 1)


def test_stats_exact_under_threads() -> None:
    wrapped = retry(lambda: None)
    per_thread, threads_n = 2000, 4

    def hammer() -> None:
        for _ in range(per_thread):
            wrapped()

    threads = [threading.Thread(target=hammer) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert retry_stats(wrapped).calls == per_thread * threads_n
    assert retry_stats(wrapped).calls == per_thread * threads_n  # reading does not count


def test_retry_stats_of_plain_function_is_usage_error() -> None:
    with pytest.raises(UsageError):
        retry_stats(lambda: None)


# --------------------------------------------------------------------------- budget across calls


def test_budget_exhaustion_stops_retries_across_calls(fake: FakeTime) -> None:
    # No ratio, a floor of 0.2 retries/s over 10 s: two retries in the window, shared.
    budget = RetryBudget(ratio=0.0, min_retries_per_s=0.2, ttl_s=10.0, clock=fake.clock)
    gave_up: list[RetryState] = []
    options = fake.options(
        attempts_max=5, wait_initial_s=0.0, budget=budget, on_give_up=gave_up.append
    )
    first, second = Script(ConnectionError()), Script(ConnectionError())
    with pytest.raises(ConnectionError):
        retry(**options)(first)()
    with pytest.raises(ConnectionError):
        retry(**options)(second)()
    assert first.calls == 3  # two retries, then the budget is empty
    assert second.calls == 1
    assert [s.stop_reason for s in gave_up] == [StopReason.BUDGET, StopReason.BUDGET]
    fake.now_s += 11.0  # the withdrawals leave the window
    third = Script(ConnectionError(), "ok")
    assert retry(**options)(third)() == "ok"


def test_budget_ratio_follows_successful_traffic(fake: FakeTime) -> None:
    budget = RetryBudget(ratio=0.1, min_retries_per_s=0.0, ttl_s=10.0, clock=fake.clock)
    healthy = retry(budget=budget)(lambda: "ok")
    for _ in range(50):
        healthy()  # 50 requests deposit 5 retries
    failing = Script(ConnectionError())
    with pytest.raises(ConnectionError):
        retry(**fake.options(attempts_max=100, wait_initial_s=0.0, budget=budget))(failing)()
    # One more deposit from the failing call itself: 51 * 0.1 = 5.1 retries.
    assert failing.calls == 1 + 5


def test_budget_empty_uses_fallback(fake: FakeTime) -> None:
    budget = RetryBudget(ratio=0.0, min_retries_per_s=0.0, clock=fake.clock)
    target = Script(ConnectionError(), "ok")
    assert retry(**fake.options(budget=budget, fallback="cached"))(target)() == "cached"
    assert target.calls == 1


def test_a_breaker_refusal_takes_nothing_from_the_budget_and_waits_for_the_trial(
    fake: FakeTime,
) -> None:
    """Calls refused locally by an open breaker never reached the service: retrying them
    must not empty the budget (hundreds of gathered calls used to fail together), and the
    wait lasts until the breaker lets a trial through. A real failure still needs budget."""
    budget = RetryBudget(ratio=0.0, min_retries_per_s=0.0, clock=fake.clock)  # empty
    options = fake.options(
        budget=budget,
        wait_initial_s=0.001,
        jitter="none",
        retry_on=(ConnectionError, CircuitOpenError),  # as planaria's client retries them
    )
    refused = CircuitOpenError("node", 0.3)
    assert refused.retry_after_ms == pytest.approx(300.0)
    assert CircuitOpenError("node", 0.0).retry_after_ms is None  # a trial runs: backoff
    target = Script(refused, CircuitOpenError("node", 0.0), "ok")
    assert retry(**options)(target)() == "ok"
    assert fake.sleeps[0] == pytest.approx(0.3) and fake.sleeps[1] < 0.3
    with pytest.raises(ConnectionError):
        retry(**options)(Script(ConnectionError(), "ok"))()  # the budget is empty


# --------------------------------------------------------------------------- testing switch


def test_testing_switch_makes_waits_zero(fake: FakeTime) -> None:
    slept: list[RetryState] = []
    options = fake.options(wait_initial_s=1.0, jitter="none", before_sleep=slept.append)
    target = Script(PeerError(retry_after_ms=9000), ConnectionError(), "ok")
    with retry_testing():
        assert is_testing()
        assert retry(**options)(target)() == "ok"
    assert not is_testing()
    assert [s.next_wait_s for s in slept] == [0.0, 0.0]
    assert fake.sleeps == []  # a zero wait does not sleep at all
    retry(**options)(Script(ConnectionError(), "ok"))()
    assert fake.sleeps[-1] == 1.0


def test_set_testing_and_nested_context_restore() -> None:
    set_testing(True)
    with retry_testing(False):
        assert not is_testing()
    assert is_testing()
    set_testing(False)
    assert not is_testing()


def test_testing_switch_keeps_attempt_bound(fake: FakeTime) -> None:
    target = Script(ConnectionError())
    with retry_testing(), pytest.raises(ConnectionError):
        retry(**fake.options(attempts_max=4))(target)()
    assert target.calls == 4


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "options",
    [
        {"attempts_max": 0},
        {"attempts_max": -1},
        {"attempts_max": 2.5},
        {"attempts_max": True},
        {"timeout_s": 0},
        {"timeout_s": -1.0},
        {"timeout_s": float("inf")},
        {"wait_initial_s": -0.1},
        {"wait_max_s": -1},
        {"wait_initial_s": 2.0, "wait_max_s": 1.0},
        {"wait_multiplier": 0.5},
        {"wait_max_s": float("nan")},
        {"jitter": "random"},
        {"retry_on": "ConnectionError"},
        {"retry_on": (ConnectionError, "x")},
        {"retry_on_result": 3},
        {"before_sleep": "print"},
        {"on_give_up": 1},
        {"clock": 0},
        {"sleep": None},
        {"rng": object()},
        {"budget": 5},
    ],
)
def test_bad_arguments_fail_at_decoration(options: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        retry(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"ratio": -0.1},
        {"min_retries_per_s": -1},
        {"ttl_s": 0},
        {"ttl_s": float("inf")},
        {"clock": "now"},
    ],
)
def test_bad_budget_arguments(options: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        RetryBudget(**options)


def test_bad_targets() -> None:
    def generator() -> Iterator[int]:
        yield 1

    with pytest.raises(UsageError):
        retry(generator)
    with pytest.raises(UsageError):
        retry(3)  # type: ignore[call-overload]
    with pytest.raises(UsageError):
        retry(policy="fast")  # type: ignore[call-overload]


def test_policy_reuse_and_override(fake: FakeTime) -> None:
    base = RetryPolicy(**fake.options(attempts_max=2, jitter="equal"))
    assert base.jitter is Jitter.EQUAL
    target = Script(ConnectionError())
    with pytest.raises(ConnectionError):
        retry(policy=base, attempts_max=4)(target)()
    assert target.calls == 4
    wrapped = retry(policy=base)(Script(ConnectionError()))
    assert wrapped.retry_policy is base  # type: ignore[attr-defined]
    with pytest.raises(UsageError):
        retry(policy=base, attempts_max=0)


# --------------------------------------------------------------------------- async decorator


def test_async_wrapper_is_a_coroutine_function(fake: FakeTime) -> None:
    async def fetch() -> int:
        return 1

    wrapped = retry(**fake.options())(fetch)
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped()) == 1
    assert fake.clock_reads == 0
    assert fake.sleeps == []


def _async_script(script: Script) -> Callable[[], Any]:
    async def run() -> object:
        await asyncio.sleep(0)
        return script()

    return run


def test_async_retries_until_success(fake: FakeTime) -> None:
    script = Script(ConnectionError(), PeerError(retry_after_ms=300), "ok")
    wrapped = retry(**fake.options(wait_initial_s=0.1, jitter="none"))(_async_script(script))
    assert asyncio.run(wrapped()) == "ok"
    assert fake.sleeps == pytest.approx([0.1, 0.3])
    assert retry_stats(wrapped).retries == 2


def test_async_attempts_bound_reraises_original(fake: FakeTime) -> None:
    errors = [TimeoutError("1"), TimeoutError("2"), TimeoutError("3")]
    script = Script(*errors)
    wrapped = retry(**fake.options(attempts_max=3))(_async_script(script))
    with pytest.raises(TimeoutError) as caught:
        asyncio.run(wrapped())
    assert caught.value is errors[2]
    assert caught.value.__context__ is None
    assert script.calls == 3


def test_async_deadline(fake: FakeTime) -> None:
    script = Script(ConnectionError())
    options = fake.options(attempts_max=50, timeout_s=1.0, wait_initial_s=0.4, jitter="none")
    with pytest.raises(ConnectionError):
        asyncio.run(retry(**options)(_async_script(script))())
    # Waits 0.4 then 0.8 would end at 1.2 > 1.0.
    assert fake.sleeps == [0.4]


def test_async_non_retryable_propagates_at_once(fake: FakeTime) -> None:
    script = Script(ValueError("no"), "ok")
    with pytest.raises(ValueError):
        asyncio.run(retry(**fake.options())(_async_script(script))())
    assert script.calls == 1


def test_async_cancellation_never_retried(fake: FakeTime) -> None:
    script = Script(asyncio.CancelledError(), "ok")
    wrapped = retry(**fake.options(retry_on=lambda _e: True))(_async_script(script))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(wrapped())
    assert script.calls == 1


def test_async_task_cancelled_during_backoff_stops() -> None:
    calls = 0

    @retry(wait_initial_s=5.0, wait_max_s=5.0, jitter="none")
    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    async def main() -> None:
        task = asyncio.create_task(down())
        await asyncio.sleep(0.005)  # real but tiny: the task is now in its 5 s backoff
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert calls == 1


def test_async_result_retry_and_fallbacks(fake: FakeTime) -> None:
    script = Script(None, None, 7)
    options = fake.options(retry_on_result=lambda r: r is None)
    assert asyncio.run(retry(**options)(_async_script(script))()) == 7

    async def async_fallback(error: BaseException | None) -> str:
        await asyncio.sleep(0)
        return f"fallback after {type(error).__name__}"

    failing = retry(**fake.options(attempts_max=2, fallback=async_fallback))(
        _async_script(Script(ConnectionError()))
    )
    assert asyncio.run(failing()) == "fallback after ConnectionError"


def test_async_fallback_value(fake: FakeTime) -> None:
    wrapped = retry(**fake.options(attempts_max=2, fallback=-1))(
        _async_script(Script(ConnectionError()))
    )
    assert asyncio.run(wrapped()) == -1


# --------------------------------------------------------------------------- object form


def test_loop_retries_then_succeeds(fake: FakeTime) -> None:
    script = Script(ConnectionError(), ConnectionError(), "ok")
    retrying = Retrying(**fake.options(wait_initial_s=0.1, jitter="none"))
    results, numbers = [], []
    for attempt in retrying:
        with attempt:
            numbers.append(attempt.number)
            results.append(script())
    assert results == ["ok"]
    assert numbers == [1, 2, 3]
    assert fake.sleeps == pytest.approx([0.1, 0.2])
    assert (retrying.stats.calls, retrying.stats.retries) == (1, 2)


def test_loop_gives_up_with_original_error(fake: FakeTime) -> None:
    errors = [TimeoutError("1"), TimeoutError("2")]
    script = Script(*errors)
    with pytest.raises(TimeoutError) as caught:
        for attempt in Retrying(**fake.options(attempts_max=2)):
            with attempt:
                script()
    assert caught.value is errors[1]
    assert script.calls == 2


def test_loop_non_retryable_propagates_at_once(fake: FakeTime) -> None:
    script = Script(KeyError("k"), "ok")
    with pytest.raises(KeyError):
        for attempt in Retrying(**fake.options()):
            with attempt:
                script()
    assert script.calls == 1


def test_loop_never_retries_cancellation(fake: FakeTime) -> None:
    script = Script(KeyboardInterrupt(), "ok")
    with pytest.raises(KeyboardInterrupt):
        for attempt in Retrying(**fake.options(retry_on=lambda _e: True)):
            with attempt:
                script()
    assert script.calls == 1


def test_loop_uses_budget_and_counts_each_loop_as_a_call(fake: FakeTime) -> None:
    budget = RetryBudget(ratio=0.0, min_retries_per_s=0.1, ttl_s=10.0, clock=fake.clock)
    retrying = Retrying(**fake.options(budget=budget))
    script = Script(ConnectionError())
    for _ in range(2):
        with pytest.raises(ConnectionError):
            for attempt in retrying:
                with attempt:
                    script()
    assert script.calls == 3  # one retry in the budget, used by the first loop
    assert (retrying.stats.calls, retrying.stats.give_ups) == (2, 2)


def test_loop_attempt_must_be_used_as_context_manager(fake: FakeTime) -> None:
    iterator = iter(Retrying(**fake.options()))
    attempt = next(iterator)
    with pytest.raises(UsageError):
        next(iterator)
    with attempt:
        pass
    with pytest.raises(StopIteration):
        next(iterator)
    with pytest.raises(UsageError), attempt:
        pass


def test_loop_rejects_result_options() -> None:
    with pytest.raises(UsageError):
        Retrying(fallback=1)
    with pytest.raises(UsageError):
        Retrying(retry_on_result=lambda r: r is None)


def test_async_loop(fake: FakeTime) -> None:
    script = Script(PeerError(), PeerError(retry_after_ms=1500), "ok")
    retrying = Retrying(name="fetch", **fake.options(wait_initial_s=0.1, jitter="none"))
    slept: list[RetryState] = []

    async def main() -> list[object]:
        results = []
        async for attempt in Retrying(
            policy=retrying.policy, name="fetch", before_sleep=slept.append
        ):
            with attempt:
                await asyncio.sleep(0)
                results.append(script())
        return results

    assert asyncio.run(main()) == ["ok"]
    assert fake.sleeps == pytest.approx([0.1, 1.5])
    assert [s.name for s in slept] == ["fetch", "fetch"]


def test_async_loop_gives_up_on_deadline(fake: FakeTime) -> None:
    script = Script(ConnectionError())

    async def main() -> None:
        options = fake.options(attempts_max=50, timeout_s=1.0, wait_initial_s=0.3, jitter="none")
        async for attempt in Retrying(**options):
            with attempt:
                script()

    with pytest.raises(ConnectionError):
        asyncio.run(main())
    assert fake.sleeps == pytest.approx([0.3, 0.6])
