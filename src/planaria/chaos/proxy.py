"""A fault-injecting TCP proxy on every link (``--net proxy``): partitions without root.

Every listening port the nodes tell each other about (planaria: each node's RESP and bus
ports, and the coordinator) gets a proxy port in front of it; the nodes advertise the proxy
ports (``planaria node --advertise/--bus-advertise``), so every link between two nodes, and
every node's coordinator link, runs through the proxy. The proxy is one asyncio process
(``python -m planaria.chaos.proxy``) driven by :class:`ProxyNet` over its stdin and stdout,
one JSON object a line.

Who is on the other end: every connection comes from 127.0.0.1, so the proxy finds the
process that opened it, the way ``ss -p`` does: the dialer's socket is the line of
``/proc/net/tcp`` whose local address is the connection's peer, and its inode is among the
open files of one of the pids a group was given (a node's process: our own, so no root is
needed). The lookup runs only when the links change, so a healthy run pays nothing for it.
Then a partition is per pair of groups, whichever side dialed: any set of nodes from any
other and from the coordinator, both directions, while connections from anything that is
no group's (the clients) pass untouched: the split Jepsen makes.

What a cut link does (``mode``):

``blackhole`` (a partition's default)
    nothing is forwarded either way, connections stay open; bytes wait in the proxy and the
    kernel buffers until the link heals, then flow on in order: packets dropped and
    retransmitted after the heal, as TCP does. New connections are accepted and stall too.
``drop``
    the link's connections are closed (a reset), new ones closed at once.
``delay``
    every chunk waits ``delay_ms`` before it is forwarded, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from planaria.chaos.net import LOOPBACK, NetError, Placement
from planaria.errors import UsageError

__all__ = [
    "LINK_MODES",
    "LinkTable",
    "ProxyNet",
    "dialer_inode",
    "parse_proc_net_tcp",
]

LINK_MODES: Final = ("blackhole", "drop", "delay")
_CHUNK_BYTES: Final = 65536
_REPLY_TIMEOUT_S: Final = 10.0


def _address(hex_address: str) -> tuple[str, int]:
    """``0100007F:1F90`` (/proc/net/tcp: the IPv4 address in host byte order) -> address."""
    host, port = hex_address.split(":")
    ip = socket.inet_ntoa(struct.pack("=I", int(host, 16)))
    return ip, int(port, 16)


def parse_proc_net_tcp(text: str) -> dict[tuple[tuple[str, int], tuple[str, int]], int]:
    """(local address, remote address) -> socket inode, from ``/proc/net/tcp``."""
    sockets: dict[tuple[tuple[str, int], tuple[str, int]], int] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        sockets[(_address(fields[1]), _address(fields[2]))] = int(fields[9])
    return sockets


def dialer_inode(table: str, peer: tuple[str, int], proxy: tuple[str, int]) -> int | None:
    """The inode of the socket that dialed ``proxy`` from ``peer`` (None: gone already)."""
    return parse_proc_net_tcp(table).get((peer, proxy))


@dataclass
class LinkTable:
    """The state of every cut link: unordered pairs of group names -> (mode, delay_ms)."""

    links: dict[frozenset[str], tuple[str, float]] = field(default_factory=dict)

    def cut(self, a: str, b: str, mode: str = "blackhole", delay_ms: float = 0.0) -> None:
        if mode not in LINK_MODES:
            raise UsageError(f"unknown link mode {mode!r} (known: {', '.join(LINK_MODES)})")
        if a == b:
            raise UsageError(f"a link joins two groups, not {a} with itself")
        if mode == "delay" and not delay_ms > 0:
            raise UsageError(f"a delay is > 0 ms, not {delay_ms}")
        self.links[frozenset((a, b))] = (mode, delay_ms)

    def mode(self, a: str | None, b: str | None) -> tuple[str, float]:
        """``open`` for a link that is not cut, or between anything and no group."""
        if a is None or b is None or a == b:
            return "open", 0.0
        return self.links.get(frozenset((a, b)), ("open", 0.0))

    def to_json(self) -> list[list[object]]:
        return [[*sorted(pair), mode, delay] for pair, (mode, delay) in self.links.items()]

    @classmethod
    def from_json(cls, rows: Iterable[Sequence[Any]]) -> LinkTable:
        table = cls()
        for a, b, mode, delay_ms in rows:
            table.cut(str(a), str(b), str(mode), float(delay_ms))
        return table


# --- the proxy process ----------------------------------------------------------------


@dataclass(eq=False)
class _Connection:
    owner: str  # the group listening behind the proxy port
    inode: int | None  # the dialer's socket
    writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]
    dialer: str | None = None
    resolved: bool = False

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    with contextlib.suppress(OSError):  # the process is gone: it owns nothing
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


class _Proxy:
    def __init__(self) -> None:
        self.table = LinkTable()
        self.groups: dict[str, tuple[int, ...]] = {}
        self.connections: set[_Connection] = set()
        self.changed = asyncio.Event()
        self.servers: list[asyncio.Server] = []

    def _resolve(self, connections: Iterable[_Connection]) -> None:
        """Find the group of each connection's dialer (one scan of the groups' files)."""
        pending = [c for c in connections if not c.resolved and c.inode is not None]
        if not pending:
            return
        owners = {
            inode: name
            for name, pids in self.groups.items()
            for pid in pids
            for inode in _socket_inodes(pid)
        }
        for connection in pending:
            connection.dialer = owners.get(connection.inode or -1)
            # Unknown stays unresolved: a node restarted meanwhile is grouped again later.
            connection.resolved = connection.dialer is not None

    def set_links(self, table: LinkTable) -> None:
        self.table = table
        if table.links:
            self._resolve(self.connections)
        for connection in list(self.connections):
            if self.table.mode(connection.dialer, connection.owner)[0] == "drop":
                connection.abort()
        self.changed.set()
        self.changed = asyncio.Event()

    async def listen(self, owner: str, host: str, upstream: tuple[str, int]) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(owner, upstream, reader, writer)

        server = await asyncio.start_server(accept, host, 0)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _serve(
        self,
        owner: str,
        upstream: tuple[str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        peer = writer.get_extra_info("peername")
        here = writer.get_extra_info("sockname")
        with open("/proc/net/tcp") as proc_net_tcp:
            inode = dialer_inode(proc_net_tcp.read(), tuple(peer[:2]), tuple(here[:2]))
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.transport.abort()  # nothing listens behind: a refused connection
            return
        connection = _Connection(owner, inode, (writer, up_writer))
        if self.table.links:
            self._resolve([connection])
        if self.table.mode(connection.dialer, owner)[0] == "drop":
            connection.abort()
            return
        self.connections.add(connection)
        try:
            await asyncio.gather(
                self._pump(connection, reader, up_writer),
                self._pump(connection, up_reader, writer),
            )
        finally:
            self.connections.discard(connection)
            connection.abort()

    async def _pump(
        self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(_CHUNK_BYTES):
                while True:
                    mode, delay_ms = self.table.mode(connection.dialer, connection.owner)
                    if mode == "open":
                        break
                    if mode == "delay":
                        await asyncio.sleep(delay_ms / 1000)
                        break
                    if mode == "drop":
                        return  # set_links aborted the connection
                    await self.changed.wait()  # blackhole: hold the bytes until a change
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # a side went away: the connection ends, as it would without the proxy
        finally:
            connection.abort()

    async def command(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "listen":
            upstream = (str(request["upstream_host"]), int(request["upstream_port"]))
            port = await self.listen(str(request["owner"]), str(request["host"]), upstream)
            return {"port": port}
        if op == "group":
            self.groups[str(request["name"])] = tuple(int(p) for p in request["pids"])
            return {}
        if op == "links":
            self.set_links(LinkTable.from_json(request["links"]))
            return {}
        raise UsageError(f"unknown proxy command {op!r}")


async def _main() -> None:
    proxy = _Proxy()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():  # stdin closed: the harness is gone
        try:
            reply = await proxy.command(json.loads(line))
        except (UsageError, KeyError, ValueError, TypeError, OSError) as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps({"ok": "error" not in reply, **reply}) + "\n")
        sys.stdout.flush()


# --- the harness's side -----------------------------------------------------------------


class ProxyNet:
    """The proxy process and its links (see the module docstring). Before the target
    starts, :meth:`listen` puts a proxy port in front of each listening port; the target
    tells its nodes to advertise those."""

    method = "proxy"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self._table = LinkTable()
        self._process: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "planaria.chaos.proxy"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the harness, which closes it
        )

    def _call(self, **request: Any) -> dict[str, Any]:
        with self._lock:
            process = self._process
            if process is None or process.stdin is None or process.stdout is None:
                raise NetError("the proxy is closed")
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except OSError as exc:
                raise NetError(f"the proxy is gone: {exc}") from exc
            if not line:
                raise NetError(f"the proxy exited ({process.poll()})")
            reply: dict[str, Any] = json.loads(line)
            if not reply.get("ok"):
                raise NetError(f"proxy {request.get('op')}: {reply.get('error')}")
            return reply

    def placement(self) -> Placement:
        return LOOPBACK

    def listen(self, owner: str, upstream_port: int, upstream_host: str = "127.0.0.1") -> int:
        """A new proxy port in front of ``upstream``, whose listener is group ``owner``."""
        reply = self._call(
            op="listen",
            owner=owner,
            host=self.host,
            upstream_host=upstream_host,
            upstream_port=upstream_port,
        )
        return int(reply["port"])

    def group(self, name: str, pids: Iterable[int], ports: Sequence[int] = ()) -> None:
        self._call(op="group", name=name, pids=list(pids))

    def partition(
        self,
        side_a: Sequence[str],
        side_b: Sequence[str],
        mode: str = "blackhole",
        delay_ms: float = 0.0,
    ) -> None:
        for a in side_a:
            for b in side_b:
                self._table.cut(a, b, mode, delay_ms)
        self._call(op="links", links=self._table.to_json())

    def heal(self) -> None:
        self._table = LinkTable()
        self._call(op="links", links=[])

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()  # the proxy ends at the end of its input
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    asyncio.run(_main())
