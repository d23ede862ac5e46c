"""Linearizability checking: Wing–Gong–Lowe search with memoization, per partition.

The search walks a doubly linked list of call and return entries ordered by time. At a
call it tries to linearize that operation next (the model must accept it); at a return it
backtracks, because that operation should have been linearized already. Every
(set of linearized operations, model state) configuration is explored once: model states
are interned as small ints, and the pair is one Python int (the set's bitset, with the
state id in the bits above it) in a memo set. This is the algorithm of Lowe's "Testing for
linearizability" as Porcupine implements it; only the ideas are borrowed. What the model's
shortcuts tell (a read fits exactly one state, a blind write leaves one) is precomputed per
operation: reads are indexed by the state they fit instead of walked, and neither calls
the model. What the model's reach test tells (which states may follow which, blind writes
aside) cuts a configuration whose state can no longer lead to a pending read's value.

Bounded: the partitions of a history are searched side by side in slices of steps that
double each round (Porcupine races them on goroutines and stops at the first failure; a
round-robin does the same deterministically), so one partition that is cheap to refute
decides a non-linearizable history even when another would take the search hours. The
memo of every live search counts against ``memory_mb`` and the clock against
``timeout_s``: past either, the partition's verdict is ``unknown`` with the reason, never
an exception. Without a clock the memory limit alone bounds the work (each step adds a
configuration, moves past one, or backtracks from one).

Before searching: failed operations are gone already (they certainly did not happen),
operations of unknown outcome that cannot change the state (reads) are dropped, and
operations of unknown outcome get a return time of +infinity (they may take effect at any
point after their call, or never: at the very end their effect is unobservable). The model's
sound pre-check rejects outright a read of a value nobody wrote.
"""

from __future__ import annotations

import itertools
import sys
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from planaria.check.history import Operation
from planaria.check.models import FITS, SETS, STALE_READ, Input, Model
from planaria.errors import HistoryError, UsageError

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
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

# The limits every caller uses unless told otherwise (the CLI, the chaos harness, the
# simulator): generous for any history a run here produces, small enough for a laptop.
DEFAULT_TIMEOUT_S: Final = 60.0
DEFAULT_MEMORY_MB: Final = 1024.0

# The clock and the memory estimate are looked at every this many steps; slices of the
# round-robin over partitions are multiples of it. The first slice is short: a partition
# refuted in a thousand steps then decides a history whatever the others would cost.
CLOCK_EVERY_STEPS: Final = 1024
FIRST_SLICE_STEPS: Final = CLOCK_EVERY_STEPS
# The reach test (Model.reach) looks at this many pending reads per configuration. Looking up
# the blind writes that may lead to a read's value costs one per value, once, plus one per
# write found: a partition has REACH_TESTS_MIN + REACH_TESTS_PER_OP * operations of them
# (then no more reach tests there).
REACH_WITNESSES: Final = 3
REACH_TESTS_MIN: Final = 4096
REACH_TESTS_PER_OP: Final = 64
# At most this many explored configurations are scanned to list the states an operation
# that could not be placed was tried in (the explanation stays cheap after a huge search).
EXPLAIN_CONFIGS_MAX: Final = 200_000

# Rough CPython costs, for the memory estimate: a set slot (with the set's spare room) and
# a dict entry of the per-operation transition memo (int keys and values are shared).
_SET_SLOT_BYTES: Final = 40
_MEMO_ENTRY_BYTES: Final = 100
_STATE_BYTES_MIN: Final = 64
_LIST_SLOT_BYTES: Final = 8

_UNSEEN: Final = -2
_ILLEGAL: Final = -1
_NO_INPUT: Final = Input("", None)  # of an operation the model is never asked about
# op_of at an entry that is not a call.
_RETURN: Final = -1
_ARRIVED: Final = -2


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
    ``blocked_states`` the states in which the search tried to place it (all of them, or
    those among the first :data:`EXPLAIN_CONFIGS_MAX` configurations explored; none when
    the explanation was skipped: ``explained`` is False). ``reason`` is set when a
    pre-check rejected the part without searching, and for an ``unknown`` part says which
    limit stopped the search.
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
    configurations: int = 0
    explained: bool = True


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

    @property
    def undecided(self) -> PartitionResult | None:
        """The first part a limit stopped, when no part is known to fail."""
        for part in self.partitions:
            if part.verdict is Verdict.UNKNOWN:
                return part
        return None


@dataclass(frozen=True, slots=True)
class _Limits:
    clock: Clock | None
    deadline: float | None
    timeout_s: float | None
    memory_mb: float | None
    steps_max: int | None = None  # per partition: a bound that needs no clock (the simulator)

    def out_of_time(self) -> bool:
        return self.deadline is not None and self.clock is not None and self.clock() > self.deadline


def check_operations(
    model: Model,
    operations: Sequence[Operation],
    *,
    clock: Clock | None = None,
    timeout_s: float | None = None,
    memory_mb: float | None = DEFAULT_MEMORY_MB,
    progress: Progress | None = None,
    stop_at_first_failure: bool = True,
    explain: bool = True,
    steps_max: int | None = None,
) -> CheckResult:
    """Check a history against ``model``, its partitions side by side.

    ``clock`` (seconds, monotonic) and ``timeout_s`` bound the total search time; the clock
    is read every few thousand search steps; ``steps_max`` bounds the steps of each
    partition's search (a limit that needs no clock, as in the simulator). ``memory_mb``
    bounds the memo of all the searches together (an estimate of its size; None: unbounded).
    A partition a limit stops is ``unknown`` (its ``reason`` says which limit), and so is
    the history unless a partition is not linearizable: that verdict wins, and with
    ``stop_at_first_failure`` the partitions still undecided are left out. ``explain=False``
    skips collecting the states a blocked operation was tried in (the one part of the
    explanation whose cost grows with the search).
    """
    for op in operations:
        problem = model.validate(op)
        if problem is not None:
            where = f" (line {op.line})" if op.line is not None else ""
            raise HistoryError(f"{problem}{where}", line=op.line)
    limits = _limits(clock, timeout_s, memory_mb, steps_max)
    parts = model.partition(operations)
    decided: dict[int, PartitionResult] = {}
    searches: dict[int, _Search] = {}
    for number, (key, part_ops) in enumerate(parts):
        ready = _prepare(model, key, part_ops, explain)
        if isinstance(ready, PartitionResult):
            decided[number] = ready
            if progress is not None:
                progress(len(decided), len(parts))
        else:
            searches[number] = ready
    failed = any(r.verdict is Verdict.NOT_LINEARIZABLE for r in decided.values())
    held = {number: search.memory_bytes() for number, search in searches.items()}
    held_total = sum(held.values())
    slice_steps = FIRST_SLICE_STEPS
    while searches and not (failed and stop_at_first_failure):
        for number, search in list(searches.items()):
            result = search.advance(slice_steps, limits, held_total - held[number])
            now_held = 0 if result is not None else search.memory_bytes()
            held_total += now_held - held[number]
            held[number] = now_held
            if result is None:
                continue
            del searches[number]
            decided[number] = result
            if progress is not None:
                progress(len(decided), len(parts))
            if result.verdict is Verdict.NOT_LINEARIZABLE:
                failed = True
                if stop_at_first_failure:
                    break
            elif result.reason is not None and limits.out_of_time():
                # The clock is shared: every search still running is out of time too.
                for rest, other in searches.items():
                    decided[rest] = other.give_up(result.reason)
                searches.clear()
                break
        slice_steps *= 2
    results = tuple(decided[number] for number in sorted(decided))
    verdict = Verdict.LINEARIZABLE
    if failed:
        verdict = Verdict.NOT_LINEARIZABLE
    elif any(r.verdict is Verdict.UNKNOWN for r in results):
        verdict = Verdict.UNKNOWN
    return CheckResult(verdict, model.name, results)


def check_partition(
    model: Model,
    key: Hashable,
    operations: Sequence[Operation],
    *,
    clock: Clock | None = None,
    deadline: float | None = None,
    memory_mb: float | None = DEFAULT_MEMORY_MB,
    explain: bool = True,
) -> PartitionResult:
    """Check one independent sub-history (all of one key) with the WGL search."""
    ready = _prepare(model, key, operations, explain)
    if isinstance(ready, PartitionResult):
        return ready
    timeout_s = None if deadline is None or clock is None else deadline - clock()
    limits = _Limits(clock, deadline, timeout_s, memory_mb)
    while True:
        result = ready.advance(1 << 62, limits, 0)
        if result is not None:
            return result


def _limits(
    clock: Clock | None,
    timeout_s: float | None,
    memory_mb: float | None,
    steps_max: int | None = None,
) -> _Limits:
    if timeout_s is not None and timeout_s <= 0:
        raise UsageError(f"timeout_s must be positive, not {timeout_s}")
    if memory_mb is not None and memory_mb <= 0:
        raise UsageError(f"memory_mb must be positive, not {memory_mb}")
    deadline = None
    if timeout_s is not None and clock is not None:
        deadline = clock() + timeout_s
    if steps_max is not None and steps_max < 1:
        raise UsageError(f"steps_max must be positive, not {steps_max}")
    return _Limits(clock, deadline, timeout_s, memory_mb, steps_max)


def _prepare(
    model: Model, key: Hashable, operations: Sequence[Operation], explain: bool
) -> PartitionResult | _Search:
    ops = _stale_reads_relaxed(tuple(op for op in operations if op.known or model.has_effect(op)))
    rejected = model.impossible(ops)
    if rejected is not None:
        op, why = rejected
        return PartitionResult(key, Verdict.NOT_LINEARIZABLE, ops, blocked=op, reason=why)
    return _Search(model, key, ops, explain)


def _stale_reads_relaxed(ops: tuple[Operation, ...]) -> tuple[Operation, ...]:
    """A stale read may return any value the key held at some instant no later than its
    completion: it is searched as if it had been invoked when the key's history began."""
    if not any(op.f == STALE_READ for op in ops):
        return ops
    start = min(op.call for op in ops)
    return tuple(replace(op, call=start) if op.f == STALE_READ else op for op in ops)


class _Search:
    """One resumable WGL search over a partition; entries are ints in parallel lists, model
    states ints indexing ``states``, configurations ints in ``cache`` (fast in Python).

    Two doubly linked lists over the entries: the walk's (the calls of every operation but
    the indexed reads, and every return) and the returns alone (its head is the earliest
    pending return). A read the model can say fits exactly one state (``Model.shortcut``)
    is in neither: ``readers`` lists them by that state, so finding one that fits costs a
    lookup, not a walk.
    """

    def __init__(
        self, model: Model, key: Hashable, ops: tuple[Operation, ...], explain: bool
    ) -> None:
        self.model = model
        self.key = key
        self.ops = ops
        self.explain = explain
        n = self.n = len(ops)
        initial = model.init()
        self.states: list[Hashable] = [initial]
        self.state_ids: dict[Hashable, int] = {initial: 0}
        self.states_counted = 0
        self.state_bytes = 0
        shortcuts = [model.shortcut(op) for op in ops]
        # The state a read fits, the state a blind write leaves (_UNSEEN: ask the model).
        fits = [
            self._intern(s[1]) if s is not None and s[0] == FITS else _UNSEEN for s in shortcuts
        ]
        self.sets = [
            self._intern(s[1]) if s is not None and s[0] == SETS else _UNSEEN for s in shortcuts
        ]
        # Entries 1..2n sorted by time, calls before returns at equal times (touching
        # operations count as concurrent). 0 is the head, 2n+1 the tail.
        timeline = sorted(
            [(op.call, 0, i) for i, op in enumerate(ops)]
            + [(_return_time(op), 1, i) for i, op in enumerate(ops)]
        )
        self.tail = tail = 2 * n + 1
        # The walk reads op_of: an operation at its call, _RETURN at a return (and the
        # tail), _ARRIVED at the head (a new configuration: look for a read that fits).
        self.op_of = [_RETURN] * (2 * n + 2)
        self.op_of[0] = _ARRIVED
        self.call_of = [0] * n
        self.return_of = [0] * n
        for entry, (_, kind, i) in enumerate(timeline, start=1):
            if kind == 0:
                self.op_of[entry] = i
                self.call_of[i] = entry
            else:
                self.return_of[i] = entry
        returns = [e for e in range(1, 2 * n + 1) if self.op_of[e] == _RETURN]
        walked = [
            e
            for e in range(1, 2 * n + 1)
            if self.op_of[e] == _RETURN or fits[self.op_of[e]] == _UNSEEN
        ]
        self.nxt, self.prv = _linked(walked, tail)
        self.ret_nxt, self.ret_prv = _linked(returns, tail)
        # Per state: its reads by call entry, and the latest return among the first k of
        # them (every read before the first whose running latest return is after the
        # earliest pending return has returned before it, so is linearized already).
        reads = sorted((i for i in range(n) if fits[i] != _UNSEEN), key=self.call_of.__getitem__)
        by_state: dict[int, list[int]] = {}
        for i in reads:
            by_state.setdefault(fits[i], []).append(i)
        self.readers: dict[int, tuple[list[int], list[int], list[int]]] = {}
        for state, readers in by_state.items():
            self.readers[state] = (
                [self.call_of[i] for i in readers],
                _latest(self, readers),
                readers,
            )
        # All the reads the same way, for the reach test (None: no test).
        self.fits = fits
        self.reads = reads
        self.reads_latest = _latest(self, reads)
        self.reach = model.reach(ops)
        # Per state: the blind writes that leave it; per state a read fits, those that may
        # lead to it (found when first needed, within a budget of reach tests).
        self.writes: dict[int, list[int]] = {}
        for i, leaves in enumerate(self.sets):
            if leaves != _UNSEEN:
                self.writes.setdefault(leaves, []).append(i)
        self.restarts: dict[int, list[int]] = {}
        self.restart_entries = 0
        self.reach_tests_left = REACH_TESTS_MIN + REACH_TESTS_PER_OP * n
        self.sources: Callable[[Hashable], list[Hashable]] | None = None
        if self.reach is not None:
            self.sources = self.reach.sources([self.states[leaves] for leaves in self.writes])
        self.bits = [1 << i for i in range(n)]
        # Only the operations without a shortcut call the model.
        self.inputs = [
            Input(op.f, op.value) if fits[i] == sets_i == _UNSEEN else _NO_INPUT
            for i, (op, sets_i) in enumerate(zip(ops, self.sets, strict=True))
        ]
        self.outputs = [op.output for op in ops]
        # Per-operation memo of state id -> next state id (or _ILLEGAL): each model step
        # runs once.
        self.transitions: list[dict[int, int]] = [{} for _ in ops]
        self.transition_count = 0
        # A configuration is linearized | state_id << n.
        self.cache: set[int] = set()
        self.config_bytes = _SET_SLOT_BYTES + sys.getsizeof(1 << (n + 20))
        # Frames (call entry, state, linearized); a read's is forced: its call entry negated.
        self.stack: list[tuple[int, int, int]] = []
        self.best: list[tuple[int, int, int]] = []
        self.best_depth = 0
        self.state = 0
        self.linearized = 0
        self.entry = 0
        self.steps = 0

    def _intern(self, state: Hashable) -> int:
        found = self.state_ids.get(state, _UNSEEN)
        if found == _UNSEEN:
            found = len(self.states)
            self.states.append(state)
            self.state_ids[state] = found
        return found

    def _leading_to(self, target: int) -> list[int] | None:
        """The blind writes that may lead to state ``target`` (None: past the budget)."""
        if self.sources is None:
            return None
        leading = self.sources(self.states[target])
        if self.reach_tests_left <= len(leading):
            return None
        self.reach_tests_left -= len(leading) + 1
        writes, state_ids = self.writes, self.state_ids
        leads = [i for value in leading for i in writes[state_ids[value]]]
        self.restarts[target] = leads
        self.restart_entries += len(leads)
        return leads

    def memory_bytes(self) -> int:
        """An estimate of what the search holds beyond the history itself."""
        if self.states_counted < len(self.states):
            fresh = itertools.islice(self.states, self.states_counted, None)
            self.state_bytes += sum(map(_state_bytes, fresh))
            self.states_counted = len(self.states)
        return (
            len(self.cache) * self.config_bytes
            + self.transition_count * _MEMO_ENTRY_BYTES
            + self.state_bytes
            + len(self.best) * 80
            + self.restart_entries * _LIST_SLOT_BYTES
        )

    def give_up(self, reason: str) -> PartitionResult:
        return PartitionResult(
            self.key,
            Verdict.UNKNOWN,
            self.ops,
            steps=self.steps,
            reason=reason,
            configurations=len(self.cache),
        )

    def advance(self, max_steps: int, limits: _Limits, others_bytes: int) -> PartitionResult | None:
        """Search on for up to ``max_steps`` steps: the verdict, or None when not done yet."""
        ops, n = self.ops, self.n
        op_of, call_of, return_of = self.op_of, self.call_of, self.return_of
        nxt, prv, ret_nxt, ret_prv = self.nxt, self.prv, self.ret_nxt, self.ret_prv
        tail = self.tail
        bits, inputs, outputs, sets = self.bits, self.inputs, self.outputs, self.sets
        readers_of = self.readers.get
        reach = None if self.reach is None else self.reach.may_lead
        fits, restarts = self.fits, self.restarts
        reads, reads_latest = self.reads, self.reads_latest
        read_count = len(reads)
        transitions = self.transitions
        states, state_ids = self.states, self.state_ids
        step = self.model.step
        cache = self.cache
        cache_add = cache.add
        stack = self.stack
        push, pop = stack.append, stack.pop
        best_depth, best_pending = self.best_depth, False
        state, linearized, entry, steps = self.state, self.linearized, self.entry, self.steps
        stop_at = steps + max_steps
        clock_mask = CLOCK_EVERY_STEPS - 1  # a power of two
        memory_cap = None
        if limits.memory_mb is not None:
            memory_cap = int(limits.memory_mb * 1024 * 1024) - others_bytes
        # Partial-order reduction: a pending read that fits the current state can go first
        # in every linearization that places it later, so on arriving at a configuration
        # the search looks for such a read, and when one fits it is the only move tried
        # from there (its frame is marked forced). Porcupine tries every candidate.
        while nxt[0] != tail:
            steps += 1
            if not steps & clock_mask:
                self.steps = steps
                if limits.out_of_time():
                    return self.give_up(
                        f"ran out of time: the {limits.timeout_s:g} s limit passed after {steps} "
                        f"steps ({len(cache)} configurations explored)"
                    )
                if limits.steps_max is not None and steps > limits.steps_max:
                    return self.give_up(
                        f"gave up: the {limits.steps_max}-step limit passed "
                        f"({len(cache)} configurations explored)"
                    )
                if memory_cap is not None and self.memory_bytes() > memory_cap:
                    return self.give_up(
                        f"ran out of memory: the search passed the {limits.memory_mb:g} MB limit "
                        f"after {steps} steps ({len(cache)} configurations explored)"
                    )
                if steps >= stop_at:
                    self.state, self.linearized, self.entry = state, linearized, entry
                    if best_pending:
                        self.best = [*stack, (0, state, 0)]
                    self.best_depth = best_depth
                    return None
            i = op_of[entry]
            if i >= 0:  # a call: try to linearize the operation next
                new_state = sets[i]
                if new_state == _UNSEEN:
                    memo = transitions[i]
                    new_state = memo.get(state, _UNSEEN)
                    if new_state == _UNSEEN:
                        legal, after = step(states[state], inputs[i], outputs[i])
                        new_state = _ILLEGAL
                        if legal:
                            new_state = state_ids.get(after, _UNSEEN)
                            if new_state == _UNSEEN:
                                new_state = len(states)
                                states.append(after)
                                state_ids[after] = new_state
                        memo[state] = new_state
                        self.transition_count += 1
                if new_state != _ILLEGAL:
                    new_linearized = linearized | bits[i]
                    config = new_linearized | new_state << n
                    if config not in cache:
                        cache_add(config)
                        push((entry, state, linearized))
                        state, linearized = new_state, new_linearized
                        # lift the call and its return out of the lists
                        before, after_ = prv[entry], nxt[entry]
                        nxt[before] = after_
                        prv[after_] = before
                        ret = return_of[i]
                        before, after_ = prv[ret], nxt[ret]
                        nxt[before] = after_
                        prv[after_] = before
                        before, after_ = ret_prv[ret], ret_nxt[ret]
                        ret_nxt[before] = after_
                        ret_prv[after_] = before
                        if len(stack) > best_depth:
                            # The deepest prefix so far; copied when the search backs up
                            # from it (copying at every push would be quadratic).
                            best_depth = len(stack)
                            best_pending = True
                        entry = 0
                        continue
                entry = nxt[entry]
            elif i == _ARRIVED:
                entry = nxt[0]
                # The first pending read of this state called before the earliest pending
                # return, if any (reads are sorted by call entry).
                found = readers_of(state)
                if found is not None:
                    calls, latest, readers = found
                    first_return = ret_nxt[0]
                    k = bisect_left(latest, first_return)
                    count = len(calls)
                    while k < count and calls[k] < first_return and linearized & bits[readers[k]]:
                        k += 1
                    if k < count and calls[k] < first_return:
                        r = readers[k]
                        new_linearized = linearized | bits[r]
                        config = new_linearized | state << n
                        if config in cache:
                            entry = tail  # where this read led nowhere before: back up
                            continue
                        cache_add(config)
                        push((-call_of[r], state, linearized))
                        linearized = new_linearized
                        ret = return_of[r]
                        before, after_ = prv[ret], nxt[ret]
                        nxt[before] = after_
                        prv[after_] = before
                        before, after_ = ret_prv[ret], ret_nxt[ret]
                        ret_nxt[before] = after_
                        ret_prv[after_] = before
                        if len(stack) > best_depth:
                            best_depth = len(stack)
                            best_pending = True
                        entry = 0
                        continue
                if reach is not None:
                    # No read fits: back up when one of the first pending reads (by call)
                    # returned a value neither this state nor a pending blind write leads to.
                    k = bisect_left(reads_latest, ret_nxt[0])
                    tested = 0
                    while k < read_count and tested < REACH_WITNESSES:
                        r = reads[k]
                        k += 1
                        if linearized & bits[r]:
                            continue
                        tested += 1
                        target = fits[r]
                        if reach(states[state], states[target]):
                            continue
                        leads = restarts.get(target)
                        if leads is None:
                            leads = self._leading_to(target)
                            if leads is None:  # past the budget: no more reach tests here
                                reach = self.reach = None
                                break
                        for w in leads:
                            if not linearized & bits[w]:
                                break
                        else:
                            entry = tail
                            break
            else:  # a return: that operation should have been linearized; back up
                if best_pending:
                    self.best = [*stack, (0, state, 0)]
                    best_pending = False
                if not stack:
                    self.steps = steps
                    return self._failure()
                entry, state, linearized = pop()
                # unlift: the return goes back first, then the call (a read's call is in
                # no list)
                forced = entry < 0
                if forced:
                    entry = -entry
                ret = return_of[op_of[entry]]
                ret_nxt[ret_prv[ret]] = ret
                ret_prv[ret_nxt[ret]] = ret
                nxt[prv[ret]] = ret
                prv[nxt[ret]] = ret
                if forced:
                    # After a forced read nothing else needs trying here: back up further.
                    entry = tail
                else:
                    nxt[prv[entry]] = entry
                    prv[nxt[entry]] = entry
                    entry = nxt[entry]
        self.steps = steps
        return PartitionResult(
            self.key,
            Verdict.LINEARIZABLE,
            ops,
            steps=steps,
            configurations=len(cache),
        )

    def _failure(self) -> PartitionResult:
        ops, best = self.ops, self.best
        prefix = tuple(ops[self.op_of[abs(entry)]] for entry, _, _ in best[:-1])
        state = self.states[best[-1][1]] if best else self.model.init()
        in_prefix = {op.index for op in prefix}
        pending = [op for op in ops if op.index not in in_prefix]
        blocked = min(pending, key=_return_time) if pending else None
        states: frozenset[Hashable] = frozenset()
        if blocked is not None and self.explain:
            states = self._states_trying(ops.index(blocked))
        return PartitionResult(
            self.key,
            Verdict.NOT_LINEARIZABLE,
            ops,
            steps=self.steps,
            prefix=prefix,
            state=state,
            blocked=blocked,
            blocked_states=states,
            configurations=len(self.cache),
            explained=self.explain,
        )

    def _states_trying(self, target: int) -> frozenset[Hashable]:
        """States of explored configurations in which ``target`` was a candidate (of the
        first :data:`EXPLAIN_CONFIGS_MAX` of them)."""
        ops, n = self.ops, self.n
        by_return = sorted(range(n), key=lambda i: _return_time(ops[i]))
        target_bit = 1 << target
        mask = (1 << n) - 1
        call = ops[target].call
        found: set[int] = set()
        for scanned, config in enumerate(itertools.chain((0,), self.cache)):
            if scanned >= EXPLAIN_CONFIGS_MAX:
                break
            linearized, state = config & mask, config >> n
            if linearized & target_bit or state in found:
                continue
            # a candidate: called before the earliest return among the unlinearized ops
            first = next(i for i in by_return if not linearized >> i & 1)
            if call <= _return_time(ops[first]):
                found.add(state)
        return frozenset(self.states[state] for state in found)


def _latest(search: _Search, reads: list[int]) -> list[int]:
    """The latest return entry among the first k of ``reads``, for every k."""
    return list(itertools.accumulate((search.return_of[i] for i in reads), max))


def _linked(entries: list[int], tail: int) -> tuple[list[int], list[int]]:
    """Next and previous pointers of a doubly linked list of ``entries`` (ascending), from
    the head 0 to ``tail``; entries not in it point nowhere useful."""
    nxt = [tail] * (tail + 1)
    prv = [0] * (tail + 1)
    for before, after in zip([0, *entries], [*entries, tail], strict=True):
        nxt[before] = after
        prv[after] = before
    return nxt, prv


def _state_bytes(state: Hashable) -> int:
    return max(sys.getsizeof(state), _STATE_BYTES_MIN)


def _return_time(op: Operation) -> float:
    return float("inf") if op.ret is None else op.ret
