"""What a node's Prometheus metrics cost (issue 22's target: scraping every second costs under
2 % of a loaded node's CPU).

Three measurements, in one process that runs the node(s) on its event loop:

1. **One scrape's CPU** (the event loop's thread, ``time.thread_time``): rendering the
   node's registry (what a scrape runs on the loop) on a 3-node in-process cluster with
   ``--partitions`` partitions (every node holds every partition: the worst case), median
   of ``--scrapes`` renders; its size in bytes and series. At one scrape a second this is
   the fraction of one CPU scraping takes.
2. **Scraping every second under load**: a 1-node, 1-partition cluster (fsync never) loaded
   by ``redis-benchmark -t set`` (another process; 10,000 keys, all written in a warm-up
   first), once with no scraper and once with a thread fetching ``/metrics`` over HTTP
   every second; this process's CPU per SET
   (``time.process_time``: the node, its disk thread and the scraper thread), runs
   alternated, medians. The difference is within the machine's noise at this rate: row 1
   is the precise figure.
3. **What every command pays** for its count and latency bucket (``CommandStats.record``,
   the name lookup, two clock reads, the callback's partial): a microbenchmark, set against
   the CPU per SET of row 2.

Run: ``PYTHONPATH=src python benchmarks/bench_metrics.py [--partitions 8 64 256]
[--requests 60000] [--repeats 3]``. Against a checkout before the metrics
(``PYTHONPATH=<old>/src``, the anchor) it runs row 2 without a scraper alone: the CPU per SET
before commands were counted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import statistics
import tempfile
import threading
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.exposition import generate_latest

from _common import write_results  # the script directory is on sys.path
from planaria.coord import MemoryCoordinator, MemoryStore
from planaria.net import server
from planaria.node import CLUSTER_KEY, Node, NodeSettings
from planaria.storage import FsyncPolicy

SETTINGS = NodeSettings(fsync=FsyncPolicy("never"))
# The keys SETs go to: few enough that the warm-up creates them all, so every run sees the
# same state (snapshots cost more as keys are added: later runs would cost more otherwise).
KEYS = 10_000
# False on a checkout before the metrics (the anchor): no scraping rows there.
HAS_METRICS = "metrics_listen" in inspect.signature(Node).parameters


async def start_cluster(
    root: Path, nodes: int, partitions: int
) -> tuple[list[Node], list[MemoryCoordinator]]:
    store = MemoryStore()
    admin = MemoryCoordinator(store)
    names = [f"n{i + 1}" for i in range(nodes)]
    spec = {
        "partitions": partitions,
        "replicas": nodes,
        "min_insync": min(2, nodes),
        "nodes": names,
    }
    await admin.create(CLUSTER_KEY, json.dumps(spec).encode())
    coordinators = [MemoryCoordinator(store) for _ in names]
    metrics: dict[str, Any] = {"metrics_listen": "127.0.0.1:0"} if HAS_METRICS else {}
    started = [
        Node(
            name,
            listen="127.0.0.1:0",
            bus_listen="127.0.0.1:0",
            coordinator=coordinator,
            data_dir=root / name,
            settings=SETTINGS,
            **metrics,
        )
        for name, coordinator in zip(names, coordinators, strict=True)
    ]
    await asyncio.gather(*(node.start() for node in started))
    deadline = time.monotonic() + 60
    while sum(len(n.serving_partitions()) for n in started) < partitions:
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster never served every partition")
        await asyncio.sleep(0.05)
    return started, [admin, *coordinators]


async def stop_cluster(nodes: list[Node], coordinators: list[MemoryCoordinator]) -> None:
    for node in nodes:
        await node.close()
    for coordinator in coordinators:
        await coordinator.close()


async def scrape_cpu(partitions: int, scrapes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        nodes, coordinators = await start_cluster(Path(tmp), 3, partitions)
        try:
            node = nodes[0]
            assert node._metrics is not None
            registry = node._metrics._registry
            samples = []
            for _ in range(scrapes):
                start = time.thread_time()
                text = generate_latest(registry)
                samples.append(time.thread_time() - start)
                await asyncio.sleep(0.01)
            series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
            return {
                "partitions_here": len(node.partitions),
                "scrape_cpu_ms": statistics.median(samples) * 1000,
                "bytes": len(text),
                "series": series,
            }
        finally:
            await stop_cluster(nodes, coordinators)


def _scraper(url: str, stop: threading.Event, counts: list[int]) -> None:
    while not stop.wait(1.0):
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        counts[0] += 1


async def cpu_per_set(node: Node, requests: int, scrape: bool) -> tuple[float, int]:
    """This process's CPU seconds per SET while redis-benchmark sends ``requests`` SETs."""
    stop = threading.Event()
    counts = [0]
    scraper = None
    if scrape:
        assert node.metrics_url is not None
        scraper = threading.Thread(target=_scraper, args=(node.metrics_url, stop, counts))
        scraper.start()
    start = time.process_time()
    bench = await asyncio.create_subprocess_exec(
        "redis-benchmark", "-p", str(node.port), "-t", "set", "-n", str(requests),
        "-c", "16", "-r", str(KEYS),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await bench.communicate()
    if bench.returncode != 0 or b"rror" in output:
        # An error reply (a lapsed lease on an overloaded machine) costs far less than a
        # SET: such a run measures nothing.
        raise RuntimeError(f"redis-benchmark saw errors: {output[-500:]!r}")
    spent = time.process_time() - start
    stop.set()
    if scraper is not None:
        await asyncio.to_thread(scraper.join)
    return spent / requests, counts[0]


async def under_load(requests: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        nodes, coordinators = await start_cluster(Path(tmp), 1, 1)
        try:
            node = nodes[0]
            await cpu_per_set(node, 5 * KEYS, False)  # warm up: every key exists
            off: list[float] = []
            on: list[float] = []
            scrapes = 0
            for _ in range(repeats):
                off.append((await cpu_per_set(node, requests, False))[0])
                if HAS_METRICS:
                    cost, count = await cpu_per_set(node, requests, True)
                    on.append(cost)
                    scrapes += count
            if not on:
                return {
                    "cpu_per_set_us_no_scrape": statistics.median(off) * 1e6,
                    "off_samples_us": [s * 1e6 for s in off],
                }
            return {
                "cpu_per_set_us_no_scrape": statistics.median(off) * 1e6,
                "cpu_per_set_us_scraped_every_s": statistics.median(on) * 1e6,
                "ratio": statistics.median(on) / statistics.median(off),
                "scrapes": scrapes,
                "off_samples_us": [s * 1e6 for s in off],
                "on_samples_us": [s * 1e6 for s in on],
            }
        finally:
            await stop_cluster(nodes, coordinators)


def per_command_ns() -> float:
    """What dispatching one command adds for its metrics, in ns (median of 7)."""
    stats = server.CommandStats()
    command_name = server._command_name

    def done(name: str, started_s: float, future: object) -> None:
        pass

    def added() -> None:
        started_s = time.perf_counter()
        name = command_name(b"SET")
        functools.partial(done, name, started_s)
        stats.record(name, False, time.perf_counter() - started_s)

    loops = 200_000
    return statistics.median(timeit.repeat(added, number=loops, repeat=7)) / loops * 1e9


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, Any] = {"scrape": [], "has_metrics": HAS_METRICS}
    for partitions in args.partitions if HAS_METRICS else ():
        row = await scrape_cpu(partitions, args.scrapes)
        results["scrape"].append(row)
        print(
            f"{row['partitions_here']:4d} partitions here: one scrape {row['scrape_cpu_ms']:.2f} "
            f"ms CPU ({row['scrape_cpu_ms'] / 10:.3f} % of a CPU at 1/s), {row['series']} "
            f"series, {row['bytes']} bytes"
        )
    load = await under_load(args.requests, args.repeats)
    results["load"] = load
    if not HAS_METRICS:
        print(f"anchor: CPU per SET {load['cpu_per_set_us_no_scrape']:.1f} us")
        write_results("metrics-anchor", results)
        return
    print(
        f"CPU per SET: {load['cpu_per_set_us_no_scrape']:.1f} us no scraper, "
        f"{load['cpu_per_set_us_scraped_every_s']:.1f} us scraped every second "
        f"(ratio {load['ratio']:.3f}, {load['scrapes']} scrapes)"
    )
    command_ns = per_command_ns()
    results["per_command_ns"] = command_ns
    share = command_ns / (load["cpu_per_set_us_no_scrape"] * 1000) * 100
    results["per_command_share_pct"] = share
    print(f"every command pays {command_ns:.0f} ns for its metrics: {share:.2f} % of a SET's CPU")
    write_results("metrics", results)


if __name__ == "__main__":
    asyncio.run(main())
