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
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from planaria.address import parse_address
from planaria.chaos.net import LOOPBACK, Net, Placement
from planaria.chaos.workload import KvAdapter, OpFailed, OpUnknown
from planaria.cluster import (
    BUS_PORT_OFFSET,
    LocalCluster,
    free_base_port,
    info_fields,
    partition_lines,
    resp_command,
)
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
    # Its clients are CounterTtlAdapters (INCRBY, SET PX): the counter and TTL workload runs.
    counters_and_ttls: bool = False

    def __init__(self, workdir: Path, nodes: int, net: Net | None = None) -> None:
        if nodes < 3:
            raise UsageError(f"a chaos run needs at least 3 nodes, not {nodes}")
        self.workdir = workdir
        self.node_names = [f"n{i}" for i in range(1, nodes + 1)]
        self.net = net
        self.placement: Placement = LOOPBACK if net is None else net.placement()

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

    def compaction(self) -> dict[str, object] | None:
        """What the nodes say of their snapshots and compaction (None: not reported)."""
        return None


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

    def incrby(self, key: str, amount: int) -> int:
        value = self._call("incrby", key, amount)
        if not isinstance(value, int):
            raise TargetError(f"INCRBY {key} answered {value!r}, not an integer")
        return value

    def set_px(self, key: str, value: str, ttl_ms: int) -> None:
        self._call("set", key, value, px=ttl_ms)

    def close(self) -> None:
        self._client.close()


class PlanariaTarget(Target):
    """A planaria cluster from :class:`planaria.cluster.LocalCluster`: a coordinator and
    ``nodes`` nodes, ``partitions`` partitions of 3 replicas, min in-sync 2, fsync always,
    session TTL :data:`DETECT_MS` (the failure detection the peers get too).

    The target runs the coordinator itself (outside the nodes: on the bridge address with
    network namespaces, where the nodes reach it) and gives LocalCluster its URL. With the
    proxy method every node's RESP and bus port and the coordinator get a proxy port, and
    each node advertises its proxy ports (a launcher appends ``--advertise`` and
    ``--bus-advertise`` to its command line)."""

    name = "planaria"
    counters_and_ttls = True

    def __init__(
        self,
        workdir: Path,
        nodes: int,
        *,
        partitions: int = 8,
        bugs: Sequence[str] = (),
        net: Net | None = None,
        snapshot_entries: int | None = None,
        snapshot_catchup_entries: int | None = None,
    ) -> None:
        super().__init__(workdir, nodes, net)
        unknown = [bug for bug in bugs if bug not in BUGS]
        if unknown:
            raise UsageError(
                f"unknown bug switch {unknown[0]!r} (known: {', '.join(sorted(BUGS))})"
            )
        self.partitions = partitions
        self.bugs = tuple(bugs)
        # Node options (None: the node's default): small ones force compaction often.
        self.snapshot_entries = snapshot_entries
        self.snapshot_catchup_entries = snapshot_catchup_entries
        self._cluster: LocalCluster | None = None
        self._coordinator: subprocess.Popen[bytes] | None = None
        self._coordinator_port = 0

    def _lc(self) -> LocalCluster:
        if self._cluster is None:
            raise TargetError("the planaria cluster is not started")
        return self._cluster

    def _start_coordinator(self) -> str:
        from planaria.chaos._procs import free_ports, spawn, wait_port  # noqa: PLC0415

        host = self.placement.outside_host
        self._coordinator_port = free_ports(1, host)[0]
        path = self.workdir / "coordinator"
        log = path / "coordinator.log"
        self._coordinator = spawn(
            [
                sys.executable, "-m", "planaria.cli", "coordinator",
                "--listen", f"{host}:{self._coordinator_port}", "--data", str(path / "data"),
            ],
            log,
            self.workdir,
        )  # fmt: skip
        wait_port(self._coordinator, self._coordinator_port, log, 30.0, host)
        return f"{host}:{self._coordinator_port}"

    def start(self) -> None:
        from planaria.chaos.proxy import ProxyNet  # noqa: PLC0415

        node_args = ["--session-ttl-ms", str(DETECT_MS)]
        for bug in self.bugs:
            node_args += ["--bug", bug]
        if self.snapshot_entries is not None:
            node_args += ["--snapshot-entries", str(self.snapshot_entries)]
        if self.snapshot_catchup_entries is not None:
            node_args += ["--snapshot-catchup-entries", str(self.snapshot_catchup_entries)]
        self.workdir.mkdir(parents=True, exist_ok=True)
        coordinator = self._start_coordinator()
        base_port = free_base_port(len(self.node_names))
        prefixes = {n: list(self.placement.prefix(n)) for n in self.node_names}
        advertised: dict[str, list[str]] = {}
        if isinstance(self.net, ProxyNet):
            proxy = self.net
            coordinator = f"127.0.0.1:{proxy.listen('coordinator', self._coordinator_port)}"
            for i, node in enumerate(self.node_names):
                resp = proxy.listen(node, base_port + i)
                bus = proxy.listen(node, base_port + i + BUS_PORT_OFFSET)
                advertised[node] = [
                    "--advertise", f"127.0.0.1:{resp}", "--bus-advertise", f"127.0.0.1:{bus}",
                ]  # fmt: skip
        self._cluster = LocalCluster(
            self.workdir / "cluster",
            nodes=len(self.node_names),
            partitions=self.partitions,
            replicas=3,
            base_port=base_port,
            node_args=node_args,
            coordinator_url=f"planaria://{coordinator}",
            node_hosts={n: self.placement.host(n) for n in self.node_names},
            node_prefixes=prefixes,
            node_extra_args=advertised,
        )
        self._lc().start(timeout_s=60.0)

    def stop(self) -> None:
        from planaria.chaos._procs import stop_process  # noqa: PLC0415

        try:
            if self._cluster is not None:
                self._lc().stop()
        finally:
            stop_process(self._coordinator)

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
        port = parse_address(self._lc().address(node))[1]
        return [port, port + BUS_PORT_OFFSET]

    def bystanders(self) -> dict[str, tuple[list[int], list[int]]]:
        pids = [] if self._coordinator is None else [self._coordinator.pid]
        return {"coordinator": (pids, [self._coordinator_port])}

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
            "snapshot_entries": self.snapshot_entries,
            "snapshot_catchup_entries": self.snapshot_catchup_entries,
        }

    def compaction(self) -> dict[str, object] | None:
        """What the nodes say of their snapshots now (INFO partitions of every node up):
        ``snapshots_taken`` by the running processes (each counts since it started),
        ``snapshots_installed`` (refilled by transfer), and per partition the primary's
        ``snapshot_index`` and ``log_entries`` (its log files, after compaction)."""
        taken = installed = 0
        partitions: dict[str, dict[str, int]] = {}
        for address in self._lc().addresses.values():
            try:
                (reply,) = resp_command(address, ("INFO", "all"), timeout_s=5.0)
            except OSError:
                continue  # a node down now: its counts are gone with its process
            info = info_fields(reply)
            installed += int(info.get("snapshots_installed", "0") or 0)
            for partition, fields in partition_lines(info).items():
                taken += int(fields.get("snapshots", "0") or 0)
                if fields.get("role") == "primary":
                    partitions[str(partition)] = {
                        "snapshot_index": int(fields.get("snapshot_index", "0") or 0),
                        "log_entries": int(fields.get("log_entries", "0") or 0),
                    }
        return {
            "snapshots_taken": taken,
            "snapshots_installed": installed,
            "partitions": dict(sorted(partitions.items(), key=lambda item: int(item[0]))),
        }


def make_target(
    name: str,
    workdir: Path,
    nodes: int,
    *,
    bugs: Sequence[str] = (),
    partitions: int = 8,
    net: Net | None = None,
    snapshot_entries: int | None = None,
    snapshot_catchup_entries: int | None = None,
) -> Target:
    """The target ``name``; with ``net``, its processes placed for that network method."""
    if bugs and name != "planaria":
        raise UsageError("--bug is a planaria node switch; it needs --target planaria")
    snapshots = (snapshot_entries, snapshot_catchup_entries)
    if name != "planaria" and snapshots != (None, None):
        raise UsageError("--snapshot-entries and --snapshot-catchup-entries need --target planaria")
    for value in snapshots:
        if value is not None and value < 1:
            raise UsageError(f"snapshot entries must be >= 1, got {value}")
    if name != "planaria" and net is not None and net.method == "proxy":
        raise UsageError(
            f"--net proxy partitions planaria only; for {name} run as root (--net netns or "
            "iptables) or leave partition out of --faults"
        )
    if name == "planaria":
        return PlanariaTarget(
            workdir,
            nodes,
            partitions=partitions,
            bugs=bugs,
            net=net,
            snapshot_entries=snapshot_entries,
            snapshot_catchup_entries=snapshot_catchup_entries,
        )
    if name == "redis-sentinel":
        from planaria.chaos._redis import RedisSentinelTarget  # noqa: PLC0415

        return RedisSentinelTarget(workdir, nodes, net)
    if name == "etcd":
        from planaria.chaos._etcd import EtcdTarget  # noqa: PLC0415

        return EtcdTarget(workdir, nodes, net)
    raise UsageError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
