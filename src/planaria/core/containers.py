"""Hashes and sets: their writes applied to a partition's state and their reads answered
from it, with redis-server 7.0's semantics and error replies (core/strings.py dispatches
the writes here, the replica's read path the reads).

**Copy on write.** A hash or set is a mutable dict in the state. A snapshot copies the
state's table but shares the values, and is encoded while the replica goes on applying; so a
write changes a container in place only when it was made since the last snapshot (its
``generation`` is the replica's, which every snapshot advances), and otherwise replaces it
with a changed copy. A snapshot's containers are never changed; a hash written after a
snapshot is copied once, then written in place until the next one.

**Order.** Fields and members keep insertion order (Python dicts), as a small Redis hash
(listpack) lists them; the order is the same on every replica that applied the same log,
which SPOP's choice relies on (a generator seeded with the entry's version picks
positions in it). SRANDMEMBER is a read: its generator is seeded with the read's request id.

**HSCAN / SSCAN.** A container of at most :data:`SCAN_ALL_MAX` elements is returned whole
with cursor 0 (as Redis does for its small encodings). A larger one is walked in the order
of a 56-bit BLAKE2b hash of each element (the same on every replica, whatever was added
or removed): the cursor is the position to go on from, so an element present for the whole
iteration is returned at least once, also across a failover. A call returns at least
COUNT and at least 1/:data:`SCAN_CALLS_MIN` of the container, so an iteration takes a
bounded number of calls; each call costs one pass over the container.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, MutableMapping
from typing import TypeAlias

from planaria.core.keyspace import glob_matcher
from planaria.core.messages import (
    HashDelete,
    HashSet,
    HashValue,
    Result,
    SetAdd,
    SetPop,
    SetRemove,
    SetStore,
    SetValue,
    Value,
    ValueRead,
    Version,
)
from planaria.errors import InternalError

__all__ = [
    "HASH_NOT_AN_INTEGER",
    "HASH_NOT_A_FLOAT",
    "SCAN_ALL_MAX",
    "SCAN_CALLS_MIN",
    "WRONGTYPE",
    "ContainerOp",
    "apply_container",
    "read_value",
    "scan_elements",
    "writable",
]

# redis-server 7.0's replies, byte for byte.
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
HASH_NOT_AN_INTEGER = "ERR hash value is not an integer"
HASH_NOT_A_FLOAT = "ERR hash value is not a float"

SCAN_ALL_MAX = 128  # Redis' hash-max-listpack-entries: up to this, HSCAN answers all at once
SCAN_CALLS_MIN = 64  # a larger container is walked in at most about this many calls
_POSITION_BYTES = 7

State: TypeAlias = MutableMapping[bytes, tuple[Value, Version]]
Lookup: TypeAlias = Callable[[bytes], Value | None]
# (whether the state changed, the result, the failure's error reply)
Applied: TypeAlias = tuple[bool, Result, str | None]
ContainerOp: TypeAlias = HashSet | HashDelete | SetAdd | SetRemove | SetPop | SetStore


def apply_container(
    state: State, op: ContainerOp, version: Version, generation: int, live: Lookup
) -> Applied:
    """Apply a hash or set write (not HINCRBY/HINCRBYFLOAT: core/strings.py, the counters)
    to ``state`` (``live``: a key's value unless expired, for SetStore's sources).
    ``generation``: the replica's snapshot generation (module doc)."""
    if isinstance(op, SetStore):
        return _set_store(state, op, version, generation, live)
    current = state.get(op.key)
    kind = HashValue if isinstance(op, (HashSet, HashDelete)) else SetValue
    value = writable(current[0] if current is not None else None, kind, generation)
    if value is None:
        return False, None, WRONGTYPE
    result: Result
    if isinstance(op, HashSet):
        assert isinstance(value, HashValue)
        added = 0
        for field, field_value in op.items:
            if field not in value:
                added += 1
            elif op.nx:
                continue
            value[field] = field_value
        result = added
    elif isinstance(op, SetAdd):
        assert isinstance(value, SetValue)
        before = len(value)
        for member in op.members:
            value[member] = None
        result = len(value) - before
    elif isinstance(op, (HashDelete, SetRemove)):
        removed = 0
        for item in op.fields if isinstance(op, HashDelete) else op.members:
            if item in value:
                del value[item]
                removed += 1
        result = removed
    else:
        result = _pop(value, op, version)
    if value:
        state[op.key] = (value, version)
    else:
        state.pop(op.key, None)
    return bool(result), result, None


def writable(
    value: Value | None, kind: type[HashValue] | type[SetValue], generation: int
) -> HashValue | SetValue | None:
    """``value`` as a container of ``kind`` this write may change: itself when made in this
    ``generation``, else a copy (shared with a snapshot), an empty one for a missing key;
    None when the key holds another type."""
    if value is None:
        return kind(generation=generation)
    if value.__class__ is not kind:
        return None
    assert isinstance(value, (HashValue, SetValue))
    if value.generation == generation:
        return value
    return kind(value, generation=generation)


def _pop(value: HashValue | SetValue, op: SetPop, version: Version) -> Result:
    """SPOP's members, chosen at positions a generator seeded with ``version`` picks."""
    size = len(value)
    count = 1 if op.count is None else op.count
    chosen: list[bytes]
    if count == 0:
        chosen = []
    elif count >= size:
        chosen = list(value)
    else:
        rng = random.Random(version.epoch << 64 | version.index)
        wanted = iter(sorted(rng.sample(range(size), count)))
        at = next(wanted)
        chosen = []
        for position, member in enumerate(value):
            if position == at:
                chosen.append(member)
                at = next(wanted, -1)
                if at < 0:
                    break
    for member in chosen:
        del value[member]
    if op.count is None:
        return chosen[0] if chosen else None
    return tuple(chosen)


def _set_store(
    state: State, op: SetStore, version: Version, generation: int, live: Lookup
) -> Applied:
    members, failure = _combine(op.kind, op.sources, live)
    if failure is not None:
        return False, None, failure
    if members:
        state[op.key] = (SetValue(dict.fromkeys(members), generation=generation), version)
        return True, len(members), None
    existed = state.pop(op.key, None) is not None
    return existed, 0, None


def _combine(kind: str, keys: Iterable[bytes], live: Lookup) -> tuple[list[bytes], str | None]:
    """SINTER / SUNION / SDIFF over ``keys`` (a missing key is an empty set); WRONGTYPE
    when any holds something else (redis-server 7.0 checks every key first)."""
    sets: list[SetValue | None] = []
    for key in keys:
        value = live(key)
        if value is not None and not isinstance(value, SetValue):
            return [], WRONGTYPE
        sets.append(value)
    first = sets[0]
    if kind == "union":
        union: dict[bytes, None] = {}
        for members in sets:
            if members is not None:
                union.update(members)
        return list(union), None
    if first is None:
        return [], None
    present = [members for members in sets[1:] if members is not None]
    if kind == "inter":
        if len(present) < len(sets) - 1:  # a missing key: the intersection is empty
            return [], None
        every = [first, *present]
        smallest = min(every, key=len)
        return [m for m in smallest if all(m in members for members in every)], None
    if kind == "diff":
        return [m for m in first if not any(m in members for members in present)], None
    raise InternalError(f"no set operation {kind!r}")


# --- reads -------------------------------------------------------------------------------------

_HASH_READS = frozenset(
    ("hget", "hmget", "hgetall", "hkeys", "hvals", "hlen", "hexists", "hstrlen", "hscan")
)


def read_value(op: ValueRead, live: Lookup, seed: str) -> tuple[Result, str | None]:
    """The answer to a read of a hash or set: (the result, an error reply). ``live``: a
    key's value unless expired; ``seed``: SRANDMEMBER's generator's (the read's id)."""
    command = op.command
    if command in ("sinter", "sunion", "sdiff"):
        members, failure = _combine(command[1:], (op.key, *op.others), live)
        return tuple(members), failure
    value = live(op.key)
    args = op.args
    kind = HashValue if command in _HASH_READS else SetValue
    if value is None:
        value = kind()
    elif value.__class__ is not kind:
        return None, WRONGTYPE
    elif op.error is not None:
        return None, op.error
    if isinstance(value, HashValue):
        return _read_hash(command, value, args), None
    assert isinstance(value, SetValue)
    return _read_set(command, value, args, seed), None


def _read_hash(command: str, fields: HashValue, args: tuple[bytes, ...]) -> Result:
    if command == "hget":
        return fields.get(args[0])
    if command == "hmget":
        return tuple(fields.get(field) for field in args)
    if command == "hgetall":
        return tuple(item for pair in fields.items() for item in pair)
    if command == "hkeys":
        return tuple(fields)
    if command == "hvals":
        return tuple(fields.values())
    if command == "hlen":
        return len(fields)
    if command == "hexists":
        return int(args[0] in fields)
    if command == "hstrlen":
        return len(fields.get(args[0], b""))
    if command == "hscan":
        return _scan_reply(fields, args, pairs=True)
    raise InternalError(f"no hash read {command!r}")


def _read_set(command: str, members: SetValue, args: tuple[bytes, ...], seed: str) -> Result:
    if command == "sismember":
        return int(args[0] in members)
    if command == "smismember":
        return tuple(int(member in members) for member in args)
    if command == "smembers":
        return tuple(members)
    if command == "scard":
        return len(members)
    if command == "srandmember":
        return _random_members(members, args, seed)
    if command == "sscan":
        return _scan_reply(members, args, pairs=False)
    raise InternalError(f"no set read {command!r}")


def _random_members(members: SetValue, args: tuple[bytes, ...], seed: str) -> Result:
    """SRANDMEMBER [count]: ``args`` is () or the count (checked by the parser)."""
    rng = random.Random(seed)
    listed = list(members)
    if not args:
        return rng.choice(listed) if listed else None
    count = int(args[0])
    if count >= 0:
        return tuple(rng.sample(listed, min(count, len(listed))))
    if not listed:
        return ()
    return tuple(rng.choice(listed) for _ in range(-count))


def _scan_reply(container: HashValue | SetValue, args: tuple[bytes, ...], *, pairs: bool) -> Result:
    """HSCAN / SSCAN: ``args`` is (cursor, count[, pattern]) as the parser made them; the
    result (next cursor, element[, value], ...)."""
    cursor, count = int(args[0]), int(args[1])
    pattern = args[2] if len(args) > 2 else None
    next_cursor, elements = scan_elements(container, cursor, count)
    if pattern is not None:
        matches = glob_matcher(pattern)
        elements = [element for element in elements if matches(element)]
    items: list[bytes | int | None] = [b"%d" % next_cursor]
    if isinstance(container, HashValue) and pairs:
        for field in elements:
            items += (field, container[field])
    else:
        items += elements
    return tuple(items)


def _position(element: bytes) -> int:
    """An element's place in a scan of a large container: 1 .. 2**56 (0 is the start)."""
    digest = hashlib.blake2b(element, digest_size=_POSITION_BYTES).digest()
    return int.from_bytes(digest, "big") + 1


def scan_elements(
    container: HashValue | SetValue, cursor: int, count: int
) -> tuple[int, list[bytes]]:
    """The elements of one HSCAN / SSCAN call from ``cursor`` and the cursor to go on from
    (0: done). Module doc: all at once when small, else in hash order, at least ``count``."""
    size = len(container)
    if size <= SCAN_ALL_MAX:  # whatever the cursor: it may have shrunk since the last call
        return 0, list(container)
    visit = max(count, -(-size // SCAN_CALLS_MIN))
    ahead = [(_position(element), element) for element in container]
    ahead = [entry for entry in ahead if entry[0] >= cursor]
    if len(ahead) <= visit:
        return 0, [element for _, element in ahead]
    taken = heapq.nsmallest(visit, ahead)
    last = taken[-1][0]
    # Every element of the last position comes in this call (a cursor never splits one).
    taken += [entry for entry in ahead if entry[0] == last and entry not in taken]
    return last + 1, [element for _, element in taken]
