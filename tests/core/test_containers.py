"""Hashes and sets in the core: their writes' semantics (redis-server 7.0's replies), WRONGTYPE
both ways, copy on write against snapshots, snapshot round trips, identical replay on every
replica (SPOP included), exactly-once retries, and their reads."""

from __future__ import annotations

from typing import Any

import pytest
from test_replica import acked, ready_pump  # tests/core is on sys.path

from planaria.core.codec import (
    decode_entry,
    decode_state,
    encode_entry,
    encode_state,
    encode_state_parts,
)
from planaria.core.containers import (
    HASH_NOT_A_FLOAT,
    HASH_NOT_AN_INTEGER,
    SCAN_ALL_MAX,
    WRONGTYPE,
    read_value,
    scan_elements,
)
from planaria.core.expiry import Expiries
from planaria.core.messages import (
    AppendTo,
    Delete,
    Entry,
    ExpireKeys,
    Get,
    GetEx,
    HashDelete,
    HashIncrBy,
    HashIncrByFloat,
    HashSet,
    HashValue,
    IncrBy,
    IncrByFloat,
    MSet,
    ReplicaSnapshot,
    Set,
    SetAdd,
    SetPop,
    SetRange,
    SetRemove,
    SetStore,
    SetValue,
    Value,
    ValueRead,
    Version,
    WriteOp,
)
from planaria.core.strings import OVERFLOW, apply_write

State = dict[bytes, tuple[Value, Version]]


class Store:
    """A state and its expiries, written as a replica applies entries."""

    def __init__(self) -> None:
        self.kv: State = {}
        self.expiries = Expiries()
        self.index = 0

    def run(self, op: WriteOp, now_ms: int = 0) -> Any:
        self.index += 1
        previous, applied, result, failure = apply_write(
            self.kv, op, Version(1, self.index), self.expiries, now_ms
        )
        return failure if failure is not None else (previous, applied, result)

    def read(self, command: str, key: bytes, *args: bytes, others: tuple[bytes, ...] = ()) -> Any:
        def live(name: bytes) -> Value | None:
            found = self.kv.get(name)
            return None if found is None else found[0]

        result, failure = read_value(ValueRead(key, command, args, others), live, "c:1")
        return failure if failure is not None else result


def test_hset_counts_new_fields_and_keeps_insertion_order() -> None:
    store = Store()
    assert store.run(HashSet(b"h", ((b"f", b"1"), (b"g", b"2"), (b"f", b"3")))) == (None, True, 2)
    assert store.run(HashSet(b"h", ((b"g", b"x"),))) == (None, False, 0)  # an update: 0 new
    assert store.read("hgetall", b"h") == (b"f", b"3", b"g", b"x")
    assert store.run(HashDelete(b"h", (b"f",))) == (None, True, 1)
    assert store.run(HashSet(b"h", ((b"f", b"9"),))) == (None, True, 1)
    assert store.read("hkeys", b"h") == (b"g", b"f")  # re-added at the end, as a listpack
    assert store.run(HashSet(b"h", ((b"f", b"0"), (b"n", b"1")), nx=True)) == (None, True, 1)
    assert store.read("hmget", b"h", b"f", b"n", b"z") == (b"9", b"1", None)
    assert store.read("hlen", b"h") == 3 and store.read("hexists", b"h", b"z") == 0
    assert store.read("hstrlen", b"h", b"g") == 1 and store.read("hvals", b"h") == (
        b"x",
        b"9",
        b"1",
    )


def test_the_last_field_or_member_takes_the_key_and_its_expiry_with_it() -> None:
    store = Store()
    store.run(HashSet(b"h", ((b"f", b"1"),)))
    store.expiries.set(b"h", 10**13)
    assert store.run(HashDelete(b"h", (b"f", b"f", b"g"))) == (None, True, 1)
    assert b"h" not in store.kv and b"h" not in store.expiries
    assert store.run(HashDelete(b"h", (b"f",))) == (None, False, 0)
    store.run(SetAdd(b"s", (b"a",)))
    assert store.run(SetRemove(b"s", (b"a", b"b"))) == (None, True, 1)
    assert store.kv == {}


def test_hincrby_and_hincrbyfloat_as_redis() -> None:
    store = Store()
    assert store.run(HashIncrBy(b"h", b"n", 5)) == (None, True, 5)
    assert store.run(HashIncrBy(b"h", b"n", 2**63 - 5)) == OVERFLOW
    assert store.run(HashIncrByFloat(b"h", b"x", b"10.5")) == (None, True, b"10.5")
    assert store.run(HashIncrByFloat(b"h", b"x", b"0.1")) == (None, True, b"10.6")
    store.run(HashSet(b"h", ((b"s", b"abc"),)))
    assert store.run(HashIncrBy(b"h", b"s", 1)) == HASH_NOT_AN_INTEGER
    assert store.run(HashIncrByFloat(b"h", b"s", b"1")) == HASH_NOT_A_FLOAT
    assert store.read("hget", b"h", b"n") == b"5"


def test_wrongtype_both_ways_and_what_replaces_any_type() -> None:
    store = Store()
    store.run(HashSet(b"h", ((b"f", b"1"),)))
    store.run(SetAdd(b"s", (b"m",)))
    store.run(Set(b"k", b"v"))
    for op in (
        IncrBy(b"h", 1), IncrByFloat(b"h", b"1"), AppendTo(b"h", b"x"), SetRange(b"h", 0, b""),
        GetEx(b"h"), Set(b"h", b"v", get=True), Set(b"h", b"v", if_value=b"x"),
        Delete(b"h", get=True), SetAdd(b"h", (b"m",)), HashSet(b"s", ((b"f", b"1"),)),
        HashIncrBy(b"k", b"f", 1), HashIncrByFloat(b"s", b"f", b"1"), SetPop(b"k"),
        SetRemove(b"k", (b"m",)), HashDelete(b"s", (b"m",)), SetStore(b"d", (b"s", b"h"), "union"),
    ):  # fmt: skip
        assert store.run(op) == WRONGTYPE, op
    for command, key in (("hget", b"s"), ("smembers", b"h"), ("hgetall", b"k"), ("sinter", b"s")):
        assert store.read(command, key, *(() if command != "hget" else (b"f",)),
                          others=(b"k",) if command == "sinter" else ()) == WRONGTYPE  # fmt: skip
    assert isinstance(store.kv[b"h"][0], HashValue)  # nothing changed
    # SET (no GET), SET NX on it, MSET and DEL take any type; only a string is ever answered.
    assert store.run(Set(b"h", b"v", nx=True)) == (None, False, None)
    assert store.run(Set(b"h", b"v")) == (None, True, None)
    assert store.run(MSet(((b"s", b"x"),))) == (None, True, None)
    store.run(SetAdd(b"t", (b"m",)))
    assert store.run(Delete(b"t")) == (None, True, None)
    values = {key: value for key, (value, _) in store.kv.items()}
    assert values[b"h"] == b"v" and values[b"s"] == b"x" and b"t" not in values


def test_set_operations_and_stores() -> None:
    store = Store()
    store.run(SetAdd(b"a", (b"1", b"2", b"3")))
    store.run(SetAdd(b"b", (b"2", b"3", b"4")))
    assert sorted(store.read("sinter", b"a", others=(b"b",))) == [b"2", b"3"]
    assert sorted(store.read("sunion", b"a", others=(b"b", b"none"))) == [b"1", b"2", b"3", b"4"]
    assert store.read("sdiff", b"a", others=(b"b",)) == (b"1",)
    assert store.read("sinter", b"a", others=(b"none",)) == ()
    store.run(Set(b"d", b"string"))
    store.expiries.set(b"d", 10**13)
    assert store.run(SetStore(b"d", (b"a", b"b"), "inter")) == (None, True, 2)
    assert isinstance(store.kv[b"d"][0], SetValue) and b"d" not in store.expiries
    assert store.run(SetStore(b"d", (b"a", b"none"), "inter")) == (None, True, 0)
    assert b"d" not in store.kv  # an empty result deletes the destination
    assert store.run(SetStore(b"a", (b"a", b"b"), "diff")) == (None, True, 1)
    assert store.read("smembers", b"a") == (b"1",)
    assert store.read("smismember", b"b", b"2", b"9") == (1, 0)


def test_set_store_reads_an_expired_source_as_missing() -> None:
    store = Store()
    store.run(SetAdd(b"a", (b"1",)))
    store.run(SetAdd(b"b", (b"1",)))
    store.expiries.set(b"b", 1_000)
    assert store.run(SetStore(b"d", (b"a", b"b"), "inter"), now_ms=2_000) == (None, False, 0)


def test_spop_is_decided_by_the_entrys_version_and_pops_what_it_answers() -> None:
    members = tuple(b"m%d" % i for i in range(50))
    first, second = Store(), Store()
    for store in (first, second):
        store.run(SetAdd(b"s", members))
    popped = first.run(SetPop(b"s", 5))
    assert popped == second.run(SetPop(b"s", 5))  # the same version: the same choice
    assert len(set(popped[2])) == 5 and not set(popped[2]) & set(first.read("smembers", b"s"))
    assert first.kv == second.kv and first.read("scard", b"s") == 45
    one = first.run(SetPop(b"s"))[2]
    assert isinstance(one, bytes) and one in members
    assert first.run(SetPop(b"s", 0)) == (None, False, ())
    assert first.run(SetPop(b"none")) == (None, False, None)
    assert first.run(SetPop(b"none", 3)) == (None, False, ())
    assert len(first.run(SetPop(b"s", 100))[2]) == 44 and b"s" not in first.kv


def test_srandmember_and_scans() -> None:
    store = Store()
    store.run(SetAdd(b"s", (b"a", b"b", b"c")))
    assert store.read("srandmember", b"s") in (b"a", b"b", b"c")
    assert sorted(store.read("srandmember", b"s", b"5")) == [b"a", b"b", b"c"]
    assert len(store.read("srandmember", b"s", b"-7")) == 7
    assert store.read("srandmember", b"none") is None
    assert store.read("srandmember", b"none", b"3") == ()
    assert store.read("sscan", b"s", b"0", b"10", b"[ab]") == (b"0", b"a", b"b")
    store.run(HashSet(b"h", ((b"f", b"1"), (b"g", b"2"))))
    assert store.read("hscan", b"h", b"0", b"10") == (b"0", b"f", b"1", b"g", b"2")
    assert store.read("hscan", b"none", b"0", b"10") == (b"0",)


def test_a_scan_of_a_large_container_returns_every_element_kept_throughout() -> None:
    """Elements added and removed between calls: every one present all along comes back."""
    container = SetValue({b"m%d" % i: None for i in range(1000)})
    kept = set(list(container)[:500])
    seen: list[bytes] = []
    cursor, calls = 0, 0
    while True:
        cursor, found = scan_elements(container, cursor, 10)
        seen += found
        calls += 1
        for i in range(3):  # churn: add some, remove some that are not kept
            container[b"new%d.%d" % (calls, i)] = None
            container.pop(b"m%d" % (999 - calls * 3 - i), None)
        if cursor == 0:
            break
    assert kept <= set(seen)
    assert calls <= 70  # about SCAN_CALLS_MIN calls, whatever COUNT asks
    assert scan_elements(SetValue({b"x": None}), 12345, 1) == (0, [b"x"])  # small: all
    assert SCAN_ALL_MAX == 128


def test_snapshots_round_trip_hashes_and_sets() -> None:
    store = Store()
    store.run(Set(b"k", b"v"))
    store.run(HashSet(b"h", ((b"f", b"1"), (b"", b""), (b"g", b"\x00" * 3))))
    store.run(SetAdd(b"s", (b"b", b"a", b"")))
    store.run(HashSet(b"big", tuple((b"f%d" % i, b"v%d" % i) for i in range(3000))))
    store.expiries.set(b"h", 10**13)
    snapshot = ReplicaSnapshot(
        0, store.index, 1, dict(store.kv), {}, expires=store.expiries.copy_times()
    )
    decoded = decode_state(snapshot.index, snapshot.epoch, encode_state(snapshot))
    assert decoded.kv == store.kv and dict(decoded.expires) == {b"h": 10**13}
    assert list(decoded.kv[b"h"][0]) == [b"f", b"", b"g"]  # the order survives
    assert all(type(decoded.kv[k][0]) is type(store.kv[k][0]) for k in store.kv)
    assert b"".join(encode_state_parts(snapshot, keys_per_part=2)) == encode_state(snapshot)
    # A large hash is encoded in steps too (a node gives its event loop a turn at each).
    steps = list(encode_state_parts(snapshot, keys_per_part=100)).count(b"")
    assert steps >= 3000 // 100
    # Without expiries the container section still follows (an empty expiry section first).
    bare = ReplicaSnapshot(0, 1, 1, {b"s": store.kv[b"s"]}, {})
    assert decode_state(1, 1, encode_state(bare)).kv == bare.kv
    # A state of strings only is encoded as before hashes existed.
    strings = ReplicaSnapshot(0, 1, 1, {b"k": store.kv[b"k"]}, {})
    assert decode_state(1, 1, encode_state(strings)).kv == strings.kv


def test_every_new_op_survives_the_log_codec() -> None:
    for op in (
        HashSet(b"h", ((b"f", b"1"), (b"g", b"")), nx=True), HashDelete(b"h", (b"a", b"b")),
        HashIncrBy(b"h", b"f", -(2**63)), HashIncrByFloat(b"h", b"f", b"1e3"),
        SetAdd(b"s", (b"x", b"")), SetRemove(b"s", (b"x",)), SetPop(b"s"), SetPop(b"s", 3),
        SetStore(b"d", (b"a", b"b"), "diff"), Set(b"k", b"v", get=True), Delete(b"k", get=True),
    ):  # fmt: skip
        entry = Entry(3, 9, ("client", 4), op, 1234)
        assert decode_entry(3, 9, encode_entry(entry)) == entry


def test_a_snapshot_is_never_changed_by_later_writes_to_its_hashes_and_sets() -> None:
    """Copy on write: a container shared with a snapshot is copied before a write; the bug
    ``snapshot-shares-containers`` (no new generation per snapshot) shows the check bites."""
    for bugs, stays in ((frozenset(), True), (frozenset({"snapshot-shares-containers"}), False)):
        pump = ready_pump(bugs=bugs)
        assert acked(pump.call("a", HashSet(b"h", ((b"f", b"1"),)), ("c1", 1)))
        assert acked(pump.call("a", SetAdd(b"s", (b"a",)), ("c1", 2)))
        view = pump.replicas["a"].snapshot()
        encoded = encode_state(view)
        assert acked(pump.call("a", HashSet(b"h", ((b"g", b"2"),)), ("c1", 3)))
        assert acked(pump.call("a", SetAdd(b"s", (b"b",)), ("c1", 4)))
        assert (encode_state(view) == encoded) is stays
        assert pump.replicas["a"].applied[b"h"][0] == {b"f": b"1", b"g": b"2"}


def test_replicas_replay_hashes_and_sets_alike_and_retries_apply_once() -> None:
    pump = ready_pump()
    assert acked(pump.call("a", SetAdd(b"s", tuple(b"m%d" % i for i in range(20))), ("c1", 1)))
    popped = pump.call("a", SetPop(b"s", 3), ("c1", 2))
    assert popped is not None and isinstance(popped.result, tuple) and len(popped.result) == 3
    again = pump.call("a", SetPop(b"s", 3), ("c1", 2))  # a retry: the stored reply
    assert again is not None and again.result == popped.result
    assert acked(pump.call("a", HashIncrBy(b"h", b"n", 1), ("c1", 3)))
    assert acked(pump.call("a", HashIncrBy(b"h", b"n", 1), ("c1", 3)))  # applied once
    pump.tick(60)
    a, b, c = (pump.replicas[n] for n in "abc")
    assert a.applied == b.applied == c.applied
    assert a.applied[b"h"][0] == {b"n": b"1"} and len(a.applied[b"s"][0]) == 17
    # The dedup table (SPOP's list result in it) survives a snapshot.
    view = a.snapshot()
    decoded = decode_state(view.index, view.epoch, encode_state(view))
    assert decoded.dedup == view.dedup and decoded.kv == view.kv
    # Reads: WRONGTYPE for GET of a hash, its type's name for TYPE.
    reply = pump.call("a", Get(b"h"), ("r", 1))
    assert reply is not None and reply.failure == WRONGTYPE and reply.result == b"hash"
    read = pump.call("a", ValueRead(b"s", "scard"), ("r", 2))
    assert read is not None and read.result == 17


def test_active_expiry_takes_a_hash() -> None:
    store = Store()
    store.run(HashSet(b"h", ((b"f", b"1"),)))
    store.expiries.set(b"h", 1_000)
    assert store.run(ExpireKeys((b"h",)), now_ms=2_000) == (None, True, 1)
    assert store.kv == {}
    store.run(SetAdd(b"s", (b"a",)))
    store.expiries.set(b"s", 1_000)
    assert store.run(SetAdd(b"s", (b"b",)), now_ms=2_000) == (None, True, 1)  # lazily gone first
    assert store.read("smembers", b"s") == (b"b",)


@pytest.mark.parametrize("kind", ["inter", "union", "diff"])
def test_set_store_of_missing_keys_deletes_the_destination(kind: str) -> None:
    store = Store()
    store.run(HashSet(b"d", ((b"f", b"1"),)))
    assert store.run(SetStore(b"d", (b"x", b"y"), kind)) == (None, True, 0)
    assert store.kv == {}


def test_the_key_index_follows_every_hash_and_set_write() -> None:
    """SCAN, KEYS and RANDOMKEY read the key index: every write that makes or removes a
    hash or set key keeps it in step (an op's ``pairs`` would be read as MSET's keys)."""
    pump = ready_pump()
    ops: list[WriteOp] = [
        HashSet(b"h", ((b"f", b"1"), (b"g", b"2"))),
        HashIncrBy(b"n", b"f", 1),
        HashIncrByFloat(b"x", b"f", b"1.5"),
        SetAdd(b"s", (b"a", b"b")),
        SetStore(b"d", (b"s",), "union"),
        HashDelete(b"h", (b"f", b"g")),
        SetPop(b"s", 5),
        SetRemove(b"d", (b"a",)),
        SetStore(b"d", (b"none",), "inter"),
    ]
    replica = pump.replicas["a"]
    assert replica.start_key_index()  # built on first use: build it (empty) now
    while not replica.key_index_step():
        pass
    for seq, op in enumerate(ops, 1):
        assert acked(pump.call("a", op, ("c1", seq)))
        index = replica.key_index
        assert index is not None and sorted(index) == sorted(replica.applied), op
    assert sorted(pump.replicas["a"].applied) == [b"n", b"x"]
