"""planaria: a self-healing, sharded, replicated key-value store, and its fault-recovery toolkit."""

from __future__ import annotations

from planaria.errors import (
    CircuitOpenError,
    HistoryError,
    InternalError,
    Moved,
    NotPrimary,
    PeerError,
    PlanariaError,
    StaleEpoch,
    Unavailable,
    UnknownOutcome,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "CircuitOpenError",
    "HistoryError",
    "InternalError",
    "Moved",
    "NotPrimary",
    "PeerError",
    "PlanariaError",
    "StaleEpoch",
    "Unavailable",
    "UnknownOutcome",
    "UsageError",
    "__version__",
]
