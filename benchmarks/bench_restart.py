"""Restart of a node holding N bytes of live data, side by side with Redis loading an RDB
file of the same keys and values (issue 17's target: serving again in under 5 s with 1 GB,
independent of how many writes produced it).

    .venv/bin/python benchmarks/bench_restart.py [--keys 100000] [--value-bytes 1000]
        [--overwrites 1] [--repeats 3] [--crash] [--keep DIR]

planaria: a one-node cluster on 127.0.0.1 (R=1, ``--partitions`` 16, fsync always) is
loaded with ``--keys`` distinct keys of ``--value-bytes`` random (incompressible) bytes by
pipelined SETs over a few connections, ``--overwrites`` times over (each pass rewrites
every key with new bytes: the live data stays the same, the writes that produced it grow).
The node is then stopped (SIGTERM, or SIGKILL with ``--crash``) and started again; the time
is from the start of the process to the moment every partition answers a read on it (the
probe ``planaria up`` waits for), then a sample of keys is read back and checked.

Redis: one redis-server (no AOF) loaded with the same keys and values the same way, SAVEd
to an RDB file, stopped, and started again on that file; the time is from the start of the
process to its first PONG (it answers -LOADING until the RDB is loaded).

``--alternate-src DIR``: also restart the same node on the same data with the sources in
DIR (another checkout's ``src``: the code before a change), alternating with this one in
each repeat (no Redis then); both medians and their ratio.

Alternating repeats, medians. ~1 minute with the defaults (100 MB); 1 GB (``--keys
1000000``) takes ~10 minutes, most of it the load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import hiredis

from _cluster_anchors import AnchorUnavailable, free_port
from _common import write_results
from planaria.chaos._procs import log_tail, stop_process
from planaria.cluster import LocalCluster, free_base_port
from planaria.cluster._resp import resp_command

TARGET_RESTART_S = 5.0
BATCH = 500  # SETs per pipelined round trip
CONNECTIONS = 4
RETRIES = 2400  # of SETs refused with TRYAGAIN or BUSY, 50 ms apart: 2 minutes


def key_of(index: int) -> bytes:
    return b"key:%09d" % index


def value_of(index: int, generation: int, value_bytes: int) -> bytes:
    """Random bytes (an RDB compresses repetitive values; these must stay as large), the
    same for both stores, different in every pass."""
    return random.Random(index * 7919 + generation).randbytes(value_bytes)


class Pipe:
    """One RESP connection sending pipelined batches (a bounded wait for every reply)."""

    def __init__(self, address: tuple[str, int], timeout_s: float = 60.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout_s)
        self.reader = hiredis.Reader()

    def call(self, commands: Sequence[Sequence[bytes]]) -> list[Any]:
        payload = b"".join(
            b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in c)
            for c in commands
        )
        self.sock.sendall(payload)
        replies: list[Any] = []
        while len(replies) < len(commands):
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not False:
                replies.append(reply)
        return replies

    def close(self) -> None:
        self.sock.close()


def load(address: tuple[str, int], keys: int, value_bytes: int, generation: int) -> float:
    """SET every key (pipelined, ``CONNECTIONS`` threads); returns SET/s. Raises on any
    error reply (a refused write would leave the stores different)."""
    errors: list[BaseException] = []

    def work(part: int) -> None:
        try:
            pipe = Pipe(address)
            try:
                for start in range(part * BATCH, keys, CONNECTIONS * BATCH):
                    batch = [
                        (b"SET", key_of(i), value_of(i, generation, value_bytes))
                        for i in range(start, min(start + BATCH, keys))
                    ]
                    for _ in range(RETRIES):
                        replies = pipe.call(batch)
                        refused = [
                            (c, r) for c, r in zip(batch, replies, strict=True)
                            if isinstance(r, hiredis.ReplyError)
                        ]  # fmt: skip
                        if not refused:
                            break
                        if not all(str(r).startswith(("TRYAGAIN", "BUSY")) for _, r in refused):
                            raise RuntimeError(f"SET refused: {refused[0][1]}")
                        batch = [c for c, _ in refused]  # a primary not ready yet: again
                        time.sleep(0.05)
                    else:
                        raise RuntimeError(f"SET refused {RETRIES} times: {refused[0][1]}")
            finally:
                pipe.close()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(part,)) for part in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return keys / (time.perf_counter() - started)


def check_sample(address: tuple[str, int], keys: int, value_bytes: int, generation: int) -> None:
    """A sample of keys reads back as last written (a restart lost or mixed up nothing)."""
    sample = sorted(random.Random(1).sample(range(keys), min(keys, 200)))
    pipe = Pipe(address)
    try:
        replies = pipe.call([(b"GET", key_of(i)) for i in sample])
    finally:
        pipe.close()
    for index, reply in zip(sample, replies, strict=True):
        if reply != value_of(index, generation, value_bytes):
            raise RuntimeError(f"key {index} reads back wrong after the restart: {reply!r:.60}")


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.perf_counter()
    while time.perf_counter() < started + timeout_s:
        if check():
            return time.perf_counter() - started
        time.sleep(0.005)
    raise RuntimeError(f"{what} did not happen within {timeout_s:g} s")


# --- planaria ----------------------------------------------------------------------------------


@contextlib.contextmanager
def planaria_node(workdir: Path, args: argparse.Namespace) -> Iterator[LocalCluster]:
    ttl = args.session_ttl_ms
    node_args = [] if ttl is None else ["--session-ttl-ms", str(ttl)]
    cluster = LocalCluster(
        workdir / "planaria", nodes=1, partitions=args.partitions, replicas=1,
        base_port=free_base_port(1), fsync="always", node_args=node_args,
    )  # fmt: skip
    try:
        cluster.start(timeout_s=60.0)
        yield cluster
    finally:
        cluster.stop()


def _address(cluster: LocalCluster) -> tuple[str, int]:
    host, port = cluster.address("n1").rsplit(":", 1)
    return host, int(port)


def snapshots_caught_up(cluster: LocalCluster, entries_behind_max: int) -> bool:
    """Every partition's snapshot is at most ``entries_behind_max`` behind its log end."""
    (info,) = resp_command(cluster.address("n1"), ("INFO", "partitions"), timeout_s=5.0)
    lines = [line for line in info.decode().splitlines() if "snapshot_index=" in line]
    for line in lines:
        fields = dict(f.split("=", 1) for f in line.split(":", 1)[1].split(","))
        if int(fields["last"]) - int(fields["snapshot_index"]) > entries_behind_max:
            return False
    return bool(lines)


def planaria_restart(cluster: LocalCluster, args: argparse.Namespace) -> float:
    if args.crash:
        cluster.kill("n1")
    else:
        cluster.stop_node("n1", timeout_s=60.0)
    started = time.perf_counter()
    cluster.start("n1", timeout_s=60.0)
    wait_until(lambda: not cluster.unserved_partitions(), 120.0, "planaria serving again")
    return time.perf_counter() - started


# --- Redis -------------------------------------------------------------------------------------


def redis_argv(port: int, workdir: Path) -> list[str]:
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir),
            "--dbfilename", "dump.rdb", "--logfile", str(workdir / "redis.log")]  # fmt: skip


def redis_pong(port: int) -> bool:
    try:
        (reply,) = resp_command(f"127.0.0.1:{port}", ("PING",), timeout_s=5.0)
    except OSError:
        return False
    return bool(reply == b"PONG")


class Redis:
    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            raise AnchorUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Seconds from the process start to its first PONG (the RDB loaded)."""
        started = time.perf_counter()
        self.process = subprocess.Popen(
            redis_argv(self.port, self.workdir),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(lambda: redis_pong(self.port), 120.0, "redis-server answering PONG")
        except RuntimeError as exc:
            raise AnchorUnavailable(f"{exc}:\n{log_tail(self.workdir / 'redis.log')}") from exc
        return time.perf_counter() - started

    def stop(self) -> None:
        stop_process(self.process, timeout_s=60.0)
        self.process = None


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=1000)
    parser.add_argument("--overwrites", type=int, default=1, help="load passes over every key")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crash", action="store_true", help="SIGKILL the node, not SIGTERM")
    parser.add_argument("--no-redis", dest="redis", action="store_false")
    parser.add_argument(
        "--session-ttl-ms", type=float, default=None,
        help="the node's (default its own, 300 ms): a machine so loaded that the node's "
        "keep-alives miss it loses the session during the load, again and again",
    )  # fmt: skip
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it")
    parser.add_argument(
        "--alternate-src", metavar="DIR",
        help="restart with the sources in DIR too, alternating (the code before a change)",
    )  # fmt: skip
    return parser.parse_args(argv)


def alternate(
    cluster: LocalCluster, args: argparse.Namespace, address: tuple[str, int]
) -> dict[str, Any]:
    """Restarts of the node with this checkout's sources and with ``--alternate-src``'s,
    alternating, on the same data (each restart's sample read back)."""
    ours = os.environ.get("PYTHONPATH", "")
    theirs = str(Path(args.alternate_src).resolve())
    times: dict[str, list[float]] = {"this": [], "alternate": []}
    try:
        for repeat in range(args.repeats):
            for name, path in (("this", ours), ("alternate", theirs)):
                os.environ["PYTHONPATH"] = path  # the node process started next runs it
                times[name].append(planaria_restart(cluster, args))
                check_sample(address, args.keys, args.value_bytes, args.overwrites - 1)
            print(f"  run {repeat + 1}: this {times['this'][-1]:.2f} s, "
                  f"alternate {times['alternate'][-1]:.2f} s", flush=True)  # fmt: skip
    finally:
        os.environ["PYTHONPATH"] = ours
    this_s, other_s = statistics.median(times["this"]), statistics.median(times["alternate"])
    print(f"restart: this {this_s:.2f} s, alternate ({theirs}) {other_s:.2f} s, "
          f"ratio {this_s / other_s:.2f}x")  # fmt: skip
    return {
        "this_restart_s": [round(s, 3) for s in times["this"]],
        "alternate_restart_s": [round(s, 3) for s in times["alternate"]],
        "alternate_src": theirs,
        "ratio": round(this_s / other_s, 3),
    }


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    live_mb = args.keys * (args.value_bytes + len(key_of(0))) / 1e6
    results: dict[str, Any] = {"args": vars(args), "live_mb": round(live_mb, 1)}
    stop = "kill -9" if args.crash else "SIGTERM"
    print(f"{args.keys} keys x {args.value_bytes} B (~{live_mb:.0f} MB live), "
          f"{args.overwrites} pass(es), {stop}", flush=True)  # fmt: skip
    with contextlib.ExitStack() as cleanup:
        if args.keep is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="restart-")))
        else:
            workdir = Path(args.keep).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        planaria_s: list[float] = []
        redis_s: list[float] = []
        cluster = cleanup.enter_context(planaria_node(workdir, args))
        address = _address(cluster)
        rates = [load(address, args.keys, args.value_bytes, g) for g in range(args.overwrites)]
        print(f"planaria loaded: {statistics.median(rates):.0f} SET/s", flush=True)
        # Let every partition snapshot what it has (as a node that ran a while would).
        wait_until(lambda: snapshots_caught_up(cluster, 10_000), 300.0, "snapshots")
        results["planaria_load_set_per_s"] = round(statistics.median(rates))
        results["planaria_disk_mb"] = round(disk_bytes(workdir / "planaria" / "nodes") / 1e6, 1)
        if args.alternate_src is not None:
            results.update(alternate(cluster, args, address))
            results["command"] = "benchmarks/bench_restart.py " + " ".join(argv)
            write_results("restart_alternate", results)
            return 0
        redis = Redis(workdir / "redis") if args.redis else None
        if redis is not None:
            redis.start()
            cleanup.callback(redis.stop)
            rates = [
                load(("127.0.0.1", redis.port), args.keys, args.value_bytes, g)
                for g in range(args.overwrites)
            ]
            (saved,) = resp_command(f"127.0.0.1:{redis.port}", ("SAVE",), timeout_s=600.0)
            assert saved == b"OK", saved
            redis.stop()
            results["redis_rdb_mb"] = round((redis.workdir / "dump.rdb").stat().st_size / 1e6, 1)
            print(f"redis loaded: {statistics.median(rates):.0f} SET/s", flush=True)
        last = args.overwrites - 1
        for repeat in range(args.repeats):
            planaria_s.append(planaria_restart(cluster, args))
            check_sample(address, args.keys, args.value_bytes, last)
            line = f"  run {repeat + 1}: planaria {planaria_s[-1]:.2f} s"
            if redis is not None:
                redis_s.append(redis.start())
                check_sample(("127.0.0.1", redis.port), args.keys, args.value_bytes, last)
                redis.stop()
                line += f", redis {redis_s[-1]:.2f} s"
            print(line, flush=True)
    results["planaria_restart_s"] = [round(s, 3) for s in planaria_s]
    results["redis_restart_s"] = [round(s, 3) for s in redis_s]
    median_p = statistics.median(planaria_s)
    met = "met" if median_p < TARGET_RESTART_S else "missed"
    print(f"restart with {live_mb:.0f} MB live: planaria median {median_p:.2f} s "
          f"(target < {TARGET_RESTART_S:g} s: {met})", end="")  # fmt: skip
    if redis_s:
        median_r = statistics.median(redis_s)
        results["ratio"] = round(median_p / median_r, 2)
        print(f"; Redis RDB load median {median_r:.2f} s; ratio {median_p / median_r:.2f}x")
    else:
        print()
    results["command"] = "benchmarks/bench_restart.py " + " ".join(argv)
    write_results("restart", results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
