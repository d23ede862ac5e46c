"""planaria.breaker against pybreaker, side by side in one run.

1. Overhead per call of a trivial function through a closed breaker (target: <= pybreaker).
2. 8 threads x 4 calls of a 50 ms function through one shared breaker (ideal 0.2 s; target:
   planaria <= 1.25x ideal; pybreaker holds its lock during the call, so it serializes).
3. Async overhead per call (informative; pybreaker's call_async needs tornado, so no anchor).

Repeats alternate between the contenders; medians and ratios are reported.
Run: ``.venv/bin/python benchmarks/bench_breaker.py``
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable

import pybreaker

from _common import write_results  # the script directory is on sys.path
from planaria.breaker import CircuitBreaker

CALLS = 100_000
REPEATS = 9
THREADS = 8
CALLS_PER_THREAD = 4
SLEEP_S = 0.05
THREAD_REPEATS = 5
ASYNC_CALLS = 50_000


def trivial() -> int:
    return 1


def per_call_s(run: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / calls


def loop_bare() -> None:
    fn = trivial
    for _ in range(CALLS):
        fn()


def loop_through(call: Callable[[Callable[[], int]], int]) -> Callable[[], None]:
    def run() -> None:
        fn = trivial
        for _ in range(CALLS):
            call(fn)

    return run


def overhead() -> dict[str, dict[str, float]]:
    contenders: dict[str, Callable[[], None]] = {
        "bare call": loop_bare,
        "planaria": loop_through(CircuitBreaker("bench").call),
        "pybreaker": loop_through(pybreaker.CircuitBreaker(name="bench").call),
        "planaria (slow_call_s set)": loop_through(
            CircuitBreaker("bench-timed", slow_call_s=1.0).call
        ),
        "planaria (time window)": loop_through(CircuitBreaker("bench-tw", window_s=10.0).call),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(REPEATS):
        for name, run in contenders.items():
            samples[name].append(per_call_s(run, CALLS))
    bare = statistics.median(samples["bare call"])
    return {
        name: {
            "per_call_us": statistics.median(values) * 1e6,
            "overhead_us": (statistics.median(values) - bare) * 1e6,
        }
        for name, values in samples.items()
    }


def threaded_wall_s(call: Callable[[Callable[[float], None], float], None]) -> float:
    barrier = threading.Barrier(THREADS + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(CALLS_PER_THREAD):
            call(time.sleep, SLEEP_S)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def threaded() -> dict[str, float]:
    samples: dict[str, list[float]] = {"planaria": [], "pybreaker": []}
    for _ in range(THREAD_REPEATS):
        samples["planaria"].append(threaded_wall_s(CircuitBreaker("bench-threads").call))
        samples["pybreaker"].append(
            threaded_wall_s(pybreaker.CircuitBreaker(name="bench-threads").call)
        )
    return {name: statistics.median(values) for name, values in samples.items()}


async def _noop() -> int:
    return 1


async def _async_loops() -> dict[str, list[float]]:
    breaker = CircuitBreaker("bench-async")
    samples: dict[str, list[float]] = {"bare await": [], "planaria call_async": []}

    async def bare() -> None:
        for _ in range(ASYNC_CALLS):
            await _noop()

    async def through() -> None:
        call = breaker.call_async
        for _ in range(ASYNC_CALLS):
            await call(_noop)

    for _ in range(REPEATS):
        for name, run in (("bare await", bare), ("planaria call_async", through)):
            start = time.perf_counter()
            await run()
            samples[name].append((time.perf_counter() - start) / ASYNC_CALLS)
    return samples


def async_overhead() -> dict[str, float]:
    samples = asyncio.run(_async_loops())
    bare = statistics.median(samples["bare await"])
    through = statistics.median(samples["planaria call_async"])
    return {
        "bare_await_us": bare * 1e6,
        "call_async_us": through * 1e6,
        "overhead_us": (through - bare) * 1e6,
    }


def main() -> None:
    print(f"1. closed-state overhead, trivial function ({CALLS} calls x {REPEATS} repeats)")
    per_call = overhead()
    for name, row in per_call.items():
        print(
            f"   {name:28} {row['per_call_us']:7.3f} us/call  overhead {row['overhead_us']:7.3f} us"
        )
    ratio_overhead = per_call["planaria"]["overhead_us"] / per_call["pybreaker"]["overhead_us"]
    ratio_per_call = per_call["planaria"]["per_call_us"] / per_call["pybreaker"]["per_call_us"]
    print(
        f"   planaria / pybreaker: overhead {ratio_overhead:.2f}x, per call {ratio_per_call:.2f}x"
        f"  (target <= 1.00: {'met' if ratio_overhead <= 1.0 else 'MISSED'})"
    )

    ideal_s = CALLS_PER_THREAD * SLEEP_S
    print(
        f"\n2. {THREADS} threads x {CALLS_PER_THREAD} calls of a {SLEEP_S * 1e3:.0f} ms function, "
        f"one breaker (ideal {ideal_s:.2f} s, {THREAD_REPEATS} repeats)"
    )
    walls = threaded()
    for name, wall_s in walls.items():
        print(f"   {name:10} {wall_s:6.3f} s  = {wall_s / ideal_s:5.2f}x ideal")
    print(
        f"   pybreaker / planaria: {walls['pybreaker'] / walls['planaria']:.1f}x"
        f"  (target planaria <= 1.25x ideal: "
        f"{'met' if walls['planaria'] <= 1.25 * ideal_s else 'MISSED'})"
    )

    print(f"\n3. async overhead ({ASYNC_CALLS} awaits x {REPEATS} repeats; informative, no anchor)")
    async_row = async_overhead()
    print(
        f"   bare await {async_row['bare_await_us']:.3f} us, call_async "
        f"{async_row['call_async_us']:.3f} us, overhead {async_row['overhead_us']:.3f} us"
    )

    write_results(
        "breaker",
        {
            "overhead": per_call,
            "overhead_ratio_planaria_over_pybreaker": ratio_overhead,
            "per_call_ratio_planaria_over_pybreaker": ratio_per_call,
            "threads": {
                "threads": THREADS,
                "calls_per_thread": CALLS_PER_THREAD,
                "sleep_s": SLEEP_S,
                "ideal_s": ideal_s,
                "wall_s": walls,
                "planaria_over_ideal": walls["planaria"] / ideal_s,
                "pybreaker_over_ideal": walls["pybreaker"] / ideal_s,
            },
            "async": async_row,
        },
    )


if __name__ == "__main__":
    main()
