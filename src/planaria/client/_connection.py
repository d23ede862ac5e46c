"""Connections to one node (sync sockets and asyncio streams, replies parsed by hiredis) and
small per-node pools of them.

What a failure means is decided here, once: a failure to connect means the request was never
sent (``ConnectFailed``, a ``ConnectionError``); any failure after sending began (a timeout, a
reset, a closed connection, garbage) means its outcome is unknown (``UnknownOutcome``), and the
connection is dropped, since a late reply would answer the next request.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections import deque

import hiredis

from planaria.address import parse_address
from planaria.client._protocol import encode_command
from planaria.errors import UnknownOutcome

__all__ = ["AsyncConnection", "AsyncPool", "ConnectFailed", "Connection", "Pool"]

_READ_BYTES = 64 * 1024
_PING = encode_command([b"PING"])
_READONLY = encode_command([b"READONLY"])


class ConnectFailed(ConnectionError):
    """Could not connect (or set up) a connection: no request was sent on it."""


def _lost(address: str, error: BaseException) -> UnknownOutcome:
    detail = "timed out" if isinstance(error, TimeoutError) else f"{type(error).__name__}: {error}"
    return UnknownOutcome(f"{address}: {detail} after the request was sent; its outcome is unknown")


def _closed() -> ConnectionResetError:
    return ConnectionResetError("the node closed the connection")


def _check_setup_reply(address: str, reply: object) -> None:
    if reply != b"OK":
        raise ConnectFailed(f"{address}: READONLY was answered {reply!r}")


def _readable(fd: int) -> bool:
    # Readable while idle means EOF, an error, or junk: the connection is unusable.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


# --------------------------------------------------------------------------- sync


class Connection:
    """One blocking socket to one node; one request at a time."""

    __slots__ = ("_reader", "_sock", "_timeout_s", "address", "host", "last_used_s")

    def __init__(self, address: str, sock: socket.socket) -> None:
        self.address = address
        self.host = parse_address(address)[0]
        self._sock = sock
        self._reader = hiredis.Reader()
        self._timeout_s: float | None = None
        self.last_used_s = time.monotonic()

    @classmethod
    def open(cls, address: str, timeout_s: float, *, readonly: bool) -> Connection:
        host, port = parse_address(address)
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as error:
            raise ConnectFailed(f"{address}: cannot connect: {error}") from error
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = cls(address, sock)
        if readonly:
            try:
                reply = connection.request(_READONLY, timeout_s)
            except UnknownOutcome as error:
                raise ConnectFailed(str(error)) from error
            _check_setup_reply(address, reply)
        return connection

    def request(self, payload: bytes, timeout_s: float) -> object:
        """Send ``payload`` and return its reply (an error reply is a ``hiredis.ReplyError``
        value); raise UnknownOutcome (and close) when no whole reply came in ``timeout_s``."""
        sock = self._sock
        reader = self._reader
        try:
            if timeout_s != self._timeout_s:
                sock.settimeout(timeout_s)
                self._timeout_s = timeout_s
            sock.sendall(payload)
            ends_s = 0.0
            reply = reader.gets()
            while reply is False:
                if ends_s == 0.0:
                    ends_s = time.monotonic() + timeout_s
                else:  # a reply in several pieces: the whole of it must fit in timeout_s
                    self._timeout_s = None
                    sock.settimeout(max(ends_s - time.monotonic(), 1e-6))
                data = sock.recv(_READ_BYTES)
                if not data:
                    raise _closed()
                reader.feed(data)
                reply = reader.gets()
        except (OSError, hiredis.ProtocolError) as error:
            self.close()
            raise _lost(self.address, error) from error
        self.last_used_s = time.monotonic()
        return reply

    def closed_by_peer(self) -> bool:
        """Whether the idle connection was closed (or sent something unasked): checked before
        reuse, so a request is not sent into a connection the node already dropped."""
        return _readable(self._sock.fileno())

    def close(self) -> None:
        self._sock.close()


class Pool:
    """Idle connections to one node, opened lazily; at most ``idle_max`` are kept. A
    connection idle for ``health_check_s`` or longer answers a PING before it is reused."""

    __slots__ = ("_closed", "_idle", "address", "health_check_s", "idle_max", "readonly")

    def __init__(
        self, address: str, *, readonly: bool, idle_max: int, health_check_s: float
    ) -> None:
        self.address = address
        self.readonly = readonly
        self.idle_max = idle_max
        self.health_check_s = health_check_s
        self._idle: deque[Connection] = deque()
        self._closed = False

    def _acquire(self, timeout_s: float) -> Connection:
        idle = self._idle
        while idle:
            try:
                connection = idle.pop()
            except IndexError:  # another thread took the last one
                break
            if connection.closed_by_peer():
                connection.close()
                continue
            if time.monotonic() - connection.last_used_s < self.health_check_s:
                return connection
            try:
                if connection.request(_PING, timeout_s) == b"PONG":
                    return connection
            except UnknownOutcome:
                continue  # it was dead: try the next one (PING changes nothing)
            connection.close()
        return Connection.open(self.address, timeout_s, readonly=self.readonly)

    def request(self, payload: bytes, timeout_s: float) -> object:
        connection = self._acquire(timeout_s)
        reply = connection.request(payload, timeout_s)  # closes itself when it fails
        if self._closed or len(self._idle) >= self.idle_max:
            connection.close()
        else:
            self._idle.append(connection)
        return reply

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()


# --------------------------------------------------------------------------- asyncio


class AsyncConnection:
    """One asyncio stream to one node; one request at a time."""

    __slots__ = ("_reader", "_stream", "_writer", "address", "host", "last_used_s")

    def __init__(
        self, address: str, stream: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.address = address
        self.host = parse_address(address)[0]
        self._stream = stream
        self._writer = writer
        self._reader = hiredis.Reader()
        self.last_used_s = time.monotonic()

    @classmethod
    async def open(cls, address: str, timeout_s: float, *, readonly: bool) -> AsyncConnection:
        host, port = parse_address(address)
        try:
            async with asyncio.timeout(timeout_s):
                stream, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as error:
            raise ConnectFailed(f"{address}: cannot connect: {error!r}") from error
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = cls(address, stream, writer)
        if readonly:
            try:
                reply = await connection.request(_READONLY, timeout_s)
            except UnknownOutcome as error:
                raise ConnectFailed(str(error)) from error
            _check_setup_reply(address, reply)
        return connection

    async def request(self, payload: bytes, timeout_s: float) -> object:
        reader = self._reader
        try:
            async with asyncio.timeout(timeout_s):
                self._writer.write(payload)
                await self._writer.drain()
                reply = reader.gets()
                while reply is False:
                    data = await self._stream.read(_READ_BYTES)
                    if not data:
                        raise _closed()
                    reader.feed(data)
                    reply = reader.gets()
        except (OSError, TimeoutError, hiredis.ProtocolError) as error:
            self.close()
            raise _lost(self.address, error) from error
        except BaseException:
            self.close()  # cancelled mid-request: a late reply must not answer the next one
            raise
        self.last_used_s = time.monotonic()
        return reply

    def closed_by_peer(self) -> bool:
        """As :meth:`Connection.closed_by_peer` (the loop may not have read the EOF yet)."""
        if self._stream.at_eof() or self._writer.is_closing():
            return True
        sock = self._writer.get_extra_info("socket")
        return sock is not None and _readable(sock.fileno())

    def close(self) -> None:
        self._writer.close()


class AsyncPool:
    """The asyncio twin of :class:`Pool` (one event loop: no locks needed)."""

    __slots__ = ("_closed", "_idle", "address", "health_check_s", "idle_max", "readonly")

    def __init__(
        self, address: str, *, readonly: bool, idle_max: int, health_check_s: float
    ) -> None:
        self.address = address
        self.readonly = readonly
        self.idle_max = idle_max
        self.health_check_s = health_check_s
        self._idle: deque[AsyncConnection] = deque()
        self._closed = False

    async def _acquire(self, timeout_s: float) -> AsyncConnection:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.closed_by_peer():
                connection.close()
                continue
            if time.monotonic() - connection.last_used_s < self.health_check_s:
                return connection
            try:
                if await connection.request(_PING, timeout_s) == b"PONG":
                    return connection
            except UnknownOutcome:
                continue
            connection.close()
        return await AsyncConnection.open(self.address, timeout_s, readonly=self.readonly)

    async def request(self, payload: bytes, timeout_s: float) -> object:
        connection = await self._acquire(timeout_s)
        reply = await connection.request(payload, timeout_s)
        if self._closed or len(self._idle) >= self.idle_max:
            connection.close()
        else:
            self._idle.append(connection)
        return reply

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
