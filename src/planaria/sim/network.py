"""The simulated network: delay, loss, duplication, reordering and (one-way) cuts.

Every message is delivered after its own random delay, so messages between two processes
overtake one another (reordering) whenever delays differ; a small share gets a long delay on
top (a slow path). Loss and duplication are per message. A cut ``(a, b)`` drops everything
``a`` sends to ``b`` (one-way); a partition is a set of cuts. A message to a process that is
down when it arrives is dropped; one to a paused process waits for it (and keeps its order
among the messages from the same sender: ``World.resume``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from planaria.sim.world import Trace, World

__all__ = ["Network", "NetworkSettings"]

Handler = Callable[[str, Any], None]


@dataclass
class NetworkSettings:
    delay_min_ms: float = 0.2
    delay_mean_ms: float = 1.0  # mean of the exponential part on top of the minimum
    slow_probability: float = 0.0  # share of messages that take a slow path
    slow_delay_ms: float = 30.0  # mean extra delay on the slow path
    loss: float = 0.0
    duplication: float = 0.0


@dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    cut: int = 0
    duplicated: int = 0


class Network:
    """Routes ``send(src, dst, message)`` to ``handlers[dst](src, message)`` after a delay."""

    def __init__(self, world: World, settings: NetworkSettings | None = None) -> None:
        self.world = world
        self.settings = settings or NetworkSettings()
        self.calm = NetworkSettings(
            delay_min_ms=self.settings.delay_min_ms, delay_mean_ms=self.settings.delay_mean_ms
        )
        self.cuts: set[tuple[str, str]] = set()
        self.handlers: dict[str, Handler] = {}
        self.stats = NetworkStats()
        self.tracer: Trace | None = None

    def register(self, pid: str, handler: Handler) -> None:
        self.handlers[pid] = handler

    def send(self, src: str, dst: str, message: Any) -> None:
        stats, settings, rng = self.stats, self.settings, self.world.rng
        stats.sent += 1
        if (src, dst) in self.cuts:
            stats.cut += 1
            return
        if settings.loss and rng.random() < settings.loss:
            stats.lost += 1
            return
        copies = 1
        if settings.duplication and rng.random() < settings.duplication:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            delay = settings.delay_min_ms + rng.expovariate(1.0 / settings.delay_mean_ms)
            if settings.slow_probability and rng.random() < settings.slow_probability:
                delay += rng.expovariate(1.0 / settings.slow_delay_ms)
            self.world.schedule(delay, dst, self._deliver, (src, dst, message), channel=src)

    def _deliver(self, packet: tuple[str, str, Any]) -> None:
        src, dst, message = packet
        self.stats.delivered += 1
        if self.tracer is not None:
            self.tracer.add(self.world.now_ms, dst, f"<- {src}", message)
        self.handlers[dst](src, message)

    # ------------------------------------------------------------------ faults

    def cut(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.cuts.update(pairs)

    def split(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Cut both ways between two groups."""
        a, b = sorted(side_a), sorted(side_b)
        self.cuts.update((x, y) for x in a for y in b)
        self.cuts.update((y, x) for x in a for y in b)

    def heal(self) -> None:
        self.cuts.clear()

    def degrade(self, settings: NetworkSettings) -> None:
        self.settings = settings

    def calm_down(self) -> None:
        self.settings = self.calm
