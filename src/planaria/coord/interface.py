"""The coordination interface: what planaria needs from ZooKeeper, etcd or the memory backend.

Every backend implements :class:`Coordinator` with the same meaning and passes the same
conformance suite (``tests/coord/conformance.py``). See docs/coordination.md.

**Guarantees every backend gives**

- *Linearizable*: every call takes effect atomically at one instant between its start and its
  return, in one total order shared by all clients; a read returns the latest write that
  completed before the read began (the ZooKeeper backend must ``sync`` before reading).
  Calls one task awaits one after another take effect in that order.
- *Definite or unknown*: a call either returns (it happened), raises a definite error
  (``Conflict``, ``SessionExpired``, ``UsageError``: it did **not** happen), or raises
  ``CoordinatorUnavailable`` (``UnknownOutcome``: it may have happened, e.g. a CAS whose reply
  was lost; re-read before deciding).
- *Sessions*: a session expires no earlier than ``ttl_ms`` after the coordinator **received**
  its last renewal (coordinator's clock), and then its ephemeral keys and candidacies vanish
  in one atomic step. So a node that counts its lease from the **send** time of an
  acknowledged renewal (``lease_ms``, its own clock) has surely lost its lease when its
  session expires, with both clocks drifting: ``planaria.core.lease`` has the rule. How
  late after the deadline expiry is noticed is backend-specific (memory: at its next
  check; ZooKeeper: about a tick).
- *Watches* deliver, per watch, events in the order the changes happened, at least once:
  after any change under the prefix that happens after :meth:`Coordinator.watch` returned,
  at least one later event names that key (or is a ``RESET``). Events may be coalesced or
  repeated, and carry no values: **after an event, re-read**. To miss nothing, watch first,
  then read.
- *Elections*: the candidate with the lowest token leads; tokens of later leaders are
  strictly larger (the fencing token). Leadership ends with the leader's session or
  :meth:`resign`. Fence every write of a leader with :class:`CheckLeader` in a ``multi``.
- *Unreachable*: every call raises ``CoordinatorUnavailable`` after the backend's request
  timeout rather than blocking forever; a watch survives reconnection, delivering a
  ``RESET`` if it may have missed events. A session is not expired by the client losing its
  connection: only the coordinator expires it, by its TTL.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

from planaria.coord.errors import VersionConflict
from planaria.coord.layout import MEMBERS_PREFIX, Registration, decode_registration
from planaria.coord.types import (
    Candidate,
    Create,
    DeleteIfVersion,
    SessionId,
    SetIfVersion,
    TxnOp,
    VersionedValue,
    WatchEvent,
    leader_of,
    validate_prefix,
)
from planaria.errors import InternalError

__all__ = ["Coordinator", "Watch"]


class Watch(abc.ABC):
    """A subscription to changes under ``prefix``: ``async for event in watch``.

    Iteration ends (``StopAsyncIteration``) once the watch or its coordinator is closed.
    Use it as an async context manager to close it.
    """

    prefix: str

    def __aiter__(self) -> Watch:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> WatchEvent:
        """The next event, waiting for one. Never raises ``CoordinatorUnavailable``: while
        the backend is unreachable it waits, then delivers a ``RESET`` if events were lost."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the subscription (idempotent); a pending ``__anext__`` ends."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Coordinator(abc.ABC):
    """One client of a coordination backend. Not shared between event loops.

    Keys and prefixes follow ``planaria.coord.types`` (paths; prefixes end with ``/``).
    Every method raises ``UsageError`` on bad arguments or after :meth:`close`, and
    ``CoordinatorUnavailable`` when the backend cannot be reached (unknown outcome).
    """

    # --- sessions ----------------------------------------------------------------------

    @abc.abstractmethod
    async def open_session(self, owner: str, ttl_ms: float) -> SessionId:
        """Open a session that expires ``ttl_ms`` after its last renewal; ``owner`` (a node
        id, for diagnostics) need not be unique. The id is never reused by this backend (it
        serves as the owner process's incarnation). A backend that cannot grant exactly
        ``ttl_ms`` (outside ZooKeeper's negotiable range) raises ``UsageError``: a shorter
        TTL would break the lease rule, a longer one would slow failover silently."""

    @abc.abstractmethod
    async def keep_alive(self, session: SessionId) -> None:
        """Renew ``session``; returns once the coordinator acknowledged the renewal (the
        caller's lease may count from when it **sent** this call). ``SessionExpired`` if the
        session already ended (a renewal never revives one); ``CoordinatorUnavailable``:
        the renewal may not have arrived, extend nothing."""

    @abc.abstractmethod
    async def close_session(self, session: SessionId) -> None:
        """End ``session`` now: its ephemeral keys and candidacies vanish atomically.
        Closing an ended session does nothing."""

    # --- versioned keys ----------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, key: str) -> VersionedValue | None:
        """The key's value, version and owner session, or None if absent."""

    @abc.abstractmethod
    async def list_prefix(self, prefix: str) -> list[VersionedValue]:
        """Every key under ``prefix`` (any depth), sorted by key: one consistent snapshot."""

    @abc.abstractmethod
    async def multi(self, ops: Sequence[TxnOp]) -> list[int | None]:
        """Apply ``ops`` atomically (ZooKeeper multi, etcd txn): all or none.

        One operation per key (``UsageError`` otherwise); every condition is checked against
        the state before the transaction. Returns one result per op: the new version for
        ``Create``/``SetIfVersion``, None otherwise. Raises ``VersionConflict`` or
        ``LeadershipLost`` (a ``Conflict``, ``op_index`` = the first failing op) or
        ``SessionExpired`` (a ``Create`` for an ended session); then nothing was applied.
        """

    async def create(self, key: str, value: bytes, *, session: SessionId | None = None) -> int:
        """Create ``key`` if absent (ephemeral when ``session`` is given); returns version 1.
        ``VersionConflict(expected=None, actual=v)`` if it exists."""
        return _version(await self.multi([Create(key, value, session)]))

    async def set_if_version(self, key: str, value: bytes, *, version: int) -> int:
        """Replace the value if ``key`` is at ``version``; returns the new version.
        ``VersionConflict`` if it is absent or at another version."""
        return _version(await self.multi([SetIfVersion(key, value, version)]))

    async def delete_if_version(self, key: str, *, version: int) -> None:
        """Delete ``key`` if it is at ``version``; ``VersionConflict`` otherwise."""
        await self.multi([DeleteIfVersion(key, version)])

    # --- membership --------------------------------------------------------------------

    @abc.abstractmethod
    async def register(
        self,
        session: SessionId,
        node_id: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Registration:
        """Publish ``node_id -> address, metadata`` as an ephemeral of ``session`` at
        ``member_key(node_id)``. Re-registering with the same session updates it. While
        another session holds the node id (another process with it, or an older
        incarnation whose session has not ended), ``NodeIdInUse`` and nothing changes:
        taking it over would let the controller see the node's new incarnation and fail
        its partitions over before the old one's lease ran out. The old registration
        vanishes with its session. ``SessionExpired`` if ``session`` ended."""

    async def members(self) -> dict[str, Registration]:
        """Every registered node, by node id (watch ``MEMBERS_PREFIX`` for changes)."""
        items = await self.list_prefix(MEMBERS_PREFIX)
        registrations = (decode_registration(item) for item in items)
        return {reg.node_id: reg for reg in registrations}

    # --- watches -----------------------------------------------------------------------

    @abc.abstractmethod
    async def watch(self, prefix: str) -> Watch:
        """Subscribe to changes under ``prefix``; events start with the first change after
        this returns. See the module docstring for the delivery guarantees."""

    # --- election ----------------------------------------------------------------------

    @abc.abstractmethod
    async def campaign(self, election: str, session: SessionId, value: bytes = b"") -> Candidate:
        """Stand as a candidate in ``election`` (a prefix) and wait until leading; returns
        the leading candidacy (``token`` is the fencing token). Idempotent per (election,
        session): a retry after ``CoordinatorUnavailable`` reuses the same candidacy.
        ``SessionExpired`` if the session ends while waiting; cancelling withdraws the
        candidacy (or it vanishes with the session if the backend is unreachable)."""

    async def leader(self, election: str) -> Candidate | None:
        """The current leader of ``election`` (the lowest token), or None."""
        election = validate_prefix(election)
        return leader_of(election, await self.list_prefix(election))

    async def resign(self, candidate: Candidate) -> None:
        """Withdraw ``candidate`` (leading or waiting); does nothing if it is already gone."""
        current = await self.get(candidate.key)
        if current is None or current.session != candidate.session:
            return
        try:
            await self.delete_if_version(candidate.key, version=current.version)
        except VersionConflict as exc:
            if exc.actual is not None:
                raise

    # --- lifecycle ---------------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every watch and every session this client opened (their ephemerals vanish;
        if the backend is unreachable they expire by TTL). Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _version(results: list[int | None]) -> int:
    version = results[0]
    if version is None:
        raise InternalError("the backend returned no version for a write")
    return version
