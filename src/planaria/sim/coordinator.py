"""The simulated coordinator: sessions, the partition configs, and the controller.

One process plays the coordination service (the coord package's pure ``MemoryStore``:
sessions with TTL, versioned compare-and-set) and the (single, elected) controller. Sessions
expire ``session_ttl_ms`` after the last renewal received, on the coordinator's own clock
(which, with ``--faults drift``, runs fast: the direction that shortens sessions against the
nodes' leases, see ``planaria.core.lease``). The core
:class:`~planaria.core.controller.Controller` decides failovers and ISR changes; each
decision is applied by compare-and-set on the partition's config key in the store and pushed
to the partition's replicas (nodes also poll, since pushes can be lost).

Membership: the run tells the coordinator the cluster's members (node -> weight) and which
of them drain (:meth:`SimCoordinator.set_membership`); the target placement is
``core.placement.place`` over the members that stay, and after every round of failover
decisions the controller's :meth:`~planaria.core.controller.Controller.rebalance` moves
the partitions toward it (at most ``moves_max`` at once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from planaria.coord.errors import SessionExpired, VersionConflict
from planaria.coord.layout import config_key, encode_config
from planaria.coord.memory import MemoryStore
from planaria.coord.types import SessionId
from planaria.core.controller import ConfigChange, Controller, SessionView, Target
from planaria.core.messages import ConfigUpdate, PartitionConfig
from planaria.core.placement import place
from planaria.sim.network import Network
from planaria.sim.wire import ConfigRead, ConfigSnapshot, IsrRequest, Renew, RenewAck
from planaria.sim.world import Process, World

__all__ = ["CoordinatorSettings", "SimCoordinator"]

COORDINATOR = "coord"


@dataclass(frozen=True)
class CoordinatorSettings:
    session_ttl_ms: float = 150.0
    check_every_ms: float = 10.0
    moves_max: int = 2  # partitions moving a replica at the same time, at most
    min_insync: int = 2  # the replicas' setting: no move takes a partition below it


class SimCoordinator(Process):
    def __init__(
        self,
        world: World,
        network: Network,
        *,
        controller: Controller,
        settings: CoordinatorSettings,
        on_change: Callable[[PartitionConfig, PartitionConfig], None],
    ) -> None:
        super().__init__(world, COORDINATOR)
        self.network = network
        self.controller = controller
        self.settings = settings
        self.on_change = on_change
        self.store = MemoryStore()
        self.opened: dict[str, tuple[int, int]] = {}  # node -> (nonce, session)
        # node -> (session, loss per lost partition, data lost, data id): what the node
        # registered with the session
        self.losses: dict[str, tuple[int, dict[int, int], int, int]] = {}
        self.configs: dict[int, PartitionConfig] = {}
        self.changes = 0
        self.target: Target | None = None  # None: no membership known, no moves
        self.members: dict[str, float] = {}
        self.draining: frozenset[str] = frozenset()
        self.replication = 0
        self.moves_done = 0  # config changes made by rebalancing
        network.register(COORDINATOR, self.on_message)

    def set_membership(
        self, members: Mapping[str, float], draining: frozenset[str], *, replicas: int
    ) -> None:
        """The cluster's members (node -> weight) and the draining ones: the target
        placement becomes ``place`` over the members that stay."""
        self.members = dict(members)
        self.draining = frozenset(draining)
        self.replication = replicas
        staying = {node: weight for node, weight in sorted(members.items()) if node not in draining}
        self.target = place(sorted(self.configs), staying, replicas=replicas)
        self.world.trace.add(
            self.world.now_ms,
            self.pid,
            "membership",
            f"{sorted(staying)} draining {sorted(draining)}",
        )

    def preopen(self, node: str, *, nonce: int, now_ms: float, data_id: int = 0) -> int:
        """Open the session a node's first incarnation will ask for (with ``nonce``),
        registered with the id of its data directory."""
        session = self.store.open_session(node, self.settings.session_ttl_ms, now_ms)
        self.opened[node] = (nonce, session)
        self.losses[node] = (session, {}, 0, data_id)
        return session

    def end_session(self, node: str) -> None:
        """``node`` stopped cleanly: its session ends now (``Node.close`` closes it)."""
        opened = self.opened.get(node)
        if opened is not None:
            self.store.close_session(SessionId(opened[1]), self.local_now())
            self.world.trace.add(self.world.now_ms, self.pid, f"session {opened[1]} closed", node)
            self._decide()

    def create_configs(self, placement: Mapping[int, tuple[str, ...]]) -> None:
        """Create every partition's first config (before any node starts)."""
        configs = self.controller.initial_configs(placement, self._views())
        for partition in sorted(configs):
            self.store.create(config_key(partition), encode_config(configs[partition]))
        # A decoded copy of the store's configs (kept equal to it on every CAS).
        self.configs = dict(configs)

    def config_of(self, partition: int) -> PartitionConfig:
        return self.configs[partition]

    def start(self) -> None:
        self.after_local(self.settings.check_every_ms, self._check)

    def _check(self, _: Any) -> None:
        for info in self.store.expire(self.local_now()):
            self.world.trace.add(
                self.world.now_ms, self.pid, f"session {info.session} of {info.owner} expired"
            )
        self._decide()
        self.after_local(self.settings.check_every_ms, self._check)

    def _views(self) -> dict[str, SessionView]:
        views: dict[str, SessionView] = {}
        for owner, info in self.store.latest_sessions().items():
            session, lost, data_lost, data_id = self.losses.get(owner, (0, {}, 0, 0))
            if session != info.session:
                lost, data_lost, data_id = {}, 0, 0
            views[owner] = SessionView(
                owner,
                info.session,
                info.alive,
                info.renewed_ms,
                info.expires_ms,
                lost=lost,
                data_lost=data_lost,
                data_id=data_id,
            )
        return views

    def _decide(self) -> None:
        views = self._views()
        changes = self.controller.decide(
            [self.configs[p] for p in sorted(self.configs)], views, self.local_now()
        )
        changed = {change.partition for change in changes}
        for change in changes:
            self._apply(change)
        if self.target is None:
            return
        moves = self.controller.rebalance(
            [self.configs[p] for p in sorted(self.configs) if p not in changed],
            views,
            self.target,
            moves_max=self.settings.moves_max,
            min_insync=self.settings.min_insync,
        )
        for change in moves:
            if self._apply(change):
                self.moves_done += 1

    def moves_pending(self) -> list[int]:
        """Partitions not yet at their target (or with a move under way)."""
        if self.target is None:
            return []
        return [
            p
            for p in sorted(self.configs)
            if set(self.configs[p].replicas) != set(self.target[p])
            or self.configs[p].learners
            or self.configs[p].handoff is not None
        ]

    def _apply(self, change: ConfigChange) -> bool:
        old = self.configs[change.partition]
        new = change.config
        try:
            self.store.set_if_version(
                config_key(change.partition),
                encode_config(new),
                version=change.expected_version,
                now_ms=self.local_now(),
            )
        except VersionConflict:
            return False  # someone changed it meanwhile: the controller will decide again
        self.on_change(old, new)
        self.configs[change.partition] = new
        self.changes += 1
        self.world.trace.add(
            self.world.now_ms, self.pid, f"config p{new.partition}", _show(new, change.reason)
        )
        update = ConfigUpdate(new)
        # A replica that left learns it too (it stops counting itself in).
        for node in (*new.replicas, *(n for n in old.replicas if n not in new.replicas)):
            self.network.send(self.pid, node, update)
        return True

    # ------------------------------------------------------------------ messages

    def on_message(self, src: str, message: object) -> None:
        now = self.local_now()
        if isinstance(message, Renew):
            self._on_renew(src, message, now)
        elif isinstance(message, ConfigRead):
            snapshot = ConfigSnapshot(tuple(self.configs[p] for p in sorted(self.configs)))
            self.network.send(self.pid, src, snapshot)
        elif isinstance(message, IsrRequest):
            proposal = message.proposal
            config = self.configs.get(proposal.partition)
            if config is not None:
                # Sessions only where a transfer needs them (the new primary's incarnation):
                # ISR proposals are judged as before membership changes existed.
                views = self._views() if proposal.primary is not None else None
                change = self.controller.on_propose(proposal, message.node, config, views)
                if change is not None:
                    self._apply(change)

    def _on_renew(self, src: str, renew: Renew, now: float) -> None:
        if renew.session is None:
            opened = self.opened.get(renew.node)
            if opened is not None and opened[0] == renew.nonce:
                session = opened[1]  # a retried or duplicated open: the same session
                ok = self._renew(session, now)
            elif opened is not None and opened[0] > renew.nonce:
                return  # an open older than the node's newest: nobody waits for it
            else:
                # A new session of the node proves its older one dead (one process per
                # data directory): end it at once.
                if opened is not None:
                    self.store.close_session(SessionId(opened[1]), now)
                session = self.store.open_session(renew.node, self.settings.session_ttl_ms, now)
                self.opened[renew.node] = (renew.nonce, session)
                self._note_losses(renew, session)
                self.world.trace.add(
                    self.world.now_ms, self.pid, f"session {session} opened", renew.node
                )
                ok = True
                self._decide()
        else:
            session = renew.session
            ok = self._renew(session, now)
        if ok:
            self._note_losses(renew, session)
        self.network.send(self.pid, src, RenewAck(renew.nonce, session, renew.sent_local_ms, ok))

    def _note_losses(self, renew: Renew, session: int) -> None:
        self.losses[renew.node] = (session, dict(renew.lost), renew.data_lost, renew.data_id)

    def _renew(self, session: int, now: float) -> bool:
        try:
            self.store.renew(SessionId(session), now)
        except SessionExpired:
            return False
        return True


def _show(config: PartitionConfig, reason: str) -> str:
    moving = ""
    if config.learners:
        moving += f" learners {list(config.learners)}"
    if config.handoff is not None:
        moving += f" handoff {config.handoff}"
    return (
        f"epoch {config.epoch} v{config.version} primary {config.primary} "
        f"replicas {list(config.replicas)} isr {sorted(config.isr)}{moving} ({reason})"
    )
