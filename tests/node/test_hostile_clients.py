"""Real node processes against hostile clients (issue #16): a stream of hostile request
headers leaves a node answering, with bounded memory and its primaries; a node whose event
loop is wedged leaves the cluster and exits, so a supervisor can restart it."""

from __future__ import annotations

import random
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from planaria.core.slots import keyslot, partition_of_slot
from planaria.node import EXIT_LOOP_STALLED

from ._procs import WEDGEABLE_CLI, ProcCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CONNECTIONS = 3000
WORKERS = 32
HELD_OPEN = 200  # connections left open, each holding a partial hostile request
RSS_MAX_KB = 300 * 1024
TIMEOUT_S = 5.0

# Refused at once with a protocol error.
REFUSED = [
    b"*546681266\r\n$1\r\nx\r\n",  # the 19 bytes: hiredis sized a 4.4 GB list
    b"*1\r\n*546681266\r\n",  # nested
    b"*2\r\n$1\r\nx\r\n%546681266\r\n",
    b"*1\r\n>546681266\r\n",
    b"*1\r\n$4294967295\r\n",
    b"*99999999999999999999999999999999999999\r\n",
    b"*-7\r\n",
    b"x" * 70_000,  # an inline line with no end
]
# Within the limits, so the node waits for what they announce (and never gets it).
WAITING = [
    b"*1048576\r\n$1\r\nx\r\n",  # Redis' own argument limit, one argument sent
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n" + b"x" * 1000,
]
HOSTILE = REFUSED + WAITING


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (VmRSS, VmSize)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def payloads(count: int, seed: int) -> list[bytes]:
    """The hostile headers in turn, and random garbage (some of it starting like a header)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if i % 3:
            out.append(HOSTILE[i % len(HOSTILE)])
        else:
            garbage = rng.randbytes(rng.randrange(1, 64))
            out.append(rng.choice([b"", b"*", b"$", b"*1\r\n"]) + garbage)
    return out


def send_and_close(port: int, payload: bytes) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            sock.sendall(payload)
    except OSError:
        pass  # the node may close first (a protocol error); that is its answer


def test_a_node_survives_a_stream_of_hostile_headers(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path, partitions=8)
    held: list[socket.socket] = []
    try:
        cluster.start()
        serving = cluster.serving()
        victim = Counter(serving.values()).most_common(1)[0][0]
        primaries = {p for p, node in serving.items() if node == victim}
        epochs_before = cluster.epochs(victim)
        pid, port = cluster.procs[victim].pid, cluster.ports[victim]
        client = redis.Redis(port=port, socket_timeout=TIMEOUT_S)

        # Each hostile header alone: refused with a protocol error, the connection closed.
        for payload in REFUSED:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
                sock.sendall(payload)
                reply = sock.recv(1024)
                assert reply.startswith(b"-ERR Protocol error: "), (payload, reply)
        # Many connections hold a partial request each: each costs what it sent.
        for i in range(HELD_OPEN):
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
            held.append(sock)
            sock.sendall(WAITING[i % len(WAITING)])

        rss_peak_kb = [status_kb(pid, "VmRSS")]
        vm_peak_kb = [status_kb(pid, "VmSize")]
        answers = [0]
        failures: list[BaseException] = []
        done = threading.Event()

        def watch() -> None:
            # While the flood runs: the node answers, and its memory stays put.
            while not done.is_set():
                rss_peak_kb[0] = max(rss_peak_kb[0], status_kb(pid, "VmRSS"))
                vm_peak_kb[0] = max(vm_peak_kb[0], status_kb(pid, "VmSize"))
                try:
                    client.ping()
                except redis.RedisError as exc:
                    failures.append(exc)
                    return
                answers[0] += 1
                done.wait(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        vm_before_kb = vm_peak_kb[0]
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(WORKERS) as pool:
                list(pool.map(lambda p: send_and_close(port, p), payloads(CONNECTIONS, seed=16)))
        finally:
            done.set()
            watcher.join(TIMEOUT_S * 2)
        flood_s = time.monotonic() - started
        print(
            f"{CONNECTIONS} hostile connections in {flood_s:.1f} s, {answers[0]} PINGs answered "
            f"meanwhile; VmRSS peak {rss_peak_kb[0] // 1024} MB, VmSize {vm_before_kb // 1024} "
            f"-> peak {vm_peak_kb[0] // 1024} MB"
        )
        assert not failures and answers[0] > 0, (failures, cluster.logs())
        assert rss_peak_kb[0] < RSS_MAX_KB, cluster.logs()
        # The node grew to 216 GB of address space; allow the allocator some room.
        assert vm_peak_kb[0] < vm_before_kb + 1024 * 1024, cluster.logs()

        # It still answers, reads and writes, and kept every primary in the same epoch.
        assert client.ping()
        key = next(
            f"k{i}"
            for i in range(10_000)
            if partition_of_slot(keyslot(f"k{i}".encode()), cluster.partitions) in primaries
        )
        assert client.set(key, "after the flood")
        assert client.get(key) == b"after the flood"
        assert cluster.procs[victim].poll() is None
        info = cluster.info(victim)
        assert info is not None and int(str(info["sessions_lost"])) == 0, cluster.logs()
        assert {p for p, node in cluster.serving().items() if node == victim} == primaries
        assert cluster.epochs(victim) == epochs_before, cluster.logs()
        client.close()
    finally:
        for sock in held:
            sock.close()
        cluster.stop()


def test_a_node_whose_loop_is_wedged_exits_and_its_partitions_fail_over(
    tmp_path: Path,
) -> None:
    cluster = ProcCluster(tmp_path, partitions=8)
    victim = "n1"
    cluster.launchers[victim] = WEDGEABLE_CLI
    cluster.node_args[victim] = ["--loop-stall-max-ms", "1500"]
    try:
        cluster.start()
        cluster.signal(victim, signal.SIGUSR1)  # its loop's thread now blocks for an hour
        wedged_at = time.monotonic()
        proc = cluster.procs[victim]
        deadline = wedged_at + 30.0
        while proc.poll() is None:
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.05)
        print(f"the wedged node exited after {time.monotonic() - wedged_at:.1f} s")
        assert proc.returncode == EXIT_LOOP_STALLED, cluster.logs()
        assert "event loop stalled" in (tmp_path / f"{victim}.log").read_text()
        assert "(limit 1500 ms" in (tmp_path / f"{victim}.log").read_text()
        others = [n for n in cluster.names if n != victim]
        cluster.wait_serving(20.0, others)
        # Restarted, as a supervisor would: it recovers from its data and serves again.
        del cluster.launchers[victim], cluster.node_args[victim]
        cluster.start_node(victim)
        cluster.wait_serving(20.0)
        assert cluster.procs[victim].poll() is None
    finally:
        cluster.stop()
