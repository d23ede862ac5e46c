"""Throughput of the data commands through Redis' own ``redis-benchmark --cluster`` (issue 20).

A 3-node cluster (R=3, fsync ``always``: every write durable on every replica before its
reply) and, as the anchor, one plain ``redis-server`` (no persistence), both on 127.0.0.1
and this machine's cores. Each round runs every test once against each, in turn, so the
load of the machine falls on both alike; the report is the median over the rounds of each
test's requests per second, and the issue's ratios:

- GET on planaria against GET on one redis-server (target: at least 50%);
- durable INCR and HSET against durable SET on planaria (target: within 10%).

``redis-benchmark`` runs with ``-c 50`` clients, each test ``-n`` requests on its default
keys (``key:__rand_int__`` and friends with ``-r``).

    python benchmarks/bench_commands.py --requests 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cluster_anchors import redis_benchmark_rps, running_redis
from _common import write_results
from planaria.cluster import LocalCluster, free_base_port

TESTS = ("set", "get", "incr", "hset")
# redis-benchmark's names for the tests in its -q output
_NAMES = {"set": "SET", "get": "GET", "incr": "INCR", "hset": "HSET"}


def _round(port: int, *, cluster: bool, requests: int, clients: int) -> dict[str, float]:
    rps: dict[str, float] = {}
    for test in TESTS:
        arguments = ["-t", test, "-n", str(requests), "-c", str(clients), "-r", "100000"]
        found = redis_benchmark_rps(port, arguments, cluster=cluster, timeout_s=600.0)
        rps[test] = found[_NAMES[test]]
    return rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per test and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args()
    began = time.monotonic()
    planaria_rounds: list[dict[str, float]] = []
    redis_rounds: list[dict[str, float]] = []
    with contextlib.ExitStack() as cleanup:
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        redis_port = cleanup.enter_context(running_redis(workdir / "redis"))
        cluster = LocalCluster(
            workdir / "planaria",
            nodes=3,
            partitions=args.partitions,
            replicas=3,
            base_port=free_base_port(3),
            fsync="always",
        )
        cluster.start(timeout_s=60.0)
        cleanup.callback(cluster.stop)
        port = int(next(iter(cluster.addresses.values())).rsplit(":", 1)[1])
        for n in range(args.rounds):
            got = _round(port, cluster=True, requests=args.requests, clients=args.clients)
            planaria_rounds.append(got)
            anchor = _round(redis_port, cluster=False, requests=args.requests, clients=args.clients)
            redis_rounds.append(anchor)
            print(f"round {n + 1}: planaria {got} redis {anchor}", flush=True)
    planaria = {t: statistics.median(r[t] for r in planaria_rounds) for t in TESTS}
    redis = {t: statistics.median(r[t] for r in redis_rounds) for t in TESTS}
    # Ratios per round, then their median (the rounds share the machine's load alike).
    get_ratio = statistics.median(
        p["get"] / r["get"] for p, r in zip(planaria_rounds, redis_rounds, strict=True)
    )
    incr_ratio = statistics.median(p["incr"] / p["set"] for p in planaria_rounds)
    hset_ratio = statistics.median(p["hset"] / p["set"] for p in planaria_rounds)
    results = {
        "requests": args.requests,
        "clients": args.clients,
        "partitions": args.partitions,
        "rounds": {"planaria": planaria_rounds, "redis": redis_rounds},
        "medians": {"planaria": planaria, "redis": redis},
        "get_vs_redis": round(get_ratio, 3),
        "incr_vs_set": round(incr_ratio, 3),
        "hset_vs_set": round(hset_ratio, 3),
        "get_met": get_ratio >= 0.5,
        "incr_met": incr_ratio >= 0.9,
        "hset_met": hset_ratio >= 0.9,
        "seconds": round(time.monotonic() - began),
    }
    print(
        f"planaria (3 nodes, fsync always) requests/s: {planaria}\n"
        f"redis-server (one, no persistence): {redis}\n"
        f"GET {get_ratio:.2f}x of redis-server (target >= 0.5: "
        f"{'met' if results['get_met'] else 'MISSED'}); INCR {incr_ratio:.2f}x and HSET "
        f"{hset_ratio:.2f}x of SET (target >= 0.9: "
        f"{'met' if results['incr_met'] else 'MISSED'} / "
        f"{'met' if results['hset_met'] else 'MISSED'})"
    )
    write_results("commands", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
