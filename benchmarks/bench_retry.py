"""planaria.retry vs tenacity: what retrying costs a call that succeeds at once.

Same trivial function, sync and async, decorated by each library with comparable settings
(5 attempts, 30 s deadline, jittered exponential backoff, retry on transient errors). The
overhead is the decorated call's time minus the bare call's, per call, measured in the same
repeat; repeats alternate the order of the contenders and we report medians. Target: planaria's
overhead <= 1/10 of tenacity's. Also reported (informative): one call that fails once and then
succeeds, with zero waits.

    .venv/bin/python benchmarks/bench_retry.py [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tenacity

from _common import write_results
from planaria.retry import DEFAULT_RETRY_ON, RetryBudget, retry

TARGET_RATIO = 0.1


def trivial(x: int) -> int:
    return x


async def trivial_async(x: int) -> int:
    return x


def tenacity_success() -> Any:
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(30),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=5.0),
        retry=tenacity.retry_if_exception_type(DEFAULT_RETRY_ON),
        reraise=True,
    )


def tenacity_zero_wait() -> Any:
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(5),
        wait=tenacity.wait_none(),
        retry=tenacity.retry_if_exception_type(DEFAULT_RETRY_ON),
        reraise=True,
    )


def per_call_sync(fn: Callable[[int], object], calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls


async def per_call_async(fn: Callable[[int], Awaitable[object]], calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        await fn(i)
    return (time.perf_counter() - start) / calls


def rotate(names: list[str], shift: int) -> list[str]:
    shift %= len(names)
    return names[shift:] + names[:shift]


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median per-call time and median overhead over the bare call of the same repeat (µs)."""
    bare = samples["bare"]
    out: dict[str, dict[str, float]] = {}
    for name, times in samples.items():
        overheads = [(t - b) * 1e6 for t, b in zip(times, bare, strict=True)]
        out[name] = {
            "per_call_us": statistics.median(times) * 1e6,
            "overhead_us": statistics.median(overheads),
        }
    return out


def bench_success_sync(repeats: int, calls: int) -> dict[str, dict[str, float]]:
    contenders: dict[str, Callable[[int], object]] = {
        "bare": trivial,
        "planaria": retry(trivial),
        "planaria+budget": retry(budget=RetryBudget())(trivial),
        "tenacity": tenacity_success()(trivial),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        per_call_sync(fn, calls // 10)  # warm up
    for repeat in range(repeats):
        for name in rotate(list(contenders), repeat):
            samples[name].append(per_call_sync(contenders[name], calls))
    return summarize(samples)


def bench_success_async(repeats: int, calls: int) -> dict[str, dict[str, float]]:
    contenders: dict[str, Callable[[int], Awaitable[object]]] = {
        "bare": trivial_async,
        "planaria": retry(trivial_async),
        "planaria+budget": retry(budget=RetryBudget())(trivial_async),
        "tenacity": tenacity_success()(trivial_async),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}

    async def run() -> None:
        for fn in contenders.values():
            await per_call_async(fn, calls // 10)
        for repeat in range(repeats):
            for name in rotate(list(contenders), repeat):
                samples[name].append(await per_call_async(contenders[name], calls))

    asyncio.run(run())
    return summarize(samples)


class FailsEveryOtherCall:
    """Raises ConnectionError on odd calls: each decorated call fails once, then succeeds."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        if self.calls % 2:
            raise ConnectionError("transient")
        return x


def bench_fail_once(repeats: int, calls: int) -> dict[str, dict[str, float]]:
    def make_async(sync: FailsEveryOtherCall) -> Callable[[int], Awaitable[int]]:
        async def call(x: int) -> int:
            return sync(x)

        return call

    planaria_zero = retry(wait_initial_s=0.0, wait_max_s=0.0)
    sync_fns: dict[str, Callable[[int], object]] = {
        "planaria": planaria_zero(FailsEveryOtherCall()),
        "tenacity": tenacity_zero_wait()(FailsEveryOtherCall()),
    }
    async_fns: dict[str, Callable[[int], Awaitable[object]]] = {
        "planaria": planaria_zero(make_async(FailsEveryOtherCall())),
        "tenacity": tenacity_zero_wait()(make_async(FailsEveryOtherCall())),
    }
    samples: dict[str, list[float]] = {
        f"{kind}/{name}": [] for kind in ("sync", "async") for name in sync_fns
    }

    async def run_async(repeat: int) -> None:
        for name in rotate(list(async_fns), repeat):
            samples[f"async/{name}"].append(await per_call_async(async_fns[name], calls))

    for repeat in range(repeats):
        for name in rotate(list(sync_fns), repeat):
            samples[f"sync/{name}"].append(per_call_sync(sync_fns[name], calls))
        asyncio.run(run_async(repeat))
    return {name: {"per_call_us": statistics.median(t) * 1e6} for name, t in samples.items()}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    repeats, calls = (5, 5_000) if quick else (15, 20_000)
    started = time.perf_counter()
    success = {
        "sync": bench_success_sync(repeats, calls),
        "async": bench_success_async(repeats, calls),
    }
    fail_once = bench_fail_once(repeats, calls // 4)

    print(f"retry overhead on a call that succeeds at once (median of {repeats} x {calls} calls)")
    print(f"{'':6} {'contender':16} {'per call µs':>12} {'overhead µs':>12} {'vs tenacity':>12}")
    verdicts: dict[str, Any] = {}
    for kind, rows in success.items():
        tenacity_us = rows["tenacity"]["overhead_us"]
        for name, row in rows.items():
            ratio = row["overhead_us"] / tenacity_us if name != "bare" else float("nan")
            row["ratio_vs_tenacity"] = ratio
            print(
                f"{kind:6} {name:16} {row['per_call_us']:12.3f} {row['overhead_us']:12.3f} "
                f"{ratio:12.4f}"
            )
        ratio = rows["planaria"]["ratio_vs_tenacity"]
        verdicts[kind] = {"ratio": ratio, "target": TARGET_RATIO, "met": ratio <= TARGET_RATIO}
    for kind, verdict in verdicts.items():
        status = "MET" if verdict["met"] else "MISSED"
        print(f"target {kind}: overhead ratio {verdict['ratio']:.4f} <= {TARGET_RATIO}: {status}")

    print("\none call that fails once then succeeds, zero waits (informative)")
    for name, row in fail_once.items():
        print(f"  {name:18} {row['per_call_us']:10.3f} µs per call")
    elapsed_s = time.perf_counter() - started
    print(f"({elapsed_s:.1f} s)")
    write_results(
        "retry",
        {
            "repeats": repeats,
            "calls_per_repeat": calls,
            "success_at_once": success,
            "fail_once_then_succeed": fail_once,
            "targets": verdicts,
            "tenacity_version": getattr(tenacity, "__version__", "unknown"),
            "elapsed_s": elapsed_s,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
