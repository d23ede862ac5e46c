"""planaria: a self-healing, sharded, replicated key-value store, and its fault-recovery toolkit."""

from __future__ import annotations

from planaria import _native

_native.install_guard()  # before any compiled module can be imported

from planaria.client import AsyncClient, Client, ReadResult  # noqa: E402
from planaria.errors import (  # noqa: E402
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
    "AsyncClient",
    "CircuitOpenError",
    "Client",
    "HistoryError",
    "InternalError",
    "Moved",
    "NotPrimary",
    "PeerError",
    "PlanariaError",
    "ReadResult",
    "StaleEpoch",
    "Unavailable",
    "UnknownOutcome",
    "UsageError",
    "__version__",
]
