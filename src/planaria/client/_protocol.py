"""What the client says and hears: RESP command encoding, key and value coercion, and the
mapping of a node's error replies onto planaria's errors (see ``net.commands.error_reply``).

Every error reply but one is a definite answer (the node did not apply the request). MOVED,
TRYAGAIN, CLUSTERDOWN, BUSY, LOADING and MASTERDOWN are worth retrying; anything else (``-ERR``
and friends) is the caller's mistake and raised at once as :class:`CommandRefused`. The
exception is ``-UNKNOWN``: a planaria node could not learn whether a write it took was
committed (its primary stepped down, or the write waited too long), so it is
:class:`~planaria.errors.UnknownOutcome`, retried only with the same request id. And
``-SEQTOOOLD`` (:class:`~planaria.errors.SequenceTooOld`, not retried): the write's REQID
fell below the node's dedup window, so an earlier attempt may or may not have been applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from planaria.errors import (
    InternalError,
    Moved,
    PeerError,
    SequenceTooOld,
    Unavailable,
    UnknownOutcome,
    UsageError,
)

__all__ = [
    "ClusterDown",
    "CommandRefused",
    "Overloaded",
    "TryAgain",
    "encode_command",
    "error_from_reply",
    "to_bytes",
]


class TryAgain(PeerError):
    """-TRYAGAIN: the partition is briefly not ready (a primary reconciling or renewing its
    lease, a stale epoch); the request was not applied."""


class ClusterDown(Unavailable):
    """-CLUSTERDOWN: the partition has no primary or too few in-sync replicas right now."""


class Overloaded(PeerError):
    """-BUSY (or too many connections): the node refused the load; back off."""


class CommandRefused(UsageError):
    """The node refused the request as malformed (``-ERR ...``); retrying cannot help."""


def to_bytes(what: str, value: object) -> bytes:
    """``value`` as bytes: str is UTF-8 encoded; anything but str or bytes is refused."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise UsageError(f"{what} must be str or bytes, not {type(value).__name__}")


def encode_command(args: Sequence[bytes]) -> bytes:
    """``args`` as one RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


_RETRYABLE: dict[str, type[PeerError]] = {
    "TRYAGAIN": TryAgain,
    "CLUSTERDOWN": ClusterDown,
    "BUSY": Overloaded,
    "LOADING": TryAgain,
    "MASTERDOWN": ClusterDown,
}


def error_from_reply(message: str, origin_host: str) -> Exception:
    """The exception for the error reply ``message`` received from a node on ``origin_host``
    (a MOVED to ``:port`` means that same host, as Redis writes it)."""
    code, _, rest = message.partition(" ")
    if code == "MOVED":
        slot_text, _, address = rest.partition(" ")
        if not slot_text.isdigit() or ":" not in address:
            return InternalError(f"malformed MOVED reply: {message!r}")
        if address.startswith(":"):
            address = origin_host + address
        return Moved(int(slot_text), address)
    if code == "UNKNOWN":
        return UnknownOutcome(message)
    if code == "SEQTOOOLD":
        return SequenceTooOld(message)
    kind = _RETRYABLE.get(code)
    if kind is not None:
        return kind(message)
    if message.startswith("ERR max number of clients"):
        return Overloaded(message)
    if message.startswith("ERR internal error"):
        return InternalError(f"the node failed: {message}")
    return CommandRefused(message)
