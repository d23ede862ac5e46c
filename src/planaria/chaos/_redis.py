"""Redis Sentinel as a chaos target: 3 redis-server (n1 the first master, the others its
replicas) and 3 redis-sentinel (quorum 2), one of each per node, on loopback.

Configured as the Sentinel documentation recommends: ``down-after-milliseconds 1000`` (the
detection the other targets get too), ``min-replicas-to-write 1`` and
``min-replicas-max-lag 10`` on every server (the documented way to bound the writes a
partitioned master accepts), AOF on with its default ``appendfsync everysec``. No WAIT:
Sentinel's documentation says acknowledged writes can be lost on failover anyway, and plain
clients do not use it. ``failover-timeout`` is 10 s (default 180 s) so a 60 s run sees more
than one failover. Clients use redis-py's Sentinel support (``Sentinel.master_for``); CAS is
a Lua script. A node's kill and pause hit its redis-server; a partition cuts off both
of its processes.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Final

from planaria.chaos._procs import free_ports, spawn, stop_process, wait_port
from planaria.chaos.net import Net
from planaria.chaos.targets import DETECT_MS, OP_TIMEOUT_S, Target, TargetError
from planaria.chaos.workload import KvAdapter, OpFailed, OpUnknown
from planaria.errors import MissingExtra

try:
    import redis
    import redis.exceptions
    from redis.sentinel import MasterNotFoundError, Sentinel
except ImportError as exc:
    raise MissingExtra("redis", "chaos") from exc

__all__ = ["RedisSentinelTarget"]

MASTER: Final = "mymaster"
FAILOVER_TIMEOUT_MS: Final = 10_000
_START_TIMEOUT_S: Final = 30.0
_CAS: Final = """
local v = redis.call('GET', KEYS[1])
if (ARGV[3] == '1' and v == false) or (ARGV[3] == '0' and v == ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def _classify(exc: redis.exceptions.RedisError, *, write: bool) -> Exception:
    """OpFailed when the command certainly did not run, else OpUnknown."""
    if not write:
        return OpFailed(repr(exc))
    if isinstance(exc, MasterNotFoundError | redis.exceptions.ResponseError):
        return OpFailed(repr(exc))  # no master known; or refused (READONLY, NOREPLICAS)
    if isinstance(exc, redis.exceptions.ConnectionError) and "connecting" in str(exc):
        return OpFailed(repr(exc))  # never connected, so never sent
    return OpUnknown(repr(exc))


class _Client:
    def __init__(self, sentinels: list[tuple[str, int]]) -> None:
        self._sentinel = Sentinel(
            sentinels,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
        self._master = self._sentinel.master_for(
            MASTER, socket_timeout=OP_TIMEOUT_S, socket_connect_timeout=0.5
        )
        self._cas = self._master.register_script(_CAS)

    def _call(self, write: bool, what: str, *args: Any) -> Any:
        try:
            if what == "cas":
                return self._cas(keys=[args[0]], args=list(args[1:]))
            return getattr(self._master, what)(*args)
        except redis.exceptions.RedisError as exc:
            raise _classify(exc, write=write) from exc

    def get(self, key: str) -> str | None:
        value = self._call(False, "get", key)
        return value.decode() if isinstance(value, bytes) else None

    def put(self, key: str, value: str) -> None:
        self._call(True, "set", key, value)

    def cas(self, key: str, old: str | None, new: str) -> bool:
        absent = "1" if old is None else "0"
        return bool(self._call(True, "cas", key, old or "", new, absent))

    def mget(self, keys: list[str]) -> dict[str, str | None]:
        values = self._call(False, "mget", keys)
        return {
            key: value.decode() if isinstance(value, bytes) else None
            for key, value in zip(keys, values, strict=True)
        }

    def close(self) -> None:
        self._master.close()
        for sentinel in self._sentinel.sentinels:
            sentinel.close()


class RedisSentinelTarget(Target):
    name = "redis-sentinel"

    def __init__(self, workdir: Path, nodes: int, net: Net | None = None) -> None:
        super().__init__(workdir, nodes, net)
        for binary in ("redis-server", "redis-sentinel"):
            if shutil.which(binary) is None:
                raise TargetError(f"{binary} is not installed (make system-deps)")
        ports = free_ports(2 * nodes)
        self._redis_ports = dict(zip(self.node_names, ports[:nodes], strict=True))
        self._sentinel_ports = dict(zip(self.node_names, ports[nodes:], strict=True))
        self._servers: dict[str, subprocess.Popen[bytes]] = {}
        self._sentinels: dict[str, subprocess.Popen[bytes]] = {}

    def _dir(self, node: str) -> Path:
        return self.workdir / node

    def _write_configs(self) -> None:
        first = self._redis_ports[self.node_names[0]]
        first_host = self.placement.host(self.node_names[0])
        for node in self.node_names:
            host = self.placement.host(node)
            path = self._dir(node)
            path.mkdir(parents=True, exist_ok=True)
            lines = [
                f"port {self._redis_ports[node]}",
                f"bind {host}",
                # loopback or the run's private namespace address, and no password: the
                # protected mode would refuse the peers from the other namespaces
                "protected-mode no",
                f"dir {path}",
                "daemonize no",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "min-replicas-to-write 1",
                "min-replicas-max-lag 10",
                f"logfile {path / 'redis.log'}",
            ]
            if node != self.node_names[0]:
                lines.append(f"replicaof {first_host} {first}")
            (path / "redis.conf").write_text("\n".join(lines) + "\n")
            (path / "sentinel.conf").write_text(
                "\n".join(
                    [
                        f"port {self._sentinel_ports[node]}",
                        f"bind {host}",
                        "protected-mode no",
                        f"dir {path}",
                        "daemonize no",
                        f"logfile {path / 'sentinel.log'}",
                        f"sentinel monitor {MASTER} {first_host} {first} 2",
                        f"sentinel down-after-milliseconds {MASTER} {DETECT_MS}",
                        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                        f"sentinel parallel-syncs {MASTER} 1",
                    ]
                )
                + "\n"
            )

    def _start_server(self, node: str) -> None:
        path = self._dir(node)
        argv = ["redis-server", str(path / "redis.conf")]
        process = spawn(argv, path / "stdout.log", path, self.placement.prefix(node))
        self._servers[node] = process
        host = self.placement.host(node)
        wait_port(process, self._redis_ports[node], path / "redis.log", _START_TIMEOUT_S, host)

    def start(self) -> None:
        self._write_configs()
        for node in self.node_names:
            self._start_server(node)
        for node in self.node_names:
            path = self._dir(node)
            argv = ["redis-sentinel", str(path / "sentinel.conf")]
            process = spawn(argv, path / "stdout.log", path, self.placement.prefix(node))
            self._sentinels[node] = process
            log = path / "sentinel.log"
            port = self._sentinel_ports[node]
            wait_port(process, port, log, _START_TIMEOUT_S, self.placement.host(node))
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until every sentinel sees the master, both replicas and the other sentinels."""
        others = len(self.node_names) - 1
        deadline = time.monotonic() + _START_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            ready = 0
            for host, port in self._sentinels_addresses():
                try:
                    with redis.Redis(host, port, socket_timeout=1.0) as conn:
                        info = conn.execute_command("SENTINEL", "MASTER", MASTER)
                except redis.exceptions.RedisError as exc:
                    last = repr(exc)
                    continue
                fields = (
                    dict(zip(info[::2], info[1::2], strict=True))
                    if isinstance(info, list)
                    else info
                )
                fields = {
                    str(k if not isinstance(k, bytes) else k.decode()): v for k, v in fields.items()
                }
                sentinels = int(fields.get("num-other-sentinels", 0))
                replicas = int(fields.get("num-slaves", 0))
                last = f"sentinel {port}: {sentinels} other sentinels, {replicas} replicas"
                if sentinels >= others and replicas >= others:
                    ready += 1
            if ready == len(self._sentinel_ports):
                return
            time.sleep(0.2)
        raise TargetError(f"Redis Sentinel not ready within {_START_TIMEOUT_S:g} s: {last}")

    def stop(self) -> None:
        for process in [*self._sentinels.values(), *self._servers.values()]:
            stop_process(process)

    def client(self) -> KvAdapter:
        return _Client(self._sentinels_addresses())

    def _sentinels_addresses(self) -> list[tuple[str, int]]:
        return [(self.placement.host(n), port) for n, port in self._sentinel_ports.items()]

    def read_many(self, keys: list[str]) -> dict[str, str | None]:
        client = _Client(self._sentinels_addresses())
        try:
            return client.mget(keys)
        finally:
            client.close()

    def leaders(self) -> dict[int, str]:
        for host, port in self._sentinels_addresses():
            with contextlib.suppress(redis.exceptions.RedisError):
                with redis.Redis(host, port, socket_timeout=0.5) as conn:
                    address = conn.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                master_port = int(address[1])
                for node, redis_port in self._redis_ports.items():
                    if redis_port == master_port:
                        return {0: node}
        return {}

    def pids(self, node: str) -> list[int]:
        process = self._servers.get(node)
        return [] if process is None or process.poll() is not None else [process.pid]

    def net_pids(self, node: str) -> list[int]:
        sentinel = self._sentinels.get(node)
        alive = [] if sentinel is None or sentinel.poll() is not None else [sentinel.pid]
        return [*self.pids(node), *alive]

    def ports(self, node: str) -> list[int]:
        return [self._redis_ports[node], self._sentinel_ports[node]]

    def kill(self, node: str) -> None:
        process = self._servers[node]
        process.send_signal(signal.SIGKILL)
        process.wait(5.0)

    def restart(self, node: str) -> None:
        self._start_server(node)

    def config(self) -> dict[str, object]:
        return {
            "down_after_ms": DETECT_MS,
            "failover_timeout_ms": FAILOVER_TIMEOUT_MS,
            "quorum": 2,
            "min_replicas_to_write": 1,
            "min_replicas_max_lag_s": 10,
            "appendfsync": "everysec",
        }
