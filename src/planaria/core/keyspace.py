"""The key space of a partition as SCAN, KEYS, RANDOMKEY and TYPE see it: a scan order that
survives inserts, deletes and moves of the partition, and Redis' glob patterns.

**Scan order.** Every key has a position ``scan_order(key) = slot << 48 | h``, where ``h``
is 48 bits of BLAKE2b of the key: the same number on every node, whatever order the keys
arrived in. A partition keeps its keys sorted by position (:class:`KeyIndex`, chunked so
an insert or delete costs O(log n + chunk), never a copy of the whole). A SCAN cursor is
the position to go on from, a plain unsigned integer as Redis clients expect (below 2**62).

The guarantee, as Redis gives it (docs/compatibility.md): a key present from the first
call of an iteration to the last, whose slot the node serves for all of it, is returned
at least once, however many keys are added or removed meanwhile. Each call returns every
key from its cursor on in position order, and the next cursor is just past the last
position returned (a call never ends between two keys of one position: all of a
position's keys come together), so a key that stayed is never behind a cursor that has
not returned it. Because positions are the same on every replica, a cursor taken to the
partition's new primary after a move goes on exactly where it was.

**Globs.** :func:`glob_matcher` compiles a KEYS / SCAN MATCH pattern to a regular
expression that matches exactly what redis-server 7.0's ``stringmatchlen`` does (escapes,
``[^a-z]`` classes with its quirks: reversed ranges, an unclosed class, a range whose end
is ``]``), checked against a port of that function (tests/core/test_keyspace.py) and
against redis-server itself (tests/node/test_differential.py).
"""

from __future__ import annotations

import hashlib
import random
import re
from binascii import crc_hqx
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence

from planaria.core.messages import ExpireKeys, HashValue, MSet, SetValue
from planaria.core.slots import SLOTS, hash_tag
from planaria.errors import UsageError

__all__ = [
    "CHUNK_KEYS",
    "ORDER_BITS",
    "ORDER_END",
    "KeyIndex",
    "glob_matcher",
    "scan_order",
    "scan_ranges",
    "type_name",
    "write_keys",
]

ORDER_BITS = 48  # bits of hash under the slot in a position
ORDER_END = SLOTS << ORDER_BITS  # past every position: 2**62
CHUNK_KEYS = 512  # a chunk splits in two past twice this


_blake2b = hashlib.blake2b


def scan_order(key: bytes) -> int:
    """The key's position in every scan: its slot, then 48 bits of its BLAKE2b hash. (The
    slot as ``keyslot`` computes it, without its checks of the type: every write pays this.)"""
    slot = crc_hqx(hash_tag(key), 0) & (SLOTS - 1)
    digest = _blake2b(key, digest_size=ORDER_BITS // 8).digest()
    return (slot << ORDER_BITS) | int.from_bytes(digest, "big")


def type_name(value: object) -> str:
    """The name TYPE answers and SCAN TYPE filters on for a stored value."""
    if isinstance(value, bytes):
        return "string"
    if isinstance(value, HashValue):
        return "hash"
    if isinstance(value, SetValue):
        return "set"
    raise UsageError(f"no type name for a value of {type(value).__name__}")


def write_keys(op: object) -> tuple[bytes, ...]:
    """The keys a write op may add or remove: MSET's keys, ExpireKeys' keys, or its ``key``
    (SINTERSTORE's destination: its sources are only read). Every write that changes a
    partition's keys must say them so, for the replica to keep its :class:`KeyIndex` in
    step. By type, not by attribute: an HSET's field-value pairs are no keys."""
    if isinstance(op, MSet):
        return tuple(key for key, _ in op.pairs)
    if isinstance(op, ExpireKeys):
        return op.keys
    key = getattr(op, "key", None)
    if not isinstance(key, bytes):
        raise UsageError(f"{type(op).__name__} names no key")
    return (key,)


class KeyIndex:
    """A partition's keys sorted by :func:`scan_order`, in chunks of at most
    ``2 * chunk_keys`` (parallel lists of positions and keys), with the last position of
    each chunk to find one by bisection. Keys of one position sit together, in no
    particular order among themselves. Memory: the live keys (two references and an int
    each) and one small list per chunk; an empty chunk is dropped at once."""

    __slots__ = ("_chunk_keys", "_keys", "_lasts", "_length", "_orders")

    def __init__(self, keys: Iterable[bytes] = (), *, chunk_keys: int = CHUNK_KEYS) -> None:
        if chunk_keys < 1:
            raise UsageError(f"chunk_keys must be >= 1, got {chunk_keys}")
        self._chunk_keys = chunk_keys
        entries = sorted((scan_order(key), key) for key in keys)
        self._orders: list[list[int]] = []
        self._keys: list[list[bytes]] = []
        self._lasts: list[int] = []
        for start in range(0, len(entries), chunk_keys):
            part = entries[start : start + chunk_keys]
            self._orders.append([order for order, _ in part])
            self._keys.append([key for _, key in part])
            self._lasts.append(part[-1][0])
        self._length = len(entries)

    def __len__(self) -> int:
        return self._length

    @property
    def chunks(self) -> int:
        return len(self._orders)

    def add(self, key: bytes) -> None:
        """Add ``key`` (the caller knows it is not in: the partition's state had it not)."""
        order = scan_order(key)
        if not self._orders:
            self._orders.append([order])
            self._keys.append([key])
            self._lasts.append(order)
            self._length = 1
            return
        i = min(bisect_left(self._lasts, order), len(self._lasts) - 1)
        orders, keys = self._orders[i], self._keys[i]
        j = bisect_right(orders, order)
        orders.insert(j, order)
        keys.insert(j, key)
        self._lasts[i] = orders[-1]
        self._length += 1
        if len(orders) > 2 * self._chunk_keys:
            half = len(orders) // 2
            self._orders[i : i + 1] = [orders[:half], orders[half:]]
            self._keys[i : i + 1] = [keys[:half], keys[half:]]
            self._lasts[i : i + 1] = [orders[half - 1], orders[-1]]

    def discard(self, key: bytes) -> bool:
        """Remove ``key``; whether it was in."""
        order = scan_order(key)
        i = bisect_left(self._lasts, order)
        while i < len(self._orders):
            orders, keys = self._orders[i], self._keys[i]
            j = bisect_left(orders, order)
            while j < len(orders) and orders[j] == order:
                if keys[j] == key:
                    del orders[j], keys[j]
                    self._length -= 1
                    if orders:
                        self._lasts[i] = orders[-1]
                    else:
                        del self._orders[i], self._keys[i], self._lasts[i]
                    return True
                j += 1
            if j < len(orders):
                return False  # past the keys of that position
            i += 1  # the position's keys may go on in the next chunk
        return False

    def entries_from(self, start: int) -> Iterator[tuple[int, bytes]]:
        """``(position, key)`` from the first position >= ``start`` on, in order. Do not
        change the index while iterating."""
        i = bisect_left(self._lasts, start)
        if i == len(self._orders):
            return
        j = bisect_left(self._orders[i], start)
        for chunk in range(i, len(self._orders)):
            orders, keys = self._orders[chunk], self._keys[chunk]
            for k in range(j, len(orders)):
                yield orders[k], keys[k]
            j = 0

    def scan(self, start: int, end: int, count: int) -> tuple[list[bytes], int | None]:
        """The keys at positions in ``[start, end)``, from ``start``: ``count`` of them, or
        more to finish the last one's position; and the position to go on from, or None
        when none is left before ``end``. Copies slices of the chunks (no step per key)."""
        found: list[bytes] = []
        i = bisect_left(self._lasts, start)
        if i == len(self._orders):
            return found, None
        j = bisect_left(self._orders[i], start)
        closing: int | None = None  # once ``count`` is reached: the position to finish
        while i < len(self._orders):
            orders, keys = self._orders[i], self._keys[i]
            stop = len(orders) if orders[-1] < end else bisect_left(orders, end, j)
            if closing is None:
                take = min(stop, j + count - len(found))
                found += keys[j:take]
                if len(found) >= count:
                    closing = orders[take - 1]
                j = take
            if closing is not None:
                while j < stop and orders[j] == closing:
                    found.append(keys[j])
                    j += 1
                if j < stop:
                    return found, orders[j]
            if stop < len(orders):
                return found, None  # the next position is at or past ``end``
            i += 1
            j = 0
        return found, None

    def random_key(self, rng: random.Random) -> bytes | None:
        """A key chosen uniformly (None when empty); walks the chunks' sizes, not the keys."""
        if self._length == 0:
            return None
        place = rng.randrange(self._length)
        for keys in self._keys:
            if place < len(keys):
                return keys[place]
            place -= len(keys)
        raise UsageError("the index lost count of its keys")  # pragma: no cover

    def __iter__(self) -> Iterator[bytes]:
        for keys in self._keys:
            yield from keys


def scan_ranges(
    parts: Sequence[tuple[range, KeyIndex]], cursor: int, count: int
) -> tuple[int, list[bytes]]:
    """One SCAN step over the partitions a node serves (``(slots, index)`` each): the keys
    from position ``cursor`` on, ``count`` or so (at least ``count`` unless the end is
    reached), and the next cursor (0: done). Slots of no part are skipped: a cursor that
    lands on a node that does not serve its slot goes on with the next slot it serves."""
    if count < 1:
        raise UsageError(f"count must be >= 1, got {count}")
    found: list[bytes] = []
    ordered = sorted(parts, key=lambda part: part[0].start)
    for n, (slots, index) in enumerate(ordered):
        low, high = slots.start << ORDER_BITS, slots.stop << ORDER_BITS
        if high <= cursor:
            continue
        keys, following = index.scan(max(cursor, low), high, count - len(found))
        found += keys
        if following is not None:
            return following, found
        if len(found) >= count:
            # This part is done; go on at the next one (0 when it was the last).
            later = [s.start << ORDER_BITS for s, _ in ordered[n + 1 :]]
            return (later[0] if later else 0), found
    return 0, found


# --- Redis glob patterns (stringmatchlen) -------------------------------------------------------


def glob_matcher(pattern: bytes) -> Callable[[bytes], bool]:
    """Whether a key matches ``pattern`` as KEYS and SCAN MATCH decide in redis-server 7.0:
    ``*`` alone matches every key (KEYS and SCAN skip the match then); otherwise the key
    must match by ``stringmatchlen``, which an empty key only does for an empty pattern."""
    if pattern == b"*":
        return lambda key: True
    compiled = re.compile(_glob_regex(pattern), re.DOTALL)
    match = compiled.fullmatch

    def matches(key: bytes) -> bool:
        if not key:  # stringmatchlen's loop never runs: only "" is left to match ""
            return not pattern
        return match(key) is not None

    return matches


def _glob_regex(pattern: bytes) -> bytes:
    """``pattern`` as a regular expression, read exactly as ``stringmatchlen`` reads it."""
    parts: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == ord("*"):
            while i + 1 < n and pattern[i + 1] == ord("*"):
                i += 1
            parts.append(b".*")
        elif c == ord("?"):
            parts.append(b".")
        elif c == ord("["):
            members, i = _glob_class(pattern, i + 1)
            parts.append(members)
        elif c == ord("\\") and i + 1 < n:
            i += 1
            parts.append(re.escape(pattern[i : i + 1]))
        else:
            parts.append(re.escape(pattern[i : i + 1]))
        i += 1
    return b"".join(parts)


def _glob_class(pattern: bytes, i: int) -> tuple[bytes, int]:
    """A ``[...]`` class from just after its ``[``: the regex of the byte set it matches,
    and the index of its last pattern byte (as the C loop leaves ``pattern``)."""
    n = len(pattern)
    negate = i < n and pattern[i] == ord("^")
    if negate:
        i += 1
    members: set[int] = set()
    while True:
        left = n - i  # patternLen
        if left >= 2 and pattern[i] == ord("\\"):
            i += 1
            members.add(pattern[i])
        elif left >= 1 and pattern[i] == ord("]"):
            break
        elif left == 0:
            i -= 1  # the class ran to the end: it ends at the last byte
            break
        elif left >= 3 and pattern[i + 1] == ord("-"):
            low, high = sorted((pattern[i], pattern[i + 2]))
            members.update(range(low, high + 1))
            i += 2
        else:
            members.add(pattern[i])
        i += 1
    chosen = set(range(256)) - members if negate else members
    if not chosen:
        return b"(?!)", i
    return b"[" + b"".join(re.escape(bytes([byte])) for byte in sorted(chosen)) + b"]", i
