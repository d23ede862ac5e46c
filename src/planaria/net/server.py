"""An asyncio RESP server with a pluggable handler: the node's client-facing socket.

The server parses requests (:mod:`.resp`, :mod:`.commands`), answers connection-level ones
itself (PING, READONLY, COMMAND, CLIENT, CONFIG GET, HELLO, SELECT, QUIT, CLUSTER KEYSLOT)
and hands the rest (:data:`~planaria.net.commands.NodeRequest`: data commands, INFO, CLUSTER
SLOTS/SHARDS/NODES/INFO/MYID, BACKUP) to ``handler(state, request)``, which returns the reply bytes
or an awaitable of them. Replies go out in request order, however the awaitables finish.

Bounds, so a flood of clients or requests cannot exhaust memory:

- ``connections_max``: one more connection is answered ``-ERR max number of clients
  reached`` and closed, as Redis does;
- ``pipeline_depth_max``: a connection with that many unanswered requests is not read from
  until some are answered (requests already received wait, unparsed, in its buffer);
- a connection whose socket buffer is full (a client that does not read) is not read from;
- ``request_bytes_max`` bounds one request on the wire (a longer one is a protocol error),
  every length is checked before anything is built for it, and a connection holds no more
  unread bytes than one request and one read (:class:`~planaria.net.resp.RequestReader`);
  keys over ``key_bytes_max`` and values over ``value_bytes_max`` get an error reply.

Malformed RESP gets ``-ERR Protocol error: ...`` and that connection is closed; nothing else
is affected. A handler that raises gets its request an error reply (and a log record).

Every request is counted (:class:`CommandStats`): by command name (a name outside the
command table counts as ``unknown``, so the label set stays bounded) and outcome, with its
time from parse to reply in a fixed set of latency buckets. The node's metrics read them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeAlias, cast

from planaria.errors import Moved, UsageError
from planaria.net import resp
from planaria.net.commands import (
    COMMANDS,
    ClientCommand,
    ClusterKeyslot,
    CommandError,
    CommandQuery,
    ConfigGet,
    ConnectionState,
    Echo,
    Hello,
    Limits,
    NodeRequest,
    Ping,
    Quit,
    ReadOnly,
    ReadWrite,
    Select,
    answer_local,
    parse_request,
)

__all__ = ["LATENCY_BOUNDS_S", "CommandStats", "Handler", "RespServer"]

log = logging.getLogger(__name__)

Handler: TypeAlias = Callable[[ConnectionState, NodeRequest], "bytes | Awaitable[bytes]"]

_LOCAL = (
    Ping, Echo, ReadOnly, ReadWrite, Quit, Select, Hello, ClusterKeyslot, CommandQuery,
    ClientCommand, ConfigGet,
)  # fmt: skip
MAX_CLIENTS_REPLY = resp.error("ERR max number of clients reached")
# The upper bounds of the command latency buckets, in seconds (the last bucket: beyond).
LATENCY_BOUNDS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# A request's name as sent (any case) to its label: only the command table's names.
_NAMES: dict[bytes, str] = {}
UNKNOWN_COMMAND = "unknown"


def _command_name(raw: bytes) -> str:
    name = _NAMES.get(raw)
    if name is None:
        name = raw.lower().decode("latin-1")
        if name not in COMMANDS:
            return UNKNOWN_COMMAND
        if len(_NAMES) < 4 * len(COMMANDS):  # a few spellings a name; bounded
            _NAMES[raw] = name
    return name


class CommandStats:
    """Requests by command and outcome (``ok`` or ``error``: an error reply) and their
    latency, as plain counters the node's metrics read when scraped. Bounded: one row a
    command of the table (and ``unknown``). A row (one list, so a request costs one
    lookup): ``[ok, errors, latency sum in seconds, then the count of each bucket of
    LATENCY_BOUNDS_S (not cumulative) and one for beyond the last bound]``."""

    OK: Final = 0
    ERRORS: Final = 1
    LATENCY_SUM_S: Final = 2
    BUCKETS: Final = 3

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}

    def record(self, name: str, error: bool, seconds: float) -> None:
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = [0.0] * (4 + len(LATENCY_BOUNDS_S))
        row[self.ERRORS if error else self.OK] += 1
        row[self.LATENCY_SUM_S] += seconds
        row[self.BUCKETS + bisect_left(LATENCY_BOUNDS_S, seconds)] += 1


def _error_for(exc: BaseException) -> bytes:
    if isinstance(exc, CommandError):
        return exc.reply
    if isinstance(exc, Moved):
        return resp.error(f"MOVED {exc.slot} {exc.address}")
    if isinstance(exc, UsageError):
        return resp.error(f"ERR {exc}")
    log.error("RESP handler failed", exc_info=exc)
    return resp.error(f"ERR internal error: {type(exc).__name__}: {exc}")


class RespServer:
    """``async with RespServer(handler) as server:`` listens on ``server.port``."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        connections_max: int = 10_000,
        pipeline_depth_max: int = 1024,
        key_bytes_max: int = 8 * 1024,
        value_bytes_max: int = 1024 * 1024,
        request_bytes_max: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if connections_max < 1 or pipeline_depth_max < 1:
            raise UsageError("connections_max and pipeline_depth_max must be >= 1")
        self.handler = handler
        self.host = host
        self.port = port
        self.connections_max = connections_max
        self.pipeline_depth_max = pipeline_depth_max
        self.limits = Limits(key_bytes_max, value_bytes_max)
        # Room for the largest valid request (SET key value IFEQ old), so that an oversized
        # key or value gets its own error reply rather than a protocol error.
        self.request_bytes_max = request_bytes_max or (
            key_bytes_max + 2 * value_bytes_max + 64 * 1024
        )
        self.settings: dict[str, str] = {
            "save": "",
            "appendonly": "no",
            "databases": "1",
            "cluster-enabled": "yes",
            "maxclients": str(connections_max),
            "proto-max-bulk-len": str(self.request_bytes_max),
            **(settings or {}),
        }
        self._connections: set[_Connection] = set()
        self._ids = itertools.count(1)
        self.stats = CommandStats()
        self._server: asyncio.Server | None = None

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        # uvloop's Server.sockets is a list, not typeshed's tuple (compiled code checks).
        self.port = int(cast(Any, self._server).sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.abort()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> RespServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _Connection(asyncio.Protocol):
    def __init__(self, server: RespServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._reader = resp.RequestReader(request_bytes_max=server.request_bytes_max)
        self.state = ConnectionState(next(server._ids))
        # Unanswered requests in order: a reply ready to write, or one still being computed.
        self._pending: deque[bytes | asyncio.Future[bytes]] = deque()
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False  # no more requests: close once the pending replies are out
        self._lost = False
        # Replies ready while handling one read, written with one call (one send syscall).
        self._out: list[bytes] = []

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self._transport = cast(asyncio.Transport, transport)
        if len(self._server._connections) >= self._server.connections_max:
            self._lost = True
            self._transport.write(MAX_CLIENTS_REPLY)
            self._transport.close()
            return
        self._server._connections.add(self)
        peer = transport.get_extra_info("peername")
        self.state.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._lost:
            return
        self._reader.feed(data)
        self._take_requests()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server._connections.discard(self)
        self._pending.clear()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._take_requests()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- requests in, replies out, in order

    def _take_requests(self) -> None:
        depth_max = self._server.pipeline_depth_max
        while not (self._closing or self._writing_paused) and len(self._pending) < depth_max:
            try:
                command = self._reader.next_command()
            except resp.RespProtocolError as exc:
                self._reply(exc.reply)
                self._close_after_replies()
                break
            if command is None:
                break
            self._dispatch(command)
        self._write_out()
        self._update_reading()

    def _dispatch(self, command: list[bytes]) -> None:
        started_s = time.perf_counter()
        name = _command_name(command[0])
        try:
            request = parse_request(command, self._server.limits)
            if isinstance(request, _LOCAL):
                reply = answer_local(request, self.state, self._server.settings)
                self._reply(reply)
                self._server.stats.record(name, reply[:1] == b"-", time.perf_counter() - started_s)
                if self.state.closing:
                    self._close_after_replies()
                return
            result = self._server.handler(self.state, request)
        except Exception as exc:
            # CommandError is the client's mistake; anything else is logged as a bug.
            self._reply(_error_for(exc))
            self._server.stats.record(name, True, time.perf_counter() - started_s)
            return
        if isinstance(result, bytes):
            self._reply(result)
            self._server.stats.record(name, result[:1] == b"-", time.perf_counter() - started_s)
            return
        future = asyncio.ensure_future(result)
        self._pending.append(future)
        future.add_done_callback(functools.partial(self._on_done, name, started_s))

    def _reply(self, reply: bytes) -> None:
        if self._pending:
            self._pending.append(reply)
        else:
            self._out.append(reply)

    def _write_out(self) -> None:
        out = self._out
        if out and self._transport is not None and not self._lost:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _on_done(self, name: str, started_s: float, future: asyncio.Future[Any]) -> None:
        error = future.cancelled() or future.exception() is not None or future.result()[:1] == b"-"
        self._server.stats.record(name, error, time.perf_counter() - started_s)
        if self._lost:
            if not future.cancelled():
                future.exception()  # retrieved: the client is gone, nobody wants the reply
            return
        self._flush()
        if self._closing:
            self._close_after_replies()
        else:
            self._take_requests()

    def _flush(self) -> None:
        pending = self._pending
        out = self._out
        while pending:
            head = pending[0]
            if isinstance(head, bytes):
                out.append(head)
            elif head.done():
                if head.cancelled():
                    out.append(resp.error("ERR request cancelled"))
                elif head.exception() is not None:
                    out.append(_error_for(head.exception()))  # type: ignore[arg-type]
                else:
                    out.append(head.result())
            else:
                break
            pending.popleft()
        self._write_out()

    def _close_after_replies(self) -> None:
        self._closing = True
        self._write_out()
        if not self._pending and self._transport is not None:
            self._transport.close()  # writes what is buffered, then closes
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._lost or transport.is_closing():
            return
        stop = (
            self._closing
            or self._writing_paused
            or len(self._pending) >= self._server.pipeline_depth_max
        )
        if stop and not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
        elif not stop and self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False
