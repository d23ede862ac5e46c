"""Failure detectors: a fixed timeout, and phi accrual (Hayashibara et al. 2004, as in Akka).

Both take the time as an argument (float milliseconds from any monotonic clock) and never read a
clock themselves, so the simulator can drive them and tests are deterministic. Both have the same
interface (:class:`FailureDetector`): ``heartbeat(now_ms)``, ``phi(now_ms)`` (the suspicion
level), ``is_available(now_ms)`` / ``suspect(now_ms)`` (``phi < threshold`` or not) and
``suspect_after_ms()`` (how long a silence after the last heartbeat makes the detector suspect).

Heartbeat times must not go backwards: a heartbeat, or a ``phi`` query, earlier than the last
heartbeat raises :class:`~planaria.errors.UsageError` (two heartbeats at the same time are
fine). Before the first heartbeat nothing is known and the peer counts as available (phi 0):
call ``heartbeat(now_ms)`` when monitoring starts if a peer that never speaks must be suspected.

Phi accrual
-----------
The detector keeps the last ``window_max`` inter-arrival times (seeded, as Akka does, with two
samples ``first_interval_ms * (1 ± 1/4)`` so it works from the first heartbeat) with their
running sum and sum of squares: O(1) per heartbeat (the sums are recomputed exactly once per
``window_max`` heartbeats so float error cannot accumulate). With ``mean`` and ``std`` of the
window, ``std`` raised to at least ``std_min_ms`` and the mean raised by ``acceptable_pause_ms``::

    y   = (silence_ms - (mean + acceptable_pause_ms)) / max(std, std_min_ms)
    phi = -log10(1 - F(y))

where ``F`` is the normal CDF in the **logistic approximation Akka uses**,
``F(y) ≈ 1 / (1 + exp(-y (1.5976 + 0.070566 y²)))`` (error < 1.4e-4), so thresholds carry over
from Akka and Cassandra. phi is computed in a numerically stable form that stays finite for
any silence. ``phi = 8`` means a 1e-8 chance that a live peer would have been this quiet.

Expected detection time with the defaults (threshold 8, std_min_ms 50, acceptable_pause_ms
100) and regular heartbeats every 100 ms: the measured std is ~0, so std = 50 ms and phi
reaches 8 at ``y = 5.226``, i.e. after **~461.3 ms of silence** since the last heartbeat
(100 + 100 + 5.226 * 50 = 461.3 ms; ``suspect_after_ms()`` computes it for the current
window). The seeds give the same figure from the first heartbeat on (their std is 25 ms, below
the minimum). phi stays below 1 for silences up to ~264 ms.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from planaria.errors import UsageError

__all__ = [
    "FailureDetector",
    "PhiAccrualDetector",
    "TimeoutDetector",
]

# Logistic approximation of the standard normal CDF (Bowling et al. 2009), as in Akka.
_LOGISTIC_A = 0.070566
_LOGISTIC_B = 1.5976
_LN10 = math.log(10.0)


class FailureDetector(Protocol):
    """What every detector offers; ``threshold`` is the phi at which it suspects."""

    @property
    def threshold(self) -> float: ...
    @property
    def last_heartbeat_ms(self) -> float | None: ...
    def heartbeat(self, now_ms: float) -> None: ...
    def phi(self, now_ms: float) -> float: ...
    def is_available(self, now_ms: float) -> bool: ...
    def suspect(self, now_ms: float) -> bool: ...
    def suspect_after_ms(self) -> float: ...


class _Heartbeats:
    """The last heartbeat time, with the checks both detectors share."""

    def __init__(self) -> None:
        self.last_ms: float | None = None

    def silence_ms(self, now_ms: float) -> float | None:
        """Time since the last heartbeat, or None before the first one."""
        _check_time(now_ms)
        last = self.last_ms
        if last is None:
            return None
        if now_ms < last:
            raise UsageError(f"time went backwards: {now_ms} ms is before the last heartbeat")
        return now_ms - last


class TimeoutDetector:
    """Suspect a peer once it has been silent for ``timeout_ms``.

    ``phi`` is the silence as a fraction of the timeout, so the threshold is 1.0.
    """

    threshold = 1.0

    def __init__(self, timeout_ms: float) -> None:
        if not _positive(timeout_ms):
            raise UsageError(f"timeout_ms must be a positive number of ms, got {timeout_ms!r}")
        self.timeout_ms = float(timeout_ms)
        self._beats = _Heartbeats()

    @property
    def last_heartbeat_ms(self) -> float | None:
        return self._beats.last_ms

    def heartbeat(self, now_ms: float) -> None:
        self._beats.silence_ms(now_ms)
        self._beats.last_ms = float(now_ms)

    def phi(self, now_ms: float) -> float:
        silence = self._beats.silence_ms(now_ms)
        return 0.0 if silence is None else silence / self.timeout_ms

    def is_available(self, now_ms: float) -> bool:
        return self.phi(now_ms) < self.threshold

    def suspect(self, now_ms: float) -> bool:
        return not self.is_available(now_ms)

    def suspect_after_ms(self) -> float:
        return self.timeout_ms


class PhiAccrualDetector:
    """Phi accrual failure detector; see the module docstring for the model and defaults."""

    def __init__(
        self,
        *,
        threshold: float = 8.0,
        window_max: int = 100,
        std_min_ms: float = 50.0,
        acceptable_pause_ms: float = 100.0,
        first_interval_ms: float = 100.0,
    ) -> None:
        if not _positive(threshold):
            raise UsageError(f"threshold must be a positive phi, got {threshold!r}")
        if isinstance(window_max, bool) or not isinstance(window_max, int) or window_max < 1:
            raise UsageError(f"window_max must be an int >= 1, got {window_max!r}")
        if not _positive(std_min_ms):
            raise UsageError(f"std_min_ms must be a positive number of ms, got {std_min_ms!r}")
        if not (math.isfinite(acceptable_pause_ms) and acceptable_pause_ms >= 0.0):
            raise UsageError(f"acceptable_pause_ms must be >= 0 ms, got {acceptable_pause_ms!r}")
        if not _positive(first_interval_ms):
            raise UsageError(
                f"first_interval_ms must be a positive number of ms, got {first_interval_ms!r}"
            )
        self._threshold = float(threshold)
        self.window_max = window_max
        self.std_min_ms = float(std_min_ms)
        self.acceptable_pause_ms = float(acceptable_pause_ms)
        self.first_interval_ms = float(first_interval_ms)
        self._beats = _Heartbeats()
        self._intervals: deque[float] = deque()
        self._sum = 0.0
        self._sum_sq = 0.0
        self._since_exact = 0  # intervals added since the sums were last recomputed exactly
        spread = first_interval_ms / 4.0
        self._add_interval(first_interval_ms - spread)
        self._add_interval(first_interval_ms + spread)

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def last_heartbeat_ms(self) -> float | None:
        return self._beats.last_ms

    @property
    def samples(self) -> int:
        """How many inter-arrival times the window holds (the two seeds included)."""
        return len(self._intervals)

    @property
    def mean_ms(self) -> float:
        return self._sum / len(self._intervals)

    @property
    def std_ms(self) -> float:
        """The window's standard deviation, before ``std_min_ms`` is applied."""
        mean = self.mean_ms
        return math.sqrt(max(0.0, self._sum_sq / len(self._intervals) - mean * mean))

    def _add_interval(self, interval_ms: float) -> None:
        intervals = self._intervals
        if len(intervals) == self.window_max:
            dropped = intervals.popleft()
            self._sum -= dropped
            self._sum_sq -= dropped * dropped
        intervals.append(interval_ms)
        self._since_exact += 1
        if self._since_exact >= self.window_max:
            self._sum = math.fsum(intervals)
            self._sum_sq = math.fsum(value * value for value in intervals)
            self._since_exact = 0
        else:
            self._sum += interval_ms
            self._sum_sq += interval_ms * interval_ms

    def heartbeat(self, now_ms: float) -> None:
        silence = self._beats.silence_ms(now_ms)
        if silence is not None:
            self._add_interval(silence)
        self._beats.last_ms = float(now_ms)

    def _expected_ms(self) -> tuple[float, float]:
        """(mean silence a live peer shows, its std): the normal model phi is computed from."""
        return self.mean_ms + self.acceptable_pause_ms, max(self.std_ms, self.std_min_ms)

    def phi(self, now_ms: float) -> float:
        silence = self._beats.silence_ms(now_ms)
        if silence is None:
            return 0.0
        mean, std = self._expected_ms()
        y = (silence - mean) / std
        z = y * (_LOGISTIC_B + _LOGISTIC_A * y * y)
        # -log10(1 - F(y)) = log10(1 + e^z), written so neither branch overflows.
        if z > 0.0:
            return (z + math.log1p(math.exp(-z))) / _LN10
        return math.log1p(math.exp(z)) / _LN10

    def is_available(self, now_ms: float) -> bool:
        return self.phi(now_ms) < self._threshold

    def suspect(self, now_ms: float) -> bool:
        return not self.is_available(now_ms)

    def suspect_after_ms(self) -> float:
        """The silence after the last heartbeat at which phi reaches the threshold, now."""
        mean, std = self._expected_ms()
        # log10(1 + e^z) = threshold  <=>  z = ln(10^threshold - 1)
        z = self._threshold * _LN10 + math.log1p(-(10.0**-self._threshold))
        # Solve a y^3 + b y - z = 0 (one real root, b > 0) by Cardano's formula.
        p = _LOGISTIC_B / _LOGISTIC_A
        half_q = -z / (2.0 * _LOGISTIC_A)
        root = math.sqrt(half_q * half_q + (p / 3.0) ** 3)
        y = math.cbrt(-half_q + root) + math.cbrt(-half_q - root)
        return mean + y * std


def _check_time(now_ms: float) -> None:
    if not isinstance(now_ms, int | float) or isinstance(now_ms, bool):
        raise UsageError(f"time must be a number of ms, got {now_ms!r}")
    if not math.isfinite(now_ms):
        raise UsageError(f"time must be finite, got {now_ms!r}")


def _positive(value: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0.0
    )
