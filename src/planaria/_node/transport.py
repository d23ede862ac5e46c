"""The peer bus: replication traffic between nodes as length-prefixed msgpack frames.

Outgoing: one connection per peer node (to its bus address from the registrations), fed by
a bounded queue and reconnected with backoff. Sending never blocks the event loop: when a
peer is slow or unreachable the queue drops its oldest frames (the protocol tolerates loss:
the primary retransmits from the last acknowledged index on its next heartbeat).

Incoming: a server that decodes frames and hands Append / AppendReply to a callback. A peer
that sends bytes which are not valid frames has its connection closed; nothing else is
affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from planaria._client.routing import parse_address
from planaria._node.tasks import cancel_all
from planaria.core.messages import Append, AppendReply, Message
from planaria.errors import UsageError
from planaria.net.frame import CODEC, FrameDecoder, FrameError

__all__ = ["PeerBus"]

log = logging.getLogger("planaria.node.bus")

QUEUE_FRAMES_MAX = 4096
RECONNECT_DELAY_MIN_S = 0.02
RECONNECT_DELAY_MAX_S = 1.0
WRITE_BUFFER_HIGH_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 1.0


class _PeerLink:
    """The outgoing connection to one peer."""

    def __init__(self, node: str, address: str) -> None:
        self.node = node
        self.address = address
        self.queue: deque[bytes] = deque()
        self._heartbeats: deque[bytes] = deque()  # queued empty Appends (by identity)
        self.dropped = 0
        self.connected = False
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"planaria-bus-to-{node}")
        self._writer: asyncio.StreamWriter | None = None

    def send(self, frame: bytes, *, essential: bool = True) -> None:
        if len(self.queue) >= QUEUE_FRAMES_MAX:
            self._drop_one()
        self.queue.append(frame)
        if not essential:
            self._heartbeats.append(frame)
        self._wakeup.set()

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

    def retarget(self, address: str) -> None:
        if address != self.address:
            self.address = address
            if self._writer is not None:
                self._writer.close()  # the loop reconnects to the new address

    async def close(self) -> None:
        await cancel_all([self._task])
        if self._writer is not None:
            self._writer.close()

    async def _run(self) -> None:
        delay_s = RECONNECT_DELAY_MIN_S
        while True:
            try:
                host, port = parse_address(self.address)
            except UsageError as exc:
                # A peer registered a bad bus address: keep queueing (bounded) and retry, so
                # a corrected registration (retarget) is picked up; never end the link.
                log.error("bus: %s registered a bad bus address: %s", self.node, exc)
                while len(self.queue) > QUEUE_FRAMES_MAX // 4:
                    self._drop_one()
                await asyncio.sleep(RECONNECT_DELAY_MAX_S)
                continue
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                log.debug("bus: cannot reach %s at %s: %s", self.node, self.address, exc)
                # Frames queued meanwhile are stale by the time we connect: keep the newest.
                while len(self.queue) > QUEUE_FRAMES_MAX // 4:
                    self._drop_one()
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RECONNECT_DELAY_MAX_S)
                continue
            delay_s = RECONNECT_DELAY_MIN_S
            self._writer = writer
            self.connected = True
            reader_task = asyncio.create_task(_drain_reader(reader))
            try:
                await self._pump(writer, reader_task)
            except (OSError, ConnectionError) as exc:
                log.info("bus: connection to %s lost: %s", self.node, exc)
            finally:
                self.connected = False
                self._writer = None
                reader_task.cancel()
                writer.close()

    async def _pump(self, writer: asyncio.StreamWriter, reader_task: asyncio.Task[None]) -> None:
        transport = writer.transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        while not writer.is_closing() and not reader_task.done():
            if not self.queue:
                self._wakeup.clear()
                waiter = asyncio.create_task(self._wakeup.wait())
                try:
                    await asyncio.wait({waiter, reader_task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                continue
            # One more turn of the loop gathers the frames of the callbacks running now:
            # fewer, larger writes (a loopback send costs tens of microseconds).
            await asyncio.sleep(0)
            frames = list(self.queue)
            self.queue.clear()
            self._heartbeats.clear()
            writer.write(b"".join(frames))
            await writer.drain()


async def _drain_reader(reader: asyncio.StreamReader) -> None:
    """Peers never answer on our outgoing connection; this notices when it closes."""
    while await reader.read(65536):
        pass


class PeerBus:
    """Frames to and from peer nodes. ``deliver(message)`` gets every valid incoming message."""

    def __init__(self, node_id: str, deliver: Callable[[Append | AppendReply], None]) -> None:
        self.node_id = node_id
        self._deliver = deliver
        self._links: dict[str, _PeerLink] = {}
        self._addresses: dict[str, str] = {}
        self._server: asyncio.Server | None = None
        self._incoming: set[asyncio.StreamWriter] = set()
        self.frames_bad = 0

    async def listen(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

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
        for writer in list(self._incoming):
            writer.close()
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._incoming.add(writer)
        decoder = FrameDecoder(CODEC)
        peer = writer.get_extra_info("peername")
        try:
            while data := await reader.read(256 * 1024):
                decoder.feed(data)
                for message in decoder.messages():
                    if isinstance(message, Append | AppendReply):
                        self._deliver(message)
                    else:
                        raise FrameError(f"unexpected {type(message).__name__} on the bus")
        except FrameError as exc:
            self.frames_bad += 1
            log.warning("bus: bad frame from %s, closing that connection: %s", peer, exc)
        except (OSError, ConnectionError) as exc:
            log.debug("bus: incoming connection from %s lost: %s", peer, exc)
        finally:
            self._incoming.discard(writer)
            writer.close()
