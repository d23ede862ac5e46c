"""Simulator throughput: seeds/s and simulated operations/s, against the issue's budget.

The target (issue 4): 200 seeds x 2,000 operations, every fault kind, in under 2 minutes on
this machine. The anchor is that budget and real time itself: how many times faster than the
wall clock the simulated cluster runs (simulated ms per wall ms).

Runs the 200-seed sweep once in 2 worker processes (the machine has 2 cores; the CLI's
``--jobs 2``), then times single seeds in this process, interleaving seeds, for per-seed
medians. ``--quick`` runs 20 seeds instead (a smoke test).

    .venv/bin/python benchmarks/bench_sim.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from _common import write_results
from planaria.sim.nemesis import FAULT_KINDS
from planaria.sim.run import SimConfig, SimResult, run_seed

OPS = 2000
SEEDS = 200
BUDGET_S = 120.0
JOBS = 2
SINGLE_SEEDS = 6


def _config(seed: int) -> SimConfig:
    return SimConfig(seed=seed, ops=OPS, faults=frozenset(FAULT_KINDS))


def sweep(seeds: int) -> tuple[float, list[SimResult]]:
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=JOBS) as pool:
        results = list(pool.map(run_seed, map(_config, range(seeds)), chunksize=2))
    return time.perf_counter() - started, results


def single_seed_times(seeds: int) -> list[tuple[float, SimResult]]:
    samples = []
    for seed in range(1000, 1000 + seeds):
        started = time.perf_counter()
        result = run_seed(_config(seed))
        samples.append((time.perf_counter() - started, result))
    return samples


def main() -> int:
    seeds = 20 if "--quick" in sys.argv else SEEDS
    elapsed_s, results = sweep(seeds)
    operations = sum(r.operations for r in results)
    sim_ms = sum(r.sim_ms for r in results)
    failed = [r for r in results if not r.passed]
    faults = sum(sum(r.faults.values()) for r in results)
    singles = single_seed_times(SINGLE_SEEDS)
    per_seed_s = statistics.median(t for t, _ in singles)
    per_seed_ops = statistics.median(r.operations / t for t, r in singles)
    speedup = statistics.median(r.sim_ms / (t * 1000) for t, r in singles)
    projected_s = elapsed_s * SEEDS / seeds
    print(f"sweep: {seeds} seeds x {OPS} ops, all faults, {JOBS} processes")
    print(f"  wall {elapsed_s:.1f} s (budget {BUDGET_S:.0f} s for {SEEDS} seeds)")
    print(f"  {seeds / elapsed_s:.2f} seeds/s, {operations / elapsed_s:,.0f} simulated ops/s")
    print(f"  {faults} faults injected, {len(failed)} failing seeds {[r.seed for r in failed]}")
    print(f"single process, median of {SINGLE_SEEDS} seeds:")
    print(f"  {per_seed_s:.3f} s per seed, {per_seed_ops:,.0f} simulated ops/s")
    print(f"  simulated time runs {speedup:.1f}x faster than real time")
    met = projected_s < BUDGET_S
    print(f"target 200 seeds x 2,000 ops < {BUDGET_S:.0f} s: {projected_s:.1f} s -> "
          f"{'met' if met else 'MISSED'}")  # fmt: skip
    write_results(
        "sim",
        {
            "seeds": seeds,
            "ops_per_seed": OPS,
            "jobs": JOBS,
            "sweep_wall_s": round(elapsed_s, 3),
            "seeds_per_s": round(seeds / elapsed_s, 3),
            "simulated_ops_per_s": round(operations / elapsed_s),
            "simulated_ms_total": round(sim_ms),
            "faults_injected": faults,
            "failing_seeds": [r.seed for r in failed],
            "single_seed_median_s": round(per_seed_s, 4),
            "single_process_ops_per_s": round(per_seed_ops),
            "speedup_vs_real_time": round(speedup, 2),
            "target_s": BUDGET_S,
            "projected_200_seeds_s": round(projected_s, 2),
            "target_met": met,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
