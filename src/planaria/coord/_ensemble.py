"""What the ZooKeeper and etcd backends share: elections on top of the rest of the interface
(stand once per session, then wait, watching the election, until the lowest token is ours),
and the results of an applied ``multi``."""

from __future__ import annotations

import abc
import asyncio
import contextlib

from planaria.coord.errors import CoordinatorUnavailable, LeadershipLost, SessionExpired
from planaria.coord.interface import Coordinator
from planaria.coord.types import (
    Candidate,
    Create,
    SessionId,
    SetIfVersion,
    TxnOp,
    candidate_token,
    leader_of,
    validate_prefix,
    validate_session_id,
    validate_value,
)
from planaria.errors import UsageError

__all__ = ["CampaigningCoordinator", "TtlNotGranted", "applied_results", "grantable_ttl_ms"]


class CampaigningCoordinator(Coordinator):
    """A coordinator whose ``campaign`` is built from ``_stand``, ``watch`` and reads."""

    @abc.abstractmethod
    async def _stand(self, election: str, session: SessionId, value: bytes) -> Candidate:
        """Create a new candidacy of ``session`` in ``election`` (the next token)."""

    @abc.abstractmethod
    async def _session_ended(self, session: SessionId) -> bool:
        """Whether ``session`` has surely ended."""

    async def campaign(self, election: str, session: SessionId, value: bytes = b"") -> Candidate:
        election = validate_prefix(election)
        value = validate_value(value)
        session = validate_session_id(session)
        watch = await self.watch(election)
        mine: Candidate | None = None
        try:
            items = await self.list_prefix(election)
            # Idempotent per session: a retry after an unknown outcome finds its candidacy.
            for item in items:
                token = candidate_token(election, item.key)
                if token is not None and item.session == session:
                    mine = Candidate(election, token, session, item.value, item.key)
                    break
            if mine is None:
                mine = await self._stand(election, session, value)
            while True:
                items = await self.list_prefix(election)
                if not any(item.key == mine.key for item in items):
                    if await self._session_ended(session):
                        raise SessionExpired(session)
                    raise LeadershipLost(election, token=mine.token, leader_token=None)
                leader = leader_of(election, items)
                if leader is not None and leader.token == mine.token:
                    return leader
                await anext(watch)  # any change: look again
        except asyncio.CancelledError:
            if mine is not None:
                # Unreachable: the candidacy vanishes with the session instead.
                with contextlib.suppress(CoordinatorUnavailable):
                    await self.resign(mine)
            raise
        finally:
            await watch.close()


def applied_results(ops: list[TxnOp]) -> list[int | None]:
    """``multi``'s results once every condition held: the new version of each write."""
    results: list[int | None] = []
    for op in ops:
        if isinstance(op, Create):
            results.append(1)
        elif isinstance(op, SetIfVersion):
            results.append(op.version + 1)
        else:
            results.append(None)
    return results


class TtlNotGranted(UsageError):
    """The backend cannot grant a session of exactly ``requested_ms``; ``granted_ms`` is the
    nearest TTL it would grant (ask for that instead)."""

    def __init__(self, message: str, *, requested_ms: float, granted_ms: float) -> None:
        super().__init__(message)
        self.requested_ms = requested_ms
        self.granted_ms = granted_ms


async def grantable_ttl_ms(coordinator: Coordinator, ttl_ms: float, attempts_max: int = 3) -> float:
    """``ttl_ms`` if the backend grants it, else the nearest TTL it grants (found by opening
    and closing a probe session): the node's default when ``--session-ttl-ms`` is absent."""
    for _ in range(attempts_max):
        try:
            session = await coordinator.open_session("planaria-ttl-probe", ttl_ms)
        except TtlNotGranted as exc:
            ttl_ms = exc.granted_ms
            continue
        await coordinator.close_session(session)
        return ttl_ms
    raise UsageError(f"the coordinator grants no session TTL near {ttl_ms} ms")
