"""Partition -> preference list of R distinct nodes (docs/design.md §3, Placement).

Consistent hashing with bounded loads (:func:`planaria.hashing.assign_bounded`) over weighted
nodes: every partition walks the ring from its hash and takes the first nodes still below
their cap ``ceil((1 + eps) * weight share)``; replicas land in distinct zones whenever there
are at least R zones. The result is a pure function of (nodes, weights, zones, partitions,
R, eps, vnodes): every process computes the same map, and a membership change moves close to
the ideal fraction of replicas (those whose ring successor changed, plus a cascade bounded by
``eps``). The first node of each list is the partition's preferred primary; primaries are
spread by weight as well (a list's order changes, never its members).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from planaria.core.messages import NodeId, PartitionId
from planaria.errors import UsageError
from planaria.hashing import DEFAULT_VNODES, HashRing, Nodes, assign_bounded

__all__ = ["Placement", "movement", "place"]

Placement = dict[PartitionId, tuple[NodeId, ...]]


def place(
    partitions: int | Iterable[PartitionId],
    nodes: Nodes,
    *,
    replicas: int = 3,
    zones: Mapping[NodeId, str] | None = None,
    eps: float = 0.25,
    vnodes: int = DEFAULT_VNODES,
) -> Placement:
    """The preference list of every partition, preferred primary first.

    ``partitions`` is a count P (partitions 0..P-1) or the partition ids; ``nodes`` an
    iterable of names (weight 1) or a name -> weight mapping; ``zones`` maps node -> zone
    (nodes missing from it have no zone). No node holds more than its bounded-load cap of
    replicas (see :func:`planaria.hashing.bounded_caps`). Raises UsageError when there are
    fewer nodes than ``replicas`` or the input is malformed.
    """
    if isinstance(partitions, bool):
        raise UsageError("partitions must be a count or partition ids, not a bool")
    if isinstance(partitions, int):
        if partitions < 0:
            raise UsageError(f"partitions must be >= 0, got {partitions}")
        ids: list[PartitionId] = list(range(partitions))
    else:
        ids = list(partitions)
        for partition in ids:
            if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
                raise UsageError(f"partition ids must be ints >= 0, not {partition!r}")
    ring = HashRing(nodes, vnodes=vnodes, zones=zones)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise UsageError(f"replicas must be an int >= 1, not {replicas!r}")
    if replicas > len(ring):
        raise UsageError(f"{replicas} replicas need at least {replicas} nodes, got {len(ring)}")
    assigned = assign_bounded(ids, ring, eps=eps, replicas=replicas)
    return _balance_primaries(
        {partition: tuple(assigned[partition]) for partition in sorted(ids)}, ring
    )


def _balance_primaries(placement: Placement, ring: HashRing) -> Placement:
    """Spread primaries by weight too: each partition, in order, is led by the node of its
    list that leads the fewest partitions per unit of weight so far (ties: ring order);
    then single moves that lower the busiest leader's count are made while any exist. A
    list's order changes, never its members."""
    weight = {name: ring.weight(name) for name in ring.nodes}
    led = dict.fromkeys(weight, 0)
    primary: dict[PartitionId, NodeId] = {}
    for partition, nodes in placement.items():
        chosen = min(nodes, key=lambda n: (led[n] + 1) / weight[n])
        primary[partition] = chosen
        led[chosen] += 1
    improved = True
    while improved:
        improved = False
        for partition, nodes in placement.items():
            current = primary[partition]
            better = min(nodes, key=lambda n: (led[n] + (n != current)) / weight[n])
            if (led[better] + 1) / weight[better] < led[current] / weight[current]:
                primary[partition] = better
                led[current] -= 1
                led[better] += 1
                improved = True
    return {
        partition: (primary[partition], *(n for n in nodes if n != primary[partition]))
        for partition, nodes in placement.items()
    }


def movement(before: Mapping[PartitionId, tuple[NodeId, ...]], after: Placement) -> int:
    """How many replicas a change from ``before`` to ``after`` must copy: the number of
    (partition, node) pairs in ``after`` that ``before`` did not have."""
    return sum(
        len(set(nodes) - set(before.get(partition, ()))) for partition, nodes in after.items()
    )
