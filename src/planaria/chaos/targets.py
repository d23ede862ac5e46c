"""Systems under test: planaria (``LocalCluster``), Redis Sentinel and etcd, all as local
processes on loopback with fresh directories, behind one interface the harness drives.

A target names its nodes ``n1..nN``; each node is one or more processes (a Redis node is its
redis-server and its sentinel) listening on known ports, which is what kills, pauses and
partitions act on. Shards: planaria's partitions; the peers have one shard (0).
"""

from __future__ import annotations

import abc
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from planaria.chaos.workload import KvAdapter, OpFailed, OpUnknown
from planaria.cluster import BUS_PORT_OFFSET, LocalCluster, free_base_port
from planaria.core.replica import BUGS
from planaria.core.slots import keyslot, partition_of_slot
from planaria.errors import PlanariaError, UnknownOutcome, UsageError

__all__ = ["DETECT_MS", "TARGETS", "PlanariaTarget", "Target", "TargetError", "make_target"]

DETECT_MS: Final = 1000  # failure detection, aligned across targets
OP_TIMEOUT_S: Final = 1.5  # one client operation, retries included; then it is info
TARGETS: Final = ("planaria", "redis-sentinel", "etcd")


class TargetError(PlanariaError):
    """The system under test could not be started or driven (the message says why)."""


class Target(abc.ABC):
    """One system under test (see the module docstring)."""

    name: str
    read_batch: int = 200  # keys per final read request

    def __init__(self, workdir: Path, nodes: int) -> None:
        if nodes < 3:
            raise UsageError(f"a chaos run needs at least 3 nodes, not {nodes}")
        self.workdir = workdir
        self.node_names = [f"n{i}" for i in range(1, nodes + 1)]

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def client(self) -> KvAdapter: ...

    @abc.abstractmethod
    def read_many(self, keys: list[str]) -> dict[str, str | None]: ...

    def shard_of(self, key: str) -> int:
        return 0

    @abc.abstractmethod
    def leaders(self) -> dict[int, str]:
        """Shard -> the node leading it now (best effort; shards without a known leader are
        left out)."""

    @abc.abstractmethod
    def pids(self, node: str) -> list[int]: ...

    def net_pids(self, node: str) -> list[int]:
        """The processes a partition of ``node`` cuts off (default: :meth:`pids`, which
        kills and pauses hit)."""
        return self.pids(node)

    @abc.abstractmethod
    def ports(self, node: str) -> list[int]: ...

    def bystanders(self) -> dict[str, tuple[list[int], list[int]]]:
        """Processes that are no node but side with the majority in a partition (name ->
        (pids, ports)), e.g. planaria's coordinator."""
        return {}

    @abc.abstractmethod
    def restart(self, node: str) -> None: ...

    def kill(self, node: str) -> None:
        self.signal(node, signal.SIGKILL)

    def signal(self, node: str, signum: int) -> None:
        for pid in self.pids(node):
            os.kill(pid, signum)

    def config(self) -> dict[str, object]:
        """The knobs the run used, for results.json."""
        return {}


class _PlanariaClient:
    def __init__(self, seeds: Sequence[str]) -> None:
        from planaria.client import Client  # noqa: PLC0415 -- the client loads with the target

        self._client = Client(list(seeds), timeout_s=OP_TIMEOUT_S, attempt_timeout_s=0.5)

    def _call(self, what: str, *args: object, **kwargs: object) -> object:
        try:
            return getattr(self._client, what)(*args, **kwargs)
        except UnknownOutcome as exc:
            raise OpUnknown(str(exc)) from exc
        except UsageError:
            raise
        except PlanariaError as exc:
            raise OpFailed(str(exc)) from exc

    def get(self, key: str) -> str | None:
        value = self._call("get", key)
        return value.decode() if isinstance(value, bytes) else None

    def put(self, key: str, value: str) -> None:
        self._call("set", key, value)

    def cas(self, key: str, old: str | None, new: str) -> bool:
        if old is None:
            return bool(self._call("set", key, new, nx=True))
        return bool(self._call("set", key, new, if_value=old))

    def close(self) -> None:
        self._client.close()


class PlanariaTarget(Target):
    """A planaria cluster from :class:`planaria.cluster.LocalCluster`: a coordinator and
    ``nodes`` nodes, ``partitions`` partitions of 3 replicas, min in-sync 2, fsync always,
    session TTL :data:`DETECT_MS` (the failure detection the peers get too)."""

    name = "planaria"

    def __init__(
        self, workdir: Path, nodes: int, *, partitions: int = 8, bugs: Sequence[str] = ()
    ) -> None:
        super().__init__(workdir, nodes)
        unknown = [bug for bug in bugs if bug not in BUGS]
        if unknown:
            raise UsageError(
                f"unknown bug switch {unknown[0]!r} (known: {', '.join(sorted(BUGS))})"
            )
        self.partitions = partitions
        self.bugs = tuple(bugs)
        self._cluster: LocalCluster | None = None

    def _lc(self) -> LocalCluster:
        if self._cluster is None:
            raise TargetError("the planaria cluster is not started")
        return self._cluster

    def start(self) -> None:
        node_args = ["--session-ttl-ms", str(DETECT_MS)]
        for bug in self.bugs:
            node_args += ["--bug", bug]
        self._cluster = LocalCluster(
            self.workdir / "cluster",
            nodes=len(self.node_names),
            partitions=self.partitions,
            replicas=3,
            base_port=free_base_port(len(self.node_names)),
            node_args=node_args,
        )
        self._lc().start(timeout_s=60.0)

    def stop(self) -> None:
        if self._cluster is not None:
            self._lc().stop()

    def client(self) -> KvAdapter:
        return _PlanariaClient(list(self._lc().addresses.values()))

    def read_many(self, keys: list[str]) -> dict[str, str | None]:
        client = self.client()
        try:
            return {key: client.get(key) for key in keys}
        finally:
            client.close()

    def shard_of(self, key: str) -> int:
        return partition_of_slot(keyslot(key), self.partitions)

    def leaders(self) -> dict[int, str]:
        status = self._lc().status()
        return {p.id: p.primary for p in status.partitions if p.primary is not None}

    def pids(self, node: str) -> list[int]:
        pid = self._lc().pid(node)
        return [] if pid is None else [pid]

    def ports(self, node: str) -> list[int]:
        port = int(self._lc().address(node).rsplit(":", 1)[1])
        return [port, port + BUS_PORT_OFFSET]

    def bystanders(self) -> dict[str, tuple[list[int], list[int]]]:
        import json  # noqa: PLC0415

        state = json.loads((self._lc().data_dir / "cluster.json").read_text())
        coordinator = state["coordinator"]
        pid = coordinator.get("pid")
        return {"coordinator": ([pid] if pid else [], [int(coordinator["port"])])}

    def kill(self, node: str) -> None:
        self._lc().kill(node, signal.SIGKILL)

    def restart(self, node: str) -> None:
        self._lc().start(node, timeout_s=30.0)

    def config(self) -> dict[str, object]:
        return {
            "partitions": self.partitions,
            "replicas": 3,
            "min_insync": 2,
            "fsync": "always",
            "session_ttl_ms": DETECT_MS,
            "bugs": list(self.bugs),
        }


def make_target(
    name: str, workdir: Path, nodes: int, *, bugs: Sequence[str] = (), partitions: int = 8
) -> Target:
    if bugs and name != "planaria":
        raise UsageError("--bug is a planaria node switch; it needs --target planaria")
    if name == "planaria":
        return PlanariaTarget(workdir, nodes, partitions=partitions, bugs=bugs)
    if name == "redis-sentinel":
        from planaria.chaos._redis import RedisSentinelTarget  # noqa: PLC0415

        return RedisSentinelTarget(workdir, nodes)
    if name == "etcd":
        from planaria.chaos._etcd import EtcdTarget  # noqa: PLC0415

        return EtcdTarget(workdir, nodes)
    raise UsageError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
