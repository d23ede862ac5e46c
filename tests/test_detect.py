"""Failure detectors: phi accrual and fixed timeout, driven by explicit times (no clock)."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.detect import FailureDetector, PhiAccrualDetector, TimeoutDetector
from planaria.errors import UsageError

# The figure the module docstring promises: defaults, heartbeats every 100 ms.
DOCUMENTED_DETECTION_MS = 461.3


def reference_phi(silence_ms: float, mean_ms: float, std_ms: float) -> float:
    """Akka's formula written out directly (its two branches), for moderate silences."""
    y = (silence_ms - mean_ms) / std_ms
    e = math.exp(-y * (1.5976 + 0.070566 * y * y))
    if silence_ms > mean_ms:
        return -math.log10(e / (1.0 + e))
    return -math.log10(1.0 - 1.0 / (1.0 + e))


def crossing_ms(threshold: float, mean_ms: float, std_ms: float) -> float:
    """The silence at which reference_phi reaches threshold, by bisection."""
    low, high = mean_ms, mean_ms + 20 * std_ms
    for _ in range(200):
        mid = (low + high) / 2
        if reference_phi(mid, mean_ms, std_ms) < threshold:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def regular(detector: FailureDetector, interval_ms: float, beats: int) -> float:
    """Feed ``beats`` heartbeats ``interval_ms`` apart from t=0; return the last one's time."""
    now = 0.0
    for i in range(beats):
        now = i * interval_ms
        detector.heartbeat(now)
    return now


def test_unknown_peer_is_available_until_its_first_heartbeat() -> None:
    detector = PhiAccrualDetector()
    assert detector.phi(1e9) == 0.0
    assert detector.is_available(1e9)
    assert detector.last_heartbeat_ms is None


def test_phi_grows_with_silence() -> None:
    detector = PhiAccrualDetector()
    last = regular(detector, 100.0, 50)
    values = [detector.phi(last + silence) for silence in range(0, 3000, 10)]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert values[0] < 0.01
    assert math.isfinite(detector.phi(last + 1e12))
    assert detector.phi(last + 1e12) > 1e6


def test_regular_heartbeats_keep_phi_low() -> None:
    detector = PhiAccrualDetector()
    now = 0.0
    for _ in range(500):
        detector.heartbeat(now)
        now += 100.0
        assert detector.phi(now) < 0.05  # queried just before the next heartbeat
    assert detector.mean_ms == pytest.approx(100.0)
    assert detector.std_ms == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("low_ms", "high_ms"), [(60.0, 140.0), (20.0, 300.0)])
def test_jittery_heartbeats_are_tolerated(low_ms: float, high_ms: float) -> None:
    rng = random.Random(7)
    detector = PhiAccrualDetector()
    now = 0.0
    detector.heartbeat(now)
    worst = 0.0
    for _ in range(2000):
        now += rng.uniform(low_ms, high_ms)
        worst = max(worst, detector.phi(now))
        detector.heartbeat(now)
    assert worst < detector.threshold / 2


def test_documented_detection_time_holds() -> None:
    detector = PhiAccrualDetector()
    last = regular(detector, 100.0, 200)
    # Independent computation: std 0 -> std_min 50; mean 100 + pause 100.
    expected = crossing_ms(8.0, 200.0, 50.0)
    assert abs(expected - DOCUMENTED_DETECTION_MS) < 0.1
    assert detector.is_available(last + expected - 0.5)
    assert detector.suspect(last + expected + 0.5)
    assert detector.suspect_after_ms() == pytest.approx(expected, abs=1e-6)


def test_detection_time_from_the_first_heartbeat() -> None:
    detector = PhiAccrualDetector()
    detector.heartbeat(5000.0)
    assert detector.samples == 2  # the bootstrap seeds only
    assert detector.is_available(5000.0 + DOCUMENTED_DETECTION_MS - 0.5)
    assert detector.suspect(5000.0 + DOCUMENTED_DETECTION_MS + 0.5)


def test_detection_time_adapts_to_the_heartbeat_interval() -> None:
    detector = PhiAccrualDetector(window_max=50)
    last = regular(detector, 1000.0, 100)  # the seeds have slid out
    expected = crossing_ms(8.0, 1100.0, 50.0)
    assert detector.suspect_after_ms() == pytest.approx(expected, abs=1e-6)
    assert detector.is_available(last + expected - 0.5)
    assert detector.suspect(last + expected + 0.5)


@settings(max_examples=60, deadline=None)
@given(
    intervals=st.lists(st.floats(1.0, 5000.0), min_size=1, max_size=40),
    window_max=st.integers(1, 12),
    silence=st.floats(0.0, 20000.0),
)
def test_phi_matches_akka_formula_over_the_last_window(
    intervals: list[float], window_max: int, silence: float
) -> None:
    detector = PhiAccrualDetector(window_max=window_max, std_min_ms=10.0, acceptable_pause_ms=30.0)
    now = 0.0
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    window = ([75.0, 125.0, *intervals])[-window_max:]
    assert detector.samples == len(window)
    assert detector.mean_ms == pytest.approx(statistics.fmean(window), rel=1e-9)
    # Running sums of squares cancel: the variance is exact up to float error of the
    # largest square seen (far below std_min_ms**2).
    scale = max(125.0, *intervals) ** 2
    assert detector.std_ms**2 == pytest.approx(
        statistics.pvariance(window), rel=1e-6, abs=1e-12 * scale
    )
    mean = statistics.fmean(window) + 30.0
    std = max(statistics.pstdev(window), 10.0)
    if abs(silence - mean) / std < 6:  # where the direct formula is still precise
        expected = reference_phi(silence, mean, std)
        assert detector.phi(now + silence) == pytest.approx(expected, rel=1e-6, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(threshold=st.floats(0.1, 16.0), interval=st.floats(10.0, 2000.0))
def test_suspect_after_is_where_phi_crosses_the_threshold(
    threshold: float, interval: float
) -> None:
    detector = PhiAccrualDetector(threshold=threshold)
    last = regular(detector, interval, 5)
    crossing = detector.suspect_after_ms()
    assert detector.phi(last + crossing) == pytest.approx(threshold, rel=1e-6)
    assert detector.is_available(last + crossing - 1e-3 * detector.std_min_ms)
    assert detector.suspect(last + crossing + 1e-3 * detector.std_min_ms)


def test_running_sums_stay_exact_over_a_long_run() -> None:
    rng = random.Random(3)
    detector = PhiAccrualDetector(window_max=10)
    now = 0.0
    recent: list[float] = []
    for _ in range(20_000):
        interval = rng.choice([1e-3, 1.0, 1e5])  # wide range: float drift would show
        now += interval
        detector.heartbeat(now)
        recent.append(interval)
    window = recent[-10:]
    assert detector.mean_ms == pytest.approx(statistics.fmean(window), rel=1e-9)
    assert detector.std_ms == pytest.approx(statistics.pstdev(window), rel=1e-6)


def test_heartbeats_at_the_same_time_are_fine_but_time_cannot_go_back() -> None:
    for detector in (PhiAccrualDetector(), TimeoutDetector(100.0)):
        detector.heartbeat(1000.0)
        detector.heartbeat(1000.0)
        with pytest.raises(UsageError, match="backwards"):
            detector.heartbeat(999.0)
        with pytest.raises(UsageError, match="backwards"):
            detector.phi(999.0)
        assert detector.last_heartbeat_ms == 1000.0  # the bad heartbeat changed nothing


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "5", None, True])
def test_bad_times_are_rejected(bad: object) -> None:
    for detector in (PhiAccrualDetector(), TimeoutDetector(100.0)):
        with pytest.raises(UsageError):
            detector.heartbeat(bad)  # type: ignore[arg-type]
        with pytest.raises(UsageError):
            detector.phi(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": math.nan},
        {"window_max": 0},
        {"window_max": 2.5},
        {"std_min_ms": 0.0},
        {"acceptable_pause_ms": -1.0},
        {"acceptable_pause_ms": math.inf},
        {"first_interval_ms": 0.0},
    ],
)
def test_bad_phi_settings_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        PhiAccrualDetector(**kwargs)  # type: ignore[arg-type]


def test_timeout_detector() -> None:
    detector = TimeoutDetector(250.0)
    assert detector.is_available(0.0)  # unknown peer
    detector.heartbeat(1000.0)
    assert detector.phi(1100.0) == pytest.approx(0.4)
    assert detector.is_available(1249.9)
    assert detector.suspect(1250.0)
    assert detector.suspect_after_ms() == 250.0
    detector.heartbeat(1300.0)
    assert detector.is_available(1500.0)
    assert detector.threshold == 1.0


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan, math.inf, "100"])
def test_bad_timeout_is_rejected(bad: object) -> None:
    with pytest.raises(UsageError):
        TimeoutDetector(bad)  # type: ignore[arg-type]
