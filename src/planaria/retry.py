"""Retries done safely: attempts and a deadline, backoff with jitter, budgets, fallbacks.

Decorate a function (sync or ``async def``) or drive an explicit loop::

    @retry                                   # safe defaults
    def fetch(key: str) -> bytes: ...

    @retry(attempts_max=3, timeout_s=2.0, retry_on_result=lambda r: r is None)
    async def lookup(key: str) -> bytes | None: ...

    for attempt in Retrying(attempts_max=3):
        with attempt:
            send()

    async for attempt in Retrying(timeout_s=5.0):
        with attempt:
            await send_async()

What is retried. By default only transient errors: ``DEFAULT_RETRY_ON`` = ``ConnectionError``,
``TimeoutError`` and ``planaria.errors.PeerError`` (the peer refused; the call certainly did
not take effect). ``planaria.errors.UnknownOutcome`` is *not* retried by default: a call whose
outcome is unknown may already have taken effect, and running it again is safe only when it
carries the same idempotent request id, so the server can deduplicate. Opt in explicitly when
that holds: ``retry_on=(*DEFAULT_RETRY_ON, UnknownOutcome)``. Cancellation is never retried
(``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``): only
``Exception`` subclasses are ever caught, whatever ``retry_on`` says.

When it stops. After ``attempts_max`` attempts (default 5), or when the next attempt could not
start before the deadline (default ``timeout_s=30.0``): a wait that would reach the deadline is
not taken, the call gives up instead. To keep a call that succeeds at once nearly free, the
clock is first read when the first attempt fails, so the deadline counts from the end of the
first failed attempt; a running attempt is never interrupted (give it its own timeout).

How long it waits. Exponential backoff: the k-th retry has the base wait
``min(wait_max_s, wait_initial_s * wait_multiplier ** (k - 1))``, jittered as in the AWS
Architecture Blog's "Exponential Backoff And Jitter": ``full`` (default) draws from
``[0, base]``, ``equal`` from ``[base / 2, base]``, ``decorrelated`` draws from
``[wait_initial_s, 3 * previous wait]`` capped at ``wait_max_s`` (AWS's factor 3; the
multiplier does not apply), ``none`` waits exactly ``base``. An exception carrying a server
pushback hint ``retry_after_ms`` (``PeerError`` has one) makes the wait at least that long,
still bounded by the deadline.

When it gives up, it re-raises the last exception itself (same object, original traceback, no
wrapper), or returns the last result after result-based retries, unless ``fallback`` is set: a
value, or a callable receiving the last exception (``None`` after result-based retries); an
``async`` callable fallback is awaited by an async function. (To fall back to a function object
itself, wrap it: ``fallback=lambda _error: handler``.) The fallback serves give-ups only: an
error that is not retryable propagates at once, untouched.

Retry budget. A ``RetryBudget`` shared by many calls caps retries at ``ratio`` of the requests
(plus a small floor) over a sliding ``ttl_s`` window, as Finagle's retry budget does: during an
outage clients stop multiplying the load. An empty budget makes the call give up. No budget is
used unless one is passed (``budget=``); share one per downstream service. A retry after a
``CircuitOpenError`` takes nothing from it: the breaker refused the call locally, nothing
reached the service, and the wait is at least until its next trial (its ``retry_after_ms``);
otherwise hundreds of calls gathered at once, refused together while a breaker is open,
emptied the budget and failed although the service was back within a second.

Hooks ``before_sleep`` and ``on_give_up`` receive a frozen ``RetryState``. Each decorated
function counts its calls, retries and give-ups in ``fn.retry_stats`` (``retry_stats(fn)`` for
type checkers).

Testing. ``set_testing(True)`` or ``with retry_testing():`` makes every wait zero, process-wide
(a zero wait does not call ``sleep`` at all); ``clock``, ``sleep``, ``async_sleep`` and ``rng``
can be injected instead for exact control.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, ParamSpec, Protocol, TypedDict, TypeVar, Unpack, cast, overload

from planaria.errors import CircuitOpenError, PeerError, UsageError

__all__ = [
    "DEFAULT_RETRY_ON",
    "NO_FALLBACK",
    "Attempt",
    "Jitter",
    "RandomLike",
    "RetryBudget",
    "RetryOptions",
    "RetryPolicy",
    "RetryState",
    "RetryStats",
    "Retrying",
    "StopReason",
    "is_testing",
    "retry",
    "retry_stats",
    "retry_testing",
    "set_testing",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_RETRY_ON: Final[tuple[type[Exception], ...]] = (ConnectionError, TimeoutError, PeerError)

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[Exception], bool]


class _NoFallback:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Final = _NoFallback()
"""The default ``fallback``: give up by re-raising (or returning the last result)."""


class Jitter(StrEnum):
    """How a backoff wait is randomized (AWS Architecture Blog definitions)."""

    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"
    NONE = "none"


class StopReason(StrEnum):
    """Why a call gave up on a retryable failure."""

    ATTEMPTS = "attempts_max"
    TIMEOUT = "timeout"
    BUDGET = "budget"


class RandomLike(Protocol):
    """The part of ``random.Random`` the backoff uses."""

    def uniform(self, a: float, b: float, /) -> float: ...


# --------------------------------------------------------------------------- testing switch


class _TestingSwitch:
    enabled: bool = False


_TESTING: Final = _TestingSwitch()


def set_testing(enabled: bool) -> None:
    """Make every retry wait zero (``True``) or real again (``False``), for the whole process."""
    _TESTING.enabled = bool(enabled)


def is_testing() -> bool:
    """Whether the process-wide testing switch is on."""
    return _TESTING.enabled


@contextmanager
def retry_testing(enabled: bool = True) -> Iterator[None]:
    """Within the block every retry wait is zero (process-wide); the old setting is restored."""
    previous = _TESTING.enabled
    _TESTING.enabled = bool(enabled)
    try:
        yield
    finally:
        _TESTING.enabled = previous


# --------------------------------------------------------------------------- counters


class _EventCounter:
    """Counts events with no lock on the hot path.

    ``increment`` is ``itertools.count.__next__``: one C call that the GIL makes atomic, so
    concurrent increments are never lost. Reading takes a lock and advances the counter once
    more, which is subtracted. (On a free-threaded build counts may then be approximate.)
    """

    __slots__ = ("_count", "_lock", "_reads", "increment")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.increment: Callable[[], int] = self._count.__next__
        self._lock = threading.Lock()
        self._reads = 0

    def value(self) -> int:
        with self._lock:
            current = next(self._count) - self._reads
            self._reads += 1
        return current


class RetryStats:
    """Counts of one decorated function (or one ``Retrying``), safe to read from any thread.

    ``calls`` counts calls (each makes one first attempt), ``retries`` the further attempts,
    ``give_ups`` the calls that stopped on a retryable failure. ``attempts = calls + retries``.
    """

    __slots__ = ("_calls", "_give_ups", "_retries")

    def __init__(self) -> None:
        self._calls = _EventCounter()
        self._retries = _EventCounter()
        self._give_ups = _EventCounter()

    @property
    def calls(self) -> int:
        return self._calls.value()

    @property
    def retries(self) -> int:
        return self._retries.value()

    @property
    def give_ups(self) -> int:
        return self._give_ups.value()

    @property
    def attempts(self) -> int:
        return self.calls + self.retries

    def __repr__(self) -> str:
        calls, retries, give_ups = self.calls, self.retries, self.give_ups
        return (
            f"RetryStats(calls={calls}, attempts={calls + retries}, "
            f"retries={retries}, give_ups={give_ups})"
        )


# --------------------------------------------------------------------------- budget

_BUDGET_SLOTS: Final = 10


class RetryBudget:
    """A retry budget shared across calls (Finagle's token bucket).

    Every request deposits, every retry withdraws; over the last ``ttl_s`` seconds at most
    ``ratio * requests + min_retries_per_s * ttl_s`` retries are allowed. An empty budget makes
    a call give up instead of retrying, so an outage does not multiply the load.

    ``deposit()`` runs on every call, so it is one lock-free integer increment and reads no
    clock. The deposits are placed in time when the budget is next consulted (on a retry):
    those made since the previous consultation are assumed to have arrived evenly in between,
    so after a long quiet spell only the share that falls inside the window is counted. The
    budget is therefore an estimate when traffic is bursty between failures; withdrawals take
    a lock and are exact.
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_retries_per_s: float = 10.0,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_number("ratio", ratio, minimum=0.0)
        _check_number("min_retries_per_s", min_retries_per_s, minimum=0.0)
        _check_number("ttl_s", ttl_s, minimum=0.0, allow_minimum=False)
        _check_callable("clock", clock)
        self.ratio = float(ratio)
        self.min_retries_per_s = float(min_retries_per_s)
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._requests = _EventCounter()
        self.deposit: Callable[[], object] = self._requests.increment
        """Record one request (call it once per logical call, not per retry)."""
        self._lock = threading.Lock()
        self._slot_s = self.ttl_s / _BUDGET_SLOTS
        self._deposits = [0.0] * _BUDGET_SLOTS
        self._withdrawals = [0] * _BUDGET_SLOTS
        self._rolled_s = clock()
        self._slot = self._slot_of(self._rolled_s)
        self._counted = 0

    def _slot_of(self, now_s: float) -> int:
        return math.floor(now_s / self._slot_s)

    def _roll(self) -> None:
        """Expire slots older than the window and place the deposits made since the last roll."""
        now_s = max(self._clock(), self._rolled_s)
        slot = self._slot_of(now_s)
        for expired in range(self._slot + 1, min(slot, self._slot + _BUDGET_SLOTS) + 1):
            self._deposits[expired % _BUDGET_SLOTS] = 0.0
            self._withdrawals[expired % _BUDGET_SLOTS] = 0
        self._slot = slot
        total = self._requests.value()
        new = total - self._counted
        self._counted = total
        if new:
            quiet_s = now_s - self._rolled_s
            # Evenly spread arrivals: only the share inside the window still counts.
            share = 1.0 if quiet_s <= self.ttl_s else self.ttl_s / quiet_s
            first = max(
                self._slot_of(max(self._rolled_s, now_s - self.ttl_s)), slot + 1 - _BUDGET_SLOTS
            )
            each = new * share / (slot - first + 1)
            for spread in range(first, slot + 1):
                self._deposits[spread % _BUDGET_SLOTS] += each
        self._rolled_s = now_s

    def _balance(self) -> float:
        reserve = self.min_retries_per_s * self.ttl_s
        return self.ratio * sum(self._deposits) + reserve - sum(self._withdrawals)

    def available(self) -> float:
        """How many retries the budget would allow right now."""
        with self._lock:
            self._roll()
            return max(self._balance(), 0.0)

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; ``False`` (and nothing taken) when it is empty."""
        with self._lock:
            self._roll()
            if self._balance() < 1.0:
                return False
            self._withdrawals[self._slot % _BUDGET_SLOTS] += 1
            return True

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_retries_per_s={self.min_retries_per_s}, "
            f"ttl_s={self.ttl_s})"
        )


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class RetryState:
    """What a hook sees: the attempt that just ended and what happens next.

    ``elapsed_s`` counts from the end of the first failed attempt. ``next_wait_s`` is the wait
    before the next attempt, ``None`` when giving up; ``stop_reason`` says why it gives up.
    """

    name: str
    attempt: int
    elapsed_s: float
    exception: BaseException | None
    result: Any
    next_wait_s: float | None
    stop_reason: StopReason | None


class RetryOptions(TypedDict, total=False):
    """The keyword arguments of ``retry``, ``Retrying`` and ``RetryPolicy``."""

    attempts_max: int
    timeout_s: float | None
    wait_initial_s: float
    wait_max_s: float
    wait_multiplier: float
    jitter: Jitter | str
    retry_on: RetryOn
    retry_on_result: Callable[[Any], bool] | None
    budget: RetryBudget | None
    fallback: Any
    before_sleep: Callable[[RetryState], object] | None
    on_give_up: Callable[[RetryState], object] | None
    clock: Callable[[], float]
    sleep: Callable[[float], object]
    async_sleep: Callable[[float], Awaitable[object]]
    rng: RandomLike


def _check_number(name: str, value: object, *, minimum: float, allow_minimum: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (value == minimum and not allow_minimum):
        bound = ">=" if allow_minimum else ">"
        raise UsageError(f"{name} must be {bound} {minimum}, got {value!r}")


def _check_callable(name: str, value: object) -> None:
    if not callable(value):
        raise UsageError(f"{name} must be callable, got {value!r}")


def _is_exception_type(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _retry_predicate(retry_on: object) -> Callable[[Exception], bool]:
    if _is_exception_type(retry_on) or (
        isinstance(retry_on, tuple) and all(_is_exception_type(kind) for kind in retry_on)
    ):
        kinds = cast(type[BaseException] | tuple[type[BaseException], ...], retry_on)
        return lambda exception: isinstance(exception, kinds)
    if isinstance(retry_on, tuple) or not callable(retry_on):
        raise UsageError(
            f"retry_on must be an exception type, a tuple of them, or a predicate; got {retry_on!r}"
        )
    return cast(Callable[[Exception], bool], retry_on)


_DEFAULT_RNG: Final = random.Random()


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """A validated retry configuration; ``retry(...)`` and ``Retrying(...)`` build one.

    Invalid settings raise ``UsageError`` here, that is when decorating.
    """

    attempts_max: int = 5
    timeout_s: float | None = 30.0
    wait_initial_s: float = 0.1
    wait_max_s: float = 5.0
    wait_multiplier: float = 2.0
    jitter: Jitter | str = Jitter.FULL
    retry_on: RetryOn = DEFAULT_RETRY_ON
    retry_on_result: Callable[[Any], bool] | None = None
    budget: RetryBudget | None = None
    fallback: Any = NO_FALLBACK
    before_sleep: Callable[[RetryState], object] | None = None
    on_give_up: Callable[[RetryState], object] | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] = time.sleep
    async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    rng: RandomLike = _DEFAULT_RNG
    is_retryable: Callable[[Exception], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.attempts_max, bool)
            or not isinstance(self.attempts_max, int)
            or self.attempts_max < 1
        ):
            raise UsageError(f"attempts_max must be an int >= 1, got {self.attempts_max!r}")
        if self.timeout_s is not None:
            _check_number("timeout_s", self.timeout_s, minimum=0.0, allow_minimum=False)
        _check_number("wait_initial_s", self.wait_initial_s, minimum=0.0)
        _check_number("wait_max_s", self.wait_max_s, minimum=0.0)
        _check_number("wait_multiplier", self.wait_multiplier, minimum=1.0)
        if self.wait_initial_s > self.wait_max_s:
            raise UsageError(
                f"wait_initial_s ({self.wait_initial_s}) must not exceed "
                f"wait_max_s ({self.wait_max_s})"
            )
        try:
            object.__setattr__(self, "jitter", Jitter(self.jitter))
        except ValueError:
            kinds = ", ".join(repr(kind.value) for kind in Jitter)
            raise UsageError(f"jitter must be one of {kinds}, got {self.jitter!r}") from None
        object.__setattr__(self, "is_retryable", _retry_predicate(self.retry_on))
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise UsageError(f"budget must be a RetryBudget or None, got {self.budget!r}")
        for name in ("retry_on_result", "before_sleep", "on_give_up"):
            if getattr(self, name) is not None:
                _check_callable(name, getattr(self, name))
        for name in ("clock", "sleep", "async_sleep"):
            _check_callable(name, getattr(self, name))
        if not callable(getattr(self.rng, "uniform", None)):
            raise UsageError(f"rng must have a uniform(a, b) method, got {self.rng!r}")


def _make_policy(policy: RetryPolicy | None, options: RetryOptions) -> RetryPolicy:
    if policy is None:
        return RetryPolicy(**options)
    if not isinstance(policy, RetryPolicy):
        raise UsageError(f"policy must be a RetryPolicy, got {policy!r}")
    return replace(policy, **options) if options else policy


# --------------------------------------------------------------------------- one call's retries


def _retry_after_s(exception: BaseException | None) -> float | None:
    """The server's pushback hint in seconds, if the exception carries a usable one."""
    hint = getattr(exception, "retry_after_ms", None)
    if isinstance(hint, bool) or not isinstance(hint, int | float):
        return None
    if not math.isfinite(hint) or hint <= 0:
        return None
    return hint / 1000.0


class _Run:
    """One call from its first failure on: attempt count, deadline, backoff state.

    Created only after a failure, so a call that succeeds at once never pays for it.
    """

    __slots__ = (
        "_base_s",
        "_deadline_s",
        "_name",
        "_policy",
        "_previous_s",
        "_started_s",
        "_stats",
        "attempt",
    )

    def __init__(self, policy: RetryPolicy, stats: RetryStats, name: str) -> None:
        self._policy = policy
        self._stats = stats
        self._name = name
        self.attempt = 1
        self._started_s = policy.clock()
        timeout_s = policy.timeout_s
        self._deadline_s = None if timeout_s is None else self._started_s + timeout_s
        self._base_s = policy.wait_initial_s
        self._previous_s = policy.wait_initial_s

    def _backoff_s(self) -> float:
        policy = self._policy
        base_s = self._base_s
        # Grows step by step and stops at the cap, so no power can overflow.
        self._base_s = min(policy.wait_max_s, base_s * policy.wait_multiplier)
        jitter = policy.jitter
        if jitter is Jitter.FULL:
            low_s, high_s = 0.0, base_s
        elif jitter is Jitter.EQUAL:
            low_s, high_s = base_s / 2, base_s
        elif jitter is Jitter.DECORRELATED:
            low_s = policy.wait_initial_s
            high_s = min(policy.wait_max_s, max(low_s, self._previous_s * 3))
        else:
            return base_s
        # uniform() may round one ulp past its bounds; clamp so the bounds are exact.
        wait_s = min(max(policy.rng.uniform(low_s, high_s), low_s), high_s)
        self._previous_s = wait_s
        return wait_s

    def after_failure(self, exception: BaseException | None, result: object) -> float | None:
        """Decide after a retryable failure: the wait before the next attempt, or ``None``."""
        policy = self._policy
        now_s = policy.clock()
        reason: StopReason | None = None
        wait_s = 0.0
        if self.attempt >= policy.attempts_max:
            reason = StopReason.ATTEMPTS
        else:
            if not _TESTING.enabled:
                wait_s = self._backoff_s()
                hint_s = _retry_after_s(exception)
                if hint_s is not None:
                    wait_s = max(wait_s, hint_s)
            if self._deadline_s is not None and now_s + wait_s >= self._deadline_s:
                reason = StopReason.TIMEOUT
            elif (
                policy.budget is not None
                and not isinstance(exception, CircuitOpenError)  # refused locally: see module
                and not policy.budget.try_withdraw()
            ):
                reason = StopReason.BUDGET
        state = RetryState(
            name=self._name,
            attempt=self.attempt,
            elapsed_s=now_s - self._started_s,
            exception=exception,
            result=result,
            next_wait_s=None if reason is not None else wait_s,
            stop_reason=reason,
        )
        if reason is not None:
            self._stats._give_ups.increment()
            if policy.on_give_up is not None:
                policy.on_give_up(state)
            return None
        self._stats._retries.increment()
        if policy.before_sleep is not None:
            policy.before_sleep(state)
        self.attempt += 1
        return wait_s


def _give_up(policy: RetryPolicy, exception: Exception | None, result: object) -> Any:
    fallback = policy.fallback
    if fallback is not NO_FALLBACK:
        return fallback(exception) if callable(fallback) else fallback
    if exception is not None:
        # The caller's own exception object with its traceback: no wrapper, no chaining.
        raise exception
    return result


def _retry_sync(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    run: _Run,
    *,
    exception: Exception | None,
    result: Any,
) -> Any:
    policy = run._policy
    is_retryable = policy.is_retryable
    retry_on_result = policy.retry_on_result
    while True:
        wait_s = run.after_failure(exception, result)
        if wait_s is None:
            return _give_up(policy, exception, result)
        if wait_s > 0:
            policy.sleep(wait_s)
        try:
            result = fn(*args, **kwargs)
        except Exception as error:
            if not is_retryable(error):
                raise
            exception, result = error, None
            continue
        if retry_on_result is None or not retry_on_result(result):
            return result
        exception = None


async def _retry_async(
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    run: _Run,
    *,
    exception: Exception | None,
    result: Any,
) -> Any:
    policy = run._policy
    is_retryable = policy.is_retryable
    retry_on_result = policy.retry_on_result
    while True:
        wait_s = run.after_failure(exception, result)
        if wait_s is None:
            value = _give_up(policy, exception, result)
            if callable(policy.fallback) and inspect.isawaitable(value):
                value = await value
            return value
        if wait_s > 0:
            await policy.async_sleep(wait_s)
        try:
            result = await fn(*args, **kwargs)
        except Exception as error:
            if not is_retryable(error):
                raise
            exception, result = error, None
            continue
        if retry_on_result is None or not retry_on_result(result):
            return result
        exception = None


# --------------------------------------------------------------------------- decorator


def _decorate(fn: Callable[P, R], policy: RetryPolicy) -> Callable[P, R]:
    if not callable(fn):
        raise UsageError(f"retry decorates a callable, got {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise UsageError("retry cannot decorate a generator function: its body runs later")
    stats = RetryStats()
    name = getattr(fn, "__qualname__", None) or repr(fn)
    count_call = stats._calls.increment
    deposit = None if policy.budget is None else policy.budget.deposit
    is_retryable = policy.is_retryable
    retry_on_result = policy.retry_on_result
    # The first attempt is a bare call; everything else happens only after a failure.
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(fn):
        async_fn = cast(Callable[..., Awaitable[Any]], fn)

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            count_call()
            if deposit is not None:
                deposit()
            try:
                result = await async_fn(*args, **kwargs)
            except Exception as error:
                if not is_retryable(error):
                    raise
                exception: Exception | None = error
                result = None
            else:
                if retry_on_result is None or not retry_on_result(result):
                    return result
                exception = None
            run = _Run(policy, stats, name)
            return await _retry_async(
                async_fn, args, kwargs, run, exception=exception, result=result
            )

        wrapper = async_wrapper
    else:
        sync_fn = cast(Callable[..., Any], fn)

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            count_call()
            if deposit is not None:
                deposit()
            try:
                result = sync_fn(*args, **kwargs)
            except Exception as error:
                if not is_retryable(error):
                    raise
                exception: Exception | None = error
                result = None
            else:
                if retry_on_result is None or not retry_on_result(result):
                    return result
                exception = None
            run = _Run(policy, stats, name)
            return _retry_sync(sync_fn, args, kwargs, run, exception=exception, result=result)

        wrapper = sync_wrapper
    functools.update_wrapper(wrapper, fn)
    wrapper.__dict__.update(retry_stats=stats, retry_policy=policy)
    return cast(Callable[P, R], wrapper)


@overload
def retry(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retry(
    fn: None = None, /, *, policy: RetryPolicy | None = None, **options: Unpack[RetryOptions]
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retry(
    fn: Callable[P, R] | None = None,
    /,
    *,
    policy: RetryPolicy | None = None,
    **options: Unpack[RetryOptions],
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry a sync or ``async def`` function: ``@retry`` or ``@retry(attempts_max=3, ...)``.

    Options are ``RetryPolicy``'s fields (start from ``policy=`` if given). The decorated
    function keeps its signature and gains ``retry_stats`` (a ``RetryStats``; also
    ``retry_stats(fn)``) and ``retry_policy``. Bad options raise ``UsageError`` right here.
    """
    resolved = _make_policy(policy, options)
    if fn is None:
        return lambda target: _decorate(target, resolved)
    return _decorate(fn, resolved)


def retry_stats(fn: Callable[..., Any]) -> RetryStats:
    """The ``RetryStats`` of a function decorated with ``retry`` (typed access)."""
    stats = getattr(fn, "retry_stats", None)
    if not isinstance(stats, RetryStats):
        raise UsageError(f"{fn!r} is not decorated with planaria.retry.retry")
    return stats


# --------------------------------------------------------------------------- explicit loops


class _Outcome(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRY = "retry"
    DONE = "done"


class Attempt:
    """One attempt of a ``Retrying`` loop; use it as ``with attempt:`` around the work.

    A retryable exception leaving the block is swallowed and the loop sleeps and tries again;
    on give-up, or for any other exception, it propagates unchanged. A block that completes
    ends the loop.
    """

    __slots__ = ("_loop", "_outcome", "_wait_s", "number")

    def __init__(self, loop: _AttemptLoop, number: int) -> None:
        self._loop = loop
        self.number = number
        self._outcome = _Outcome.PENDING
        self._wait_s = 0.0

    def __enter__(self) -> Attempt:
        if self._outcome is not _Outcome.PENDING:
            raise UsageError("an attempt can be entered only once")
        self._outcome = _Outcome.RUNNING
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._loop._finish(self, exc)

    def __repr__(self) -> str:
        return f"<Attempt {self.number} {self._outcome.value}>"


class _AttemptLoop:
    """One iteration of a ``Retrying`` object: one logical call."""

    __slots__ = ("_attempt", "_retrying", "_run")

    def __init__(self, retrying: Retrying) -> None:
        self._retrying = retrying
        self._attempt: Attempt | None = None
        self._run: _Run | None = None
        retrying.stats._calls.increment()
        if retrying.policy.budget is not None:
            retrying.policy.budget.deposit()

    def _step(self) -> tuple[Attempt | None, float]:
        previous = self._attempt
        if previous is None:
            self._attempt = Attempt(self, 1)
            return self._attempt, 0.0
        if previous._outcome in (_Outcome.PENDING, _Outcome.RUNNING):
            raise UsageError(
                "use each attempt as `with attempt: ...` and let it finish before the next one"
            )
        if previous._outcome is _Outcome.DONE:
            return None, 0.0
        self._attempt = Attempt(self, previous.number + 1)
        return self._attempt, previous._wait_s

    def _finish(self, attempt: Attempt, exception: BaseException | None) -> bool:
        attempt._outcome = _Outcome.DONE
        policy = self._retrying.policy
        if not isinstance(exception, Exception) or not policy.is_retryable(exception):
            return False
        if self._run is None:
            self._run = _Run(policy, self._retrying.stats, self._retrying.name)
        wait_s = self._run.after_failure(exception, None)
        if wait_s is None:
            return False
        attempt._wait_s = wait_s
        attempt._outcome = _Outcome.RETRY
        return True

    def __iter__(self) -> Iterator[Attempt]:
        return self

    def __next__(self) -> Attempt:
        attempt, wait_s = self._step()
        if attempt is None:
            raise StopIteration
        if wait_s > 0:
            self._retrying.policy.sleep(wait_s)
        return attempt

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return self

    async def __anext__(self) -> Attempt:
        attempt, wait_s = self._step()
        if attempt is None:
            raise StopAsyncIteration
        if wait_s > 0:
            await self._retrying.policy.async_sleep(wait_s)
        return attempt


class Retrying:
    """The object form, for explicit loops; each ``for``/``async for`` is one logical call::

        for attempt in Retrying(attempts_max=3):
            with attempt:
                do_work()

    Takes the options of ``retry`` except ``retry_on_result`` and ``fallback`` (a loop has no
    return value to check or replace). ``stats`` counts over all loops of this object.
    """

    __slots__ = ("name", "policy", "stats")

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        name: str = "Retrying",
        **options: Unpack[RetryOptions],
    ) -> None:
        resolved = _make_policy(policy, options)
        if resolved.retry_on_result is not None or resolved.fallback is not NO_FALLBACK:
            raise UsageError("Retrying loops take no retry_on_result or fallback; use @retry")
        self.policy = resolved
        self.name = name
        self.stats = RetryStats()

    def __iter__(self) -> Iterator[Attempt]:
        return _AttemptLoop(self)

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return _AttemptLoop(self)

    def __repr__(self) -> str:
        return f"Retrying({self.policy!r}, name={self.name!r})"
