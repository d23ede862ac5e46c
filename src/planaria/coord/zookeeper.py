"""``ZooKeeperCoordinator``: the coordination interface on a ZooKeeper ensemble through kazoo
(``zk://h1:2181,h2:2181,h3:2181/chroot``).

**Mapping.**

- Keys: one znode per key, directly under the chroot, named by the percent-encoded key
  (``/a/b`` is ``<chroot>/%2Fa%2Fb``). A flat directory needs no parent znodes, lets any key
  be both a key and a prefix, and lets one child watch see every create and delete. The
  interface's version is the znode's data version + 1; an ephemeral's ``session`` is its
  ``ephemeralOwner``. Other znodes under the chroot are ignored.
- Linearizable reads: every read is preceded by a ``sync`` (pipelined on the same
  connection, so ZooKeeper's per-session FIFO order makes the read wait for it).
  ``list_prefix`` is one snapshot: it reads the chroot's children (and their ``cversion``),
  the values, then checks in one ``multi`` that no value changed and then that no child was
  created or deleted meanwhile (else it reads again).
- ``multi`` is one ZooKeeper ``multi`` (create / setData / delete / check with versions).
  A ``CheckLeader`` checks that the candidate znode exists, after a read found no lower
  candidate: sequential tokens only grow, so none can appear later.
- Sessions: one ZooKeeper session (one kazoo connection) per :meth:`open_session`, asking
  for ``ttl_ms`` as its timeout; if the ensemble negotiates another (it clamps to
  ``[minSessionTimeout, maxSessionTimeout]``, 2 to 20 ticks by default), ``UsageError``.
  The session id is ZooKeeper's. Ephemeral creates go through the owning session's
  connection, so a ``multi`` may create ephemerals of one session only (``UsageError``
  otherwise), and only for sessions this client opened.
- Lease semantics of kazoo's connection states: kazoo heartbeats every session while the
  process runs. ``keep_alive`` is a ``sync`` then an ``exists`` on that session's
  connection: the sync is forwarded to the leader, which checks the session, so the
  acknowledgement is the leader's word that the session was alive when the sync reached it,
  not a follower's (a follower cut off from the leader answers reads from its own state,
  for up to ``syncLimit`` ticks, also after the leader expired the session; shown by
  tests/coord/test_zookeeper.py with a blackholed follower). It costs about 0.6 ms more
  per renewal than the ``exists`` alone on loopback, and writes nothing to the log (a
  write would prove no more: the leader checks the session the same way). What it does
  not prove: the leader renews its own deadline for the session from the follower's ping
  reports (every ``tickTime / 2``), not from the sync, so after a follower–leader cut of
  about a TTL that heals while a renewal is pending, the leader can still expire the
  session within about ``tickTime / 2`` after acknowledging it, while the node counts its
  lease from the renewal's send time: up to a lease of overlap in that race. No client-side
  timing closes it (the leader's deadline does not depend on the sync); a renewal through
  a connection to the leader itself would. ``SUSPENDED``
  (connection lost, reconnecting): calls raise ``CoordinatorUnavailable`` after the request
  timeout; the session lives on until the *server* expires it, so a node keeps serving
  until its own lease runs out, as on every backend. ``LOST``: the server expired the
  session: ``SessionExpired`` from then on (kazoo is stopped before it opens a new one).
  A process that is killed or paused stops heartbeating, and the ensemble expires its
  session ``ttl_ms`` later. A process that is alive but stops calling ``keep_alive`` (a
  wedged task) has its session closed by a watchdog ``ttl_ms`` after the last acknowledged
  renewal, so it too loses its ephemerals as the interface says.
- Watches: the state under the prefix is tracked (each key's ``mzxid``) with ZooKeeper
  one-shot watches on the chroot's children and on each key, re-armed by every read.
  Each trigger re-reads what changed and emits the difference; after a reconnection (or a new
  session) the watch re-reads everything and delivers a ``RESET``. A key created and deleted
  between two re-reads shows in neither; the chroot's cversion counts it, and the watch
  then delivers a ``RESET`` too (the interface promises an event for every change).
- Elections: ephemeral sequential znodes ``<chroot>/%2Fctl%2F0000000042``: the token is
  ZooKeeper's sequence number (the chroot holds a marker znode, so tokens start at 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from planaria.coord._ensemble import CampaigningCoordinator, TtlNotGranted, applied_results
from planaria.coord._watch import QueuedWatch
from planaria.coord.errors import (
    CoordinatorUnavailable,
    LeadershipLost,
    NodeIdInUse,
    SessionExpired,
    VersionConflict,
)
from planaria.coord.interface import Watch
from planaria.coord.layout import Registration, decode_registration, encode_registration, member_key
from planaria.coord.types import (
    Candidate,
    CheckLeader,
    CheckVersion,
    Create,
    DeleteIfVersion,
    EventKind,
    SessionId,
    SetIfVersion,
    TxnOp,
    VersionedValue,
    WatchEvent,
    candidate_key,
    candidate_token,
    validate_key,
    validate_ops,
    validate_prefix,
    validate_session_id,
    validate_ttl_ms,
    validate_value,
)
from planaria.errors import MissingExtra, UsageError

try:
    from kazoo.client import KazooClient, KazooState  # type: ignore[import-untyped]
    from kazoo.exceptions import (  # type: ignore[import-untyped]
        BadVersionError,
        ConnectionClosedError,
        ConnectionLoss,
        KazooException,
        NodeExistsError,
        NoNodeError,
        OperationTimeoutError,
        RolledBackError,
        RuntimeInconsistency,
        SessionExpiredError,
        SessionMovedError,
    )
    from kazoo.handlers.threading import KazooTimeoutError  # type: ignore[import-untyped]
except ImportError as exc:
    raise MissingExtra("kazoo", "zookeeper") from exc

__all__ = [
    "DEFAULT_CHROOT",
    "TtlNotGranted",
    "ZooKeeperCoordinator",
    "smallest_zookeeper_ttl_ms",
]

DEFAULT_CHROOT = "/planaria"
_MARKER = "planaria-namespace"  # not percent-encoded: never taken for a key
# The watches' and reads' session (the ensemble may clamp it): short enough that kazoo's
# heartbeats find a paused server within ~2 s and move to another.
_MAIN_SESSION_S = 3.0
_RETRY_WAIT_S = 0.05
_SNAPSHOT_ATTEMPTS = 20
_CONNECTED_POLL_S = 0.01
_UNREACHABLE = (ConnectionLoss, OperationTimeoutError, SessionMovedError, KazooTimeoutError)


def smallest_zookeeper_ttl_ms(tick_ms: float = 2000.0) -> float:
    """ZooKeeper's default ``minSessionTimeout``: two ticks (4000 ms at the default
    ``tickTime=2000``; 100 ms with the fast ``tickTime=50`` of docs/coordination.md)."""
    return 2.0 * tick_ms


def _connection_retry() -> dict[str, Any]:
    return {"max_tries": -1, "delay": 0.02, "backoff": 2, "max_delay": 0.1}


@dataclass
class _Session:
    client: KazooClient
    ttl_ms: float
    loop: asyncio.AbstractEventLoop  # the opening client's: the watchdog runs there
    ended: bool = False
    watchdog: asyncio.TimerHandle | None = None
    stopping: asyncio.Future[None] | None = None

    def on_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the session's loop (now if this is it)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            action()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(action)


# Every session opened in this process, by id, so that another client of the process (the
# node's keep-alive thread has its own) can renew it: on the session's own connection, the
# only renewal ZooKeeper knows. Ended sessions stay (without their clients' work) so that a
# late renewal learns SessionExpired.
_PROCESS_SESSIONS: dict[SessionId, _Session] = {}
_PROCESS_SESSIONS_LOCK = threading.Lock()


@dataclass
class _Tracked:
    """One watch's view: ``known`` maps each key under the prefix to its ``mzxid``."""

    known: dict[str, int] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    children_dirty: bool = True
    full: bool = True
    # Every child of the chroot at the last listing, and the chroot's cversion then (one
    # more per child created or deleted): a child created *and* deleted between two
    # listings shows only in the count.
    names: frozenset[str] = frozenset()
    cversion: int | None = None


class _ZkWatch(QueuedWatch):
    def __init__(self, owner: ZooKeeperCoordinator, prefix: str) -> None:
        super().__init__(prefix)
        self._owner = owner
        self._state = _Tracked()
        self._trigger = asyncio.Event()  # something to re-read
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()

        def later(action: Callable[[], None]) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(action)

        self._later = later

    # Called from kazoo's thread. An event without a path is kazoo dropping every watcher
    # on a disconnection: the reconnection re-reads everything (``reconnected``).
    def _on_children(self, event: Any) -> None:
        if event.path is not None:
            self._later(self._mark_children)

    def _on_data(self, event: Any) -> None:
        key = None if event.path is None else self._owner._key_of_path(event.path)
        if key is not None:
            self._later(lambda: self._mark(key))

    def _mark_children(self) -> None:
        self._state.children_dirty = True
        self._trigger.set()

    def _mark(self, key: str) -> None:
        self._state.dirty.add(key)
        self._trigger.set()

    def reconnected(self) -> None:
        """The main session reconnected (or was replaced): re-read all, then RESET."""
        self._state.full = True
        self._trigger.set()

    async def start(self) -> None:
        await self._refresh(emit=False)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self.closed:
            await self._trigger.wait()
            self._trigger.clear()
            try:
                await self._refresh(emit=True)
            except CoordinatorUnavailable:
                self._state.full = True  # some watches may be unarmed: start over
                await asyncio.sleep(_RETRY_WAIT_S)
                self._trigger.set()

    async def _refresh(self, *, emit: bool) -> None:
        owner, state = self._owner, self._state
        reset = state.full and emit
        if state.full:
            state.children_dirty = True
            state.dirty = set(state.known)
        state.full = False
        events: list[tuple[int, WatchEvent]] = []
        if state.children_dirty:
            state.children_dirty = False
            names, cversion = await owner._child_names(watch=self._on_children)
            if state.cversion is not None and cversion - state.cversion > len(names ^ state.names):
                reset = emit  # a key came and went unseen: it may have been under the prefix
            state.names, state.cversion = names, cversion
            present = {key for key in owner._keys_of_names(names) if key.startswith(self.prefix)}
            state.dirty |= present - set(state.known)
            for key in set(state.known) - present:
                state.dirty.discard(key)
                del state.known[key]
                events.append((0, WatchEvent(EventKind.DELETE, key)))
        dirty, state.dirty = state.dirty, set()
        results = await asyncio.gather(*(owner._read(key, watch=self._on_data) for key in dirty))
        for key, found in zip(dirty, results, strict=True):
            if found is None:
                if state.known.pop(key, None) is not None:
                    events.append((0, WatchEvent(EventKind.DELETE, key)))
                continue
            item, mzxid = found
            if state.known.get(key) != mzxid:
                state.known[key] = mzxid
                events.append((mzxid, WatchEvent(EventKind.PUT, key, item.version)))
        if not emit:
            return
        if reset:
            self._push(WatchEvent(EventKind.RESET, self.prefix))
        for _, event in sorted(events, key=lambda e: e[0]):
            self._push(event)

    async def close(self) -> None:
        if self.closed:
            return
        self._end()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._owner._watches.discard(self)


class ZooKeeperCoordinator(CampaigningCoordinator):
    """A client of a ZooKeeper ensemble; see the module docstring.

    ``endpoints``: ``(host, port)`` of every server. ``chroot``: the znode this cluster lives
    under (created if absent). ``request_timeout_s``: how long a call waits for an answer
    (also for a connection) before raising ``CoordinatorUnavailable``.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        chroot: str = DEFAULT_CHROOT,
        request_timeout_s: float = 1.0,
    ) -> None:
        if not endpoints:
            raise UsageError("a ZooKeeper coordinator needs at least one server")
        if not request_timeout_s > 0:
            raise UsageError(f"request_timeout_s must be > 0, not {request_timeout_s!r}")
        self._hosts = ",".join(
            f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in endpoints
        )  # fmt: skip
        self._root = validate_key(chroot)
        self._timeout_s = request_timeout_s
        self._main: KazooClient | None = None
        self._starting: asyncio.Lock | None = None
        self._sessions: dict[SessionId, _Session] = {}
        self._watches: set[_ZkWatch] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- plumbing ------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self._root}/{quote(key, safe='')}"

    def _key_of_name(self, name: str) -> str | None:
        return unquote(name) if name.startswith("%2F") else None

    def _key_of_path(self, path: str) -> str | None:
        return self._key_of_name(path.rsplit("/", 1)[-1])

    def _enter(self) -> None:
        if self._closed:
            raise UsageError("this coordinator is closed")

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _start_client(self, timeout_s: float) -> KazooClient:
        client = KazooClient(
            hosts=self._hosts, timeout=timeout_s, connection_retry=_connection_retry()
        )
        try:
            await self._blocking(client.start, self._timeout_s)
        except KazooTimeoutError:
            raise CoordinatorUnavailable(f"no ZooKeeper server answered: {self._hosts}") from None
        return client

    async def _client(self) -> KazooClient:
        """The main connection (reads, persistent writes, watches), started on first use."""
        self._enter()
        if self._main is not None:
            return self._main
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._main is None:
                self._loop = asyncio.get_running_loop()
                client = await self._start_client(_MAIN_SESSION_S)
                try:
                    await self._blocking(client.ensure_path, f"{self._root}/{_MARKER}")
                except (KazooException, KazooTimeoutError) as exc:
                    await self._blocking(_stop, client)
                    raise CoordinatorUnavailable(f"ZooKeeper: {exc!r}") from None
                client.add_listener(self._on_main_state)
                self._main = client
            return self._main

    def _on_main_state(self, state: str) -> None:  # kazoo's thread
        loop = self._loop
        if state == KazooState.CONNECTED and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._reconnected)

    def _reconnected(self) -> None:
        for watch in self._watches:
            watch.reconnected()

    async def _ready(self, client: KazooClient) -> None:
        """Wait (up to the request timeout) until ``client`` is connected. kazoo would queue
        a request while it reconnects and send it whenever it can, so a write that already
        failed with ``CoordinatorUnavailable`` could take effect much later: never queue."""
        deadline = time.monotonic() + self._timeout_s
        while not client.connected:
            if time.monotonic() >= deadline:
                raise CoordinatorUnavailable("not connected to ZooKeeper (reconnecting)")
            await asyncio.sleep(_CONNECTED_POLL_S)

    async def _wait(self, async_result: Any, *, session: SessionId | None = None) -> Any:
        """The value of a kazoo async call, with its errors mapped; ``session``: the call ran
        on that session's connection (its end is ``SessionExpired``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any) -> None:
            if future.done():
                return
            try:
                future.set_result(result.get_nowait())
            except Exception as exc:
                future.set_exception(exc)

        def done(result: Any) -> None:  # kazoo's thread; the caller may be long gone
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, result)

        async_result.rawlink(done)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await future
        except TimeoutError:
            raise CoordinatorUnavailable("ZooKeeper did not answer in time") from None
        except _UNREACHABLE as exc:
            raise CoordinatorUnavailable(f"ZooKeeper unreachable: {exc!r}") from None
        except SessionExpiredError as exc:
            if session is not None:
                self._ended(session)
                raise SessionExpired(session) from None
            raise CoordinatorUnavailable(f"ZooKeeper session lost: {exc!r}") from None

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        client = await self._client()
        await self._ready(client)
        try:
            result = getattr(client, name)(*args, **kwargs)
        except (ConnectionClosedError, *_UNREACHABLE) as exc:
            raise CoordinatorUnavailable(f"ZooKeeper unreachable: {exc!r}") from None
        return await self._wait(result)

    async def _synced(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``sync`` then the read ``name``: pipelined, so the read sees every write that
        completed before the sync was sent."""
        client = await self._client()
        await self._ready(client)
        try:
            sync = client.sync_async(self._root)
            read = getattr(client, name)(*args, **kwargs)
        except (ConnectionClosedError, *_UNREACHABLE) as exc:
            raise CoordinatorUnavailable(f"ZooKeeper unreachable: {exc!r}") from None
        await self._wait(sync)
        return await self._wait(read)

    def _item(self, key: str, data: bytes, stat: Any) -> VersionedValue:
        owner = stat.ephemeralOwner
        return VersionedValue(key, data, stat.version + 1, SessionId(owner) if owner else None)

    async def _read(
        self, key: str, *, watch: Callable[[Any], None] | None = None, sync: bool = False
    ) -> tuple[VersionedValue, int] | None:
        """The key and its mzxid, or None; ``watch`` is armed either way (data or exists)."""
        read = self._synced if sync else self._call
        try:
            data, stat = await read("get_async", self._path(key), watch=watch)
        except NoNodeError:
            if watch is not None and await self._call("exists_async", self._path(key), watch):
                return await self._read(key, watch=watch)  # created meanwhile
            return None
        return self._item(key, data, stat), stat.mzxid

    async def _child_names(
        self, *, watch: Callable[[Any], None] | None = None, sync: bool = False
    ) -> tuple[frozenset[str], int]:
        """The chroot's children's names, and its cversion (creates + deletes of children)."""
        read = self._synced if sync else self._call
        names, stat = await read("get_children_async", self._root, watch=watch, include_data=True)
        return frozenset(names), stat.cversion

    def _keys_of_names(self, names: Iterable[str]) -> list[str]:
        return [key for name in names if (key := self._key_of_name(name)) is not None]

    async def _children(self, *, sync: bool = False) -> list[str]:
        """Every key under the chroot (unsorted)."""
        names, _ = await self._child_names(sync=sync)
        return self._keys_of_names(names)

    # --- sessions ------------------------------------------------------------------------

    async def open_session(self, owner: str, ttl_ms: float) -> SessionId:
        if not isinstance(owner, str) or not owner:
            raise UsageError(f"owner must be a non-empty str, not {owner!r}")
        ttl_ms = validate_ttl_ms(ttl_ms)
        if ttl_ms != int(ttl_ms):
            raise TtlNotGranted(
                f"ZooKeeper session timeouts are whole milliseconds, not {ttl_ms}",
                requested_ms=ttl_ms,
                granted_ms=float(math.ceil(ttl_ms)),
            )
        await self._client()
        negotiated: list[float] = []
        client = KazooClient(
            hosts=self._hosts, timeout=ttl_ms / 1000.0, connection_retry=_connection_retry()
        )
        client._session_timeout = int(ttl_ms)  # exact, not via float seconds
        connection = client._connection
        connect = connection._connect

        def capture(*args: Any) -> Any:
            read_timeout, connect_timeout = connect(*args)
            negotiated.append(round(read_timeout * 1.5))  # kazoo: read = 2/3 negotiated
            return read_timeout, connect_timeout

        connection._connect = capture
        try:
            await self._blocking(client.start, self._timeout_s)
        except KazooTimeoutError:
            raise CoordinatorUnavailable(f"no ZooKeeper server answered: {self._hosts}") from None
        if not negotiated or negotiated[-1] != int(ttl_ms):
            await self._blocking(_stop, client)
            if not negotiated:
                raise CoordinatorUnavailable("ZooKeeper did not say which timeout it granted")
            raise TtlNotGranted(
                f"ZooKeeper granted a {negotiated[-1]} ms session, not {ttl_ms:.0f} ms: the "
                "ensemble allows minSessionTimeout..maxSessionTimeout (2..20 ticks by default)",
                requested_ms=ttl_ms,
                granted_ms=float(negotiated[-1]),
            )
        session = SessionId(client.client_id[0])
        loop = asyncio.get_running_loop()
        record = _Session(client, ttl_ms, loop)
        self._sessions[session] = record
        with _PROCESS_SESSIONS_LOCK:
            _PROCESS_SESSIONS[session] = record

        def on_state(state: str) -> None:  # kazoo's thread
            if state == KazooState.LOST and not loop.is_closed():
                loop.call_soon_threadsafe(self._ended, session)

        client.add_listener(on_state)
        self._arm_watchdog(session, record)
        return session

    def _arm_watchdog(self, session: SessionId, record: _Session) -> None:
        """(Re)start the countdown: ``ttl_ms`` from now (after an acknowledged renewal)."""

        def arm() -> None:
            if record.ended:
                return
            if record.watchdog is not None:
                record.watchdog.cancel()
            delay_s = record.ttl_ms / 1000.0
            record.watchdog = record.loop.call_later(delay_s, self._ended, session)

        record.on_loop(arm)

    def _ended(self, session: SessionId) -> None:
        """The session is over (closed, expired by the server, or not renewed for its TTL):
        stop its connection, which also closes it on the server if it is still open."""
        with _PROCESS_SESSIONS_LOCK:
            record = _PROCESS_SESSIONS.get(session)
        if record is None:
            return

        def end() -> None:
            if record.ended:
                return
            record.ended = True
            if record.watchdog is not None:
                record.watchdog.cancel()
            record.stopping = record.loop.run_in_executor(None, _stop, record.client)

        record.on_loop(end)

    def _own(self, session: object) -> tuple[SessionId, _Session]:
        """The session, if opened by any client in this process (``UsageError`` if not: a
        ZooKeeper session lives in its connection)."""
        sid = validate_session_id(session)
        self._enter()
        with _PROCESS_SESSIONS_LOCK:
            record = _PROCESS_SESSIONS.get(sid)
        if record is None:
            raise UsageError(
                f"session {sid} was not opened in this process: a ZooKeeper session is "
                "renewed and used through the connection that opened it"
            )
        return sid, record

    def _alive(self, session: object) -> tuple[SessionId, _Session]:
        sid, record = self._own(session)
        # kazoo forgets the id on LOST and would then open a new session: not ours.
        current = record.client._session_id
        if record.ended or (current is not None and current != sid):
            self._ended(sid)
            raise SessionExpired(sid)
        return sid, record

    async def keep_alive(self, session: SessionId) -> None:
        sid, record = self._alive(session)
        await self._ready(record.client)
        try:
            # The sync goes through the leader, which checks the session; the exists after
            # it runs where the follower has applied everything the leader committed before
            # (a closeSession too). A follower's own answer would not do: cut off from the
            # leader it answers for up to syncLimit ticks after the session expired.
            sync = record.client.sync_async(self._root)
            pending = record.client.exists_async(self._root)
        except (ConnectionClosedError, SessionExpiredError):
            self._ended(sid)
            raise SessionExpired(sid) from None
        await self._wait(sync, session=sid)
        await self._wait(pending, session=sid)
        if not record.ended:
            self._arm_watchdog(sid, record)

    async def close_session(self, session: SessionId) -> None:
        sid, record = self._own(session)
        self._ended(sid)
        if record.stopping is not None and record.loop is asyncio.get_running_loop():
            with contextlib.suppress(TimeoutError):  # unreachable: it expires by its TTL
                async with asyncio.timeout(self._timeout_s):
                    await asyncio.shield(record.stopping)

    async def _session_ended(self, session: SessionId) -> bool:
        with _PROCESS_SESSIONS_LOCK:
            record = _PROCESS_SESSIONS.get(session)
        return record is None or record.ended

    # --- keys ----------------------------------------------------------------------------

    async def get(self, key: str) -> VersionedValue | None:
        found = await self._read(validate_key(key), sync=True)
        return None if found is None else found[0]

    async def list_prefix(self, prefix: str) -> list[VersionedValue]:
        prefix = validate_prefix(prefix)
        for _ in range(_SNAPSHOT_ATTEMPTS):
            client = await self._client()
            names, root = await self._synced("get_children_async", self._root, include_data=True)
            keys = sorted(
                key for name in names if (key := self._key_of_name(name)) and key.startswith(prefix)
            )  # fmt: skip
            reads = await asyncio.gather(
                *(self._call("get_async", self._path(key)) for key in keys),
                return_exceptions=True,
            )
            if any(isinstance(r, NoNodeError) for r in reads):
                continue  # deleted meanwhile
            items: list[VersionedValue] = []
            for key, read in zip(keys, reads, strict=True):
                if isinstance(read, BaseException):
                    raise read
                items.append(self._item(key, *read))
            check = client.transaction()
            for item in items:
                check.check(self._path(item.key), item.version - 1)
            await self._ready(client)
            unchanged = await self._wait(check.commit_async()) if items else []
            after = await self._call("exists_async", self._root)
            if all(r is True for r in unchanged) and after.cversion == root.cversion:
                return items
        raise CoordinatorUnavailable(f"{prefix}: changing too fast for a consistent snapshot")

    def _session_of(self, ops: list[TxnOp]) -> SessionId | None:
        sessions = {op.session for op in ops if isinstance(op, Create) and op.session is not None}
        if len(sessions) > 1:
            raise UsageError("a ZooKeeper multi can create ephemerals of one session only")
        return next(iter(sessions), None)

    async def multi(self, ops: Sequence[TxnOp]) -> list[int | None]:
        checked = validate_ops(ops)
        self._enter()
        session = self._session_of(checked)
        if session is not None:
            _, record = self._alive(session)
            client = record.client
        else:
            client = await self._client()
        if not checked:
            return []
        for index, op in enumerate(checked):
            if isinstance(op, CheckLeader):
                await self._check_no_lower(op, index)
        txn = client.transaction()
        for op in checked:
            if isinstance(op, Create):
                txn.create(self._path(op.key), op.value, ephemeral=op.session is not None)
            elif isinstance(op, SetIfVersion):
                txn.set_data(self._path(op.key), op.value, op.version - 1)
            elif isinstance(op, DeleteIfVersion):
                txn.delete(self._path(op.key), op.version - 1)
            elif isinstance(op, CheckVersion):
                txn.check(self._path(op.key), op.version - 1)
            else:
                txn.check(self._path(candidate_key(op.election, op.token)), -1)
        await self._ready(client)
        try:
            pending = txn.commit_async()
        except (ConnectionClosedError, SessionExpiredError):
            if session is None:
                raise CoordinatorUnavailable("ZooKeeper connection closed") from None
            self._ended(session)
            raise SessionExpired(session) from None
        results = await self._wait(pending, session=session)
        # The failing op carries the real error; the others say they were rolled back.
        knock_on = (RolledBackError, RuntimeInconsistency)
        failures = [
            (i, r) for i, r in enumerate(results)
            if isinstance(r, Exception) and not isinstance(r, knock_on)
        ]  # fmt: skip
        if failures:
            await self._raise_conflict(checked, *failures[0], session)
        return applied_results(checked)

    async def _check_no_lower(self, op: CheckLeader, index: int) -> None:
        keys = await self._children(sync=True)
        tokens = [t for k in keys if (t := candidate_token(op.election, k)) is not None]
        lowest = min(tokens, default=None)
        if lowest is None or lowest < op.token or op.token not in tokens:
            raise LeadershipLost(
                op.election, token=op.token, leader_token=lowest, op_index=index
            )  # fmt: skip

    async def _raise_conflict(
        self, ops: list[TxnOp], index: int, error: Exception, session: SessionId | None
    ) -> None:
        op = ops[index]
        if isinstance(error, SessionExpiredError) and session is not None:
            self._ended(session)
            raise SessionExpired(session)
        if isinstance(op, CheckLeader):
            leader = await self.leader(op.election)
            leader_token = None if leader is None else leader.token
            raise LeadershipLost(
                op.election, token=op.token, leader_token=leader_token, op_index=index
            )
        if not isinstance(error, NoNodeError | NodeExistsError | BadVersionError):
            raise UsageError(f"ZooKeeper refused {op!r}: {error!r}")
        found = await self._read(op.key, sync=True)
        actual = None if found is None else found[0].version
        expected = None if isinstance(op, Create) else op.version
        raise VersionConflict(op.key, expected=expected, actual=actual, op_index=index)

    # --- membership ----------------------------------------------------------------------

    async def register(
        self,
        session: SessionId,
        node_id: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Registration:
        key = member_key(node_id)
        value = encode_registration(address, metadata)
        sid, record = self._alive(session)
        path = self._path(key)
        while True:
            found = await self._read(key, sync=True)
            txn = record.client.transaction()
            if found is None:
                txn.create(path, value, ephemeral=True)
            elif found[0].session == sid:
                txn.set_data(path, value, found[0].version - 1)
            else:  # another live session's (an ephemeral vanishes with its session)
                raise NodeIdInUse(node_id, holder=found[0].session or 0)
            await self._ready(record.client)
            results = await self._wait(txn.commit_async(), session=sid)
            errors = [r for r in results if isinstance(r, Exception)]
            if any(isinstance(e, SessionExpiredError) for e in errors):
                self._ended(sid)
                raise SessionExpired(sid)
            if not errors:
                now = await self._read(key, sync=True)
                if now is not None and now[0].session == sid:
                    return decode_registration(now[0])
            # Changed meanwhile (created by another session, or gone): look again.

    # --- watches -------------------------------------------------------------------------

    async def watch(self, prefix: str) -> Watch:
        prefix = validate_prefix(prefix)
        await self._client()
        await self._synced("exists_async", self._root)  # the view starts after now
        watch = _ZkWatch(self, prefix)
        await watch.start()
        self._watches.add(watch)
        return watch

    # --- election ------------------------------------------------------------------------

    async def _stand(self, election: str, session: SessionId, value: bytes) -> Candidate:
        sid, record = self._alive(session)
        value = validate_value(value)
        await self._ready(record.client)
        try:
            pending = record.client.create_async(
                self._path(election), value, ephemeral=True, sequence=True
            )
        except (ConnectionClosedError, SessionExpiredError):
            self._ended(sid)
            raise SessionExpired(sid) from None
        path = await self._wait(pending, session=sid)
        key = self._key_of_path(path)
        token = None if key is None else candidate_token(election, key)
        if key is None or token is None:
            raise UsageError(f"ZooKeeper named the candidate {path!r}: not a token")
        return Candidate(election, token, sid, value, key)

    # --- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        for watch in list(self._watches):
            await watch.close()
        for session in list(self._sessions):
            self._ended(session)
        stopping = [r.stopping for r in self._sessions.values() if r.stopping is not None]
        main, self._main = self._main, None
        if main is not None:
            stopping.append(asyncio.get_running_loop().run_in_executor(None, _stop, main))
        self._closed = True
        with contextlib.suppress(TimeoutError):  # unreachable: sessions expire by TTL
            async with asyncio.timeout(self._timeout_s * 2):
                await asyncio.gather(*stopping)


def _stop(client: KazooClient) -> None:
    """Close the session on the server (its ephemerals vanish) and release the client."""
    client.stop()
    client.close()
