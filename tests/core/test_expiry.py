"""Key expiry (TTL): its semantics as redis-server 7.0 gives them (core/strings.py), the
primary's absolute times through the replicated log, active expiry in bounded slices,
the expiry index's bound, and expiries in entries and snapshots (core/codec.py). The
commands against a real redis-server: tests/node/test_differential.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_replica import expire, ready_pump  # tests/core is on sys.path

from planaria.core.codec import decode_entry, decode_state, encode_entry, encode_state
from planaria.core.expiry import HEAP_SLACK, Expiries
from planaria.core.messages import (
    EXPIRE_KEYS_PER_ENTRY,
    AppendTo,
    ClearExpiry,
    Delete,
    Entry,
    Expire,
    ExpireKeys,
    Get,
    GetEx,
    GetExpiry,
    IncrBy,
    MSet,
    ReplicaSnapshot,
    Set,
    SetRange,
    Value,
    Version,
    WriteOp,
)
from planaria.core.replica import Replica
from planaria.core.strings import apply_write
from planaria.errors import InternalError

T = 1_000_000  # the entries' time (Unix ms) in the apply tests


class State:
    """A partition's state for apply_write: values and expiries."""

    def __init__(self) -> None:
        self.kv: dict[bytes, tuple[Value, Version]] = {}
        self.expiries = Expiries()
        self.index = 0

    def run(self, op: WriteOp, now_ms: int = T) -> object:
        self.index += 1
        previous, applied, result, failure = apply_write(
            self.kv, op, Version(1, self.index), self.expiries, now_ms
        )
        return failure if failure is not None else (previous, applied, result)

    def ttl(self, key: bytes) -> int | None:
        return self.expiries.get_time(key)


# --- the apply ------------------------------------------------------------------------------


def test_set_with_an_expiry_sets_it_and_a_plain_set_clears_it() -> None:
    state = State()
    state.run(Set(b"k", b"v", expire_ms=T + 5000))
    assert state.ttl(b"k") == T + 5000
    state.run(Set(b"k", b"w", keep_ttl=True))
    assert state.ttl(b"k") == T + 5000
    state.run(Set(b"k", b"x"))
    assert state.ttl(b"k") is None


def test_a_failed_conditional_set_keeps_the_expiry() -> None:
    state = State()
    state.run(Set(b"k", b"v", expire_ms=T + 5000))
    assert state.run(Set(b"k", b"w", nx=True)) == (b"v", False, None)
    assert state.ttl(b"k") == T + 5000


@pytest.mark.parametrize(
    "op",
    [IncrBy(b"k", 1), AppendTo(b"k", b"1"), SetRange(b"k", 0, b"2")],
)
def test_counter_and_string_writes_keep_the_expiry(op: WriteOp) -> None:
    state = State()
    state.run(Set(b"k", b"1", expire_ms=T + 5000))
    state.run(op)
    assert state.ttl(b"k") == T + 5000


@pytest.mark.parametrize("op", [Delete(b"k"), MSet(((b"k", b"2"),))])
def test_delete_and_mset_clear_the_expiry(op: WriteOp) -> None:
    state = State()
    state.run(Set(b"k", b"1", expire_ms=T + 5000))
    state.run(op)
    assert state.ttl(b"k") is None


def test_a_write_to_a_key_past_its_expiry_finds_it_gone() -> None:
    state = State()
    state.run(Set(b"k", b"41", expire_ms=T + 10))
    # INCR after the expiry: counts from 0, and the new key has no expiry (as Redis).
    assert state.run(IncrBy(b"k", 1), now_ms=T + 11) == (None, True, 1)
    assert state.ttl(b"k") is None
    state.run(Set(b"j", b"v", expire_ms=T + 10))
    assert state.run(Set(b"j", b"w", xx=True), now_ms=T + 11) == (None, False, None)
    assert b"j" not in state.kv and len(state.expiries) == 1 - 1


def test_a_key_is_alive_at_its_expiry_and_gone_right_after() -> None:
    state = State()
    state.run(Set(b"k", b"1", expire_ms=T + 10))
    assert state.run(IncrBy(b"k", 1), now_ms=T + 10) == (None, True, 2)  # Redis: now > when
    assert state.run(IncrBy(b"k", 1), now_ms=T + 11) == (None, True, 1)


def test_expire_with_its_conditions() -> None:
    state = State()
    assert state.run(Expire(b"k", T + 100)) == (None, False, 0)  # no key
    state.run(Set(b"k", b"v"))
    assert state.run(Expire(b"k", T + 100, xx=True)) == (None, False, 0)
    assert state.run(Expire(b"k", T + 100, gt=True)) == (None, False, 0)  # none is infinite
    assert state.run(Expire(b"k", T + 100, lt=True)) == (None, True, 1)  # less than infinite
    assert state.run(Expire(b"k", T + 50, nx=True)) == (None, False, 0)
    assert state.run(Expire(b"k", T + 100, gt=True)) == (None, False, 0)  # not greater
    assert state.run(Expire(b"k", T + 200, gt=True, xx=True)) == (None, True, 1)
    assert state.run(Expire(b"k", T + 200, lt=True)) == (None, False, 0)  # not less
    assert state.run(Expire(b"k", T + 150, lt=True)) == (None, True, 1)
    assert state.ttl(b"k") == T + 150


def test_an_expiry_not_after_the_entry_time_deletes_the_key() -> None:
    state = State()
    state.run(Set(b"k", b"v"))
    assert state.run(Expire(b"k", T)) == (None, True, 1)
    assert b"k" not in state.kv and state.ttl(b"k") is None
    state.run(Set(b"k", b"v", expire_ms=T - 1))  # SET ... PXAT in the past: gone at once
    assert b"k" not in state.kv and len(state.expiries) == 0


def test_persist_removes_an_expiry_it_finds() -> None:
    state = State()
    assert state.run(ClearExpiry(b"k")) == (None, False, 0)
    state.run(Set(b"k", b"v"))
    assert state.run(ClearExpiry(b"k")) == (None, False, 0)
    state.run(Expire(b"k", T + 100))
    assert state.run(ClearExpiry(b"k")) == (None, True, 1)
    assert state.ttl(b"k") is None


def test_getex_answers_the_value_and_changes_the_expiry() -> None:
    state = State()
    assert state.run(GetEx(b"k", error="ERR bad")) == (None, False, None)  # no key: nil
    state.run(Set(b"k", b"v"))
    assert state.run(GetEx(b"k", error="ERR bad")) == "ERR bad"
    assert state.run(GetEx(b"k", T + 100)) == (b"v", True, None)
    assert state.ttl(b"k") == T + 100
    assert state.run(GetEx(b"k", persist=True)) == (b"v", True, None)
    assert state.ttl(b"k") is None
    assert state.run(GetEx(b"k", T)) == (b"v", True, None)  # EXAT now: answered, then gone
    assert b"k" not in state.kv


def test_active_expiry_deletes_only_keys_still_due_when_it_applies() -> None:
    state = State()
    for key in (b"a", b"b", b"c"):
        state.run(Set(key, b"v", expire_ms=T + 10))
    state.run(ClearExpiry(b"b"))  # persisted after the primary picked it
    state.run(Expire(b"c", T + 500))  # given a later expiry
    assert state.run(ExpireKeys((b"a", b"b", b"c")), now_ms=T + 11) == (None, True, 1)
    assert set(state.kv) == {b"b", b"c"}


def test_a_relative_expiry_never_reaches_the_apply() -> None:
    with pytest.raises(InternalError):
        State().run(Set(b"k", b"v", expire_ms=10, relative=True))


# --- the index and its bound ----------------------------------------------------------------


def test_due_finds_the_earliest_keys_up_to_the_limit() -> None:
    expiries = Expiries()
    for i in range(10):
        expiries.set(b"k%d" % i, 100 + i)
    assert expiries.due(103, 100) == [b"k0", b"k1", b"k2"]  # before 103 only
    assert expiries.due(1000, 4) == [b"k3", b"k4", b"k5", b"k6"]  # the index moved past
    assert len(expiries) == 10  # the table keeps them: the apply deletes
    expiries.reindex()  # e.g. the entry never applied: a new primary finds them again
    assert expiries.due(1000, 4) == [b"k0", b"k1", b"k2", b"k3"]
    expiries.reindex()
    expiries.discard(b"k0")
    expiries.set(b"k1", 5000)
    assert expiries.due(1000, 2) == [b"k2", b"k3"]
    expiries.set(b"k2", 100)
    expiries.set(b"k2", 102)
    expiries.set(b"k2", 100)  # an older twin entry of the same time
    assert expiries.due(101, 10) == [b"k2"]


def test_the_index_never_grows_past_twice_the_keys_plus_its_slack() -> None:
    expiries = Expiries()
    expiries.set(b"live", 1)
    bound = 2 * len(expiries) + HEAP_SLACK
    for time_ms in range(10_000):  # one key's expiry changed again and again
        expiries.set(b"k", time_ms)
        assert expiries.heap_size <= 2 * len(expiries) + HEAP_SLACK
    assert expiries.heap_size <= bound + 2
    assert sorted(expiries.due(10**9, 10)) == [b"k", b"live"]
    expiries.discard(b"k")
    expiries.discard(b"live")
    assert expiries.heap_size == 0  # no key with an expiry: nothing kept


def test_the_index_shrinks_with_the_keys_deleted() -> None:
    expiries = Expiries({b"k%d" % i: i for i in range(1000)})
    for i in range(999):  # deleted by the log, as a backup applies ExpireKeys
        expiries.discard(b"k%d" % i)
        assert expiries.heap_size <= 2 * len(expiries) + HEAP_SLACK
    assert expiries.heap_size <= 2 + HEAP_SLACK


# --- through the replicated log ---------------------------------------------------------------


def test_the_primary_makes_a_relative_expiry_absolute_and_every_replica_applies_it() -> None:
    pump = ready_pump()
    pump.tick(100)
    now = int(pump.now)
    reply = pump.call("a", Set(b"k", b"v", expire_ms=5000, relative=True), ("c", 1))
    assert reply is not None and reply.applied
    logged = [e.op for e in pump.log("a") if isinstance(e.op, Set)]
    assert logged == [Set(b"k", b"v", expire_ms=now + 5000)]
    pump.tick(60)
    for replica in pump.replicas.values():
        assert dict(replica.expiries) == {b"k": now + 5000}
    ttl = pump.call("a", GetExpiry(b"k", relative=True), ("r", 1))
    assert ttl is not None and ttl.result == now + 5000 - int(pump.now)
    absolute = pump.call("a", GetExpiry(b"k"), ("r", 2))
    assert absolute is not None and absolute.result == now + 5000
    missing = pump.call("a", GetExpiry(b"nope"), ("r", 3))
    assert missing is not None and missing.result == -2


def check_reads_hide_expired_keys(pump_bugs: frozenset[str]) -> None:
    """A read from the primary never returns a key past its expiry."""
    pump = ready_pump(bugs=pump_bugs, expire_keys_per_entry=1)
    pump.call("a", Set(b"k", b"v", expire_ms=int(pump.now) + 50), ("c", 1))
    got = pump.call("a", Get(b"k"), ("r", 1))
    assert got is not None and got.value == b"v"
    pump.now += 51  # no tick: active expiry has not run
    got = pump.call("a", Get(b"k"), ("r", 2))
    assert got is not None and got.value is None
    ttl = pump.call("a", GetExpiry(b"k", relative=True), ("r", 3))
    assert ttl is not None and ttl.result == -2


def test_reads_hide_keys_past_their_expiry() -> None:
    check_reads_hide_expired_keys(frozenset())


def test_the_read_check_bites_with_read_ignores_expiry() -> None:
    with pytest.raises(AssertionError):
        check_reads_hide_expired_keys(frozenset({"read-ignores-expiry"}))


def test_active_expiry_deletes_in_slices_of_at_most_the_limit() -> None:
    limit = 4
    pump = ready_pump(expire_keys_per_entry=limit)
    at = int(pump.now) + 20
    keys = [b"k%02d" % i for i in range(2 * limit + 1)]
    for seq, key in enumerate(keys, 1):
        pump.call("a", Set(key, b"v", expire_ms=at), ("c", seq))
    pump.call("a", Set(b"stays", b"v", expire_ms=at + 10_000), ("c", 100))
    pump.tick(200)
    slices = [e.op.keys for e in pump.log("a") if isinstance(e.op, ExpireKeys)]
    assert [len(s) for s in slices] == [limit, limit, 1]  # the limit exactly, then the rest
    assert sorted(k for s in slices for k in s) == keys
    for replica in pump.replicas.values():
        assert set(replica.applied) == {b"stays"}
        assert dict(replica.expiries) == {b"stays": at + 10_000}


def test_a_retried_expiry_write_is_applied_once_and_answered_as_the_first_time() -> None:
    pump = ready_pump()
    pump.call("a", Set(b"k", b"v"), ("c", 1))
    first = pump.call("a", Expire(b"k", 10_000, relative=True, nx=True), ("c", 2))
    assert first is not None and first.result == 1
    # The retry of the same request id: the stored reply (1), not a second apply (NX: 0).
    again = pump.call("a", Expire(b"k", 10_000, relative=True, nx=True), ("c", 2))
    assert again == first
    entries = [e for e in pump.log("a") if isinstance(e.op, Expire)]
    assert len(entries) == 1
    persisted = pump.call("a", ClearExpiry(b"k"), ("c", 3))
    assert persisted is not None and persisted.result == 1
    assert pump.call("a", ClearExpiry(b"k"), ("c", 3)) == persisted


def test_the_default_slice_is_the_named_constant() -> None:
    assert Replica("a", 0).settings.expire_keys_per_entry == EXPIRE_KEYS_PER_ENTRY


def check_backups_keep_expired_keys(bugs: frozenset[str]) -> None:
    pump = ready_pump(bugs=bugs)
    pump.call("a", Set(b"k", b"v", expire_ms=int(pump.now) + 200), ("c", 1))
    pump.tick(60)
    assert b"k" in pump.replicas["b"].applied and b"k" in pump.replicas["c"].applied
    pump.crash("a")  # no primary: nobody logs the deletion
    pump.tick(400)
    assert b"k" in pump.replicas["b"].applied and b"k" in pump.replicas["c"].applied


def test_backups_never_expire_keys_on_their_own() -> None:
    check_backups_keep_expired_keys(frozenset())


def test_the_backup_check_bites_with_backup_expires_on_its_own() -> None:
    with pytest.raises(AssertionError):
        check_backups_keep_expired_keys(frozenset({"backup-expires-on-its-own"}))


def test_a_new_primary_goes_on_from_the_logged_absolute_times() -> None:
    pump = ready_pump()
    at = int(pump.now) + 300
    pump.call("a", Set(b"k", b"v", expire_ms=at), ("c", 1))
    pump.tick(60)
    pump.crash("a")
    expire(pump, "a")  # its session ends
    pump.failover()
    pump.tick(60)
    new = pump.config.primary
    assert new in ("b", "c")
    assert pump.replicas[new].expiries.get_time(b"k") == at
    pump.tick(400)
    assert b"k" not in pump.replicas[new].applied  # its own active expiry deleted it
    assert any(isinstance(e.op, ExpireKeys) and e.epoch == pump.config.epoch
               for e in pump.log(new))  # fmt: skip


def test_expiries_survive_a_snapshot() -> None:
    pump = ready_pump()
    at = int(pump.now) + 10_000
    pump.call("a", Set(b"k", b"v", expire_ms=at), ("c", 1))
    pump.call("a", Set(b"p", b"v"), ("c", 2))
    pump.tick(60)
    view = pump.replicas["b"].snapshot()
    assert dict(view.expires) == {b"k": at}
    copy = decode_state(view.index, view.epoch, encode_state(view))
    assert dict(copy.expires) == {b"k": at}
    rebuilt = Replica("b", 0, pump.settings, snapshot=copy, epoch=view.epoch)
    assert dict(rebuilt.expiries) == {b"k": at}


# --- codecs -----------------------------------------------------------------------------------

keys = st.binary(max_size=12)
times = st.integers(-(2**63), 2**63 - 1)
ops = st.one_of(
    st.builds(
        Set, keys, keys, nx=st.booleans(), expire_ms=st.none() | times, keep_ttl=st.booleans()
    ),
    st.builds(
        Expire, keys, times, nx=st.booleans(), xx=st.booleans(), gt=st.booleans(),
        lt=st.booleans(),
    ),
    st.builds(ClearExpiry, keys),
    st.builds(GetEx, keys, st.none() | times, persist=st.booleans(), error=st.none() | st.text()),
)  # fmt: skip


@settings(max_examples=200)
@given(seq=st.integers(0, 2**63 - 1), op=ops, time_ms=st.integers(0, 2**62))
def test_every_expiry_entry_round_trips(seq: int, op: WriteOp, time_ms: int) -> None:
    entry = Entry(3, 9, ("client", seq), op, time_ms)
    assert decode_entry(3, 9, encode_entry(entry)) == entry


def test_an_active_expiry_entry_round_trips_without_a_request_id() -> None:
    entry = Entry(2, 5, None, ExpireKeys((b"a", b"bb")), 123)
    assert decode_entry(2, 5, encode_entry(entry)) == entry


def test_an_entry_without_a_time_is_written_as_before() -> None:
    entry = Entry(1, 1, ("c", 7), Set(b"k", b"v"))
    data = encode_entry(entry)
    assert data[0] == 1  # the Set kind, no time flag: an older node's bytes
    assert decode_entry(1, 1, data) == entry


def test_a_relative_expiry_is_never_logged() -> None:
    with pytest.raises(InternalError):
        encode_entry(Entry(1, 1, ("c", 1), Expire(b"k", 10, relative=True)))


@settings(max_examples=50)
@given(
    state=st.dictionaries(keys, st.tuples(keys, st.none() | times), max_size=20),
    per_part=st.integers(1, 5),
)
def test_states_with_expiries_round_trip(
    state: dict[bytes, tuple[bytes, int | None]], per_part: int
) -> None:
    kv = {key: (value, Version(1, 2)) for key, (value, _) in state.items()}
    expires = {key: at for key, (_, at) in state.items() if at is not None}
    snapshot = ReplicaSnapshot(1, 4, 1, kv, {}, expires=expires)
    copy = decode_state(4, 1, encode_state(snapshot))
    assert (dict(copy.kv), dict(copy.expires)) == (kv, expires)


def test_a_state_without_expiries_is_written_as_before_and_reads() -> None:
    kv = {b"k": (b"v", Version(1, 2))}
    old = encode_state(ReplicaSnapshot(1, 4, 1, kv, {}))
    assert encode_state(ReplicaSnapshot(1, 4, 1, kv, {}, expires={})) == old
    assert dict(decode_state(4, 1, old).expires) == {}
    with_ttl = encode_state(ReplicaSnapshot(1, 4, 1, kv, {}, expires={b"k": 9}))
    assert with_ttl.startswith(old) and len(with_ttl) > len(old)
