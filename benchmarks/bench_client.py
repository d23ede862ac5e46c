"""Per-operation overhead of planaria.Client against redis-py (``redis.Redis``), both talking
to the same real redis-server, single-threaded, side by side.

    .venv/bin/python benchmarks/bench_client.py [--ops N] [--repeats R]

redis-server runs on 127.0.0.1 with a free port in cluster mode (all 16384 slots on itself,
so planaria's client can bootstrap its map with CLUSTER SHARDS; redis-py talks to it as to
any Redis). Redis does not know REQID, so planaria's client runs with ``request_ids=False``:
the wire traffic of both clients is then the same GET and SET commands, and the difference is
the client's own cost (routing, deadline, breaker, retry bookkeeping). Each repeat times N
GETs and N SETs per client, the clients alternating which goes first; the table shows
median microseconds per op and the ratio planaria / redis-py.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import redis

from _common import write_results
from planaria.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis_cluster_node(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--logfile", "", "--dir", workdir,
         "--cluster-enabled", "yes", "--cluster-config-file", f"{workdir}/nodes.conf"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    admin = redis.Redis(port=port, socket_timeout=1.0)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            admin.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    while time.monotonic() < deadline:
        if b"cluster_state:ok" in admin.execute_command("CLUSTER", "INFO"):
            admin.close()
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the redis cluster node did not reach cluster_state:ok")


def per_op_us(op: Callable[[int], object], ops: int) -> float:
    start = time.perf_counter()
    for i in range(ops):
        op(i)
    return (time.perf_counter() - start) / ops * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=3000, help="operations per timed run")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("needs redis-server (apt-get install redis-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-client-") as workdir:
        proc, port = start_redis_cluster_node(workdir)
        try:
            results = run(port, args.ops, args.repeats)
        finally:
            proc.terminate()
            proc.wait(10)
    write_results("client", results)
    return 0


def run(port: int, ops: int, repeats: int) -> dict[str, object]:
    planaria_client = Client(f"127.0.0.1:{port}", request_ids=False)
    redis_client = redis.Redis(port=port)
    value = b"x" * 64
    keys = [f"key:{i % 1000}".encode() for i in range(ops)]
    clients: dict[str, dict[str, Callable[[int], object]]] = {
        "planaria": {
            "SET": lambda i: planaria_client.set(keys[i], value),
            "GET": lambda i: planaria_client.get(keys[i]),
        },
        "redis-py": {
            "SET": lambda i: redis_client.set(keys[i], value),
            "GET": lambda i: redis_client.get(keys[i]),
        },
    }
    # Warm up: connections, the cluster map, the keys present.
    for client in clients.values():
        per_op_us(client["SET"], min(ops, 1000))
        per_op_us(client["GET"], min(ops, 1000))
    samples: dict[tuple[str, str], list[float]] = {
        (name, op): [] for name in clients for op in ("SET", "GET")
    }
    for repeat in range(repeats):
        order = list(clients) if repeat % 2 == 0 else list(reversed(clients))
        for op in ("SET", "GET"):
            for name in order:
                samples[(name, op)].append(per_op_us(clients[name][op], ops))
    planaria_client.close()
    redis_client.close()

    print(f"{'op':<5}{'planaria µs/op':>16}{'redis-py µs/op':>16}{'ratio':>8}")
    table: dict[str, dict[str, float]] = {}
    for op in ("SET", "GET"):
        ours = statistics.median(samples[("planaria", op)])
        theirs = statistics.median(samples[("redis-py", op)])
        table[op] = {
            "planaria_us_per_op": round(ours, 2),
            "redis_py_us_per_op": round(theirs, 2),
            "ratio_planaria_over_redis_py": round(ours / theirs, 3),
            "planaria_overhead_us": round(ours - theirs, 2),
        }
        print(f"{op:<5}{ours:>16.1f}{theirs:>16.1f}{ours / theirs:>8.2f}")
    return {
        "ops_per_run": ops,
        "repeats": repeats,
        "redis_py": redis.__version__,
        "request_ids": False,
        "results": table,
    }


if __name__ == "__main__":
    sys.exit(main())
