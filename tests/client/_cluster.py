"""A scripted toy cluster for the client tests: N RespServers (planaria.net.server) on
127.0.0.1 sharing one dict, with slots cut evenly (each range lists the next node as a
backup). Nodes answer MOVED for slots they are not primary of, serve stale reads on READONLY
connections, and deduplicate writes by their REQID as a planaria primary does. ``script``
lets a test make a node answer anything (an error, nothing at all) before the default."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from planaria.core.expiry import Expiries
from planaria.core.keyspace import KeyIndex, glob_matcher, scan_ranges
from planaria.core.messages import (
    ClientReply,
    Expire,
    Get,
    GetEx,
    GetExpiry,
    MSet,
    Op,
    Set,
    Value,
    ValueRead,
    Version,
)
from planaria.core.slots import SLOTS, keyslot
from planaria.core.strings import apply_write
from planaria.net import resp, topology
from planaria.net.commands import (
    ClientOp,
    ClusterShards,
    ClusterSlots,
    ConnectionState,
    DbSize,
    Keys,
    NodeRequest,
    RandomKey,
    Scan,
    render_reply,
)
from planaria.net.server import RespServer

Reply = bytes | Awaitable[bytes]
# (node, request) -> a reply, or None for the default behaviour.
Script = Callable[[str, ClientOp], Reply | None]


@dataclass
class Seen:
    node: str
    command: str
    key: bytes
    request_id: tuple[str, int] | None
    readonly: bool
    write: bool = False


@dataclass
class ScriptedCluster:
    nodes: int = 3
    shards_supported: bool = True
    data: dict[bytes, bytes] = field(default_factory=dict)
    expiries: Expiries = field(default_factory=Expiries)  # key -> Unix ms
    seen: list[Seen] = field(default_factory=list)
    topology_requests: Counter[str] = field(default_factory=Counter)  # node -> map requests
    applied: Counter[bytes] = field(default_factory=Counter)  # key -> writes applied
    script: Script | None = None

    def __post_init__(self) -> None:
        self.names = [f"n{i}" for i in range(self.nodes)]
        self.dedup: dict[tuple[str, int], bytes] = {}
        self.topology = topology.Topology({}, ())
        self.servers: dict[str, RespServer] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.never: list[asyncio.Future[bytes]] = []  # swallowed requests

    # -- topology -----------------------------------------------------------------------------

    def address(self, name: str) -> str:
        return self.topology.address(name)

    def primary_of(self, slot: int) -> str:
        owner = self.topology.owner(slot)
        assert owner is not None
        return owner.primary

    def layout(self, primaries: list[str]) -> None:
        """Cut the slots evenly among ``primaries`` (in order); each range's backup is the
        next node of the whole cluster."""
        n = len(primaries)
        ranges = []
        for i, primary in enumerate(primaries):
            backup = self.names[(self.names.index(primary) + 1) % len(self.names)]
            ranges.append(
                topology.SlotRange(
                    i * SLOTS // n, (i + 1) * SLOTS // n - 1, primary, (backup,) if n > 1 else ()
                )
            )
        self.topology = topology.Topology(self.topology.nodes, tuple(ranges))

    def fail_over(self, old: str, new: str) -> None:
        """Every range ``old`` was primary of now has ``new`` as primary."""
        ranges = tuple(
            topology.SlotRange(
                r.start,
                r.end,
                new if r.primary == old else r.primary,
                tuple(x for x in r.replicas if x != new) if r.primary == old else r.replicas,
            )
            for r in self.topology.ranges
        )
        self.topology = topology.Topology(self.topology.nodes, ranges)

    def stop(self, name: str) -> None:
        """Close ``name``'s server: connections to it are refused from now on."""
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self.servers[name].close(), self.loop).result(5)

    def seen_writes(self) -> list[Seen]:
        return [s for s in self.seen if s.write]

    # -- answers ------------------------------------------------------------------------------

    def swallow(self) -> Awaitable[bytes]:
        """A reply that never comes (the request is dropped on the floor)."""
        assert self.loop is not None
        future: asyncio.Future[bytes] = self.loop.create_future()
        self.never.append(future)
        return future

    def apply(self, op: Op) -> ClientReply:
        """Apply ``op`` as a replica does (core/strings.py), counting the writes per key."""
        # Expiry as a primary judges it, by this process's clock (Unix ms).
        now_ms = int(time.time() * 1000)
        expiries = self.expiries
        for key in [key for key, at in expiries.items() if at < now_ms]:
            self.data.pop(key, None)
            expiries.discard(key)
        if isinstance(op, Get):
            return ClientReply(0, ("toy", 0), value=self.data.get(op.key))
        if isinstance(op, GetExpiry):
            at = expiries.get_time(op.key)
            ttl = -2 if op.key not in self.data else -1 if at is None else at
            if op.relative and at is not None and op.key in self.data:
                ttl = max(at - now_ms, 0)
            return ClientReply(0, ("toy", 0), result=ttl)
        if isinstance(op, Set | Expire | GetEx) and op.relative and op.expire_ms is not None:
            op = replace(op, expire_ms=now_ms + op.expire_ms, relative=False)
        if isinstance(op, ValueRead):
            raise AssertionError(f"the fake cluster serves no hashes or sets: {op}")
        state: dict[bytes, tuple[Value, Version]] = {
            key: (value, Version(1, 1)) for key, value in self.data.items()
        }
        previous, take, result, failure = apply_write(state, op, Version(1, 1), expiries, now_ms)
        changed = {key for key in self.data.keys() | state.keys() if self.data.get(key) != (
            state[key][0] if key in state else None
        )}  # fmt: skip
        if take:
            for key in [key for key, _ in op.pairs] if isinstance(op, MSet) else [op.key]:
                self.applied[key] += 1
        self.data = {key: value for key, (value, _) in state.items() if isinstance(value, bytes)}
        assert take or not changed
        return ClientReply(
            0, ("toy", 0), value=previous, applied=take, result=result, failure=failure
        )

    def serve(self, name: str, state: ConnectionState, request: ClientOp) -> bytes:
        """What a healthy node answers: MOVED, a deduplicated reply, or the write applied."""
        owner = self.topology.owner(request.slot)
        if owner is None:
            return resp.error(f"CLUSTERDOWN slot {request.slot} is not served")
        serves = owner.primary == name or (
            state.readonly and not request.is_write and name in owner.replicas
        )
        if not serves:
            return resp.error(f"MOVED {request.slot} {self.address(owner.primary)}")
        rid = request.request_id
        if rid is not None and rid in self.dedup:
            return self.dedup[rid]
        reply = render_reply(request, [self.apply(op) for op in request.ops])
        if rid is not None:
            self.dedup[rid] = reply
        return reply

    def keyspace(self, name: str, request: DbSize | Keys | RandomKey | Scan) -> bytes:
        """A node-wide read over the slots ``name`` is primary of (core/keyspace.py)."""
        self.seen.append(Seen(name, type(request).__name__.upper(), b"", None, False))
        ranges = [range(r.start, r.end + 1) for r in self.topology.ranges if r.primary == name]
        mine = [key for key in self.data if any(keyslot(key) in slots for slots in ranges)]
        if isinstance(request, DbSize):
            return resp.integer(len(mine))
        if isinstance(request, RandomKey):
            return resp.bulk(min(mine) if mine else None)
        if isinstance(request, Keys):
            matches = glob_matcher(request.pattern)
            return resp.array([resp.bulk(key) for key in sorted(mine) if matches(key)])
        parts = [(slots, KeyIndex(k for k in mine if keyslot(k) in slots)) for slots in ranges]
        cursor, found = scan_ranges(parts, request.cursor, request.count)
        if request.pattern is not None:
            found = [key for key in found if glob_matcher(request.pattern)(key)]
        return resp.array([resp.bulk(b"%d" % cursor), resp.array([resp.bulk(k) for k in found])])

    def handler(self, name: str) -> Callable[[ConnectionState, NodeRequest], Reply]:
        def handle(state: ConnectionState, request: NodeRequest) -> Reply:
            if isinstance(request, ClusterShards | ClusterSlots):
                self.topology_requests[name] += 1
                if isinstance(request, ClusterSlots):
                    return topology.cluster_slots(self.topology)
                if not self.shards_supported:
                    return resp.error("ERR unknown subcommand 'SHARDS'. Try CLUSTER HELP.")
                return topology.cluster_shards(self.topology, state.protocol)
            if isinstance(request, DbSize | Keys | RandomKey | Scan):
                return self.keyspace(name, request)
            assert isinstance(request, ClientOp), request
            self.seen.append(
                Seen(
                    name,
                    request.command.value.upper(),
                    request.keys[0],
                    request.request_id,
                    state.readonly,
                    request.is_write,
                )
            )
            if self.script is not None:
                scripted = self.script(name, request)
                if scripted is not None:
                    return scripted
            return self.serve(name, state, request)

        return handle


@contextmanager
def running(
    cluster: ScriptedCluster, *, key_bytes_max: int = 8 * 1024
) -> Iterator[ScriptedCluster]:
    """Serve every node from one background event loop thread until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cluster.loop = loop
    cluster.servers = {
        name: RespServer(cluster.handler(name), key_bytes_max=key_bytes_max)
        for name in cluster.names
    }

    async def start() -> None:
        for server in cluster.servers.values():
            await server.start()
        cluster.topology = topology.Topology(
            {
                name: topology.NodeAddress("127.0.0.1", server.port)
                for name, server in cluster.servers.items()
            },
            (),
        )
        cluster.layout(cluster.names)

    async def stop() -> None:
        for future in cluster.never:
            future.cancel()
        for server in cluster.servers.values():
            await server.close()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield cluster
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
