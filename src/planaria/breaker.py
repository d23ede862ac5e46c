"""Circuit breaker: stop calling a dependency that keeps failing, and probe it back to health.

A :class:`CircuitBreaker` has three states:

- ``closed``: calls go through; their outcomes fill a sliding window. Once the window holds at
  least ``calls_min`` calls and the failure rate reaches ``failure_rate_threshold`` (or the
  slow-call rate reaches ``slow_call_rate_threshold``), the breaker opens.
- ``open``: calls are refused at once with :class:`~planaria.errors.CircuitOpenError`, which
  carries ``remaining_s`` until the next trial. The open time starts at ``open_s`` and is
  multiplied by ``open_backoff`` on each consecutive re-open, up to ``open_max_s``; a close
  resets it.
- ``half_open``: up to ``half_open_calls`` trial calls go through; any further call is refused
  (``remaining_s == 0.0``: trials are in flight). The trials are judged with the same
  thresholds: the breaker re-opens as soon as the failures (or slow calls) among the trials make
  the threshold unavoidable, and closes once all trials are recorded below it.

The sliding window is count-based (the last ``window_size`` calls, the default) or time-based
(the calls of the last ``window_s`` seconds, kept in ``window_buckets`` buckets, so a call
leaves the window up to ``window_s / window_buckets`` late).

What counts as what:

- an ``Exception`` raised by the call is a failure, unless it is an instance of one of
  ``exclude``: those count as **successes**, because the dependency answered and the caller was
  at fault (a 404, a validation error). Excluded exceptions still propagate to the caller.
- a ``BaseException`` that is not an ``Exception`` (``asyncio.CancelledError``,
  ``KeyboardInterrupt``) says nothing about the dependency: it is **not recorded**, and a
  half-open trial slot it held is given back.
- a call is slow when it took at least ``slow_call_s`` (successful or not). Slow-call detection is
  off by default (``slow_call_s=None``), which also spares the clock reads on the closed path.

Concurrency: the breaker is thread-safe and never holds its lock while the protected call runs:
the lock is taken only to admit a call (not even that in the closed state: one attribute read)
and to record its outcome. Each admission is tied to the current *period* (one stay in one
state); an outcome that arrives after the breaker left that period is counted in
``stats.calls_stale`` and otherwise dropped, so a slow call admitted while closed can never be
mistaken for a half-open trial. The async forms hold no lock across an ``await``.

Listeners ``(breaker, old_state, new_state)`` run after every state change, in registration
order, in the thread that caused the change, after the lock is released (so they may read
``breaker.stats``). An exception in a listener is logged on the ``planaria.breaker`` logger with
its traceback and does not stop the other listeners nor change the breaker or the call's result.

Forms: ``breaker.call(fn, *args)``, ``await breaker.call_async(fn, *args)``, ``@breaker`` on a
sync or async function, ``with breaker:`` and ``async with breaker:`` (the exception leaving the
block is the outcome).
"""

from __future__ import annotations

import contextvars
import enum
import functools
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from planaria.errors import CircuitOpenError, InternalError, UsageError

__all__ = [
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "Listener",
]

_log = logging.getLogger("planaria.breaker")

P = ParamSpec("P")
R = TypeVar("R")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


Listener = Callable[["CircuitBreaker", BreakerState, BreakerState], object]


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A consistent snapshot of a breaker. ``*_total`` counters run since creation/``reset()``."""

    name: str
    state: BreakerState
    window_calls: int
    window_failures: int
    window_slow_calls: int
    failure_rate: float
    slow_call_rate: float
    open_remaining_s: float
    next_open_s: float
    calls_total: int
    successes_total: int
    failures_total: int
    excluded_total: int
    slow_calls_total: int
    refused_total: int
    calls_stale: int
    opens_total: int


class _Period:
    """One stay in one state; admissions carry it so late outcomes can be recognised."""

    __slots__ = ("closed", "state")

    def __init__(self, state: BreakerState) -> None:
        self.state = state
        self.closed = state is BreakerState.CLOSED


class _CountWindow:
    """The outcomes of the last ``size`` calls, with running totals (O(1) per call)."""

    __slots__ = ("_outcomes", "_pos", "calls", "failures", "size", "slow")

    # Outcome codes: bit 0 = failed, bit 1 = slow.
    def __init__(self, size: int) -> None:
        self.size = size
        self._outcomes = [0] * size
        self._pos = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def add(self, failed: bool, slow: bool, now: float) -> None:
        pos = self._pos
        if self.calls == self.size:
            old = self._outcomes[pos]
            if old:
                self.failures -= old & 1
                self.slow -= old >> 1
        else:
            self.calls += 1
        self._outcomes[pos] = failed | (slow << 1)
        self.failures += failed
        self.slow += slow
        self._pos = pos + 1 if pos + 1 < self.size else 0

    def add_success(self) -> None:
        pos = self._pos
        old = self._outcomes[pos]  # unused slots hold 0, so this is right before the wrap too
        if old:
            self._outcomes[pos] = 0
            self.failures -= old & 1
            self.slow -= old >> 1
        if self.calls < self.size:
            self.calls += 1
        self._pos = pos + 1 if pos + 1 < self.size else 0

    def advance(self, now: float) -> None:
        """Nothing ages out of a count window."""

    def clear(self) -> None:
        self._outcomes = [0] * self.size
        self._pos = 0
        self.calls = self.failures = self.slow = 0


class _TimeWindow:
    """The calls of the last ``window_s`` seconds in ``buckets`` buckets, with running totals."""

    __slots__ = (
        "_bucket_calls",
        "_bucket_failures",
        "_bucket_slow",
        "_buckets",
        "_newest",
        "_width_s",
        "calls",
        "failures",
        "slow",
    )

    def __init__(self, window_s: float, buckets: int) -> None:
        self._buckets = buckets
        self._width_s = window_s / buckets
        self._bucket_calls = [0] * buckets
        self._bucket_failures = [0] * buckets
        self._bucket_slow = [0] * buckets
        self._newest: int | None = None  # absolute index of the newest bucket in use
        self.calls = self.failures = self.slow = 0

    def advance(self, now: float) -> None:
        index = math.floor(now / self._width_s)
        newest = self._newest
        if newest is not None and index <= newest:
            return  # same bucket, or a clock that stepped back: keep filling the newest one
        if newest is None or index - newest >= self._buckets:
            self.clear()
        else:
            for absolute in range(newest + 1, index + 1):
                self._drop(absolute % self._buckets)
        self._newest = index

    def _drop(self, slot: int) -> None:
        self.calls -= self._bucket_calls[slot]
        self.failures -= self._bucket_failures[slot]
        self.slow -= self._bucket_slow[slot]
        self._bucket_calls[slot] = self._bucket_failures[slot] = self._bucket_slow[slot] = 0

    def add(self, failed: bool, slow: bool, now: float) -> None:
        self.advance(now)
        assert self._newest is not None
        slot = self._newest % self._buckets
        self._bucket_calls[slot] += 1
        self._bucket_failures[slot] += failed
        self._bucket_slow[slot] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def clear(self) -> None:
        for slot in range(self._buckets):
            self._bucket_calls[slot] = self._bucket_failures[slot] = self._bucket_slow[slot] = 0
        self._newest = None
        self.calls = self.failures = self.slow = 0


# What `with breaker:` entered, per thread / asyncio task: (breaker, period, start time).
_Entry = tuple["CircuitBreaker", _Period, float]
_ENTERED: contextvars.ContextVar[tuple[_Entry, ...]] = contextvars.ContextVar(
    "planaria_breaker_entered", default=()
)

_Transition = tuple[BreakerState, BreakerState]


class CircuitBreaker:
    """A circuit breaker (see the module docstring for the exact semantics)."""

    def __init__(
        self,
        name: str = "breaker",
        *,
        failure_rate_threshold: float = 0.5,
        window_size: int | None = None,
        window_s: float | None = None,
        window_buckets: int = 10,
        calls_min: int = 10,
        slow_call_s: float | None = None,
        slow_call_rate_threshold: float = 0.5,
        open_s: float = 1.0,
        open_backoff: float = 2.0,
        open_max_s: float = 60.0,
        half_open_calls: int = 3,
        exclude: Iterable[type[BaseException]] = (),
        listeners: Iterable[Listener] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_size is not None and window_s is not None:
            raise UsageError("give window_size (count window) or window_s (time window), not both")
        _require(0.0 < failure_rate_threshold <= 1.0, "failure_rate_threshold must be in (0, 1]")
        _require(
            0.0 < slow_call_rate_threshold <= 1.0, "slow_call_rate_threshold must be in (0, 1]"
        )
        _require(calls_min >= 1, "calls_min must be >= 1")
        _require(half_open_calls >= 1, "half_open_calls must be >= 1")
        _require(_positive(open_s), "open_s must be a positive number of seconds")
        _require(_positive(open_max_s) and open_max_s >= open_s, "open_max_s must be >= open_s")
        _require(open_backoff >= 1.0 and math.isfinite(open_backoff), "open_backoff must be >= 1")
        _require(
            slow_call_s is None or _positive(slow_call_s),
            "slow_call_s must be None or a positive number of seconds",
        )
        self._window: _CountWindow | _TimeWindow
        if window_s is not None:
            _require(_positive(window_s), "window_s must be a positive number of seconds")
            _require(window_buckets >= 1, "window_buckets must be >= 1")
            self._window = _TimeWindow(window_s, window_buckets)
        else:
            size = 20 if window_size is None else window_size
            _require(size >= 1, "window_size must be >= 1")
            _require(calls_min <= size, "calls_min must be <= window_size, or it can never trip")
            self._window = _CountWindow(size)
        excluded = tuple(exclude)
        for kind in excluded:
            _require(
                isinstance(kind, type) and issubclass(kind, BaseException),
                f"exclude must hold exception classes, not {kind!r}",
            )
        self.name = name
        self._failure_rate_threshold = failure_rate_threshold
        self._slow_call_rate_threshold = slow_call_rate_threshold
        self._calls_min = calls_min
        self._slow_call_s = slow_call_s
        self._open_s = open_s
        self._open_backoff = open_backoff
        self._open_max_s = open_max_s
        self._half_open_calls = half_open_calls
        self._exclude = excluded
        self._listeners: list[Listener] = list(listeners)
        self._clock = clock
        # The closed path needs the clock only to time slow calls or to age a time window.
        self._needs_clock = slow_call_s is not None or window_s is not None
        # The hot path: a success in the closed state with a count window and no timing.
        self._fast_window: _CountWindow | None = None
        if not self._needs_clock and isinstance(self._window, _CountWindow):
            self._fast_window = self._window

        self._lock = threading.Lock()
        self._period = _Period(BreakerState.CLOSED)
        self._open_until = 0.0  # clock time the open state ends (inf: held open by an operator)
        self._reopens = 0  # consecutive opens since the last close: the backoff exponent
        self._trials_admitted = 0
        self._trials_done = 0
        self._trial_failures = 0
        self._trial_slow = 0
        self._zero_totals()

    def _zero_totals(self) -> None:
        self._successes_total = 0
        self._failures_total = 0
        self._excluded_total = 0
        self._slow_total = 0
        self._refused_total = 0
        self._stale_total = 0
        self._opens_total = 0

    # ----------------------------------------------------------------- introspection

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose time is up reports (and becomes) half-open."""
        period = self._period
        if period.state is not BreakerState.OPEN:
            return period.state
        with self._lock:
            transitions = self._maybe_half_open(self._clock())
            state = self._period.state
        self._notify(transitions)
        return state

    @property
    def stats(self) -> BreakerStats:
        now = self._clock()
        with self._lock:
            window = self._window
            window.advance(now)
            state = self._period.state
            calls = window.calls
            return BreakerStats(
                name=self.name,
                state=state,
                window_calls=calls,
                window_failures=window.failures,
                window_slow_calls=window.slow,
                failure_rate=window.failures / calls if calls else 0.0,
                slow_call_rate=window.slow / calls if calls else 0.0,
                open_remaining_s=(
                    max(0.0, self._open_until - now) if state is BreakerState.OPEN else 0.0
                ),
                next_open_s=self._open_duration_s(),
                calls_total=self._successes_total + self._failures_total,
                successes_total=self._successes_total,
                failures_total=self._failures_total,
                excluded_total=self._excluded_total,
                slow_calls_total=self._slow_total,
                refused_total=self._refused_total,
                calls_stale=self._stale_total,
                opens_total=self._opens_total,
            )

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._period.state.value})"

    # ----------------------------------------------------------------- listeners

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            remaining = [known for known in self._listeners if known is not listener]
            if len(remaining) == len(self._listeners):
                raise UsageError(f"{listener!r} is not a listener of breaker {self.name!r}")
            self._listeners = remaining

    def _notify(self, transitions: list[_Transition] | None) -> None:
        if not transitions:
            return
        listeners = self._listeners  # replaced, never mutated: safe to iterate unlocked
        for old, new in transitions:
            for listener in listeners:
                try:
                    listener(self, old, new)
                except Exception:
                    _log.exception(
                        "listener %r of breaker %r failed on %s -> %s",
                        listener,
                        self.name,
                        old.value,
                        new.value,
                    )

    # ----------------------------------------------------------------- operator controls

    def open(self, duration_s: float | None = None) -> None:
        """Open now: for ``duration_s``, or until ``close()``/``reset()`` when it is None."""
        _require(
            duration_s is None or _positive(duration_s),
            "duration_s must be None or a positive number of seconds",
        )
        now = self._clock()
        with self._lock:
            old = self._period.state
            self._enter(BreakerState.OPEN)
            self._opens_total += 1
            self._open_until = math.inf if duration_s is None else now + duration_s
        if old is not BreakerState.OPEN:
            self._notify([(old, BreakerState.OPEN)])

    def close(self) -> None:
        """Close now: empty the window and reset the open backoff; totals are kept."""
        with self._lock:
            transitions = self._close()
        self._notify(transitions)

    def reset(self) -> None:
        """Back to the state of a new breaker: closed, empty window, totals zeroed."""
        with self._lock:
            transitions = self._close()
            self._zero_totals()
        self._notify(transitions)

    # ----------------------------------------------------------------- state machine (locked)

    def _enter(self, state: BreakerState) -> None:
        self._period = _Period(state)
        if state is BreakerState.HALF_OPEN:
            self._trials_admitted = self._trials_done = 0
            self._trial_failures = self._trial_slow = 0
        else:
            self._window.clear()  # a new closed stay starts fresh; an open one needs no data
            if state is BreakerState.CLOSED:
                self._reopens = 0

    def _close(self) -> list[_Transition]:
        old = self._period.state
        self._enter(BreakerState.CLOSED)
        return [(old, BreakerState.CLOSED)] if old is not BreakerState.CLOSED else []

    def _open_duration_s(self) -> float:
        return min(self._open_s * self._open_backoff**self._reopens, self._open_max_s)

    def _trip(self, now: float) -> _Transition:
        old = self._period.state
        self._open_until = now + self._open_duration_s()
        self._reopens += 1
        self._opens_total += 1
        self._enter(BreakerState.OPEN)
        return (old, BreakerState.OPEN)

    def _maybe_half_open(self, now: float) -> list[_Transition] | None:
        if self._period.state is BreakerState.OPEN and now >= self._open_until:
            self._enter(BreakerState.HALF_OPEN)
            return [(BreakerState.OPEN, BreakerState.HALF_OPEN)]
        return None

    # ----------------------------------------------------------------- admission and outcome

    def _admit_slow(self) -> _Period:
        """Admission outside the closed state (or racing with a change): under the lock."""
        now = self._clock()
        with self._lock:
            transitions = self._maybe_half_open(now)
            period = self._period
            refused_s: float | None = None
            if period.state is BreakerState.OPEN:
                refused_s = self._open_until - now
            elif period.state is BreakerState.HALF_OPEN:
                if self._trials_admitted < self._half_open_calls:
                    self._trials_admitted += 1
                else:
                    refused_s = 0.0
            if refused_s is not None:
                self._refused_total += 1
        self._notify(transitions)
        if refused_s is not None:
            raise CircuitOpenError(self.name, refused_s)
        return period

    def _admit(self) -> _Period:
        period = self._period  # one atomic read; a closed period admits without the lock
        if period.closed:
            return period
        return self._admit_slow()

    def _record_success(self, period: _Period, start: float) -> None:
        """Record a call that returned; the closed, clock-free case is the hot path."""
        window = self._fast_window
        if window is None or not period.closed:
            self._record(period, None, start)
            return
        transitions: list[_Transition] | None = None
        with self._lock:
            self._successes_total += 1
            if period is not self._period:
                self._stale_total += 1
                return
            window.add_success()
            if window.failures:  # a success lowers the rate, but may bring calls to calls_min
                transitions = self._check_trip(self._clock())
        if transitions:
            self._notify(transitions)

    def _record(self, period: _Period, error: BaseException | None, start: float) -> None:
        """Record one outcome. ``start`` is the admission time when the clock is needed."""
        failed = False
        if error is not None:
            if not isinstance(error, Exception):
                self._abandon(period)
                return
            failed = not isinstance(error, self._exclude)
        now = self._clock()
        slow = self._slow_call_s is not None and now - start >= self._slow_call_s
        transitions: list[_Transition] | None = None
        with self._lock:
            if failed:
                self._failures_total += 1
            else:
                self._successes_total += 1
                self._excluded_total += error is not None
            self._slow_total += slow
            if period is not self._period:
                self._stale_total += 1
            elif period.closed:
                window = self._window
                window.add(failed, slow, now)
                if window.failures or window.slow:
                    transitions = self._check_trip(now)
            elif period.state is BreakerState.HALF_OPEN:
                transitions = self._judge_trial(failed, slow, now)
            else:
                raise InternalError(f"breaker {self.name!r} recorded a call while open")
        if transitions:
            self._notify(transitions)

    def _check_trip(self, now: float) -> list[_Transition] | None:
        window = self._window
        calls = window.calls
        if calls >= self._calls_min and (
            window.failures >= self._failure_rate_threshold * calls
            or window.slow >= self._slow_call_rate_threshold * calls
        ):
            return [self._trip(now)]
        return None

    def _judge_trial(self, failed: bool, slow: bool, now: float) -> list[_Transition] | None:
        self._trials_done += 1
        self._trial_failures += failed
        self._trial_slow += slow
        trials = self._half_open_calls
        # Re-open as soon as the threshold is certain to be reached, whatever the rest do.
        if (
            self._trial_failures >= self._failure_rate_threshold * trials
            or self._trial_slow >= self._slow_call_rate_threshold * trials
        ):
            return [self._trip(now)]
        if self._trials_done >= trials:
            return self._close()
        return None

    def _abandon(self, period: _Period) -> None:
        """A call ended by cancellation/interrupt: record nothing, free its trial slot."""
        with self._lock:
            if period is self._period and period.state is BreakerState.HALF_OPEN:
                self._trials_admitted -= 1

    # ----------------------------------------------------------------- call forms

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` through the breaker; raise CircuitOpenError if refused."""
        period = self._period
        if not period.closed:
            period = self._admit_slow()
        start = self._clock() if self._needs_clock else 0.0
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._record(period, error, start)
            raise
        self._record_success(period, start)
        return result

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker; raise CircuitOpenError if refused."""
        period = self._period
        if not period.closed:
            period = self._admit_slow()
        start = self._clock() if self._needs_clock else 0.0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            self._record(period, error, start)
            raise
        self._record_success(period, start)
        return result

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a sync or async function; the wrapper of an async function is async."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.call_async(fn, *args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def __enter__(self) -> CircuitBreaker:
        period = self._admit()
        start = self._clock() if self._needs_clock else 0.0
        _ENTERED.set((*_ENTERED.get(), (self, period, start)))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entered = _ENTERED.get()
        if not entered or entered[-1][0] is not self:
            raise UsageError(f"breaker {self.name!r} exited a block it did not enter")
        _ENTERED.set(entered[:-1])
        _, period, start = entered[-1]
        self._record(period, error, start)

    async def __aenter__(self) -> CircuitBreaker:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)


def _positive(value: float) -> bool:
    return value > 0.0 and math.isfinite(value)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)
