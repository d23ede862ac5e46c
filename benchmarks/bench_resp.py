"""RESP server throughput: planaria's RespServer (with the tests' toy in-memory handler)
against a real redis-server, both driven by redis-benchmark, side by side.

    .venv/bin/python benchmarks/bench_resp.py [--requests N] [--repeats R]

Runs ``redis-benchmark -t set,get -n N -c 50 -q`` (and the same with ``-P 16``, pipelined)
against each server in turn, alternating, R times; reports the median requests/s and the
ratio planaria / Redis. redis-server is started on 127.0.0.1 with a free port, ``--save ''
--appendonly no``, and stopped afterwards. Needs redis-server and redis-benchmark
(``apt-get install redis-server redis-tools``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "net"))
from _toy import ToyCluster, serving  # noqa: E402

CLIENTS = 50
MODES = {"plain": [], "pipeline16": ["-P", "16"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--logfile", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def run_benchmark(port: int, requests: int, extra: list[str]) -> dict[str, float]:
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
         "-n", str(requests), "-c", str(CLIENTS), "-q", *extra],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    # With -q, progress lines end in \r; the final line per test is "SET: 1234.5 requests ..."
    found = dict(re.findall(r"(SET|GET): ([\d.]+) requests per second", out))
    if set(found) != {"SET", "GET"}:
        raise RuntimeError(f"unexpected redis-benchmark output: {out[-300:]!r}")
    return {name: float(value) for name, value in found.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    missing = [tool for tool in ("redis-server", "redis-benchmark") if not shutil.which(tool)]
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install redis-server redis-tools")
        return 2
    samples: dict[str, dict[str, list[float]]] = {
        f"{system}/{mode}/{test}": {"rps": []}
        for system in ("planaria", "redis")
        for mode in MODES
        for test in ("SET", "GET")
    }
    redis_proc, redis_port = start_redis()
    try:
        with serving(ToyCluster(1)) as servers:
            ports = {"planaria": servers[0].port, "redis": redis_port}
            for repeat in range(args.repeats):
                for mode, extra in MODES.items():
                    # Alternate which system goes first, so drift hits both alike.
                    order = ("planaria", "redis") if repeat % 2 == 0 else ("redis", "planaria")
                    for system in order:
                        result = run_benchmark(ports[system], args.requests, extra)
                        for test, rps in result.items():
                            samples[f"{system}/{mode}/{test}"]["rps"].append(rps)
                        print(f"  repeat {repeat} {mode:10} {system:8} {result}", flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)

    results: dict[str, object] = {"requests": args.requests, "clients": CLIENTS, "rows": {}}
    rows: dict[str, object] = {}
    print(f"\nredis-benchmark -t set,get -n {args.requests} -c {CLIENTS} (median of "
          f"{args.repeats})")  # fmt: skip
    print(f"{'mode':11} {'test':4} {'planaria rps':>13} {'redis rps':>11} {'ratio':>6}")
    for mode in MODES:
        for test in ("SET", "GET"):
            ours = statistics.median(samples[f"planaria/{mode}/{test}"]["rps"])
            theirs = statistics.median(samples[f"redis/{mode}/{test}"]["rps"])
            rows[f"{mode}/{test}"] = {
                "planaria_rps": ours, "redis_rps": theirs, "ratio": ours / theirs,
                "planaria_samples": samples[f"planaria/{mode}/{test}"]["rps"],
                "redis_samples": samples[f"redis/{mode}/{test}"]["rps"],
            }  # fmt: skip
            print(f"{mode:11} {test:4} {ours:13,.0f} {theirs:11,.0f} {ours / theirs:6.2f}")
    results["rows"] = rows
    write_results("resp", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
