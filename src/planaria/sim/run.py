"""One simulated run per seed: build the world, run workload + nemesis, heal, check.

``run_seed(SimConfig(seed=7, faults=...))`` returns a :class:`SimResult`: passed or the
first violated check with the trace around it and the command that replays it. Phases:

1. *workload*: clients run ``ops`` operations while the nemesis injects faults;
2. *heal*: every fault ends; within ``liveness_ms`` every partition must have a serving
   primary (``no-primary``), and with membership changes reach its target placement
   (``moves-stuck``);
3. *resolution*: every write a client parked (no answer by its deadline) is retried with
   its request id; one still unanswered after ``liveness_ms`` is ``unresolved``;
4. *final reads*: every key ever written is read once more through the clients
   (``final-read`` if one cannot be read);
5. *convergence*: within ``liveness_ms`` every replica of a partition reaches the same
   applied state (``diverged``);
6. the history must be linearizable (``not-linearizable``; ``history-unknown`` when the
   search gives up) and no acknowledged write may be missing from the final reads
   (``lost-write``). These are judged first: when a later phase failed, the history so far
   is checked before that failure is reported. With counters (``SimConfig.counters``),
   each counter's final value must count every acknowledged increment
   (``counter-lost``, also when two acknowledged ones answered the same value) and no more
   than those plus the ones of unknown outcome (``counter-doubled``: one applied twice),
   and every value seen must fit real time (``planaria.check.counters``).
   With TTL keys (``SimConfig.ttls``), the clients also set keys with a relative expiry
   (tens to hundreds of ms), change and remove expiries and read them: the monitor's
   ``expired-read`` holds every read a primary answers to its own clock, and ``diverged``
   compares the replicas' expiries too.

``checks="history"`` turns the in-run monitor off (``checks.Monitor``): only what a client
sees, the end checks above, can fail the run.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from random import Random
from typing import Any

from planaria.check.counters import check_counters
from planaria.check.history import Operation, operations_from_events
from planaria.check.linearizability import Verdict, check_operations
from planaria.check.lostwrites import find_lost_writes
from planaria.check.models import KvModel
from planaria.check.report import explain
from planaria.core.compaction import SnapshotPolicy
from planaria.core.controller import Controller, ControllerSettings
from planaria.core.lease import session_ttl_min_ms
from planaria.core.placement import place
from planaria.core.replica import ReplicaSettings
from planaria.errors import UsageError
from planaria.sim.client import ClientSettings, History, SimClient, Workload
from planaria.sim.coordinator import COORDINATOR, CoordinatorSettings, SimCoordinator
from planaria.sim.monitor import CHECK_MODES, Monitor, Violation
from planaria.sim.nemesis import (
    ALL_FAULT_KINDS,
    FAULT_KINDS,
    MEMBERSHIP,
    SNAPSHOT,
    Nemesis,
    NemesisSettings,
)
from planaria.sim.network import Network, NetworkSettings
from planaria.sim.node import FIRST_NONCE, NodeSettings, SimNode
from planaria.sim.show import show
from planaria.sim.world import World

__all__ = ["SimConfig", "SimResult", "replay_command", "run_seed"]

TRACE_LINES = 60
HISTORY_VERDICTS = ("not-linearizable", "lost-write", "history-unknown")


@dataclass(frozen=True)
class SimConfig:
    """Everything a run depends on; the same config replays the same run."""

    seed: int = 0
    nodes: int = 5
    partitions: int = 8
    replicas: int = 3
    ops: int = 300
    clients: int = 5
    keys: int = 8  # keys shared by every client (for linearizability)
    counters: int = 0  # counter keys the clients increment (0: the register workload only)
    counter_share: float = 0.3  # with counters: the share of operations that increment
    ttls: int = 0  # keys the clients set with an expiry and read (0: none)
    ttl_share: float = 0.3  # with TTL keys: the share of operations on them
    # "all": every check; "history": only what a client sees (HISTORY_CHECKS).
    checks: str = "all"
    faults: frozenset[str] = frozenset(FAULT_KINDS)
    bugs: frozenset[str] = frozenset()
    liveness_ms: float = 4000.0
    # The linearizability search gives up on a key after this many steps (the verdict is
    # then "history-unknown", a failure: the history was not judged).
    search_steps_max: int = 2_000_000
    trace_keep: int | None = 3000
    node: NodeSettings = field(default_factory=NodeSettings)
    coordinator: CoordinatorSettings = field(default_factory=CoordinatorSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    nemesis: NemesisSettings = field(default_factory=NemesisSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    replica: ReplicaSettings | None = None  # default: ReplicaSettings(bugs=bugs)

    def __post_init__(self) -> None:
        if self.nodes < self.replicas:
            raise UsageError(f"{self.nodes} nodes cannot hold {self.replicas} replicas each")
        if self.replicas < 1 or self.partitions < 1 or self.clients < 1 or self.keys < 1:
            raise UsageError("replicas, partitions, clients and keys must be >= 1")
        if self.ops < 0:
            raise UsageError(f"ops must be >= 0, got {self.ops}")
        if self.counters < 0 or not 0.0 <= self.counter_share <= 1.0:
            raise UsageError("counters must be >= 0 and counter_share within 0..1")
        if self.ttls < 0 or not 0.0 <= self.ttl_share <= 1.0:
            raise UsageError("ttls must be >= 0 and ttl_share within 0..1")
        if self.checks not in CHECK_MODES:
            raise UsageError(f"checks must be one of {CHECK_MODES}, got {self.checks!r}")
        if self.client.lanes < 1 or self.client.write_window < 1:
            raise UsageError("client lanes and write_window must be >= 1")
        unknown = sorted(set(self.faults) - set(ALL_FAULT_KINDS))
        if unknown:
            raise UsageError(f"unknown fault kind(s) {unknown}")
        # The lease rule: a session expires only after the lease surely ran out, even with
        # the node's clock slow and the coordinator's fast by drift_max (core.lease).
        drift = self.nemesis.drift_max
        ttl_min_ms = session_ttl_min_ms(
            self.node.lease_ms, drift_max=drift, margin_ms=self.node.tick_ms
        )
        if self.coordinator.session_ttl_ms < ttl_min_ms:
            raise UsageError(
                f"session_ttl_ms {self.coordinator.session_ttl_ms} must be >= (lease_ms / "
                f"(1 - drift_max) + tick_ms) * (1 + drift_max) = {ttl_min_ms:.1f}"
            )


@dataclass
class SimResult:
    seed: int
    passed: bool
    check: str | None = None
    detail: str | None = None
    operations: int = 0
    ok_operations: int = 0
    info_operations: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    events: int = 0
    messages: int = 0
    sim_ms: float = 0.0
    trace: list[str] = field(default_factory=list)
    command: str = ""
    history: list[Any] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    full_trace: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "passed": self.passed,
            "check": self.check,
            "detail": self.detail,
            "operations": self.operations,
            "ok": self.ok_operations,
            "info": self.info_operations,
            "faults": self.faults,
            "events": self.events,
            "messages": self.messages,
            "sim_ms": round(self.sim_ms, 3),
            "command": self.command,
        }


def replay_command(config: SimConfig) -> str:
    faults = ",".join(kind for kind in ALL_FAULT_KINDS if kind in config.faults) or "none"
    parts = [
        "planaria sim",
        f"--seed {config.seed}",
        f"--faults {faults}",
        f"--nodes {config.nodes}",
        f"--partitions {config.partitions}",
        f"--replicas {config.replicas}",
        f"--ops {config.ops}",
    ]
    if config.keys != SimConfig.keys:
        parts.append(f"--keys {config.keys}")
    if config.counters != SimConfig.counters:
        parts.append(f"--counters {config.counters}")
    if config.counter_share != SimConfig.counter_share:
        parts.append(f"--counter-share {config.counter_share:g}")
    if config.ttls != SimConfig.ttls:
        parts.append(f"--ttls {config.ttls}")
    if config.client.lanes != ClientSettings.lanes:
        parts.append(f"--lanes {config.client.lanes}")
    if not config.node.fsync_max_drawn:
        parts.append(f"--fsync-max-ms {config.node.fsync_max_ms:g}")
    if config.checks != SimConfig.checks:
        parts.append(f"--checks {config.checks}")
    parts.extend(f"--bug {bug}" for bug in sorted(config.bugs))
    return " ".join(parts)


def _draw_snapshot_settings(node: NodeSettings, rng: Random) -> NodeSettings:
    """With the ``snapshot`` fault: this run's snapshot thresholds and transfer settings,
    drawn small (as FoundationDB's simulation draws its knobs), so that in a run of a few
    hundred operations every replica snapshots and compacts many times and backups that
    lag need a transfer, spanning many chunks, often."""
    policy = SnapshotPolicy(
        entries=rng.choice((4, 8, 16, 32)),
        log_bytes=rng.choice((512, 2048, 8192)),
        catchup_entries=rng.choice((0, 4, 16, 100)),
    )
    transfer = replace(
        node.transfer,
        chunk_bytes=rng.choice((128, 512, 1024)),
        bytes_per_s=rng.choice((16 * 1024, 128 * 1024, 1024 * 1024)),
    )
    return replace(node, snapshots=policy, transfer=transfer)


class _Run:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.focus: str | None = None
        world = self.world = World(config.seed, trace_keep=config.trace_keep)
        world.trace.show = show
        node = config.node
        if node.fsync_max_drawn:  # this run's disks: slow or fast (see NodeSettings)
            fsync_max_ms = world.rng.choice((node.fsync_max_ms / 5, node.fsync_max_ms))
            node = replace(node, fsync_max_ms=max(fsync_max_ms, node.fsync_min_ms))
        if SNAPSHOT in config.faults:
            node = _draw_snapshot_settings(node, world.rng)
        self.node_settings = node
        network = self.network = Network(world, config.network)
        node_ids = [f"n{i}" for i in range(1, config.nodes + 1)]
        self.placement = place(config.partitions, node_ids, replicas=config.replicas)
        replica_settings = self.replica_settings = config.replica or ReplicaSettings(
            bugs=config.bugs
        )
        controller = Controller(ControllerSettings(bugs=config.bugs))
        self.nodes: dict[str, SimNode] = {}
        self.history_only = config.checks == "history"
        self.monitor = Monitor(self.nodes, self._config_of, enforce=not self.history_only)
        self.coordinator = SimCoordinator(
            world,
            network,
            controller=controller,
            settings=replace(config.coordinator, min_insync=replica_settings.min_insync),
            on_change=self.monitor.on_config_change,
        )
        for node_id in node_ids:
            hosted = [p for p, replicas in self.placement.items() if node_id in replicas]
            self._new_node(node_id, hosted)
        # The nodes registered before the cluster was created: their first sessions exist.
        for node_id in node_ids:
            data_id = self.nodes[node_id].claim_data_id()
            self.coordinator.preopen(node_id, nonce=FIRST_NONCE, now_ms=0.0, data_id=data_id)
        self.coordinator.create_configs(self.placement)
        # ...and read them: they know every node's data id (its first start's is not new).
        for node_id in node_ids:
            self.nodes[node_id].confirm_data_id_in(list(self.coordinator.configs.values()))
        # Membership: every node weighs 1; nodes drain, leave (retired) and join.
        self.members = dict.fromkeys(node_ids, 1.0)
        self.draining: set[str] = set()
        self.leaving: set[str] = set()  # draining, to be stopped once they hold nothing
        self.retired: set[str] = set()
        self.coordinator.set_membership(self.members, frozenset(), replicas=config.replicas)
        self.history = History()
        self.counter_history = History()
        self.ttl_history = History()  # not judged by the register model: keys vanish
        keys = tuple(f"k{i}".encode() for i in range(config.keys))
        counters = tuple(f"n{i}".encode() for i in range(config.counters))
        self.workload = Workload(
            ops_left=config.ops,
            keys=keys,
            counter_keys=counters,
            counter_share=config.counter_share,
            ttl_keys=tuple(f"t{i}".encode() for i in range(config.ttls)),
            ttl_share=config.ttl_share,
        )
        self.clients = [
            SimClient(
                world,
                network,
                f"c{i}",
                partitions=config.partitions,
                workload=self.workload,
                history=self.history,
                settings=config.client,
                counter_history=self.counter_history,
                ttl_history=self.ttl_history,
            )
            for i in range(1, config.clients + 1)
        ]
        self.nemesis = Nemesis(
            world,
            network,
            self,
            config.faults,
            config.nemesis,
            hosts=[*node_ids, COORDINATOR],
            coordinator=COORDINATOR,
        )
        network.tracer = world.trace

    def _new_node(self, node_id: str, hosted: list[int]) -> SimNode:
        # Half the disks preallocate segments (a torn write then ends in zeros, a
        # clean end), half do not (it ends the file: a torn tail to cut off).
        preallocate = self.world.rng.choice((0, self.node_settings.preallocate_bytes))
        node = SimNode(
            self.world,
            self.network,
            node_id,
            partitions=hosted,
            settings=replace(self.node_settings, preallocate_bytes=preallocate),
            replica_settings=self.replica_settings,
            hooks=self.monitor,
            rebuild_on_refusal=self.history_only,
        )
        node.crash_requested = self._crash_now
        self.nodes[node_id] = node
        return node

    # ------------------------------------------------------------------ nemesis target

    def node_ids(self) -> list[str]:
        return [node for node in self.nodes if node not in self.retired]

    def change_membership(self, pick: float) -> str | None:
        """Add a node (while there are fewer than ``nodes + 2``), or drain one, or remove
        one (drain, then stop it once it holds nothing), keeping at least ``replicas``
        members that stay."""
        config = self.config
        staying = sorted(n for n in self.members if n not in self.draining)
        self._retire_drained()
        if pick < 0.4 and len(self.members) < config.nodes + 2:
            node_id = f"n{len(self.nodes) + 1}"
            node = self._new_node(node_id, [])
            self.nemesis.drift_clock(node_id)
            node.on_start()
            self.members[node_id] = 1.0
            what = f"add {node_id}"
        elif len(staying) > config.replicas:
            node_id = staying[self.world.rng.randrange(len(staying))]
            self.draining.add(node_id)
            if pick < 0.7:
                what = f"drain {node_id}"
            else:
                self.leaving.add(node_id)
                what = f"remove {node_id}"
        else:
            return None
        self._membership_changed()
        return what

    def _membership_changed(self) -> None:
        self.coordinator.set_membership(
            self.members, frozenset(self.draining), replicas=self.config.replicas
        )

    def _retire_drained(self, _: Any = None) -> None:
        """Stop (for good) every removed node that no config lists any more."""
        listed = {n for c in self.coordinator.configs.values() for n in c.replicas}
        for node_id in sorted(self.leaving - listed):
            self.leaving.discard(node_id)
            self.draining.discard(node_id)
            self.retired.add(node_id)
            del self.members[node_id]
            self.world.crash(node_id)
            self.world.trace.add(self.world.now_ms, "nemesis", f"retired {node_id}")
            self._membership_changed()

    def primary_of_some_partition(self) -> str | None:
        configs = [self.coordinator.configs[p] for p in sorted(self.coordinator.configs)]
        primaries = [c.primary for c in configs if c.primary is not None]
        return primaries[self.world.rng.randrange(len(primaries))] if primaries else None

    def crash_node(self, node: str, *, mid_write: bool) -> None:
        if mid_write:
            self.nodes[node].crash_mid_write = True
            # If it writes nothing for a while, it crashes anyway.
            self.world.at(self.world.now_ms + 50.0, self._crash_if_up, node)
        else:
            self.world.crash(node)

    def crash_mid_snapshot(
        self, node: str, write_op: int, wait_ms: float, *, install_only: bool
    ) -> None:
        self.nodes[node].crash_mid_snapshot = write_op
        self.nodes[node].crash_install_only = install_only
        # If it takes no snapshot and installs none for a while, it crashes anyway.
        self.world.at(self.world.now_ms + wait_ms, self._crash_if_armed, node)

    def _crash_if_armed(self, node: str) -> None:
        target = self.nodes[node]
        if target.up and target.crash_mid_snapshot is not None:
            self.world.crash(node)

    def receiving_nodes(self) -> list[str]:
        return [
            node_id
            for node_id in self.node_ids()
            if self.nodes[node_id].up and self.nodes[node_id].receiver.receiving
        ]

    def tear_snapshot(self, node: str) -> None:
        target = self.nodes[node]
        if target.up:
            self.world.crash(node)  # a mid-snapshot crash still waiting for its snapshot
        torn = target.tear_snapshot(self.world.rng, spare=lambda p: not self._may_lose(node, p))
        self.world.trace.add(self.world.now_ms, "nemesis", f"tear {node}", torn)

    def end_session(self, node: str) -> None:
        self.coordinator.end_session(node)

    def wipe_node(self, node: str, *, whole_disk: bool) -> None:
        self.nodes[node].wipe(whole_disk=whole_disk)

    def may_wipe(self, node: str) -> bool:
        """Every partition keeps another in-sync copy (an ISR member that lost nothing, up,
        not paused and not cut from the coordinator, so its session is not about to end):
        wiping the last one leaves a partition that can only refuse, for good."""
        return all(self._may_lose(node, p) for p in self.coordinator.configs)

    def _may_lose(self, node: str, partition: int) -> bool:
        """``node`` may lose its copy of ``partition``: it is not in the ISR, or another
        in-sync copy is safe (as for :meth:`may_wipe`)."""
        config = self.coordinator.configs.get(partition)
        if config is None or node not in config.isr:
            return True
        return any(other != node and self._safe_copy(other) for other in config.isr)

    def _safe_copy(self, node_id: str) -> bool:
        node = self.nodes[node_id]
        reaches_coordinator = (node_id, COORDINATOR) not in self.network.cuts
        return (
            node.up
            and not node.paused
            and not node.markers
            and not node.data_id_new
            and reaches_coordinator
        )

    def _crash_if_up(self, node: str) -> None:
        target = self.nodes[node]
        if target.up and target.crash_mid_write:
            self.world.crash(node)

    def _crash_now(self, node: SimNode) -> None:
        self.world.crash(node.pid)

    def restart_node(self, node: str) -> None:
        if node in self.retired:
            return
        if self.nodes[node].up:
            self.world.crash(node)  # a mid-write crash still waiting for a write
        self.world.restart(node)

    def _config_of(self, partition: int) -> Any:
        return self.coordinator.configs[partition]

    # ------------------------------------------------------------------ phases

    def run(self) -> SimResult:
        config = self.config
        result = SimResult(config.seed, passed=True, command=replay_command(config))
        try:
            self._run_phases(result)
        except Violation as violation:
            result.passed = False
            result.check = violation.check
            result.detail = violation.detail
            self.focus = violation.focus
        except Exception as error:  # the code under test crashed: that is a finding too
            result.passed = False
            result.check = "crashed"
            lines = traceback.format_exception(error)
            result.detail = f"{type(error).__name__}: {error}\n" + "".join(lines[-6:])
        self._fill(result)
        return result

    def _run_phases(self, result: SimResult) -> None:
        world = self.world
        world.after_event = self.monitor.after_event
        self.nemesis.start()  # first: it sets the clocks' offsets and rates
        self.coordinator.start()
        for node in self.nodes.values():
            node.on_start()
        for client in self.clients:
            client.start()
        workload_end_ms = max(10_000.0, self.config.ops * 50.0)
        world.run_until(workload_end_ms, stop=self._workload_done)
        self.nemesis.heal_all()
        try:
            self._after_healing()
        except Violation as violation:
            if violation.check not in HISTORY_VERDICTS:
                # A liveness check failed: what the clients saw so far may explain more.
                self._check_linearizable()
            raise

    def _after_healing(self) -> None:
        world = self.world
        healed_ms = world.now_ms
        self._wait_for("no-primary", self._every_partition_serving, healed_ms)
        if MEMBERSHIP in self.config.faults:
            self._wait_for("moves-stuck", self._moves_done, world.now_ms)
        # Writes that ran out of time are retried with their request ids until answered.
        for client in self.clients:
            client.resolve()
        resolve_deadline_ms = world.now_ms + self.config.liveness_ms
        world.run_until(resolve_deadline_ms, stop=self._resolved)
        unresolved = [p for c in self.clients for p in c.unresolved]
        for client in self.clients:
            client.stop_resolving()
        events = [*self.history.events, *self.counter_history.events, *self.ttl_history.events]
        keys = sorted({str(event.key) for event in events})
        reader_count = len(self.clients)
        for i, client in enumerate(self.clients):
            client.read_finally([k.encode() for k in keys[i::reader_count]])
        world.run_until(world.now_ms + self.config.liveness_ms * 4, stop=self._clients_idle)
        unknown = sorted(k for c in self.clients for k in c.final_unknown)
        if unknown or not self._clients_idle():
            raise Violation("final-read", f"no answer after healing for key(s) {unknown[:5]}")
        # What a client saw is judged first: a broken history explains more than the replicas
        # that differ, or the write never answered, that it may come with.
        diverged: Violation | None = None
        try:
            self._wait_for("diverged", self._converged, world.now_ms)
        except Violation as violation:
            diverged = violation
        self._check_history()
        self._check_counters()
        if unresolved:
            shown = "; ".join(
                f"{p.process} {p.f} {p.key} {p.value!r} request {p.request_id}"
                for p in unresolved[:3]
            )
            raise Violation(
                "unresolved",
                f"{len(unresolved)} write(s) retried with their request ids for "
                f"{self.config.liveness_ms:.0f} ms after the faults healed got no answer: {shown}",
            )
        if diverged is not None:
            raise diverged

    def _resolved(self) -> bool:
        return all(not client.unresolved for client in self.clients)

    def _workload_done(self) -> bool:
        return self.workload.ops_left <= 0 and self._clients_idle()

    def _clients_idle(self) -> bool:
        return all(client.idle for client in self.clients)

    def _wait_for(
        self, check: str, condition: Callable[[], tuple[str, int] | None], since_ms: float
    ) -> None:
        world = self.world
        deadline = since_ms + self.config.liveness_ms
        problem = condition()
        while problem is not None:
            if world.now_ms >= deadline:
                text, partition = problem
                raise Violation(
                    check,
                    f"{text} {deadline - since_ms:.0f} ms after the faults healed",
                    focus=f"p{partition}",
                )
            world.run_until(min(deadline, world.now_ms + 5.0))
            problem = condition()

    def _every_partition_serving(self) -> tuple[str, int] | None:
        for partition in sorted(self.placement):
            config = self.coordinator.configs[partition]
            primary = self.nodes.get(config.primary or "")
            replica = primary.replicas.get(partition) if primary is not None else None
            if primary is None or replica is None or not replica.serving(primary.local_now()):
                text = f"p{partition} has no serving primary (config {config.primary})"
                return text, partition
        return None

    def _moves_done(self) -> tuple[str, int] | None:
        self._retire_drained()
        pending = self.coordinator.moves_pending()
        if not pending:
            return None
        partition = pending[0]
        config = self.coordinator.configs[partition]
        target = self.coordinator.target or {}
        text = (
            f"p{partition} holds {list(config.replicas)} (learners {list(config.learners)}, "
            f"handoff {config.handoff}), target {list(target.get(partition, ()))}"
        )
        return text, partition

    def _converged(self) -> tuple[str, int] | None:
        for partition in sorted(self.placement):
            config = self.coordinator.configs[partition]
            primary = self.nodes[config.primary] if config.primary else None
            reference = primary.replicas.get(partition) if primary is not None else None
            if reference is None:
                return f"p{partition} has no primary", partition
            for node_id in config.replicas:
                replica = self.nodes[node_id].replicas.get(partition)
                if replica is None:
                    return f"p{partition}: {node_id} has no replica", partition
                if (
                    replica.applied_index != reference.applied_index
                    or replica.applied != reference.applied
                    or replica.dedup != reference.dedup
                    or dict(replica.expiries) != dict(reference.expiries)
                ):
                    same = "equal" if replica.applied == reference.applied else "differ"
                    text = (
                        f"p{partition}: {node_id} applied up to {replica.applied_index}, "
                        f"primary {config.primary} up to {reference.applied_index} (states {same})"
                    )
                    return text, partition
        return None

    def _check_linearizable(self) -> list[Operation]:
        operations = list(operations_from_events(self.history.events))
        model = KvModel()
        verdict = check_operations(model, operations, steps_max=self.config.search_steps_max)
        if verdict.verdict is Verdict.NOT_LINEARIZABLE:
            raise Violation("not-linearizable", explain(model, verdict))
        if verdict.verdict is Verdict.UNKNOWN:
            # Not a pass: the history was not judged.
            raise Violation("history-unknown", explain(model, verdict))
        return operations

    def _check_history(self) -> None:
        operations = self._check_linearizable()
        model = KvModel()
        final: dict[Hashable, Hashable] = {}
        for client in self.clients:
            final.update(client.final_values)
        lost = find_lost_writes(operations, final)
        if lost:
            shown = "; ".join(
                f"{model.describe_op(item.op)} {item.op.span()} but the final value is "
                f"{item.final!r}"
                for item in lost[:3]
            )
            raise Violation("lost-write", f"{len(lost)} acknowledged write(s) lost: {shown}")

    def _check_counters(self) -> None:
        """Every counter's final value counts each acknowledged increment once, and every
        value seen during the run lies within what real time allows
        (``planaria.check.counters``, shared with ``planaria chaos``)."""
        final: dict[Hashable, Hashable] = {}
        for client in self.clients:
            final.update(client.final_values)
        for report in check_counters(self.counter_history.events, final):
            if report.problems:
                first = report.problems[0]
                raise Violation(first.check, first.detail)

    def _fill(self, result: SimResult) -> None:
        world = self.world
        events = self.history.events
        completions = [e for e in (*events, *self.counter_history.events) if e.type != "invoke"]
        result.operations = len(events) + len(self.counter_history.events) - len(completions)
        result.ok_operations = sum(1 for e in completions if e.type == "ok")
        result.info_operations = sum(1 for e in completions if e.type == "info")
        result.faults = self.nemesis.describe()
        result.events = world.events
        result.messages = self.network.stats.sent
        result.sim_ms = world.now_ms
        result.history = list(events)
        net = self.network.stats
        nodes = list(self.nodes.values())
        rates = [node.clock.rate for node in nodes]
        result.stats = {
            "messages_lost": net.lost,
            "messages_duplicated": net.duplicated,
            "messages_cut": net.cut,
            "held_events": sum(node.held_total for node in nodes),
            "restarts": sum(node.incarnation for node in nodes),
            "torn_tails": sum(node.recoveries_torn for node in nodes),
            "records_lost": sum(node.records_lost for node in nodes),
            "damaged_logs": sum(node.recoveries_damaged for node in nodes),
            "losses_recorded": sum(len(c.wiped) for c in self.coordinator.configs.values()),
            "sessions_expired": sum(node.sessions_lost for node in nodes),
            "clock_rate_spread": max(rates) - min(rates),
            "coordinator_clock_rate": self.coordinator.clock.rate,
            "config_changes": self.coordinator.changes,
            "moves": self.coordinator.moves_done,
            "nodes_final": len(self.members),
            "acks_checked": self.monitor.acks_checked,
            "acks_unchecked": self.monitor.acks_unchecked,
            "serving_checks": self.monitor.serving_checks,
            "deposed_reads": self.monitor.deposed_reads,
            "deposed_reads_stale": self.monitor.deposed_reads_stale,
            "expiry_checks": self.monitor.expiry_checks,
            "writes_parked": self.workload.parked,
            "persists_refused": sum(node.persists_refused for node in nodes),
            "busy_refusals": sum(node.busy_refusals for node in nodes),
            "fsync_batches": sum(n.fsync_batches + n.committer.batches for n in nodes),
            "persist_jobs": sum(n.persist_jobs + n.committer.jobs for n in nodes),
            "appends_merged": sum(
                n.appends_merged + sum(p.appends_merged for p in n.pipelines.values())
                for n in nodes
            ),
            "snapshots_taken": sum(node.snapshots_taken for node in nodes),
            # Peers found needing compacted entries (by replicas alive at the end).
            "snapshots_needed": sum(
                replica.snapshots_needed for node in nodes for replica in node.replicas.values()
            ),
            "snapshots_installed": sum(node.snapshots_installed for node in nodes),
            "snapshot_crashes": sum(node.snapshot_crashes for node in nodes),
            "install_crashes": sum(node.install_crashes for node in nodes),
            "snapshots_torn": sum(node.snapshots_torn for node in nodes),
            "stale_installs": sum(node.stale_installs for node in nodes),
        }
        transfers = [node.transfer_counts for node in nodes]
        for name in transfers[0] if transfers else ():
            result.stats[f"transfers_{name}"] = sum(counts[name] for counts in transfers)
        if not result.passed:
            result.trace = world.trace.tail(TRACE_LINES, focus=self.focus)
        if world.trace.keep is None:
            result.full_trace = world.trace.render_all()


def run_seed(config: SimConfig) -> SimResult:
    """Run one seed; never raises for a failing run (the result says what failed)."""
    return _Run(config).run()
