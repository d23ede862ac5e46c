"""Linearizability checker: the 60 Jepsen etcd histories plus kv c01/c10 (ok and bad).

Anchor: Porcupine (Go) checks the same 64 histories in about 0.7 s on this machine (the
figure given with the task; Go is not installed here, so it cannot run side by side).
Target: at most 3x that, 2.1 s. Reports the median total over a few runs (parse + check,
and check alone), the ten slowest files, and peak RSS.

    .venv/bin/python benchmarks/bench_check.py [--repeats N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

from _common import write_results
from planaria.check import check_operations, default_model, parse_history

HISTORIES = Path(__file__).resolve().parents[1] / "tests" / "data" / "histories"
PORCUPINE_S = 0.7
TARGET_RATIO = 3.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    expected_path = HISTORIES / "expected.tsv"
    if not expected_path.exists():
        print(f"reference histories not found at {HISTORIES.resolve()}", file=sys.stderr)
        return 2
    cases = [line.split("\t") for line in expected_path.read_text().splitlines() if line]
    texts = {rel: (HISTORIES / rel).read_text().splitlines() for rel, _ in cases}
    totals, check_totals = [], []
    per_file: dict[str, list[float]] = {rel: [] for rel, _ in cases}
    for _ in range(args.repeats):
        total = check_total = 0.0
        for rel, expected in cases:
            started = time.perf_counter()
            history = parse_history(texts[rel], path=rel)
            parsed = time.perf_counter()
            result = check_operations(default_model(history.format), history.operations)
            done = time.perf_counter()
            if str(result.verdict) != expected:
                print(f"WRONG VERDICT {rel}: {result.verdict} != {expected}", file=sys.stderr)
                return 1
            total += done - started
            check_total += done - parsed
            per_file[rel].append(done - started)
        totals.append(total)
        check_totals.append(check_total)
    total_s, check_s = statistics.median(totals), statistics.median(check_totals)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    slowest = sorted(((statistics.median(v), k) for k, v in per_file.items()), reverse=True)
    print(f"{len(cases)} histories, {args.repeats} runs, medians:")
    print(f"  parse + check  {total_s:7.3f} s   ratio vs Porcupine {total_s / PORCUPINE_S:5.2f}x")
    print(f"  check only     {check_s:7.3f} s   ratio vs Porcupine {check_s / PORCUPINE_S:5.2f}x")
    print(f"  target {TARGET_RATIO:.0f}x ({TARGET_RATIO * PORCUPINE_S:.1f} s): ", end="")
    print("met" if total_s <= TARGET_RATIO * PORCUPINE_S else "MISSED")
    print(f"  peak RSS {peak_rss_mb:.1f} MiB")
    print("  slowest ten (parse + check, median):")
    for seconds, rel in slowest[:10]:
        print(f"    {seconds * 1000:8.1f} ms  {rel}")
    write_results(
        "check",
        {
            "histories": len(cases),
            "repeats": args.repeats,
            "total_s_median": total_s,
            "check_only_s_median": check_s,
            "anchor_porcupine_s": PORCUPINE_S,
            "ratio_vs_porcupine": total_s / PORCUPINE_S,
            "target_ratio": TARGET_RATIO,
            "target_met": total_s <= TARGET_RATIO * PORCUPINE_S,
            "peak_rss_mib": peak_rss_mb,
            "slowest_ten_s": [[rel, seconds] for seconds, rel in slowest[:10]],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
