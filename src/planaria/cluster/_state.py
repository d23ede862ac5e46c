"""The state file: ``cluster.json`` records what a cluster started (ports, ids, pids), and
``cluster.lock`` serializes its updates between processes (``planaria up`` in one terminal,
``planaria node kill`` in another)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from planaria.cluster._errors import ClusterError, NoCluster
from planaria.errors import UsageError

__all__ = ["STATE_FILE", "Process", "State", "StateFile"]

STATE_FILE: Final = "cluster.json"
_LOCK_FILE: Final = "cluster.lock"
_STATE_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class Process:
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
class State:
    host: str
    partitions: int
    replicas: int
    min_insync: int
    fsync: str | None
    coordinator: Process
    nodes: tuple[Process, ...]
    node_args: tuple[str, ...] = ()  # extra `planaria node` options (e.g. --bug for tests)
    coordinator_url: str | None = None  # an external coordinator (no process of ours)
    first_epoch: int = 1  # of the first configs (above 1: restored from a backup)

    def node(self, node_id: str) -> Process:
        for node in self.nodes:
            if node.name == node_id:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise UsageError(f"no node {node_id!r} in this cluster (nodes: {known})")

    def with_node(self, updated: Process) -> State:
        nodes = tuple(updated if n.name == updated.name else n for n in self.nodes)
        return replace(self, nodes=nodes)

    def to_json(self) -> dict[str, Any]:
        return {"format": _STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, record: Mapping[str, Any], path: Path) -> State:
        try:
            if record.get("format") != _STATE_FORMAT:
                raise ValueError(f"unknown format {record.get('format')!r}")
            return cls(
                host=str(record["host"]),
                partitions=int(record["partitions"]),
                replicas=int(record["replicas"]),
                min_insync=int(record["min_insync"]),
                fsync=record["fsync"],
                coordinator=Process(**record["coordinator"]),
                nodes=tuple(Process(**node) for node in record["nodes"]),
                node_args=tuple(str(arg) for arg in record.get("node_args", ())),
                coordinator_url=record.get("coordinator_url"),
                first_epoch=int(record.get("first_epoch", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterError(f"{path}: not a planaria cluster state file: {exc}") from exc


class StateFile:
    """The cluster.json of ``data_dir`` and the last :class:`State` read from or written to
    it (``state``). Hold :meth:`locked` around a read-modify-write: another process may
    update the file meanwhile."""

    def __init__(self, data_dir: Path, state: State) -> None:
        self.data_dir = data_dir
        self.state = state

    @classmethod
    def open(cls, data_dir: Path) -> StateFile:
        """The state recorded in ``data_dir`` (``NoCluster`` if there is none)."""
        if not (data_dir / STATE_FILE).exists():
            raise NoCluster(f"no cluster in {data_dir} (no {STATE_FILE}); start one: planaria up")
        records = cls.__new__(cls)
        records.data_dir = data_dir
        records.state = records.load()
        return records

    @property
    def path(self) -> Path:
        return self.data_dir / STATE_FILE

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / _LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self) -> State:
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError as exc:
            raise NoCluster(f"no cluster in {self.data_dir} (no {STATE_FILE})") from exc
        except ValueError as exc:
            raise ClusterError(f"{self.path}: not JSON: {exc}") from exc
        return State.from_json(record, self.path)

    def save(self, state: State) -> None:
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        os.replace(temporary, self.path)
        self.state = state

    def refresh(self) -> State:
        """Re-read cluster.json: another process may have restarted a node meanwhile."""
        if self.path.exists():
            self.state = self.load()
        return self.state

    def adopt_existing(self) -> None:
        """Reuse a stopped cluster's directory only with the same shape (its data depends
        on it); take its recorded pids so a running one is found."""
        if not self.path.exists():
            return
        recorded = self.load()
        mine, theirs = self.state, recorded
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
        self.state = replace(recorded, fsync=mine.fsync, node_args=mine.node_args)
