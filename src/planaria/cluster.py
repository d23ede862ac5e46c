"""A local cluster: one coordinator and N nodes as processes on loopback.

:class:`LocalCluster` starts ``planaria coordinator`` and ``planaria node`` processes (each
``sys.executable -m planaria.cli ...``, output to ``logs/<name>.log`` in the data directory),
writes the ``/cluster`` metadata before the nodes start, and waits until every partition has
a serving primary. Everything it started is recorded in ``cluster.json`` in the data
directory, so another process (``planaria down``, ``planaria status``, ``planaria node kill``)
finds the processes again: :meth:`LocalCluster.open`.

Layout of a data directory::

    cluster.json          ports, ids and pids of the coordinator and the nodes
    cluster.lock          serializes updates of cluster.json between processes
    coordinator/          the coordinator's data
    nodes/<id>/           one node's data (its logs and snapshots)
    logs/<name>.log       stdout and stderr of each process (appended across restarts)

Ports: node ``i`` (from 1) serves RESP on ``base_port + i - 1`` and replication on that port
plus 10,000 (Redis Cluster's bus convention); the coordinator listens on
``coordinator_port`` (default 7000, or ``base_port - 1`` for a base port other than 7001).

With ``coordinator_url`` (``zk://...`` or ``etcd://...``, or the ``planaria://`` address of
a coordinator run elsewhere) no coordinator process is started: the nodes, the ``/cluster``
metadata and :meth:`LocalCluster.status` all use that coordinator.
Every wait is bounded; a process that dies while the cluster starts is reported with the last
lines of its log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import hiredis

from planaria._client.protocol import encode_command, to_bytes
from planaria._client.routing import MalformedTopology, SlotMap
from planaria.address import parse_address
from planaria.coord.url import connect, parse_url
from planaria.core.messages import PartitionConfig
from planaria.core.slots import keyslot, partition_of_slot, slot_range
from planaria.errors import PlanariaError, UnknownOutcome, UsageError

__all__ = [
    "BUS_PORT_OFFSET",
    "DEFAULT_BASE_PORT",
    "DEFAULT_COORDINATOR_PORT",
    "STATE_FILE",
    "ClusterError",
    "ClusterStatus",
    "LocalCluster",
    "NoCluster",
    "NodeStatus",
    "PartitionStatus",
    "PortInUse",
    "free_base_port",
    "partition_lines",
    "probe_keys",
    "resp_command",
    "status_from_seed",
]

BUS_PORT_OFFSET: Final = 10_000
DEFAULT_BASE_PORT: Final = 7001
DEFAULT_COORDINATOR_PORT: Final = 7000
STATE_FILE: Final = "cluster.json"
_LOCK_FILE: Final = "cluster.lock"
_STATE_FORMAT: Final = 1
_LOG_TAIL_LINES: Final = 15
_POLL_S: Final = 0.05
_CLI_MODULE = "planaria.cli"  # what the processes run: python -m <this> coordinator|node ...

log = logging.getLogger("planaria.cluster")


class ClusterError(PlanariaError):
    """The local cluster could not be started, stopped or inspected (a process died, or the
    cluster did not serve in time); the message says which process and shows its log."""


class PortInUse(UsageError):
    """A port the cluster needs is taken; ``port`` names it."""

    def __init__(self, port: int, host: str, what: str) -> None:
        super().__init__(
            f"port {port} on {host} ({what}) is already in use; stop what holds it or pick "
            "other ports (--port)"
        )
        self.port = port


class NoCluster(UsageError):
    """There is no cluster in the data directory (no cluster.json)."""


# --- state file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Process:
    """One process of the cluster as recorded in cluster.json (pid None: not running)."""

    name: str
    host: str
    port: int
    pid: int | None
    log: str  # relative to the data directory
    data: str
    args: tuple[str, ...] = ()  # its own `planaria node` options (a node added: weight, zone)
    prefix: tuple[str, ...] = ()  # a launcher before python (e.g. ip netns exec NS)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class _State:
    host: str
    partitions: int
    replicas: int
    min_insync: int
    fsync: str | None
    coordinator: _Process
    nodes: tuple[_Process, ...]
    node_args: tuple[str, ...] = ()  # extra `planaria node` options (e.g. --bug for tests)
    coordinator_url: str | None = None  # an external coordinator (no process of ours)

    def node(self, node_id: str) -> _Process:
        for node in self.nodes:
            if node.name == node_id:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise UsageError(f"no node {node_id!r} in this cluster (nodes: {known})")

    def with_node(self, updated: _Process) -> _State:
        nodes = tuple(updated if n.name == updated.name else n for n in self.nodes)
        return replace(self, nodes=nodes)

    def to_json(self) -> dict[str, Any]:
        return {"format": _STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, record: Mapping[str, Any], path: Path) -> _State:
        try:
            if record.get("format") != _STATE_FORMAT:
                raise ValueError(f"unknown format {record.get('format')!r}")
            return cls(
                host=str(record["host"]),
                partitions=int(record["partitions"]),
                replicas=int(record["replicas"]),
                min_insync=int(record["min_insync"]),
                fsync=record["fsync"],
                coordinator=_Process(**record["coordinator"]),
                nodes=tuple(_Process(**node) for node in record["nodes"]),
                node_args=tuple(str(arg) for arg in record.get("node_args", ())),
                coordinator_url=record.get("coordinator_url"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterError(f"{path}: not a planaria cluster state file: {exc}") from exc


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A node: ``alive`` if its process runs (``paused`` if it is stopped by SIGSTOP);
    ``registered`` if it holds a live registration in the coordinator (None: unknown)."""

    id: str
    address: str
    pid: int | None
    alive: bool
    paused: bool = False
    registered: bool | None = None


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """A partition's config as the coordinator holds it; ``slots`` is ``[first, last]``;
    ``lag`` is how many log entries the slowest replica is behind its primary (None:
    unknown, e.g. the primary does not say or is down)."""

    id: int
    slots: tuple[int, int]
    primary: str | None
    replicas: tuple[str, ...]
    isr: tuple[str, ...]
    epoch: int
    lag: int | None = None
    learners: tuple[str, ...] = ()  # a membership move under way (docs/membership.md)
    handoff: str | None = None
    # The primary's snapshot and log files, as its INFO says (None: unknown).
    snapshot_index: int | None = None
    log_entries: int | None = None
    log_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    nodes: tuple[NodeStatus, ...]
    partitions: tuple[PartitionStatus, ...]
    coordinator: str | None = None
    coordinator_alive: bool | None = None
    errors: tuple[str, ...] = field(default=())

    def primary_counts(self) -> dict[str, int]:
        """How many partitions each node is primary for."""
        counts = {node.id: 0 for node in self.nodes}
        for partition in self.partitions:
            if partition.primary is not None:
                counts[partition.primary] = counts.get(partition.primary, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        def clean(record: Mapping[str, Any]) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}

        return {
            "nodes": [clean(asdict(node)) for node in self.nodes],
            "partitions": [clean(asdict(p)) for p in self.partitions],
            "coordinator": {"address": self.coordinator, "alive": self.coordinator_alive},
            "errors": list(self.errors),
        }


# --- small RESP client (the node's own protocol; no client library needed) ---------------


def resp_command(
    address: str, *commands: Sequence[str | bytes], timeout_s: float = 2.0
) -> list[Any]:
    """Send ``commands`` pipelined to ``host:port`` and return their replies in order
    (errors come back as ``hiredis.ReplyError`` values, not raised). Raises ``OSError`` when
    the node cannot be reached or does not answer within ``timeout_s``."""
    host, port = parse_address(address)
    payload = b"".join(
        encode_command([to_bytes("argument", arg) for arg in command]) for command in commands
    )
    reader = hiredis.Reader()
    replies: list[Any] = []
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        while len(replies) < len(commands):
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError(f"{address} closed the connection")
            reader.feed(data)
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is False:
                    break
                replies.append(reply)
    return replies


def probe_keys(partitions: int) -> dict[int, str]:
    """One key per partition (``{probe-N}``), for checks that must touch every partition."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        key = f"{{probe-{n}}}"
        keys.setdefault(partition_of_slot(keyslot(key), partitions), key)
        n += 1
    return keys


# --- ports and processes ------------------------------------------------------------------


def _port_free(host: str, port: int) -> bool:
    # SO_REUSEADDR as asyncio servers set it: a port in TIME_WAIT is usable, a listener's not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            # Not an address of this network namespace (a node started in another one, say):
            # nothing here can tell, so the node's own bind will.
            return exc.errno == errno.EADDRNOTAVAIL
    return True


def _cluster_ports(base_port: int, nodes: int, coordinator_port: int) -> list[tuple[int, str]]:
    ports = [(coordinator_port, "coordinator")]
    for i in range(nodes):
        ports.append((base_port + i, f"node n{i + 1}"))
        ports.append((base_port + i + BUS_PORT_OFFSET, f"node n{i + 1} replication bus"))
    return ports


def free_base_port(nodes: int, host: str = "127.0.0.1") -> int:
    """A base port such that ``base - 1`` (the coordinator), the nodes' ports and their bus
    ports are all free now (for tests and the demo, which must not collide with a cluster
    the user runs on the default ports). Nodes get ports in 20001..22767, so their bus ports
    stay below Linux's ephemeral range (32768 and up), where outgoing connections could take
    them; the search starts at a random port, so two launchers rarely race for the same."""
    low, high = 20_001, 32_768 - BUS_PORT_OFFSET
    span = high - low
    offset = random.Random().randrange(span)
    for step in range(0, span, nodes + 7):
        base = low + (offset + step) % span
        if all(_port_free(host, port) for port, _ in _cluster_ports(base, nodes, base - 1)):
            return base
    raise ClusterError(f"no {2 * nodes + 1} free ports found on {host}")


def _proc_state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, T, Z, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the state follows the last ')'.
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def _is_ours(pid: int) -> bool:
    """Whether ``pid`` runs the planaria CLI (and is not another process that reused a
    recorded pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _CLI_MODULE.encode() in cmdline


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def _run(coroutine: Any) -> Any:
    """Run a coroutine to completion from synchronous code (also inside a running loop's
    thread, e.g. from a test that is itself async: then on a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# --- the launcher -------------------------------------------------------------------------


class LocalCluster:
    """A coordinator and ``nodes`` nodes as local processes, their state in ``data_dir``.

    ``LocalCluster(dir, ...)`` describes a new cluster (or reopens a stopped one in the same
    directory with the same shape); :meth:`start` launches it. :meth:`open` attaches to the
    cluster recorded in a directory, e.g. from another process. Use as a context manager to
    stop everything on exit.

    ``node_hosts`` (node id -> host) and ``node_prefixes`` (node id -> launcher argv, e.g.
    ``["ip", "netns", "exec", NS]``) place single nodes elsewhere, as the chaos harness does
    with network namespaces; ``node_args`` go to every ``planaria node``, ``node_extra_args``
    (node id -> options) to one (e.g. the addresses a proxy in front of it advertises).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        nodes: int = 3,
        partitions: int = 64,
        replicas: int = 3,
        min_insync: int | None = None,
        base_port: int = DEFAULT_BASE_PORT,
        coordinator_port: int | None = None,
        host: str = "127.0.0.1",
        fsync: str | None = None,
        env: Mapping[str, str] | None = None,
        node_args: Sequence[str] = (),
        coordinator_url: str | None = None,
        node_hosts: Mapping[str, str] | None = None,
        node_prefixes: Mapping[str, Sequence[str]] | None = None,
        node_extra_args: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if nodes < 1:
            raise UsageError(f"a cluster needs at least one node, not {nodes}")
        if not 1 <= replicas <= nodes:
            raise UsageError(f"replicas must be between 1 and the node count {nodes}")
        if not 1 <= partitions <= 16384:
            raise UsageError(f"partitions must be between 1 and 16384, not {partitions}")
        if min_insync is None:
            min_insync = min(2, replicas)
        if not 1 <= min_insync <= replicas:
            raise UsageError(f"min_insync must be between 1 and replicas ({replicas})")
        if fsync not in (None, "always", "interval", "never"):
            raise UsageError(f"fsync is always, interval or never, not {fsync!r}")
        if coordinator_url is not None:
            coordinator_url = str(parse_url(coordinator_url))  # UsageError if malformed
            if coordinator_url.startswith("memory://"):
                raise UsageError("memory:// lives in one process; the nodes are processes")
        if coordinator_port is None:
            coordinator_port = (
                DEFAULT_COORDINATOR_PORT if base_port == DEFAULT_BASE_PORT else base_port - 1
            )
        last_port = base_port + nodes - 1 + BUS_PORT_OFFSET
        if not base_port > 0 or last_port > 65535 or not 0 < coordinator_port <= 65535:
            raise UsageError(
                f"ports out of range: base {base_port}, coordinator {coordinator_port}"
            )
        self.data_dir = Path(data_dir).resolve()
        self._env = dict(env) if env is not None else None
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._state = _State(
            host=host,
            partitions=partitions,
            replicas=replicas,
            min_insync=min_insync,
            fsync=fsync,
            node_args=tuple(node_args),
            coordinator_url=coordinator_url,
            coordinator=_Process(
                "coordinator",
                host,
                coordinator_port,
                None,
                "logs/coordinator.log",
                "coordinator",
            ),
            nodes=tuple(
                _Process(
                    f"n{i}",
                    (node_hosts or {}).get(f"n{i}", host),
                    base_port + i - 1,
                    None,
                    f"logs/n{i}.log",
                    f"nodes/n{i}",
                    args=tuple((node_extra_args or {}).get(f"n{i}", ())),
                    prefix=tuple((node_prefixes or {}).get(f"n{i}", ())),
                )
                for i in range(1, nodes + 1)
            ),
        )

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str]) -> LocalCluster:
        """The cluster recorded in ``data_dir`` (``NoCluster`` if there is none)."""
        path = Path(data_dir).resolve() / STATE_FILE
        if not path.exists():
            raise NoCluster(
                f"no cluster in {path.parent} (no {STATE_FILE}); start one: planaria up"
            )
        cluster = cls.__new__(cls)
        cluster.data_dir = path.parent
        cluster._env = None
        cluster._children = {}
        cluster._state = cluster._load()
        return cluster

    # --- properties --------------------------------------------------------------------

    @property
    def node_ids(self) -> list[str]:
        return [node.name for node in self._state.nodes]

    @property
    def partitions(self) -> int:
        return self._state.partitions

    @property
    def coordinator_url(self) -> str:
        if self._state.coordinator_url is not None:
            return self._state.coordinator_url
        return f"planaria://{self._state.coordinator.address}"

    @property
    def coordinator_address(self) -> str:
        """``host:port`` of the embedded coordinator, or the external coordinator's URL."""
        if self._state.coordinator_url is not None:
            return self._state.coordinator_url
        return self._state.coordinator.address

    @property
    def external_coordinator(self) -> bool:
        """Whether the coordinator is someone else's (``coordinator_url``): no process here."""
        return self._state.coordinator_url is not None

    def address(self, node_id: str) -> str:
        """``host:port`` where ``node_id`` serves RESP."""
        return self._state.node(node_id).address

    @property
    def addresses(self) -> dict[str, str]:
        return {node.name: node.address for node in self._state.nodes}

    def pid(self, node_id: str) -> int | None:
        return self._refresh().node(node_id).pid

    def log_path(self, name: str) -> Path:
        """The log file of ``name`` (a node id or ``coordinator``)."""
        process = self._state.coordinator if name == "coordinator" else self._state.node(name)
        return self.data_dir / process.log

    # --- state file --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / _LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> _State:
        path = self.data_dir / STATE_FILE
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise NoCluster(f"no cluster in {self.data_dir} (no {STATE_FILE})") from exc
        except ValueError as exc:
            raise ClusterError(f"{path}: not JSON: {exc}") from exc
        return _State.from_json(record, path)

    def _save(self, state: _State) -> None:
        path = self.data_dir / STATE_FILE
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        os.replace(temporary, path)
        self._state = state

    def _refresh(self) -> _State:
        """Re-read cluster.json: another process may have restarted a node meanwhile."""
        if (self.data_dir / STATE_FILE).exists():
            self._state = self._load()
        return self._state

    # --- processes ---------------------------------------------------------------------

    def _alive(self, pid: int | None) -> bool:
        if pid is None:
            return False
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None  # also reaps it, so a dead child is no zombie
        state = _proc_state(pid)
        return state is not None and state not in ("Z", "X") and _is_ours(pid)

    def _paused(self, pid: int | None) -> bool:
        return pid is not None and self._alive(pid) and _proc_state(pid) == "T"

    def _spawn(self, process: _Process, argv: Sequence[str]) -> _Process:
        log_path = self.data_dir / process.log
        log_path.parent.mkdir(parents=True, exist_ok=True)
        (self.data_dir / process.data).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} planaria {' '.join(argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                [*process.prefix, sys.executable, "-m", _CLI_MODULE, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=env,
                # Its own session: Ctrl-C in the terminal reaches the launcher only, which
                # then stops every process in order.
                start_new_session=True,
            )
        self._children[child.pid] = child
        return replace(process, pid=child.pid)

    def _node_argv(self, node: _Process) -> list[str]:
        argv = [
            "node",
            "--id",
            node.name,
            "--listen",
            node.address,
            "--coordinator",
            self.coordinator_url,
            "--data",
            str(self.data_dir / node.data),
        ]
        if self._state.fsync is not None:
            argv += ["--fsync", self._state.fsync]
        return [*argv, *node.args, *self._state.node_args]

    def _check_ports(self, processes: Sequence[_Process]) -> None:
        for process in processes:
            ports = [(process.port, process.name)]
            if process.name != "coordinator":
                ports.append((process.port + BUS_PORT_OFFSET, f"{process.name} replication bus"))
            for port, what in ports:
                if not _port_free(process.host, port):
                    raise PortInUse(port, process.host, what)

    def _wait_listening(self, process: _Process, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._alive(process.pid):
                raise self._died(process, "while starting")
            try:
                with socket.create_connection((process.host, process.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{process.name} (pid {process.pid}) did not listen on {process.address} "
                    f"within {timeout_s:g} s; last lines of {self.data_dir / process.log}:\n"
                    + _tail(self.data_dir / process.log)
                )
            time.sleep(_POLL_S)

    def _died(self, process: _Process, when: str) -> ClusterError:
        child = self._children.get(process.pid or -1)
        code = (
            "" if child is None or child.returncode is None else f", exit code {child.returncode}"
        )
        return ClusterError(
            f"{process.name} (pid {process.pid}{code}) died {when}; last lines of "
            f"{self.data_dir / process.log}:\n{_tail(self.data_dir / process.log)}"
        )

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, node_id: str | None = None, *, timeout_s: float = 30.0) -> None:
        """Start the whole cluster and wait until every partition has a serving primary;
        or, with ``node_id``, restart that one node from its data directory (it recovers
        from its log and catches up; this does not wait for that)."""
        if node_id is not None:
            self._start_node(node_id, timeout_s)
            return
        with self._locked():
            self._adopt_existing()
            state = self._state
            running = [p.name for p in (state.coordinator, *state.nodes) if self._alive(p.pid)]
            if running:
                raise UsageError(
                    f"a cluster is already running in {self.data_dir} ({', '.join(running)}); "
                    f"stop it first: planaria down --data {self.data_dir}"
                )
            external = state.coordinator_url is not None
            self._check_ports([*([] if external else [state.coordinator]), *state.nodes])
            coordinator = state.coordinator
            if not external:
                coordinator = self._spawn(
                    state.coordinator,
                    [
                        "coordinator",
                        "--listen",
                        state.coordinator.address,
                        "--data",
                        str(self.data_dir / state.coordinator.data),
                    ],
                )
            self._save(replace(state, coordinator=coordinator))
        try:
            if not external:
                self._wait_listening(coordinator, timeout_s)
            self._write_metadata(timeout_s)
            with self._locked():
                state = self._state
                nodes = tuple(self._spawn(node, self._node_argv(node)) for node in state.nodes)
                self._save(replace(state, nodes=nodes))
            self.wait_serving(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _adopt_existing(self) -> None:
        """Reuse a stopped cluster's directory only with the same shape (its data depends
        on it); take its recorded pids so a running one is found."""
        path = self.data_dir / STATE_FILE
        if not path.exists():
            return
        recorded = self._load()
        mine, theirs = self._state, recorded
        shape = ("host", "partitions", "replicas", "min_insync")
        differs = [name for name in shape if getattr(mine, name) != getattr(theirs, name)]
        if [n.address for n in mine.nodes] != [n.address for n in theirs.nodes]:
            differs.append("nodes/ports")
        if mine.coordinator.address != theirs.coordinator.address:
            differs.append("coordinator port")
        if mine.coordinator_url != theirs.coordinator_url:
            differs.append("coordinator URL")
        if differs:
            raise UsageError(
                f"{self.data_dir} holds a cluster of another shape ({', '.join(differs)} "
                "differ); use another --data directory or the same options"
            )
        self._state = replace(recorded, fsync=mine.fsync, node_args=mine.node_args)

    def _start_node(self, node_id: str, timeout_s: float) -> None:
        with self._locked():
            state = self._refresh()
            node = state.node(node_id)
            if self._alive(node.pid):
                raise UsageError(f"node {node_id} is already running (pid {node.pid})")
            self._check_ports([node])
            started = self._spawn(node, self._node_argv(node))
            self._save(state.with_node(started))
        self._wait_listening(started, timeout_s)

    def _write_metadata(self, timeout_s: float) -> None:
        """Write ``/cluster`` (the shape the controller builds the initial configs from)
        unless it is there: a restarted cluster keeps its own."""
        from planaria import control  # noqa: PLC0415 -- loads the controller only here

        state = self._state
        write = control.write_cluster_metadata(
            self.coordinator_url,
            partitions=state.partitions,
            replicas=state.replicas,
            min_insync=state.min_insync,
            nodes=[node.name for node in state.nodes],
        )
        try:
            _run(asyncio.wait_for(write, timeout_s))
        except (TimeoutError, UnknownOutcome) as exc:
            log_tail = (
                "" if self.external_coordinator
                else "; last lines of its log:\n" + _tail(self.data_dir / state.coordinator.log)
            )  # fmt: skip
            raise ClusterError(
                f"could not write /cluster to the coordinator at {self.coordinator_address} "
                f"within {timeout_s:g} s ({exc}){log_tail}"
            ) from exc

    def wait_serving(self, timeout_s: float = 30.0) -> None:
        """Wait until every partition answers a read on its primary; ``ClusterError`` after
        ``timeout_s`` or as soon as a node process dies."""
        deadline = time.monotonic() + timeout_s
        missing: list[int] = list(range(self._state.partitions))
        while True:
            state = self._refresh()
            for node in state.nodes:
                if node.pid is not None and not self._alive(node.pid):
                    raise self._died(node, "before the cluster served")
            missing = self.unserved_partitions()
            if not missing:
                return
            if time.monotonic() >= deadline:
                shown = ", ".join(str(p) for p in missing[:10])
                more = "" if len(missing) <= 10 else f" and {len(missing) - 10} more"
                logs = "\n".join(
                    f"--- {node.name}:\n{_tail(self.data_dir / node.log, 5)}"
                    for node in state.nodes
                )
                raise ClusterError(
                    f"the cluster did not serve within {timeout_s:g} s: partitions {shown}{more} "
                    f"have no serving primary; last lines of the node logs:\n{logs}"
                )
            time.sleep(0.1)

    def unserved_partitions(self, timeout_s: float = 1.0) -> list[int]:
        """Partitions whose primary (by CLUSTER SLOTS of any live node) does not answer a
        read now: unknown primary, or an error such as TRYAGAIN or CLUSTERDOWN."""
        partitions = self._state.partitions
        owners = self._slot_owners(timeout_s)
        if owners is None:
            return list(range(partitions))
        keys = probe_keys(partitions)
        by_address: dict[str, list[int]] = {}
        unserved: list[int] = []
        for partition, key in keys.items():
            shard = owners.shard(keyslot(key))
            if shard is None:
                unserved.append(partition)
            else:
                by_address.setdefault(shard.primary, []).append(partition)
        for address, group in by_address.items():
            try:
                replies = resp_command(
                    address, *(("GET", keys[p]) for p in group), timeout_s=timeout_s
                )
            except OSError:
                unserved += group
                continue
            unserved += [p for p, r in zip(group, replies, strict=True) if _is_error(r)]
        return sorted(unserved)

    def _slot_owners(self, timeout_s: float) -> SlotMap | None:
        """The slot map, from the first live node that answers CLUSTER SLOTS."""
        for node in self._state.nodes:
            if not self._alive(node.pid) or self._paused(node.pid):
                continue
            try:
                (reply,) = resp_command(node.address, ("CLUSTER", "SLOTS"), timeout_s=timeout_s)
            except OSError:
                continue
            if _is_error(reply) or not isinstance(reply, list):
                continue
            try:
                return SlotMap.from_cluster_slots(reply, parse_address(node.address)[0])
            except MalformedTopology as error:
                log.warning("%s answered CLUSTER SLOTS with no map: %s", node.name, error)
        return None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every process: SIGTERM (and SIGCONT, so a paused one sees it), then wait;
        SIGKILL after ``timeout_s``. Nodes first, then the coordinator."""
        with self._locked():
            state = self._refresh()
            self._terminate([n for n in state.nodes if n.pid is not None], timeout_s)
            self._terminate([state.coordinator] if state.coordinator.pid else [], timeout_s)
            stopped = replace(
                state,
                coordinator=replace(state.coordinator, pid=None),
                nodes=tuple(replace(n, pid=None) for n in state.nodes),
            )
            if (self.data_dir / STATE_FILE).exists():
                self._save(stopped)

    def stop_node(self, node_id: str, timeout_s: float = 10.0) -> None:
        """Stop one node cleanly (SIGTERM, SIGKILL after ``timeout_s``)."""
        with self._locked():
            state = self._refresh()
            node = state.node(node_id)
            self._terminate([node], timeout_s)
            self._save(state.with_node(replace(node, pid=None)))

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a node: SIGKILL (a crash), SIGSTOP (a pause), SIGCONT (resume)."""
        with self._locked():
            state = self._refresh()
            node = state.node(node_id)
            if not self._alive(node.pid) or node.pid is None:
                raise UsageError(f"node {node_id} is not running")
            os.kill(node.pid, sig)
            if sig == signal.SIGKILL:
                self._wait_gone(node.pid, 5.0)
                self._save(state.with_node(replace(node, pid=None)))

    def _terminate(self, processes: Sequence[_Process], timeout_s: float) -> None:
        pids = [p.pid for p in processes if p.pid is not None and self._alive(p.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + timeout_s
        for pid in pids:
            if not self._wait_gone(pid, max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 5.0)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        self._children.pop(pid, None)
        return True

    # --- membership (docs/membership.md) ----------------------------------------------

    def add_node(
        self, *, weight: float = 1.0, zone: str | None = None, timeout_s: float = 30.0
    ) -> str:
        """Start a new node (the next id and port) and record it as a member, so the
        controller moves its share of the replicas to it (follow with
        :meth:`move_progress`). Returns its id."""
        from planaria import control  # noqa: PLC0415 -- loads the controller only here

        if not weight > 0:
            raise UsageError(f"weight must be > 0, not {weight}")
        # A removed node's id is never reused (its membership record says removed).
        recorded = set(self._with_coordinator(control.read_membership, timeout_s))
        with self._locked():
            state = self._refresh()
            used = recorded | {n.name for n in state.nodes}
            index = 1 + max((int(n[1:]) for n in used if n[1:].isdigit()), default=0)
            args = ("--weight", f"{weight:g}", *(("--zone", zone) if zone else ()))
            node = _Process(
                f"n{index}",
                state.host,
                max(n.port for n in state.nodes) + 1,
                None,
                f"logs/n{index}.log",
                f"nodes/n{index}",
                args,
            )
            self._check_ports([node])
            mark = control.mark_member
            self._with_coordinator(
                lambda c: mark(c, node.name, "member", weight=weight, zone=zone), timeout_s
            )
            started = self._spawn(node, self._node_argv(node))
            self._save(replace(state, nodes=(*state.nodes, started)))
        self._wait_listening(started, timeout_s)
        return node.name

    def drain(self, node_id: str, *, timeout_s: float = 10.0) -> None:
        """Mark ``node_id`` draining: the controller moves every replica it holds away
        (the node stays up and serves meanwhile; see :meth:`move_progress`)."""
        from planaria import control  # noqa: PLC0415 -- loads the controller only here

        self._state.node(node_id)  # UsageError for an unknown node
        staying = [n for n in self._members_staying(timeout_s) if n != node_id]
        if len(staying) < self._state.replicas:
            raise UsageError(
                f"draining {node_id} would leave {len(staying)} nodes for "
                f"{self._state.replicas} replicas of each partition: add a node first"
            )
        self._with_coordinator(lambda c: control.mark_member(c, node_id, "draining"), timeout_s)

    def remove_node(self, node_id: str, *, timeout_s: float = 10.0) -> None:
        """Forget a drained node: it must hold no replica any more (drain it and wait for
        :meth:`move_progress` first). Stops its process, marks it removed in the
        coordinator and drops it from this directory's cluster (its data stays)."""
        from planaria import control  # noqa: PLC0415 -- loads the controller only here

        progress = self.move_progress(timeout_s)
        held = progress.held.get(node_id) if progress is not None else None
        if held is None:
            raise UsageError(f"{node_id} is not draining: planaria node drain {node_id} first")
        if held:
            raise UsageError(f"{node_id} still holds {held} replicas: wait for the drain")
        self.stop_node(node_id, timeout_s)
        self._with_coordinator(lambda c: control.mark_member(c, node_id, "removed"), timeout_s)
        with self._locked():
            state = self._refresh()
            self._save(replace(state, nodes=tuple(n for n in state.nodes if n.name != node_id)))

    def move_progress(self, timeout_s: float = 2.0) -> Any:
        """``control.MoveProgress`` (replicas still to move, partitions moving, replicas
        each draining node still holds), or None before the cluster has a target."""
        from planaria import control  # noqa: PLC0415 -- loads the controller only here

        return self._with_coordinator(control.move_progress, timeout_s)

    def _members_staying(self, timeout_s: float) -> list[str]:
        from planaria import control  # noqa: PLC0415 -- loads the controller only here

        records = self._with_coordinator(control.read_membership, timeout_s)
        known = {n: r for n, (r, _) in records.items()}
        return [
            n.name
            for n in self._state.nodes
            if n.name not in known or known[n.name].state == "member"
        ]

    def _with_coordinator(self, call: Any, timeout_s: float) -> Any:
        """``await call(coordinator)`` over a fresh connection to the cluster's coordinator."""

        async def run() -> Any:
            async with connect(self.coordinator_url) as coordinator:
                return await call(coordinator)

        return _run(asyncio.wait_for(run(), timeout_s))

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- status ------------------------------------------------------------------------

    def status(self, timeout_s: float = 2.0) -> ClusterStatus:
        """Nodes (process alive, registered) and partitions (the coordinator's configs,
        with replication lag from the primaries' INFO where they report it)."""
        state = self._refresh()
        errors: list[str] = []
        external = state.coordinator_url is not None
        # An external coordinator is not our process: whether it is alive is what a read says.
        coordinator_alive = True if external else self._alive(state.coordinator.pid)
        members: set[str] | None = None
        configs: list[PartitionConfig] = []
        if coordinator_alive:
            try:
                members, configs = _run(_read_coordinator(self.coordinator_url, timeout_s))
            except (PlanariaError, OSError, TimeoutError) as exc:
                errors.append(f"coordinator {self.coordinator_address}: {exc!r}")
                coordinator_alive = False if external else coordinator_alive
        else:
            errors.append(f"coordinator {state.coordinator.address} is not running")
        nodes = tuple(
            NodeStatus(
                id=node.name,
                address=node.address,
                pid=node.pid if self._alive(node.pid) else None,
                alive=self._alive(node.pid),
                paused=self._paused(node.pid),
                registered=None if members is None else node.name in members,
            )
            for node in state.nodes
        )
        serving = {n.id: n.address for n in nodes if n.alive and not n.paused}
        primaries = _primary_lines(serving, timeout_s, errors)
        return ClusterStatus(
            nodes=nodes,
            partitions=_partition_statuses(configs, state.partitions, primaries),
            coordinator=self.coordinator_address,
            coordinator_alive=coordinator_alive,
            errors=tuple(errors),
        )


# --- helpers shared by status() and status --seed -------------------------------------------


def _is_error(reply: Any) -> bool:
    return isinstance(reply, hiredis.ReplyError)


async def _read_coordinator(url: str, timeout_s: float) -> tuple[set[str], list[PartitionConfig]]:
    """The registered node ids and the partition configs."""

    from planaria import control  # noqa: PLC0415 -- loads the controller only here

    async def read() -> tuple[set[str], list[PartitionConfig]]:
        async with connect(url) as coordinator:
            members = await coordinator.members()
            configs = await control.read_configs(coordinator)
        return set(members), [config for config, _ in configs.values()]

    return await asyncio.wait_for(read(), timeout_s)


def status_from_seed(seed: str, timeout_s: float = 2.0) -> ClusterStatus:
    """The status of the cluster that ``seed`` (any node's ``host:port``) belongs to, from
    the nodes alone: CLUSTER NODES names every node; each node's INFO gives its id, pid and,
    per partition it holds, role, epoch, ISR and (on the primary) lag. Nodes that do not
    answer are shown dead. The order of ``replicas`` is the primary first, then by id."""
    try:
        (reply,) = resp_command(seed, ("CLUSTER", "NODES"), timeout_s=timeout_s)
    except OSError as exc:
        raise ClusterError(f"cannot reach the seed node {seed}: {exc}") from exc
    if _is_error(reply) or not isinstance(reply, bytes):
        raise ClusterError(f"{seed} answered CLUSTER NODES with {reply!r}")
    addresses = sorted(
        {line.split()[1].split("@")[0] for line in reply.decode().splitlines() if line.strip()}
    )
    errors: list[str] = []
    nodes: list[NodeStatus] = []
    holders: dict[int, dict[str, dict[str, str]]] = {}  # partition -> node -> its line
    partitions = 0
    for address in addresses:
        try:
            (info_reply,) = resp_command(address, ("INFO", "all"), timeout_s=timeout_s)
        except OSError as exc:
            errors.append(f"{address}: {exc!r}")
            nodes.append(NodeStatus(address, address, None, False))
            continue
        info = _info_fields(info_reply)
        node_id = info.get("planaria_node", address)
        pid_text = info.get("process_id", "")
        nodes.append(
            NodeStatus(node_id, address, int(pid_text) if pid_text.isdigit() else None, True)
        )
        if info.get("partitions_total", "").isdigit():
            partitions = max(partitions, int(info["partitions_total"]))
        for partition, fields in partition_lines(info).items():
            holders.setdefault(partition, {})[node_id] = fields
    statuses = []
    for partition in range(max(partitions, max(holders, default=-1) + 1)):
        slots = slot_range(partition, partitions) if partitions else range(0, 0)
        by_node = holders.get(partition, {})
        leaders = sorted(
            (int(f.get("epoch", "0") or 0), node)
            for node, f in by_node.items()
            if f.get("role") == "primary"
        )
        primary = leaders[-1][1] if leaders else None
        lead = by_node.get(primary or "", {})
        epoch = max((int(f.get("epoch", "0") or 0) for f in by_node.values()), default=0)
        isr = tuple(n for n in lead.get("isr", "").split("|") if n)
        others = sorted(n for n in by_node if n != primary)
        statuses.append(
            PartitionStatus(
                id=partition,
                slots=(slots.start, slots.stop - 1) if slots else (0, -1),
                primary=primary,
                replicas=((primary,) if primary else ()) + tuple(others),
                isr=isr,
                epoch=epoch,
                lag=_count(lead, "lag"),
                snapshot_index=_count(lead, "snapshot_index"),
                log_entries=_count(lead, "log_entries"),
                log_bytes=_count(lead, "log_bytes"),
            )
        )
    return ClusterStatus(nodes=tuple(nodes), partitions=tuple(statuses), errors=tuple(errors))


def _info_fields(reply: Any) -> dict[str, str]:
    """INFO's ``name:value`` lines as a dict (section headers skipped)."""
    if _is_error(reply) or not isinstance(reply, bytes):
        return {}
    fields: dict[str, str] = {}
    for line in reply.decode(errors="replace").splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and not name.startswith("#"):
            fields[name] = value
    return fields


def partition_lines(info: Mapping[str, str]) -> dict[int, dict[str, str]]:
    """The node's per-partition INFO lines (``p<N>:role=primary,epoch=3,...,lag=0``) as
    partition -> fields."""
    lines: dict[int, dict[str, str]] = {}
    for name, text in info.items():
        if name.startswith("p") and name[1:].isdigit():
            pairs = (item.partition("=") for item in text.split(","))
            lines[int(name[1:])] = {k: v for k, _, v in pairs}
    return lines


def _partition_statuses(
    configs: Sequence[PartitionConfig],
    partitions: int,
    primaries: Mapping[int, Mapping[str, str]],
) -> tuple[PartitionStatus, ...]:
    by_id = {config.partition: config for config in configs}
    statuses = []
    for partition in range(partitions):
        slots = slot_range(partition, partitions)
        config = by_id.get(partition)
        if config is None:
            statuses.append(
                PartitionStatus(partition, (slots.start, slots.stop - 1), None, (), (), 0)
            )
            continue
        line = primaries.get(partition, {})
        statuses.append(
            PartitionStatus(
                id=partition,
                slots=(slots.start, slots.stop - 1),
                primary=config.primary,
                replicas=config.replicas,
                isr=tuple(r for r in config.replicas if r in config.isr),
                epoch=config.epoch,
                lag=_count(line, "lag"),
                learners=config.learners,
                handoff=config.handoff,
                snapshot_index=_count(line, "snapshot_index"),
                log_entries=_count(line, "log_entries"),
                log_bytes=_count(line, "log_bytes"),
            )
        )
    return tuple(statuses)


def _count(line: Mapping[str, str], name: str) -> int | None:
    value = line.get(name, "")
    return int(value) if value.isdigit() else None


def _primary_lines(
    addresses: Mapping[str, str], timeout_s: float, errors: list[str]
) -> dict[int, dict[str, str]]:
    """partition -> its primary's INFO line (lag: entries its slowest replica is behind;
    snapshot_index, log_entries, log_bytes)."""
    lines: dict[int, dict[str, str]] = {}
    for node_id, address in addresses.items():
        try:
            (reply,) = resp_command(address, ("INFO", "partitions"), timeout_s=timeout_s)
        except OSError as exc:
            errors.append(f"{node_id} {address}: {exc!r}")
            continue
        for partition, fields in partition_lines(_info_fields(reply)).items():
            if fields.get("role") == "primary":
                lines[partition] = fields
    return lines
