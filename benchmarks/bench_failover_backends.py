"""Failover through each coordination backend: a 3-node planaria cluster (R=3) on the
embedded coordinator, on a 3-server ZooKeeper ensemble and on a 3-member etcd cluster, side by
side in one run. About 2 minutes with the defaults.

    .venv/bin/python benchmarks/bench_failover_backends.py [--rounds 3] [--keep DIR]

All three clusters run at once; each round does one kill -9 and one SIGSTOP of the busiest
primary on every backend in turn (the order rotates per round), so the machine's load is
shared alike. Measured per affected partition (bench_cluster's ``fault_runs``, reused): ms
from the fault to the first write acknowledged by another node, invoked after the fault (the
upper bound). p50/p99 per backend and fault, and the ratios to the embedded coordinator.

Backend settings (the nodes pick the nearest session TTL the backend grants, see
docs/coordination.md): embedded: TTL 300 ms, lease 200 ms. ZooKeeper: ``tickTime=50``, so
the default 300 ms session is granted (lease 200 ms). etcd: ``--heartbeat-interval 50
--election-timeout 500``: its smallest lease is 1 s, so TTL 1000 ms, lease 933 ms: etcd's
failover is bounded below by its whole-second leases. The ensembles are the test fixtures
(tests/coord/_servers.py): fsync off on ZooKeeper and etcd, fsync always on the nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import write_results
from bench_cluster import TERMINATING, client_options, fault_runs, stats_ms
from planaria.cluster import LocalCluster, free_base_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from coord._servers import EnsembleMissing, etcd_ensemble, zookeeper_ensemble

BACKENDS = ("embedded", "zk", "etcd")
FAULTS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="faults of each kind per backend")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--loaders", type=int, default=2, help="full-speed threads in faults")
    parser.add_argument("--fault-timeout-s", type=float, default=10.0)
    parser.add_argument("--rejoin-timeout-s", type=float, default=30.0)
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (logs)")
    args = parser.parse_args(argv)
    args.kills = args.stops = 1  # fault_runs does one run per call: rounds alternate
    args.attempt_timeout_s = None
    return args


def _terminate(signum: int, frame: object) -> None:
    TERMINATING.set()
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    results: dict[str, Any] = {"partitions": args.partitions, "nodes": 3, "replicas": 3}
    results["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    samples: dict[str, dict[str, list[float]]] = {b: {f: [] for f in FAULTS} for b in BACKENDS}
    missing: dict[str, dict[str, int]] = {b: dict.fromkeys(FAULTS, 0) for b in BACKENDS}
    began = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        if args.keep is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        else:
            workdir = Path(args.keep).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        try:
            urls: dict[str, str | None] = {
                "embedded": None,
                "zk": cleanup.enter_context(zookeeper_ensemble(workdir / "zk")).url + "/bench",
                "etcd": cleanup.enter_context(etcd_ensemble(workdir / "etcd")).url + "/bench",
            }
        except EnsembleMissing as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        clusters: dict[str, LocalCluster] = {}
        for backend in BACKENDS:
            cluster = LocalCluster(
                workdir / f"cluster-{backend}",
                nodes=3,
                partitions=args.partitions,
                base_port=free_base_port(3),
                fsync="always",
                coordinator_url=urls[backend],
            )
            cleanup.callback(cluster.stop)
            cluster.start(timeout_s=60.0)
            clusters[backend] = cluster
            print(f"{backend}: {cluster.coordinator_url}", flush=True)
        for round_index in range(args.rounds):
            order = BACKENDS[round_index % 3 :] + BACKENDS[: round_index % 3]
            for backend in order:
                for fault_name, fault in FAULTS.items():
                    try:
                        run = fault_runs(clusters[backend], fault, args, client_options(args))
                    except Exception as exc:  # recorded; the other runs still go on
                        print(f"  {backend} {fault_name} failed: {exc!r}", flush=True)
                        results.setdefault("errors", []).append(f"{backend} {fault_name}: {exc!r}")
                        continue
                    for one in run["runs"]:
                        samples[backend][fault_name] += [v for v in one["invoked_ms"] if v]
                    missing[backend][fault_name] += run["no_failover_within_timeout"]
                    print(f"  round {round_index + 1} {backend} {fault_name}: "
                          f"{run['invoked_after_ms']}", flush=True)  # fmt: skip
    summary: dict[str, Any] = {}
    for backend in BACKENDS:
        summary[backend] = {
            fault: {
                "invoked_after_ms": stats_ms(samples[backend][fault]),
                "no_failover_within_timeout": missing[backend][fault],
            }
            for fault in FAULTS
        }
    for backend in ("zk", "etcd"):
        for fault in FAULTS:
            mine = summary[backend][fault]["invoked_after_ms"]
            base = summary["embedded"][fault]["invoked_after_ms"]
            if mine and base:
                summary[backend][fault]["p50_ratio_to_embedded"] = round(
                    mine["p50"] / base["p50"], 2
                )
    results["failover"] = summary
    results["samples_ms"] = samples
    results["seconds"] = round(time.monotonic() - began, 1)
    print_table(summary)
    write_results("failover_backends", results)
    return 0


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'backend':<10} {'fault':<5} {'p50 ms':>8} {'p99 ms':>8} {'n':>4} {'x embedded':>11}")
    for backend, faults in summary.items():
        for fault, row in faults.items():
            stats = row["invoked_after_ms"] or {}
            ratio = row.get("p50_ratio_to_embedded", "")
            print(f"{backend:<10} {fault:<5} {stats.get('p50', '-'):>8} {stats.get('p99', '-'):>8} "
                  f"{stats.get('count', 0):>4} {ratio!s:>11}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
