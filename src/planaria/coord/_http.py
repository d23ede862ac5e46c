"""A small asyncio HTTP/1.1 JSON client for etcd's gRPC gateway (``POST /v3/...``).

Unary calls reuse keep-alive connections (one per concurrent call); streams (watches) get a
connection of their own. Several endpoints: a call that cannot connect to one, or that gets no
answer in time, moves on to the next endpoint for the following calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from planaria.errors import UsageError

__all__ = ["GatewayError", "HttpUnreachable", "JsonHttp"]

RESPONSE_HEAD_BYTES_MAX = 64 * 1024
RESPONSE_BODY_BYTES_MAX = 64 * 1024 * 1024


_BROKEN = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
           TimeoutError)  # fmt: skip


class HttpUnreachable(Exception):
    """No answer (connection refused or dropped, or a timeout): outcome unknown."""


class GatewayError(Exception):
    """The gateway answered with an error (``code`` is the gRPC status code)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"HTTP {status}, gRPC code {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()

    async def request(self, host: str, path: str, body: bytes) -> tuple[int, dict[str, str]]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        if len(raw) > RESPONSE_HEAD_BYTES_MAX:
            raise HttpUnreachable("response head too long")
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpUnreachable(f"not an HTTP response: {lines[0]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def chunks(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The body, piece by piece (chunked or with a length)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size > RESPONSE_BODY_BYTES_MAX:
                    raise HttpUnreachable("response chunk too large")
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers (the gateway sends gRPC's)
                    return
                data = await self.reader.readexactly(size + 2)
                yield data[:-2]
        length = int(headers.get("content-length", "0"))
        if length > RESPONSE_BODY_BYTES_MAX:
            raise HttpUnreachable("response body too large")
        yield await self.reader.readexactly(length)


def _decode(status: int, body: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        raise HttpUnreachable(f"not JSON ({exc}): {body[:80]!r}") from None
    if not isinstance(reply, dict):
        raise HttpUnreachable(f"not a JSON object: {body[:80]!r}")
    if "error" in reply and isinstance(reply["error"], dict):
        reply = reply["error"]  # a stream's error message
        status = max(status, 500)
    if status != 200 or ("code" in reply and "message" in reply and "result" not in reply):
        raise GatewayError(status, int(reply.get("code", 2)), str(reply.get("message", "")))
    return reply


class JsonHttp:
    """POST JSON to ``endpoints`` (``host:port`` strings), failing over between them."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], *, timeout_s: float) -> None:
        if not endpoints:
            raise UsageError("no endpoints")
        self._endpoints = list(endpoints)
        self._current = 0
        self._idle: list[_Connection] = []
        self._timeout_s = timeout_s

    def _rotate(self, index: int) -> None:
        if index == self._current:
            self._current = (self._current + 1) % len(self._endpoints)
            for connection in self._idle:
                connection.close()
            self._idle.clear()

    async def _open(self) -> tuple[_Connection, int]:
        index = self._current
        host, port = self._endpoints[index]
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            self._rotate(index)
            raise HttpUnreachable(f"{host}:{port}: {exc}") from None
        return _Connection(reader, writer), index

    async def _open_in_time(self, path: str) -> tuple[_Connection, int]:
        # asyncio.timeout: 3.11's asyncio.wait_for can swallow a cancellation.
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._open()
        except TimeoutError:
            raise HttpUnreachable(f"{path}: connect timed out") from None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One unary call; ``HttpUnreachable`` or ``GatewayError`` if it failed."""
        payload = json.dumps(body).encode()
        connection, index = (self._idle.pop(), self._current) if self._idle else (None, -1)
        if connection is None:
            connection, index = await self._open_in_time(path)
        host, port = self._endpoints[index]
        try:
            async with asyncio.timeout(self._timeout_s):
                status, headers = await connection.request(f"{host}:{port}", path, payload)
                data = b"".join([chunk async for chunk in connection.chunks(headers)])
        except BaseException as exc:
            # Also when the caller gave up waiting (cancelled): the connection is mid-reply,
            # and the member is likely slow or paused (TCP says nothing): try the next one.
            connection.close()
            self._rotate(index)
            if isinstance(exc, _BROKEN):
                raise HttpUnreachable(f"{host}:{port}{path}: {type(exc).__name__} {exc}") from None
            raise
        if headers.get("connection", "").lower() == "close" or index != self._current:
            connection.close()
        else:
            self._idle.append(connection)
        return _decode(status, data)

    async def first_of_stream(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one message on a streaming call and return the first reply (lease keep-alive);
        the connection is closed after."""
        stream = self.stream(path, body)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await anext(stream)
        except StopAsyncIteration:
            raise HttpUnreachable(f"{path}: the stream ended without a reply") from None
        finally:
            await stream.aclose()

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """A streaming call on a connection of its own: yields each JSON message."""
        connection, index = await self._open_in_time(path)
        host, port = self._endpoints[index]
        answered = False
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    payload = json.dumps(body).encode()
                    status, headers = await connection.request(f"{host}:{port}", path, payload)
            except TimeoutError:
                raise HttpUnreachable(f"{host}:{port}{path}: no response") from None
            answered = True
            pending = b""
            async for chunk in connection.chunks(headers):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _decode(status, line)
            if pending.strip():
                yield _decode(status, pending)
        except _BROKEN as exc:
            raise HttpUnreachable(f"{host}:{port}{path}: {type(exc).__name__} {exc}") from None
        finally:
            connection.close()
            if not answered:  # no reply (or the caller stopped waiting for one): next member
                self._rotate(index)

    async def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
