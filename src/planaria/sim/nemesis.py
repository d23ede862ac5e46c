"""The nemesis: a fault schedule drawn from the run's seed.

While the workload runs, the nemesis starts a fault every so often (gaps and durations drawn
from the seed) and heals each one after its duration; ``heal_all`` ends every fault at once
before the quiet period. Fault kinds (``--faults``):

- ``crash``: a node crashes (memory lost, its disk loses unsynced writes) and restarts later;
- ``disk``: a node crashes *in the middle of a write* (its next persist is written but not
  fsynced), so its log's tail is lost or torn, and restarts later;
- ``wipe``: a node goes down and restarts later having lost data: half the time its disk
  was replaced (an empty data directory that nobody marks: the node's new data id tells
  the controller), in a planned stop that ends its session at once or, as often, after a
  crash (its old session may still be alive when it comes back); else it crashed and its
  journal is damaged (the start wipes every partition log); it must be refilled from its
  primaries and rejoin outside the ISR. The data is found gone at the restart, unless the
  node then holds the last in-sync copy of a partition (no other ISR member up that lost
  nothing): the fault is then a plain crash;
- ``snapshot``: a node crashes *in the middle of its next snapshot* (or, half the time
  when a node is receiving a transfer, that node in the middle of its install), at a write
  step drawn from the seed (the temporary file written but not synced, synced
  but not renamed, renamed before the directory's fsync, the log's compaction cut
  short...), and restarts later; half the time it then finds the newest snapshot file of
  one of its partitions torn (cut short: a disk that lost the file's tail), so its restart
  falls back to the older snapshot or, without one, has the log refilled by a peer. With
  this kind on, the run also draws small snapshot thresholds and transfer settings
  (``planaria.sim.run``), so snapshots, compaction and transfers happen all through it;
- ``pause``: a node stops handling anything (its timers and messages wait), then resumes;
- ``partition``: random halves, one-way cuts, the primary of a partition isolated (from
  every node, the coordinator and about half the clients), the primary of a partition
  on the small side of a split with about half the clients (they reach nothing else), a
  primary cut from the coordinator only (a "zombie" that still reaches its backups), or a
  rotating "swizzle" of cuts;
- ``loss``: the network loses, duplicates and delays (reorders) messages for a while;
- ``drift``: node clocks start with random offsets and drift at rates within
  ``1 ± drift_max``; rates change during the run, always within the bound; the
  coordinator's clock runs fast by ``drift_max`` (it expires sessions early);
- ``membership`` (not in the default set): a node is added, or starts draining (it stays
  up), or is removed (drained, then stopped for good once it holds no replica); the
  controller moves replicas meanwhile, while the other faults go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from planaria.errors import UsageError
from planaria.sim.network import Network, NetworkSettings
from planaria.sim.world import World

__all__ = [
    "ALL_FAULT_KINDS",
    "FAULT_KINDS",
    "FAULT_KINDS_BEFORE_SNAPSHOT",
    "FAULT_KINDS_BEFORE_WIPE",
    "MEMBERSHIP",
    "SNAPSHOT",
    "Nemesis",
    "NemesisSettings",
    "Target",
    "parse_faults",
]

# The default set.
FAULT_KINDS = ("crash", "pause", "partition", "loss", "drift", "disk", "wipe", "snapshot")
# The default set before ``snapshot`` existed: the fault set of the regression seeds found
# with ``wipe`` before it.
FAULT_KINDS_BEFORE_SNAPSHOT = ("crash", "pause", "partition", "loss", "drift", "disk", "wipe")
# The default set before ``wipe`` existed: the fault set of the older regression seeds.
FAULT_KINDS_BEFORE_WIPE = ("crash", "pause", "partition", "loss", "drift", "disk")
MEMBERSHIP = "membership"
SNAPSHOT = "snapshot"
PARTITION_SHAPES = (
    "halves",
    "one-way",
    "isolate-primary",
    "minority-primary",
    "zombie-primary",
    "swizzle",
)
ALL_FAULT_KINDS = (*FAULT_KINDS, MEMBERSHIP)


def parse_faults(text: str) -> frozenset[str]:
    """``"crash,pause"`` -> the set of kinds; ``""`` or ``"none"`` -> no faults."""
    if text.strip() in ("", "none"):
        return frozenset()
    kinds = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(kinds - set(ALL_FAULT_KINDS))
    if unknown:
        raise UsageError(
            f"unknown fault kind(s) {unknown}; choose from {', '.join(ALL_FAULT_KINDS)}"
        )
    return kinds


@dataclass
class NemesisSettings:
    gap_mean_ms: float = 120.0  # mean time between the starts of two faults
    duration_min_ms: float = 30.0
    duration_max_ms: float = 600.0
    process_faults_max: int = 2  # nodes crashed or paused at the same time, at most
    drift_max: float = 0.01  # clock rates stay within 1 ± drift_max
    clock_offset_max_ms: float = 1000.0
    swizzle_every_ms: float = 40.0
    membership_share: float = 0.1  # of the faults drawn, with ``membership`` on
    # ``snapshot``: the crash strikes at a write op drawn from 1..this of the snapshot (a
    # save takes about 10 to 30: the log's sync, the file, the rename, the compaction);
    # without a snapshot or install within ``snapshot_crash_wait_ms`` it crashes anyway.
    snapshot_crash_ops_max: int = 24
    snapshot_crash_wait_ms: float = 300.0
    torn_snapshot_share: float = 0.5  # of the ``snapshot`` restarts: a snapshot file torn


class Target(Protocol):
    """What the nemesis needs to know about the cluster and how it hurts a node."""

    def node_ids(self) -> Sequence[str]: ...

    def primary_of_some_partition(self) -> str | None: ...

    def crash_node(self, node: str, *, mid_write: bool) -> None: ...

    def crash_mid_snapshot(
        self, node: str, write_op: int, wait_ms: float, *, install_only: bool
    ) -> None:
        """``node`` crashes at write op ``write_op`` of its next snapshot or install (with
        ``install_only``: of its next install), or after ``wait_ms`` without one."""
        ...

    def receiving_nodes(self) -> Sequence[str]:
        """The nodes receiving a snapshot transfer now."""
        ...

    def tear_snapshot(self, node: str) -> None:
        """While ``node`` is down: the newest snapshot file of one of its partitions loses
        its tail (never the last in-sync copy of a partition)."""
        ...

    def restart_node(self, node: str) -> None: ...

    def wipe_node(self, node: str, *, whole_disk: bool) -> None:
        """While ``node`` is down: replace its disk, or damage its journal."""
        ...

    def end_session(self, node: str) -> None:
        """``node`` was stopped cleanly: its coordinator session ends now."""
        ...

    def may_wipe(self, node: str) -> bool:
        """Whether some partition would lose its last in-sync copy with ``node``'s data."""
        ...

    def change_membership(self, rng_pick: float) -> str | None:
        """Add, drain or remove a node (``rng_pick`` in [0, 1) chooses); what was done."""
        ...


class Nemesis:
    def __init__(
        self,
        world: World,
        network: Network,
        target: Target,
        faults: frozenset[str],
        settings: NemesisSettings,
        *,
        hosts: Sequence[str],
        coordinator: str,
    ) -> None:
        self.world = world
        self.network = network
        self.target = target
        self.faults = tuple(kind for kind in FAULT_KINDS if kind in faults)
        self.membership = MEMBERSHIP in faults
        self.settings = settings
        self.hosts = tuple(hosts)  # who partitions split: the nodes and the coordinator
        self.coordinator = coordinator
        self.injected: Counter[str] = Counter()
        self.active = True
        self._down: dict[str, str] = {}  # node -> "crash" | "pause"
        self._wipes: dict[str, bool] = {}  # node down for a wipe -> its whole disk goes
        self._tears: set[str] = set()  # nodes down for ``snapshot`` that find a torn file
        self._cut_generation = 0
        self._loss_generation = 0

    # ------------------------------------------------------------------ schedule

    def start(self) -> None:
        if "drift" in self.faults:
            self._start_drift()
        if self.faults or self.membership:
            self._schedule_next()

    def _schedule_next(self) -> None:
        gap = self.world.rng.expovariate(1.0 / self.settings.gap_mean_ms)
        self.world.at(self.world.now_ms + gap, self._inject)

    def _inject(self, _: Any) -> None:
        if not self.active:
            return
        rng = self.world.rng
        if self.membership and (not self.faults or rng.random() < self.settings.membership_share):
            done = self.target.change_membership(rng.random())
            if done is not None:
                self.injected[MEMBERSHIP] += 1
                self._note(done)
            self._schedule_next()
            return
        kind = self.faults[rng.randrange(len(self.faults))]
        duration = rng.uniform(self.settings.duration_min_ms, self.settings.duration_max_ms)
        if kind in ("crash", "disk", "wipe"):
            self._crash(duration, mid_write=kind == "disk", wipe=kind == "wipe")
        elif kind == SNAPSHOT:
            self._crash_mid_snapshot(duration)
        elif kind == "pause":
            self._pause(duration)
        elif kind == "partition":
            self._partition(duration)
        elif kind == "loss":
            self._loss(duration)
        else:
            self._change_drift()
        self._schedule_next()

    def _later(self, delay_ms: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        self.world.at(self.world.now_ms + delay_ms, fn, arg)

    def _note(self, what: str, detail: object = None) -> None:
        self.world.trace.add(self.world.now_ms, "nemesis", what, detail)

    # ------------------------------------------------------------------ processes

    def _pick_healthy_node(self) -> str | None:
        if len(self._down) >= self.settings.process_faults_max:
            return None
        self.hosts = (*self.target.node_ids(), self.coordinator)  # members come and go
        healthy = [node for node in self.target.node_ids() if node not in self._down]
        return healthy[self.world.rng.randrange(len(healthy))] if healthy else None

    def _crash(self, duration_ms: float, *, mid_write: bool, wipe: bool = False) -> None:
        node = self._pick_healthy_node()
        if node is None:
            return
        kind = "wipe" if wipe else "disk" if mid_write else "crash"
        self.injected[kind] += 1
        self._down[node] = "crash"
        self._note(f"{kind} {node}", f"for {duration_ms:.0f} ms")
        self.target.crash_node(node, mid_write=mid_write)
        if wipe:
            whole_disk = self._wipes[node] = self.world.rng.random() < 0.5
            if whole_disk and self.world.rng.random() < 0.5:
                # A disk replaced in a planned stop: the operator stops the node cleanly
                # first, which ends its session (else the disk failed in the crash).
                self.target.end_session(node)
        self._later(duration_ms, self._restart, node)

    def _crash_mid_snapshot(self, duration_ms: float) -> None:
        rng, settings = self.world.rng, self.settings
        # Installs are rarer than snapshots: half the time the fault waits for the install
        # of a node receiving a transfer now, if there is one.
        receiving = [n for n in self.target.receiving_nodes() if n not in self._down]
        install_only = bool(receiving) and rng.random() < 0.5
        if install_only and len(self._down) < settings.process_faults_max:
            node: str | None = receiving[rng.randrange(len(receiving))]
        else:
            install_only = False
            node = self._pick_healthy_node()
        if node is None:
            return
        self.injected[SNAPSHOT] += 1
        self._down[node] = "crash"
        write_op = rng.randint(1, settings.snapshot_crash_ops_max)
        tear = rng.random() < settings.torn_snapshot_share
        self._note(
            f"snapshot {node}",
            f"crash at write {write_op} of {'an install' if install_only else 'a snapshot'}, "
            f"{'torn ' if tear else ''}for "
            f"{duration_ms:.0f} ms",
        )
        if tear:
            self._tears.add(node)
        self.target.crash_mid_snapshot(
            node, write_op, settings.snapshot_crash_wait_ms, install_only=install_only
        )
        self._later(duration_ms, self._restart, node)

    def _restart(self, node: str) -> None:
        if self._down.get(node) == "crash":
            del self._down[node]
            self._wipe_if_due(node)
            self._tear_if_due(node)
            self.target.restart_node(node)

    def _tear_if_due(self, node: str) -> None:
        if node in self._tears:
            self._tears.discard(node)
            self.target.tear_snapshot(node)

    def _wipe_if_due(self, node: str) -> None:
        """The data a ``wipe`` takes is found gone at the restart. Never the last in-sync
        copy of a partition (promotions happen while the node is down): that partition
        could only refuse, for good (no unclean election; the controller's tests show it)."""
        whole_disk = self._wipes.pop(node, None)
        if whole_disk is None:
            return
        if self.target.may_wipe(node):
            self.target.wipe_node(node, whole_disk=whole_disk)
        else:
            self._note(f"wipe {node} spared", "it holds the last in-sync copy of a partition")

    def _pause(self, duration_ms: float) -> None:
        node = self._pick_healthy_node()
        if node is None:
            return
        self.injected["pause"] += 1
        self._down[node] = "pause"
        self._note(f"pause {node}", f"for {duration_ms:.0f} ms")
        self.world.pause(node)
        self._later(duration_ms, self._resume, node)

    def _resume(self, node: str) -> None:
        if self._down.get(node) == "pause":
            del self._down[node]
            self.world.resume(node)

    # ------------------------------------------------------------------ network

    def _partition(self, duration_ms: float) -> None:
        self.partition(self.world.rng.choice(PARTITION_SHAPES), duration_ms)

    def partition(self, shape: str, duration_ms: float) -> None:
        """Cut the network in ``shape`` (one of :data:`PARTITION_SHAPES`) for a while."""
        if shape not in PARTITION_SHAPES:
            raise UsageError(f"unknown partition shape {shape!r}; choose from {PARTITION_SHAPES}")
        rng = self.world.rng
        self.hosts = (*self.target.node_ids(), self.coordinator)  # members come and go
        self.injected["partition"] += 1
        self._cut_generation += 1
        generation = self._cut_generation
        self.network.heal()
        if shape == "halves":
            self._random_halves()
        elif shape == "one-way":
            hosts = self.hosts
            pairs = set()
            for _ in range(rng.randint(1, len(hosts))):
                a, b = rng.sample(hosts, 2)
                pairs.add((a, b))
            self.network.cut(sorted(pairs))
            self._note("partition one-way", sorted(pairs))
        elif shape == "isolate-primary":
            primary = self.target.primary_of_some_partition()
            if primary is None:
                self._random_halves()
            else:
                # Cut from every node and the coordinator, and from about half the
                # clients: the others still reach it, as clients on its side of a split do
                # (what a deposed primary answers them is what their histories show).
                clients = [p for p in self.world.processes if p not in self.hosts]
                kept = sorted(p for p in clients if rng.random() < 0.5)
                cut_from = [p for p in self.world.processes if p != primary and p not in kept]
                self.network.split([primary], cut_from)
                self._note("partition isolate", (primary, f"clients reaching it {kept}"))
        elif shape == "minority-primary":
            primary = self.target.primary_of_some_partition()
            if primary is None:
                self._random_halves()
            else:
                # A split with the primary and about half the clients on the small side (a
                # rack cut off with its application servers): those clients reach nothing
                # else, not even the coordinator, so their view of the cluster stays as it
                # was and they keep asking the primary they know while the other side
                # elects a new one (only the lease stops the old one serving them).
                clients = [p for p in self.world.processes if p not in self.hosts]
                kept = sorted(p for p in clients if rng.random() < 0.5)
                rest = [p for p in self.world.processes if p != primary and p not in kept]
                self.network.split([primary, *kept], rest)
                self._note("partition minority", (primary, f"clients with it {kept}"))
        elif shape == "zombie-primary":
            # Cut a primary from the coordinator only: it keeps talking to its backups and
            # clients while the controller replaces it (epoch fencing must stop it).
            primary = self.target.primary_of_some_partition()
            if primary is None:
                self._random_halves()
            else:
                cut_from = [self.coordinator]
                others = [host for host in self.hosts if host not in (primary, self.coordinator)]
                if others and rng.random() < 0.5:
                    cut_from.append(others[rng.randrange(len(others))])  # and one peer
                self.network.split([primary], cut_from)
                self._note("partition zombie", (primary, sorted(cut_from)))
        else:
            self._note("partition swizzle", f"every {self.settings.swizzle_every_ms:.0f} ms")
            self._swizzle((generation, self.world.now_ms + duration_ms))
        self._later(duration_ms, self._heal_cuts, generation)

    def _random_halves(self) -> None:
        hosts = list(self.hosts)
        self.world.rng.shuffle(hosts)
        cut = self.world.rng.randint(1, len(hosts) - 1)
        self.network.split(hosts[:cut], hosts[cut:])
        self._note("partition halves", (sorted(hosts[:cut]), sorted(hosts[cut:])))

    def _swizzle(self, state: tuple[int, float]) -> None:
        generation, end_ms = state
        if generation != self._cut_generation or self.world.now_ms >= end_ms:
            return
        self.network.heal()
        self._random_halves()
        self._later(self.settings.swizzle_every_ms, self._swizzle, state)

    def _heal_cuts(self, generation: int) -> None:
        if generation == self._cut_generation:
            self._cut_generation += 1
            self.network.heal()
            self._note("heal partition")

    def _loss(self, duration_ms: float) -> None:
        rng = self.world.rng
        self.injected["loss"] += 1
        self._loss_generation += 1
        calm = self.network.calm
        settings = NetworkSettings(
            delay_min_ms=calm.delay_min_ms,
            delay_mean_ms=calm.delay_mean_ms * rng.uniform(1, 4),
            slow_probability=rng.uniform(0.0, 0.2),
            slow_delay_ms=rng.uniform(5, 60),
            loss=rng.uniform(0.02, 0.3),
            duplication=rng.uniform(0.0, 0.2),
        )
        self.network.degrade(settings)
        self._note(
            "loss",
            f"loss {settings.loss:.2f} dup {settings.duplication:.2f} "
            f"slow {settings.slow_probability:.2f} for {duration_ms:.0f} ms",
        )
        self._later(duration_ms, self._calm, self._loss_generation)

    def _calm(self, generation: int) -> None:
        if generation == self._loss_generation:
            self.network.calm_down()
            self._note("heal loss")

    # ------------------------------------------------------------------ clocks

    def _start_drift(self) -> None:
        for node in self.target.node_ids():
            self.drift_clock(node)
        # The coordinator's clock runs fast by the bound: its sessions end early, the
        # direction that races the nodes' leases (no offset: it only measures durations).
        coordinator = self.world.processes[self.coordinator].clock
        coordinator.set_rate(self.world.now_ms, 1 + self.settings.drift_max)
        self.injected["drift"] += 1

    def drift_clock(self, node: str) -> None:
        """Give ``node`` a random offset and rate within the bound (with ``drift`` on)."""
        rng, settings = self.world.rng, self.settings
        if "drift" not in self.faults:
            return
        offset = rng.uniform(-settings.clock_offset_max_ms, settings.clock_offset_max_ms)
        rate = rng.uniform(1 - settings.drift_max, 1 + settings.drift_max)
        self.world.processes[node].clock.reset(self.world.now_ms, offset, rate)

    def _change_drift(self) -> None:
        rng = self.world.rng
        nodes = self.target.node_ids()
        node = nodes[rng.randrange(len(nodes))]
        rate = rng.uniform(1 - self.settings.drift_max, 1 + self.settings.drift_max)
        self.world.processes[node].clock.set_rate(self.world.now_ms, rate)
        self.injected["drift"] += 1
        self._note(f"drift {node}", f"rate {rate:.4f}")

    # ------------------------------------------------------------------ the end

    def heal_all(self) -> None:
        """End every fault now (drift stays: it is within its bound)."""
        self.active = False
        self._cut_generation += 1
        self._loss_generation += 1
        self.network.heal()
        self.network.calm_down()
        for node, kind in sorted(self._down.items()):
            if kind == "crash":
                self._wipe_if_due(node)
                self._tear_if_due(node)
                self.target.restart_node(node)
            else:
                self.world.resume(node)
        self._down.clear()
        self._note("heal all")

    def describe(self) -> dict[str, int]:
        return dict(sorted(self.injected.items()))

    @staticmethod
    def total(counts: dict[str, int]) -> int:
        return sum(counts.values())
