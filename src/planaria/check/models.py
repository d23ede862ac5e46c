"""Sequential specifications the checker compares histories against.

A model is a small object: ``init()`` gives the initial state, ``step(state, input,
output)`` says whether an operation with that input may return that output in that state
and what the state becomes, ``partition(ops)`` splits a history into independent
sub-histories (P-compositionality), ``shortcut(op)`` tells the search what a read or a blind
write does without a call to ``step`` (or None), ``reach(ops)`` which states may follow
which within a partition (or None), and ``describe_*`` render operations and states for
people. States must be hashable values (the search memoizes on them). An output of
:data:`~planaria.check.history.UNKNOWN` means the outcome is unknown: the operation must then
be accepted in any state, with the effect it would have had.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from planaria.check.history import UNKNOWN, Operation
from planaria.errors import HistoryError

__all__ = [
    "FITS",
    "MODELS",
    "SETS",
    "STALE_READ",
    "CasRegister",
    "Grows",
    "Input",
    "KvModel",
    "Model",
    "Reach",
    "Shortcut",
    "model_named",
]


# A read that may return any value the key held at some instant no later than its completion
# (a backup's stale read): the search may place it anywhere before it returned, even before
# it was invoked. Only the kv model has it.
STALE_READ: Final = "stale-read"

# What an operation does, as far as the search needs no call to ``step`` to know it
# (``Model.shortcut``): FITS v, legal exactly in the state equal to v, which it keeps (a read
# of known outcome); SETS v, legal in every state, which becomes v (a blind write).
FITS: Final = "fits"
SETS: Final = "sets"
Shortcut = tuple[str, Hashable]


@dataclass(frozen=True, slots=True)
class Input:
    """What an operation asked for: its function and argument."""

    f: str
    value: Hashable


class Reach:
    """Which states may follow which within one partition, blind writes (SETS) aside
    (``Model.reach``); this one: a state only a blind write changes."""

    def may_lead(self, state: Hashable, target: Hashable) -> bool:
        """False when no sequence of the partition's other operations leads from ``state``
        to ``target`` (sound: True when unsure)."""
        return bool(state == target)

    def sources(self, values: Iterable[Hashable]) -> Callable[[Hashable], list[Hashable]]:
        """Given the states blind writes leave: a function from a target to those of them
        that may lead to it (a lookup, not a test of each)."""
        known = set(values)
        return lambda target: [target] if target in known else []


class Grows(Reach):
    """A string state that appends of strings only extend (the missing value: to anything)."""

    def __init__(self, missing: Hashable) -> None:
        self._missing = missing

    def may_lead(self, state: Hashable, target: Hashable) -> bool:
        if not isinstance(state, str) or state == self._missing:
            return True
        return isinstance(target, str) and target.startswith(state)

    def sources(self, values: Iterable[Hashable]) -> Callable[[Hashable], list[Hashable]]:
        strings = {v for v in values if isinstance(v, str) and v != self._missing}
        anywhere = [v for v in set(values) if v not in strings]
        lengths = sorted({len(v) for v in strings})

        def leading(target: Hashable) -> list[Hashable]:
            if not isinstance(target, str):
                return anywhere
            cut = [target[:n] for n in lengths if n <= len(target)]
            return anywhere + [prefix for prefix in cut if prefix in strings]

        return leading


class Model(Protocol):
    """The interface every model implements."""

    name: str

    def init(self) -> Hashable: ...

    def step(self, state: Hashable, input: Input, output: Hashable) -> tuple[bool, Hashable]: ...

    def partition(self, ops: Sequence[Operation]) -> list[tuple[Hashable, list[Operation]]]: ...

    def validate(self, op: Operation) -> str | None:
        """Why ``op`` is not an operation of this model, or None when it is."""
        ...

    def has_effect(self, op: Operation) -> bool:
        """False when the operation can never change the state (a read)."""
        ...

    def impossible(self, ops: Sequence[Operation]) -> tuple[Operation, str] | None:
        """A cheap, sound pre-check: an operation no order can make legal, and why."""
        ...

    def shortcut(self, op: Operation) -> Shortcut | None:
        """``(FITS, v)`` or ``(SETS, v)`` when that is all ``step`` would say about ``op``
        (the search then indexes reads by the state they fit and skips the call), else None."""
        ...

    def reach(self, ops: Sequence[Operation]) -> Reach | None:
        """For one partition's operations: a sound test of which states may follow which,
        blind writes aside (the search drops a configuration whose state can no longer lead
        to the value a pending read returned, unless a pending blind write can); None when
        any state may follow any."""
        ...

    def describe_op(self, op: Operation) -> str: ...

    def describe_state(self, state: Hashable) -> str: ...


def _show(value: Hashable) -> str:
    if value is None:
        return "nil"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + " ".join(_show(v) for v in value) + "]"
    return repr(value)


def _pair(value: Hashable) -> tuple[Hashable, Hashable] | None:
    if isinstance(value, tuple) and len(value) == 2:
        return value[0], value[1]
    return None


class CasRegister:
    """A register per key with ``read``, ``write v`` and ``cas [old new]``; starts as nil.

    A read returns the value; an acknowledged cas means the value was ``old`` and became
    ``new``. Keys (if any) are independent registers, checked one by one.
    """

    name: str = "cas-register"
    _reads: frozenset[str] = frozenset({"read", "get"})
    _writes: Final = frozenset({"write", "put"})

    def __init__(self, initial: Hashable = None) -> None:
        self._initial = initial

    def init(self) -> Hashable:
        return self._initial

    def step(self, state: Hashable, input: Input, output: Hashable) -> tuple[bool, Hashable]:
        f = input.f
        if f in self._reads:
            return (output is UNKNOWN or output == state), state
        if f in self._writes:
            return True, input.value
        if f == "cas":
            old, new = _pair(input.value) or (None, None)
            if state == old:
                return True, new
            return output is UNKNOWN, state
        return False, state

    def partition(self, ops: Sequence[Operation]) -> list[tuple[Hashable, list[Operation]]]:
        return _by_key(ops)

    def validate(self, op: Operation) -> str | None:
        if op.f in self._reads or op.f in self._writes:
            return None
        if op.f == "cas":
            return None if _pair(op.value) is not None else "cas needs a value [old new]"
        return f"{self.name} has no operation {op.f!r} (read, write, cas)"

    def has_effect(self, op: Operation) -> bool:
        return op.f not in self._reads

    def impossible(self, ops: Sequence[Operation]) -> tuple[Operation, str] | None:
        return _never_written(self, ops, self._reads)

    def shortcut(self, op: Operation) -> Shortcut | None:
        if op.f in self._reads:
            return (FITS, op.output) if op.known and op.output is not UNKNOWN else None
        if op.f in self._writes:
            return SETS, op.value
        return None

    def reach(self, ops: Sequence[Operation]) -> Reach | None:
        if all(op.f in self._reads or op.f in self._writes for op in ops):
            return Reach()  # reads keep the state, writes are blind
        return None  # a cas may lead anywhere

    def describe_op(self, op: Operation) -> str:
        return _describe(self, op)

    def describe_state(self, state: Hashable) -> str:
        return _show(state)


class KvModel(CasRegister):
    """A map of independent keys: ``get``, ``put``, ``append``, ``delete``, ``cas [old new]``,
    and ``stale-read`` (:data:`STALE_READ`: a get that may return an older value).

    ``missing`` is the value a get of a missing key returns and what delete leaves (nil by
    default; Porcupine's and Jepsen's kv histories use the empty string). ``append`` of a
    string concatenates; of any other value it adds an element to a list.
    """

    name: str = "kv"
    _reads: frozenset[str] = frozenset({"read", "get", STALE_READ})

    def __init__(self, missing: Hashable = None) -> None:
        super().__init__(missing)

    def step(self, state: Hashable, input: Input, output: Hashable) -> tuple[bool, Hashable]:
        f = input.f
        if f in self._reads:  # the common case first, without the call to super()
            return (output is UNKNOWN or output == state), state
        if f == "append":
            return True, _append(state, input.value, self._initial)
        if f == "delete":
            return True, self._initial
        return super().step(state, input, output)

    def shortcut(self, op: Operation) -> Shortcut | None:
        if op.f == "delete":
            return SETS, self._initial
        return super().shortcut(op)

    def reach(self, ops: Sequence[Operation]) -> Reach | None:
        appends = False
        for op in ops:
            if op.f == "cas" or (op.f == "append" and not isinstance(op.value, str)):
                return None
            appends = appends or op.f == "append"
        if not appends:
            return Reach()  # reads, writes and deletes: only the blind writes move the state
        return Grows(self._initial)

    def validate(self, op: Operation) -> str | None:
        if op.f in ("append", "delete"):
            return None
        problem = super().validate(op)
        if problem is None:
            return None
        return f"kv has no operation {op.f!r} (get, {STALE_READ}, put, append, delete, cas)"

    def impossible(self, ops: Sequence[Operation]) -> tuple[Operation, str] | None:
        if any(op.f == "append" for op in ops):
            return None  # appends build values nobody wrote whole
        return super().impossible(ops)


def _append(state: Hashable, value: Hashable, missing: Hashable) -> Hashable:
    base = ("" if isinstance(value, str) else ()) if state in (None, missing) else state
    if isinstance(base, str) and isinstance(value, str):
        return base + value
    if isinstance(base, tuple):
        return (*base, value)
    return (base, value)  # a scalar followed by an element becomes a list


def _by_key(ops: Sequence[Operation]) -> list[tuple[Hashable, list[Operation]]]:
    groups: dict[Hashable, list[Operation]] = {}
    for op in ops:
        groups.setdefault(op.key, []).append(op)
    return list(groups.items())


def _never_written(
    model: CasRegister, ops: Sequence[Operation], reads: frozenset[str]
) -> tuple[Operation, str] | None:
    # Any value a read returns must be the initial one or one some operation may have written.
    possible: set[Hashable] = {model.init()}
    for op in ops:
        if op.f == "cas":
            pair = _pair(op.value)
            if pair is not None:
                possible.add(pair[1])
        elif op.f not in reads:
            possible.add(op.value)
    for op in ops:
        if op.f in reads and op.known and op.output not in possible:
            return op, f"no operation ever wrote {_show(op.output)}"
    return None


def _describe(model: CasRegister, op: Operation) -> str:
    where = "" if op.key is None else f"key {_show(op.key)}: "
    outcome = "" if op.known else " (outcome unknown)"
    if op.f in model._reads:
        result = "?" if not op.known else _show(op.output)
        return f"{where}{op.f} -> {result}"
    if op.f == "cas":
        pair = _pair(op.value) or (None, None)
        return f"{where}cas {_show(pair[0])} -> {_show(pair[1])}{outcome}"
    if op.f == "delete":
        return f"{where}delete{outcome}"
    return f"{where}{op.f} {_show(op.value)}{outcome}"


MODELS: Final[dict[str, type[CasRegister]]] = {"cas-register": CasRegister, "kv": KvModel}


def model_named(name: str, *, missing: Hashable = None) -> CasRegister:
    """A model by its CLI name; ``missing`` is the value of a missing key (kv only)."""
    if name == "kv":
        return KvModel(missing)
    if name == "cas-register":
        return CasRegister()
    raise HistoryError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
