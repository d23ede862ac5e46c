"""The anchors bench_cluster.py runs side by side with planaria: a single etcd member and a
single redis-server on 127.0.0.1 (random ports, temp data dirs), redis-benchmark, and a
16-thread etcd put load over the v3 gRPC-gateway JSON API (``http.client``, one keep-alive
connection per thread, no extra dependency). Every process is stopped by its context
manager, also on error."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from planaria.chaos._procs import free_ports, log_tail, stop_process

__all__ = [
    "AnchorUnavailable",
    "EtcdPutLoad",
    "free_port",
    "redis_benchmark_rps",
    "running_etcd",
    "running_redis",
    "stop_process",
    "timed_threads",
]

_START_TIMEOUT_S = 20.0
_RPS = re.compile(rb"([A-Z_]+): ([0-9.]+) requests per second")


class AnchorUnavailable(RuntimeError):
    """An anchor could not be started (not installed, or it did not come up); the benchmark
    skips its comparison and says why."""


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def _wait_port(process: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AnchorUnavailable(f"{what} exited with {process.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        time.sleep(0.05)
    raise AnchorUnavailable(f"{what} did not listen on {port} within {_START_TIMEOUT_S:g} s")


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[int]:
    """A plain redis-server (no persistence: save '', appendonly no); yields its port."""
    if shutil.which("redis-server") is None:
        raise AnchorUnavailable("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--logfile", str(log), "--dir", str(workdir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_port(process, port, "redis-server", log)
        yield port
    finally:
        stop_process(process)


@contextlib.contextmanager
def running_etcd(workdir: Path, members: int = 1) -> Iterator[int]:
    """An etcd cluster of ``members`` on 127.0.0.1 with its default fsync (every commit),
    heartbeat and election timeout, and temp data dirs; yields the leader's client port
    (with 3 members a put is durable on 2 of 3 before it is acknowledged: etcd replicated
    as planaria is, R=3)."""
    if shutil.which("etcd") is None:
        raise AnchorUnavailable("etcd is not installed (as root: apt-get install -y etcd-server)")
    ports = free_ports(2 * members)
    client_ports, peer_ports = ports[:members], ports[members:]
    names = [f"bench{i}" for i in range(members)]
    cluster = ",".join(
        f"{name}=http://127.0.0.1:{port}" for name, port in zip(names, peer_ports, strict=True)
    )
    workdir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, client_port, peer_port in zip(names, client_ports, peer_ports, strict=True):
            client_url = f"http://127.0.0.1:{client_port}"
            peer_url = f"http://127.0.0.1:{peer_port}"
            with open(workdir / f"{name}.log", "wb") as out:
                processes.append(subprocess.Popen(
                    ["etcd", "--name", name, "--data-dir", str(workdir / name),
                     "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                     "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                     "--initial-cluster", cluster, "--initial-cluster-state", "new",
                     "--logger", "zap", "--log-level", "error"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        for name, process, client_port in zip(names, processes, client_ports, strict=True):
            _wait_port(process, client_port, "etcd", workdir / f"{name}.log")
        _wait_etcd_put(client_ports[0])
        yield _etcd_leader_port(client_ports)
    finally:
        for process in processes:
            stop_process(process)


def _etcd_leader_port(client_ports: Sequence[int]) -> int:
    """The client port of the member that leads (puts sent there skip a forward)."""
    for port in client_ports:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
        try:
            connection.request("POST", "/v3/maintenance/status", "{}")
            status = json.loads(connection.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError):
            continue
        finally:
            connection.close()
        if status.get("leader") == status.get("header", {}).get("member_id"):
            return port
    raise AnchorUnavailable(f"no etcd member on {list(client_ports)} says it leads")


def _wait_etcd_put(port: int) -> None:
    """Until a put succeeds (the member elected itself leader)."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
        try:
            _etcd_put(connection, b"bench-ready", b"1")
            return
        except (OSError, http.client.HTTPException, RuntimeError) as exc:
            last = repr(exc)
        finally:
            connection.close()
        time.sleep(0.1)
    raise AnchorUnavailable(f"etcd on {port} accepted no put within {_START_TIMEOUT_S:g} s: {last}")


def _etcd_put(connection: http.client.HTTPConnection, key: bytes, value: bytes) -> None:
    body = json.dumps(
        {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}
    )
    connection.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"etcd put answered {response.status}: {data[:200]!r}")


def timed_threads(threads: int, work: Callable[[int], None], timeout_s: float = 120.0) -> float:
    """Run ``work(index)`` in ``threads`` threads released together; the seconds from the
    release until the last one finished. The first error is raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def run(index: int) -> None:
        try:
            start.wait(10.0)
            work(index)
        except BaseException as exc:  # raised below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait(10.0)
    began = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"a load thread failed: {errors[0]!r}") from errors[0]
    if any(worker.is_alive() for worker in workers):
        raise RuntimeError(f"load threads did not finish within {timeout_s:g} s")
    return elapsed


class EtcdPutLoad:
    """``threads`` threads, each with its own keep-alive HTTP connection (connected before
    the clock starts), each doing ``puts`` puts of distinct keys; :meth:`run` returns puts
    per second."""

    def __init__(self, port: int, threads: int, value: bytes) -> None:
        self._port = port
        self._threads = threads
        self._value = value
        self._round = 0

    def run(self, puts: int) -> float:
        self._round += 1
        prefix = f"e{self._round}"
        connections = [
            http.client.HTTPConnection("127.0.0.1", self._port, timeout=10.0)
            for _ in range(self._threads)
        ]
        try:
            for connection in connections:
                connection.connect()

            def work(index: int) -> None:
                for i in range(puts):
                    key = f"{prefix}-{index}-{i}".encode()
                    _etcd_put(connections[index], key, self._value)

            elapsed = timed_threads(self._threads, work)
        finally:
            for connection in connections:
                connection.close()
        return self._threads * puts / elapsed


def redis_benchmark_rps(
    port: int, arguments: Sequence[str], *, cluster: bool, timeout_s: float = 120.0
) -> dict[str, float]:
    """Run ``redis-benchmark -q`` against 127.0.0.1:``port`` (``--cluster``: follow the
    cluster's slot map); requests per second by test name (``SET``, ``GET``)."""
    if shutil.which("redis-benchmark") is None:
        raise AnchorUnavailable("redis-benchmark is not installed (apt-get install redis-tools)")
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-q", *arguments]
    if cluster:
        argv.append("--cluster")
    done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    found = {name.decode(): float(rps) for name, rps in _RPS.findall(done.stdout)}
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}: "
            f"{done.stdout[-300:]!r} {done.stderr[-300:]!r}"
        )
    return found
