"""Generated histories with known verdicts, for tests and benchmarks of the checker.

:func:`generate` simulates ``clients`` processes, each issuing ``ops_per_client``
operations one after another on ``keys`` keys, against a perfect store: every operation
takes effect at a moment strictly inside its interval, in one global order, so the history
is linearizable by construction. ``concurrency`` is the fraction of time each client has an
operation pending (0 < c <= 1); about ``concurrency * clients / keys`` operations are then in
flight on one key at once.

With ``violation`` set, the clients leave one key alone for a short window in the middle of
the run, and an extra process (the auditor, process number ``clients``) runs a short
sequence there whose outcome no order can explain, whatever happened before:

- ``stale-read``: put A, put B, get -> A (a value overwritten before the read began);
- ``lost-write``: put B, get -> the value before B (an acknowledged write never seen);
- ``double-write``: on kv put A, append T, get -> A T T; on a register write A, write B,
  read B, read A (a write that took effect twice);
- ``phantom-read``: get -> a value nobody ever wrote.

The auditor's operations are sequential and nothing else touches the key meanwhile (no
operation of unknown outcome ever touches that key), so the history is not linearizable
however the rest is ordered. Pure and deterministic: a seeded :class:`random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

from planaria.check.history import Event, EventType
from planaria.errors import HistoryError

__all__ = ["MODELS", "VIOLATIONS", "GeneratedHistory", "HistorySpec", "generate"]

VIOLATIONS: Final = ("stale-read", "lost-write", "double-write", "phantom-read")
MODELS: Final = ("kv", "cas-register")

_MEAN_DURATION: Final = 10  # ticks an operation is pending, on average
_WINDOW: Final = 40  # ticks the violation key is left to the auditor


@dataclass(frozen=True, slots=True)
class HistorySpec:
    """What to generate; see the module docstring."""

    model: str = "kv"
    clients: int = 10
    keys: int = 5
    ops_per_client: int = 20
    concurrency: float = 0.5
    violation: str | None = None
    info_rate: float = 0.0  # share of writes whose outcome is unknown (info)
    seed: int = 0

    def validate(self) -> None:
        if self.model not in MODELS:
            raise HistoryError(f"cannot generate model {self.model!r}; expected one of {MODELS}")
        if self.violation is not None and self.violation not in VIOLATIONS:
            raise HistoryError(
                f"unknown violation {self.violation!r}; expected one of {VIOLATIONS}"
            )
        if self.clients < 1 or self.keys < 1 or self.ops_per_client < 1:
            raise HistoryError("clients, keys and ops_per_client must be at least 1")
        if not 0 < self.concurrency <= 1:
            raise HistoryError(f"concurrency must be in (0, 1], not {self.concurrency}")
        if not 0 <= self.info_rate <= 1:
            raise HistoryError(f"info_rate must be in [0, 1], not {self.info_rate}")


@dataclass(frozen=True, slots=True)
class GeneratedHistory:
    """The events, in time order, and the verdict the history must get."""

    spec: HistorySpec
    events: tuple[Event, ...]
    linearizable: bool
    violation_key: Hashable = None


@dataclass(slots=True)
class _Op:
    process: int
    f: str
    key: str
    value: Hashable
    call: int
    ret: int
    effect_at: float  # when it takes effect; +inf: never
    info: bool = False
    output: Hashable = None
    failed: bool = False


def generate(spec: HistorySpec) -> GeneratedHistory:
    """A history as ``spec`` says (see the module docstring)."""
    spec.validate()
    rng = random.Random(spec.seed)
    keys = [str(k) for k in range(spec.keys)]
    violation_key = keys[0] if spec.violation is not None else None
    mean_think = _MEAN_DURATION * (1 - spec.concurrency) / spec.concurrency
    run_ticks = spec.ops_per_client * (_MEAN_DURATION + mean_think)
    window = (int(run_ticks / 2), int(run_ticks / 2) + _WINDOW)
    ops: list[_Op] = []
    written: dict[str, list[Hashable]] = {k: [None] for k in keys}
    for client in range(spec.clients):
        now = rng.randint(0, int(2 * mean_think))
        for n in range(spec.ops_per_client):
            duration = rng.randint(2, 2 * _MEAN_DURATION - 2)
            key = rng.choice(keys)
            if key == violation_key and now <= window[1] and now + duration >= window[0]:
                if len(keys) == 1:
                    now = window[1] + 1
                else:
                    key = rng.choice(keys[1:])
            who, when = (client, n), (now, duration)
            op = _client_op(spec.model, rng, who, key, when, written=written[key])
            unknown = rng.random() < spec.info_rate
            if unknown and op.f not in ("get", "read") and key != violation_key:
                op.info = True
                if rng.random() < 0.5:
                    op.effect_at = float("inf")
            ops.append(op)
            now += duration + rng.randint(0, int(2 * mean_think))
    _apply(spec.model, ops)
    if spec.violation is not None:
        assert violation_key is not None
        ops.extend(_auditor(spec, violation_key, window[0], ops))
    return GeneratedHistory(spec, _events(ops), spec.violation is None, violation_key)


def _client_op(
    model: str,
    rng: random.Random,
    who: tuple[int, int],
    key: str,
    when: tuple[int, int],
    *,
    written: list[Hashable],
) -> _Op:
    """Operation ``n`` of ``client`` (``who``), called at ``call`` for ``duration`` ticks
    (``when``)."""
    client, n = who
    call, duration = when
    effect_at = rng.randint(call + 1, call + duration - 1)
    roll = rng.random()
    if model == "kv":
        if roll < 0.5:
            return _Op(client, "get", key, None, call, call + duration, effect_at)
        if roll < 0.75:
            return _Op(client, "put", key, f"v{client}.{n}", call, call + duration, effect_at)
        return _Op(client, "append", key, f" {client}.{n}", call, call + duration, effect_at)
    if roll < 0.5:
        return _Op(client, "read", key, None, call, call + duration, effect_at)
    value = (client + 1) * 1_000_000 + n
    written.append(value)
    if roll < 0.8:
        return _Op(client, "write", key, value, call, call + duration, effect_at)
    # A cas expecting a value written recently: it succeeds often enough to matter.
    old = rng.choice(written[-4:-1]) if len(written) > 1 else None
    return _Op(client, "cas", key, (old, value), call, call + duration, effect_at)


def _apply(model: str, ops: list[_Op]) -> dict[str, Hashable]:
    """Run the operations in effect order on a perfect store: their outputs, and the end
    state of each key."""
    state: dict[str, Hashable] = {}
    for op in sorted(ops, key=lambda o: o.effect_at):
        if op.effect_at == float("inf"):
            continue
        current = state.get(op.key)
        if op.f in ("get", "read"):
            op.output = current
        elif op.f in ("put", "write"):
            state[op.key] = op.output = op.value
        elif op.f == "append":
            assert isinstance(op.value, str)
            state[op.key] = (current if isinstance(current, str) else "") + op.value
            op.output = op.value
        else:
            assert isinstance(op.value, tuple)
            old, new = op.value
            if current == old:
                state[op.key] = new
                op.output = op.value
            else:
                op.failed = True
    return state


def _auditor(spec: HistorySpec, key: str, start: int, ops: list[_Op]) -> list[_Op]:
    before = [op for op in ops if op.key == key and op.effect_at < start]
    value_before = _apply(spec.model, before).get(key)
    # _apply wrote outputs again for ``before``: the same ones, as the order is the same.
    process = spec.clients
    kv = spec.model == "kv"
    get, put = ("get", "put") if kv else ("read", "write")
    first, second = ("A", "B") if kv else (-1, -2)
    plan: list[tuple[str, Hashable, Hashable]]  # (f, value, output)
    if spec.violation == "stale-read":
        plan = [(put, first, first), (put, second, second), (get, None, first)]
    elif spec.violation == "lost-write":
        plan = [(put, second, second), (get, None, value_before)]
    elif spec.violation == "double-write" and kv:
        plan = [(put, first, first), ("append", " T", " T"), (get, None, "A T T")]
    elif spec.violation == "double-write":
        plan = [(put, first, first), (put, second, second), (get, None, second), (get, None, first)]
    else:
        plan = [(get, None, "never written" if kv else -3)]
    audit: list[_Op] = []
    for n, (f, value, output) in enumerate(plan):
        call = start + 2 + 4 * n
        audit.append(_Op(process, f, key, value, call, call + 2, call + 1, output=output))
    return audit


def _events(ops: list[_Op]) -> tuple[Event, ...]:
    timed: list[tuple[int, int, int, Event]] = []
    for number, op in enumerate(ops):
        invoke_value = None if op.f in ("get", "read") else op.value
        timed.append((op.call, 1, number, Event(op.process, "invoke", op.f, op.key, invoke_value)))
        kind: EventType = "info" if op.info else "fail" if op.failed else "ok"
        value = op.output if kind == "ok" else None
        timed.append((op.ret, 0, number, Event(op.process, kind, op.f, op.key, value)))
    # Completions before invocations at the same tick: a client's next call may start the
    # moment its last one returned.
    timed.sort(key=lambda item: item[:3])
    return tuple(
        Event(e.process, e.type, e.f, e.key, e.value, float(time), line)
        for line, (time, _, _, e) in enumerate(timed, start=1)
    )
