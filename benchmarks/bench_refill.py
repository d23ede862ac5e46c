"""A wiped node refilled by snapshot transfers on loopback, with the foreground write p99
meanwhile (issue 17's target: 50 MB/s or more, write p99 within 2x of normal).

    .venv/bin/python benchmarks/bench_refill.py [--keys 100000] [--value-bytes 1000]
        [--partitions 4] [--rates 0,67108864] [--repeats 1] [--keep DIR]

A 3-node cluster on 127.0.0.1 (R=3, fsync always) is loaded with ``--keys`` keys of
``--value-bytes`` random bytes (pipelined SETs to each partition's primary), and every
partition snapshots and compacts (so a node that lost everything can only be refilled by
snapshot transfers). Then, for each ``--snapshot-transfer-bytes-per-s`` value in ``--rates``
(0: the node's default) and each repeat: the node n3 is stopped, its data directory
deleted (a replaced disk), and started again; its partitions' primaries send it their
snapshots. Measured:

- refill rate: the snapshot bytes the primaries sent (INFO ``transfer_bytes_sent``, read
  before and after) over the time from the first chunk n3 holds to its last snapshot
  installed (n3's INFO, polled every 20 ms through both windows; MB = 10^6 bytes); all of
  a node's transfers share its throttle, and n3's partitions have several primaries;
- foreground writes: ``--writers`` threads of ``planaria.Client`` SET their own key every
  ``--pause-ms`` (paced, not saturating): p50/p99 latency while every node is up and in
  sync ("normal", the ``--baseline-s`` before the wipe), during the snapshot transfers
  (invoked after n3's first chunk, done before its last snapshot installed: the target's
  "meanwhile"), and during the whole refill (from the start of n3, whose replicas it opens,
  through the catch-up after the install, to its return to every ISR).

The anchor is the target itself (no other store is refilled side by side). About 2
minutes with the defaults; ``--keys 1000000`` for 1 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hiredis

from _cluster_load import AckRecorder, WorkerPool, percentile
from _common import write_results
from bench_cluster import read_configs, wait_healthy
from bench_restart import RETRIES, Pipe, key_of, value_of, wait_until
from planaria.cluster import LocalCluster, free_base_port
from planaria.cluster._resp import is_error, resp_command
from planaria.core.slots import keyslot, partition_of_slot

TARGET_MB_PER_S = 50.0
TARGET_P99_RATIO = 2.0
BATCH = 200


def info(cluster: LocalCluster, node: str, section: str) -> dict[str, str]:
    (reply,) = resp_command(cluster.address(node), ("INFO", section), timeout_s=5.0)
    if is_error(reply):  # a node still starting
        raise ConnectionError(f"INFO on {node}: {reply}")
    fields: dict[str, str] = {}
    for line in reply.decode().splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[name] = value
    return fields


def load(cluster: LocalCluster, keys: int, value_bytes: int, partitions: int) -> float:
    """SET every key on its partition's primary, pipelined, a thread per primary; SET/s."""
    configs = read_configs(cluster.coordinator_url)
    by_address: dict[str, list[int]] = defaultdict(list)
    for index in range(keys):
        partition = partition_of_slot(keyslot(key_of(index)), partitions)
        by_address[cluster.address(str(configs[partition].primary))].append(index)
    errors: list[BaseException] = []

    def work(address: str, indexes: list[int]) -> None:
        host, port = address.rsplit(":", 1)
        try:
            pipe = Pipe((host, int(port)))
            try:
                for start in range(0, len(indexes), BATCH):
                    batch = [
                        (b"SET", key_of(i), value_of(i, 0, value_bytes))
                        for i in indexes[start : start + BATCH]
                    ]
                    for _ in range(RETRIES):
                        replies = pipe.call(batch)
                        batch = [
                            c for c, r in zip(batch, replies, strict=True)
                            if isinstance(r, hiredis.ReplyError)
                        ]  # fmt: skip
                        if not batch:
                            break
                        time.sleep(0.05)  # TRYAGAIN/BUSY: a primary not ready yet
                    else:
                        raise RuntimeError(f"SETs refused {RETRIES} times on {address}")
            finally:
                pipe.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=item) for item in by_address.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return keys / (time.perf_counter() - started)


def compacted(cluster: LocalCluster) -> bool:
    """Every partition's primary has a snapshot and dropped the log before it (a wiped
    replica then needs a transfer)."""
    configs = read_configs(cluster.coordinator_url)
    for partition, config in configs.items():
        line = info(cluster, str(config.primary), "partitions").get(f"p{partition}", "")
        fields = dict(f.split("=", 1) for f in line.split(",") if "=" in f)
        if int(fields.get("snapshot_index", 0)) == 0:
            return False
    return True


class ReceiverWatch:
    """A thread that reads n3's INFO every ``interval_s`` (its chunks being received and its
    snapshots installed), from before the "normal" window to the end: whatever polling costs
    the nodes, both windows pay it. (It once polled both senders' INFO as well, and only
    during the refill: that alone made the foreground p99 about 2x, refill or not.)"""

    def __init__(self, cluster: LocalCluster, interval_s: float = 0.02) -> None:
        self._cluster = cluster
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._samples: list[tuple[float, int, int]] = []  # (time, receiving, installed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            now = time.monotonic()
            with contextlib.suppress(OSError):  # n3 stopped or starting
                fields = info(self._cluster, "n3", "cluster")
                sample = (
                    now,
                    int(fields["transfers_receiving"]),
                    int(fields["snapshots_installed"]),
                )
                with self._lock:
                    self._samples.append(sample)
                    del self._samples[:-1000]  # bounded: the last 20 s

    def samples_since(self, since: float) -> list[tuple[float, int, int]]:
        with self._lock:
            return [sample for sample in self._samples if sample[0] >= since]

    def __enter__(self) -> ReceiverWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def foreground(cluster: LocalCluster, args: argparse.Namespace) -> Iterator[AckRecorder]:
    recorder = AckRecorder(partitions=args.partitions)
    pool = WorkerPool(
        [cluster.address(node) for node in cluster.node_ids],
        recorder,
        probe_keys=[f"fg-{i}" for i in range(args.writers)],
        probe_pause_s=args.pause_ms / 1000,
    )
    pool.start()
    try:
        yield recorder
    finally:
        pool.stop()
    pool.check()


def latencies_ms(recorder: AckRecorder, seconds: float) -> list[float]:
    recorder.start_window()
    time.sleep(seconds)
    return [(a.completed_s - a.invoked_s) * 1000 for a in recorder.stop_window()]


def refill(
    cluster: LocalCluster, recorder: AckRecorder, watch: ReceiverWatch, args: argparse.Namespace
) -> dict[str, Any]:
    senders = [n for n in cluster.node_ids if n != "n3"]
    wait_healthy(cluster, 120.0)
    normal = latencies_ms(recorder, args.baseline_s)
    here = [p for p, c in read_configs(cluster.coordinator_url).items() if "n3" in c.replicas]
    cluster.stop_node("n3", timeout_s=30.0)
    shutil.rmtree(cluster.data_dir / "nodes" / "n3")  # a replaced disk
    sent_before = {n: int(info(cluster, n, "cluster")["transfer_bytes_sent"]) for n in senders}
    recorder.start_window()
    started = time.monotonic()
    cluster.start("n3", timeout_s=60.0)
    first_byte: float | None = None  # n3 held a chunk (a transfer under way, or installed)
    installed_at: float | None = None
    deadline = started + args.timeout_s
    while installed_at is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"n3 did not install {len(here)} snapshots in {args.timeout_s} s")
        for at, receiving, installed in watch.samples_since(started):
            if first_byte is None and (receiving or installed):
                first_byte = at
            if installed >= len(here):
                installed_at = at
                break
        time.sleep(0.02)
    sent = sum(
        int(info(cluster, n, "cluster")["transfer_bytes_sent"]) - sent_before[n] for n in senders
    )
    rejoined_s = wait_until(
        lambda: all("n3" in c.isr for c in read_configs(cluster.coordinator_url).values()
                    if "n3" in c.replicas),
        args.timeout_s, "n3 back in every ISR",
    )  # fmt: skip
    acks = recorder.stop_window()
    during = [(a.completed_s - a.invoked_s) * 1000 for a in acks]
    assert first_byte is not None
    sending = [
        (a.completed_s - a.invoked_s) * 1000
        for a in acks
        if first_byte <= a.invoked_s and a.completed_s <= installed_at
    ]
    transfer_s = installed_at - first_byte
    result = {
        "snapshot_mb": round(sent / 1e6, 1),
        "transfer_s": round(transfer_s, 3),
        "mb_per_s": round(sent / 1e6 / transfer_s, 1),
        "refill_to_isr_s": round(installed_at - started + rejoined_s, 2),
        "normal_p50_ms": round(percentile(normal, 0.5), 2),
        "normal_p99_ms": round(percentile(normal, 0.99), 2),
        "during_p50_ms": round(percentile(during, 0.5), 2),
        "during_p99_ms": round(percentile(during, 0.99), 2),
        "transfer_p99_ms": round(percentile(sending, 0.99), 2) if sending else None,
        "writes_normal": len(normal),
        "writes_during": len(during),
        "writes_transfer": len(sending),
    }
    if args.trace:  # the timeline, to see when the slow writes were (time.monotonic())
        result["trace"] = {
            "wiped_s": started,
            "first_byte_s": first_byte,
            "installed_s": installed_at,
            "normal_p99_ms": result["normal_p99_ms"],
            "writes": [
                (a.invoked_s, round((a.completed_s - a.invoked_s) * 1000, 3), a.address,
                 a.partition)
                for a in acks
            ],
        }  # fmt: skip
    result["p99_ratio"] = round(result["during_p99_ms"] / result["normal_p99_ms"], 2)
    if sending:
        result["transfer_p99_ratio"] = round(
            percentile(sending, 0.99) / percentile(normal, 0.99), 2
        )
    return result


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--rates", default="0",
        help="comma-separated --snapshot-transfer-bytes-per-s values (0: the default)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--pause-ms", type=float, default=5.0)
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it")
    parser.add_argument(
        "--trace", action="store_true",
        help="keep every write of each refill (invoked at, latency, node, partition) and"
        " the transfer's marks in the results file",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"args": vars(args), "runs": {}}
    rates = [float(r) for r in args.rates.split(",") if r]
    with contextlib.ExitStack() as cleanup:
        if args.keep is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="refill-")))
        else:
            workdir = Path(args.keep).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        for rate in rates:
            node_args = [] if rate <= 0 else ["--snapshot-transfer-bytes-per-s", str(rate)]
            label = "default" if rate <= 0 else f"{rate / 2**20:g} MiB/s"
            name = f"planaria-{rate:.0f}"
            cluster = LocalCluster(
                workdir / name, nodes=3, partitions=args.partitions,
                replicas=3, base_port=free_base_port(3), fsync="always", node_args=node_args,
            )  # fmt: skip
            cluster.start(timeout_s=60.0)
            try:
                rate_load = load(cluster, args.keys, args.value_bytes, args.partitions)
                print(f"[{label}] loaded {args.keys} keys: {rate_load:.0f} SET/s", flush=True)
                wait_until(lambda c=cluster: compacted(c), 300.0, "every partition snapshotted")
                runs = []
                with foreground(cluster, args) as recorder, ReceiverWatch(cluster) as watch:
                    for repeat in range(args.repeats):
                        run = refill(cluster, recorder, watch, args)
                        runs.append(run)
                        shown = {k: v for k, v in run.items() if k != "trace"}
                        print(f"  [{label}] run {repeat + 1}: {shown}", flush=True)
                results["runs"][label] = runs
            finally:
                cluster.stop()
    print()
    print("throttle      MB     MB/s   normal p99 ms  transfer p99 ms  ratio  "
          "refill p99 ms  ratio  to ISR s")  # fmt: skip
    for label, runs in results["runs"].items():
        mbps = statistics.median(r["mb_per_s"] for r in runs)
        ratio = statistics.median(r.get("transfer_p99_ratio") or math.inf for r in runs)
        print(
            f"{label:12}  {statistics.median(r['snapshot_mb'] for r in runs):5.0f}  {mbps:6.1f}"
            f"  {statistics.median(r['normal_p99_ms'] for r in runs):13.1f}"
            f"  {statistics.median(r['transfer_p99_ms'] or math.inf for r in runs):15.1f}"
            f"  {ratio:5.2f}"
            f"  {statistics.median(r['during_p99_ms'] for r in runs):13.1f}"
            f"  {statistics.median(r['p99_ratio'] for r in runs):5.2f}"
            f"  {statistics.median(r['refill_to_isr_s'] for r in runs):8.1f}   "
            f"(target >= {TARGET_MB_PER_S:g} MB/s: {verdict(mbps >= TARGET_MB_PER_S)};"
            f" p99 <= {TARGET_P99_RATIO:g}x: {verdict(ratio <= TARGET_P99_RATIO)})"
        )
    results["command"] = "benchmarks/bench_refill.py " + " ".join(argv)
    write_results("refill", results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
