"""The checks every run is held to (docs/design.md §4), as the run goes and at its end.

During the run (a :class:`Violation` stops it at once, with the trace around it):

- ``two-serving``: at most one replica of a partition serves at any instant; after every
  event each replica of the node that handled it is asked ``serving(local now)``, and if it
  serves, so is every other replica of the partition on any node (at its own clock: a
  replica that a move removed counts too);
- ``ack-not-replicated``: an acknowledged write is durable (synced) in the log of every
  member of the coordinator's ISR at the moment of the ack (invariant 1; a copy a ``wipe``
  destroyed counts: the fault, not the protocol, lost it);
- ``promoted-out-of-sync``: a new primary was in the ISR of the config it replaces, and that
  change did not record that it lost data (invariant 2);
- ``epoch-decreased``: the epoch of a config never goes down, and a replica never runs an
  epoch below one its log made durable (a log the node lost starts over);
- ``config-malformed``: every config keeps its shape through membership moves: replicas
  distinct, the primary in the ISR, the ISR and the learners among the replicas, a handoff
  target in the ISR;
- ``isr-joined-behind``: a node (a learner, or a backup that caught up) joins the ISR only
  holding durably every entry its primary has committed, so a replica never counts toward a
  commit before it is in the ISR and in sync;
- ``truncated-committed``: a replica never truncates entries it persisted as committed;
- ``persist-order``: Persists append right after the log's end;
- ``expired-read``: a read a primary answers never returns a key past its expiry, by the
  primary's own clock (the replicated expiry of the key it holds, against the clock it
  judges expiry by: ``Replica.clock_ms``).

With ``enforce=False`` (``planaria sim --checks history``) none of these raises: the monitor
only traces, and a refused persist makes the node rebuild the replica from its disk, as the
real node does, so only what a client sees can fail the run.

At the end: linearizability of the history (``planaria.check``, kv model, per key),
``lost-write`` (final reads after healing against every acknowledged write), and liveness:
``no-primary`` (every partition gets a serving primary within a bound after healing),
``final-read`` (every final read succeeds), ``unresolved`` (every write retried after
healing is answered) and ``diverged`` (every replica of a partition reaches the same applied
state); ``history-unknown`` when the linearizability search gives up (not a pass).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from planaria.core.messages import ClientReply, PartitionConfig, RequestId, Version
from planaria.core.replica import Role
from planaria.errors import InternalError

if TYPE_CHECKING:
    from planaria.sim.node import SimNode
    from planaria.storage import PartitionLog

__all__ = ["CHECKS", "CHECK_MODES", "HISTORY_CHECKS", "Monitor", "Violation"]

# The in-run monitors (``--checks all`` only).
MONITOR_CHECKS = (
    "two-serving",
    "ack-not-replicated",
    "promoted-out-of-sync",
    "epoch-decreased",
    "config-malformed",
    "isr-joined-behind",
    "truncated-committed",
    "persist-order",
    "expired-read",
)
# What ``--checks history`` keeps: what a client sees (its history, the final reads, writes
# retried after healing that get no answer, partitions left without a primary) and the
# replicas' convergence at the end; and ``crashed`` (the code under test raised).
HISTORY_CHECKS = (
    "not-linearizable",
    "lost-write",
    "history-unknown",
    "no-primary",
    "final-read",
    "diverged",
    "moves-stuck",
    "unresolved",
    "counter-lost",
    "counter-doubled",
    "crashed",
)
CHECKS = MONITOR_CHECKS + HISTORY_CHECKS
CHECK_MODES = ("all", "history")


class Violation(InternalError):
    """A check failed: ``check`` names it, ``detail`` says what was seen."""

    def __init__(self, check: str, detail: str, *, focus: str | None = None) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail
        self.focus = focus  # a word the interesting trace lines contain (e.g. "p3")


class Monitor:
    """Watches the nodes and the coordinator's configs while the run goes."""

    def __init__(
        self,
        nodes: Mapping[str, SimNode],
        config_of: Callable[[int], PartitionConfig],
        *,
        enforce: bool = True,
    ) -> None:
        self.nodes = nodes
        self.config_of = config_of
        # False (``--checks history``): watch and trace only; no in-run check raises.
        self.enforce = enforce
        self.acks_checked = 0
        # (node, partition) -> (epoch, serving) last seen, for the trace; and the highest
        # epoch its log made durable, which the replica's may never fall below.
        # Per (node, partition, log generation): a log the node lost starts a new generation.
        self.states: dict[tuple[str, int, int], tuple[int, bool]] = {}
        self.durable_epochs: dict[tuple[str, int, int], int] = {}  # highest seen, per log
        self.serving_leases: dict[tuple[str, int, int], float] = {}
        self.acks_unchecked = 0
        self.serving_checks = 0
        # Linearizable reads answered by a replica the coordinator no longer names primary
        # of that epoch: what no-lease-wait does, and what a client's history must show.
        self.deposed_reads = 0
        self.deposed_reads_stale = 0  # of which the new primary had applied another value
        self.expiry_checks = 0  # reads of a value checked against the key's expiry

    # ------------------------------------------------------------------ node hooks

    def on_ack(
        self, node: SimNode, partition: int, request_id: RequestId, version: Version | None
    ) -> None:
        if not self.enforce:
            return
        if version is None:
            self.acks_unchecked += 1  # no version and not persisted by this incarnation
            return
        config = self.config_of(partition)
        self.acks_checked += 1
        for member in sorted(config.isr):
            if not self._durable(self.nodes[member], partition, version.epoch, version.index):
                raise Violation(
                    "ack-not-replicated",
                    f"{node.pid} acked write {request_id} at {version} in p{partition}"
                    f" but ISR member {member} (config epoch {config.epoch} version "
                    f"{config.version}, isr {sorted(config.isr)}) has not durably logged it",
                )

    def on_read(self, node: SimNode, key: bytes, reply: ClientReply) -> None:
        self._check_not_expired(node, key, reply)
        config = self.config_of(reply.partition)
        if config.primary == node.pid and config.epoch == reply.epoch:
            return
        self.deposed_reads += 1
        # Stale in fact: the config's primary has applied (committed) another value.
        primary = self.nodes.get(config.primary or "")
        replica = primary.replicas.get(reply.partition) if primary is not None else None
        if replica is not None and replica.epoch == config.epoch:
            found = replica.applied.get(key)
            if (found[0] if found is not None else None) != reply.value:
                self.deposed_reads_stale += 1

    def _check_not_expired(self, node: SimNode, key: bytes, reply: ClientReply) -> None:
        replica = node.replicas.get(reply.partition)
        if not self.enforce or reply.value is None or replica is None:
            return
        self.expiry_checks += 1
        expire_ms = replica.expiries.get_time(key)
        clock_ms = replica.clock_ms(node.local_now())
        if expire_ms is not None and expire_ms < clock_ms:
            raise Violation(
                "expired-read",
                f"{node.pid} answered {key!r} in p{reply.partition} with a value, but its "
                f"expiry {expire_ms} is {clock_ms - expire_ms} ms before its clock {clock_ms}",
                focus=f"p{reply.partition}",
            )

    @staticmethod
    def _durable(node: SimNode, partition: int, epoch: int, index: int) -> bool:
        log = node.logs.get(partition) or node.last_logs.get(partition)
        lost = node.lost_logs.get(partition)
        return _holds(log, epoch, index) or (lost is not None and _holds(lost, epoch, index))

    def on_config_change(self, old: PartitionConfig, new: PartitionConfig) -> None:
        if not self.enforce:
            return
        p = new.partition
        if new.epoch < old.epoch:
            raise Violation("epoch-decreased", f"p{p} config epoch {old.epoch} -> {new.epoch}")
        if new.primary is not None and (new.primary != old.primary or new.epoch > old.epoch):
            # In sync: in the old ISR, and not found to have lost data by this very change.
            lost = new.wiped_loss(new.primary) != old.wiped_loss(new.primary)
            if new.primary not in old.isr or lost:
                raise Violation(
                    "promoted-out-of-sync",
                    f"p{p}: {new.primary} promoted at epoch {new.epoch} but the ISR was "
                    f"{sorted(old.isr)} (epoch {old.epoch})"
                    + (f" and {new.primary} lost data" if lost else ""),
                )
        problem = _malformed(new)
        if problem is not None:
            raise Violation("config-malformed", f"p{p} v{new.version}: {problem}", focus=f"p{p}")
        if new.epoch == old.epoch and new.primary is not None:
            for joined in sorted(new.isr - old.isr):
                self._check_joined(new, joined)

    def _check_joined(self, config: PartitionConfig, joined: str) -> None:
        p = config.partition
        primary_node = self.nodes.get(config.primary or "")
        if primary_node is None or not primary_node.up:
            return
        primary = primary_node.replicas.get(p)
        if (
            primary is None
            or primary.role is not Role.PRIMARY
            or primary.epoch != config.epoch
            or primary.commit_index == 0
        ):
            return
        commit = primary.commit_index
        epoch = primary.epoch_at(commit)
        if not self._durable(self.nodes[joined], p, epoch, commit):
            raise Violation(
                "isr-joined-behind",
                f"p{p}: {joined} joined the ISR (version {config.version}) without entry "
                f"{commit} (epoch {epoch}) that primary {config.primary} committed",
                focus=f"p{p}",
            )

    # ------------------------------------------------------------------ after every event

    def _state_changed(
        self,
        node: SimNode,
        partition: int,
        state: tuple[int, bool],
    ) -> None:
        self.states[(node.pid, partition, node.log_generation.get(partition, 0))] = state
        epoch, serving = state
        replica = node.replicas[partition]
        what = "serving" if serving else replica.role.value
        node.world.trace.add(node.world.now_ms, node.pid, f"p{partition} {what} e{epoch}")

    def _check_epoch(
        self, node: SimNode, partition: int, key: tuple[str, int, int], epoch: int
    ) -> None:
        """A replica never runs an epoch below one its log made durable. (Its epoch in
        memory may run ahead of the disk and be lost with a crash or a rebuild: the pipeline
        lets nothing of it leave the node before it is durable.)"""
        log = node.logs.get(partition)
        durable = max(self.durable_epochs.get(key, 0), log.epoch if log is not None else 0)
        self.durable_epochs[key] = durable
        if self.enforce and epoch < durable:
            raise Violation(
                "epoch-decreased",
                f"{node.pid} p{partition}: replica epoch {epoch} below its durable {durable}",
                focus=f"p{partition}",
            )

    def after_event(self, pid: str) -> None:
        node = self.nodes.get(pid)
        if node is None or not node.up:
            return
        now = node.local_now()
        states, leases = self.states, self.serving_leases
        for partition, replica in node.replicas.items():
            serving = replica.serving(now)
            key = (pid, partition, node.log_generation.get(partition, 0))
            state = (replica.epoch, serving)
            seen = states.get(key)
            if seen != state:
                self._state_changed(node, partition, state)
            self._check_epoch(node, partition, key, replica.epoch)
            if not serving or not self.enforce:
                continue
            # Serving can only *begin* at an event of its own node, and two serving intervals
            # overlap only if one begins inside the other: so check the peers whenever this
            # replica begins to serve, i.e. unless it served at its last event under a lease
            # (the one its last tick gave it) that has not run out since.
            if seen is not None and seen[1] and leases.get(key, -1.0) > now:
                continue
            leases[key] = node.ticked_lease_ms
            self._no_other_serving(node, partition)

    def _no_other_serving(self, node: SimNode, partition: int) -> None:
        self.serving_checks += 1
        nodes = self.nodes
        for other_id in sorted(nodes):
            if other_id == node.pid:
                continue
            other = nodes[other_id]
            peer = other.replicas.get(partition) if other.up else None
            if peer is not None and peer.serving(other.local_now()):
                raise Violation(
                    "two-serving",
                    f"p{partition}: {node.pid} (epoch {node.replicas[partition].epoch}) and "
                    f"{other_id} (epoch {peer.epoch}) both serve",
                    focus=f"p{partition}",
                )


def _holds(log: PartitionLog | None, epoch: int, index: int) -> bool:
    if log is None or log.durable_index < index:
        return False
    if index < min(log.first_index, log.snapshot_index):
        # Compacted: a durable snapshot covers it (snapshots hold only what this node
        # applied as committed; whether that equals the primary's, ``diverged`` checks).
        return True
    if index < log.first_index and index != log.snapshot_index:
        return False
    return log.epoch_at(index) == epoch


def _malformed(config: PartitionConfig) -> str | None:
    replicas = set(config.replicas)
    if len(replicas) != len(config.replicas):
        return f"replicas {list(config.replicas)} list a node twice"
    if config.primary is not None and config.primary not in config.isr:
        return f"primary {config.primary} is not in the ISR {sorted(config.isr)}"
    if not config.isr <= replicas:
        return f"ISR {sorted(config.isr)} is not within the replicas {sorted(replicas)}"
    if not set(config.learners) <= replicas:
        return f"learners {list(config.learners)} are not within the replicas"
    if config.handoff is not None and config.handoff not in config.isr:
        return f"handoff target {config.handoff} is not in the ISR"
    return None
