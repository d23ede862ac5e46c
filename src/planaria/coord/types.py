"""The values the coordination interface speaks in: keys, versioned values, transaction
operations, watch events, sessions, candidates. Pure (no I/O, no time): shared by every
backend and by the simulator.

Keys are ``/``-separated paths, the common ground of ZooKeeper and etcd: they start with ``/``,
do not end with ``/``, have no empty, ``.`` or ``..`` segment and no NUL. A *prefix* (for
listing, watching and elections) is a directory: it starts and ends with ``/`` (``/`` itself
is every key), and covers every key below it at any depth.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NewType, TypeAlias

from planaria.errors import UsageError

__all__ = [
    "KEY_CHARS_MAX",
    "TOKEN_DIGITS",
    "VALUE_BYTES_MAX",
    "Candidate",
    "CheckLeader",
    "CheckVersion",
    "Create",
    "DeleteIfVersion",
    "EventKind",
    "SessionId",
    "SessionInfo",
    "SetIfVersion",
    "TxnOp",
    "VersionedValue",
    "WatchEvent",
    "candidate_key",
    "candidate_token",
    "leader_of",
    "validate_key",
    "validate_ops",
    "validate_prefix",
    "validate_segment",
    "validate_session_id",
    "validate_ttl_ms",
    "validate_value",
    "validate_version",
]

# Portable limits: ZooKeeper's default jute.maxbuffer is 1 MiB including overhead, etcd's
# request limit 1.5 MiB.
VALUE_BYTES_MAX = 512 * 1024
KEY_CHARS_MAX = 1024
# Candidates are named by their token, zero-padded like ZooKeeper's sequential nodes, so
# lexicographic order is token order.
TOKEN_DIGITS = 10

# Issued by a backend, never reused by it: also the "incarnation" of the owner's process.
SessionId = NewType("SessionId", int)


# --- validation ----------------------------------------------------------------------------


def _check_segments(path: str, what: str) -> None:
    if "\x00" in path:
        raise UsageError(f"{what} {path!r} contains NUL")
    if len(path) > KEY_CHARS_MAX:
        raise UsageError(f"{what} is {len(path)} characters long, over {KEY_CHARS_MAX}")
    inner = path[1:-1] if path.endswith("/") else path[1:]
    if inner == "" and path == "/":
        return
    for segment in inner.split("/"):
        if segment in ("", ".", ".."):
            raise UsageError(f"{what} {path!r} has an empty, '.' or '..' segment")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid key, else raise UsageError saying why."""
    if not isinstance(key, str):
        raise UsageError(f"a key must be a str, not {type(key).__name__}")
    if not key.startswith("/") or key.endswith("/"):
        raise UsageError(f"key {key!r} must start with '/' and must not end with '/'")
    _check_segments(key, "key")
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid directory prefix (``/``, ``/a/``, ...)."""
    if not isinstance(prefix, str):
        raise UsageError(f"a prefix must be a str, not {type(prefix).__name__}")
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise UsageError(f"prefix {prefix!r} must start and end with '/'")
    _check_segments(prefix, "prefix")
    return prefix


def validate_segment(name: object, what: str = "name") -> str:
    """Return ``name`` if it can be one path segment (a node id, a partition number)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise UsageError(f"{what} {name!r} must be a non-empty str without '/' or NUL")
    return name


def validate_value(value: object) -> bytes:
    """Return ``value`` as bytes if it is bytes-like and at most VALUE_BYTES_MAX long."""
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise UsageError(f"a value must be bytes, not {type(value).__name__}")
    if len(value) > VALUE_BYTES_MAX:
        raise UsageError(f"a value of {len(value)} bytes is over the {VALUE_BYTES_MAX} limit")
    return value


def validate_ttl_ms(ttl_ms: object) -> float:
    """Return ``ttl_ms`` as a float if it is a finite number > 0."""
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int | float):
        raise UsageError(f"ttl_ms must be a number, not {type(ttl_ms).__name__}")
    if not math.isfinite(ttl_ms) or ttl_ms <= 0:
        raise UsageError(f"ttl_ms must be finite and > 0, not {ttl_ms}")
    return float(ttl_ms)


def validate_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UsageError(f"a version is an int >= 1, not {version!r}")
    return version


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionedValue:
    """A key's current value. ``version`` is 1 after the create and grows by one on every
    change; a deleted and re-created key starts again at 1 (as in ZooKeeper and etcd), so do
    not compare versions across a deletion. ``session`` owns an ephemeral key (None: the key
    is persistent)."""

    key: str
    value: bytes
    version: int
    session: SessionId | None = None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as the coordinator sees it (coordinator clock, ms).

    ``renewed_ms`` is when the coordinator last received a renewal (or the open);
    ``expires_ms`` when it expires without another. ``alive`` is False once it expired
    (``ended_ms`` = when that was noticed) or was closed.
    """

    session: SessionId
    owner: str
    ttl_ms: float
    opened_ms: float
    renewed_ms: float
    alive: bool = True
    ended_ms: float | None = None
    ended_by: str | None = None  # "expired" or "closed"

    @property
    def expires_ms(self) -> float:
        return self.renewed_ms + self.ttl_ms


@dataclass(frozen=True, slots=True)
class Candidate:
    """One candidacy in an election: the ephemeral key ``key`` (= ``election`` + the token,
    zero-padded) owned by ``session``. The lowest token present leads; ``token`` is the
    fencing token: a new leader always has a larger token than every earlier leader."""

    election: str
    token: int
    session: SessionId
    value: bytes
    key: str


class EventKind(enum.StrEnum):
    PUT = "put"  # the key was created or changed (``version`` is its version then)
    DELETE = "delete"  # the key was deleted (also: its session ended)
    RESET = "reset"  # events may have been lost: re-list the whole prefix (``key`` = prefix)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """Something changed at ``key``. A signal, not a state: re-read after it."""

    kind: EventKind
    key: str
    version: int | None = None


# --- transaction operations ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Create:
    """Create ``key`` if absent; ephemeral (deleted when ``session`` ends) if a session is
    given. Result: the new version (1)."""

    key: str
    value: bytes
    session: SessionId | None = None


@dataclass(frozen=True, slots=True)
class SetIfVersion:
    """Replace the value of ``key`` if it is at ``version``. Result: the new version."""

    key: str
    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class DeleteIfVersion:
    """Delete ``key`` if it is at ``version``. Result: None."""

    key: str
    version: int


@dataclass(frozen=True, slots=True)
class CheckVersion:
    """Require ``key`` to exist at ``version``; changes nothing. Result: None."""

    key: str
    version: int


@dataclass(frozen=True, slots=True)
class CheckLeader:
    """Require the candidate ``token`` to lead ``election`` (fencing). Result: None."""

    election: str
    token: int


TxnOp: TypeAlias = Create | SetIfVersion | DeleteIfVersion | CheckVersion | CheckLeader


def validate_ops(ops: object) -> list[TxnOp]:
    """Return ``ops`` as a list after checking every operation; raise UsageError otherwise.

    At most one operation per key (etcd refuses duplicate keys in a txn), so the order of the
    operations never matters: every condition is evaluated against the state before.
    """
    if isinstance(ops, str | bytes) or not isinstance(ops, Iterable):
        raise UsageError("multi() takes a sequence of operations")
    checked: list[TxnOp] = []
    seen: set[str] = set()
    for op in ops:
        if isinstance(op, CheckLeader):
            key = candidate_key(validate_prefix(op.election), op.token)
        elif isinstance(op, Create | SetIfVersion | DeleteIfVersion | CheckVersion):
            key = validate_key(op.key)
            if isinstance(op, Create | SetIfVersion):
                validate_value(op.value)
            if isinstance(op, SetIfVersion | DeleteIfVersion | CheckVersion):
                validate_version(op.version)
            if isinstance(op, Create) and op.session is not None:
                validate_session_id(op.session)
        else:
            raise UsageError(f"not a transaction operation: {op!r}")
        if key in seen:
            raise UsageError(f"multi() names {key} twice; use one operation per key")
        seen.add(key)
        checked.append(op)
    return checked


def _bad_token(token: object) -> None:
    raise UsageError(f"a fencing token is an int >= 1, not {token!r}")


def validate_session_id(session: object) -> SessionId:
    if isinstance(session, bool) or not isinstance(session, int) or session < 1:
        raise UsageError(f"a session id is an int >= 1, not {session!r}")
    return SessionId(session)


# --- elections -----------------------------------------------------------------------------


def candidate_key(election: str, token: int) -> str:
    """The key of candidate ``token`` in ``election`` (a prefix): ``/ctl/0000000007``."""
    if isinstance(token, bool) or not isinstance(token, int) or token < 1:
        _bad_token(token)
    return f"{election}{token:0{TOKEN_DIGITS}d}"


def candidate_token(election: str, key: str) -> int | None:
    """The token of a candidate key directly under ``election``, or None if ``key`` is not
    one (other keys under an election prefix are ignored)."""
    if not key.startswith(election):
        return None
    name = key[len(election) :]
    if len(name) < TOKEN_DIGITS or not name.isascii() or not name.isdigit():
        return None
    token = int(name)
    return token if token >= 1 else None


def leader_of(election: str, values: Iterable[VersionedValue]) -> Candidate | None:
    """The leader among the keys listed under ``election``: the candidate with the lowest
    token (candidates are ephemeral, so ``session`` is set; other keys are ignored)."""
    best: Candidate | None = None
    for item in values:
        token = candidate_token(election, item.key)
        if token is None or item.session is None:
            continue
        if best is None or token < best.token:
            best = Candidate(election, token, item.session, item.value, item.key)
    return best
