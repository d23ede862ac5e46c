"""The lease rule: how long a session TTL must be for a node's lease to end before it.

A node serves as primary until ``lease_ms`` after the *send* time of its last acknowledged
session renewal, measured on **its own** clock. The coordinator expires the session
``session_ttl_ms`` after it *received* that renewal, measured on **its own** clock, and only
then does the controller promote another replica. Both clocks are assumed to run at a rate
within ``1 ± drift_max`` of true time (bounded rate drift, each clock independently);
nothing is assumed about their offsets (no synchronized clocks: only durations are
compared, each on one clock).

In true time the lease lasts at most ``lease_ms / (1 - drift_max)`` (the node's clock slow)
and the session at least ``session_ttl_ms / (1 + drift_max)`` (the coordinator's clock fast);
the receive time is never before the send time. ``margin_ms`` (true time) covers the rest:
how late the node notices that its lease ran out (a tick). So the session surely outlives
the lease when::

    session_ttl_ms / (1 + drift_max) >= lease_ms / (1 - drift_max) + margin_ms
"""

from __future__ import annotations

from planaria.errors import UsageError

__all__ = ["lease_max_ms", "session_ttl_min_ms"]


def session_ttl_min_ms(lease_ms: float, *, drift_max: float, margin_ms: float) -> float:
    """The shortest session TTL (coordinator's clock) that outlives a ``lease_ms`` lease
    (node's clock) when either clock may drift by ``drift_max``."""
    _check_drift(drift_max)
    return (lease_ms / (1 - drift_max) + margin_ms) * (1 + drift_max)


def lease_max_ms(session_ttl_ms: float, *, drift_max: float, margin_ms: float) -> float:
    """The longest lease (node's clock) a ``session_ttl_ms`` session outlives: the inverse
    of :func:`session_ttl_min_ms`."""
    _check_drift(drift_max)
    return (session_ttl_ms / (1 + drift_max) - margin_ms) * (1 - drift_max)


def _check_drift(drift_max: float) -> None:
    if not 0 <= drift_max < 1:
        raise UsageError(f"drift_max must be in [0, 1), got {drift_max}")
