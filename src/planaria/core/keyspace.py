"""The key space of a partition as SCAN, KEYS, RANDOMKEY and TYPE see it: a scan order that
survives inserts, deletes and moves of the partition, and Redis' glob patterns.

**Scan order.** Every key has a position ``scan_order(key) = slot << 48 | h``, where ``h``
is the top 48 bits of the key's XXH3-64 (a stable, specified hash; BLAKE2b before, at three
times the cost on every write that adds a key): the same number on every node, whatever
order the keys arrived in. A partition keeps its keys sorted by position
(:class:`KeyIndex`, chunked so an insert or delete costs O(log n + chunk), never a copy of
the whole), built on first use (:class:`LazyKeyIndex`). A SCAN cursor is the position to
go on from, a plain unsigned integer as Redis clients expect (below 2**62).

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

import random
import re
from binascii import crc_hqx
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from xxhash import xxh3_64_intdigest

from planaria.core.messages import ExpireKeys, HashValue, MSet, Rename, SetValue
from planaria.core.slots import SLOTS, hash_tag
from planaria.errors import UsageError

__all__ = [
    "BUILD_SLICE_KEYS",
    "CHUNK_KEYS",
    "ORDER_BITS",
    "ORDER_END",
    "KeyIndex",
    "LazyKeyIndex",
    "glob_matcher",
    "scan_order",
    "scan_ranges",
    "type_name",
    "write_keys",
]

ORDER_BITS = 48  # bits of hash under the slot in a position
ORDER_END = SLOTS << ORDER_BITS  # past every position: 2**62
CHUNK_KEYS = 512  # a chunk splits in two past twice this
# A lazy build (LazyKeyIndex.step) indexes or settles at most this many keys per call: the
# node runs one call per turn of its event loop (about 1 ms of pure Python), so a build
# never holds the loop longer, whatever the partition's size.
BUILD_SLICE_KEYS = 1024
_HASH_SHIFT = 64 - ORDER_BITS


def scan_order(key: bytes) -> int:
    """The key's position in every scan: its slot, then the top 48 bits of its XXH3-64.
    (The slot as ``keyslot`` computes it, without its checks of the type: every write that
    adds a key to a built index pays this.)"""
    slot = crc_hqx(hash_tag(key), 0) & (SLOTS - 1)
    return (slot << ORDER_BITS) | (xxh3_64_intdigest(key) >> _HASH_SHIFT)


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
    """The keys a write op may add or remove: MSET's keys, ExpireKeys' keys, RENAME's two,
    or its ``key``
    (SINTERSTORE's destination: its sources are only read). Every write that changes a
    partition's keys must say them so, for the replica to keep its :class:`KeyIndex` in
    step. By type, not by attribute: an HSET's field-value pairs are no keys. (The reader
    of an op type is found once per type: a write to a built index pays a dict lookup.)"""
    keys_of = _KEYS_OF.get(type(op))
    if keys_of is None:
        keys_of = _keys_of_type(op)
        _KEYS_OF[type(op)] = keys_of  # bounded: one entry per op class
    return keys_of(op)


# Op class -> how to read the keys of one of its ops (filled by write_keys).
_KEYS_OF: dict[type, Callable[[object], tuple[bytes, ...]]] = {}


def _pairs_keys(op: object) -> tuple[bytes, ...]:
    pairs: tuple[tuple[bytes, object], ...] = getattr(op, "pairs")  # noqa: B009
    return tuple([key for key, _ in pairs])


def _keys_keys(op: object) -> tuple[bytes, ...]:
    keys: tuple[bytes, ...] = getattr(op, "keys")  # noqa: B009
    return keys


def _key_keys(op: object) -> tuple[bytes, ...]:
    key: bytes = getattr(op, "key")  # noqa: B009
    return (key,)


def _rename_keys(op: object) -> tuple[bytes, ...]:
    key: bytes = getattr(op, "key")  # noqa: B009
    new_key: bytes = getattr(op, "new_key")  # noqa: B009
    return (key, new_key)


def _keys_of_type(op: object) -> Callable[[object], tuple[bytes, ...]]:
    if isinstance(op, MSet):
        return _pairs_keys
    if isinstance(op, Rename):
        return _rename_keys
    if isinstance(op, ExpireKeys):
        return _keys_keys
    if isinstance(getattr(op, "key", None), bytes):
        return _key_keys
    raise UsageError(f"{type(op).__name__} names no key")


class KeyIndex:
    """A partition's keys sorted by :func:`scan_order`, in chunks of at most
    ``2 * chunk_keys`` (parallel lists of positions and keys), with the last position of
    each chunk to find one by bisection. Keys of one position sit together, in no
    particular order among themselves. Memory: the live keys (two references and an int
    each) and one small list per chunk; an empty chunk is dropped at once."""

    __slots__ = ("_chunk_keys", "_keys", "_lasts", "_length", "_orders", "_position")

    def __init__(
        self,
        keys: Iterable[bytes] = (),
        *,
        chunk_keys: int = CHUNK_KEYS,
        position: Callable[[bytes], int] = scan_order,
    ) -> None:
        """``position``: a key's place in the order; another than :func:`scan_order` only in
        tests (e.g. every key at one position, which real hashes never give)."""
        if chunk_keys < 1:
            raise UsageError(f"chunk_keys must be >= 1, got {chunk_keys}")
        self._chunk_keys = chunk_keys
        self._position = position
        entries = sorted((position(key), key) for key in keys)
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
        order = self._position(key)
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
        order = self._position(key)
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


class LazyKeyIndex:
    """A partition's :class:`KeyIndex`, built only once somebody needs it (SCAN, KEYS,
    RANDOMKEY), in bounded slices, while the partition's writes go on; then kept in step.

    Until :meth:`start`, it costs nothing: writes are not told (``tracking`` is False) and
    no memory is held. :meth:`start` copies the list of the keys present (one C-level copy
    of references) and :meth:`step` indexes up to ``max_keys`` of them per call; the owner
    calls it between other work until it answers True. Meanwhile writes are reconciled:

    - while listing, every key a write names is recorded in ``touched`` and not indexed
      when its turn comes (a key touched after its turn may be in the index or not);
    - then ``touched`` is settled, ``max_keys`` a step: each key is taken out of the index
      and put back if the partition has it. A write of a key still in ``touched`` is left
      to that; a write of any other key keeps the index in step directly, since for every
      key outside ``touched`` the index agrees with the partition's keys;
    - when ``touched`` is empty, the index is complete (``index`` returns it).

    ``touched`` holds at most the distinct keys written while listing (the listing is a
    fixed number of steps), and only shrinks while settling. ``reconcile=False`` is the bug
    switch ``scan-build-unreconciled``: writes during a build are not recorded, so the
    index misses the keys they add and keeps those they remove.
    """

    __slots__ = (
        "_index", "_kv", "_listed", "_next", "_reconcile", "_touched", "builds", "tracking"
    )  # fmt: skip

    def __init__(self, kv: Mapping[bytes, object], *, reconcile: bool = True) -> None:
        self._kv = kv  # the partition's keys (the replica's state, changed by its applies)
        self._reconcile = reconcile
        self._index: KeyIndex | None = None  # being built, or built
        self._listed: list[bytes] | None = None  # while listing: the keys at the start
        self._next = 0  # the first of ``_listed`` not indexed yet
        self._touched: set[bytes] | None = None  # while building: see the class
        self.tracking = False  # whether writes must call before_write / after_write
        self.builds = 0  # builds started (a status counter, and for tests)

    @property
    def index(self) -> KeyIndex | None:
        """The complete index, or None (not built, or still building)."""
        return self._index if self._touched is None else None

    @property
    def building(self) -> bool:
        return self._touched is not None

    def start(self) -> bool:
        """Start a build unless one runs or the index is built; whether one started."""
        if self.tracking:
            return False
        self._index = KeyIndex()
        self._listed = list(self._kv)
        self._next = 0
        self._touched = set()
        self.tracking = True
        self.builds += 1
        return True

    def drop(self) -> None:
        """Forget the index and any build (memory back; writes no longer pay)."""
        self._index = None
        self._listed = None
        self._touched = None
        self.tracking = False

    def step(self, max_keys: int = BUILD_SLICE_KEYS) -> bool:
        """Index (or settle) up to ``max_keys`` keys of a running build; whether the index
        is complete (False with no build: call :meth:`start` first)."""
        if max_keys < 1:
            raise UsageError(f"max_keys must be >= 1, got {max_keys}")
        index, touched = self._index, self._touched
        if index is None:
            return False
        if touched is None:
            return True
        listed = self._listed
        if listed is not None:
            stop = min(self._next + max_keys, len(listed))
            add = index.add
            for key in listed[self._next : stop]:
                if key not in touched:  # else settled at the end, as it is then
                    add(key)
            self._next = stop
            if stop == len(listed):
                self._listed = None
            return False
        kv = self._kv
        for _ in range(min(max_keys, len(touched))):
            key = touched.pop()
            index.discard(key)
            if key in kv:
                index.add(key)
        if touched:
            return False
        self._touched = None
        return True

    def before_write(self, keys: tuple[bytes, ...]) -> tuple[tuple[bytes, bool], ...]:
        """Call before applying a write of ``keys`` (only while ``tracking``): what
        :meth:`after_write` needs, each key the index follows with whether it is there."""
        touched = self._touched
        if touched is None and len(keys) == 1:  # built, one key: the common write
            key = keys[0]
            return ((key, key in self._kv),)
        if len(keys) > 1:
            keys = tuple(dict.fromkeys(keys))  # MSET k 1 k 2: one key, added once
        if touched is not None:
            if self._listed is not None:  # listing: record, index nothing now
                if self._reconcile:
                    touched.update(keys)
                return ()
            if touched:  # settling: a key still to settle is left to that
                keys = tuple([key for key in keys if key not in touched])
        kv = self._kv
        return tuple([(key, key in kv) for key in keys])

    def after_write(self, before: tuple[tuple[bytes, bool], ...]) -> None:
        """Bring the index in step with the keys the write added or removed."""
        index = self._index
        if index is None:
            return
        kv = self._kv
        for key, was in before:
            if key in kv:
                if not was:
                    index.add(key)
            elif was:
                index.discard(key)


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
