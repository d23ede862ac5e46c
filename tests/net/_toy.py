"""A toy in-memory node for the network tests and the benchmark: one partition, one node,
every slot; it applies GET/SET/DEL/EXISTS to a dict exactly as a replica applies them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from planaria.core.messages import ClientReply, Delete, Get, Op, Set
from planaria.net import topology
from planaria.net.commands import (
    ClientOp,
    ClusterInfo,
    ClusterMyId,
    ClusterNodes,
    ClusterShards,
    ClusterSlots,
    ConnectionState,
    Info,
    NodeRequest,
    render_info,
    render_reply,
)
from planaria.net.resp import bulk

NODE = "toy"


class ToyNode:
    """``delay_s`` > 0 answers data commands from a future resolved later (the async path)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, delay_s: float = 0.0) -> None:
        self.data: dict[bytes, bytes] = {}
        self.delay_s = delay_s
        self.seen: list[tuple[int, bool, NodeRequest]] = []  # (connection id, readonly, request)
        self.set_address(host, port)

    def set_address(self, host: str, port: int) -> None:
        self.topology = topology.Topology(
            {NODE: topology.NodeAddress(host, port)},
            (topology.SlotRange(0, 16383, NODE),),
        )

    def apply(self, op: Op) -> ClientReply:
        previous = self.data.get(op.key)
        if isinstance(op, Get):
            return ClientReply(0, ("toy", 0), value=previous)
        if isinstance(op, Delete):
            self.data.pop(op.key, None)
            return ClientReply(0, ("toy", 0), value=previous, applied=previous is not None)
        assert isinstance(op, Set)
        take = (
            (not op.nx or previous is None)
            and (not op.xx or previous is not None)
            and (op.if_value is None or previous == op.if_value)
        )
        if take:
            self.data[op.key] = op.value
        return ClientReply(0, ("toy", 0), value=previous, applied=take)

    def handle(self, state: ConnectionState, request: NodeRequest) -> bytes | Awaitable[bytes]:
        self.seen.append((state.id, state.readonly, request))
        if isinstance(request, ClientOp):
            reply = render_reply(request, [self.apply(op) for op in request.ops])
            if self.delay_s > 0:
                future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_later(self.delay_s, future.set_result, reply)
                return future
            return reply
        if isinstance(request, ClusterSlots):
            return topology.cluster_slots(self.topology)
        if isinstance(request, ClusterShards):
            return topology.cluster_shards(self.topology, state.protocol)
        if isinstance(request, ClusterNodes):
            return topology.cluster_nodes(self.topology, NODE)
        if isinstance(request, ClusterInfo):
            return topology.cluster_info(self.topology, NODE)
        if isinstance(request, ClusterMyId):
            return bulk(topology.node_id_hex(NODE).encode())
        assert isinstance(request, Info)
        return render_info(
            {
                "Server": {"redis_version": "7.0.0", "planaria": "toy"},
                "Cluster": {"cluster_enabled": 1},
            }
        )
