"""The one error hierarchy of planaria.

Every error says whose fault it is, because that decides what a caller may do next:

- ``UsageError``: the caller's input is wrong (a bad key type, an oversized value, a malformed
  history). Retrying the same call cannot help.
- ``PeerError``: the other side refused or failed, and the operation certainly did not take
  effect (no primary, not the primary, a stale epoch, a moved slot). Safe to retry, usually
  after refreshing a routing table or waiting ``retry_after_ms``.
- ``UnknownOutcome``: the operation may or may not have taken effect (a timeout, a connection
  lost after the request was sent). Never report it as a failure; retry only with the same
  request id, so the server can deduplicate.
- ``CircuitOpenError``: a circuit breaker refused the call locally; it was never attempted.
- ``SequenceTooOld``: a write's request id fell below the server's dedup window for its
  client: not applied by this attempt; an earlier attempt may have been. Not worth retrying.
- ``InternalError``: planaria's own fault: a broken invariant. Please report it.
- ``MissingExtra``: an optional dependency is not installed; the message names the extra
  (``pip install 'planaria[server]'``) that brings it.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "HistoryError",
    "InternalError",
    "MissingExtra",
    "Moved",
    "NotPrimary",
    "PeerError",
    "PlanariaError",
    "SequenceTooOld",
    "StaleEpoch",
    "Unavailable",
    "UnknownOutcome",
    "UsageError",
]


class PlanariaError(Exception):
    """Base class of every error planaria raises on purpose."""


class UsageError(PlanariaError, ValueError):
    """The caller's input is wrong; the same call will fail the same way again."""


class HistoryError(UsageError):
    """A history file or event is malformed. Carries where, when it is known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None and line is not None:
            where = f"{path}:{line}: "
        elif path is not None:
            where = f"{path}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(f"{where}{message}")
        self.message = message


class InternalError(PlanariaError):
    """planaria broke one of its own invariants: a bug, never the caller's fault."""


class PeerError(PlanariaError):
    """The peer refused or failed; the operation certainly did not take effect.

    ``retry_after_ms`` is the peer's pushback hint, if it gave one: ``planaria.retry`` waits
    at least that long before the next attempt.
    """

    def __init__(self, message: str = "", *, retry_after_ms: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unavailable(PeerError):
    """No replica can serve the request now (no primary, too few in-sync replicas)."""


class NotPrimary(PeerError):
    """The node asked is not the primary of the partition; ``primary`` names who is, if known."""

    def __init__(
        self, message: str = "", *, primary: str | None = None, retry_after_ms: float | None = None
    ) -> None:
        super().__init__(message, retry_after_ms=retry_after_ms)
        self.primary = primary


class StaleEpoch(PeerError):
    """A message carried an epoch older than the receiver's; the sender must refresh."""

    def __init__(self, message: str = "", *, epoch: int, current_epoch: int) -> None:
        super().__init__(message or f"epoch {epoch} is older than {current_epoch}")
        self.epoch = epoch
        self.current_epoch = current_epoch


class Moved(PeerError):
    """The key's slot is served elsewhere (Redis Cluster's MOVED redirect)."""

    def __init__(self, slot: int, address: str) -> None:
        super().__init__(f"MOVED {slot} {address}")
        self.slot = slot
        self.address = address


class UnknownOutcome(PlanariaError):
    """The operation may or may not have taken effect (a timeout, a lost connection).

    It is not a failure: retry only with the same request id.
    """


class SequenceTooOld(PlanariaError):
    """A write's request id is at or below its client's highest applied sequence number minus
    the server's dedup window (``ReplicaSettings.dedup_window``): the server refused it, and
    no longer knows whether an earlier attempt with that id was applied.

    Retrying the same id gets the same answer. planaria's client never lets its writes in
    flight spread that wide, so this means hand-made REQIDs (or a bug): give every write a
    new sequence number and keep fewer than the window in flight.
    """


class CircuitOpenError(PlanariaError):
    """A circuit breaker refused the call without attempting it.

    ``remaining_s`` is how long until the breaker lets a trial call through; as
    ``retry_after_ms``, the pushback hint ``planaria.retry`` waits for (none while a trial
    runs: then the retry's own backoff).
    """

    def __init__(self, name: str, remaining_s: float) -> None:
        super().__init__(f"circuit {name!r} is open; next trial in {remaining_s:.3f}s")
        self.name = name
        self.remaining_s = remaining_s
        self.retry_after_ms = remaining_s * 1000.0 if remaining_s > 0 else None


class MissingExtra(PlanariaError, ImportError):
    """A module of an optional dependency is not installed (pyproject.toml's extras)."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; it comes with: pip install 'planaria[{extra}]'",
            name=module,
        )
        self.module = module
        self.extra = extra
