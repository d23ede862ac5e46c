"""Errors of the coordination layer, placed in planaria's hierarchy by whose fault they are.

- ``Conflict`` (``PeerError``): a precondition did not hold; **nothing** was applied.
  ``VersionConflict``: a key's version was not the expected one (or the key was absent, or
  present for a create). ``LeadershipLost``: a fencing check named a leader that no longer leads.
  ``NodeIdInUse``: another live session holds the node id's registration.
- ``SessionExpired`` (``PeerError``): the session is gone (expired or closed); nothing was
  applied; its ephemeral keys and candidacies are gone too. Open a new session.
- ``CoordinatorUnavailable`` (``UnknownOutcome``): the backend could not be reached or did not
  answer in time. A write **may or may not** have taken effect: re-read before deciding. A
  renewal that failed this way does not extend anything.
- ``MalformedRecord`` (``UsageError``): bytes read from the coordinator are not the record the
  caller expected (someone else's data, or a bug).

Bad arguments (an invalid key, a negative TTL, a session id this backend never issued) raise
``planaria.errors.UsageError``.
"""

from __future__ import annotations

from planaria.errors import PeerError, UnknownOutcome, UsageError

__all__ = [
    "Conflict",
    "CoordinatorUnavailable",
    "LeadershipLost",
    "MalformedRecord",
    "NodeIdInUse",
    "SessionExpired",
    "VersionConflict",
]


class Conflict(PeerError):
    """A compare-and-set precondition failed; nothing was applied.

    ``op_index`` is the position of the failing operation in a ``multi`` (0 for single ops).
    """

    def __init__(self, message: str, *, op_index: int = 0) -> None:
        super().__init__(message)
        self.op_index = op_index


class VersionConflict(Conflict):
    """``key`` was at ``actual`` (None: absent) where ``expected`` (None: absent) was required."""

    def __init__(
        self, key: str, *, expected: int | None, actual: int | None, op_index: int = 0
    ) -> None:
        want = "absent" if expected is None else f"version {expected}"
        have = "absent" if actual is None else f"at version {actual}"
        super().__init__(f"{key}: expected {want}, but it is {have}", op_index=op_index)
        self.key = key
        self.expected = expected
        self.actual = actual


class LeadershipLost(Conflict):
    """The candidate with ``token`` no longer leads ``election`` (``leader_token`` does, or
    nobody when None). A fenced write of a deposed leader fails with this."""

    def __init__(
        self, election: str, *, token: int, leader_token: int | None, op_index: int = 0
    ) -> None:
        now = "nobody leads" if leader_token is None else f"token {leader_token} leads"
        super().__init__(f"{election}: token {token} is not the leader ({now})", op_index=op_index)
        self.election = election
        self.token = token
        self.leader_token = leader_token


class NodeIdInUse(Conflict):
    """``node_id`` is registered by another session, ``holder``, that is still alive:
    another process runs with this node id, or this node's previous incarnation, whose
    lease may still be running. Nothing was applied; the registration frees itself when
    that session ends (closed, or expired: then its lease surely ran out)."""

    def __init__(self, node_id: str, *, holder: int) -> None:
        super().__init__(
            f"node id {node_id} is registered by another live session {holder} (another "
            "process with this node id, or this node's previous incarnation): it frees "
            "when that session ends"
        )
        self.node_id = node_id
        self.holder = holder


class SessionExpired(PeerError):
    """``session`` expired or was closed; nothing was applied. Open a new session."""

    def __init__(self, session: int, message: str = "") -> None:
        super().__init__(message or f"session {session} has expired or was closed")
        self.session = session


class CoordinatorUnavailable(UnknownOutcome):
    """The coordinator could not be reached or did not answer in time.

    A write may or may not have taken effect (a CAS that timed out has an unknown outcome):
    re-read the key before deciding what to do. Reads and renewals simply did not happen.
    """


class MalformedRecord(UsageError):
    """A value read from the coordinator does not decode as the expected record."""
