"""The controller service every node runs as a candidate, and its coordinator helpers.

- :class:`ControllerService` campaigns on ``/controller/`` with the node's session. The
  leader watches ``/members/``, ``/partitions/`` and the election, and on every change
  (and every ``decide_interval_s``) re-reads members and configs, creates the initial
  configs once ``/cluster`` exists and every expected node registered, and applies
  ``Controller.decide``'s changes, each fenced:
  ``multi([CheckLeader(election, token), SetIfVersion(config, new, version read)])``.
  A version conflict means someone changed the config meanwhile: re-read and re-decide.
  ``LeadershipLost`` (deposed) ends the leadership; the service campaigns again.
  ``CoordinatorUnavailable`` is logged and retried with backoff, never fatal;
  ``SessionExpired`` ends :meth:`ControllerService.run` (the node opens a new session).
- :func:`apply_proposal`: a primary's ISR proposal, validated by
  ``Controller.on_propose`` and applied by CAS (safe from any node).
- ``/cluster`` (JSON ``{partitions, replicas, min_insync, nodes}``), written once by
  ``planaria up``: :func:`write_cluster_metadata`, :func:`read_cluster_metadata`.
- Membership (docs/membership.md): ``/membership/<node id>`` (persistent JSON
  ``{weight, zone, state}``, state ``member``, ``draining`` or ``removed``). The leader
  records every node of ``/cluster`` and every node that registers (a node that joins)
  once, with the weight and zone it registered; ``planaria node drain|remove`` set the
  state (:func:`mark_member`). The target placement is ``core.placement.place`` over the
  members in state ``member`` (:func:`membership_target`), and after the failover
  decisions of every pass the leader applies ``Controller.rebalance`` toward it (at most
  ``ControlSettings.moves_max`` partitions moving at once).

Sessions, as the controller sees them, come from ``/members/`` registrations: a registered
node is alive and its session id is its incarnation; a node without a registration is dead
(its session expired in the coordinator, which happens only after its lease ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from planaria.coord import (
    CONFIGS_PREFIX,
    CONTROLLER_ELECTION,
    MEMBERS_PREFIX,
    CheckLeader,
    Coordinator,
    CoordinatorUnavailable,
    Create,
    LeadershipLost,
    MalformedRecord,
    Registration,
    SessionId,
    SetIfVersion,
    TxnOp,
    VersionConflict,
    Watch,
    config_key,
    decode_config,
    encode_config,
    partition_of_key,
)
from planaria.coord.types import validate_segment
from planaria.core.controller import (
    ConfigChange,
    Controller,
    ControllerSettings,
    SessionView,
    moves_in_progress,
    moves_remaining,
)
from planaria.core.messages import NodeId, PartitionConfig, PartitionId, ProposeIsr
from planaria.core.placement import Placement, place
from planaria.errors import UsageError

__all__ = [
    "CLUSTER_KEY",
    "MEMBERSHIP_PREFIX",
    "MEMBER_STATES",
    "ClusterMetadata",
    "ControlSettings",
    "ControllerService",
    "MemberRecord",
    "MoveProgress",
    "apply_proposal",
    "initial_placement",
    "mark_member",
    "membership_target",
    "move_progress",
    "read_cluster_metadata",
    "read_configs",
    "read_membership",
    "sessions_from_members",
    "write_cluster_metadata",
]

log = logging.getLogger("planaria.node.control")
UNREADABLE_LOSS = 1  # the loss id given to a registration whose ``lost`` cannot be read

CLUSTER_KEY = "/cluster"
MEMBERSHIP_PREFIX = "/membership/"
MEMBER_STATES = ("member", "draining", "removed")


# --- /cluster ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    """The cluster's shape, fixed at creation: P partitions, R replicas each, writes need
    ``min_insync`` in-sync copies, and the node ids expected before configs are created.
    ``first_epoch``: the epoch of the first configs (above 1 for a cluster restored from a
    backup: its logs start at the epochs the backup was taken at)."""

    partitions: int
    replicas: int
    min_insync: int
    nodes: tuple[str, ...]
    first_epoch: int = 1

    def __post_init__(self) -> None:
        for name in ("partitions", "replicas", "min_insync", "first_epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an int >= 1, not {value!r}")
        for node in self.nodes:
            validate_segment(node, "node id")
        if len(set(self.nodes)) != len(self.nodes):
            raise UsageError(f"nodes lists a node twice: {list(self.nodes)}")
        if self.replicas > len(self.nodes):
            raise UsageError(f"{self.replicas} replicas need >= {self.replicas} nodes")
        if self.min_insync > self.replicas:
            raise UsageError(f"min_insync {self.min_insync} > replicas {self.replicas}")

    def encode(self) -> bytes:
        record = {
            "partitions": self.partitions,
            "replicas": self.replicas,
            "min_insync": self.min_insync,
            "nodes": list(self.nodes),
        }
        if self.first_epoch != 1:  # kept out otherwise: the record of every other cluster
            record["first_epoch"] = self.first_epoch
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ClusterMetadata:
        try:
            record = json.loads(data)
            return cls(
                partitions=record["partitions"],
                replicas=record["replicas"],
                min_insync=record["min_insync"],
                nodes=tuple(record["nodes"]),
                first_epoch=record.get("first_epoch", 1),
            )
        except (ValueError, TypeError, KeyError, UsageError) as exc:
            raise MalformedRecord(f"{CLUSTER_KEY} is not cluster metadata: {exc}") from exc


async def read_cluster_metadata(coordinator: Coordinator) -> ClusterMetadata | None:
    """``/cluster``, or None before ``planaria up`` wrote it."""
    item = await coordinator.get(CLUSTER_KEY)
    return None if item is None else ClusterMetadata.decode(item.value)


async def write_cluster_metadata(
    coordinator: Coordinator | str,
    *,
    partitions: int,
    replicas: int,
    min_insync: int,
    nodes: Sequence[str],
    first_epoch: int = 1,
) -> ClusterMetadata:
    """Create ``/cluster`` (``coordinator`` may be a URL). Writing the same shape again is
    fine (a retried ``planaria up``); another shape raises ``UsageError``: the partition
    count of a cluster never changes."""
    metadata = ClusterMetadata(partitions, replicas, min_insync, tuple(nodes), first_epoch)
    if isinstance(coordinator, str):
        from planaria.coord.url import connect  # noqa: PLC0415 (the client loads lazily)

        async with connect(coordinator) as client:
            return await _write_metadata(client, metadata)
    return await _write_metadata(coordinator, metadata)


async def _write_metadata(coordinator: Coordinator, metadata: ClusterMetadata) -> ClusterMetadata:
    try:
        await coordinator.create(CLUSTER_KEY, metadata.encode())
    except VersionConflict:
        existing = await read_cluster_metadata(coordinator)
        if existing != metadata:
            raise UsageError(
                f"the coordinator already holds another cluster: {existing}; "
                f"use another data directory or coordinator"
            ) from None
    return metadata


# --- reading state -------------------------------------------------------------------------


def sessions_from_members(
    members: Mapping[str, Registration], now_ms: float = 0.0
) -> dict[NodeId, SessionView]:
    """The controller's view: every registered node alive, incarnation = its session, the
    logs it lost (``lost`` in its metadata, see :func:`_lost_logs`) and the id of its data
    directory (``data-id``; none from an older node)."""
    views: dict[NodeId, SessionView] = {}
    for node, reg in members.items():
        lost, data_lost = _lost_logs(reg)
        text = reg.meta().get("data-id", "")
        data_id = int(text) if text.isdigit() else 0
        if text and not data_id:
            # Unreadable: count every log of the node lost (out of the ISR is always safe).
            log.error("%s registered an unreadable data-id=%r", node, text)
            data_lost = data_lost or UNREADABLE_LOSS
        views[node] = SessionView(
            node,
            int(reg.session),
            True,
            now_ms,
            float("inf"),
            lost=lost,
            data_lost=data_lost,
            data_id=data_id,
        )
    return views


def _lost_logs(registration: Registration) -> tuple[dict[PartitionId, int], int]:
    """``lost=3:17,7:17,all:20`` -> ({3: 17, 7: 17}, 20): loss ids per partition, and of
    the whole data directory (0: none)."""
    text = registration.meta().get("lost", "")
    lost: dict[PartitionId, int] = {}
    data_lost = 0
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, loss = part.partition(":")
        if not loss.isdigit() or not (name.isdigit() or name == "all"):
            # Unreadable: count every log of the node lost (out of the ISR is always safe).
            log.error("%s registered an unreadable lost=%r", registration.node_id, text)
            return {}, UNREADABLE_LOSS
        if name == "all":
            data_lost = int(loss)
        else:
            lost[int(name)] = int(loss)
    return lost, data_lost


async def read_configs(coordinator: Coordinator) -> dict[PartitionId, tuple[PartitionConfig, int]]:
    """Every partition's config with its coordinator version (the CAS precondition).
    A malformed config is logged and skipped (nobody can decide on it)."""
    configs: dict[PartitionId, tuple[PartitionConfig, int]] = {}
    for item in await coordinator.list_prefix(CONFIGS_PREFIX):
        partition = partition_of_key(item.key)
        if partition is None:
            continue
        try:
            configs[partition] = (decode_config(item.value), item.version)
        except MalformedRecord as exc:
            log.error("%s: %s", item.key, exc)
    return configs


# --- membership ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A node's membership: its placement ``weight`` and ``zone``, and its ``state``:
    ``member`` (holds its share), ``draining`` (its replicas move away) or ``removed``
    (drained and gone: it never rejoins by registering again)."""

    node: NodeId
    weight: float = 1.0
    zone: str | None = None
    state: str = "member"

    def __post_init__(self) -> None:
        validate_segment(self.node, "node id")
        if isinstance(self.weight, bool) or not self.weight > 0:
            raise UsageError(f"weight must be > 0, not {self.weight!r}")
        if self.state not in MEMBER_STATES:
            raise UsageError(f"member state is one of {MEMBER_STATES}, not {self.state!r}")

    def encode(self) -> bytes:
        record = {"weight": self.weight, "zone": self.zone, "state": self.state}
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, node: NodeId, data: bytes) -> MemberRecord:
        try:
            record = json.loads(data)
            return cls(node, float(record["weight"]), record.get("zone"), record["state"])
        except (ValueError, TypeError, KeyError, UsageError) as exc:
            raise MalformedRecord(f"{MEMBERSHIP_PREFIX}{node}: not a member record: {exc}") from exc


async def read_membership(coordinator: Coordinator) -> dict[NodeId, tuple[MemberRecord, int]]:
    """Every member record with its coordinator version; malformed ones are logged and
    skipped."""
    records: dict[NodeId, tuple[MemberRecord, int]] = {}
    for item in await coordinator.list_prefix(MEMBERSHIP_PREFIX):
        node = item.key[len(MEMBERSHIP_PREFIX) :]
        try:
            records[node] = (MemberRecord.decode(node, item.value), item.version)
        except MalformedRecord as exc:
            log.error("%s", exc)
    return records


async def mark_member(
    coordinator: Coordinator,
    node: NodeId,
    state: str,
    *,
    weight: float | None = None,
    zone: str | None = None,
    attempts_max: int = 16,
) -> MemberRecord:
    """Set ``node``'s membership state (creating its record; ``weight``/``zone`` when
    given, else kept), by compare-and-set; returns the record written. A removed node is
    never made a member again (UsageError): give a new node a new id."""
    key = MEMBERSHIP_PREFIX + validate_segment(node, "node id")
    for _ in range(attempts_max):
        item = await coordinator.get(key)
        old = MemberRecord.decode(node, item.value) if item is not None else MemberRecord(node)
        if old.state == "removed" and state != "removed":
            raise UsageError(f"node {node} was removed; a node that joins needs a new id")
        new = MemberRecord(
            node,
            old.weight if weight is None else weight,
            old.zone if zone is None else zone,
            state,
        )
        try:
            if item is None:
                await coordinator.create(key, new.encode())
            else:
                await coordinator.set_if_version(key, new.encode(), version=item.version)
        except VersionConflict:
            continue
        return new
    raise CoordinatorUnavailable(f"{key} kept changing: gave up after {attempts_max} attempts")


def membership_target(
    cluster: ClusterMetadata, records: Mapping[NodeId, MemberRecord]
) -> Placement | None:
    """The placement the controller moves toward: ``place`` over the nodes in state
    ``member``, with their recorded weights and zones; None while one of ``/cluster``'s
    nodes has no record yet (its weight is not known) or fewer members than replicas
    remain."""
    if any(node not in records for node in cluster.nodes):
        return None
    members = {n: r for n, r in sorted(records.items()) if r.state == "member"}
    if len(members) < cluster.replicas:
        return None
    zones = tuple((n, r.zone) for n, r in members.items() if r.zone is not None)
    weights = tuple((n, r.weight) for n, r in members.items())
    return dict(_place_cached(cluster.partitions, weights, cluster.replicas, zones))


@functools.lru_cache(maxsize=8)
def _place_cached(
    partitions: int,
    weights: tuple[tuple[NodeId, float], ...],
    replicas: int,
    zones: tuple[tuple[NodeId, str], ...],
) -> tuple[tuple[PartitionId, tuple[NodeId, ...]], ...]:
    """``place`` for one membership, remembered: the controller asks on every pass, and
    building the ring costs milliseconds, while membership rarely changes."""
    placement = place(partitions, dict(weights), replicas=replicas, zones=dict(zones) or None)
    return tuple(placement.items())


@dataclass(frozen=True, slots=True)
class MoveProgress:
    """How far the cluster is from its target placement: ``remaining`` replicas to copy,
    ``moving`` partitions with a move under way, and for each draining or removed node the
    partitions that still list it (``held``)."""

    remaining: int
    moving: tuple[PartitionId, ...]
    held: dict[NodeId, int]

    @property
    def done(self) -> bool:
        return self.remaining == 0 and not self.moving and not any(self.held.values())


async def move_progress(coordinator: Coordinator) -> MoveProgress | None:
    """The moves still to make (None before the cluster has configs and a target)."""
    cluster = await read_cluster_metadata(coordinator)
    configs = [config for config, _ in (await read_configs(coordinator)).values()]
    if cluster is None or not configs:
        return None
    records = {n: r for n, (r, _) in (await read_membership(coordinator)).items()}
    target = membership_target(cluster, records)
    if target is None:
        return None
    leaving = sorted(n for n, r in records.items() if r.state != "member")
    held = {n: sum(n in c.replicas for c in configs) for n in leaving}
    return MoveProgress(moves_remaining(configs, target), tuple(moves_in_progress(configs)), held)


# --- ISR proposals -------------------------------------------------------------------------


async def apply_proposal(
    coordinator: Coordinator,
    proposal: ProposeIsr,
    sender: NodeId,
    *,
    controller: Controller | None = None,
) -> PartitionConfig | None:
    """Apply a primary's ISR proposal by CAS: the new config, or None when it is invalid or
    stale (``Controller.on_propose`` refused it, or the config changed meanwhile: the
    primary sees the new config and proposes again if it still needs to). Raises
    ``CoordinatorUnavailable`` (unknown outcome: the primary learns it from the config)."""
    key = config_key(proposal.partition)
    item = await coordinator.get(key)
    if item is None:
        return None
    config = decode_config(item.value)
    sessions = sessions_from_members(await coordinator.members())
    change = (controller or Controller()).on_propose(proposal, sender, config, sessions)
    if change is None:
        return None
    try:
        await coordinator.set_if_version(key, encode_config(change.config), version=item.version)
    except VersionConflict:
        return None
    log.info("p%d: %s -> isr %s", proposal.partition, change.reason, sorted(change.config.isr))
    return change.config


# --- the service ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """- ``decide_interval_s``: the leader re-decides at least this often without events.
    - ``retry_wait_initial_s`` / ``retry_wait_max_s``: backoff (full jitter) after the
      coordinator was unavailable.
    - ``conflict_rounds_max``: re-read-and-decide passes per reconcile while CASes conflict.
    - ``moves_max``: partitions moving a replica at the same time, at most (membership).
    - ``controller``: the decision rules' settings (known-bug switches).
    """

    decide_interval_s: float = 0.1
    retry_wait_initial_s: float = 0.02
    retry_wait_max_s: float = 1.0
    conflict_rounds_max: int = 8
    moves_max: int = 4
    controller: ControllerSettings = field(default_factory=ControllerSettings)

    def __post_init__(self) -> None:
        for name in ("decide_interval_s", "retry_wait_initial_s", "retry_wait_max_s"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be > 0")
        if self.conflict_rounds_max < 1 or self.moves_max < 1:
            raise UsageError("conflict_rounds_max and moves_max must be >= 1")


class ControllerService:
    """One node's controller candidacy; :meth:`run` until cancelled (see the module doc)."""

    def __init__(
        self,
        coordinator: Coordinator,
        node_id: NodeId,
        session: SessionId,
        *,
        settings: ControlSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.node_id = validate_segment(node_id, "node id")
        self.session = session
        self.settings = settings if settings is not None else ControlSettings()
        self.controller = Controller(self.settings.controller)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.leading: CheckLeader | None = None  # the fence while leading
        self.changes_applied = 0
        self._failures = 0

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign, lead until deposed, campaign again; forever (until cancelled).
        ``SessionExpired`` propagates: the node's session ended."""
        while True:
            try:
                candidate = await self.coordinator.campaign(
                    CONTROLLER_ELECTION, self.session, self.node_id.encode()
                )
                fence = CheckLeader(CONTROLLER_ELECTION, candidate.token)
                log.info("%s leads the controller (token %d)", self.node_id, candidate.token)
                await self._lead(fence)
            except LeadershipLost as exc:
                log.info("%s no longer leads the controller: %s", self.node_id, exc)
            except CoordinatorUnavailable as exc:
                log.warning("controller %s: coordinator unavailable: %s", self.node_id, exc)
                await self._back_off()
            finally:
                self.leading = None

    async def _lead(self, fence: CheckLeader) -> None:
        changed = asyncio.Event()
        watches: list[Watch] = []
        pumps: list[asyncio.Task[None]] = []
        try:
            # Watch first, then read: no change is missed.
            for prefix in (MEMBERS_PREFIX, CONFIGS_PREFIX, CONTROLLER_ELECTION):
                watch = await self.coordinator.watch(prefix)
                watches.append(watch)
                pumps.append(asyncio.get_running_loop().create_task(_pump(watch, changed)))
            self.leading = fence
            while True:
                changed.clear()
                try:
                    await self.reconcile(fence)
                    self._failures = 0
                except CoordinatorUnavailable as exc:
                    log.warning("controller %s: coordinator unavailable: %s", self.node_id, exc)
                    await self._back_off()
                    continue
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                # cancellation that arrives as the event fires, and the service never ends.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.decide_interval_s):
                        await changed.wait()
        finally:
            for task in pumps:
                task.cancel()
            for watch in watches:
                # The watches die with the connection anyway if the coordinator is gone.
                with contextlib.suppress(CoordinatorUnavailable):
                    await watch.close()

    async def _back_off(self) -> None:
        self._failures += 1
        settings = self.settings
        ceiling = settings.retry_wait_initial_s * 2 ** min(self._failures - 1, 30)
        await asyncio.sleep(self._rng.uniform(0, min(settings.retry_wait_max_s, ceiling)))

    # --- one pass ------------------------------------------------------------------------

    async def reconcile(self, fence: CheckLeader) -> int:
        """Read members and configs, decide, apply (fenced); re-read and re-decide while a
        CAS conflicts (up to ``conflict_rounds_max`` passes). Returns the changes applied.
        Raises ``LeadershipLost`` when ``fence`` no longer leads, ``CoordinatorUnavailable``
        when the coordinator cannot be reached (re-reading resolves unknown outcomes)."""
        applied = 0
        for _ in range(self.settings.conflict_rounds_max):
            leader = await self.coordinator.leader(fence.election)
            if leader is None or leader.token != fence.token:
                raise LeadershipLost(
                    fence.election,
                    token=fence.token,
                    leader_token=None if leader is None else leader.token,
                )
            done, conflicts = await self._pass(fence)
            applied += done
            if not conflicts:
                break
        self.changes_applied += applied
        return applied

    async def _pass(self, fence: CheckLeader) -> tuple[int, int]:
        now_ms = self._clock() * 1000.0
        members = await self.coordinator.members()
        sessions = sessions_from_members(members, now_ms)
        configs = await read_configs(self.coordinator)
        if not configs:
            return await self._bootstrap(fence, members, sessions)
        changes = self.controller.decide([c for c, _ in configs.values()], sessions, now_ms)
        changes += await self._moves(fence, members, sessions, configs, changes)
        applied = conflicts = 0
        for change in changes:
            version = configs[change.partition][1]
            ops: list[TxnOp] = [
                fence,
                SetIfVersion(config_key(change.partition), encode_config(change.config), version),
            ]
            if await self._apply(ops):
                applied += 1
                log.info("p%d: %s (epoch %d)", change.partition, change.reason, change.config.epoch)
            else:
                conflicts += 1
        return applied, conflicts

    async def _moves(
        self,
        fence: CheckLeader,
        members: Mapping[str, Registration],
        sessions: Mapping[NodeId, SessionView],
        configs: Mapping[PartitionId, tuple[PartitionConfig, int]],
        failovers: Sequence[ConfigChange],
    ) -> list[ConfigChange]:
        """Record nodes seen for the first time as members, then the next move steps of
        the partitions no failover touches (docs/membership.md)."""
        cluster = await read_cluster_metadata(self.coordinator)
        if cluster is None:
            return []
        records = {n: r for n, (r, _) in (await read_membership(self.coordinator)).items()}
        for node in sorted({*cluster.nodes, *members} - set(records)):
            if node not in members:
                continue  # its weight and zone are known once it registers
            meta = members[node].meta()
            try:
                record = MemberRecord(node, float(meta.get("weight", "1")), meta.get("zone"))
            except (ValueError, UsageError) as exc:
                log.error("node %s registered bad placement metadata: %s", node, exc)
                continue
            try:
                await self.coordinator.multi(
                    [fence, Create(MEMBERSHIP_PREFIX + node, record.encode())]
                )
            except VersionConflict:
                continue  # someone wrote it meanwhile: read it next pass
            records[node] = record
            log.info("%s is a member (weight %g, zone %s)", node, record.weight, record.zone)
        target = membership_target(cluster, records)
        if target is None:
            return []
        touched = {change.partition for change in failovers}
        return self.controller.rebalance(
            [c for p, (c, _) in sorted(configs.items()) if p not in touched],
            sessions,
            target,
            moves_max=self.settings.moves_max,
            min_insync=cluster.min_insync,
        )

    async def _apply(self, ops: list[TxnOp]) -> bool:
        """Apply fenced ``ops``: False on a version conflict (someone changed a config)."""
        try:
            await self.coordinator.multi(ops)
        except VersionConflict as exc:
            log.info("controller %s: %s; re-reading", self.node_id, exc)
            return False
        return True

    async def _bootstrap(
        self,
        fence: CheckLeader,
        members: Mapping[str, Registration],
        sessions: Mapping[NodeId, SessionView],
    ) -> tuple[int, int]:
        """Create every partition's first config once ``/cluster`` exists and all its
        nodes registered (one fenced transaction: all configs or none)."""
        cluster = await read_cluster_metadata(self.coordinator)
        if cluster is None:
            return 0, 0
        missing = [node for node in cluster.nodes if node not in members]
        if missing:
            log.info("waiting for %s to register before creating configs", missing)
            return 0, 0
        configs = self.controller.initial_configs(
            initial_placement(cluster, members), sessions, first_epoch=cluster.first_epoch
        )
        ops: list[TxnOp] = [fence]
        ops += [Create(config_key(p), encode_config(c)) for p, c in sorted(configs.items())]
        if not await self._apply(ops):
            return 0, 1
        log.info("created the configs of %d partitions", len(configs))
        return len(configs), 0


def initial_placement(
    cluster: ClusterMetadata, members: Mapping[str, Registration]
) -> dict[PartitionId, tuple[NodeId, ...]]:
    """``core.placement`` over the expected nodes, with the weight and zone they
    registered (``weight``, ``zone`` metadata; weight 1 and no zone when absent)."""
    weights: dict[str, float] = {}
    zones: dict[str, str] = {}
    for node in cluster.nodes:
        meta = members[node].meta() if node in members else {}
        try:
            weights[node] = float(meta.get("weight", "1"))
        except ValueError:
            raise UsageError(f"node {node} registered a bad weight {meta['weight']!r}") from None
        if "zone" in meta:
            zones[node] = meta["zone"]
    return place(cluster.partitions, weights, replicas=cluster.replicas, zones=zones or None)


async def _pump(watch: Watch, changed: asyncio.Event) -> None:
    async for _event in watch:
        changed.set()
