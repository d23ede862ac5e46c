"""Messages only the simulated runtime sends (sessions, config reads, ISR proposals).

The protocol's own messages live in ``planaria.core.messages``; these are the runtime's talk
with the coordinator, which a real node would carry over its coordination backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from planaria.core.messages import PartitionConfig, ProposeIsr

__all__ = ["ConfigRead", "ConfigSnapshot", "IsrRequest", "Renew", "RenewAck"]


@dataclass(frozen=True, slots=True)
class Renew:
    """Node -> coordinator: open a session (``session`` is None) or keep one alive.

    ``nonce`` names the node's wish for one session, so a retried or duplicated open gets
    the same session back instead of a second one. ``lost`` and ``data_lost``: the losses
    the node registers with the session, and ``data_id`` the id of its data directory
    (``SessionView``).
    """

    node: str
    nonce: int
    session: int | None
    sent_local_ms: float
    lost: tuple[tuple[int, int], ...] = ()  # (partition, loss id)
    data_lost: int = 0  # the loss id of the whole data directory (0: none)
    data_id: int = 0  # the id of its data directory (0: none)


@dataclass(frozen=True, slots=True)
class RenewAck:
    """Coordinator -> node: the open or renewal sent at ``sent_local_ms`` was accepted
    (``ok``), or the session is gone (the node must open a new one: its lease is over)."""

    nonce: int
    session: int
    sent_local_ms: float
    ok: bool


@dataclass(frozen=True, slots=True)
class ConfigRead:
    """Anyone -> coordinator: send me every partition's config."""


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    configs: tuple[PartitionConfig, ...]


@dataclass(frozen=True, slots=True)
class IsrRequest:
    """Node -> coordinator: a primary's ProposeIsr."""

    node: str
    proposal: ProposeIsr
