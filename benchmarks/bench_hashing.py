"""planaria.hashing against uhashring, side by side in one run.

Measures, at 10 nodes and 1M keys:
- single-key lookups/s: ``HashRing.node_for`` vs ``uhashring.HashRing.get_node`` (the anchor,
  default settings), plus the ketama modes of both and planaria's batch ``nodes_for_keys``;
  repeats alternate between the contenders and the table shows medians;
- ring build time with default settings;
- peak/mean load (the busiest node's keys over the average);
- keys moved when an 11th node joins, over the ideal 1/11;
- the bounded-load assignment's peak/mean and movement.

Run: ``.venv/bin/python benchmarks/bench_hashing.py [--keys N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import uhashring

from _common import write_results  # the script directory is on sys.path
from planaria.hashing import DEFAULT_VNODES, HashRing, KetamaRing, assign_bounded

NODES = [f"node-{i}" for i in range(10)]
NEWCOMER = "node-10"
TARGET_SPEEDUP = 3.0
TARGET_PEAK_TO_MEAN = 1.05
TARGET_MOVED_OVER_IDEAL = 1.05


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per contender, running them in turn each round (noise hits all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(repeats):
        names = list(contenders)
        if round_index % 2:
            names.reverse()
        for name in names:
            samples[name].append(timed(contenders[name]))
    return {name: statistics.median(times) for name, times in samples.items()}


def peak_to_mean(owners: Sequence[str], node_count: int) -> float:
    return max(Counter(owners).values()) / (len(owners) / node_count)


def moved_fraction(before: Sequence[str], after: Sequence[str]) -> float:
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    keys = [f"user:{i:08d}" for i in range(args.keys)]
    print(f"{len(NODES)} nodes, {len(keys):,} keys, {args.repeats} alternating repeats")

    # ---- build ---------------------------------------------------------------------------
    builds = alternate(
        {
            "planaria HashRing": lambda: HashRing(NODES),
            "uhashring": lambda: uhashring.HashRing(NODES),
            "planaria KetamaRing": lambda: KetamaRing(NODES),
            "uhashring ketama": lambda: uhashring.HashRing(NODES, hash_fn="ketama"),
        },
        args.repeats,
    )
    ours = HashRing(NODES)
    anchor = uhashring.HashRing(NODES)
    ketama = KetamaRing(NODES)
    anchor_ketama = uhashring.HashRing(NODES, hash_fn="ketama")

    # ---- lookups -------------------------------------------------------------------------
    node_for, get_node = ours.node_for, anchor.get_node
    ketama_node_for, ketama_get_node = ketama.node_for, anchor_ketama.get_node
    lookups = alternate(
        {
            "planaria node_for": lambda: [node_for(k) for k in keys],
            "uhashring get_node": lambda: [get_node(k) for k in keys],
            "planaria nodes_for_keys (batch)": lambda: ours.nodes_for_keys(keys),
            "planaria KetamaRing node_for": lambda: [ketama_node_for(k) for k in keys],
            "uhashring ketama get_node": lambda: [ketama_get_node(k) for k in keys],
        },
        args.repeats,
    )
    rates = {name: len(keys) / seconds for name, seconds in lookups.items()}

    # ---- balance and movement ------------------------------------------------------------
    ideal = 1 / (len(NODES) + 1)
    owners = ours.nodes_for_keys(keys)
    anchor_owners = [get_node(k) for k in keys]
    assert ketama.nodes_for_keys(keys[:100_000]) == [ketama_get_node(k) for k in keys[:100_000]]
    ours.add(NEWCOMER)
    anchor.add_node(NEWCOMER)
    owners_after = ours.nodes_for_keys(keys)
    anchor_after = [anchor.get_node(k) for k in keys]
    moved_only_to_newcomer = all(
        b in (a, NEWCOMER) for a, b in zip(owners, owners_after, strict=True)
    )

    bounded: dict[str, dict[str, float]] = {}
    for label, ring_vnodes, eps in (
        ("default ring, eps=0.25", DEFAULT_VNODES, 0.25),
        ("vnodes=64 ring, eps=0.05", 64, 0.05),
    ):
        ring = HashRing(NODES, vnodes=ring_vnodes)
        plain = ring.nodes_for_keys(keys)
        start = time.perf_counter()
        placed = assign_bounded(keys, ring, eps=eps)
        seconds = time.perf_counter() - start
        ring.add(NEWCOMER)
        placed_after = assign_bounded(keys, ring, eps=eps)
        first = [placed[k][0] for k in keys]
        bounded[label] = {
            "plain_ring_peak_to_mean": peak_to_mean(plain, len(NODES)),
            "peak_to_mean": peak_to_mean(first, len(NODES)),
            "moved_over_ideal": moved_fraction(first, [placed_after[k][0] for k in keys]) / ideal,
            "assign_s": seconds,
        }

    results: dict[str, Any] = {
        "nodes": len(NODES),
        "keys": len(keys),
        "repeats": args.repeats,
        "default_vnodes": DEFAULT_VNODES,
        "build_s": builds,
        "lookups_per_s": rates,
        "speedup_node_for_vs_uhashring": rates["planaria node_for"] / rates["uhashring get_node"],
        "speedup_batch_vs_uhashring": rates["planaria nodes_for_keys (batch)"]
        / rates["uhashring get_node"],
        "speedup_ketama_vs_uhashring_ketama": rates["planaria KetamaRing node_for"]
        / rates["uhashring ketama get_node"],
        "peak_to_mean": {
            "planaria": peak_to_mean(owners, len(NODES)),
            "uhashring": peak_to_mean(anchor_owners, len(NODES)),
        },
        "moved_over_ideal_on_11th_node": {
            "planaria": moved_fraction(owners, owners_after) / ideal,
            "uhashring": moved_fraction(anchor_owners, anchor_after) / ideal,
        },
        "planaria_keys_moved_only_to_newcomer": moved_only_to_newcomer,
        "bounded": bounded,
    }
    report(results)
    write_results("hashing", results)
    return 0


def report(results: dict[str, Any]) -> None:
    print("\nbuild (median s)")
    for name, seconds in results["build_s"].items():
        print(f"  {name:34s} {seconds * 1000:9.1f} ms")
    print("\nlookups (median over alternating repeats)")
    for name, rate in results["lookups_per_s"].items():
        print(f"  {name:34s} {rate / 1e6:9.3f} M/s")
    speedup = results["speedup_node_for_vs_uhashring"]
    verdict = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
    print(f"  node_for vs uhashring: {speedup:.2f}x (target >= {TARGET_SPEEDUP}x: {verdict})")
    print(f"  batch vs uhashring: {results['speedup_batch_vs_uhashring']:.2f}x")
    print(f"  ketama vs uhashring ketama: {results['speedup_ketama_vs_uhashring_ketama']:.2f}x")

    print("\npeak/mean load")
    for name, value in results["peak_to_mean"].items():
        print(f"  {name:34s} {value:9.4f}")
    ours = results["peak_to_mean"]["planaria"]
    verdict = "met" if ours <= TARGET_PEAK_TO_MEAN else "MISSED"
    print(f"  target planaria <= {TARGET_PEAK_TO_MEAN}: {verdict}")

    print("\nkeys moved when the 11th node joins, over the ideal 1/11")
    for name, value in results["moved_over_ideal_on_11th_node"].items():
        print(f"  {name:34s} {value:9.4f}")
    moved = results["moved_over_ideal_on_11th_node"]["planaria"]
    verdict = "met" if moved <= TARGET_MOVED_OVER_IDEAL else "MISSED"
    print(f"  target planaria <= {TARGET_MOVED_OVER_IDEAL}: {verdict}")
    only_new = results["planaria_keys_moved_only_to_newcomer"]
    print(f"  planaria keys moved only to the newcomer: {only_new}")

    print("\nbounded-load assignment (first replica)")
    for label, numbers in results["bounded"].items():
        print(
            f"  {label:26s} plain ring peak/mean {numbers['plain_ring_peak_to_mean']:.4f}"
            f" -> bounded {numbers['peak_to_mean']:.4f}; moved/ideal on 11th node "
            f"{numbers['moved_over_ideal']:.3f}; assign {numbers['assign_s']:.2f} s"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
