"""``MemoryStore``: the whole coordinator state machine, pure and synchronous.

Sessions with TTL, ephemeral keys, versioned keys with compare-and-set and atomic ``multi``,
watch event queues and elections, with time passed in as ``now_ms`` (no clock, no I/O, no
threads): the simulator runs it inside its coordinator process, and ``MemoryCoordinator``
wraps it for asyncio. Same semantics as the :class:`~planaria.coord.interface.Coordinator`
interface, with exact, deterministic timing and every watch event delivered (nothing is
coalesced unless a watch queue overflows, which turns into one ``RESET``).

Time: every ``now_ms`` argument first advances the store's clock to ``now_ms`` (it never goes
back: ``UsageError``) and expires every session due by then, so an operation never sees a
session past its deadline as alive. Methods where ``now_ms`` is optional act at the store's
current time when it is omitted. A session renewed (or opened) at ``t`` with TTL ``ttl`` is
alive for ``now < t + ttl`` and expired at ``now >= t + ttl``.

Determinism: sessions expire in (deadline, id) order, their keys are deleted in key order,
watches are served in id order, listings are sorted by key. ``notify`` callbacks run after
the operation that queued events has finished, so they may call back into the store.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NewType

from planaria.coord.errors import LeadershipLost, NodeIdInUse, SessionExpired, VersionConflict
from planaria.coord.layout import (
    MEMBERS_PREFIX,
    Registration,
    decode_registration,
    encode_registration,
    member_key,
)
from planaria.coord.types import (
    Candidate,
    CheckLeader,
    CheckVersion,
    Create,
    DeleteIfVersion,
    EventKind,
    SessionId,
    SessionInfo,
    SetIfVersion,
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
    validate_version,
)
from planaria.errors import UsageError

__all__ = ["WATCH_QUEUE_MAX", "MemoryStore", "StoreState", "WatchId"]

WatchId = NewType("WatchId", int)
# Events a watch holds before they are replaced by one RESET (a reader that fell behind).
WATCH_QUEUE_MAX = 10_000


@dataclass(slots=True)
class _Session:
    owner: str
    ttl_ms: float
    opened_ms: float
    renewed_ms: float
    keys: set[str] = field(default_factory=set)  # its ephemeral keys

    @property
    def expires_ms(self) -> float:
        return self.renewed_ms + self.ttl_ms


@dataclass(frozen=True, slots=True)
class StoreState:
    """Everything of a store that outlives a restart (for a persisting server): every key,
    the live sessions as ``(id, owner, ttl_ms)``, the ended ones, the last session id issued
    and the last token of every election. Times of live sessions are not kept: a restored
    session gets a full TTL from the restore time (as ZooKeeper does after a leader change)."""

    items: tuple[VersionedValue, ...]
    sessions: tuple[tuple[SessionId, str, float], ...]
    ended: tuple[SessionInfo, ...]
    session_ids_issued: int
    sequences: tuple[tuple[str, int], ...]


@dataclass(slots=True)
class _Watch:
    prefix: str
    queue_max: int
    notify: Callable[[WatchId], object] | None
    events: deque[WatchEvent] = field(default_factory=deque)


class MemoryStore:
    """The coordinator's state. Not thread-safe: one event loop or one simulator owns it."""

    def __init__(self) -> None:
        self._now_ms: float | None = None
        self._sessions: dict[SessionId, _Session] = {}
        self._ended: dict[SessionId, SessionInfo] = {}
        self._session_ids_issued = 0
        self._data: dict[str, VersionedValue] = {}
        self._sequences: dict[str, int] = {}  # per election: the last token issued
        self._watches: dict[WatchId, _Watch] = {}
        self._watch_ids_issued = 0
        self._expired_unreported: list[SessionInfo] = []
        self._to_notify: set[WatchId] = set()

    # --- persistence ---------------------------------------------------------------------

    def export_state(self) -> StoreState:
        """The durable part of the store (watches and times are not part of it)."""
        return StoreState(
            items=tuple(self._data[k] for k in sorted(self._data)),
            sessions=tuple((sid, s.owner, s.ttl_ms) for sid, s in sorted(self._sessions.items())),
            ended=tuple(self._ended[sid] for sid in sorted(self._ended)),
            session_ids_issued=self._session_ids_issued,
            sequences=tuple(sorted(self._sequences.items())),
        )

    @classmethod
    def from_state(cls, state: StoreState, now_ms: float) -> MemoryStore:
        """A store holding ``state`` at ``now_ms``: every live session renewed at ``now_ms``.
        ``UsageError`` if the state is inconsistent (an ephemeral of an unknown session)."""
        store = cls()
        now = store._advance(now_ms)
        for sid, owner, ttl_ms in state.sessions:
            store._sessions[validate_session_id(sid)] = _Session(
                owner, validate_ttl_ms(ttl_ms), now, now
            )
        store._ended = {info.session: info for info in state.ended}
        issued = max([state.session_ids_issued, *store._sessions, *store._ended], default=0)
        store._session_ids_issued = issued
        for item in state.items:
            key = validate_key(item.key)
            if item.session is not None:
                owner_session = store._sessions.get(item.session)
                if owner_session is None:
                    raise UsageError(f"{key} belongs to session {item.session}, which is not alive")
                owner_session.keys.add(key)
            store._data[key] = item
        store._sequences = dict(state.sequences)
        return store

    # --- time ----------------------------------------------------------------------------

    @property
    def now_ms(self) -> float | None:
        """The latest time the store was told (None before the first)."""
        return self._now_ms

    def _advance(self, now_ms: float | None) -> float:
        if now_ms is None:
            return self._now_ms if self._now_ms is not None else 0.0
        if isinstance(now_ms, bool) or not isinstance(now_ms, int | float):
            raise UsageError(f"now_ms must be a number, not {type(now_ms).__name__}")
        if not math.isfinite(now_ms):
            raise UsageError(f"now_ms must be finite, not {now_ms}")
        if self._now_ms is not None and now_ms < self._now_ms:
            raise UsageError(f"time went backwards: now_ms {now_ms} < {self._now_ms}")
        self._now_ms = float(now_ms)
        due = [(s.expires_ms, sid) for sid, s in self._sessions.items() if s.expires_ms <= now_ms]
        for _, sid in sorted(due):
            self._expired_unreported.append(self._end(sid, self._now_ms, "expired"))
        return self._now_ms

    def _end(self, sid: SessionId, now_ms: float, why: str) -> SessionInfo:
        session = self._sessions.pop(sid)
        for key in sorted(session.keys):
            del self._data[key]
            self._emit(EventKind.DELETE, key, None)
        info = SessionInfo(
            sid, session.owner, session.ttl_ms, session.opened_ms, session.renewed_ms,
            alive=False, ended_ms=now_ms, ended_by=why,
        )  # fmt: skip
        self._ended[sid] = info
        return info

    # --- sessions ------------------------------------------------------------------------

    def open_session(self, owner: str, ttl_ms: float, now_ms: float) -> SessionId:
        """A new session of ``owner`` (any non-empty str), alive until ``now_ms + ttl_ms``.
        Ids are 1, 2, 3, ... (never reused: the owner process's incarnation)."""
        if not isinstance(owner, str) or not owner:
            raise UsageError(f"owner must be a non-empty str, not {owner!r}")
        ttl = validate_ttl_ms(ttl_ms)
        now = self._advance(now_ms)
        self._session_ids_issued += 1
        sid = SessionId(self._session_ids_issued)
        self._sessions[sid] = _Session(owner, ttl, now, now)
        self._flush()
        return sid

    def _alive(self, session: object) -> _Session:
        sid = validate_session_id(session)
        if sid > self._session_ids_issued:
            raise UsageError(f"session {sid} was never opened here")
        found = self._sessions.get(sid)
        if found is None:
            raise SessionExpired(sid)
        return found

    def renew(self, session: SessionId, now_ms: float) -> float:
        """Renew ``session`` at ``now_ms``; returns its new deadline (``expires_ms``).
        ``SessionExpired`` if it already ended, including at exactly its deadline."""
        now = self._advance(now_ms)
        try:
            found = self._alive(session)
        finally:
            self._flush()
        found.renewed_ms = now
        return found.expires_ms

    def close_session(self, session: SessionId, now_ms: float | None = None) -> SessionInfo:
        """End ``session`` now (its ephemeral keys go); returns its final info. Closing an
        ended session changes nothing and returns how it ended."""
        now = self._advance(now_ms)
        try:
            self._alive(session)
            return self._end(SessionId(session), now, "closed")
        except SessionExpired:
            return self._ended[SessionId(session)]
        finally:
            self._flush()

    def expire(self, now_ms: float) -> list[SessionInfo]:
        """Advance to ``now_ms``; returns the sessions that expired since the last call (also
        those noticed by other calls given a ``now_ms``), in expiry order."""
        self._advance(now_ms)
        expired, self._expired_unreported = self._expired_unreported, []
        self._flush()
        return expired

    def next_expiry_ms(self) -> float | None:
        """When the next session expires without a renewal (to schedule ``expire``)."""
        return min((s.expires_ms for s in self._sessions.values()), default=None)

    def session_info(self, session: SessionId) -> SessionInfo:
        """The session's state, alive or ended (``UsageError`` if never opened here)."""
        try:
            found = self._alive(session)
        except SessionExpired:
            return self._ended[SessionId(session)]
        return self._info(SessionId(session), found)

    @staticmethod
    def _info(sid: SessionId, s: _Session) -> SessionInfo:
        return SessionInfo(sid, s.owner, s.ttl_ms, s.opened_ms, s.renewed_ms)

    def sessions(self) -> list[SessionInfo]:
        """Every live session, by id."""
        return [self._info(sid, s) for sid, s in sorted(self._sessions.items())]

    def latest_sessions(self) -> dict[str, SessionInfo]:
        """The newest session of every owner ever seen, alive or ended (the controller's
        view: a newer session of a node proves its older incarnation dead)."""
        latest: dict[str, SessionInfo] = {}
        for info in sorted([*self._ended.values(), *self.sessions()], key=lambda i: i.session):
            latest[info.owner] = info
        return latest

    # --- keys ----------------------------------------------------------------------------

    def get(self, key: str) -> VersionedValue | None:
        return self._data.get(validate_key(key))

    def list_prefix(self, prefix: str) -> list[VersionedValue]:
        """Every key under ``prefix``, sorted by key."""
        prefix = validate_prefix(prefix)
        return [self._data[k] for k in sorted(self._data) if k.startswith(prefix)]

    def multi(self, ops: Iterable[TxnOp], now_ms: float | None = None) -> list[int | None]:
        """Apply ``ops`` atomically (see ``Coordinator.multi``): every condition is checked
        first (the first failure raises, with ``op_index``), then every change is made."""
        checked = validate_ops(ops)
        self._advance(now_ms)
        try:
            for index, op in enumerate(checked):
                self._check(index, op)
            return [self._apply(op) for op in checked]
        finally:
            self._flush()

    def _check(self, index: int, op: TxnOp) -> None:
        if isinstance(op, CheckLeader):
            current = self.leader(op.election)
            if current is None or current.token != op.token:
                leader_token = None if current is None else current.token
                raise LeadershipLost(
                    op.election, token=op.token, leader_token=leader_token, op_index=index
                )
            return
        found = self._data.get(op.key)
        actual = None if found is None else found.version
        if isinstance(op, Create):
            if op.session is not None:
                self._alive(op.session)
            expected = None
        else:
            expected = op.version
        if actual != expected:
            raise VersionConflict(op.key, expected=expected, actual=actual, op_index=index)

    def _apply(self, op: TxnOp) -> int | None:
        if isinstance(op, Create):
            value = validate_value(op.value)
            self._put(VersionedValue(op.key, value, 1, op.session))
            return 1
        if isinstance(op, SetIfVersion):
            old = self._data[op.key]
            self._put(replace(old, value=validate_value(op.value), version=old.version + 1))
            return old.version + 1
        if isinstance(op, DeleteIfVersion):
            old = self._data.pop(op.key)
            if old.session is not None:
                self._sessions[old.session].keys.discard(op.key)
            self._emit(EventKind.DELETE, op.key, None)
        return None

    def _put(self, item: VersionedValue) -> None:
        old = self._data.get(item.key)
        if old is not None and old.session is not None and old.session != item.session:
            self._sessions[old.session].keys.discard(item.key)
        if item.session is not None:
            self._sessions[item.session].keys.add(item.key)
        self._data[item.key] = item
        self._emit(EventKind.PUT, item.key, item.version)

    def create(
        self,
        key: str,
        value: bytes,
        *,
        session: SessionId | None = None,
        now_ms: float | None = None,
    ) -> int:
        """Create ``key`` if absent (ephemeral of ``session``); returns 1."""
        return _version(self.multi([Create(key, value, session)], now_ms))

    def set_if_version(
        self, key: str, value: bytes, *, version: int, now_ms: float | None = None
    ) -> int:
        """Replace the value if ``key`` is at ``version``; returns the new version."""
        return _version(self.multi([SetIfVersion(key, value, version)], now_ms))

    def delete_if_version(self, key: str, *, version: int, now_ms: float | None = None) -> None:
        self.multi([DeleteIfVersion(key, version)], now_ms)

    def check_version(self, key: str, version: int) -> None:
        """Raise ``VersionConflict`` unless ``key`` is at ``version``."""
        self.multi([CheckVersion(key, validate_version(version))])

    # --- membership ----------------------------------------------------------------------

    def register(
        self,
        session: SessionId,
        node_id: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
        now_ms: float | None = None,
    ) -> Registration:
        """Publish ``node_id`` as an ephemeral of ``session`` (or update it, when this
        session registered it); ``NodeIdInUse`` while another session holds it."""
        key = member_key(node_id)
        value = encode_registration(address, metadata)
        self._advance(now_ms)
        try:
            sid = SessionId(session)
            self._alive(sid)
            old = self._data.get(key)
            if old is not None and old.session != sid:
                raise NodeIdInUse(node_id, holder=old.session or 0)
            version = 1 if old is None else old.version + 1
            self._put(VersionedValue(key, value, version, sid))
        finally:
            self._flush()
        return decode_registration(self._data[key])

    def members(self) -> dict[str, Registration]:
        """Every registered node, by node id."""
        items = self.list_prefix(MEMBERS_PREFIX)
        return {reg.node_id: reg for reg in map(decode_registration, items)}

    # --- elections -----------------------------------------------------------------------

    def campaign(
        self, election: str, session: SessionId, value: bytes = b"", now_ms: float | None = None
    ) -> Candidate:
        """Enter ``session`` as a candidate of ``election`` (or return its existing
        candidacy there). It leads when ``leader(election)`` returns it."""
        election = validate_prefix(election)
        value = validate_value(value)
        self._advance(now_ms)
        try:
            sid = SessionId(session)
            self._alive(sid)
            for item in self.list_prefix(election):
                token = candidate_token(election, item.key)
                if token is not None and item.session == sid:
                    return Candidate(election, token, sid, item.value, item.key)
            token = self._sequences.get(election, 0) + 1
            self._sequences[election] = token
            key = candidate_key(election, token)
            if key in self._data:  # someone wrote a candidate-like key by hand
                raise UsageError(f"{key} exists but was not created by campaign()")
            self._put(VersionedValue(key, value, 1, sid))
            return Candidate(election, token, sid, value, key)
        finally:
            self._flush()

    def leader(self, election: str) -> Candidate | None:
        """The candidate with the lowest token in ``election``, or None."""
        election = validate_prefix(election)
        return leader_of(election, self.list_prefix(election))

    def resign(self, election: str, token: int, now_ms: float | None = None) -> bool:
        """Withdraw candidate ``token``; returns whether it was still there."""
        key = candidate_key(validate_prefix(election), token)
        self._advance(now_ms)
        try:
            old = self._data.get(key)
            if old is None:
                return False
            self._apply(DeleteIfVersion(key, old.version))
            return True
        finally:
            self._flush()

    # --- watches -------------------------------------------------------------------------

    def watch(
        self,
        prefix: str,
        *,
        notify: Callable[[WatchId], object] | None = None,
        queue_max: int = WATCH_QUEUE_MAX,
    ) -> WatchId:
        """Queue an event for every later change under ``prefix``; ``notify(watch_id)`` is
        called after each operation that queued some. Beyond ``queue_max`` undrained events
        the queue is replaced by one ``RESET``."""
        prefix = validate_prefix(prefix)
        if isinstance(queue_max, bool) or not isinstance(queue_max, int) or queue_max < 1:
            raise UsageError(f"queue_max must be an int >= 1, not {queue_max!r}")
        if notify is not None and not callable(notify):
            raise UsageError("notify must be callable")
        self._watch_ids_issued += 1
        wid = WatchId(self._watch_ids_issued)
        self._watches[wid] = _Watch(prefix, queue_max, notify)
        return wid

    def unwatch(self, watch_id: WatchId) -> None:
        """Drop the watch and its queued events (does nothing if already dropped)."""
        self._watch(watch_id, allow_dropped=True)
        self._watches.pop(watch_id, None)

    def _watch(self, watch_id: WatchId, *, allow_dropped: bool = False) -> _Watch | None:
        if isinstance(watch_id, bool) or not isinstance(watch_id, int):
            raise UsageError(f"not a watch id: {watch_id!r}")
        found = self._watches.get(watch_id)
        if found is None and not (allow_dropped and 1 <= watch_id <= self._watch_ids_issued):
            raise UsageError(f"watch {watch_id} does not exist")
        return found

    def drain_events(self, watch_id: WatchId) -> list[WatchEvent]:
        """Take the queued events of one watch, oldest first."""
        found = self._watch(watch_id)
        assert found is not None
        events = list(found.events)
        found.events.clear()
        return events

    def drain_all_events(self) -> list[tuple[WatchId, WatchEvent]]:
        """Take every queued event, by watch id then age."""
        return [(wid, e) for wid in sorted(self._watches) for e in self.drain_events(wid)]

    def _emit(self, kind: EventKind, key: str, version: int | None) -> None:
        for wid, w in self._watches.items():
            if not key.startswith(w.prefix):
                continue
            if len(w.events) >= w.queue_max:
                w.events.clear()
                w.events.append(WatchEvent(EventKind.RESET, w.prefix))
            elif not (w.events and w.events[-1].kind is EventKind.RESET):
                w.events.append(WatchEvent(kind, key, version))
            self._to_notify.add(wid)

    def _flush(self) -> None:
        while self._to_notify:
            wid = min(self._to_notify)
            self._to_notify.discard(wid)
            found = self._watches.get(wid)
            if found is not None and found.notify is not None:
                found.notify(wid)


def _version(results: list[int | None]) -> int:
    version = results[0]
    assert version is not None
    return version
