"""Who serves which slots, rendered as Redis Cluster's CLUSTER SLOTS, SHARDS, NODES and INFO.

A :class:`Topology` is a plain value: node addresses and slot ranges, each with a primary
and the replicas that may answer stale reads (READONLY). :meth:`Topology.from_configs` builds
it from the partitions' configs; the renderers produce the exact replies redis-py,
redis-cli and redis-benchmark parse. Redis node ids are 40 hex digits: here the SHA-1 of the
node's name, so every node renders the same id for the same node.

planaria's nodes are primary for some partitions and backups for others, which Redis'
master/replica roles cannot say per node: CLUSTER NODES lists every node as a master with the
slots it is primary for (what redis-benchmark --cluster reads); replicas per slot range are in
CLUSTER SLOTS and SHARDS.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from planaria.core.messages import NodeId, PartitionConfig
from planaria.core.slots import SLOTS, slot_range
from planaria.errors import UsageError
from planaria.net import resp

__all__ = [
    "NodeAddress",
    "SlotRange",
    "Topology",
    "cluster_info",
    "cluster_nodes",
    "cluster_shards",
    "cluster_slots",
    "node_id_hex",
]


def node_id_hex(node: NodeId) -> str:
    """The 40-hex-digit Redis node id of ``node`` (SHA-1 of its name)."""
    return hashlib.sha1(node.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class NodeAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SlotRange:
    """Slots ``start..end`` (inclusive, as Redis writes them), served by ``primary``;
    ``replicas`` may answer stale reads."""

    start: int
    end: int
    primary: NodeId
    replicas: tuple[NodeId, ...] = ()


@dataclass(frozen=True, slots=True)
class Topology:
    """Node addresses and the slot ranges they serve (sorted, disjoint; gaps allowed: a
    partition without a primary serves nobody)."""

    nodes: Mapping[NodeId, NodeAddress]
    ranges: tuple[SlotRange, ...]
    epoch: int = 0  # shown as cluster_current_epoch
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        previous_end = -1
        for slot_range_ in self.ranges:
            if not previous_end < slot_range_.start <= slot_range_.end < SLOTS:
                raise UsageError(f"slot ranges must be sorted, disjoint, in 0..{SLOTS - 1}")
            previous_end = slot_range_.end
            for node in (slot_range_.primary, *slot_range_.replicas):
                if node not in self.nodes:
                    raise UsageError(f"slot range names unknown node {node!r}")
        object.__setattr__(self, "_starts", tuple(r.start for r in self.ranges))

    @classmethod
    def from_configs(
        cls,
        nodes: Mapping[NodeId, NodeAddress],
        configs: Iterable[PartitionConfig],
        partitions: int,
    ) -> Topology:
        """Slot ranges from partition configs: each partition's slots go to its primary, with
        its in-sync backups as replicas; neighbours with the same nodes merge into one range."""
        ordered = sorted(configs, key=lambda c: c.partition)
        ranges: list[SlotRange] = []
        for config in ordered:
            if config.primary is None:
                continue
            slots = slot_range(config.partition, partitions)
            backups = tuple(
                node for node in config.replicas if node in config.isr and node != config.primary
            )
            last = ranges[-1] if ranges else None
            if (
                last is not None
                and last.end + 1 == slots.start
                and (last.primary, last.replicas) == (config.primary, backups)
            ):
                ranges[-1] = SlotRange(last.start, slots.stop - 1, last.primary, last.replicas)
            else:
                ranges.append(SlotRange(slots.start, slots.stop - 1, config.primary, backups))
        epoch = max((config.epoch for config in ordered), default=0)
        return cls(dict(nodes), tuple(ranges), epoch)

    def owner(self, slot: int) -> SlotRange | None:
        """The range holding ``slot``, or None if nobody serves it."""
        at = bisect.bisect_right(self._starts, slot) - 1
        if at >= 0 and self.ranges[at].end >= slot:
            return self.ranges[at]
        return None

    def address(self, node: NodeId) -> str:
        """``host:port`` of ``node``, as MOVED redirects name it."""
        return str(self.nodes[node])

    @property
    def slots_assigned(self) -> int:
        return sum(r.end - r.start + 1 for r in self.ranges)


def _node_entry(topology: Topology, node: NodeId) -> list[resp.RespValue]:
    address = topology.nodes[node]
    return [address.host, address.port, node_id_hex(node), []]


def cluster_slots(topology: Topology) -> bytes:
    """CLUSTER SLOTS: ``[start, end, primary, replica...]`` per range; a node is
    ``[host, port, id, metadata]`` (Redis 7)."""
    return resp.encode(
        [
            [r.start, r.end, *(_node_entry(topology, n) for n in (r.primary, *r.replicas))]
            for r in topology.ranges
        ]
    )


def _groups(topology: Topology) -> dict[tuple[NodeId, tuple[NodeId, ...]], list[SlotRange]]:
    groups: dict[tuple[NodeId, tuple[NodeId, ...]], list[SlotRange]] = {}
    for r in topology.ranges:
        groups.setdefault((r.primary, r.replicas), []).append(r)
    return groups


def cluster_shards(topology: Topology, protocol: int = 2) -> bytes:
    """CLUSTER SHARDS: one shard per (primary, replicas) group: its slot ranges (flat start,
    end pairs) and its nodes' attributes (Redis 7's fields; maps are flat arrays unless the
    connection said HELLO 3)."""
    shards: list[resp.RespValue] = []
    for (primary, replicas), ranges in _groups(topology).items():
        slots: list[resp.RespValue] = []
        for r in ranges:
            slots += [r.start, r.end]
        members: list[resp.RespValue] = []
        for node in (primary, *replicas):
            address = topology.nodes[node]
            members.append(
                resp.RespMap(
                [
                    "id", node_id_hex(node), "port", address.port, "ip", address.host,
                    "endpoint", address.host,
                    "role", "master" if node == primary else "replica",
                    "replication-offset", 0, "health", "online",
                ]
                )
            )  # fmt: skip
        shards.append(resp.RespMap(["slots", slots, "nodes", members]))
    return resp.encode(shards, protocol)


def cluster_nodes(topology: Topology, myself: NodeId) -> bytes:
    """CLUSTER NODES text: ``id host:port@cport flags master ping pong epoch link slots...``;
    every node is a master with the slots it is primary for (``myself`` is flagged)."""
    slots_of: dict[NodeId, list[str]] = {node: [] for node in topology.nodes}
    for r in topology.ranges:
        slots_of[r.primary].append(str(r.start) if r.start == r.end else f"{r.start}-{r.end}")
    lines = []
    for node, address in topology.nodes.items():
        flags = "myself,master" if node == myself else "master"
        fields = [
            node_id_hex(node),
            f"{address.host}:{address.port}@0",
            flags,
            "-",
            "0",
            "0",
            str(topology.epoch),
            "connected",
            *slots_of[node],
        ]
        lines.append(" ".join(fields) + "\n")
    return resp.bulk("".join(lines).encode())


def cluster_info(topology: Topology, myself: NodeId | None = None) -> bytes:
    """CLUSTER INFO: ``cluster_state:ok`` only when every slot is served."""
    assigned = topology.slots_assigned
    fields = {
        "cluster_state": "ok" if assigned == SLOTS else "fail",
        "cluster_slots_assigned": assigned,
        "cluster_slots_ok": assigned,
        "cluster_slots_pfail": 0,
        "cluster_slots_fail": 0,
        "cluster_known_nodes": len(topology.nodes),
        "cluster_size": len({r.primary for r in topology.ranges}),
        "cluster_current_epoch": topology.epoch,
        "cluster_my_epoch": topology.epoch if myself is not None else 0,
    }
    text = "".join(f"{name}:{value}\r\n" for name, value in fields.items())
    return resp.bulk(text.encode())
