"""The controller's decisions, as pure functions from what it sees to config changes.

The controller never writes to the coordinator itself: every decision is a
:class:`ConfigChange` ``(partition, expected_version, config)`` that the runtime applies by
compare-and-set on the partition's config. A CAS that fails (someone changed the config
meanwhile) is simply dropped: the runtime reads the configs again and asks again. So a
stale second controller cannot corrupt anything (docs/design.md §3).

Inputs are the partitions' current configs and a :class:`SessionView` per node (the
coordinator's sessions, as the coordinator sees them, times in the coordinator's clock).

Rules (docs/design.md §4, invariants 2 and 4):

- **Failover**: a partition needs a new primary when it has none, when its primary's session
  expired, or when its primary's node runs another session incarnation than the one it was
  promoted under (it restarted: a rebuilt replica never serves an epoch it knew). The new
  primary is the first live ISR member in preference-list order (``promote-out-of-sync``: the
  first live replica); epoch + 1, isr = old isr ∩ live (+ the new primary), version + 1. With
  no candidate the config is left alone (the partition stays unavailable; no unclean
  election). A session that merely stopped renewing is *not* expired: the controller waits
  for the coordinator to expire it, which happens only after the old lease surely ran out
  (``no-lease-wait``: a primary not renewed for ``suspect_after_ms`` counts as dead).
- **Dead backups** in the ISR of a healthy primary are removed (same epoch, version + 1):
  the primary keeps requiring them until it sees the change, so this is always safe.
- **Lost data** (invariant 7): a node whose session reports that its log of the partition
  was wiped, damaged or replaced (:meth:`SessionView.lost_log`) may hold less than it once
  acknowledged. Before anything else the controller takes it out of the ISR and records
  ``(node, loss id)`` in ``wiped`` (version + 1, in the same CAS as a failover when one
  is needed), so it is never promoted and counts toward no commit; only the primary's
  catch-up (a ProposeIsr after it refilled the node) brings it back, and a proposal that
  adds a node whose loss is not recorded yet leaves it out. With every in-sync replica lost
  nobody is promoted: the partition stays unavailable (``wiped-stays-in-sync`` brings back
  the old behaviour: the wiped replica stays in the ISR).
- **Replaced disks**: every config records the id of each replica's data directory
  (``PartitionConfig.data_ids``, what its session registered, :attr:`SessionView.data_id`).
  A node that registers another id while a config lists it came back on an empty or
  replaced disk that nobody marked: it is handled as a loss of that partition's log, with
  the new data id as the loss id, in the same change that records the new id. A replica
  whose id a config does not know yet (configs from before data ids, a learner added then)
  adopts the one it registers: that never takes anyone out of the ISR
  (``ignore-data-id``: a changed id is adopted too, and the replica stays in the ISR).
- **ISR proposals** from a primary (:meth:`Controller.on_propose`) are validated: the
  proposal's epoch and expected version are the config's, the sender is the primary, the new
  ISR contains the primary and only nodes of ``replicas``.
- **Membership moves** (:meth:`Controller.rebalance`, docs/membership.md): toward a target
  placement, one replica at a time per partition and at most ``moves_max`` partitions at
  once: add the new node as a learner (appended to ``replicas``, outside the ISR); the
  primary feeds it the log and proposes it into the ISR once caught up; then the leaving
  replica is dropped from ``replicas`` and the ISR. A leaving primary first hands over: the
  config names a ``handoff`` target (an ISR member that stays), the primary stops serving,
  waits until the target holds its whole log and asks for the transfer
  (:meth:`Controller.on_propose` with ``ProposeIsr.primary``), which makes the target
  primary in a new epoch: no lease wait, since the old primary stopped before. A move is
  not started while the ISR is below ``min_insync``, and a removal that would leave it
  below is not made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from planaria.core.messages import NodeId, PartitionConfig, PartitionId, ProposeIsr
from planaria.errors import UsageError

Target = Mapping[PartitionId, tuple[NodeId, ...]]

__all__ = [
    "CONTROLLER_BUGS",
    "ConfigChange",
    "Controller",
    "ControllerSettings",
    "SessionView",
    "Target",
    "moves_in_progress",
    "moves_remaining",
]

CONTROLLER_BUGS = frozenset(
    {"ignore-data-id", "no-lease-wait", "promote-out-of-sync", "wiped-stays-in-sync"}
)


@dataclass(frozen=True, slots=True)
class SessionView:
    """One node's coordinator session as the controller sees it (coordinator clock, ms).

    ``incarnation`` identifies the session: >= 1 (0 means "unknown" in
    :attr:`PartitionConfig.primary_incarnation`), and a new process or a new session after an
    expiry gets a new one, never reused for that node. ``alive`` is False once the
    coordinator expired it. ``renewed_ms`` is when the coordinator last received a renewal;
    ``expires_ms`` when it will expire (or did) without another.

    ``lost`` and ``data_lost`` are what the node registered with this session: per
    partition whose log it wiped (damaged, or its journal was), the id of that loss; and
    (``data_lost``, 0: none) the id of the loss of its whole data directory (a replaced
    disk). The node keeps registering a loss, with the same id across restarts, until it
    sees it recorded in the partition's config (``PartitionConfig.wiped``). ``data_id`` is
    the id of its data directory (0: it registered none, an older node).
    """

    node: NodeId
    incarnation: int
    alive: bool
    renewed_ms: float
    expires_ms: float
    lost: Mapping[PartitionId, int] = field(default_factory=dict)
    data_lost: int = 0
    data_id: int = 0

    def lost_log(self, partition: PartitionId) -> int | None:
        """The id of the loss that may leave this node holding less of ``partition`` than
        it acknowledged, if any."""
        return self.lost.get(partition) or self.data_lost or None


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Apply by ``CAS(config.partition, expected_version, config)``; ``reason`` for traces."""

    partition: PartitionId
    expected_version: int
    config: PartitionConfig
    reason: str


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """- ``suspect_after_ms``: only with the ``no-lease-wait`` bug: a primary whose session
      was not renewed for this long is failed over although its session is alive.
    - ``bugs``: known-bug switches (the controller reads :data:`CONTROLLER_BUGS`; other
      names are accepted and ignored so one set can be given to every component).
    """

    suspect_after_ms: float = 50.0
    bugs: frozenset[str] = field(default_factory=frozenset)


class Controller:
    """Stateless decisions; one instance may serve every partition."""

    def __init__(self, settings: ControllerSettings | None = None) -> None:
        self._settings = settings if settings is not None else ControllerSettings()
        if not self._settings.suspect_after_ms > 0:
            raise UsageError("suspect_after_ms must be > 0")
        self._bugs = self._settings.bugs

    @property
    def settings(self) -> ControllerSettings:
        return self._settings

    def initial_configs(
        self,
        placement: Mapping[PartitionId, tuple[NodeId, ...]],
        sessions: Mapping[NodeId, SessionView] | None = None,
        *,
        first_epoch: int = 1,
    ) -> dict[PartitionId, PartitionConfig]:
        """The first config of every partition: epoch ``first_epoch`` (1, or above the
        epochs the logs of a restored backup start at), primary = replicas[0], isr = all
        replicas (empty logs are trivially in sync), version 1 (create these in the
        coordinator before any node starts a replica: version 0 means "absent").
        ``primary_incarnation`` is the primary's live session incarnation if ``sessions``
        has one, else 0 ("unknown": :meth:`decide` then gives the partition a new epoch
        under the current incarnation as soon as the primary has a live session). The
        replicas' data ids are those their live sessions registered."""
        if first_epoch < 1:
            raise UsageError(f"first_epoch must be >= 1, not {first_epoch}")
        configs: dict[PartitionId, PartitionConfig] = {}
        for partition in sorted(placement):
            replicas = tuple(placement[partition])
            if not replicas:
                raise UsageError(f"partition {partition} has no replicas")
            if len(set(replicas)) != len(replicas):
                raise UsageError(f"partition {partition} lists a node twice: {replicas}")
            session = (sessions or {}).get(replicas[0])
            configs[partition] = self._adopt_data_ids(
                PartitionConfig(
                    partition=partition,
                    epoch=first_epoch,
                    primary=replicas[0],
                    replicas=replicas,
                    isr=frozenset(replicas),
                    version=1,
                    primary_incarnation=session.incarnation
                    if session is not None and session.alive
                    else 0,
                ),
                sessions or {},
            )
        return configs

    def decide(
        self,
        configs: Iterable[PartitionConfig],
        sessions: Mapping[NodeId, SessionView],
        now_ms: float,
    ) -> list[ConfigChange]:
        """Failovers and dead-backup removals for ``configs`` (the current ones), in
        partition order. A node without an entry in ``sessions`` counts as dead. Call it
        whenever sessions or configs change, and periodically (``now_ms`` only matters with
        the ``no-lease-wait`` bug)."""
        changes: list[ConfigChange] = []
        for config in sorted(configs, key=lambda c: c.partition):
            change = self._decide_one(config, sessions, now_ms)
            if change is not None:
                changes.append(change)
        return changes

    def on_propose(
        self,
        proposal: ProposeIsr,
        sender: NodeId,
        config: PartitionConfig,
        sessions: Mapping[NodeId, SessionView] | None = None,
    ) -> ConfigChange | None:
        """The change a valid ISR proposal asks for, or None when it is stale or invalid
        (wrong partition, epoch or version, sender not the primary, new ISR without the
        primary or with a node outside ``replicas``) or changes nothing. When ``sessions``
        is given, a node the proposal adds whose session is not alive is left out, and the
        config still gets a new version (so the primary drops its stale proposal).

        A planned transfer (``proposal.primary`` set) is valid when, besides the epoch,
        version and sender, it names the config's ``handoff`` target, that target is in the
        ISR and its session is alive (``sessions`` is required: the new primary's
        incarnation goes into the config); the target becomes primary in a new epoch."""
        if proposal.primary is not None:
            return self._on_handoff(proposal, sender, config, sessions)
        added = proposal.isr - config.isr
        valid = (
            proposal.partition == config.partition
            and proposal.epoch == config.epoch
            and proposal.expected_version == config.version
            and config.primary is not None
            and sender == config.primary
            and config.primary in proposal.isr
            and proposal.isr <= frozenset(config.replicas)
            and proposal.isr != config.isr
        )
        if not valid:
            return None
        dead = frozenset(n for n in added if sessions is not None and not _live(n, sessions))
        unrecorded = frozenset(
            n
            for n in added
            if sessions is not None and n in self._unrecorded_losses(config, sessions)
        )
        isr = proposal.isr - dead - unrecorded
        # A node that is not alive never joins; the rest of the proposal still applies, and
        # the version moves even when nothing else does. That is the primary's answer: it
        # stops requiring the refused node's acks (which it must do while its proposal
        # might still apply) only once the version it proposed against is gone.
        new = replace(config, isr=isr, version=config.version + 1, handoff=_kept(config, isr))
        if sessions is not None:
            new = self._adopt_data_ids(new, sessions)
        why = f"isr proposed by {sender}"
        if dead:
            why += f" (not alive, left out: {', '.join(sorted(dead))})"
        if unrecorded:
            why += f" (lost data, left out: {', '.join(sorted(unrecorded))})"
        return ConfigChange(config.partition, config.version, new, why)

    def rebalance(
        self,
        configs: Iterable[PartitionConfig],
        sessions: Mapping[NodeId, SessionView],
        target: Target,
        *,
        moves_max: int,
        min_insync: int,
    ) -> list[ConfigChange]:
        """The next step of every partition's move toward ``target`` (partition ->
        preference list, from :func:`planaria.core.placement.place` over the members that
        stay), in partition order, with at most ``moves_max`` partitions moving at once (a
        partition with learners or a handoff is moving). Partitions that need a failover
        (see :meth:`decide`) or are missing from ``target`` are left alone; call
        :meth:`decide` first and rebalance what it did not change."""
        if moves_max < 1:
            raise UsageError(f"moves_max must be >= 1, got {moves_max}")
        ordered = sorted(configs, key=lambda c: c.partition)
        moving = sum(1 for c in ordered if c.learners or c.handoff is not None)
        changes: list[ConfigChange] = []
        for config in ordered:
            wanted = target.get(config.partition)
            if wanted is None or self._primary_gone(config, sessions, 0.0) is not None:
                continue
            was_moving = bool(config.learners) or config.handoff is not None
            if not was_moving and moving >= moves_max:
                continue
            change = _move_step(config, tuple(wanted), sessions, min_insync)
            if change is None:
                continue
            # A learner joins with the data id it registered: a later change is a loss.
            change = replace(change, config=self._adopt_data_ids(change.config, sessions))
            changes.append(change)
            if not was_moving and (change.config.learners or change.config.handoff):
                moving += 1
        return changes

    # --- internals ---------------------------------------------------------------------------

    def _on_handoff(
        self,
        proposal: ProposeIsr,
        sender: NodeId,
        config: PartitionConfig,
        sessions: Mapping[NodeId, SessionView] | None,
    ) -> ConfigChange | None:
        target = proposal.primary
        valid = (
            target is not None
            and sessions is not None
            and proposal.partition == config.partition
            and proposal.epoch == config.epoch
            and proposal.expected_version == config.version
            and config.primary is not None
            and sender == config.primary
            and config.handoff == target
            and target in config.isr
            and _live(target, sessions)
            and target not in self._unrecorded_losses(config, sessions)
        )
        if not valid or target is None or sessions is None:
            return None
        new = replace(
            config,
            epoch=config.epoch + 1,
            primary=target,
            replicas=(target, *(n for n in config.replicas if n != target)),
            isr=frozenset(n for n in config.isr if _live(n, sessions)) | {target},
            version=config.version + 1,
            primary_incarnation=sessions[target].incarnation,
            handoff=None,
        )
        return ConfigChange(
            config.partition,
            config.version,
            self._adopt_data_ids(new, sessions),
            f"planned transfer {sender} -> {target}",
        )

    def _primary_gone(
        self, config: PartitionConfig, sessions: Mapping[NodeId, SessionView], now_ms: float
    ) -> str | None:
        """Why the partition needs a new primary, or None."""
        if config.primary is None:
            return "no primary"
        session = sessions.get(config.primary)
        if session is None or not session.alive:
            return f"primary {config.primary} session expired"
        if session.incarnation != config.primary_incarnation:
            return f"primary {config.primary} now runs incarnation {session.incarnation}"
        if (
            "no-lease-wait" in self._bugs
            and now_ms - session.renewed_ms >= self._settings.suspect_after_ms
        ):
            return f"primary {config.primary} suspected (no-lease-wait bug)"
        return None

    def _unrecorded_losses(
        self, config: PartitionConfig, sessions: Mapping[NodeId, SessionView]
    ) -> dict[NodeId, int]:
        """Replicas whose live session reports a loss of their log of the partition that
        ``wiped`` does not record yet, or registers a data directory other than the one
        the config knows for it (a replaced disk): node -> the id to record the loss under."""
        if "wiped-stays-in-sync" in self._bugs:
            return {}
        lost: dict[NodeId, int] = {}
        for node in config.replicas:
            session = sessions.get(node)
            if session is None or not session.alive:
                continue
            loss = session.lost_log(config.partition)
            if loss is not None and config.wiped_loss(node) != loss:
                lost[node] = loss
            elif self._data_replaced(config, session):
                lost[node] = session.data_id
        return lost

    def _data_replaced(self, config: PartitionConfig, session: SessionView) -> bool:
        """``session`` registers a data directory other than the one ``config`` knows."""
        known = config.data_id(session.node)
        return (
            "ignore-data-id" not in self._bugs
            and session.data_id != 0
            and known is not None
            and known != session.data_id
        )

    def _adopt_data_ids(
        self, config: PartitionConfig, sessions: Mapping[NodeId, SessionView]
    ) -> PartitionConfig:
        """``config`` knowing the data id of every replica with a live session that
        registered one and has none recorded yet. A known id is never replaced here: a
        change of it is a loss, recorded with the new id (:meth:`_decide_losses`); the
        ``ignore-data-id`` bug replaces it."""
        ids = dict(config.data_ids)
        for node in config.replicas:
            session = sessions.get(node)
            if session is None or not session.alive or session.data_id == 0:
                continue
            if node not in ids or "ignore-data-id" in self._bugs:
                ids[node] = session.data_id
        return _with_data_ids(config, ids)

    def _decide_one(
        self, config: PartitionConfig, sessions: Mapping[NodeId, SessionView], now_ms: float
    ) -> ConfigChange | None:
        change = self._decide_losses(config, sessions, now_ms)
        if change is not None:
            return replace(change, config=self._adopt_data_ids(change.config, sessions))
        adopted = self._adopt_data_ids(config, sessions)
        if adopted == config:
            return None
        new = replace(adopted, version=config.version + 1)
        learned = sorted(set(adopted.data_ids) - set(config.data_ids))
        return ConfigChange(config.partition, config.version, new, f"data ids {learned} adopted")

    def _decide_losses(
        self, config: PartitionConfig, sessions: Mapping[NodeId, SessionView], now_ms: float
    ) -> ConfigChange | None:
        losses = self._unrecorded_losses(config, sessions)
        if not losses:
            return self._decide_failover(config, sessions, now_ms)
        lost = sorted(losses)
        # Out of the ISR before anything else, in the same CAS as whatever else is due: a
        # member that lost data is never promoted and counts toward no commit.
        recorded = dict(config.wiped)
        recorded.update(losses)
        # The data ids they registered, known from now on (a replaced disk's is its loss).
        ids = dict(config.data_ids)
        ids.update((n, sessions[n].data_id) for n in lost if sessions[n].data_id)
        isr = config.isr - set(lost)
        base = _with_data_ids(
            replace(
                config,
                isr=isr,
                wiped=tuple(sorted((n, i) for n, i in recorded.items() if n in config.replicas)),
                handoff=_kept(config, isr),
            ),
            ids,
        )
        why = f"{lost} lost data: out of the isr"
        change = self._decide_failover(base, sessions, now_ms)
        if change is not None:
            return replace(change, reason=f"{why}; {change.reason}")
        if base.primary is not None and base.primary not in isr:
            # Its primary lost data and no in-sync replica is left to promote: no primary
            # (never an empty replica) until an operator steps in.
            why += "; no in-sync replica to promote: the partition stays unavailable"
            base = replace(base, primary=None, primary_incarnation=0)
        new = replace(base, version=config.version + 1)
        return ConfigChange(config.partition, config.version, new, why)

    def _decide_failover(
        self, config: PartitionConfig, sessions: Mapping[NodeId, SessionView], now_ms: float
    ) -> ConfigChange | None:
        reason = self._primary_gone(config, sessions, now_ms)
        if reason is None and config.primary is not None and config.primary not in config.isr:
            reason = f"primary {config.primary} lost data"
        old_primary = config.primary
        if reason is None:
            dead = sorted(n for n in config.isr if not _live(n, sessions))
            if not dead:
                return None
            isr = config.isr - set(dead)
            new = replace(config, isr=isr, version=config.version + 1, handoff=_kept(config, isr))
            return ConfigChange(
                config.partition, config.version, new, f"dead backups {dead} leave the isr"
            )
        pool = (
            config.replicas
            if "promote-out-of-sync" in self._bugs
            else tuple(n for n in config.replicas if n in config.isr)
        )
        candidates = [
            n
            for n in pool
            if _live(n, sessions) and not (n == old_primary and "no-lease-wait" in self._bugs)
        ]
        if not candidates:
            return None  # no unclean election: wait for an in-sync replica to come back
        primary = candidates[0]
        live_isr = frozenset(n for n in config.isr if _live(n, sessions))
        if "no-lease-wait" in self._bugs and old_primary is not None:
            live_isr -= {old_primary}
        new = replace(
            config,
            epoch=config.epoch + 1,
            primary=primary,
            isr=live_isr | {primary},
            version=config.version + 1,
            primary_incarnation=sessions[primary].incarnation,
            handoff=None,
        )
        return ConfigChange(config.partition, config.version, new, f"{reason}: {primary} promoted")


def _with_data_ids(config: PartitionConfig, ids: Mapping[NodeId, int]) -> PartitionConfig:
    """``config`` with the data ids ``ids`` of its replicas (others dropped), in order."""
    data_ids = tuple(sorted((n, i) for n, i in ids.items() if n in config.replicas))
    return config if data_ids == config.data_ids else replace(config, data_ids=data_ids)


def _kept(config: PartitionConfig, isr: frozenset[NodeId]) -> NodeId | None:
    """The handoff target, unless it leaves the ISR (then the transfer is off)."""
    return config.handoff if config.handoff in isr else None


def _live(node: NodeId, sessions: Mapping[NodeId, SessionView]) -> bool:
    session = sessions.get(node)
    return session is not None and session.alive


# --- membership moves ------------------------------------------------------------------------


def _move_step(
    config: PartitionConfig,
    wanted: tuple[NodeId, ...],
    sessions: Mapping[NodeId, SessionView],
    min_insync: int,
) -> ConfigChange | None:
    """One step of a partition's move toward ``wanted``, or None (done, or waiting)."""
    want = set(wanted)
    primary = config.primary
    if config.handoff is not None:
        target = config.handoff
        if (
            target in config.isr
            and _live(target, sessions)
            and (primary not in want or target == wanted[0])
        ):
            return None  # the primary asks for the transfer once the target caught up
        return _change(config, f"handoff to {target} cancelled", handoff=None)
    if primary in config.learners:  # a failover promoted it: it is a member now
        learners = tuple(n for n in config.learners if n != primary)
        return _change(config, f"learner {primary} leads", learners=learners)
    for learner in config.learners:
        if learner not in want:
            return _drop(config, learner, f"learner {learner} no longer wanted")
        if learner not in config.isr:
            return None  # still catching up (the primary proposes it into the ISR)
    leaving = [n for n in config.replicas if n not in want]
    if leaving and (config.learners or len(config.replicas) > len(wanted)):
        # A learner caught up in a leaving replica's place (or there are too many): drop one.
        return _remove_one(config, wanted, leaving, sessions, min_insync)
    if config.learners:
        return _change(config, f"learners {list(config.learners)} are members", learners=())
    joining = [n for n in wanted if n not in config.replicas and _live(n, sessions)]
    if primary is None or len(config.isr) < min_insync:
        return None
    if joining:
        learner = joining[0]
        return _change(
            config,
            f"{learner} joins as a learner",
            replicas=(*config.replicas, learner),
            learners=(learner,),
        )
    preferred = wanted[0]
    if preferred != primary and preferred in config.isr and _live(preferred, sessions):
        # Preferred-leader balance: a node that failed and came back (or joined) leads its
        # share again, through the same planned transfer as a move (no lease wait).
        return _change(config, f"primary {primary} hands back to {preferred}", handoff=preferred)
    return None


def _remove_one(
    config: PartitionConfig,
    wanted: tuple[NodeId, ...],
    leaving: list[NodeId],
    sessions: Mapping[NodeId, SessionView],
    min_insync: int,
) -> ConfigChange | None:
    # Cheapest first: a replica outside the ISR, then a backup, the primary last.
    leaving.sort(key=lambda n: (n == config.primary, n in config.isr))
    gone = leaving[0]
    if gone == config.primary:
        heirs = [n for n in wanted if n in config.isr and n != gone and _live(n, sessions)]
        if not heirs:
            return None
        return _change(config, f"primary {gone} hands over to {heirs[0]}", handoff=heirs[0])
    if len(config.isr - {gone}) < min_insync:
        return None  # never below min_insync: wait for another replica to catch up
    return _drop(config, gone, f"{gone} leaves", learners=())


def _drop(
    config: PartitionConfig,
    node: NodeId,
    reason: str,
    *,
    learners: tuple[NodeId, ...] | None = None,
) -> ConfigChange:
    """``node`` leaves ``replicas``, ``learners`` and the ISR (the primary keeps requiring
    it until it sees this config: always safe); never the primary. ``learners``: what
    remains of them (default: the others)."""
    return _change(
        config,
        reason,
        replicas=tuple(n for n in config.replicas if n != node),
        learners=tuple(n for n in config.learners if n != node) if learners is None else learners,
        isr=config.isr - {node},
        wiped=tuple(entry for entry in config.wiped if entry[0] != node),
        data_ids=tuple(entry for entry in config.data_ids if entry[0] != node),
    )


def _change(config: PartitionConfig, reason: str, **fields: object) -> ConfigChange:
    new = replace(config, version=config.version + 1, **fields)  # type: ignore[arg-type]
    return ConfigChange(config.partition, config.version, new, reason)


def moves_in_progress(configs: Iterable[PartitionConfig]) -> list[PartitionId]:
    """Partitions with a learner or a handoff under way."""
    return sorted(c.partition for c in configs if c.learners or c.handoff is not None)


def moves_remaining(configs: Iterable[PartitionConfig], target: Target) -> int:
    """Replicas still to copy to reach ``target`` (a learner not yet in the ISR counts)."""
    total = 0
    for config in configs:
        settled = set(config.replicas) - (set(config.learners) - config.isr)
        total += len(set(target.get(config.partition, ())) - settled)
    return total
