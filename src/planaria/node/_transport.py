"""The peer bus: replication traffic between nodes as length-prefixed msgpack frames.

Outgoing: one connection per peer node (to its bus address from the registrations), fed by
a bounded queue and reconnected with backoff. Sending never blocks the event loop: when a
peer is slow or unreachable the queue drops its oldest frames (the protocol tolerates loss:
the primary retransmits from the last acknowledged index on its next heartbeat).

Incoming: a server that decodes frames and hands Append / AppendReply (and snapshot
transfer chunks and acks) to a callback. A peer
that sends bytes which are not valid frames has its connection closed; nothing else is
affected.

Every connection opens with :data:`BUS_PREAMBLE`: a magic and the bus protocol's version.
The message formats change between releases (an entry's fields, the ops), and a node that
read another version's frames could misread them; so a peer that opens with another
preamble is refused and logged (upgrade every node of a cluster together).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from planaria.address import parse_address
from planaria.core.messages import Append, AppendReply, Message, SnapshotAck, SnapshotChunk
from planaria.errors import UsageError
from planaria.net.frame import CODEC, FrameDecoder, FrameError
from planaria.node._tasks import cancel_all

__all__ = ["BUS_PREAMBLE", "BUS_PROTOCOL_VERSION", "PeerBus", "PeerMessage"]

PeerMessage = Append | AppendReply | SnapshotChunk | SnapshotAck

log = logging.getLogger("planaria.node.bus")

# The bus protocol's version: raise it whenever a message's encoding changes, once per
# release (2: entries carry the primary's time; the expiry, hash, set and RENAME ops).
BUS_PROTOCOL_VERSION = 2
_MAGIC = b"PLNBUS"
BUS_PREAMBLE = _MAGIC + struct.pack(">H", BUS_PROTOCOL_VERSION)

QUEUE_FRAMES_MAX = 4096
RECONNECT_DELAY_MIN_S = 0.02
RECONNECT_DELAY_MAX_S = 1.0
WRITE_BUFFER_HIGH_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 1.0


class _PeerLink(asyncio.Protocol):
    """The outgoing connection to one peer (the protocol of that one connection, reused
    across reconnects). Frames sent during one turn of the event loop leave together, in one
    write, at the end of that turn (``call_soon``): no task wakes up per frame."""

    def __init__(self, node: str, address: str) -> None:
        self.node = node
        self.address = address
        self.queue: deque[bytes] = deque()
        self._heartbeats: deque[bytes] = deque()  # queued empty Appends (by identity)
        self.dropped = 0
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] | None = None  # resolved when the connection ends
        self._paused = False  # the socket's buffer is full: frames wait in the queue
        self._flush_due = False
        self._task = asyncio.create_task(self._run(), name=f"planaria-bus-to-{node}")

    @property
    def connected(self) -> bool:
        return self._transport is not None

    def send(self, frame: bytes, *, essential: bool = True) -> None:
        if len(self.queue) >= QUEUE_FRAMES_MAX:
            self._drop_one()
        self.queue.append(frame)
        if not essential:
            self._heartbeats.append(frame)
        self._schedule_flush()

    def _drop_one(self) -> None:
        """Drop the oldest heartbeat still queued, else the oldest frame (the protocol
        tolerates loss: the primary resends from the last acknowledged index)."""
        self.dropped += 1
        while self._heartbeats:
            heartbeat = self._heartbeats.popleft()
            for position, frame in enumerate(self.queue):
                if frame is heartbeat:
                    del self.queue[position]
                    return
        self.queue.popleft()

    def _schedule_flush(self) -> None:
        if not self._flush_due and self._transport is not None and not self._paused:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        transport = self._transport
        if transport is None or self._paused or not self.queue:
            return
        queue = self.queue
        data = queue[0] if len(queue) == 1 else b"".join(queue)
        queue.clear()
        self._heartbeats.clear()
        transport.write(data)

    def retarget(self, address: str) -> None:
        if address != self.address:
            self.address = address
            if self._transport is not None:
                self._transport.close()  # the loop reconnects to the new address

    async def close(self) -> None:
        await cancel_all([self._task])  # its connection ends with it

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        self._transport.write(BUS_PREAMBLE)  # before any frame (see the module's doc)
        self._paused = False
        self._schedule_flush()

    def data_received(self, data: bytes) -> None:
        pass  # peers never answer on our outgoing connection

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if exc is not None:
            log.info("bus: connection to %s lost: %s", self.node, exc)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    async def _run(self) -> None:
        delay_s = RECONNECT_DELAY_MIN_S
        while True:
            # Waits happen outside the except handlers (see _native: no await in except).
            try:
                host, port = parse_address(self.address, what="bus address")
            except UsageError as exc:
                # A peer registered a bad bus address: keep queueing (bounded) and retry, so
                # a corrected registration (retarget) is picked up; never end the link.
                log.error("bus: %s registered a bad bus address: %s", self.node, exc)
                while len(self.queue) > QUEUE_FRAMES_MAX // 4:
                    self._drop_one()
                parsed = False
            else:
                parsed = True
            if not parsed:
                await asyncio.sleep(RECONNECT_DELAY_MAX_S)
                continue
            self._lost = self._loop.create_future()
            try:
                await asyncio.wait_for(
                    self._loop.create_connection(lambda: self, host, port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                log.debug("bus: cannot reach %s at %s: %s", self.node, self.address, exc)
                # Frames queued meanwhile are stale by the time we connect: keep the newest.
                while len(self.queue) > QUEUE_FRAMES_MAX // 4:
                    self._drop_one()
                connected = False
            else:
                connected = True
            if not connected:
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RECONNECT_DELAY_MAX_S)
                continue
            delay_s = RECONNECT_DELAY_MIN_S
            try:
                await self._lost
            finally:
                if self._transport is not None:  # cancelled (closing): end the connection
                    self._transport.close()


class _Incoming(asyncio.Protocol):
    """One connection from a peer: frames in, messages to the bus's callback."""

    def __init__(self, bus: PeerBus) -> None:
        self._bus = bus
        self._decoder = FrameDecoder(CODEC)
        self._transport: asyncio.BaseTransport | None = None
        self._peer: object = None
        self._preamble = b""  # what arrived of the peer's preamble, until it is whole

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        self._bus._incoming.add(transport)

    def data_received(self, data: bytes) -> None:
        if len(self._preamble) < len(BUS_PREAMBLE):
            wanted = len(BUS_PREAMBLE) - len(self._preamble)
            self._preamble += data[:wanted]
            data = data[wanted:]
            if len(self._preamble) < len(BUS_PREAMBLE):
                return
            if self._preamble != BUS_PREAMBLE:
                self._refuse()
                return
        deliver = self._bus._deliver
        try:
            self._decoder.feed(data)
            for message in self._decoder.messages():
                if isinstance(message, (Append, AppendReply, SnapshotChunk, SnapshotAck)):
                    deliver(message)
                else:
                    raise FrameError(f"unexpected {type(message).__name__} on the bus")
        except FrameError as exc:
            self._bus.frames_bad += 1
            log.warning("bus: bad frame from %s, closing that connection: %s", self._peer, exc)
            if self._transport is not None:
                self._transport.close()

    def _refuse(self) -> None:
        """A peer of another bus protocol (or no planaria node at all): say which, close."""
        self._bus.peers_refused += 1
        preamble = self._preamble
        if preamble.startswith(_MAGIC):
            (version,) = struct.unpack(">H", preamble[len(_MAGIC) :])
            why = f"it speaks bus protocol {version}, this node {BUS_PROTOCOL_VERSION}"
        else:
            why = f"it sent no planaria bus preamble ({preamble!r}): an older node, or not one"
        log.error(
            "bus: refusing the connection from %s: %s; upgrade every node of a cluster "
            'together (docs/operations.md, "Upgrades")',
            self._peer,
            why,
        )
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("bus: incoming connection from %s lost: %s", self._peer, exc)
        if self._transport is not None:
            self._bus._incoming.discard(self._transport)


class PeerBus:
    """Frames to and from peer nodes. ``deliver(message)`` gets every valid incoming message."""

    def __init__(self, node_id: str, deliver: Callable[[PeerMessage], None]) -> None:
        self.node_id = node_id
        self._deliver = deliver
        self._links: dict[str, _PeerLink] = {}
        self._addresses: dict[str, str] = {}
        self._server: asyncio.Server | None = None
        self._incoming: set[asyncio.BaseTransport] = set()
        self.frames_bad = 0
        self.peers_refused = 0  # connections that opened with another preamble

    async def listen(self, host: str, port: int) -> int:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Incoming(self), host, port, reuse_address=True
        )
        # uvloop's Server.sockets is a list, not typeshed's tuple (compiled code checks).
        return int(cast(Any, self._server).sockets[0].getsockname()[1])

    def set_address(self, node: str, address: str) -> None:
        """Where ``node``'s bus listens (from its registration)."""
        self._addresses[node] = address
        link = self._links.get(node)
        if link is not None:
            link.retarget(address)

    def send(self, to: str, message: Message) -> None:
        link = self._links.get(to)
        if link is None:
            address = self._addresses.get(to)
            if address is None:
                return  # not registered (yet): the message is lost, as on a network
            link = self._links[to] = _PeerLink(to, address)
        heartbeat = isinstance(message, Append) and not message.entries
        link.send(CODEC.frame(message), essential=not heartbeat)

    def stats(self) -> dict[str, tuple[bool, int, int]]:
        """Per peer: (connected, queued frames, dropped frames)."""
        return {
            name: (link.connected, len(link.queue), link.dropped)
            for name, link in sorted(self._links.items())
        }

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._incoming):
            transport.close()
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
