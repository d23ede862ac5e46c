"""What a cluster's status says and how it is read: :class:`ClusterStatus` from the
coordinator's configs plus the primaries' INFO (:meth:`LocalCluster.status`), or from the
nodes alone (:func:`status_from_seed`, ``planaria status --seed``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from planaria.cluster._errors import ClusterError
from planaria.cluster._resp import is_error, resp_command
from planaria.core.messages import PartitionConfig
from planaria.core.slots import slot_range

__all__ = [
    "ClusterStatus",
    "NodeStatus",
    "PartitionStatus",
    "info_fields",
    "partition_lines",
    "partition_statuses",
    "primary_lines",
    "status_from_seed",
]


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
    # The URL Prometheus scrapes the node at, as its INFO says (None: it serves no metrics,
    # or it did not answer).
    metrics: str | None = None


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
    # Snapshot transfers the primary is sending to replicas that need one (None: unknown).
    transfers: int | None = None


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


def status_from_seed(seed: str, timeout_s: float = 2.0) -> ClusterStatus:
    """The status of the cluster that ``seed`` (any node's ``host:port``) belongs to, from
    the nodes alone: CLUSTER NODES names every node; each node's INFO gives its id, pid and,
    per partition it holds, role, epoch, ISR and (on the primary) lag. Nodes that do not
    answer are shown dead. The order of ``replicas`` is the primary first, then by id."""
    try:
        (reply,) = resp_command(seed, ("CLUSTER", "NODES"), timeout_s=timeout_s)
    except OSError as exc:
        raise ClusterError(f"cannot reach the seed node {seed}: {exc}") from exc
    if is_error(reply) or not isinstance(reply, bytes):
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
        info = info_fields(info_reply)
        node_id = info.get("planaria_node", address)
        pid_text = info.get("process_id", "")
        nodes.append(
            NodeStatus(
                node_id,
                address,
                int(pid_text) if pid_text.isdigit() else None,
                True,
                metrics=info.get("metrics_address") or None,
            )
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
                transfers=_count(lead, "transfers"),
            )
        )
    return ClusterStatus(nodes=tuple(nodes), partitions=tuple(statuses), errors=tuple(errors))


def info_fields(reply: Any) -> dict[str, str]:
    """INFO's ``name:value`` lines as a dict (section headers skipped)."""
    if is_error(reply) or not isinstance(reply, bytes):
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


def partition_statuses(
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
                transfers=_count(line, "transfers"),
            )
        )
    return tuple(statuses)


def _count(line: Mapping[str, str], name: str) -> int | None:
    value = line.get(name, "")
    return int(value) if value.isdigit() else None


def primary_lines(
    addresses: Mapping[str, str],
    timeout_s: float,
    errors: list[str],
    metrics: dict[str, str] | None = None,
) -> dict[int, dict[str, str]]:
    """partition -> its primary's INFO line (lag: entries its slowest replica is behind;
    snapshot_index, log_entries, log_bytes, transfers). Into ``metrics``: node id -> its
    metrics URL, for the nodes that serve metrics."""
    lines: dict[int, dict[str, str]] = {}
    for node_id, address in addresses.items():
        try:
            (reply,) = resp_command(address, ("INFO", "server", "partitions"), timeout_s=timeout_s)
        except OSError as exc:
            errors.append(f"{node_id} {address}: {exc!r}")
            continue
        info = info_fields(reply)
        if metrics is not None and info.get("metrics_address"):
            metrics[node_id] = info["metrics_address"]
        for partition, fields in partition_lines(info).items():
            if fields.get("role") == "primary":
                lines[partition] = fields
    return lines
