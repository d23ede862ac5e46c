"""``RemoteCoordinator``: the :class:`Coordinator` interface over the embedded server's
protocol (``planaria.coord.server``), for ``planaria://host:port``.

- One TCP connection, opened on the first call and again after it is lost (a call made
  while disconnected tries to connect once, within its own timeout). While watches are
  open, a background task reconnects with exponential backoff and full jitter
  (``planaria.retry``), re-creates them on the server and gives each a ``RESET`` (events
  may have been missed: re-read).
- Every call has a timeout (``request_timeout_s``, connecting included): then, or when the
  connection drops before the reply, it raises ``CoordinatorUnavailable`` (for a changing
  call: unknown outcome; re-read before deciding).
- Sessions are kept alive by the caller (:meth:`keep_alive`); losing the connection never
  ends a session, only the server's TTL does.
- ``campaign`` enters the candidacy on the server, then waits for leadership with a watch
  on the election prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
from collections.abc import Callable, Mapping, Sequence

from planaria.coord._watch import WATCH_BUFFER_MAX, QueuedWatch
from planaria.coord.errors import CoordinatorUnavailable, LeadershipLost, SessionExpired
from planaria.coord.interface import Coordinator, Watch
from planaria.coord.layout import Registration, decode_registration, encode_registration, member_key
from planaria.coord.server import (
    COORD_CODEC,
    CampaignRequest,
    CloseSessionRequest,
    Event,
    GetRequest,
    KeepAliveRequest,
    ListRequest,
    MultiRequest,
    OpenSessionRequest,
    RegisterRequest,
    Reply,
    Request,
    ResignRequest,
    SessionAliveRequest,
    UnwatchRequest,
    WatchRequest,
    error_from_wire,
    item_from_wire,
    ops_to_wire,
)
from planaria.coord.types import (
    Candidate,
    EventKind,
    SessionId,
    TxnOp,
    VersionedValue,
    WatchEvent,
    candidate_key,
    candidate_token,
    leader_of,
    validate_key,
    validate_ops,
    validate_prefix,
    validate_session_id,
    validate_ttl_ms,
    validate_value,
)
from planaria.errors import InternalError, UsageError
from planaria.net.frame import FrameDecoder, FrameError
from planaria.retry import Jitter, Retrying

__all__ = ["WATCH_BUFFER_MAX", "RemoteCoordinator"]

log = logging.getLogger("planaria.coord.remote")

# Events a watch holds for a slow reader before they turn into one RESET.


class _RemoteWatch(QueuedWatch):
    def __init__(self, coordinator: RemoteCoordinator, prefix: str) -> None:
        super().__init__(prefix)
        self._coordinator = coordinator

    def deliver(self, event: WatchEvent) -> None:
        self._push(event)

    def end(self) -> None:
        self._end()

    async def close(self) -> None:
        if not self.closed:
            self.end()
            await self._coordinator._unwatch(self)


class _Link:
    """One live connection: replies are matched to requests by id, events to watches."""

    def __init__(
        self,
        coordinator: RemoteCoordinator,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.coordinator = coordinator
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.watches: dict[int, _RemoteWatch] = {}  # server watch id -> watch
        # Events that arrived before the reply creating their watch was processed.
        self.orphans: dict[int, list[WatchEvent]] = {}
        self.alive = True
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        decoder = FrameDecoder(COORD_CODEC)
        why = "the coordinator closed the connection"
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                decoder.feed(data)
                for message in decoder.messages():
                    self._dispatch(message)
        except (ConnectionError, OSError) as exc:
            why = f"the connection to the coordinator failed: {exc}"
        except FrameError as exc:
            why = f"the coordinator sent a bad frame: {exc}"
            log.warning("%s", why)
        finally:
            self.shut(why)

    def _dispatch(self, message: object) -> None:
        if isinstance(message, Reply):
            future = self.pending.pop(message.rid, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Event):
            event = WatchEvent(EventKind(message.kind), message.key, message.version)
            watch = self.watches.get(message.watch_id)
            if watch is not None:
                watch.deliver(event)
            else:
                self.orphans.setdefault(message.watch_id, []).append(event)
        else:
            raise FrameError(f"protocol error: unexpected {type(message).__name__}")

    def attach(self, watch_id: int, watch: _RemoteWatch) -> None:
        self.watches[watch_id] = watch
        for event in self.orphans.pop(watch_id, []):
            watch.deliver(event)

    def shut(self, why: str) -> None:
        if not self.alive:
            return
        self.alive = False
        self.writer.close()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(CoordinatorUnavailable(why))
        self.pending.clear()
        self.coordinator._link_lost(self)

    async def call(self, request: Request, timeout_s: float) -> Reply:
        if not self.alive:
            raise CoordinatorUnavailable("the connection to the coordinator is closed")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.pending[request.rid] = future
        try:
            self.writer.write(COORD_CODEC.frame(request))
            async with asyncio.timeout(timeout_s):
                await self.writer.drain()
                return await future
        except TimeoutError:
            raise CoordinatorUnavailable(
                f"the coordinator did not answer within {timeout_s:.3f}s"
            ) from None
        except ConnectionError as exc:
            raise CoordinatorUnavailable(
                f"the connection to the coordinator failed: {exc}"
            ) from exc
        finally:
            self.pending.pop(request.rid, None)


class RemoteCoordinator(Coordinator):
    """A client of ``planaria coordinator`` at ``host:port``; see the module docstring.

    Not shared between event loops. ``rng`` (a seeded ``random.Random``) drives the
    reconnect jitter.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        request_timeout_s: float = 2.0,
        reconnect_wait_initial_s: float = 0.02,
        reconnect_wait_max_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise UsageError(f"host must be a non-empty str, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise UsageError(f"port must be an int in 1..65535, not {port!r}")
        if not request_timeout_s > 0:
            raise UsageError("request_timeout_s must be > 0")
        self.host = host
        self.port = port
        self.request_timeout_s = request_timeout_s
        self._reconnect = Retrying(
            name=f"coordinator {host}:{port}",
            attempts_max=2**62,
            timeout_s=None,
            wait_initial_s=reconnect_wait_initial_s,
            wait_max_s=reconnect_wait_max_s,
            jitter=Jitter.FULL,
            retry_on=(CoordinatorUnavailable,),
            rng=rng if rng is not None else random.Random(),
        )
        self._rids = itertools.count(1)
        self._link: _Link | None = None
        self._connecting = asyncio.Lock()
        self._watches: list[_RemoteWatch] = []
        self._reconnect_task: asyncio.Task[None] | None = None
        self._my_sessions: set[SessionId] = set()
        self._replies_to_lose = 0
        self._closed = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.alive

    # --- plumbing ------------------------------------------------------------------------

    async def _ensure_link(self) -> _Link:
        if self._closed:
            raise UsageError("this coordinator is closed")
        link = self._link
        if link is not None and link.alive:
            return link
        async with self._connecting:
            link = self._link
            if link is not None and link.alive:
                return link
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise CoordinatorUnavailable(
                    f"cannot reach the coordinator at {self.address}: {exc}"
                ) from exc
            link = _Link(self, reader, writer)
            try:
                for watch in list(self._watches):
                    reply = _checked(
                        await link.call(
                            WatchRequest(self._rid(), watch.prefix), self.request_timeout_s
                        )
                    )
                    link.attach(_number(reply), watch)
                    watch.deliver(WatchEvent(EventKind.RESET, watch.prefix))
            except BaseException:
                link.shut("re-creating the watches failed")
                raise
            self._link = link
            log.info("connected to the coordinator at %s", self.address)
            return link

    def _rid(self) -> int:
        return next(self._rids)

    def _link_lost(self, link: _Link) -> None:
        if self._link is link:
            self._link = None
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._watches and not self._closed and self._reconnect_task is None:
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        try:
            async for attempt in self._reconnect:
                with attempt:
                    await asyncio.wait_for(self._ensure_link(), self.request_timeout_s)
        except UsageError:
            pass  # closed meanwhile
        finally:
            self._reconnect_task = None

    async def _call(self, make: Callable[[int], Request], *, changing: bool = False) -> Reply:
        """Send one request and wait for its reply, within ``request_timeout_s`` in all."""
        link, deadline = await self._connected()
        return await self._call_on(link, make, deadline, changing=changing)

    async def _connected(self) -> tuple[_Link, float]:
        """A live link, and the deadline of the call that asked for it."""
        if self._closed:
            raise UsageError("this coordinator is closed")
        deadline = asyncio.get_running_loop().time() + self.request_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                return await self._ensure_link(), deadline
        except TimeoutError:
            raise CoordinatorUnavailable(
                f"cannot reach the coordinator at {self.address} in time"
            ) from None

    async def _call_on(
        self, link: _Link, make: Callable[[int], Request], deadline: float, *, changing: bool
    ) -> Reply:
        left_s = max(deadline - asyncio.get_running_loop().time(), 0.001)
        reply = await link.call(make(self._rid()), left_s)
        if changing and self._replies_to_lose > 0:
            self._replies_to_lose -= 1
            raise CoordinatorUnavailable("the reply was lost (injected): outcome unknown")
        return _checked(reply)

    # --- fault injection -----------------------------------------------------------------

    def lose_replies(self, count: int = 1) -> None:
        """Apply the next ``count`` changing calls but raise ``CoordinatorUnavailable``."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise UsageError(f"count must be an int >= 0, not {count!r}")
        self._replies_to_lose = count

    def drop_connection(self) -> None:
        """Close the connection now (as a network failure would); the next call reconnects."""
        if self._link is not None:
            self._link.shut("connection dropped by the client")

    # --- sessions ------------------------------------------------------------------------

    async def open_session(self, owner: str, ttl_ms: float) -> SessionId:
        if not isinstance(owner, str) or not owner:
            raise UsageError(f"owner must be a non-empty str, not {owner!r}")
        ttl = validate_ttl_ms(ttl_ms)
        reply = await self._call(lambda rid: OpenSessionRequest(rid, owner, ttl), changing=True)
        session = SessionId(_number(reply))
        self._my_sessions.add(session)
        return session

    async def keep_alive(self, session: SessionId) -> None:
        sid = validate_session_id(session)
        await self._call(lambda rid: KeepAliveRequest(rid, sid), changing=True)

    async def close_session(self, session: SessionId) -> None:
        sid = validate_session_id(session)
        await self._call(lambda rid: CloseSessionRequest(rid, sid), changing=True)
        self._my_sessions.discard(sid)

    async def _session_alive(self, session: SessionId) -> bool:
        return bool(_number(await self._call(lambda rid: SessionAliveRequest(rid, session))))

    # --- keys ----------------------------------------------------------------------------

    async def get(self, key: str) -> VersionedValue | None:
        key = validate_key(key)
        reply = await self._call(lambda rid: GetRequest(rid, key))
        return item_from_wire(reply.items[0]) if reply.items else None

    async def list_prefix(self, prefix: str) -> list[VersionedValue]:
        prefix = validate_prefix(prefix)
        reply = await self._call(lambda rid: ListRequest(rid, prefix))
        return [item_from_wire(item) for item in reply.items]

    async def multi(self, ops: Sequence[TxnOp]) -> list[int | None]:
        wire = ops_to_wire(validate_ops(ops))
        reply = await self._call(lambda rid: MultiRequest(rid, wire), changing=True)
        return list(reply.versions)

    async def register(
        self,
        session: SessionId,
        node_id: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Registration:
        sid = validate_session_id(session)
        member_key(node_id)  # validates the node id
        encode_registration(address, metadata)  # validates address and metadata
        pairs = tuple(sorted(dict(metadata or {}).items()))
        reply = await self._call(
            lambda rid: RegisterRequest(rid, sid, node_id, address, pairs), changing=True
        )
        if not reply.items:
            raise CoordinatorUnavailable("the coordinator returned no registration")
        return decode_registration(item_from_wire(reply.items[0]))

    # --- watches -------------------------------------------------------------------------

    async def watch(self, prefix: str) -> Watch:
        prefix = validate_prefix(prefix)
        link, deadline = await self._connected()
        watch = _RemoteWatch(self, prefix)
        # Listed before the request: if this link dies after the server made the watch,
        # the reconnect re-creates it (a new link is only made once this one died).
        self._watches.append(watch)
        try:
            reply = await self._call_on(
                link, lambda rid: WatchRequest(rid, prefix), deadline, changing=False
            )
        except BaseException:
            watch.end()
            with contextlib.suppress(ValueError):
                self._watches.remove(watch)
            raise
        if link.alive:
            link.attach(_number(reply), watch)
        return watch

    async def _unwatch(self, watch: _RemoteWatch) -> None:
        with contextlib.suppress(ValueError):
            self._watches.remove(watch)
        link = self._link
        if link is None or not link.alive:
            return
        for watch_id, known in list(link.watches.items()):
            if known is watch:
                del link.watches[watch_id]
                # Best effort: if the request fails, the watch dies with the connection.
                with contextlib.suppress(CoordinatorUnavailable):
                    await link.call(UnwatchRequest(self._rid(), watch_id), self.request_timeout_s)

    # --- election ------------------------------------------------------------------------

    async def campaign(self, election: str, session: SessionId, value: bytes = b"") -> Candidate:
        election = validate_prefix(election)
        value = validate_value(value)
        sid = validate_session_id(session)
        watch = await self.watch(election)
        try:
            reply = await self._call(
                lambda rid: CampaignRequest(rid, election, sid, value), changing=True
            )
            mine = candidate_key(election, _number(reply))
            while True:
                items = await self.list_prefix(election)
                current = next((i for i in items if i.key == mine), None)
                if current is None or current.session != sid:
                    if not await self._session_alive(sid):
                        raise SessionExpired(sid)
                    leader = leader_of(election, items)
                    raise LeadershipLost(
                        election,
                        token=_number(reply),
                        leader_token=None if leader is None else leader.token,
                    )
                leader = leader_of(election, items)
                if leader is not None and leader.key == mine:
                    return leader
                if await anext(watch, None) is None:
                    raise UsageError("this coordinator was closed while campaigning")
        except asyncio.CancelledError:
            await self._withdraw(election, sid)
            raise
        finally:
            await watch.close()

    async def _withdraw(self, election: str, session: SessionId) -> None:
        """Resign every candidacy of ``session`` in ``election`` (after a cancel)."""
        # Unreachable: the candidacy vanishes with the session, by TTL.
        with contextlib.suppress(CoordinatorUnavailable, UsageError):
            for item in await self.list_prefix(election):
                token = candidate_token(election, item.key)
                if token is not None and item.session == session:
                    await self._call(functools.partial(_resign_request, election, token))

    # --- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        for watch in list(self._watches):
            watch.end()
        self._watches.clear()
        link = self._link
        if link is not None and link.alive:
            for session in sorted(self._my_sessions):
                # Unreachable: the sessions end by their TTL.
                with contextlib.suppress(CoordinatorUnavailable):
                    await link.call(
                        CloseSessionRequest(self._rid(), session), self.request_timeout_s
                    )
        self._my_sessions.clear()
        self._closed = True
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if link is not None:
            link.shut("the client was closed")
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await link.task


def _resign_request(election: str, token: int, rid: int) -> ResignRequest:
    return ResignRequest(rid, election, token)


def _checked(reply: Reply) -> Reply:
    if reply.error is not None:
        raise error_from_wire(reply.error)
    return reply


def _number(reply: Reply) -> int:
    if reply.number is None:
        raise InternalError("the coordinator's reply lacks its result")
    return reply.number
