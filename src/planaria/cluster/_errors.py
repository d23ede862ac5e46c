"""The errors of the local cluster (all in :mod:`planaria.errors`' hierarchy)."""

from __future__ import annotations

from planaria.errors import PlanariaError, UsageError

__all__ = ["ClusterError", "NoCluster", "PortInUse"]


class ClusterError(PlanariaError):
    """The local cluster could not be started, stopped or inspected (a process died, or the
    cluster did not serve in time); the message says which process and shows its log."""


class PortInUse(UsageError):
    """A port the cluster needs is taken; ``port`` names it."""

    def __init__(self, port: int, host: str, what: str) -> None:
        super().__init__(
            f"port {port} on {host} ({what}) is already in use; stop what holds it or pick "
            "other ports (--port)"
        )
        self.port = port


class NoCluster(UsageError):
    """There is no cluster in the data directory (no cluster.json)."""
