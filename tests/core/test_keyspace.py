"""The key space (core/keyspace.py): the scan-order index against a plain sorted model,
SCAN's guarantee while keys come and go (and across a move of a partition), the replica
keeping its index in step (the ``scan-index-stale`` bug shows the check bites), the index
built only on first use, in bounded slices, with the writes made meanwhile reconciled (the
``scan-build-unreconciled`` bug shows that check bites), and Redis' glob patterns against a
port of redis-server's ``stringmatchlen``."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.core.keyspace import (
    BUILD_SLICE_KEYS,
    ORDER_BITS,
    ORDER_END,
    KeyIndex,
    LazyKeyIndex,
    glob_matcher,
    scan_order,
    scan_ranges,
    type_name,
    write_keys,
)
from planaria.core.messages import (
    Delete,
    Entry,
    ExpireKeys,
    HashSet,
    HashValue,
    IncrBy,
    MSet,
    Set,
    SetStore,
    SetValue,
    WriteOp,
)
from planaria.core.replica import Replica, ReplicaSettings
from planaria.core.slots import SLOTS, keyslot, slot_range
from planaria.errors import UsageError

keys = st.binary(max_size=4) | st.sampled_from([b"{t}a", b"{t}b", b"{t}c", b"x", b""])


def _model(present: set[bytes]) -> list[bytes]:
    return [key for _, key in sorted((scan_order(key), key) for key in present)]


def _orders(index: KeyIndex) -> list[int]:
    return [order for order, _ in index.entries_from(0)]


# --- the index --------------------------------------------------------------------------------


def test_the_scan_order_is_the_slot_then_a_hash_below_2_to_the_62() -> None:
    for key in (b"", b"a", b"{t}a", b"\xff" * 100):
        order = scan_order(key)
        assert order >> ORDER_BITS == keyslot(key)
        assert 0 <= order < ORDER_END == 2**62
    assert scan_order(b"{t}a") != scan_order(b"{t}b")


@settings(max_examples=200)
@given(
    initial=st.sets(keys, max_size=20),
    steps=st.lists(st.tuples(st.booleans(), keys), max_size=60),
    chunk_keys=st.integers(1, 4),
)
def test_the_index_keeps_the_keys_sorted_by_position_through_adds_and_discards(
    initial: set[bytes], steps: list[tuple[bool, bytes]], chunk_keys: int
) -> None:
    index = KeyIndex(initial, chunk_keys=chunk_keys)
    present = set(initial)
    for add, key in steps:
        if add and key not in present:
            index.add(key)
            present.add(key)
        elif not add:
            assert index.discard(key) == (key in present)
            present.discard(key)
        assert len(index) == len(present)
        orders = _orders(index)
        assert orders == sorted(orders)
        assert sorted(index) == sorted(present)
        assert index.chunks <= max(len(present), 0) or not present
    assert list(index) == [key for _, key in index.entries_from(0)]


def test_chunks_split_past_twice_their_size_and_empty_ones_go() -> None:
    index = KeyIndex(chunk_keys=2)
    added = [b"k%d" % n for n in range(50)]
    for key in added:
        index.add(key)
    assert index.chunks >= 50 // 4  # every chunk holds at most 4
    assert list(index) == _model(set(added))
    for key in added:
        index.discard(key)
    assert len(index) == 0 and index.chunks == 0
    assert list(index.entries_from(0)) == []


def test_keys_of_one_position_are_found_across_chunks() -> None:
    """Two keys never share 48 bits of hash in practice: force it, with an order that puts
    every key at one position, to check that a position's keys spread over chunks are
    still found."""
    index = KeyIndex(chunk_keys=1, position=lambda key: 7)
    for key in (b"a", b"b", b"c", b"d", b"e"):
        index.add(key)
    assert index.chunks > 1
    assert index.discard(b"e") and index.discard(b"a") and not index.discard(b"z")
    found, following = index.scan(0, 100, 1)
    assert sorted(found) == [b"b", b"c", b"d"]  # all of the position, whatever COUNT
    assert following is None


def test_random_key_is_uniform_enough_and_none_when_empty() -> None:
    rng = random.Random(5)
    assert KeyIndex().random_key(rng) is None
    index = KeyIndex([b"a", b"b", b"c", b"d"], chunk_keys=1)
    seen = {index.random_key(rng) for _ in range(200)}
    assert seen == {b"a", b"b", b"c", b"d"}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(UsageError):
        KeyIndex(chunk_keys=0)
    with pytest.raises(UsageError):
        scan_ranges([], 0, 0)
    with pytest.raises(UsageError):
        type_name(5)
    with pytest.raises(UsageError):
        write_keys(object())
    assert type_name(b"x") == "string"
    assert write_keys(MSet(((b"a", b"1"), (b"b", b"2")))) == (b"a", b"b")
    assert write_keys(Delete(b"k")) == (b"k",)
    assert write_keys(ExpireKeys((b"a", b"b"))) == (b"a", b"b")
    # An HSET's field-value pairs are no keys; SINTERSTORE's sources are only read.
    assert write_keys(HashSet(b"h", ((b"f", b"1"),))) == (b"h",)
    assert write_keys(SetStore(b"d", (b"a", b"b"), "union")) == (b"d",)
    assert type_name(HashValue({b"f": b"1"})) == "hash"
    assert type_name(SetValue({b"m": None})) == "set"


# --- SCAN's guarantee ---------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    initial=st.sets(keys, max_size=30),
    between=st.lists(st.tuples(st.booleans(), keys), max_size=40),
    count=st.integers(1, 5),
)
def test_scan_returns_every_key_present_for_the_whole_iteration(
    initial: set[bytes], between: list[tuple[bool, bytes]], count: int
) -> None:
    # Two partitions (the two halves of the slots), as a node leading both has them.
    halves = [range(0, SLOTS // 2), range(SLOTS // 2, SLOTS)]
    by_half = {0: KeyIndex(chunk_keys=2), 1: KeyIndex(chunk_keys=2)}
    everything: dict[int, set[bytes]] = {0: set(), 1: set()}
    for key in initial:
        half = 0 if keyslot(key) < SLOTS // 2 else 1
        by_half[half].add(key)
        everything[half].add(key)
    parts = [(halves[1], by_half[1]), (halves[0], by_half[0])]  # any order: sorted inside

    def place(key: bytes) -> int:
        return 0 if keyslot(key) < SLOTS // 2 else 1

    stayed = set(initial)
    returned: list[bytes] = []
    cursor = 0
    changes = iter(between)
    for _ in range(10_000):
        cursor, found = scan_ranges(parts, cursor, count)
        returned += found
        if cursor == 0:
            break
        change = next(changes, None)
        if change is not None:
            add, key = change
            half = place(key)
            if add and key not in everything[half]:
                everything[half].add(key)
                by_half[half].add(key)
            elif not add and key in everything[half]:
                everything[half].discard(key)
                by_half[half].discard(key)
                stayed.discard(key)
    else:
        pytest.fail("the scan does not end")
    missing = stayed - set(returned)
    assert not missing, f"keys present all along but never returned: {missing}"
    # Nothing is made up: every key returned was present at some point.
    assert set(returned) <= set(initial) | {key for add, key in between if add}


def test_a_scan_without_changes_returns_each_key_once_in_position_order() -> None:
    present = {b"k%d" % n for n in range(300)}
    index = KeyIndex(present, chunk_keys=8)
    cursor, returned, calls = 0, [], 0
    while True:
        cursor, found = scan_ranges([(range(SLOTS), index)], cursor, 7)
        assert len(found) <= 7
        returned += found
        calls += 1
        if cursor == 0:
            break
    assert returned == _model(present)
    assert calls == -(-300 // 7)  # no empty call at the end


def test_a_cursor_outside_the_nodes_slots_goes_on_with_the_next_it_serves() -> None:
    """Partition 1 of 4 moved away: this node serves 0 and 2. A cursor in partition 1's
    slots (from the node that led it) goes on at partition 2's first slot."""
    present = {b"k%d" % n for n in range(400)}
    served = {0: slot_range(0, 4), 2: slot_range(2, 4)}
    indexes = {
        p: KeyIndex({k for k in present if keyslot(k) in slots}) for p, slots in served.items()
    }
    parts = [(served[p], indexes[p]) for p in (0, 2)]
    inside_1 = (slot_range(1, 4).start + 5) << ORDER_BITS
    cursor, found = scan_ranges(parts, inside_1, 1000)
    assert cursor == 0
    assert sorted(found) == sorted(indexes[2])
    # And a cursor past every served slot ends the iteration.
    assert scan_ranges(parts, slot_range(3, 4).start << ORDER_BITS, 10) == (0, [])


def test_a_cursor_goes_on_where_it_was_on_another_replica_of_the_partition() -> None:
    """The positions are the same on every replica: a cursor from the old primary, given to
    a new one whose index was built in another order, skips nothing that stayed."""
    present = [b"k%d" % n for n in range(200)]
    old = KeyIndex(chunk_keys=3)
    for key in present:
        old.add(key)
    new = KeyIndex(reversed(present), chunk_keys=5)
    cursor, first = scan_ranges([(range(SLOTS), old)], 0, 50)
    rest: list[bytes] = []
    while cursor:
        cursor, found = scan_ranges([(range(SLOTS), new)], cursor, 50)
        rest += found
    assert first + rest == _model(set(present))


def test_the_count_reached_at_a_parts_end_goes_on_at_the_next_part() -> None:
    low = [k for k in (b"k%d" % n for n in range(20_000)) if keyslot(k) < 100]
    assert len(low) > 10
    a = KeyIndex(low)
    parts = [(range(0, 100), a), (range(200, 300), KeyIndex())]
    cursor, found = scan_ranges(parts, 0, len(a))
    assert sorted(found) == sorted(a)
    assert cursor == 200 << ORDER_BITS
    assert scan_ranges(parts, cursor, 5) == (0, [])


# --- the replica keeps its index in step ---------------------------------------------------------


def _built(replica: Replica) -> KeyIndex:
    """Build ``replica``'s key index to the end (a slice at a time) and return it."""
    replica.start_key_index()
    while not replica.key_index_step():
        pass
    index = replica.key_index
    assert index is not None
    return index


def _replica_with_writes(bugs: frozenset[str]) -> tuple[Replica, set[bytes]]:
    replica = Replica("a", 0, ReplicaSettings(bugs=bugs))
    _built(replica)  # empty: built at once, then kept in step by the writes
    ops: list[WriteOp] = [
        Set(b"a", b"1"),
        Set(b"b", b"1"),
        IncrBy(b"c", 1),
        MSet(((b"{t}1", b"x"), (b"{t}2", b"y"), (b"{t}1", b"z"))),  # a key twice
        Delete(b"a"),
        Set(b"b", b"2", nx=True),  # not applied: b stays
        Delete(b"nothing"),
        IncrBy(b"b", 1),
        Set(b"d", b"q"),
        IncrBy(b"d", 1),  # fails (not an integer): d stays
    ]
    for n, op in enumerate(ops, start=1):
        replica._apply(Entry(1, n, ("c", n), op), ("c", n), op)
    return replica, set(replica.applied)


def test_a_built_index_follows_every_apply() -> None:
    replica, present = _replica_with_writes(frozenset())
    assert present == {b"b", b"c", b"{t}1", b"{t}2", b"d"}
    assert replica.key_index is not None
    assert sorted(replica.key_index) == sorted(present)  # each once


def test_the_index_check_bites_a_replica_whose_index_goes_stale() -> None:
    replica, present = _replica_with_writes(frozenset({"scan-index-stale"}))
    assert replica.key_index is not None
    assert sorted(replica.key_index) != sorted(present)


def test_a_replica_builds_no_index_until_asked_and_its_writes_pay_for_none() -> None:
    from planaria.core.messages import ReplicaSnapshot, Version

    kv = {b"k%d" % n: (b"v", Version(1, n)) for n in range(1, 50)}
    snapshot = ReplicaSnapshot(partition=0, index=49, epoch=1, kv=kv, dedup={})
    replica = Replica("a", 0, snapshot=snapshot)  # as a restart or an install builds it
    op = Set(b"new", b"v")
    replica._apply(Entry(1, 50, ("c", 1), op), ("c", 1), op)
    assert replica.key_index is None and not replica.key_index_building
    assert replica.key_index_builds == 0
    assert replica._keys.tracking is False  # the writes were not told
    assert list(_built(replica)) == _model(set(kv) | {b"new"})
    assert replica.key_index_builds == 1
    assert replica.start_key_index() is False  # built: nothing to start


# --- the lazy build: writes while it runs are reconciled ------------------------------------


def _write(lazy: LazyKeyIndex, kv: dict[bytes, int], keys: tuple[bytes, ...], add: bool) -> None:
    """A write of ``keys`` as a replica applies one: told before and after, if tracking."""
    before = lazy.before_write(keys) if lazy.tracking else ()
    for key in keys:
        if add:
            kv[key] = 1
        else:
            kv.pop(key, None)
    if before:
        lazy.after_write(before)


def _build_through_writes(*, reconcile: bool) -> tuple[LazyKeyIndex, dict[bytes, int]]:
    """Each case the reconciliation must handle, with one key per slice: a key deleted
    before its turn, one deleted after it, one added while listing, one added then deleted
    while listing, one re-added after its delete, writes while settling, an MSET naming a
    key twice."""
    kv = {b"k%d" % n: 1 for n in range(8)}
    lazy = LazyKeyIndex(kv, reconcile=reconcile)
    assert lazy.start() and lazy.building and lazy.index is None
    order = list(kv)  # the listing's order (the dict's)
    lazy.step(2)  # order[0], order[1] indexed
    _write(lazy, kv, (order[5],), add=False)  # deleted before its turn
    _write(lazy, kv, (order[0],), add=False)  # deleted after its turn
    _write(lazy, kv, (b"new",), add=True)  # added while listing
    _write(lazy, kv, (b"gone",), add=True)  # added ...
    lazy.step(1)
    _write(lazy, kv, (b"gone",), add=False)  # ... then deleted while listing
    _write(lazy, kv, (order[1],), add=False)  # deleted after its turn ...
    _write(lazy, kv, (order[1],), add=True)  # ... and back
    _write(lazy, kv, (b"{t}m", b"{t}n", b"{t}m"), add=True)  # an MSET naming a key twice
    while lazy._listed is not None:
        assert not lazy.step(1)
    # Settling: a key still to settle is left to it; another is kept in step at once.
    assert lazy.building and lazy.index is None
    _write(lazy, kv, (b"new",), add=False)
    _write(lazy, kv, (b"late",), add=True)
    while not lazy.step(1):
        pass
    _write(lazy, kv, (b"after",), add=True)  # built: kept in step
    _write(lazy, kv, (order[2],), add=False)
    return lazy, kv


def test_writes_made_during_a_build_are_reconciled() -> None:
    lazy, kv = _build_through_writes(reconcile=True)
    assert lazy.index is not None and not lazy.building
    assert list(lazy.index) == _model(set(kv))
    assert len(lazy.index) == len(kv)


def test_the_reconciliation_check_bites_a_build_that_ignores_the_writes() -> None:
    lazy, kv = _build_through_writes(reconcile=False)  # bug switch scan-build-unreconciled
    assert lazy.index is not None
    assert list(lazy.index) != _model(set(kv))


@settings(max_examples=300)
@given(
    initial=st.sets(keys, max_size=12),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["write", "write", "step", "step", "start", "drop"]),
            st.lists(keys, min_size=1, max_size=3),  # a write's keys
            st.booleans(),  # a write adds them (else deletes them)
            st.integers(1, 4),  # a step's slice
        ),
        max_size=40,
    ),
)
def test_a_lazy_build_ends_with_exactly_the_keys_present_whatever_the_interleaving(
    initial: set[bytes], steps: list[tuple[str, list[bytes], bool, int]]
) -> None:
    kv = dict.fromkeys(initial, 1)
    lazy = LazyKeyIndex(kv)
    for kind, step_keys, add, slice_keys in steps:
        if kind == "write":
            _write(lazy, kv, tuple(step_keys), add=add)
        elif kind == "step":
            lazy.step(slice_keys)
        elif kind == "start":
            lazy.start()
        else:
            lazy.drop()
            assert lazy.index is None and not lazy.tracking
        index = lazy.index
        if index is not None:  # once built, in step after every write
            assert list(index) == _model(set(kv))
    lazy.start()
    while not lazy.step(2):
        pass
    assert lazy.index is not None and list(lazy.index) == _model(set(kv))
    # Bounded: nothing is left of the build (its key list, its touched set).
    assert lazy._listed is None and lazy._touched is None


def test_a_build_step_indexes_at_most_its_slice_and_the_slice_is_a_named_constant() -> None:
    kv = dict.fromkeys((b"k%d" % n for n in range(3 * BUILD_SLICE_KEYS + 1)), 1)
    lazy = LazyKeyIndex(kv)
    assert lazy.step() is False  # not started: nothing to do
    lazy.start()
    sizes = []
    while not lazy.step():
        assert lazy._index is not None
        sizes.append(len(lazy._index))
    assert sizes == [BUILD_SLICE_KEYS, 2 * BUILD_SLICE_KEYS, 3 * BUILD_SLICE_KEYS, len(kv)]
    with pytest.raises(UsageError, match="max_keys"):
        lazy.step(0)


def _build_on_a_primary_during_writes(bugs: frozenset[str]) -> Replica:
    """A primary's build through a write, a delete, a key added then deleted, active
    expiry, and writes while settling."""
    from test_replica import ready_pump  # tests/core is on sys.path

    pump = ready_pump(expire_keys_per_entry=2, bugs=bugs)
    primary = pump.replicas["a"]
    at = int(pump.now) + 30
    seq = 0

    def call(op: WriteOp) -> None:
        nonlocal seq
        seq += 1
        reply = pump.call("a", op, ("c", seq))
        assert reply is not None and reply.error is None

    for n in range(40):
        call(Set(b"k%d" % n, b"v", expire_ms=at if n % 5 == 0 else None))
    assert primary.key_index is None and primary.key_index_builds == 0
    assert primary.start_key_index()
    primary.key_index_step(3)
    call(Set(b"added", b"v"))  # a write during the build
    call(Delete(b"k1"))  # a delete (of a key maybe indexed already, maybe not)
    call(Set(b"brief", b"v"))  # added ...
    primary.key_index_step(3)
    call(Delete(b"brief"))  # ... then deleted during the build
    pump.tick(300)  # active expiry: the primary logs ExpireKeys, applied as its own entries
    assert not any(key in primary.applied for key in (b"k0", b"k5"))
    while not primary.key_index_step(3):
        call(Set(b"during-settling", b"v"))
    for backup in ("b", "c"):  # the backups never built one
        assert pump.replicas[backup].key_index_builds == 0
    return primary


def test_a_build_on_a_primary_reconciles_writes_deletes_and_active_expiry() -> None:
    primary = _build_on_a_primary_during_writes(frozenset())
    assert primary.key_index is not None
    assert list(primary.key_index) == _model(set(primary.applied))


def test_the_primarys_build_check_bites_with_scan_build_unreconciled() -> None:
    primary = _build_on_a_primary_during_writes(frozenset({"scan-build-unreconciled"}))
    assert primary.key_index is not None
    assert list(primary.key_index) != _model(set(primary.applied))


def test_a_primary_that_steps_down_drops_its_index_and_its_build() -> None:
    from test_replica import ready_pump

    from planaria.core.messages import PartitionConfig
    from planaria.core.replica import Role

    pump = ready_pump()
    primary = pump.replicas["a"]
    for n in range(10):
        pump.call("a", Set(b"k%d" % n, b"v"), ("c", n + 1))
    primary.start_key_index()
    primary.key_index_step(2)
    assert primary.key_index_building
    newer = PartitionConfig(0, 2, "b", ("a", "b", "c"), frozenset("bc"), 2)
    primary.on_config(newer, pump.now)
    assert primary.role is Role.BACKUP
    assert not primary.key_index_building and primary.key_index is None
    assert primary.key_index_step() is False  # nothing left to build
    assert primary._keys.tracking is False  # a backup's applies pay nothing


# --- globs ---

# A line-by-line port of redis-server 7.0's ``stringmatchlen`` (src/util.c, without
# ``nocase``): the reference glob_matcher is checked against. Indexes stand for the C
# pointers; reading past the pattern's end reads the NUL that ends every sds string.


def _at(data: bytes, i: int) -> int:
    return data[i] if i < len(data) else 0


def stringmatch(pattern: bytes, string: bytes) -> bool:
    skip_longer = [False]
    return _match(pattern, 0, string, 0, skip_longer)


def _match(pattern: bytes, p: int, string: bytes, s: int, skip_longer: list[bool]) -> bool:
    plen, slen = len(pattern) - p, len(string) - s
    while plen and slen:
        c = pattern[p]
        if c == ord("*"):
            while plen and _at(pattern, p + 1) == ord("*"):
                p += 1
                plen -= 1
            if plen == 1:
                return True
            while slen:
                if _match(pattern, p + 1, string, s, skip_longer):
                    return True
                if skip_longer[0]:
                    return False
                s += 1
                slen -= 1
            skip_longer[0] = True
            return False
        if c == ord("?"):
            s += 1
            slen -= 1
        elif c == ord("["):
            p += 1
            plen -= 1
            negate = _at(pattern, p) == ord("^")
            if negate:
                p += 1
                plen -= 1
            matched = False
            while True:
                if _at(pattern, p) == ord("\\") and plen >= 2:
                    p += 1
                    plen -= 1
                    if pattern[p] == string[s]:
                        matched = True
                elif _at(pattern, p) == ord("]"):
                    break
                elif plen == 0:
                    p -= 1
                    plen += 1
                    break
                elif plen >= 3 and pattern[p + 1] == ord("-"):
                    start, end = sorted((pattern[p], pattern[p + 2]))
                    p += 2
                    plen -= 2
                    if start <= string[s] <= end:
                        matched = True
                elif pattern[p] == string[s]:
                    matched = True
                p += 1
                plen -= 1
            if negate:
                matched = not matched
            if not matched:
                return False
            s += 1
            slen -= 1
        else:
            if c == ord("\\") and plen >= 2:
                p += 1
                plen -= 1
            if pattern[p] != string[s]:
                return False
            s += 1
            slen -= 1
        p += 1
        plen -= 1
        if slen == 0:
            while _at(pattern, p) == ord("*"):
                p += 1
                plen -= 1
            break
    return plen == 0 and slen == 0


# ---------------------------------------------------------------------------------------

GLOB_BYTES = b"ab*?[]^-\\]x"
patterns = st.lists(st.sampled_from(list(GLOB_BYTES)), max_size=8).map(bytes)
subjects = st.lists(st.sampled_from(list(b"ab*?[]^-\\x\x00")), max_size=6).map(bytes)


@settings(max_examples=2000)
@given(pattern=patterns, subject=subjects)
def test_globs_match_exactly_as_redis_stringmatchlen(pattern: bytes, subject: bytes) -> None:
    expected = pattern == b"*" or stringmatch(pattern, subject)
    assert glob_matcher(pattern)(subject) == expected, (pattern, subject)


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        (b"h?llo", b"hello", True),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[b-a]llo", b"hbllo", True),  # a reversed range is swapped
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hxllo", False),
        (b"[a-]", b"]", True),  # the range runs to the ']' ...
        (b"[a-]", b"-", False),
        (b"[abc", b"c", True),  # an unclosed class ends with the pattern
        (b"**", b"", False),  # only "*" itself matches the empty key
        (b"*", b"", True),
        (b"", b"", True),
        (b"a*", b"a", True),
        (b"a\\", b"a\\", True),  # a trailing backslash is itself
        (b"[\\]]", b"]", True),
        (b"[^]", b"x", True),  # negated empty class: any byte
        (b"[]", b"x", False),
    ],
)
def test_glob_cases(pattern: bytes, subject: bytes, matches: bool) -> None:
    assert glob_matcher(pattern)(subject) is matches
    assert (pattern == b"*" or stringmatch(pattern, subject)) is matches
