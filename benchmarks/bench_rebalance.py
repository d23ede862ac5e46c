"""Membership changes: how much moves, how fast, and what writers feel meanwhile.

Three measurements, in one run:

1. **Movement** (pure, many shapes): replicas that ``core.placement.place`` moves when a
   node joins (weight 1 or 2) or leaves, over the ideal share (the joiner's weight share of
   all replicas, or what the leaver held); target <= 1.1x. Anchors side by side on the same
   shapes: the plain consistent-hash ring (R ring successors, no bounded loads) and
   ``hash mod N``.
2. **Migration throughput** (real processes on loopback): a 3-node cluster holding
   ``--keys`` values of ``--value-bytes``; a 4th node is added and later drained, twice
   (alternating), while writers run. MB/s = logical bytes (keys + values) of the replicas
   moved, over the time from the membership change until every move finished. Anchor: the
   clients' own write throughput of the same bytes when loading (MB/s of SETs).
3. **Write latency p99 during a rebalance vs without**: per-partition writer threads run
   throughout; latencies of writes completed while moves are under way vs in steady
   windows of the same length before and after (alternating); medians of the per-cycle
   p99s and their ratio.

Run: ``.venv/bin/python benchmarks/bench_rebalance.py [--keys N] [--value-bytes B]
[--cycles C] [--partitions P]``; writes bench-results/rebalance.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import write_results  # the script directory is on sys.path
from planaria.client import AsyncClient, Client
from planaria.cluster import LocalCluster, free_base_port, probe_keys
from planaria.core.placement import movement, place
from planaria.core.slots import keyslot, partition_of_slot
from planaria.errors import Unavailable, UnknownOutcome
from planaria.hashing import HashRing, stable_hash64

TARGET_MOVED_OVER_IDEAL = 1.1
REPLICAS = 3
SHAPES = [(3, 64), (3, 256), (5, 256), (10, 1024), (20, 1024)]  # (nodes, partitions)
LOAD_CONCURRENCY = 16
LOAD_ATTEMPTS_MAX = 20
PROBE_PAUSE_S = 0.002
STEADY_S = 3.0
MOVES_TIMEOUT_S = 120.0


# --- 1. movement --------------------------------------------------------------------------


def _ring_lists(partitions: int, nodes: Mapping[str, float]) -> dict[int, tuple[str, ...]]:
    """The anchor: each partition's R distinct ring successors, no load bound."""
    ring = HashRing(nodes)
    return {p: tuple(ring.nodes_for(f"partition-{p}", REPLICAS)) for p in range(partitions)}


def _mod_lists(partitions: int, nodes: Mapping[str, float]) -> dict[int, tuple[str, ...]]:
    names = sorted(nodes)
    return {
        p: tuple(
            names[(stable_hash64(f"partition-{p}".encode()) + i) % len(names)]
            for i in range(REPLICAS)
        )
        for p in range(partitions)
    }


def _ideal(before: Mapping[str, float], after: Mapping[str, float], partitions: int) -> float:
    """Replicas that must move at least: the joiner's weight share, or the leaver's
    replicas (its weight share of before)."""
    total = REPLICAS * partitions
    (changed,) = set(before) ^ set(after)
    # A node holds at most one replica of a partition.
    if changed in after:
        return min(partitions, total * after[changed] / sum(after.values()))
    return min(partitions, total * before[changed] / sum(before.values()))


def measure_movement() -> dict[str, Any]:
    placers: dict[str, Callable[[int, Mapping[str, float]], Mapping[int, tuple[str, ...]]]] = {
        "planaria": lambda p, nodes: place(p, dict(nodes), replicas=REPLICAS),
        "plain-ring": _ring_lists,
        "mod-n": _mod_lists,
    }
    rows = []
    for count, partitions in SHAPES:
        # Names of 4+ bytes: hashing.HashRing's points collide for names of 1-3 bytes
        # (n10 vs n1; see _short_name_skew), which would measure that bug instead.
        base = {f"node-{i}": 1.0 for i in range(1, count + 1)}
        cases = {
            "add": (base, {**base, "node-new": 1.0}),
            "add-weight-2": (base, {**base, "node-new": 2.0}),
        }
        if count > REPLICAS:
            cases["remove"] = (base, {n: w for n, w in base.items() if n != "node-1"})
        for case, (before, after) in cases.items():
            ideal = _ideal(before, after, partitions)
            row: dict[str, Any] = {"nodes": count, "partitions": partitions, "case": case}
            for name, placer in placers.items():
                moved = movement(placer(partitions, before), dict(placer(partitions, after)))
                row[name] = round(moved / ideal, 3)
            rows.append(row)
    print(f"\n1. replicas moved / ideal share (R={REPLICAS}); target <= {TARGET_MOVED_OVER_IDEAL}")
    print(f"{'nodes':>5} {'parts':>6} {'case':<13} {'planaria':>9} {'plain-ring':>11} {'mod-n':>7}")
    for row in rows:
        print(
            f"{row['nodes']:>5} {row['partitions']:>6} {row['case']:<13} {row['planaria']:>9.3f}"
            f" {row['plain-ring']:>11.3f} {row['mod-n']:>7.3f}"
        )
    medians = {name: statistics.median(r[name] for r in rows) for name in placers}
    worst = max(r["planaria"] for r in rows)
    print(
        "medians: "
        + ", ".join(f"{n} {m:.3f}" for n, m in medians.items())
        + f"; planaria worst {worst:.3f}"
    )
    skew = _short_name_skew()
    print(
        f"short node names (a fixed hashing bug): with node ids n1..n20 the ring gives the "
        f"busiest node {skew['n_names']:.2f}x its share (node-1..node-20: "
        f"{skew['long_names']:.2f}x)"
    )
    return {"rows": rows, "medians": medians, "planaria_worst": worst, "ring_peak_share": skew}


def _short_name_skew(count: int = 20, keys: int = 20_000) -> dict[str, float]:
    """The busiest node's share of keys over the mean, for ids n1..nN and node-1..node-N:
    HashRing's seeded xxh3 points of 1-3 byte names collide (n10's with n1's), so nodes
    n10 and up own almost nothing. Reported for the hashing owner; not worked around."""
    shares = {}
    for label, fmt in (("n_names", "n{}"), ("long_names", "node-{}")):
        ring = HashRing({fmt.format(i): 1.0 for i in range(1, count + 1)})
        owners = ring.nodes_for_keys([f"key-{i}" for i in range(keys)])
        busiest = max(owners.count(name) for name in set(owners))
        shares[label] = busiest / (keys / count)
    return shares


# --- 2 and 3. a real cluster ------------------------------------------------------------------


class Probes:
    """One writer thread per partition; every write's (completed at, latency)."""

    def __init__(self, cluster: LocalCluster, partitions: int) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        seeds = list(cluster.addresses.values())
        self._threads = [
            threading.Thread(target=self._run, args=(seeds, key), daemon=True)
            for key in probe_keys(partitions).values()
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10.0)

    def _run(self, seeds: list[str], key: str) -> None:
        with Client(seeds) as client:
            seq = 0
            while not self._stop.is_set():
                seq += 1
                start = time.monotonic()
                try:
                    client.set(key, f"v{seq}")
                except Exception as exc:  # recorded: the benchmark reports every error
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                done = time.monotonic()
                with self._lock:
                    self.samples.append((done, done - start))
                self._stop.wait(PROBE_PAUSE_S)

    def p99_between(self, start: float, end: float) -> float | None:
        with self._lock:
            latencies = sorted(lat for at, lat in self.samples if start <= at <= end)
        if len(latencies) < 20:
            return None
        return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]


async def _load(seeds: list[str], keys: int, value: bytes) -> None:
    client = AsyncClient(seeds)
    try:
        queue = iter(range(keys))

        async def worker() -> None:
            for i in queue:
                for attempt in range(LOAD_ATTEMPTS_MAX):
                    try:
                        await client.set(f"key-{i}", value)
                        break
                    except (UnknownOutcome, Unavailable):  # overloaded: SET again (idempotent)
                        if attempt == LOAD_ATTEMPTS_MAX - 1:
                            raise
                        await asyncio.sleep(0.2)

        await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))
    finally:
        await client.close()


def _partition_bytes(keys: int, value_bytes: int, partitions: int) -> dict[int, int]:
    sizes = dict.fromkeys(range(partitions), 0)
    for i in range(keys):
        key = f"key-{i}"
        sizes[partition_of_slot(keyslot(key.encode()), partitions)] += len(key) + value_bytes
    return sizes


def _replica_sets(cluster: LocalCluster) -> dict[int, frozenset[str]]:
    return {p.id: frozenset(p.replicas) for p in cluster.status().partitions}


def _wait_moves(cluster: LocalCluster, done: Callable[[Any], bool]) -> None:
    deadline = time.monotonic() + MOVES_TIMEOUT_S
    while time.monotonic() < deadline:
        progress = cluster.move_progress()
        if progress is not None and done(progress):
            return
        time.sleep(0.02)
    raise RuntimeError(f"moves not done in {MOVES_TIMEOUT_S} s: {cluster.move_progress()}")


def _moved_bytes(
    before: Mapping[int, frozenset[str]],
    after: Mapping[int, frozenset[str]],
    sizes: Mapping[int, int],
) -> tuple[int, int]:
    replicas = sum(len(after[p] - before[p]) for p in after)
    return replicas, sum(len(after[p] - before[p]) * sizes[p] for p in after)


def measure_cluster(args: argparse.Namespace) -> dict[str, Any]:
    partitions = args.partitions
    value = b"x" * args.value_bytes
    sizes = _partition_bytes(args.keys, args.value_bytes, partitions)
    with tempfile.TemporaryDirectory(prefix="bench-rebalance-") as work:
        cluster = LocalCluster(
            Path(work), nodes=3, partitions=partitions, base_port=free_base_port(4 + args.cycles)
        )
        with cluster:
            cluster.start(timeout_s=60.0)
            seeds = list(cluster.addresses.values())
            start = time.monotonic()
            asyncio.run(_load(seeds, args.keys, value))
            load_s = time.monotonic() - start
            load_mbps = sum(sizes.values()) / load_s / 1e6
            print(
                f"\n2. loaded {args.keys} keys x {args.value_bytes} B "
                f"({sum(sizes.values()) / 1e6:.1f} MB) in {load_s:.1f} s: {load_mbps:.1f} MB/s "
                f"through clients ({LOAD_CONCURRENCY} concurrent SETs)"
            )
            probes = Probes(cluster, partitions)
            probes.start()
            cycles: list[dict[str, Any]] = []
            try:
                time.sleep(STEADY_S)
                for cycle in range(args.cycles):
                    for change in ("add", "drain"):
                        cycles.append(_one_change(cluster, probes, sizes, change, cycle))
            finally:
                probes.stop()
    return _summarize(cycles, load_mbps, probes.errors)


def _one_change(
    cluster: LocalCluster, probes: Probes, sizes: Mapping[int, int], change: str, cycle: int
) -> dict[str, Any]:
    before = _replica_sets(cluster)
    start = time.monotonic()
    if change == "add":
        node = cluster.add_node()
        _wait_moves(cluster, lambda p: p.done)
    else:
        node = cluster.node_ids[-1]
        cluster.drain(node)
        _wait_moves(cluster, lambda p: p.held.get(node) == 0 and not p.moving)
    end = time.monotonic()
    if change == "drain":
        cluster.remove_node(node)
    after = _replica_sets(cluster)
    replicas, moved = _moved_bytes(before, after, sizes)
    moving_s = end - start
    steady_before = probes.p99_between(start - moving_s - 0.5, start - 0.5)
    time.sleep(max(STEADY_S, moving_s) + 0.5)
    steady_after_start = end + 0.5
    steady_after = probes.p99_between(steady_after_start, steady_after_start + moving_s)
    during = probes.p99_between(start, end)
    steady = [x for x in (steady_before, steady_after) if x is not None]
    row = {
        "cycle": cycle,
        "change": f"{change} {node}",
        "replicas_moved": replicas,
        "moved_mb": round(moved / 1e6, 3),
        "seconds": round(moving_s, 3),
        "mb_per_s": round(moved / 1e6 / moving_s, 3) if moving_s > 0 else None,
        "p99_during_ms": None if during is None else round(during * 1e3, 2),
        "p99_steady_ms": round(statistics.median(steady) * 1e3, 2) if steady else None,
    }
    print(
        f"  {row['change']:<9} {replicas:>3} replicas {row['moved_mb']:>7.2f} MB in "
        f"{moving_s:5.2f} s = {row['mb_per_s']} MB/s; write p99 during {row['p99_during_ms']} ms,"
        f" steady {row['p99_steady_ms']} ms"
    )
    return row


def _summarize(
    cycles: Sequence[dict[str, Any]], load_mbps: float, errors: Sequence[str]
) -> dict[str, Any]:
    rates = [c["mb_per_s"] for c in cycles if c["mb_per_s"]]
    during = [c["p99_during_ms"] for c in cycles if c["p99_during_ms"] is not None]
    steady = [c["p99_steady_ms"] for c in cycles if c["p99_steady_ms"] is not None]
    summary: dict[str, Any] = {
        "cycles": list(cycles),
        "client_load_mb_per_s": round(load_mbps, 3),
        "migration_mb_per_s_median": round(statistics.median(rates), 3) if rates else None,
        "p99_during_ms_median": statistics.median(during) if during else None,
        "p99_steady_ms_median": statistics.median(steady) if steady else None,
        "writer_errors": len(errors),
        "writer_error_examples": list(errors[:3]),
    }
    if during and steady:
        summary["p99_ratio"] = round(statistics.median(during) / statistics.median(steady), 3)
    print(
        f"3. migration median {summary['migration_mb_per_s_median']} MB/s (clients loading: "
        f"{summary['client_load_mb_per_s']} MB/s); write p99 median during moves "
        f"{summary['p99_during_ms_median']} ms vs steady {summary['p99_steady_ms_median']} ms "
        f"(ratio {summary.get('p99_ratio')}); writer errors {len(errors)}"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--cycles", type=int, default=2, help="add + drain cycles")
    parser.add_argument("--skip-cluster", action="store_true", help="movement only")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"movement": measure_movement()}
    results["target_moved_over_ideal"] = TARGET_MOVED_OVER_IDEAL
    results["movement_target_met"] = (
        results["movement"]["planaria_worst"] <= TARGET_MOVED_OVER_IDEAL
    )
    if not args.skip_cluster:
        results["cluster"] = {
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "partitions": args.partitions,
            **measure_cluster(args),
        }
    write_results("rebalance", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
