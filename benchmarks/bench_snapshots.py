"""Bounded memory and snapshot pauses on a running 3-node cluster (issue 17), etcd alongside.

Phases (``--phases``, default all):

- ``memory``: durable SETs of 100-byte values over ``--keys`` keys (``redis-benchmark
  --cluster -c 64 -P`` ``--pipeline``, fsync ``always``, the node's default snapshot
  policy), in steps of ``--checkpoint``; after each step every node's RSS and data
  directory size. Then one node is restarted: seconds until it listens again and until it
  is back in every ISR. Target:
  each node's RSS at the end within 1.5x of its RSS after the first step; disk within 2x
  of the live data plus the thresholds (docs/operations.md, "Snapshots").
- ``etcd``: the anchor, a 3-member etcd (``--snapshot-count`` left at its default) with the
  same writes (``--etcd-sets`` of them, 16 threads over the v3 JSON gateway, slower than
  planaria's load, so fewer by default): each member's RSS and disk after each step, then
  one member restarted: seconds until it answers a linearizable read.
- ``latency``: two clusters preloaded with ``--latency-keys`` keys, one that snapshots
  every ``--latency-snapshot-entries`` writes (2000: often, so that many writes meet one)
  and a baseline that takes none, measured in turn under the same load: a background
  ``redis-benchmark`` SET load (``-c 8``) and a probe of 4 ``planaria.Client`` threads
  whose every write's invoke and completion time is recorded. Each node logs each
  snapshot's end and duration; a probe write in flight while any node took a snapshot
  counts as "during", the others as "outside"; every write of the baseline as "without":
  p50 and p99 of each, ``--repeats`` rounds of ``--latency-seconds`` per cluster, medians.
  Target: p99 during within 2x of p99 without (the issue's "the p99 without one"). The
  ratio to "outside" is printed too: those writes fall in the gaps between snapshots,
  which the snapshotting partitions' own writes make rare and which come when they write
  least, so they are a biased baseline.

redis-benchmark in cluster mode puts every key it sends to one node under one hash tag, so
its keys land in one partition per primary (3 of the 16): ``-r`` is the key count over the
number of primaries, and each loaded partition holds a third of the keys (larger
snapshots than an even spread would make).

Short by default (``make bench``, about 10 minutes); the issue's sizes: ``--sets 10000000
--checkpoint 1000000 --max-seconds 1500 --etcd-sets 500000 --etcd-checkpoint 100000
--latency-keys 1000000`` (``--max-seconds``: as many steps as fit, on a slow machine).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.client
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from _cluster_anchors import (
    AnchorUnavailable,
    _etcd_put,
    _wait_etcd_put,
    _wait_port,
    stop_process,
    timed_threads,
)
from _common import write_results
from planaria.chaos._procs import free_ports
from planaria.client import Client
from planaria.cluster import LocalCluster, free_base_port
from planaria.core.compaction import SnapshotPolicy
from planaria.errors import PlanariaError
from planaria.storage.log import PREALLOCATE_BYTES_DEFAULT, SEGMENT_BYTES_DEFAULT

VALUE_BYTES = 100
KEY_BYTES = len("key:{xxx}:000000000000")  # redis-benchmark's key, with its hash tag
TARGET_RSS_RATIO = 1.5
TARGET_DISK_RATIO = 2.0
TARGET_P99_RATIO = 2.0


# --- measuring processes ------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident set size of a process (Linux /proc), MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def disk_mib(path: Path) -> float:
    """Bytes allocated on disk under ``path`` (as ``du`` counts them), MiB."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # removed by compaction meanwhile
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total / 2**20


# --- planaria -------------------------------------------------------------------------------


def new_cluster(path: Path, node_args: Sequence[str] = ()) -> LocalCluster:
    cluster = LocalCluster(
        path, nodes=3, partitions=16, replicas=3, base_port=free_base_port(3),
        fsync="always", node_args=node_args,
    )  # fmt: skip
    cluster.start(timeout_s=60.0)
    return cluster


def port_of(cluster: LocalCluster, node: str) -> int:
    return int(cluster.address(node).rsplit(":", 1)[1])


def primaries(cluster: LocalCluster) -> int:
    """How many nodes lead a partition (redis-benchmark tags keys per primary)."""
    return len({p.primary for p in cluster.status().partitions if p.primary is not None})


@dataclass(frozen=True, slots=True)
class RbResult:
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def redis_benchmark(
    cluster: LocalCluster, requests: int, clients: int, keys: int, pipeline: int = 1
) -> RbResult:
    """``redis-benchmark --cluster`` SETs of 100-byte values over about ``keys`` keys,
    ``pipeline`` requests in flight per connection (``-P``)."""
    if shutil.which("redis-benchmark") is None:
        raise AnchorUnavailable("redis-benchmark is not installed (apt-get install redis-tools)")
    per_tag = max(1, keys // max(1, primaries(cluster)))
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port_of(cluster, cluster.node_ids[0])),
            "-t", "set", "-d", str(VALUE_BYTES), "-r", str(per_tag), "-n", str(requests),
            "-c", str(clients), "-P", str(pipeline), "--cluster", "--csv"]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=120 + requests / 500, check=False
    )
    for line in done.stdout.splitlines():
        fields = [f.strip('"') for f in line.split(",")]
        if fields[0] == "SET" and len(fields) == 8:
            rps, _avg, _min, p50, _p95, p99, top = (float(f) for f in fields[1:])
            return RbResult(rps, p50, p99, top)
    raise RuntimeError(
        f"{' '.join(argv)} exited {done.returncode}: {done.stdout[-300:]!r} {done.stderr[-300:]!r}"
    )


def info_partitions(cluster: LocalCluster, node: str) -> list[dict[str, str]]:
    """The per-partition fields of a node's INFO (``p<N>:key=value,...`` lines)."""
    done = subprocess.run(
        ["redis-cli", "-p", str(port_of(cluster, node)), "info"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    found = []
    for line in done.stdout.splitlines():
        head, _, rest = line.partition(":")
        if head.startswith("p") and head[1:].isdigit() and "=" in rest:
            found.append(dict(item.split("=", 1) for item in rest.split(",")))
    return found


def snapshots_taken(cluster: LocalCluster) -> int:
    return sum(int(p["snapshots"]) for n in cluster.node_ids for p in info_partitions(cluster, n))


def wait_in_every_isr(cluster: LocalCluster, node: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        parts = cluster.status().partitions
        if all(node in p.isr for p in parts) and not cluster.unserved_partitions():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{node} did not rejoin every ISR within {timeout_s:g} s")


def load_step(
    cluster: LocalCluster, requests: int, keys: int, pipeline: int, failures: list[str]
) -> RbResult:
    """One step of the memory phase's load; when redis-benchmark gives up (it stops at a
    change of primaries, which a node on an overloaded machine may cause by losing its
    session), wait for every partition to serve and run the step again (the SETs it made
    count too: ``sets`` is a lower bound)."""
    for _ in range(3):
        try:
            return redis_benchmark(cluster, requests, 64, keys, pipeline)
        except RuntimeError as exc:
            failures.append(str(exc)[-200:])
            print(f"    step failed, retrying: {str(exc)[-200:]}", flush=True)
            cluster.wait_serving(timeout_s=120.0)
    raise RuntimeError(f"the load failed 3 times: {failures[-1]}")


def memory_phase(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    policy = SnapshotPolicy()
    with contextlib.closing(_Stopper(new_cluster(workdir / "memory"))) as stopper:
        cluster = stopper.cluster
        nodes = cluster.node_ids
        steps: list[dict[str, Any]] = []
        failures: list[str] = []
        written = 0
        load_started = time.monotonic()
        while written < args.sets and time.monotonic() - load_started < args.max_seconds:
            step = min(args.checkpoint, args.sets - written)
            started = time.monotonic()
            result = load_step(cluster, step, args.keys, args.pipeline, failures)
            written += step
            pids = {n: cluster.pid(n) for n in nodes}
            steps.append({
                "sets": written,
                "seconds": round(time.monotonic() - started, 1),
                "sets_per_s": round(result.rps),
                "rss_mib": {n: round(rss_mib(pid), 1) for n, pid in pids.items() if pid},
                "disk_mib": {n: round(disk_mib(cluster.data_dir / "nodes" / n), 1) for n in nodes},
            })  # fmt: skip
            print(f"    {steps[-1]}", flush=True)
        loaded = [p for p in info_partitions(cluster, nodes[0]) if int(p["last"]) > 1]
        entry_bytes = max(int(p["log_bytes"]) / max(1, int(p["log_entries"])) for p in loaded)
        # Live data: every key once (key, value, version); the thresholds: per partition,
        # what the log may hold beyond the snapshot before the next one (entries or bytes)
        # plus the catch-up tail, and the segment (the unit compaction deletes) with its
        # preallocation, which every partition has, loaded or not.
        live_mib = args.keys * (KEY_BYTES + VALUE_BYTES + 16) / 2**20
        per_loaded = (
            min(policy.log_bytes, policy.entries * entry_bytes)
            + policy.catchup_entries * entry_bytes
        )
        thresholds_mib = (
            len(loaded) * per_loaded
            + cluster.partitions * (SEGMENT_BYTES_DEFAULT + PREALLOCATE_BYTES_DEFAULT)
        ) / 2**20
        victim = nodes[-1]
        cluster.stop_node(victim)
        started = time.monotonic()
        cluster.start(victim, timeout_s=120.0)
        listening_s = time.monotonic() - started
        wait_in_every_isr(cluster, victim, 300.0)
        rejoined_s = time.monotonic() - started
    # The baseline: the RSS after the first million SETs (the first step in a
    # shorter run).
    first = next((s for s in steps if s["sets"] >= 1_000_000), steps[0])
    last = steps[-1]
    rss_ratio = {n: round(last["rss_mib"][n] / first["rss_mib"][n], 2) for n in nodes}
    disk_bound = 2 * (live_mib + thresholds_mib)
    return {
        "keys": args.keys,
        "sets": written,
        "steps": steps,
        "rss_baseline_sets": first["sets"],
        "rss_ratio_end_over_first": rss_ratio,
        "failed_steps": failures,
        "live_mib": round(live_mib, 1),
        "thresholds_mib": round(thresholds_mib, 1),
        "disk_bound_mib": round(disk_bound, 1),
        "disk_max_mib": max(last["disk_mib"].values()),
        "rss_met": all(r <= TARGET_RSS_RATIO for r in rss_ratio.values()),
        "disk_met": all(d <= disk_bound for d in last["disk_mib"].values()),
        "log_entry_bytes": round(entry_bytes),
        "loaded_partitions": len(loaded),
        "restart_listening_s": round(listening_s, 2),
        "restart_rejoined_s": round(rejoined_s, 2),
    }


class _Stopper:
    """Stops a cluster on ``close`` (so ``contextlib.closing`` stops it on any exit)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def close(self) -> None:
        self.cluster.stop()


# --- etcd -----------------------------------------------------------------------------------


@dataclass
class EtcdCluster:
    workdir: Path
    members: int = 3
    argvs: list[list[str]] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)

    def start(self) -> None:
        if shutil.which("etcd") is None:
            raise AnchorUnavailable("etcd is not installed (apt-get install -y etcd-server)")
        ports = free_ports(2 * self.members)
        self.client_ports, peer_ports = ports[: self.members], ports[self.members :]
        names = [f"bench{i}" for i in range(self.members)]
        initial = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports, strict=True)
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name, client, peer in zip(names, self.client_ports, peer_ports, strict=True):
            self.argvs.append(
                ["etcd", "--name", name, "--data-dir", str(self.workdir / name),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--logger", "zap", "--log-level", "error"]
            )  # fmt: skip
            self.processes.append(self._spawn(len(self.processes)))
        for index in range(self.members):
            self._wait(index)
        _wait_etcd_put(self.client_ports[0])

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"bench{index}.log", "ab") as out:
            return subprocess.Popen(
                self.argvs[index], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def _wait(self, index: int) -> None:
        log = self.workdir / f"bench{index}.log"
        _wait_port(self.processes[index], self.client_ports[index], "etcd", log)

    def restart(self, index: int) -> tuple[float, float]:
        """Stop member ``index`` and start it again: seconds until it listens, and until it
        answers a linearizable read."""
        stop_process(self.processes[index])
        started = time.monotonic()
        self.processes[index] = self._spawn(index)
        self._wait(index)
        listening = time.monotonic() - started
        deadline = started + 300.0
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection(
                "127.0.0.1", self.client_ports[index], timeout=2.0
            )
            try:
                connection.request("POST", "/v3/kv/range", '{"key": "a2V5LTA="}')
                if connection.getresponse().status == 200:
                    return listening, time.monotonic() - started
            except (OSError, http.client.HTTPException):
                pass  # not serving yet: try again
            finally:
                connection.close()
            time.sleep(0.02)
        raise RuntimeError("the restarted etcd member served no read within 300 s")

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


def etcd_phase(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    etcd = EtcdCluster(workdir / "etcd")
    threads = 16
    value = b"v" * VALUE_BYTES
    try:
        etcd.start()
        steps: list[dict[str, Any]] = []
        written = 0
        while written < args.etcd_sets:
            step = min(args.etcd_checkpoint, args.etcd_sets - written)
            per_thread = step // threads
            base = written

            def work(index: int, base: int = base, per_thread: int = per_thread) -> None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", etcd.client_ports[0], timeout=10.0
                )
                try:
                    for i in range(per_thread):
                        key = b"key-%d" % ((base + index * per_thread + i) % args.keys)
                        _etcd_put(connection, key, value)
                finally:
                    connection.close()

            elapsed = timed_threads(threads, work, timeout_s=3600.0)
            written += per_thread * threads
            steps.append({
                "sets": written,
                "sets_per_s": round(per_thread * threads / elapsed),
                "rss_mib": {f"m{i}": round(rss_mib(p.pid), 1)
                            for i, p in enumerate(etcd.processes)},
                "disk_mib": {f"m{i}": round(disk_mib(etcd.workdir / f"bench{i}"), 1)
                             for i in range(etcd.members)},
            })  # fmt: skip
            print(f"    {steps[-1]}", flush=True)
        listening_s, serving_s = etcd.restart(etcd.members - 1)
    finally:
        etcd.stop()
    first, last = steps[0], steps[-1]
    return {
        "steps": steps,
        "rss_ratio_end_over_first": {
            m: round(last["rss_mib"][m] / first["rss_mib"][m], 2) for m in last["rss_mib"]
        },
        "restart_listening_s": round(listening_s, 2),
        "restart_serving_s": round(serving_s, 2),
    }


# --- latency while snapshots are taken --------------------------------------------------------

SNAPSHOT_LINE = re.compile(
    r"^(\S+ \S+) (\S+) planaria\.node INFO p(\d+): snapshot at \d+ stored, (\d+) keys: "
    r"([0-9.]+) ms on the loop, ([0-9.]+) ms in all \(encoding ([0-9.]+) ms, file ([0-9.]+) "
    r"ms, rename ([0-9.]+) ms\)"
)
# A snapshot's steps in order (docs/operations.md, "Snapshots"): serialising on the loop in
# turns, writing and fsyncing its file in a storage thread, then renaming it into place and
# sealing the segment in the disk thread (queueing behind a write batch included).
PHASES = ("encoding", "file", "rename")


@dataclass(frozen=True, slots=True)
class SnapshotWindow:
    node: str
    partition: int
    keys: int
    start_s: float  # wall clock (time.time())
    end_s: float
    loop_ms: float
    phase_ms: tuple[float, float, float]  # PHASES' durations

    def phase_spans(self) -> list[tuple[str, float, float]]:
        spans, start = [], self.start_s
        for name, ms in zip(PHASES, self.phase_ms, strict=True):
            spans.append((name, start, start + ms / 1000))
            start += ms / 1000
        return spans


def snapshot_windows(cluster: LocalCluster) -> list[SnapshotWindow]:
    """Every snapshot the nodes' logs report: when it started and ended (the log line's
    time, less the snapshot's duration)."""
    found = []
    for node in cluster.node_ids:
        for line in cluster.log_path(node).read_text(errors="replace").splitlines():
            match = SNAPSHOT_LINE.match(line)
            if match is None:
                continue
            stamp, name, partition, keys, loop_ms, total_ms, *phase_ms = match.groups()
            # asctime is local time, as time.time() sees it (milliseconds after the comma).
            end = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            encoding, file, rename = (float(ms) for ms in phase_ms)
            found.append(SnapshotWindow(
                name, int(partition), int(keys), end - float(total_ms) / 1000, end,
                float(loop_ms), (encoding, file, rename),
            ))  # fmt: skip
    return found


class Probe:
    """``threads`` threads of ``planaria.Client`` SETs (100-byte values, random keys out of
    ``keys``), each write's invoke and completion time (wall clock) recorded."""

    def __init__(self, seeds: Sequence[str], threads: int, keys: int) -> None:
        self._seeds = list(seeds)
        self._keys = keys
        self._stopping = threading.Event()
        self.writes: list[tuple[float, float]] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Probe:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(30.0)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        value = b"p" * VALUE_BYTES
        mine: list[tuple[float, float]] = []
        try:
            with Client(self._seeds) as client:
                while not self._stopping.is_set():
                    key = f"probe-{rng.randrange(self._keys)}"
                    invoked = time.time()
                    client.set(key, value)
                    mine.append((invoked, time.time()))
        except PlanariaError as exc:  # reported with the result; the other threads go on
            self.errors.append(exc)
        with self._lock:
            self.writes.extend(mine)


def classify(
    writes: Sequence[tuple[float, float]], windows: Sequence[SnapshotWindow]
) -> tuple[list[float], list[float]]:
    """Latencies (ms) of the writes in flight while some node took a snapshot, and of the
    others."""
    spans = sorted((w.start_s, w.end_s) for w in windows)
    starts = [start for start, _ in spans]
    during: list[float] = []
    outside: list[float] = []
    for invoked, completed in writes:
        # A window overlaps [invoked, completed] if it starts before completion and ends
        # after invocation; the windows are short, so look back over the ones starting
        # up to a minute before.
        last = bisect.bisect_right(starts, completed)
        first = bisect.bisect_left(starts, invoked - 60.0)
        hit = any(spans[i][1] >= invoked for i in range(first, last))
        (during if hit else outside).append((completed - invoked) * 1000)
    return during, outside


# A policy no round reaches: the baseline cluster takes no snapshot while it is measured.
NO_SNAPSHOTS = ("--snapshot-entries", str(10**12), "--snapshot-bytes", str(2**62))


def latency_round(
    cluster: LocalCluster, args: argparse.Namespace, background_log: Any
) -> tuple[list[tuple[float, float]], list[SnapshotWindow], int]:
    """One round: the background load on the big partitions (those that snapshot every
    --latency-snapshot-entries writes), the probe's writes on all of them; the probe's
    writes, the snapshots the nodes took (from their logs) since the probe began, and how
    many of the probe's writes failed."""
    per_tag = max(1, args.latency_keys // max(1, primaries(cluster)))
    port = port_of(cluster, cluster.node_ids[0])
    background = subprocess.Popen(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set",
         "-d", str(VALUE_BYTES), "-r", str(per_tag), "-n", "1000000000",
         "-c", str(args.latency_clients), "--cluster", "-q"],
        stdout=background_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with Probe(list(cluster.addresses.values()), args.probe_threads, 100_000) as probe:
            time.sleep(args.latency_seconds)
    finally:
        stop_process(background)
    if not probe.writes:
        raise RuntimeError(f"the probe wrote nothing; errors {probe.errors[:1]}")
    first_write = min(w[0] for w in probe.writes)
    windows = [w for w in snapshot_windows(cluster) if w.end_s >= first_write]
    return probe.writes, windows, len(probe.errors)


def phase_latencies(
    writes: Sequence[tuple[float, float]], windows: Sequence[SnapshotWindow]
) -> dict[str, list[float]]:
    """Latencies (ms) of the writes in flight during each step of some node's snapshot."""
    found: dict[str, list[float]] = {name: [] for name in PHASES}
    spans = sorted(span for window in windows for span in window.phase_spans())
    for name in PHASES:
        mine = [(start, end) for phase, start, end in spans if phase == name]
        for invoked, completed in writes:
            if any(start < completed and end > invoked for start, end in mine):
                found[name].append((completed - invoked) * 1000)
    return found


def phase_shares(
    writes: Sequence[tuple[float, float]], windows: Sequence[SnapshotWindow]
) -> dict[str, float]:
    """Per step, its time summed over every snapshot, over the probe's span (above 1: two
    nodes in that step at once, on average)."""
    first = min(invoked for invoked, _ in writes)
    last = max(completed for _, completed in writes)
    totals = dict.fromkeys(PHASES, 0.0)
    for window in windows:
        for name, start, end in window.phase_spans():
            totals[name] += max(0.0, min(end, last) - max(start, first))
    return {name: round(total / max(last - first, 1e-9), 2) for name, total in totals.items()}


def latency_phase(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    policy = ("--snapshot-entries", str(args.latency_snapshot_entries))
    extra = tuple(args.node_arg)
    with contextlib.ExitStack() as stack:
        clusters = {}
        for name, node_args in (("snapshots", policy + extra), ("baseline", NO_SNAPSHOTS + extra)):
            started = time.monotonic()
            cluster = stack.enter_context(
                contextlib.closing(_Stopper(new_cluster(workdir / f"latency-{name}", node_args)))
            ).cluster
            # Enough random SETs that most keys exist (1 - e^-2 of them).
            redis_benchmark(cluster, 2 * args.latency_keys, 64, args.latency_keys)
            print(f"    {name}: preloaded in {time.monotonic() - started:.0f} s", flush=True)
            clusters[name] = cluster
        rounds: list[dict[str, Any]] = []
        background_log = stack.enter_context(open(workdir / "background.log", "ab"))
        for _ in range(args.repeats):
            # The two clusters in turn under the same load (the idle one costs little).
            writes, windows, errors = latency_round(clusters["snapshots"], args, background_log)
            baseline, baseline_windows, baseline_errors = latency_round(
                clusters["baseline"], args, background_log
            )
            if baseline_windows:
                raise RuntimeError(f"the baseline cluster took {len(baseline_windows)} snapshots")
            during, outside = classify(writes, windows)
            if len(during) < 100 or len(outside) < 100:
                raise RuntimeError(
                    f"too few writes to compare: {len(during)} during a snapshot, "
                    f"{len(outside)} outside"
                )
            without = [(completed - invoked) * 1000 for invoked, completed in baseline]
            by_phase = phase_latencies(writes, windows)
            rounds.append({
                "writes_during": len(during),
                "writes_outside": len(outside),
                "writes_baseline": len(without),
                "p50_during_ms": round(percentile(during, 0.50), 2),
                "p99_during_ms": round(percentile(during, 0.99), 2),
                "p50_outside_ms": round(percentile(outside, 0.50), 2),
                "p99_outside_ms": round(percentile(outside, 0.99), 2),
                "p50_baseline_ms": round(percentile(without, 0.50), 2),
                "p99_baseline_ms": round(percentile(without, 0.99), 2),
                "snapshots": len(windows),
                "snapshot_keys_max": max((w.keys for w in windows), default=0),
                "snapshot_loop_ms_max": max((w.loop_ms for w in windows), default=0.0),
                "snapshot_ms_median": round(
                    statistics.median([(w.end_s - w.start_s) * 1000 for w in windows] or [0.0])
                ),
                "probe_errors": errors + baseline_errors,
                # Where the slow writes of "during" are: p99 of those overlapping each step
                # of any node's snapshot, and the share of the time some node spends in it.
                "p99_by_phase_ms": {
                    name: round(percentile(found, 0.99), 2) if found else None
                    for name, found in by_phase.items()
                },
                "phase_time_share": phase_shares(writes, windows),
            })  # fmt: skip
            print(f"    {rounds[-1]}", flush=True)
    medians = {
        name: statistics.median(r[name] for r in rounds)
        for name in (
            "p50_during_ms", "p99_during_ms", "p50_outside_ms", "p99_outside_ms",
            "p50_baseline_ms", "p99_baseline_ms",
        )
    }  # fmt: skip
    ratio = medians["p99_during_ms"] / medians["p99_baseline_ms"]
    return {
        "keys": args.latency_keys,
        "snapshot_entries": args.latency_snapshot_entries,
        "background_clients": args.latency_clients,
        "probe_threads": args.probe_threads,
        "rounds": rounds,
        "medians": medians,
        "p99_ratio": round(ratio, 2),
        "p99_ratio_outside": round(medians["p99_during_ms"] / medians["p99_outside_ms"], 2),
        "p99_met": ratio <= TARGET_P99_RATIO,
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="memory,etcd,latency")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--sets", type=int, default=300_000)
    parser.add_argument("--checkpoint", type=int, default=100_000)
    parser.add_argument(
        "--pipeline", type=int, default=1,
        help="memory phase: SETs in flight per connection (redis-benchmark -P; 64 connections)",
    )  # fmt: skip
    parser.add_argument(
        "--max-seconds", type=float, default=float("inf"),
        help="memory phase: stop loading at the first checkpoint after this many seconds",
    )  # fmt: skip
    parser.add_argument("--etcd-sets", type=int, default=50_000)
    parser.add_argument("--etcd-checkpoint", type=int, default=10_000)
    parser.add_argument("--latency-keys", type=int, default=100_000)
    parser.add_argument("--latency-snapshot-entries", type=int, default=2000)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--latency-clients", type=int, default=8)
    parser.add_argument("--probe-threads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="keep the data and logs in this directory")
    parser.add_argument(
        "--node-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="latency phase: an argument for every node of both clusters (repeat it; e.g. "
        "--node-arg=--gil-switch-interval-ms=5 for Python's own switch interval)",
    )
    return parser.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    results: dict[str, Any] = {"command": "benchmarks/bench_snapshots.py " + " ".join(argv)}
    results["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    phases = {"memory": memory_phase, "etcd": etcd_phase, "latency": latency_phase}
    with contextlib.ExitStack() as cleanup:
        if args.keep is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        else:
            workdir = Path(args.keep).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        for phase in args.phases.split(","):
            print(f"--- {phase}", flush=True)
            started = time.monotonic()
            try:
                results[phase] = phases[phase](workdir, args)
            except (AnchorUnavailable, RuntimeError, OSError) as exc:
                results[phase] = {"error": repr(exc)}
            results[phase]["seconds"] = round(time.monotonic() - started)
            print(f"    {phase}: {results[phase]}", flush=True)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_summary(results)
    write_results("snapshots", results)
    return 0


def print_summary(results: dict[str, Any]) -> None:
    memory, etcd, latency = (results.get(p, {}) for p in ("memory", "etcd", "latency"))
    if "steps" in memory:
        first = next(s for s in memory["steps"] if s["sets"] == memory["rss_baseline_sets"])
        last = memory["steps"][-1]
        print(
            f"planaria RSS MiB after {first['sets']:,}: {first['rss_mib']}; after "
            f"{last['sets']:,}: {last['rss_mib']} (ratio {memory['rss_ratio_end_over_first']},"
            f" target <= {TARGET_RSS_RATIO}: {'met' if memory['rss_met'] else 'MISSED'})"
        )
        print(
            f"planaria disk MiB at the end: {last['disk_mib']}, bound {memory['disk_bound_mib']}"
            f" (live {memory['live_mib']} + thresholds {memory['thresholds_mib']}, x2):"
            f" {'met' if memory['disk_met'] else 'MISSED'}; restart: listening "
            f"{memory['restart_listening_s']} s, in every ISR {memory['restart_rejoined_s']} s"
        )
    if "steps" in etcd:
        first, last = etcd["steps"][0], etcd["steps"][-1]
        print(
            f"etcd RSS MiB after {first['sets']:,}: {first['rss_mib']}; after "
            f"{last['sets']:,}: {last['rss_mib']}; disk {last['disk_mib']}; restart: "
            f"listening {etcd['restart_listening_s']} s, serving {etcd['restart_serving_s']} s"
        )
    if "medians" in latency:
        m = latency["medians"]
        print(f"write p99 ms while a snapshot is taken {m['p99_during_ms']}, on the cluster "
              f"that takes none {m['p99_baseline_ms']}: ratio {latency['p99_ratio']} (target <= "
              f"{TARGET_P99_RATIO}: {'met' if latency['p99_met'] else 'MISSED'}); p50 "
              f"{m['p50_during_ms']} vs {m['p50_baseline_ms']}; between snapshots on the "
              f"first cluster: p99 {m['p99_outside_ms']}, "
              f"ratio {latency['p99_ratio_outside']}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
