"""A toy in-memory cluster for the network tests and the benchmark: one dict shared by N
RESP servers in one process, the slots cut evenly between them (each range also lists the
next node as a replica); a node answers MOVED for keys it is not primary of, except stale
reads on READONLY connections. Writes apply to the dict exactly as a replica applies them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from planaria.core.expiry import Expiries
from planaria.core.messages import (
    ClientReply,
    ErrorCode,
    Expire,
    Get,
    GetEx,
    GetExpiry,
    Op,
    Set,
    Value,
    ValueRead,
    Version,
)
from planaria.core.slots import SLOTS
from planaria.core.strings import apply_write
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
from planaria.net.server import Handler, RespServer


class ToyCluster:
    """``delay_s`` > 0: data commands are answered from futures resolved that much later."""

    def __init__(self, nodes: int = 1, delay_s: float = 0.0, hold: bool = False) -> None:
        self.names = [f"toy{i}" for i in range(nodes)]
        self.data: dict[bytes, tuple[Value, Version]] = {}
        self.expiries = Expiries()  # the toy never expires keys: they only hold the times
        self.delay_s = delay_s
        # hold: data replies wait in ``held`` until release() (pipeline-depth tests).
        self.hold = hold
        self.held: list[tuple[asyncio.Future[bytes], bytes]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.seen: list[tuple[str, int, bool, NodeRequest]] = []  # node, conn id, readonly, req
        self.topology = topology.Topology({}, ())

    def set_ports(self, host: str, ports: list[int]) -> None:
        n = len(self.names)
        addresses = {
            name: topology.NodeAddress(host, port)
            for name, port in zip(self.names, ports, strict=True)
        }
        ranges = tuple(
            topology.SlotRange(
                i * SLOTS // n,
                (i + 1) * SLOTS // n - 1,
                self.names[i],
                (self.names[(i + 1) % n],) if n > 1 else (),
            )
            for i in range(n)
        )
        self.topology = topology.Topology(addresses, ranges)

    def release(self) -> int:
        """Answer every held request (call from any thread); returns how many."""
        assert self.loop is not None

        async def release_in_loop() -> int:
            held, self.held = self.held, []
            for future, reply in held:
                future.set_result(reply)
            return len(held)

        return asyncio.run_coroutine_threadsafe(release_in_loop(), self.loop).result(5)

    def apply(self, op: Op) -> ClientReply:
        if isinstance(op, Get):
            found = self.data.get(op.key)
            value = found[0] if found is not None else None
            assert value is None or isinstance(value, bytes)
            return ClientReply(0, ("toy", 0), value=value)
        if isinstance(op, GetExpiry):
            at = self.expiries.get_time(op.key)
            ttl = -2 if op.key not in self.data else -1 if at is None else at
            return ClientReply(0, ("toy", 0), result=ttl)
        if isinstance(op, Set | Expire | GetEx) and op.relative and op.expire_ms is not None:
            op = replace(op, expire_ms=op.expire_ms + 10**12, relative=False)  # far ahead
        if isinstance(op, ValueRead):
            raise AssertionError(f"the toy serves no hashes or sets: {op}")
        previous, take, result, failure = apply_write(self.data, op, Version(1, 1), self.expiries)
        return ClientReply(
            0, ("toy", 0), value=previous, applied=take, result=result, failure=failure
        )

    def handler(self, name: str) -> Handler:
        def handle(state: ConnectionState, request: NodeRequest) -> bytes | Awaitable[bytes]:
            self.seen.append((name, state.id, state.readonly, request))
            return self._handle(name, state, request)

        return handle

    def _handle(
        self, name: str, state: ConnectionState, request: NodeRequest
    ) -> bytes | Awaitable[bytes]:
        if isinstance(request, ClientOp):
            owner = self.topology.owner(request.slot)
            assert owner is not None
            serves = owner.primary == name or (
                state.readonly and not request.is_write and name in owner.replicas
            )
            if serves:
                replies = [self.apply(op) for op in request.ops]
            else:
                replies = [ClientReply(0, ("toy", 0), error=ErrorCode.NOT_PRIMARY)]
                request = ClientOp(request.command, request.ops[:1], request.slot)
            reply = render_reply(request, replies, moved_to=self.topology.address(owner.primary))
            if self.delay_s > 0 or self.hold:
                loop = asyncio.get_running_loop()
                future: asyncio.Future[bytes] = loop.create_future()
                if self.hold:
                    self.held.append((future, reply))
                else:
                    loop.call_later(self.delay_s, future.set_result, reply)
                return future
            return reply
        if isinstance(request, ClusterSlots):
            return topology.cluster_slots(self.topology)
        if isinstance(request, ClusterShards):
            return topology.cluster_shards(self.topology, state.protocol)
        if isinstance(request, ClusterNodes):
            return topology.cluster_nodes(self.topology, name)
        if isinstance(request, ClusterInfo):
            return topology.cluster_info(self.topology, name)
        if isinstance(request, ClusterMyId):
            return bulk(topology.node_id_hex(name).encode())
        assert isinstance(request, Info)
        return render_info({"Server": {"redis_version": "7.0.0"}, "Cluster": {"enabled": 1}})


@contextmanager
def serving(cluster: ToyCluster, **server_options: Any) -> Iterator[list[RespServer]]:
    """Run one RespServer per toy node on 127.0.0.1 in a background event loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cluster.loop = loop
    servers = [RespServer(cluster.handler(name), **server_options) for name in cluster.names]

    async def start() -> None:
        for server in servers:
            await server.start()
        cluster.set_ports("127.0.0.1", [server.port for server in servers])

    async def stop() -> None:
        for server in servers:
            await server.close()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield servers
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
