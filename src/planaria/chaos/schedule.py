"""The nemesis schedule: which fault, on which node, when and for how long (pure).

A schedule is a tuple of :class:`Fault`, one at a time: each fault starts, lasts its
``duration_s`` and is healed before the next one starts, and the run ends with a quiet tail
so the system can recover before the final reads. Randomness comes from an injected, seeded
``random.Random``: the same seed gives the same schedule for every target, which is what
makes the side-by-side comparison fair.

Scripted schedules use a small text form, comma-separated::

    kill@2+3,pause:n2@8+3,partition:leader@14+4

``KIND[:NODE]@START+DURATION`` (seconds from the start of the workload); ``NODE`` is
``leader`` (the node leading the most shards when the fault starts; the default) or ``nK``
(the K-th node, from 1).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from planaria.errors import UsageError

__all__ = [
    "FAULT_KINDS",
    "LEADER",
    "Fault",
    "format_schedule",
    "parse_faults",
    "parse_schedule",
    "random_schedule",
]

FAULT_KINDS: Final = ("kill", "pause", "partition")
LEADER: Final = "leader"

_WARMUP_S: Final = 2.0
_FAULT_S: Final = (2.0, 5.0)  # a fault lasts this long (uniform)
_GAP_S: Final = (2.5, 4.0)  # healthy time between faults (uniform)
_QUIET_TAIL_S: Final = 3.0
_LEADER_SHARE: Final = 2 / 3  # the rest target a node picked at random


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: ``kind`` (kill: kill -9 then restart at the end; pause: SIGSTOP then
    SIGCONT; partition: the node is cut off from the other nodes, clients still reach every
    node) on ``node`` (``leader`` or ``nK``) from ``start_s`` for ``duration_s``."""

    kind: str
    node: str
    start_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise UsageError(f"unknown fault {self.kind!r} (known: {', '.join(FAULT_KINDS)})")
        if self.node != LEADER and not (self.node.startswith("n") and self.node[1:].isdigit()):
            raise UsageError(f"a fault's node is 'leader' or nK (n1, n2, ...), not {self.node!r}")
        if self.start_s < 0 or self.duration_s <= 0:
            raise UsageError(f"a fault needs start >= 0 and duration > 0: {self}")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def describe(self) -> str:
        return f"{self.kind}:{self.node}@{self.start_s:g}+{self.duration_s:g}"


def parse_faults(text: str) -> tuple[str, ...]:
    """``kill,pause,partition`` -> the fault kinds, validated, in order, without repeats."""
    kinds = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown or not kinds:
        raise UsageError(
            f"--faults takes a comma-separated list of {', '.join(FAULT_KINDS)}, not {text!r}"
        )
    return kinds


def random_schedule(
    rng: random.Random,
    *,
    duration_s: float,
    kinds: Sequence[str],
    nodes: int,
) -> tuple[Fault, ...]:
    """Faults one after another from a short warm-up until a quiet tail before
    ``duration_s``; kinds cycle through ``kinds`` in an order shuffled per round, so a short
    run still sees each kind. Fault and gap lengths shrink for runs under 30 s."""
    if not kinds:
        raise UsageError("a schedule needs at least one fault kind")
    for kind in kinds:
        if kind not in FAULT_KINDS:
            raise UsageError(f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
    if nodes < 1:
        raise UsageError(f"a schedule needs at least one node, not {nodes}")
    scale = min(1.0, duration_s / 30.0)
    faults: list[Fault] = []
    order: list[str] = []
    moment = _WARMUP_S
    while True:
        length = round(rng.uniform(*_FAULT_S) * max(scale, 0.6), 2)
        start_s = round(moment, 2)  # as recorded: rounding up must not eat the quiet tail
        if start_s + length > duration_s - _QUIET_TAIL_S:
            break
        if not order:
            order = list(kinds)
            rng.shuffle(order)
        kind = order.pop(0)
        node = LEADER if rng.random() < _LEADER_SHARE else f"n{rng.randint(1, nodes)}"
        faults.append(Fault(kind, node, start_s, length))
        moment += length + rng.uniform(*_GAP_S) * max(scale, 0.6)
    return tuple(faults)


def parse_schedule(text: str, *, nodes: int) -> tuple[Fault, ...]:
    """A scripted schedule (see the module docstring); faults must not overlap."""
    faults: list[Fault] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            what, when = part.split("@", 1)
            start, duration = when.split("+", 1)
            start_s, duration_s = float(start), float(duration)
        except ValueError as exc:
            raise UsageError(
                f"bad fault {part!r}: expected KIND[:NODE]@START+DURATION, e.g. kill:n1@2+3"
            ) from exc
        kind, _, node = what.partition(":")
        fault = Fault(kind, node or LEADER, start_s, duration_s)
        if fault.node != LEADER and not 1 <= int(fault.node[1:]) <= nodes:
            raise UsageError(f"fault {part!r}: there are only {nodes} nodes")
        faults.append(fault)
    faults.sort(key=lambda f: f.start_s)
    for before, after in itertools.pairwise(faults):
        if after.start_s < before.end_s:
            raise UsageError(f"faults overlap: {before.describe()} and {after.describe()}")
    if not faults:
        raise UsageError(f"the schedule {text!r} has no faults")
    return tuple(faults)


def format_schedule(faults: Sequence[Fault]) -> str:
    """The scripted form of ``faults`` (parse_schedule reads it back)."""
    return ",".join(fault.describe() for fault in faults)
