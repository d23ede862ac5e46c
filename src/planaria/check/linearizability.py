"""Linearizability checking: Wing–Gong–Lowe search with memoization, per partition.

The search walks a doubly linked list of call and return entries ordered by time. At a
call it tries to linearize that operation next (the model must accept it); at a return it
backtracks, because that operation should have been linearized already. Every
(set of linearized operations, model state) configuration is explored once: the set is a
Python int used as a bitset, and the pair goes into a memo set. This is the algorithm of
Lowe's "Testing for linearizability" as Porcupine implements it; only the ideas are
borrowed.

Before searching: failed operations are gone already (they certainly did not happen),
operations of unknown outcome that cannot change the state (reads) are dropped, and
operations of unknown outcome get a return time of +infinity (they may take effect at any
point after their call, or never: at the very end their effect is unobservable), and stale
reads (``stale-read``, kv model) get the call time of the key's first operation (they may
return any value the key held at some instant before they returned). The model's
sound pre-check rejects outright a read of a value nobody wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from planaria.check.history import Operation
from planaria.check.models import STALE_READ, Input, Model
from planaria.errors import HistoryError

__all__ = [
    "CheckResult",
    "PartitionResult",
    "Progress",
    "Verdict",
    "check_operations",
    "check_partition",
]

Clock = Callable[[], float]
# progress(partitions_done, partitions_total) after each partition.
Progress = Callable[[int, int], None]

CLOCK_EVERY_STEPS: Final = 4096
_ILLEGAL: Final = object()


class Verdict(StrEnum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not-linearizable"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """The verdict for one independent part of a history (one key).

    For a non-linearizable part: ``prefix`` is the longest linearizable prefix found (in
    linearization order), ``state`` the model state after it, ``blocked`` the operation
    that could not be placed next (the earliest-returning one still pending), and
    ``blocked_states`` every state in which the search tried to place it. ``reason`` is
    set when a pre-check rejected the part without searching.
    """

    key: Hashable
    verdict: Verdict
    operations: tuple[Operation, ...]
    steps: int = 0
    prefix: tuple[Operation, ...] = ()
    state: Hashable = None
    blocked: Operation | None = None
    blocked_states: frozenset[Hashable] = frozenset()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for a whole history; ``failing`` is the first non-linearizable part."""

    verdict: Verdict
    model: str
    partitions: tuple[PartitionResult, ...] = field(default=())

    @property
    def failing(self) -> PartitionResult | None:
        for part in self.partitions:
            if part.verdict is Verdict.NOT_LINEARIZABLE:
                return part
        return None


def check_operations(
    model: Model,
    operations: Sequence[Operation],
    *,
    clock: Clock | None = None,
    timeout_s: float | None = None,
    progress: Progress | None = None,
    stop_at_first_failure: bool = True,
    steps_max: int | None = None,
) -> CheckResult:
    """Check a history against ``model``, each of its partitions on its own.

    ``clock`` (seconds, monotonic) and ``timeout_s`` bound the total search time; the clock
    is read every few thousand search steps. On timeout, or when the search of one partition
    takes more than ``steps_max`` steps (a bound that needs no clock), the verdict is
    ``unknown``. The
    verdict is ``not-linearizable`` as soon as one partition is (with
    ``stop_at_first_failure`` the rest are not checked).
    """
    for op in operations:
        problem = model.validate(op)
        if problem is not None:
            where = f" (line {op.line})" if op.line is not None else ""
            raise HistoryError(f"{problem}{where}", line=op.line)
    deadline = None
    if timeout_s is not None and clock is not None:
        deadline = clock() + timeout_s
    parts = model.partition(operations)
    results: list[PartitionResult] = []
    verdict = Verdict.LINEARIZABLE
    for done, (key, part_ops) in enumerate(parts, start=1):
        result = check_partition(
            model, key, part_ops, clock=clock, deadline=deadline, steps_max=steps_max
        )
        results.append(result)
        if progress is not None:
            progress(done, len(parts))
        if result.verdict is Verdict.NOT_LINEARIZABLE:
            verdict = Verdict.NOT_LINEARIZABLE
            if stop_at_first_failure:
                break
        elif result.verdict is Verdict.UNKNOWN and verdict is Verdict.LINEARIZABLE:
            verdict = Verdict.UNKNOWN
    return CheckResult(verdict, model.name, tuple(results))


def check_partition(
    model: Model,
    key: Hashable,
    operations: Sequence[Operation],
    *,
    clock: Clock | None = None,
    deadline: float | None = None,
    steps_max: int | None = None,
) -> PartitionResult:
    """Check one independent sub-history (all of one key) with the WGL search; ``unknown``
    past ``deadline`` (of ``clock``) or after ``steps_max`` search steps."""
    ops = _stale_reads_relaxed(tuple(op for op in operations if op.known or model.has_effect(op)))
    rejected = model.impossible(ops)
    if rejected is not None:
        op, why = rejected
        return PartitionResult(key, Verdict.NOT_LINEARIZABLE, tuple(ops), blocked=op, reason=why)
    return _Search(model, ops, clock, deadline, steps_max).run(key)


def _stale_reads_relaxed(ops: tuple[Operation, ...]) -> tuple[Operation, ...]:
    """A stale read may return any value the key held at some instant no later than its
    completion: it is searched as if it had been invoked when the key's history began."""
    if not any(op.f == STALE_READ for op in ops):
        return ops
    start = min(op.call for op in ops)
    return tuple(replace(op, call=start) if op.f == STALE_READ else op for op in ops)


class _Search:
    """One WGL search over a partition; entries are ints in parallel lists (fast in Python)."""

    def __init__(
        self,
        model: Model,
        ops: tuple[Operation, ...],
        clock: Clock | None,
        deadline: float | None,
        steps_max: int | None = None,
    ) -> None:
        self.model = model
        self.steps_max = steps_max
        self.ops = ops
        self.clock = clock
        self.deadline = deadline
        n = len(ops)
        # Entries 1..2n sorted by time, calls before returns at equal times (touching
        # operations count as concurrent). 0 is the head, 2n+1 the tail.
        infinity = float("inf")
        timeline = sorted(
            [(op.call, 0, i) for i, op in enumerate(ops)]
            + [(infinity if op.ret is None else op.ret, 1, i) for i, op in enumerate(ops)]
        )
        self.tail = 2 * n + 1
        self.op_of = [-1] * (2 * n + 2)
        self.is_call = [False] * (2 * n + 2)
        self.match = [0] * (2 * n + 2)
        call_entry = [0] * n
        for entry, (_, kind, i) in enumerate(timeline, start=1):
            self.op_of[entry] = i
            if kind == 0:
                self.is_call[entry] = True
                call_entry[i] = entry
            else:
                self.match[call_entry[i]] = entry
        self.nxt = [*range(1, 2 * n + 2), 0]
        self.prv = [0, *range(0, 2 * n + 1)]
        self.cache: set[tuple[int, Hashable]] = set()

    def run(self, key: Hashable) -> PartitionResult:
        model, ops = self.model, self.ops
        op_of, is_call, match, nxt, prv = self.op_of, self.is_call, self.match, self.nxt, self.prv
        tail = self.tail
        bits = [1 << i for i in range(len(ops))]
        inputs = [Input(op.f, op.value) for op in ops]
        outputs = [op.output for op in ops]
        # Per-operation memo of state -> next state (or _ILLEGAL): model steps run once.
        transitions: list[dict[Hashable, Any]] = [{} for _ in ops]
        step = model.step
        cache = self.cache
        cache_add = cache.add
        illegal = _ILLEGAL
        clock, deadline = self.clock, self.deadline
        steps_max = self.steps_max
        stack: list[tuple[int, Hashable, int]] = []
        push, pop = stack.append, stack.pop
        best: list[tuple[int, Hashable, int]] = []
        best_depth = 0
        state = model.init()
        linearized = 0
        entry = nxt[0]
        steps = 0
        while nxt[0] != tail:
            steps += 1
            if steps % CLOCK_EVERY_STEPS == 0:
                if deadline is not None:
                    assert clock is not None
                    if clock() > deadline:
                        return PartitionResult(key, Verdict.UNKNOWN, ops, steps=steps)
                if steps_max is not None and steps > steps_max:
                    return PartitionResult(key, Verdict.UNKNOWN, ops, steps=steps)
            if is_call[entry]:
                i = op_of[entry]
                memo = transitions[i]
                new_state = memo.get(state, memo)
                if new_state is memo:
                    legal, after = step(state, inputs[i], outputs[i])
                    new_state = after if legal else illegal
                    memo[state] = new_state
                if new_state is not illegal:
                    new_linearized = linearized | bits[i]
                    config = (new_linearized, new_state)
                    if config not in cache:
                        cache_add(config)
                        push((entry, state, linearized))
                        state, linearized = new_state, new_linearized
                        # lift the call and its return out of the list
                        before, after_ = prv[entry], nxt[entry]
                        nxt[before] = after_
                        prv[after_] = before
                        ret = match[entry]
                        before, after_ = prv[ret], nxt[ret]
                        nxt[before] = after_
                        prv[after_] = before
                        if len(stack) > best_depth:
                            best_depth = len(stack)
                            best = stack.copy()
                            best.append((0, state, 0))
                        entry = nxt[0]
                        continue
                entry = nxt[entry]
            else:
                if not stack:
                    return self._failure(key, best, op_of, steps)
                entry, state, linearized = pop()
                # unlift: the return goes back first, then the call
                ret = match[entry]
                nxt[prv[ret]] = ret
                prv[nxt[ret]] = ret
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
                entry = nxt[entry]
        return PartitionResult(key, Verdict.LINEARIZABLE, ops, steps=steps)

    def _failure(
        self, key: Hashable, best: list[tuple[int, Hashable, int]], op_of: list[int], steps: int
    ) -> PartitionResult:
        ops = self.ops
        prefix = tuple(ops[op_of[entry]] for entry, _, _ in best[:-1])
        state = best[-1][1] if best else self.model.init()
        in_prefix = {op.index for op in prefix}
        pending = [op for op in ops if op.index not in in_prefix]
        blocked = min(pending, key=_return_time) if pending else None
        states: frozenset[Hashable] = frozenset()
        if blocked is not None:
            states = self._states_trying(ops.index(blocked))
        return PartitionResult(
            key,
            Verdict.NOT_LINEARIZABLE,
            ops,
            steps=steps,
            prefix=prefix,
            state=state,
            blocked=blocked,
            blocked_states=states,
        )

    def _states_trying(self, target: int) -> frozenset[Hashable]:
        """States of every explored configuration in which ``target`` was a candidate."""
        ops = self.ops
        by_return = sorted(range(len(ops)), key=lambda i: _return_time(ops[i]))
        target_bit = 1 << target
        call = ops[target].call
        states: set[Hashable] = set()
        configs = [(0, self.model.init()), *self.cache]
        for linearized, state in configs:
            if linearized & target_bit or state in states:
                continue
            # a candidate: called before the earliest return among the unlinearized ops
            first = next(i for i in by_return if not linearized >> i & 1)
            if call <= _return_time(ops[first]):
                states.add(state)
        return frozenset(states)


def _return_time(op: Operation) -> float:
    return float("inf") if op.ret is None else op.ret
