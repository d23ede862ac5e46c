"""The running system on 127.0.0.1: failover, stability under load and throughput of a
3-node planaria cluster (R=3, default settings: fsync always), side by side with etcd and
Redis where an anchor exists. About 4 minutes with the defaults.

    .venv/bin/python benchmarks/bench_cluster.py [--steady-s 60] [--kills 5] [--stops 5]
        [--phases steady,get,kill,stop,stop-fast,put] [--keep DIR]

Phases (by default steady, get, kill, stop, stop-fast, put; one cluster for all; epochs are
read from the coordinator before and after each phase, so a failover no fault caused shows):

- steady: ``--steady-s`` of full load with no faults (8 ``planaria.Client`` threads writing
  and reading, plus ``redis-benchmark --cluster`` SET/GET with 16 clients in a loop);
  epoch changes (failovers) and config versions (ISR changes). Target 0 epoch changes.
- get: ``redis-benchmark -t get -n 100000 -c 50`` against planaria (``--cluster``) and a
  single redis-server (save '', appendonly no), alternating repeats, medians. Target >= 25%
  of Redis.
- put (last): durable replicated SET/s (R=3, fsync always), 16 threads x N puts of 100-byte values:
  planaria via ``planaria.Client`` (a client per thread) and via ``redis-benchmark --cluster
  -c 16``, against a 3-member etcd cluster (replicated as planaria is; defaults, temp data
  dirs; the leader) via its v3 JSON gateway with 16 keep-alive connections; informative: a
  single unreplicated etcd member the same way, and redis-benchmark -c 64. Alternating
  repeats, medians. Target planaria >= 3x the 3-member etcd.
- kill: kill -9 of the primary of the most partitions while probers write every partition
  (a thread each, 5 ms apart) and 4 loader threads write and read at full speed. Per affected
  partition, ms from the kill to the first write acknowledged by another node than the
  victim, completed after the kill (lower bound) and invoked after it (upper bound, the
  target's measure), and when the coordinator first held the new primary (server side). The
  node is restarted and must rejoin every ISR before the next run. Target p50 <= 400 ms.
  Anchors measured on this kind of machine (not re-run here; the chaos harness runs them):
  ZooKeeper 0.4-0.5 s, etcd 1.1-1.6 s, Redis Sentinel 2.2-2.3 s.
- stop: the same with SIGSTOP (no connection closes), SIGCONT once measured. Target p50
  <= 1.0 s. stop-fast: the same with the clients' ``attempt_timeout_s`` at 0.25 s.

When every primary sits on one node, redis-benchmark (which refuses a one-master cluster)
talks to that node without --cluster. Everything this starts is stopped on exit, also on
error, Ctrl-C or SIGTERM; a failed phase is recorded and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _cluster_anchors import (
    AnchorUnavailable,
    EtcdPutLoad,
    redis_benchmark_rps,
    running_etcd,
    running_redis,
    timed_threads,
)
from _cluster_load import (
    VALUE_BYTES,
    AckRecorder,
    WorkerPool,
    first_acks_after,
    percentile,
)
from _common import write_results
from planaria.client import Client
from planaria.cluster import LocalCluster, free_base_port, probe_keys
from planaria.coord import CONFIGS_PREFIX, decode_config
from planaria.coord.url import connect
from planaria.core.messages import PartitionConfig

# put last: under its load nodes have lost their sessions (spurious failovers, recorded as
# the phase's epoch changes), leaving every primary on one node and the next phase skewed.
PHASES = ("steady", "get", "kill", "stop", "stop-fast", "put")
TARGET_KILL_P50_MS = 400.0
TARGET_STOP_P50_MS = 1000.0
TARGET_PUT_RATIO = 3.0
TARGET_GET_RATIO = 0.25
ANCHORS_KILL = "ZooKeeper 0.4-0.5 s, etcd 1.1-1.6 s, Redis Sentinel 2.2-2.3 s"
VALUE = b"v" * VALUE_BYTES
# Set by SIGTERM: the SystemExit its handler raises could be caught inside a library, so
# every wait loop checks this too and raises again.
TERMINATING = threading.Event()


# --- cluster helpers --------------------------------------------------------------------------


def read_configs(url: str, timeout_s: float = 5.0) -> dict[int, PartitionConfig]:
    """Every partition's config as the coordinator holds it."""

    async def read() -> dict[int, PartitionConfig]:
        async with connect(url) as coordinator:
            items = await coordinator.list_prefix(CONFIGS_PREFIX)
        configs = (decode_config(item.value) for item in items)
        return {config.partition: config for config in configs}

    return asyncio.run(asyncio.wait_for(read(), timeout_s))


def wait_rejoined(cluster: LocalCluster, node: str, timeout_s: float) -> float:
    """Seconds until ``node`` is in the ISR of every partition it replicates and every
    partition serves; RuntimeError after ``timeout_s``."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        configs = read_configs(cluster.coordinator_url)
        mine = [c for c in configs.values() if node in c.replicas]
        if mine and all(node in c.isr for c in mine) and not cluster.unserved_partitions():
            return time.monotonic() - started
        sleep_checked(None, 0.1)
    raise RuntimeError(f"{node} did not rejoin every ISR within {timeout_s:g} s")


def planaria_rb(cluster: LocalCluster, arguments: Sequence[str]) -> dict[str, float]:
    """redis-benchmark against the cluster: ``--cluster`` through the first node, or, when
    every partition's primary is one node (redis-benchmark refuses a one-master cluster),
    straight to that node."""
    primaries = {c.primary for c in read_configs(cluster.coordinator_url).values()}
    if len(primaries) == 1 and None not in primaries:
        (only,) = primaries
        return redis_benchmark_rps(_port(cluster, str(only)), arguments, cluster=False)
    return redis_benchmark_rps(_port(cluster, cluster.node_ids[0]), arguments, cluster=True)


def nodes_cpu_s(cluster: LocalCluster) -> float:
    """User + system CPU seconds of the cluster's node processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for node in cluster.node_ids:
        pid = cluster.pid(node)
        if pid is None:
            continue
        with open(f"/proc/{pid}/stat") as stat:
            # The fields after the command name (in parentheses, may hold spaces).
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _port(cluster: LocalCluster, node: str) -> int:
    return int(cluster.address(node).rsplit(":", 1)[1])


def wait_healthy(cluster: LocalCluster, timeout_s: float) -> float:
    """Seconds until every partition serves with its full ISR (a fault phase starts from a
    healthy cluster, whatever the phase before it did); RuntimeError after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() < started + timeout_s:
        configs = read_configs(cluster.coordinator_url).values()
        if all(set(c.replicas) <= c.isr for c in configs) and not cluster.unserved_partitions():
            return time.monotonic() - started
        sleep_checked(None, 0.1)
    raise RuntimeError(f"the cluster did not get every ISR full within {timeout_s:g} s")


def busiest_primary(cluster: LocalCluster) -> tuple[str, list[int]]:
    configs = read_configs(cluster.coordinator_url)
    by_node: dict[str, list[int]] = {node: [] for node in cluster.node_ids}
    for config in configs.values():
        if config.primary is not None:
            by_node[config.primary].append(config.partition)
    victim = max(sorted(by_node), key=lambda node: len(by_node[node]))
    return victim, sorted(by_node[victim])


# --- 1 and 2: failover ------------------------------------------------------------------------


def fault_runs(
    cluster: LocalCluster,
    fault: signal.Signals,
    args: argparse.Namespace,
    options: dict[str, float],
) -> dict[str, Any]:
    runs_max = args.kills if fault == signal.SIGKILL else args.stops
    seeds = list(cluster.addresses.values())
    recorder = AckRecorder(cluster.partitions)
    pool = WorkerPool(
        seeds,
        recorder,
        probe_keys=list(probe_keys(cluster.partitions).values()),
        loaders=args.loaders,
        client_options=options,
    )
    runs: list[dict[str, Any]] = []
    healthy_after_s = wait_healthy(cluster, args.rejoin_timeout_s)
    pool.start()
    try:
        sleep_checked(pool, 1.0)  # connections made, maps loaded, writes flowing
        for run in range(runs_max):
            runs.append(one_fault(cluster, fault, recorder, pool, args))
            summary = runs[-1]
            print(
                f"  {fault.name} run {run + 1}/{runs_max}: {summary['victim']} "
                f"({len(summary['partitions'])} partitions), first ack invoked after: "
                f"{fmt_ms_list(summary['invoked_ms'])}; rejoined in {summary['rejoin_s']:.1f} s",
                flush=True,
            )
    finally:
        pool.stop()
    pool.check()
    lower = [ms for r in runs for ms in r["completed_ms"] if ms is not None]
    upper = [ms for r in runs for ms in r["invoked_ms"] if ms is not None]
    missing = sum(ms is None for r in runs for ms in r["invoked_ms"])
    reconfigured = [ms for r in runs for ms in r["new_primary_in_coordinator_ms"] if ms is not None]
    return {
        "runs": runs,
        "waited_for_full_isrs_s": round(healthy_after_s, 2),
        "samples": len(upper),
        "no_failover_within_timeout": missing,
        "completed_after_ms": stats_ms(lower),
        "invoked_after_ms": stats_ms(upper),
        "new_primary_in_coordinator_ms": stats_ms(reconfigured),
        "ops": dict(recorder.counts),
        "client_options": options,
    }


def one_fault(
    cluster: LocalCluster,
    fault: signal.Signals,
    recorder: AckRecorder,
    pool: WorkerPool,
    args: argparse.Namespace,
) -> dict[str, Any]:
    victim, affected = busiest_primary(cluster)
    pid = cluster.pid(victim)
    if pid is None:
        raise RuntimeError(f"{victim} is not running")
    victim_address = cluster.address(victim)
    recorder.start_window()
    fault_s = time.monotonic()
    os.kill(pid, fault)
    # When the coordinator first holds another primary: the server side alone, no client.
    reconfigured_ms: dict[int, float] = {}
    try:
        deadline = fault_s + args.fault_timeout_s
        while time.monotonic() < deadline:
            if len(reconfigured_ms) < len(affected):
                configs = read_configs(cluster.coordinator_url)
                seen_ms = (time.monotonic() - fault_s) * 1000
                for p in affected:
                    if p not in reconfigured_ms and configs[p].primary != victim:
                        reconfigured_ms[p] = seen_ms
            found = first_acks_after(recorder.snapshot(), affected, fault_s, victim_address)
            if len(reconfigured_ms) == len(affected) and all(
                upper is not None for _, upper in found.values()
            ):
                break
            sleep_checked(pool, 0.02)
        found = first_acks_after(recorder.stop_window(), affected, fault_s, victim_address)
    finally:
        if fault == signal.SIGKILL:
            cluster.start(victim)
        else:
            os.kill(pid, signal.SIGCONT)
    rejoin_s = wait_rejoined(cluster, victim, args.rejoin_timeout_s)
    sleep_checked(pool, 0.5)  # the restarted node serves a moment before the next fault
    return {
        "victim": victim,
        "partitions": affected,
        "completed_ms": [found[p][0] for p in affected],
        "invoked_ms": [found[p][1] for p in affected],
        "new_primary_in_coordinator_ms": [reconfigured_ms.get(p) for p in affected],
        "rejoin_s": round(rejoin_s, 2),
    }


def sleep_checked(pool: WorkerPool | None, seconds: float) -> None:
    if TERMINATING.is_set():
        raise SystemExit(128 + signal.SIGTERM)
    if pool is not None:
        pool.check()
    time.sleep(seconds)


def stats_ms(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(statistics.median(values), 1),
        "p99": round(percentile(values, 0.99), 1),
        "max": round(max(values), 1),
        "min": round(min(values), 1),
        "count": len(values),
    }


def fmt_ms_list(values: Sequence[float | None]) -> str:
    return " ".join("none" if v is None else f"{v:.0f}" for v in values) + " ms"


def client_options(args: argparse.Namespace) -> dict[str, float]:
    return {} if args.attempt_timeout_s is None else {"attempt_timeout_s": args.attempt_timeout_s}


# --- 3: spurious failovers ----------------------------------------------------------------


def steady(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    seeds = list(cluster.addresses.values())
    before = read_configs(cluster.coordinator_url)
    recorder = AckRecorder(cluster.partitions)
    pool = WorkerPool(
        seeds, recorder, loaders=args.steady_threads, client_options=client_options(args)
    )
    stopping = threading.Event()
    rb_rps: list[dict[str, float]] = []
    rb_errors: list[BaseException] = []
    load = ["-t", "set,get", "-d", str(VALUE_BYTES), "-r", "100000", "-n", "4000", "-c", "16"]

    def redis_benchmark_load() -> None:
        try:
            while not stopping.is_set():
                rb_rps.append(planaria_rb(cluster, load))
        except BaseException as exc:  # reported below
            rb_errors.append(exc)

    rb_thread = threading.Thread(target=redis_benchmark_load, daemon=True)
    isr_short_polls = 0
    primaries_changed_polls = 0
    polls = 0
    started = time.monotonic()
    pool.start()
    if args.steady_redis_benchmark:
        rb_thread.start()
    try:
        deadline = started + args.steady_s
        while time.monotonic() < deadline:
            sleep_checked(pool, min(1.0, max(0.0, deadline - time.monotonic())))
            now = read_configs(cluster.coordinator_url)
            polls += 1
            isr_short_polls += sum(len(c.isr) < len(c.replicas) for c in now.values())
            primaries_changed_polls += sum(
                c.primary != before[p].primary for p, c in now.items() if p in before
            )
    finally:
        stopping.set()
        pool.stop()
        if rb_thread.is_alive():
            rb_thread.join(90.0)
    elapsed = time.monotonic() - started
    pool.check()
    if rb_errors:
        raise RuntimeError(f"redis-benchmark load failed: {rb_errors[0]!r}") from rb_errors[0]
    after = read_configs(cluster.coordinator_url)
    epoch_changes = sum(after[p].epoch - before[p].epoch for p in before)
    version_changes = sum(after[p].version - before[p].version for p in before)
    counts = recorder.counts
    return {
        "duration_s": round(elapsed, 1),
        "client_threads": args.steady_threads,
        "redis_benchmark": args.steady_redis_benchmark,
        "epoch_changes": epoch_changes,
        "config_version_changes": version_changes,
        "polls": polls,
        "partition_polls_with_short_isr": isr_short_polls,
        "partition_polls_with_other_primary": primaries_changed_polls,
        "client_ops_per_s": round((counts["write_ok"] + counts["read_ok"]) / elapsed),
        "client_ops": dict(counts),
        "redis_benchmark_median_rps": {
            name: round(statistics.median(r[name] for r in rb_rps))
            for name in ("SET", "GET")
            if rb_rps and all(name in r for r in rb_rps)
        },
    }


# --- 4: durable SET throughput vs etcd ------------------------------------------------------


class ClientPutLoad:
    """``threads`` threads with a ``planaria.Client`` each (maps loaded before the clock
    starts), each doing ``puts`` SETs of distinct keys."""

    def __init__(self, seeds: list[str], threads: int) -> None:
        self._clients = [Client(seeds) for _ in range(threads)]
        for client in self._clients:
            client.get("warm-up")
        self._round = 0

    def run(self, puts: int) -> float:
        self._round += 1
        prefix = f"c{self._round}"

        def work(index: int) -> None:
            client = self._clients[index]
            for i in range(puts):
                client.set(f"{prefix}-{index}-{i}", VALUE)

        return len(self._clients) * puts / timed_threads(len(self._clients), work)

    def close(self) -> None:
        for client in self._clients:
            client.close()


def put_throughput(
    cluster: LocalCluster, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    seeds = list(cluster.addresses.values())
    cpu_us_per_set: dict[int, list[float]] = {}  # clients -> node CPU per SET, per run

    def set_benchmark(clients: int) -> Callable[[int], float]:
        def run(puts: int) -> float:
            # 3x the requests: redis-benchmark's rate of a run of 2-3 s is coarse (its
            # elapsed time is quantized), so longer runs.
            requests = 3 * args.threads * puts
            arguments = ["-t", "set", "-d", str(VALUE_BYTES), "-r", "1000000",
                         "-n", str(requests), "-c", str(clients)]  # fmt: skip
            cpu_before = nodes_cpu_s(cluster)
            rate = planaria_rb(cluster, arguments)["SET"]
            spent_s = nodes_cpu_s(cluster) - cpu_before
            cpu_us_per_set.setdefault(clients, []).append(spent_s / requests * 1e6)
            return rate

        return run

    with contextlib.ExitStack() as stack:
        client_load = ClientPutLoad(seeds, args.threads)
        stack.callback(client_load.close)
        contenders: dict[str, Callable[[int], float]] = {
            "planaria_client": client_load.run,
            "planaria_redis_benchmark": set_benchmark(args.threads),
            # Informative: how throughput grows with concurrency (latency-bound or not).
            "planaria_redis_benchmark_c64": set_benchmark(64),
        }
        skipped = None
        try:
            # The target's anchor: etcd replicated as planaria is (3 members, a put durable
            # on 2 of 3); the "about 1,900 puts/s with 16 threads" is of this shape.
            etcd3_port = stack.enter_context(running_etcd(workdir / "etcd3", members=3))
            contenders["etcd3"] = EtcdPutLoad(etcd3_port, args.threads, VALUE).run
            # Informative: one member, nothing replicated (a stronger anchor than asked for).
            etcd_port = stack.enter_context(running_etcd(workdir / "etcd"))
            contenders["etcd"] = EtcdPutLoad(etcd_port, args.threads, VALUE).run
        except AnchorUnavailable as exc:
            skipped = f"etcd skipped: {exc}"
            print(skipped, flush=True)
        failures: dict[str, list[str]] = {}
        samples = alternate(contenders, args.puts, args.repeats, warm_up=True, failures=failures)
    medians = median_rates(samples)
    result: dict[str, Any] = {
        "failed_runs": failures,
        "threads": args.threads,
        "puts_per_thread": args.puts,
        "value_bytes": VALUE_BYTES,
        "samples": {name: [round(v) for v in values] for name, values in samples.items()},
        "median_ops_per_s": medians,
        "etcd_skipped": skipped,
        # CPU time of the three node processes (user + system) per SET, summed: what a
        # replicated durable write costs the cluster, whatever the machine's other load.
        "node_cpu_us_per_set": {
            f"c{clients}": round(statistics.median(values))
            for clients, values in sorted(cpu_us_per_set.items())
        },
    }
    for anchor in ("etcd3", "etcd"):
        theirs = medians.get(anchor)
        for name, key in (
            ("planaria_client", f"ratio_client_over_{anchor}"),
            ("planaria_redis_benchmark", f"ratio_redis_benchmark_over_{anchor}"),
        ):
            ours = medians.get(name)
            result[key] = None if theirs is None or ours is None else round(ours / theirs, 2)
    return result


def median_rates(samples: dict[str, list[float]]) -> dict[str, int | None]:
    """The median of each contender's successful runs (None: none succeeded)."""
    return {name: round(statistics.median(v)) if v else None for name, v in samples.items()}


def alternate(
    contenders: dict[str, Callable[[int], float]],
    size: int,
    repeats: int,
    *,
    warm_up: bool,
    failures: dict[str, list[str]],
) -> dict[str, list[float]]:
    """Each contender ``repeats`` times with ``size``, the order rotated every repeat; one
    short untimed run each first when ``warm_up``. A run that fails is noted in
    ``failures`` and leaves no sample."""
    names = list(contenders)
    if warm_up:
        for name in names:
            try:
                contenders[name](max(1, size // 5))
            except RuntimeError as exc:
                failures.setdefault(name, []).append(f"warm-up: {str(exc)[-300:]}")
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            try:
                samples[name].append(contenders[name](size))
            except RuntimeError as exc:  # e.g. redis-benchmark lost track of the slot map
                failures.setdefault(name, []).append(str(exc)[-300:])
                print(f"  {name}: failed: {str(exc)[-200:]!r}", flush=True)
                continue
            print(f"  {name}: {samples[name][-1]:,.0f} ops/s", flush=True)
    return samples


# --- 5: GET throughput vs Redis ----------------------------------------------------------


def get_throughput(
    cluster: LocalCluster, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    populate = ["-t", "set", "-d", str(VALUE_BYTES), "-n", "1000", "-c", "4"]

    def gets(requests: int) -> list[str]:
        return ["-t", "get", "-n", str(requests), "-c", str(args.get_clients)]

    with running_redis(workdir / "redis") as redis_port:
        # The keys GET reads exist on both sides (redis-benchmark's key:<tag>:000000000000).
        planaria_rb(cluster, populate)
        redis_benchmark_rps(redis_port, populate, cluster=False)
        contenders = {
            "planaria": lambda n: planaria_rb(cluster, gets(n))["GET"],
            "redis": lambda n: redis_benchmark_rps(redis_port, gets(n), cluster=False)["GET"],
        }
        failures: dict[str, list[str]] = {}
        samples = alternate(contenders, args.gets, args.repeats, warm_up=False, failures=failures)
    medians = median_rates(samples)
    planaria, redis = medians["planaria"], medians["redis"]
    return {
        "failed_runs": failures,
        "requests": args.gets,
        "clients": args.get_clients,
        "samples": {name: [round(v) for v in values] for name, values in samples.items()},
        "median_ops_per_s": medians,
        "ratio_planaria_over_redis": None
        if not (planaria and redis)
        else round(planaria / redis, 3),
    }


# --- the table ---------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def print_table(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str, str, str]] = []
    failed = {p: r["error"] for p, r in results.items() if isinstance(r, dict) and "error" in r}
    for phase, error in failed.items():
        rows.append((f"{phase}: FAILED", error[:100], "", "", "MISSED"))
    for phase, template, target in (
        ("kill", "failover after kill -9", TARGET_KILL_P50_MS),
        ("stop", "failover after SIGSTOP", TARGET_STOP_P50_MS),
        ("stop-fast", "SIGSTOP, client attempt_timeout_s {}", TARGET_STOP_P50_MS),
    ):
        found = results.get(phase)
        if found is None or phase in failed:
            continue
        name = template.format(found["client_options"].get("attempt_timeout_s"))
        upper, lower = found["invoked_after_ms"], found["completed_after_ms"]
        if upper is None:
            rows.append((name, "no failover measured", "", f"p50 <= {target:.0f} ms", "MISSED"))
            continue
        anchor = ANCHORS_KILL if phase == "kill" else "-"
        rows.append((
            f"{name}, first ack invoked after (n={upper['count']})",
            f"p50 {upper['p50']:.0f} / p99 {upper['p99']:.0f} / max {upper['max']:.0f} ms",
            anchor,
            f"p50 <= {target:.0f} ms",
            verdict(upper["p50"] <= target and found["no_failover_within_timeout"] == 0),
        ))  # fmt: skip
        for label, found_ms, note in (
            ("first ack completed after", lower, "lower bound"),
            ("new primary in the coordinator", found["new_primary_in_coordinator_ms"],
             "server side (20 ms polls)"),
        ):  # fmt: skip
            if found_ms is not None:
                rows.append((
                    f"{name}, {label} (n={found_ms['count']})",
                    f"p50 {found_ms['p50']:.0f} / p99 {found_ms['p99']:.0f} / "
                    f"max {found_ms['max']:.0f} ms",
                    "", note, "",
                ))  # fmt: skip
    steady_result = results.get("steady")
    if steady_result is not None and "steady" not in failed:
        rows.append((
            f"epoch changes in {steady_result['duration_s']:.0f} s of full load",
            f"{steady_result['epoch_changes']} (config versions "
            f"+{steady_result['config_version_changes']}, client "
            f"{steady_result['client_ops_per_s']:,} ops/s)",
            "", "0", verdict(steady_result["epoch_changes"] == 0),
        ))  # fmt: skip
    quiet = {p: results[p]["epoch_changes_in_phase"] for p in ("put", "get") if p in results}
    if quiet:
        rows.append((
            "epoch changes during the throughput phases (no faults)",
            ", ".join(f"{p} {n}" for p, n in quiet.items()),
            "", "0", verdict(not any(quiet.values())),
        ))  # fmt: skip
    put = results.get("put")
    if put is not None and "put" not in failed:
        medians = put["median_ops_per_s"]
        etcd = medians.get("etcd3")
        single = medians.get("etcd")
        for name, label in (
            ("planaria_client", "planaria.Client"),
            ("planaria_redis_benchmark", "redis-benchmark --cluster"),
            ("planaria_redis_benchmark_c64", "redis-benchmark --cluster -c 64, informative"),
        ):
            ours = medians.get(name)
            threads = 64 if name.endswith("c64") else put["threads"]
            ratio = None if etcd is None or ours is None else ours / etcd
            informative = name.endswith("c64")
            rows.append((
                f"durable SET/s, {threads} clients ({label})",
                "every run failed" if ours is None else f"{ours:,}",
                "etcd: none" if etcd is None
                else f"etcd x3 {etcd:,} at 16 ({ratio:.2f}x)" if ratio is not None
                else f"etcd x3 {etcd:,}",
                "-" if informative else f">= {TARGET_PUT_RATIO:g}x etcd",
                "" if informative else "n/a" if ratio is None
                else verdict(ratio >= TARGET_PUT_RATIO),
            ))  # fmt: skip
            if single is not None and ours is not None and not informative:
                rows.append((
                    "  same, over a single unreplicated etcd member",
                    f"{ours:,}", f"etcd x1 {single:,} ({ours / single:.2f}x)", "", "informative",
                ))  # fmt: skip
        for clients, cpu_us in put.get("node_cpu_us_per_set", {}).items():
            rows.append((
                f"node CPU per durable SET, summed over 3 nodes ({clients})",
                f"{cpu_us:,} us", "", "", "informative",
            ))  # fmt: skip
        for name, errors in put["failed_runs"].items():
            rows.append((f"  {name}: {len(errors)} failed run(s)", errors[-1][-100:], "", "", ""))
    got = results.get("get")
    if got is not None and "get" not in failed:
        medians = got["median_ops_per_s"]
        ratio = got["ratio_planaria_over_redis"]
        rows.append((
            f"GET/s, redis-benchmark -c {got['clients']}",
            "every run failed" if medians["planaria"] is None else f"{medians['planaria']:,}",
            "redis: every run failed" if medians["redis"] is None
            else f"redis {medians['redis']:,}" + ("" if ratio is None else f" ({ratio:.1%})"),
            f">= {TARGET_GET_RATIO:.0%} of Redis",
            "n/a" if ratio is None else verdict(ratio >= TARGET_GET_RATIO),
        ))  # fmt: skip
    header = ("measure", "planaria", "anchor", "target", "")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(5)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (node logs)")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--kills", type=int, default=5, help="kill -9 runs")
    parser.add_argument("--stops", type=int, default=5, help="SIGSTOP runs")
    parser.add_argument("--loaders", type=int, default=4, help="full-speed threads in faults")
    parser.add_argument("--fault-timeout-s", type=float, default=10.0)
    parser.add_argument("--rejoin-timeout-s", type=float, default=30.0)
    parser.add_argument(
        "--attempt-timeout-s", type=float, default=None,
        help="the clients' attempt_timeout_s (default: planaria.Client's)",
    )  # fmt: skip
    parser.add_argument(
        "--fast-attempt-timeout-s", type=float, default=0.25,
        help="the clients' attempt_timeout_s in the stop-fast phase",
    )  # fmt: skip
    parser.add_argument("--steady-s", type=float, default=60.0)
    parser.add_argument("--steady-threads", type=int, default=8)
    parser.add_argument(
        "--no-steady-redis-benchmark", dest="steady_redis_benchmark", action="store_false",
        help="steady load from Client threads only",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=16, help="SET throughput threads")
    parser.add_argument("--puts", type=int, default=250, help="puts per thread per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gets", type=int, default=100_000)
    parser.add_argument("--get-clients", type=int, default=50)
    args = parser.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    return args


def run_phase(
    phase: str, cluster: LocalCluster, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    if phase == "steady":
        return steady(cluster, args)
    if phase == "put":
        return put_throughput(cluster, workdir, args)
    if phase == "get":
        return get_throughput(cluster, workdir, args)
    if phase == "kill":
        return fault_runs(cluster, signal.SIGKILL, args, client_options(args))
    if phase == "stop":
        return fault_runs(cluster, signal.SIGSTOP, args, client_options(args))
    fast = {"attempt_timeout_s": args.fast_attempt_timeout_s}
    return fault_runs(cluster, signal.SIGSTOP, args, fast)


def _terminate(signum: int, frame: object) -> None:
    TERMINATING.set()
    raise SystemExit(128 + signum)  # unwinds through every finally: processes stopped


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    results: dict[str, Any] = {"partitions": args.partitions, "nodes": 3, "replicas": 3}
    results["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    began = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        if args.keep is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        else:
            workdir = Path(args.keep).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
            print(f"keeping the data and logs in {workdir}", flush=True)
        cluster = LocalCluster(
            workdir / "planaria",
            nodes=3,
            partitions=args.partitions,
            replicas=3,
            base_port=free_base_port(3),
            fsync="always",
        )
        try:
            cluster.start(timeout_s=60.0)
            print(f"cluster: {cluster.addresses}, {args.partitions} partitions", flush=True)
            for phase in args.phases:
                sleep_checked(None, 0.0)
                print(f"--- {phase}", flush=True)
                t0 = time.monotonic()
                before = read_configs(cluster.coordinator_url)
                try:
                    results[phase] = run_phase(phase, cluster, workdir, args)
                except Exception as exc:  # recorded; the other phases still run
                    results[phase] = {"error": repr(exc)}
                    print(f"    {phase} failed: {exc!r}", flush=True)
                after = read_configs(cluster.coordinator_url)
                results[phase]["epoch_changes_in_phase"] = sum(
                    after[p].epoch - before[p].epoch for p in before
                )
                results[phase]["primaries_after"] = dict(
                    sorted(Counter(str(c.primary) for c in after.values()).items())
                )
                print(
                    f"    ({time.monotonic() - t0:.0f} s; epoch changes "
                    f"{results[phase]['epoch_changes_in_phase']}; primaries after: "
                    f"{results[phase]['primaries_after']})",
                    flush=True,
                )
        finally:
            cluster.stop()
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["anchors_failover_kill"] = ANCHORS_KILL + " (measured on this kind of machine)"
    results["command"] = "benchmarks/bench_cluster.py " + " ".join(argv)
    print()
    print_table(results)
    print(
        f"total {results['elapsed_s']:.0f} s; load average (1/5/15 min) at start "
        f"{results['load_average_at_start']}, at end {results['load_average_at_end']}"
    )
    write_results("cluster", results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
