"""The peer bus: bounded queues that shed heartbeats first, bad frames close one link."""

from __future__ import annotations

import asyncio
import logging

import pytest

from planaria.core.messages import Append, AppendReply, Entry, Set
from planaria.net.frame import CODEC
from planaria.node._transport import BUS_PREAMBLE, QUEUE_FRAMES_MAX, PeerBus


def append(entries: int, index: int = 1) -> Append:
    batch = tuple(Entry(1, index + i, ("c", index + i), Set(b"k", b"v")) for i in range(entries))
    return Append(0, 1, "n1", index - 1, 1, batch, 0)


def test_a_full_queue_drops_heartbeats_before_entries() -> None:
    async def scenario() -> None:
        bus = PeerBus("n1", lambda message: None)
        bus.set_address("n2", "127.0.0.1:9")  # nothing listens: frames stay queued
        bus.send("n2", append(0))  # a heartbeat, the oldest frame
        for i in range(QUEUE_FRAMES_MAX - 1):
            bus.send("n2", append(1, index=i + 1))
        bus.send("n2", append(1, index=QUEUE_FRAMES_MAX))  # one too many
        link = bus._links["n2"]
        assert len(link.queue) == QUEUE_FRAMES_MAX
        assert link.dropped == 1
        # The heartbeat went, every entry stayed.
        assert all(CODEC.decode(frame[4:]).entries for frame in link.queue)
        bus.send("n2", append(1, index=QUEUE_FRAMES_MAX + 1))  # no heartbeat left: oldest
        assert CODEC.decode(link.queue[0][4:]).entries[0].index == 2
        await bus.close()

    asyncio.run(scenario())


def test_incoming_frames_reach_the_callback_and_garbage_closes_the_connection() -> None:
    async def scenario() -> None:
        received: list[object] = []
        bus = PeerBus("n2", received.append)
        port = await bus.listen("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        reply = AppendReply(0, 1, "n1", True, 3)
        writer.write(BUS_PREAMBLE[:3])  # the preamble may come in pieces
        await writer.drain()
        writer.write(BUS_PREAMBLE[3:] + CODEC.frame(reply) + CODEC.frame(append(1)))
        await writer.drain()
        writer.write(b"\x00\x00\x00\x03abc")  # not msgpack of a message
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed by the bus
        assert received == [reply, append(1)]
        assert bus.frames_bad == 1
        writer.close()
        await bus.close()

    asyncio.run(scenario())


def test_a_bad_bus_address_keeps_the_link_alive_until_it_is_corrected() -> None:
    async def scenario() -> None:
        received: list[object] = []
        server = PeerBus("n2", received.append)
        port = await server.listen("127.0.0.1", 0)
        bus = PeerBus("n1", lambda message: None)
        bus.set_address("n2", "127.0.0.1:not-a-port")  # a malformed registration
        bus.send("n2", append(1))
        await asyncio.sleep(0.05)
        link = bus._links["n2"]
        assert not link._task.done()  # the link did not die on the bad address
        bus.set_address("n2", f"127.0.0.1:{port}")
        for _ in range(300):  # bounded: up to ~3 s for the retry after the bad address
            if received:
                break
            await asyncio.sleep(0.01)
        assert received and isinstance(received[0], Append)
        await bus.close()
        await server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("opening", "logged"),
    [
        (b"PLNBUS\x00\x01", "it speaks bus protocol 1, this node 2"),
        (CODEC.frame(AppendReply(0, 1, "n1", True, 3)), "no planaria bus preamble"),
    ],
    ids=["older-version", "no-preamble"],
)
def test_a_peer_of_another_bus_protocol_is_refused_and_logged(
    opening: bytes, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A node of another release (older versions sent frames at once) is refused before any
    of its frames is read: message formats differ between versions."""

    async def scenario() -> None:
        received: list[object] = []
        bus = PeerBus("n2", received.append)
        port = await bus.listen("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(opening + CODEC.frame(append(1)))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed by the bus
        assert received == []
        assert bus.peers_refused == 1
        writer.close()
        await bus.close()

    with caplog.at_level(logging.ERROR, logger="planaria.node.bus"):
        asyncio.run(scenario())
    assert logged in caplog.text and "upgrade every node" in caplog.text
