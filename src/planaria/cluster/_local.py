"""The launcher: :class:`LocalCluster` starts, stops and inspects a local cluster. What it
started is kept in the state file (:class:`~planaria.cluster._state.StateFile`), the
processes themselves by a :class:`~planaria.cluster._processes.Supervisor`; membership
changes and the status read the coordinator (:mod:`planaria.cluster._coordinator`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from planaria.address import parse_address
from planaria.client._routing import MalformedTopology, SlotMap
from planaria.cluster._coordinator import read_coordinator, run_sync, with_coordinator
from planaria.cluster._errors import ClusterError
from planaria.cluster._processes import (
    BUS_PORT_OFFSET,
    DEFAULT_BASE_PORT,
    DEFAULT_COORDINATOR_PORT,
    Supervisor,
)
from planaria.cluster._resp import is_error, probe_keys, resp_command
from planaria.cluster._state import Process, State, StateFile
from planaria.cluster._status import (
    ClusterStatus,
    NodeStatus,
    partition_statuses,
    primary_lines,
)
from planaria.coord.interface import Coordinator
from planaria.coord.url import parse_url
from planaria.core.messages import PartitionConfig
from planaria.core.slots import keyslot
from planaria.errors import PlanariaError, UnknownOutcome, UsageError

__all__ = ["LocalCluster"]

log = logging.getLogger("planaria.cluster")

T = TypeVar("T")


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
        first_epoch: int = 1,
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
        if first_epoch < 1:
            raise UsageError(f"first_epoch must be >= 1, not {first_epoch}")
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
        self._processes = Supervisor(self.data_dir, env)
        self._file = StateFile(
            self.data_dir,
            State(
                host=host,
                partitions=partitions,
                replicas=replicas,
                min_insync=min_insync,
                fsync=fsync,
                node_args=tuple(node_args),
                coordinator_url=coordinator_url,
                first_epoch=first_epoch,
                coordinator=Process(
                    "coordinator",
                    host,
                    coordinator_port,
                    None,
                    "logs/coordinator.log",
                    "coordinator",
                ),
                nodes=tuple(
                    Process(
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
            ),
        )

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str]) -> LocalCluster:
        """The cluster recorded in ``data_dir`` (``NoCluster`` if there is none)."""
        cluster = cls.__new__(cls)
        cluster.data_dir = Path(data_dir).resolve()
        cluster._file = StateFile.open(cluster.data_dir)
        cluster._processes = Supervisor(cluster.data_dir)
        return cluster

    def record(self) -> None:
        """Write this (stopped) cluster's cluster.json without starting anything: a restore
        records the cluster it laid out, for ``planaria up`` to start."""
        with self._file.locked():
            if self._file.path.exists():
                raise UsageError(f"{self.data_dir} already holds a cluster")
            self._file.save(self._state)

    @property
    def _state(self) -> State:
        """What the state file last said (see :meth:`StateFile.refresh`)."""
        return self._file.state

    # --- properties --------------------------------------------------------------------

    @property
    def node_ids(self) -> list[str]:
        return [node.name for node in self._state.nodes]

    @property
    def partitions(self) -> int:
        return self._state.partitions

    @property
    def base_port(self) -> int:
        """The first node's RESP port."""
        return self._state.nodes[0].port

    @property
    def coordinator_port(self) -> int:
        return self._state.coordinator.port

    @property
    def replicas(self) -> int:
        return self._state.replicas

    @property
    def min_insync(self) -> int:
        return self._state.min_insync

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
        return self._file.refresh().node(node_id).pid

    def log_path(self, name: str) -> Path:
        """The log file of ``name`` (a node id or ``coordinator``)."""
        process = self._state.coordinator if name == "coordinator" else self._state.node(name)
        return self.data_dir / process.log

    def _node_argv(self, node: Process) -> list[str]:
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
            # Every node serves Prometheus metrics, on a free loopback port that `planaria
            # status` reads from its INFO (a --metrics-listen in the node's args wins).
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        if self._state.fsync is not None:
            argv += ["--fsync", self._state.fsync]
        return [*argv, *node.args, *self._state.node_args]

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, node_id: str | None = None, *, timeout_s: float = 30.0) -> None:
        """Start the whole cluster and wait until every partition has a serving primary;
        or, with ``node_id``, restart that one node from its data directory (it recovers
        from its log and catches up; this does not wait for that)."""
        if node_id is not None:
            self._start_node(node_id, timeout_s)
            return
        with self._file.locked():
            self._file.adopt_existing()
            state = self._state
            running = [
                p.name for p in (state.coordinator, *state.nodes) if self._processes.alive(p.pid)
            ]
            if running:
                raise UsageError(
                    f"a cluster is already running in {self.data_dir} ({', '.join(running)}); "
                    f"stop it first: planaria down --data {self.data_dir}"
                )
            external = state.coordinator_url is not None
            self._processes.check_ports([*([] if external else [state.coordinator]), *state.nodes])
            coordinator = state.coordinator
            if not external:
                coordinator = self._processes.spawn(
                    state.coordinator,
                    [
                        "coordinator",
                        "--listen",
                        state.coordinator.address,
                        "--data",
                        str(self.data_dir / state.coordinator.data),
                    ],
                )
            self._file.save(replace(state, coordinator=coordinator))
        try:
            if not external:
                self._processes.wait_listening(coordinator, timeout_s)
            self._write_metadata(timeout_s)
            with self._file.locked():
                state = self._state
                nodes = tuple(
                    self._processes.spawn(node, self._node_argv(node)) for node in state.nodes
                )
                self._file.save(replace(state, nodes=nodes))
            self.wait_serving(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start_node(self, node_id: str, timeout_s: float) -> None:
        with self._file.locked():
            state = self._file.refresh()
            node = state.node(node_id)
            if self._processes.alive(node.pid):
                raise UsageError(f"node {node_id} is already running (pid {node.pid})")
            self._processes.check_ports([node])
            started = self._processes.spawn(node, self._node_argv(node))
            self._file.save(state.with_node(started))
        self._processes.wait_listening(started, timeout_s)

    def _write_metadata(self, timeout_s: float) -> None:
        """Write ``/cluster`` (the shape the controller builds the initial configs from)
        unless it is there: a restarted cluster keeps its own."""
        from planaria import node  # noqa: PLC0415 -- the front loads only what is used

        state = self._state
        write = node.write_cluster_metadata(
            self.coordinator_url,
            partitions=state.partitions,
            replicas=state.replicas,
            min_insync=state.min_insync,
            nodes=[node.name for node in state.nodes],
            first_epoch=state.first_epoch,
        )
        try:
            run_sync(asyncio.wait_for(write, timeout_s))
        except (TimeoutError, UnknownOutcome) as exc:
            log_tail = (
                "" if self.external_coordinator
                else "; last lines of its log:\n" + self._processes.log_tail(state.coordinator)
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
            state = self._file.refresh()
            for node in state.nodes:
                if node.pid is not None and not self._processes.alive(node.pid):
                    raise self._processes.died(node, "before the cluster served")
            missing = self.unserved_partitions()
            if not missing:
                return
            if time.monotonic() >= deadline:
                shown = ", ".join(str(p) for p in missing[:10])
                more = "" if len(missing) <= 10 else f" and {len(missing) - 10} more"
                logs = "\n".join(
                    f"--- {node.name}:\n{self._processes.log_tail(node, 5)}" for node in state.nodes
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
            unserved += [p for p, r in zip(group, replies, strict=True) if is_error(r)]
        return sorted(unserved)

    def _slot_owners(self, timeout_s: float) -> SlotMap | None:
        """The slot map, from the first live node that answers CLUSTER SLOTS."""
        for node in self._state.nodes:
            if not self._processes.alive(node.pid) or self._processes.paused(node.pid):
                continue
            try:
                (reply,) = resp_command(node.address, ("CLUSTER", "SLOTS"), timeout_s=timeout_s)
            except OSError:
                continue
            if is_error(reply) or not isinstance(reply, list):
                continue
            try:
                return SlotMap.from_cluster_slots(reply, parse_address(node.address)[0])
            except MalformedTopology as error:
                log.warning("%s answered CLUSTER SLOTS with no map: %s", node.name, error)
        return None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every process: SIGTERM (and SIGCONT, so a paused one sees it), then wait;
        SIGKILL after ``timeout_s``. Nodes first, then the coordinator."""
        with self._file.locked():
            state = self._file.refresh()
            self._processes.terminate([n for n in state.nodes if n.pid is not None], timeout_s)
            self._processes.terminate(
                [state.coordinator] if state.coordinator.pid else [], timeout_s
            )
            stopped = replace(
                state,
                coordinator=replace(state.coordinator, pid=None),
                nodes=tuple(replace(n, pid=None) for n in state.nodes),
            )
            if self._file.path.exists():
                self._file.save(stopped)

    def stop_node(self, node_id: str, timeout_s: float = 10.0) -> None:
        """Stop one node cleanly (SIGTERM, SIGKILL after ``timeout_s``)."""
        with self._file.locked():
            state = self._file.refresh()
            node = state.node(node_id)
            self._processes.terminate([node], timeout_s)
            self._file.save(state.with_node(replace(node, pid=None)))

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a node: SIGKILL (a crash), SIGSTOP (a pause), SIGCONT (resume)."""
        with self._file.locked():
            state = self._file.refresh()
            node = state.node(node_id)
            if not self._processes.alive(node.pid) or node.pid is None:
                raise UsageError(f"node {node_id} is not running")
            self._processes.signal(node.pid, sig)
            if sig == signal.SIGKILL:
                self._file.save(state.with_node(replace(node, pid=None)))

    # --- membership (docs/membership.md) ----------------------------------------------

    def add_node(
        self, *, weight: float = 1.0, zone: str | None = None, timeout_s: float = 30.0
    ) -> str:
        """Start a new node (the next id and port) and record it as a member, so the
        controller moves its share of the replicas to it (follow with
        :meth:`move_progress`). Returns its id."""
        from planaria.node import mark_member, read_membership  # noqa: PLC0415

        if not weight > 0:
            raise UsageError(f"weight must be > 0, not {weight}")
        # A removed node's id is never reused (its membership record says removed).
        recorded = set(self._with_coordinator(read_membership, timeout_s))
        with self._file.locked():
            state = self._file.refresh()
            used = recorded | {n.name for n in state.nodes}
            index = 1 + max((int(n[1:]) for n in used if n[1:].isdigit()), default=0)
            args = ("--weight", f"{weight:g}", *(("--zone", zone) if zone else ()))
            node = Process(
                f"n{index}",
                state.host,
                max(n.port for n in state.nodes) + 1,
                None,
                f"logs/n{index}.log",
                f"nodes/n{index}",
                args,
            )
            self._processes.check_ports([node])
            mark = mark_member
            self._with_coordinator(
                lambda c: mark(c, node.name, "member", weight=weight, zone=zone), timeout_s
            )
            started = self._processes.spawn(node, self._node_argv(node))
            self._file.save(replace(state, nodes=(*state.nodes, started)))
        self._processes.wait_listening(started, timeout_s)
        return node.name

    def drain(self, node_id: str, *, timeout_s: float = 10.0) -> None:
        """Mark ``node_id`` draining: the controller moves every replica it holds away
        (the node stays up and serves meanwhile; see :meth:`move_progress`)."""
        from planaria import node  # noqa: PLC0415 -- the front loads only what is used

        self._state.node(node_id)  # UsageError for an unknown node
        staying = [n for n in self._members_staying(timeout_s) if n != node_id]
        if len(staying) < self._state.replicas:
            raise UsageError(
                f"draining {node_id} would leave {len(staying)} nodes for "
                f"{self._state.replicas} replicas of each partition: add a node first"
            )
        self._with_coordinator(lambda c: node.mark_member(c, node_id, "draining"), timeout_s)

    def remove_node(self, node_id: str, *, timeout_s: float = 10.0) -> None:
        """Forget a drained node: it must hold no replica any more (drain it and wait for
        :meth:`move_progress` first). Stops its process, marks it removed in the
        coordinator and drops it from this directory's cluster (its data stays)."""
        from planaria import node  # noqa: PLC0415 -- the front loads only what is used

        progress = self.move_progress(timeout_s)
        held = progress.held.get(node_id) if progress is not None else None
        if held is None:
            raise UsageError(f"{node_id} is not draining: planaria node drain {node_id} first")
        if held:
            raise UsageError(f"{node_id} still holds {held} replicas: wait for the drain")
        self.stop_node(node_id, timeout_s)
        self._with_coordinator(lambda c: node.mark_member(c, node_id, "removed"), timeout_s)
        with self._file.locked():
            state = self._file.refresh()
            self._file.save(
                replace(state, nodes=tuple(n for n in state.nodes if n.name != node_id))
            )

    def move_progress(self, timeout_s: float = 2.0) -> Any:
        """``node.MoveProgress`` (replicas still to move, partitions moving, replicas
        each draining node still holds), or None before the cluster has a target."""
        from planaria import node  # noqa: PLC0415 -- the front loads only what is used

        return self._with_coordinator(node.move_progress, timeout_s)

    def _members_staying(self, timeout_s: float) -> list[str]:
        from planaria import node  # noqa: PLC0415 -- the front loads only what is used

        records = self._with_coordinator(node.read_membership, timeout_s)
        known = {n: r for n, (r, _) in records.items()}
        return [
            n.name
            for n in self._state.nodes
            if n.name not in known or known[n.name].state == "member"
        ]

    def _with_coordinator(self, call: Callable[[Coordinator], Awaitable[T]], timeout_s: float) -> T:
        """``await call(coordinator)`` over a fresh connection to the cluster's coordinator."""
        return with_coordinator(self.coordinator_url, call, timeout_s)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- status ------------------------------------------------------------------------

    def status(self, timeout_s: float = 2.0) -> ClusterStatus:
        """Nodes (process alive, registered) and partitions (the coordinator's configs,
        with replication lag from the primaries' INFO where they report it)."""
        state = self._file.refresh()
        errors: list[str] = []
        external = state.coordinator_url is not None
        # An external coordinator is not our process: whether it is alive is what a read says.
        coordinator_alive = True if external else self._processes.alive(state.coordinator.pid)
        members: set[str] | None = None
        configs: list[PartitionConfig] = []
        if coordinator_alive:
            try:
                members, configs = read_coordinator(self.coordinator_url, timeout_s)
            except (PlanariaError, OSError, TimeoutError) as exc:
                errors.append(f"coordinator {self.coordinator_address}: {exc!r}")
                coordinator_alive = False if external else coordinator_alive
        else:
            errors.append(f"coordinator {state.coordinator.address} is not running")
        nodes = tuple(
            NodeStatus(
                id=node.name,
                address=node.address,
                pid=node.pid if self._processes.alive(node.pid) else None,
                alive=self._processes.alive(node.pid),
                paused=self._processes.paused(node.pid),
                registered=None if members is None else node.name in members,
            )
            for node in state.nodes
        )
        serving = {n.id: n.address for n in nodes if n.alive and not n.paused}
        metrics: dict[str, str] = {}
        primaries = primary_lines(serving, timeout_s, errors, metrics)
        return ClusterStatus(
            nodes=tuple(replace(n, metrics=metrics.get(n.id)) for n in nodes),
            partitions=partition_statuses(configs, state.partitions, primaries),
            coordinator=self.coordinator_address,
            coordinator_alive=coordinator_alive,
            errors=tuple(errors),
        )
