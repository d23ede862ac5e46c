"""RemoteCoordinator against a real CoordinatorServer on 127.0.0.1: the conformance suite,
reconnection, watches across reconnects, persistence across a server restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from planaria.coord import (
    Coordinator,
    CoordinatorUnavailable,
    EventKind,
    SessionExpired,
    SetIfVersion,
)
from planaria.coord.remote import RemoteCoordinator
from planaria.coord.server import CoordinatorServer

from .conformance import CHECKS, EVENT_TIMEOUT_S, Backend, run_check


class FakeClock:
    """Seconds, like time.monotonic; moves only when told."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance_ms(self, ms: float) -> None:
        self.now_s += ms / 1000.0


class Proxy:
    """A TCP relay in front of the server: ``cut`` closes its connections and stops
    listening (connection refused), ``heal`` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await asyncio.sleep(0.01)  # let the client see its connection end

    async def heal(self) -> None:
        await self.start()


class RemoteBackend(Backend):
    ttl_ms = 300.0
    expiry_slack_ms = 0.0  # the server expires exactly when told (fake clock)

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.server = CoordinatorServer("127.0.0.1", 0, clock=self.clock)
        self.clients: list[RemoteCoordinator] = []
        self.proxies: dict[int, Proxy] = {}

    async def start(self) -> RemoteBackend:
        await self.server.start()
        return self

    async def client(self) -> Coordinator:
        proxy = Proxy(self.server.port)
        await proxy.start()
        client = RemoteCoordinator(
            "127.0.0.1", proxy.port, request_timeout_s=2.0, rng=random.Random(7)
        )
        self.proxies[id(client)] = proxy
        self.clients.append(client)
        return client

    async def advance(self, ms: float) -> None:
        self.clock.advance_ms(ms)
        self.server.check_expiry()
        await asyncio.sleep(0.002)  # let pushed events travel

    async def cut(self, client: Coordinator) -> None:
        await self.proxies[id(client)].cut()

    async def heal(self, client: Coordinator) -> None:
        await self.proxies[id(client)].heal()

    async def lose_next_reply(self, client: Coordinator) -> None:
        assert isinstance(client, RemoteCoordinator)
        client.lose_replies(1)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()
        for proxy in self.proxies.values():
            await proxy.cut()
        await self.server.stop()


async def make_remote_backend() -> Backend:
    return await RemoteBackend().start()


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_remote_backend_conforms(name: str) -> None:
    run_check(CHECKS[name], make_remote_backend)


# --- beyond the suite ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(
    data_dir: Path | None = None, port: int = 0, clock: FakeClock | None = None
) -> AsyncIterator[CoordinatorServer]:
    server = CoordinatorServer("127.0.0.1", port, data_dir=data_dir, clock=clock or FakeClock())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def client_of(server: CoordinatorServer, timeout_s: float = 1.0) -> RemoteCoordinator:
    return RemoteCoordinator(
        "127.0.0.1", server.port, request_timeout_s=timeout_s, rng=random.Random(1)
    )


def test_keys_and_sessions_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with serving(tmp_path, clock=clock) as server:
            port = server.port
            c = client_of(server)
            s = await c.open_session("n1", 1000.0)
            await c.create("/cfg", b"1")
            await c.set_if_version("/cfg", b"2", version=1)
            await c.register(s, "n1", "127.0.0.1:7001", {"zone": "a"})
            first = await c.campaign("/controller/", s)
            dead = await c.open_session("n2", 1000.0)
            await c.create("/gone", b"x", session=dead)
            await c.close_session(dead)
            clock.advance_ms(900)  # nearly expired when the server stops
            c.drop_connection()
        restart_clock = FakeClock(start_s=5.0)  # a new process: another monotonic base
        async with serving(tmp_path, port=port, clock=restart_clock) as server:
            item = await c.get("/cfg")  # the same client reconnects by itself
            assert item is not None and (item.value, item.version) == (b"2", 2)
            assert await c.get("/gone") is None
            assert (await c.members())["n1"].session == s
            restart_clock.advance_ms(900)  # a full TTL from the restart: still alive
            server.check_expiry()
            await c.keep_alive(s)
            with pytest.raises(SessionExpired):
                await c.keep_alive(dead)
            s2 = await c.open_session("n3", 1000.0)
            assert s2 > dead  # ids are never reused across restarts
            # Tokens keep growing across restarts (fencing).
            await c.resign(first)
            second = await c.campaign("/controller/", s)
            assert second.token > first.token
            restart_clock.advance_ms(1001)
            assert [info.session for info in server.check_expiry()] == [s, s2]
            assert await c.members() == {}
            await c.close()

    asyncio.run(main())


def test_journal_torn_tail_is_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as server:
            c = client_of(server)
            await c.create("/a", b"1")
            await c.create("/b", b"2")
            await c.close()
        (segment,) = (tmp_path / "coord-log").glob("seg-*.log")
        data = segment.read_bytes()
        segment.write_bytes(data[:-3])  # the last record torn
        async with serving(tmp_path) as server:
            c = client_of(server)
            assert [i.key for i in await c.list_prefix("/")] == ["/a"]
            await c.create("/c", b"3")  # appends after the cut, readable next time
            await c.close()
        async with serving(tmp_path) as server:
            c = client_of(server)
            assert [i.key for i in await c.list_prefix("/")] == ["/a", "/c"]
            await c.close()

    asyncio.run(main())


def test_files_of_the_earlier_format_are_migrated(tmp_path: Path) -> None:
    """A data directory written before the coordinator kept its journal in a PartitionLog
    (length, CRC32, msgpack records in coord.snapshot and coord.journal) loses nothing."""
    import struct
    import zlib

    from planaria.coord import server as server_module

    def framed(record: object) -> bytes:
        payload = server_module._JOURNAL_CODEC.encode(record)
        return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload

    def item(key: str, value: bytes, version: int) -> server_module.WireItem:
        return server_module.WireItem(key, value, version, None)

    snapshot = server_module._JSnapshot((item("/a", b"1", 1),), (), (), 5, ())
    (tmp_path / "coord.snapshot").write_bytes(framed(snapshot))
    batch = server_module._JBatch(
        (server_module._JPut(item("/b", b"2", 1)), server_module._JPut(item("/a", b"3", 2)))
    )
    (tmp_path / "coord.journal").write_bytes(framed(batch) + b"\x00\x01torn")

    async def main() -> None:
        for _ in range(2):  # migrated, then read from the new log alone
            async with serving(tmp_path) as server:
                c = client_of(server)
                items = {i.key: (i.value, i.version) for i in await c.list_prefix("/")}
                assert items == {"/a": (b"3", 2), "/b": (b"2", 1)}
                await c.close()
            assert not (tmp_path / "coord.journal").exists()
            assert (tmp_path / "coord.journal.migrated").exists()

    asyncio.run(main())


def test_compaction_keeps_everything(tmp_path: Path) -> None:
    async def main() -> None:
        from planaria.coord.server import ServerLimits

        limits = ServerLimits(journal_compact_bytes=1000)
        server = CoordinatorServer("127.0.0.1", 0, data_dir=tmp_path, clock=FakeClock(),
                                   limits=limits)  # fmt: skip
        await server.start()
        c = client_of(server)
        s = await c.open_session("n1", 1000.0)
        await c.create("/k", b"0")
        for version in range(1, 60):
            await c.set_if_version("/k", b"%d" % version, version=version)
        await c.create("/e", b"eph", session=s)
        await c.close_session(s)
        c.drop_connection()
        await server.stop()
        log_dir = tmp_path / "coord-log"
        assert list(log_dir.glob("snap-*.snap"))
        # the records behind the snapshot went: what is left is bounded by the threshold
        segments = list(log_dir.glob("seg-*.log"))
        assert sum(segment.stat().st_size for segment in segments) < 3 * 4096
        async with serving(tmp_path) as restarted:
            c2 = client_of(restarted)
            item = await c2.get("/k")
            assert item is not None and (item.value, item.version) == (b"59", 60)
            assert await c2.get("/e") is None
            with pytest.raises(SessionExpired):
                await c2.keep_alive(s)
            await c2.close()
        await c.close()

    asyncio.run(main())


def test_dead_server_is_unavailable_then_recovers(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as server:
            port = server.port
            c = client_of(server, timeout_s=0.5)
            s = await c.open_session("n1", 10_000.0)
            await c.create("/k", b"1")
            watch = await c.watch("/k/")
        # The server is gone: every call is an unknown outcome, never a hang.
        for call in (c.get("/k"), c.keep_alive(s), c.set_if_version("/k", b"2", version=1)):
            with pytest.raises(CoordinatorUnavailable):
                await call
        async with serving(tmp_path, port=port):
            # The watch comes back by itself (background reconnect) with a RESET.
            event = await asyncio.wait_for(anext(watch), EVENT_TIMEOUT_S)
            assert event.kind is EventKind.RESET
            await c.keep_alive(s)
            await c.multi([SetIfVersion("/k", b"2", 1)])
            await c.create("/k/child", b"x")
            event = await asyncio.wait_for(anext(watch), EVENT_TIMEOUT_S)
            assert (event.kind, event.key) == (EventKind.PUT, "/k/child")
            await c.close()

    asyncio.run(main())


def test_a_paused_server_times_out_as_unknown_outcome() -> None:
    async def main() -> None:
        # A listener that accepts and never answers (like a SIGSTOPped process).
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        c = RemoteCoordinator("127.0.0.1", port, request_timeout_s=0.05)
        with pytest.raises(CoordinatorUnavailable):
            await c.create("/k", b"1")
        await c.close()
        silent.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x03abc",  # not msgpack
        b"GET / HTTP/1.1\r\n\r\n",  # a frame longer than allowed
        b"\x00\x00\x00\x02\x91\x10",  # a Reply (a message a client must not send)
    ],
)
def test_garbage_closes_only_that_connection(garbage: bytes) -> None:
    async def main() -> None:
        async with serving() as server:
            c = client_of(server)
            s = await c.open_session("n1", 10_000.0)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(garbage)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), EVENT_TIMEOUT_S) == b""  # closed
            writer.close()
            await c.keep_alive(s)  # the others are unaffected
            await c.create("/k", b"1")
            await c.close()

    asyncio.run(main())


def test_server_limits_connections_and_watches() -> None:
    async def main() -> None:
        from planaria.coord.server import ServerLimits
        from planaria.errors import UsageError

        limits = ServerLimits(connections_max=1, watches_max=2)
        server = CoordinatorServer("127.0.0.1", 0, clock=FakeClock(), limits=limits)
        await server.start()
        c = client_of(server)
        await c.watch("/a/")
        await c.watch("/b/")
        with pytest.raises(UsageError):
            await c.watch("/c/")
        other = client_of(server, timeout_s=0.5)
        with pytest.raises(CoordinatorUnavailable):
            await other.get("/k")
        assert await c.get("/k") is None
        await other.close()
        await c.close()
        await server.stop()

    asyncio.run(main())


def test_a_failed_fsync_stops_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with serving(tmp_path) as server:
            c = client_of(server, timeout_s=0.5)
            await c.create("/k", b"1")

            def broken(fd: int) -> None:
                raise OSError(5, "Input/output error")

            monkeypatch.setattr(os, "fdatasync", broken)
            with pytest.raises(CoordinatorUnavailable):  # no reply for a change not durable
                await c.set_if_version("/k", b"2", version=1)
            assert server.failed.is_set()
            with pytest.raises(CoordinatorUnavailable):  # nor anything after it
                await c.get("/k")
            monkeypatch.undo()
            await c.close()
        async with serving(tmp_path) as server:
            c = client_of(server)
            item = await c.get("/k")
            assert item is not None and item.version in (1, 2)  # written, maybe not synced
            await c.close()

    asyncio.run(main())
