"""planaria: a self-healing, sharded, replicated key-value store, and its fault-recovery toolkit.

The front is lazy: ``import planaria`` (which every ``import planaria.x`` runs first) loads
only the errors, so the pure core, the toolkit and the simulator never pull in the client's
asyncio, sockets and hiredis. ``planaria.Client`` imports the client on first use
(docs/architecture.md; tests/test_layers.py checks it at run time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from planaria import _native
from planaria._lazy import lazy_front

_native.install_guard()  # before any compiled module can be imported

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

if TYPE_CHECKING:
    from planaria.client import AsyncClient, Client, ReadResult

__version__ = "0.1.0"

# name -> the module that defines it, imported on first access
_LAZY = {
    "AsyncClient": "planaria.client",
    "Client": "planaria.client",
    "ReadResult": "planaria.client",
}

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


__getattr__, __dir__ = lazy_front("planaria", _LAZY, globals())
