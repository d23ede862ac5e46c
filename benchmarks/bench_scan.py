"""SCAN over a large key space while writes go on (issue 20's target: SCAN over a million
keys holds the partitions' write p99 within 2x of normal).

A 3-node cluster (processes, ``--partitions`` partitions, fsync ``always``) is preloaded
with ``--keys`` keys (one MSET per slot, pipelined straight to each slot's primary). Then,
``--repeats`` times, two phases of ``--seconds`` each, under the same write probe (``--writers``
threads of ``planaria.Client``, each SET timed from invoke to completion, on keys spread
over every partition, a tenth of them new keys, so the key index takes inserts too):

- ``without``: the probe alone;
- ``with``: the probe while ``--scanners`` processes (this script with ``--scan-node``)
  iterate every node's keys over and over (SCAN ... COUNT ``--count``, full iterations).

Printed: p50 and p99 of the probe's writes in each phase, their medians over the repeats
and the ratio of the p99s (target <= 2), and SCAN's rate (keys returned per second).

    PYTHONPATH=src python benchmarks/bench_scan.py --keys 1000000
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import hiredis

from _common import write_results
from planaria.client import Client
from planaria.cluster import LocalCluster, free_base_port
from planaria.core.slots import SLOTS, keyslot

VALUE = b"v" * 32


def _call(sock: socket.socket, reader: hiredis.Reader, command: list[bytes]) -> object:
    sock.sendall(_encode(command))
    while (reply := reader.gets()) is False:
        reader.feed(sock.recv(1 << 20))
    return reply


def _encode(command: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    parts += [b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in command]
    return b"".join(parts)


def _slot_owners(address: str) -> list[str]:
    """slot -> the address of its primary, from CLUSTER SLOTS."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        reply = _call(sock, hiredis.Reader(), [b"CLUSTER", b"SLOTS"])
    owners = [""] * SLOTS
    assert isinstance(reply, list)
    for start, end, primary, *_ in reply:
        owner = f"{primary[0].decode()}:{primary[1]}"
        for slot in range(start, end + 1):
            owners[slot] = owner
    return owners


def preload(addresses: list[str], keys: int, batch: int = 64) -> float:
    """SET ``keys`` keys: one MSET per slot (about keys / 16384 keys each, one log entry),
    pipelined ``batch`` at a time to each slot's primary; seconds it took."""
    owners = _slot_owners(addresses[0])
    by_slot: dict[int, list[bytes]] = {}
    for i in range(keys):
        key = b"key:%d" % i
        by_slot.setdefault(keyslot(key), []).append(key)
    by_node: dict[str, list[list[bytes]]] = {}
    for slot, slot_keys in by_slot.items():
        command = [b"MSET", *(part for key in slot_keys for part in (key, VALUE))]
        by_node.setdefault(owners[slot], []).append(command)
    started = time.perf_counter()

    def load(address: str, commands: list[list[bytes]]) -> None:
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as sock:
            reader = hiredis.Reader()
            pending = list(commands)
            while pending:
                chunk, pending = pending[:batch], pending[batch:]
                sock.sendall(b"".join(_encode(command) for command in chunk))
                failed: list[list[bytes]] = []
                for command in chunk:
                    while (reply := reader.gets()) is False:
                        reader.feed(sock.recv(1 << 20))
                    if reply != b"OK":
                        if b"TRYAGAIN" not in str(reply).encode():
                            raise RuntimeError(f"MSET answered {reply!r}")
                        failed.append(command)  # a partition settling: send it again
                if failed:
                    time.sleep(0.05)
                    pending = failed + pending

    threads = [threading.Thread(target=load, args=item) for item in by_node.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def probe(addresses: list[str], writers: int, keys: int, seconds: float) -> list[float]:
    """Latencies (s) of the writers' SETs over ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def write(worker: int) -> None:
        rng = random.Random(worker)
        mine: list[float] = []
        with Client(addresses, timeout_s=10.0) as db:
            n = 0
            while time.perf_counter() < stop:
                new = rng.random() < 0.1
                key = f"new:{worker}:{n}" if new else f"key:{rng.randrange(keys)}"
                begun = time.perf_counter()
                db.set(key, VALUE)
                mine.append(time.perf_counter() - begun)
                n += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def scan_node(address: str, count: int) -> int:
    """One full SCAN iteration of the node at ``address``: the keys it returned."""
    host, port = address.rsplit(":", 1)
    returned = 0
    with socket.create_connection((host, int(port))) as sock:
        reader = hiredis.Reader()
        cursor = b"0"
        while True:
            reply = _call(sock, reader, [b"SCAN", cursor, b"COUNT", b"%d" % count])
            if isinstance(reply, hiredis.ReplyError):  # TRYAGAIN: a partition not ready
                time.sleep(0.01)
                continue
            assert isinstance(reply, list), reply
            cursor, keys = reply
            returned += len(keys)
            if cursor == b"0":
                return returned


class Scanners:
    """``processes`` processes scanning every node in turn, again and again; counts the
    keys they return."""

    def __init__(self, addresses: list[str], processes: int, count: int) -> None:
        self.addresses = addresses
        self.count = count
        self.keys = 0
        self.iterations = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(processes)]

    def _run(self, n: int) -> None:
        i = n
        while not self._stop.is_set():
            address = self.addresses[i % len(self.addresses)]
            i += 1
            done = subprocess.run(
                [sys.executable, __file__, "--scan-node", address, "--count", str(self.count)],
                capture_output=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"scanning {address} failed: {done.stderr.decode()[-2000:]}")
            with self._lock:
                self.keys += int(done.stdout)
                self.iterations += 1

    def __enter__(self) -> Scanners:
        self.started = time.perf_counter()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.seconds = time.perf_counter() - self.started


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--scanners", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000, help="SCAN's COUNT")
    parser.add_argument("--scan-node", help="(internal) scan this node once, print the count")
    args = parser.parse_args()
    if args.scan_node is not None:
        print(scan_node(args.scan_node, args.count))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as root:
        cluster = LocalCluster(
            Path(root), nodes=3, partitions=args.partitions, replicas=3,
            base_port=free_base_port(3), fsync="always",
        )  # fmt: skip
        cluster.start(timeout_s=60.0)
        try:
            addresses = list(cluster.addresses.values())
            load_s = preload(addresses, args.keys)
            print(f"preloaded {args.keys} keys in {load_s:.1f} s")
            names = ("without_p50", "without_p99", "with_p50", "with_p99", "scan_keys_per_s")
            rows: dict[str, list[float]] = {name: [] for name in names}
            for repeat in range(args.repeats):
                alone = probe(addresses, args.writers, args.keys, args.seconds)
                with Scanners(addresses, args.scanners, args.count) as scanners:
                    scanned = probe(addresses, args.writers, args.keys, args.seconds)
                rate = scanners.keys / scanners.seconds
                for name, values in (("without", alone), ("with", scanned)):
                    rows[f"{name}_p50"].append(_quantile(values, 0.50) * 1000)
                    rows[f"{name}_p99"].append(_quantile(values, 0.99) * 1000)
                rows["scan_keys_per_s"].append(rate)
                print(
                    f"round {repeat + 1}: without scan p50 {rows['without_p50'][-1]:.2f} ms "
                    f"p99 {rows['without_p99'][-1]:.2f} ms ({len(alone)} writes); with scan "
                    f"p50 {rows['with_p50'][-1]:.2f} ms p99 {rows['with_p99'][-1]:.2f} ms "
                    f"({len(scanned)} writes); SCAN {rate:,.0f} keys/s, "
                    f"{scanners.iterations} node iterations"
                )
        finally:
            cluster.stop()
    medians = {name: statistics.median(values) for name, values in rows.items()}
    ratio = medians["with_p99"] / medians["without_p99"]
    print(
        f"medians of {args.repeats}: p99 without {medians['without_p99']:.2f} ms, with "
        f"{medians['with_p99']:.2f} ms: ratio {ratio:.2f} (target <= 2); p50 "
        f"{medians['without_p50']:.2f} / {medians['with_p50']:.2f} ms; SCAN "
        f"{medians['scan_keys_per_s']:,.0f} keys/s"
    )
    write_results("bench_scan", {"args": vars(args), "rounds": rows, "medians": medians,
                                 "p99_ratio": ratio, "preload_s": load_s})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
