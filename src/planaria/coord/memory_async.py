"""``MemoryCoordinator``: the coordination interface over a ``MemoryStore``, for asyncio.

For one process (tests, ``planaria demo``, a single-node cluster). Several coordinators may
share one store: each is one "client", all see the same state, as clients of one ZooKeeper
ensemble do. Time comes from an injectable ``clock`` (seconds, default ``time.monotonic``);
sessions past their deadline are expired before every call and by a background check every
``expiry_check_interval_s`` (so watchers learn of expiries without any call), or at once by
:meth:`MemoryCoordinator.check_expiry` (tests with a fake clock).

Fault injection for tests of callers: :meth:`disconnect` makes every call raise
``CoordinatorUnavailable`` until :meth:`reconnect` (sessions are not renewed meanwhile, so
they may expire, as with a real partition); :meth:`lose_replies` applies the next calls but
raises ``CoordinatorUnavailable`` instead of returning (a CAS with an unknown outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from planaria.coord.errors import CoordinatorUnavailable, LeadershipLost, SessionExpired
from planaria.coord.interface import Coordinator, Watch
from planaria.coord.layout import Registration
from planaria.coord.memory import MemoryStore, WatchId
from planaria.coord.types import (
    Candidate,
    SessionId,
    SessionInfo,
    TxnOp,
    VersionedValue,
    WatchEvent,
    candidate_token,
    validate_prefix,
    validate_value,
)
from planaria.errors import UsageError

__all__ = ["MemoryCoordinator"]


class _MemoryWatch(Watch):
    def __init__(self, coordinator: MemoryCoordinator, prefix: str) -> None:
        self.prefix = prefix
        self._coordinator = coordinator
        self._store = coordinator.store
        self._wake = asyncio.Event()
        self._buffer: deque[WatchEvent] = deque()
        self._closed = False
        self._id = self._store.watch(prefix, notify=self._on_event)

    def _on_event(self, _watch_id: WatchId) -> None:
        self._wake.set()

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                return self._buffer.popleft()
            events = self._store.drain_events(self._id)
            if events:
                self._buffer.extend(events)
                continue
            # No await between the drain and the clear: no event can slip in between.
            self._wake.clear()
            await self._wake.wait()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store.unwatch(self._id)
            self._coordinator._forget(self)
            self._wake.set()


class MemoryCoordinator(Coordinator):
    """An in-process coordinator; see the module docstring."""

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        expiry_check_interval_s: float | None = 0.05,
    ) -> None:
        if not callable(clock):
            raise UsageError("clock must be a callable returning seconds")
        if expiry_check_interval_s is not None and not expiry_check_interval_s > 0:
            raise UsageError("expiry_check_interval_s must be > 0 (or None: no background check)")
        self.store = store if store is not None else MemoryStore()
        self._clock = clock
        self._interval_s = expiry_check_interval_s
        self._expiry_task: asyncio.Task[None] | None = None
        self._watches: list[_MemoryWatch] = []
        self._my_sessions: set[SessionId] = set()
        self._connected = True
        self._replies_to_lose = 0
        self._closed = False

    # --- plumbing ------------------------------------------------------------------------

    def _now_ms(self) -> float:
        # Several coordinators (with their own clocks) may share a store: never step back.
        # Microsecond rounding keeps float noise of seconds-to-ms off exact deadlines.
        known = self.store.now_ms
        now_ms = round(self._clock() * 1000.0, 3)
        return now_ms if known is None or now_ms > known else known

    def _enter(self) -> float:
        """Start of every call: refuse when closed or cut off; expire what is due."""
        if self._closed:
            raise UsageError("this coordinator is closed")
        if not self._connected:
            raise CoordinatorUnavailable("the coordinator is unreachable (disconnected)")
        if self._expiry_task is None and self._interval_s is not None:
            self._expiry_task = asyncio.get_running_loop().create_task(self._expiry_loop())
        now_ms = self._now_ms()
        self.store.expire(now_ms)
        return now_ms

    def _reply(self) -> None:
        """End of every call that changed something: maybe lose the reply."""
        if self._replies_to_lose > 0:
            self._replies_to_lose -= 1
            raise CoordinatorUnavailable("the reply was lost (injected): outcome unknown")

    async def _expiry_loop(self) -> None:
        assert self._interval_s is not None
        while True:
            await asyncio.sleep(self._interval_s)
            self.store.expire(self._now_ms())

    async def check_expiry(self) -> list[SessionInfo]:
        """Expire every session due by the clock's now; returns those that expired since the
        store was last asked (by anyone)."""
        if self._closed:
            raise UsageError("this coordinator is closed")
        return self.store.expire(self._now_ms())

    def _forget(self, watch: _MemoryWatch) -> None:
        with contextlib.suppress(ValueError):
            self._watches.remove(watch)

    # --- fault injection -----------------------------------------------------------------

    def disconnect(self) -> None:
        """Every call raises ``CoordinatorUnavailable`` until :meth:`reconnect`."""
        self._connected = False

    def reconnect(self) -> None:
        self._connected = True

    def lose_replies(self, count: int = 1) -> None:
        """Apply the next ``count`` changing calls but raise ``CoordinatorUnavailable``."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise UsageError(f"count must be an int >= 0, not {count!r}")
        self._replies_to_lose = count

    # --- sessions ------------------------------------------------------------------------

    async def open_session(self, owner: str, ttl_ms: float) -> SessionId:
        now_ms = self._enter()
        session = self.store.open_session(owner, ttl_ms, now_ms)
        self._my_sessions.add(session)
        self._reply()
        return session

    async def keep_alive(self, session: SessionId) -> None:
        self.store.renew(session, self._enter())
        self._reply()

    async def close_session(self, session: SessionId) -> None:
        self.store.close_session(session, self._enter())
        self._my_sessions.discard(session)
        self._reply()

    # --- keys ----------------------------------------------------------------------------

    async def get(self, key: str) -> VersionedValue | None:
        self._enter()
        return self.store.get(key)

    async def list_prefix(self, prefix: str) -> list[VersionedValue]:
        self._enter()
        return self.store.list_prefix(prefix)

    async def multi(self, ops: Sequence[TxnOp]) -> list[int | None]:
        results = self.store.multi(ops, self._enter())
        self._reply()
        return results

    async def register(
        self,
        session: SessionId,
        node_id: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Registration:
        registration = self.store.register(session, node_id, address, metadata, self._enter())
        self._reply()
        return registration

    # --- watches -------------------------------------------------------------------------

    async def watch(self, prefix: str) -> Watch:
        self._enter()
        watch = _MemoryWatch(self, validate_prefix(prefix))
        self._watches.append(watch)
        return watch

    # --- election ------------------------------------------------------------------------

    async def campaign(self, election: str, session: SessionId, value: bytes = b"") -> Candidate:
        election = validate_prefix(election)
        value = validate_value(value)
        wake = asyncio.Event()
        watch_id = self.store.watch(election, notify=lambda _wid: wake.set())
        try:
            mine = self.store.campaign(election, session, value, self._enter())
            self._reply()
            while True:
                # Clear before looking: a change after the look sets it again.
                wake.clear()
                self.store.drain_events(watch_id)
                self._enter()
                if self.store.get(mine.key) is None:
                    if not self.store.session_info(session).alive:
                        raise SessionExpired(session)
                    raise LeadershipLost(election, token=mine.token, leader_token=None)
                leader = self.store.leader(election)
                if leader is not None and leader.token == mine.token:
                    return leader
                await wake.wait()
        except asyncio.CancelledError:
            self._withdraw(election, session)
            raise
        finally:
            self.store.unwatch(watch_id)

    def _withdraw(self, election: str, session: SessionId) -> None:
        if not self._connected or self._closed:
            return  # the candidacy vanishes with the session
        for item in self.store.list_prefix(election):
            token = candidate_token(election, item.key)
            if token is not None and item.session == session:
                self.store.resign(election, token, self._now_ms())

    # --- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        for watch in list(self._watches):
            await watch.close()
        if self._connected:
            now_ms = self._now_ms()
            for session in sorted(self._my_sessions):
                self.store.close_session(session, now_ms)
        self._my_sessions.clear()
        self._closed = True
        task, self._expiry_task = self._expiry_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
