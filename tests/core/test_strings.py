"""Counter and string writes: their semantics as redis-server 7.0 gives them (core/strings.py),
applied once per request id through the replicated log, and their entries and stored
replies through the codecs. The same commands against a real redis-server:
tests/net/test_differential.py."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_replica import Pump, acked, expire, ready_pump  # tests/core is on sys.path

from planaria._native import compiled
from planaria.core import strings
from planaria.core.codec import decode_entry, decode_state, encode_entry, encode_state
from planaria.core.expiry import Expiries
from planaria.core.messages import (
    STRING_BYTES_MAX,
    AppendTo,
    AppliedWrites,
    ClientReply,
    Delete,
    Entry,
    Get,
    IncrBy,
    IncrByFloat,
    MSet,
    Rename,
    ReplicaSnapshot,
    Set,
    SetRange,
    Version,
    WriteOp,
)
from planaria.core.replica import Replica
from planaria.core.strings import (
    NO_SUCH_KEY,
    NOT_A_FLOAT,
    NOT_AN_INTEGER,
    NOT_FINITE,
    OFFSET_OUT_OF_RANGE,
    OVERFLOW,
    TOO_LONG,
    apply_write,
    format_long_double,
    parse_int64,
    parse_long_double,
)

V = Version(1, 1)
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def run(ops: list[WriteOp], state: dict[bytes, Any] | None = None) -> list[object]:
    """Apply ``ops`` in order; each one's (result or failure, applied)."""
    kv = {} if state is None else state
    out: list[object] = []
    for index, op in enumerate(ops, 1):
        previous, applied, result, failure = apply_write(kv, op, Version(1, index))
        out.append(failure if failure is not None else (previous, applied, result))
    return out


def values(kv: dict[bytes, tuple[bytes, Version]]) -> dict[bytes, bytes]:
    return {key: value for key, (value, _) in kv.items()}


# --- INCR and friends ----------------------------------------------------------------------


def test_incr_counts_from_a_missing_key_and_stores_decimal_text() -> None:
    kv: dict[bytes, tuple[bytes, Version]] = {}
    assert run([IncrBy(b"n", 1), IncrBy(b"n", 41), IncrBy(b"n", -50)], kv) == [
        (None, True, 1),
        (None, True, 42),
        (None, True, -8),
    ]
    assert values(kv) == {b"n": b"-8"}


@pytest.mark.parametrize(
    "stored", [b"abc", b"", b" 1", b"1 ", b"+1", b"01", b"-0", b"1.0", b"9223372036854775808"]
)
def test_incr_refuses_a_value_that_is_not_a_64_bit_integer(stored: bytes) -> None:
    kv = {b"n": (stored, V)}
    assert run([IncrBy(b"n", 1)], kv) == [NOT_AN_INTEGER]
    assert kv == {b"n": (stored, V)}  # unchanged


def check_overflow_bounds() -> None:
    """The exact int64 bounds: reached, never passed (a mutation of the bound fails here)."""
    kv = {b"n": (b"%d" % (INT64_MAX - 1), V)}
    assert run([IncrBy(b"n", 1)], kv) == [(None, True, INT64_MAX)]
    assert run([IncrBy(b"n", 1)], kv) == [OVERFLOW]
    assert values(kv) == {b"n": b"%d" % INT64_MAX}
    kv = {b"n": (b"%d" % (INT64_MIN + 1), V)}
    assert run([IncrBy(b"n", -1), IncrBy(b"n", -1)], kv) == [(None, True, INT64_MIN), OVERFLOW]
    assert run([IncrBy(b"m", INT64_MIN), IncrBy(b"m", INT64_MAX)], kv)[1] == (None, True, -1)


def test_incr_stops_exactly_at_the_64_bit_bounds() -> None:
    check_overflow_bounds()


def test_the_bound_check_bites_on_a_wrong_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strings, "INT64_MAX", 2**63)  # the mutation: one past the bound
    with pytest.raises(AssertionError):
        check_overflow_bounds()


def test_parse_int64_reads_what_redis_reads() -> None:
    assert parse_int64(b"0") == 0
    assert parse_int64(b"-9223372036854775808") == INT64_MIN
    assert parse_int64(b"9223372036854775807") == INT64_MAX
    for bad in (b"-", b"-9223372036854775809", b"00", b"1e3", b"\xd9\xa1", b"12345678901234567890"):
        assert parse_int64(bad) is None


# --- INCRBYFLOAT ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "delta", "expected"),
    [
        (None, b"10.5", b"10.5"),
        (b"10.5", b"0.1", b"10.6"),  # long double: a double would give 10.59999999999999964
        (b"5.0e3", b"0", b"5000"),
        (b"3.0", b"0", b"3"),
        (b"0.1", b"0.2", b"0.3"),
        (b"1", b"-1", b"0"),
        (b"-1e-20", b"0", b"0"),  # %.17Lf rounds it to -0.00000000000000000: written 0
        (b"0x1p3", b"1", b"9"),  # strtold reads hex
        (b"3", b"1.1e-17", b"3.00000000000000001"),
        (b"7", b"-10", b"-3"),
        (b"1\x00junk", b"1", b"2"),  # a C string: read up to the NUL
    ],
)
def test_incrbyfloat_computes_and_writes_as_redis_server(
    stored: bytes | None, delta: bytes, expected: bytes
) -> None:
    kv = {} if stored is None else {b"f": (stored, V)}
    assert run([IncrByFloat(b"f", delta)], kv) == [(None, True, expected)]
    assert values(kv) == {b"f": expected}


@pytest.mark.parametrize(
    ("stored", "delta", "error"),
    [
        (b"abc", b"1", NOT_A_FLOAT),
        (b"1", b"abc", NOT_A_FLOAT),
        (b" 1", b"1", NOT_A_FLOAT),
        (b"1", b"nan", NOT_A_FLOAT),
        (b"1", b"1e5000", NOT_A_FLOAT),  # strtold: ERANGE
        (b"1", b"1e-5000", NOT_A_FLOAT),  # underflow to 0: ERANGE too
        (b"inf", b"1", NOT_FINITE),
        (b"1", b"-infinity", NOT_FINITE),
        (b"1e4932", b"1e4932", NOT_FINITE),  # past the largest long double
    ],
)
def test_incrbyfloat_fails_as_redis_server(stored: bytes, delta: bytes, error: str) -> None:
    kv = {b"f": (stored, V)}
    assert run([IncrByFloat(b"f", delta)], kv) == [error]
    assert kv == {b"f": (stored, V)}


def test_a_huge_long_double_is_written_in_full() -> None:
    value = parse_long_double(b"1e4930")
    assert isinstance(value, Fraction)
    text = format_long_double(value)
    assert len(text) == 4931 and text.startswith(b"10000000000000000000")
    assert text != b"1" + b"0" * 4930  # the nearest long double, not 10**4930 itself
    assert parse_long_double(text) == value  # and read back exactly


def test_long_doubles_round_to_nearest_even() -> None:
    one = Fraction(1)
    ulp = Fraction(1, 2**63)  # at 1: 64 significant bits
    assert parse_long_double(b"%d" % (2**64 + 1)) == 2**64  # a tie: to even
    assert parse_long_double(b"%d" % (2**64 + 3)) == 2**64 + 4
    tie = one + ulp / 2
    assert strings._round_extended(tie) == one
    assert strings._round_extended(tie + ulp) == one + 2 * ulp


# --- APPEND, SETRANGE, MSET ------------------------------------------------------------------


def test_append_returns_the_new_length_and_respects_the_bound() -> None:
    kv: dict[bytes, tuple[bytes, Version]] = {}
    assert run([AppendTo(b"s", b"ab"), AppendTo(b"s", b"cd"), AppendTo(b"s", b"")], kv) == [
        (None, True, 2),
        (None, True, 4),
        (None, True, 4),
    ]
    assert run([AppendTo(b"s", b"e", bytes_max=4)], kv) == [TOO_LONG]
    assert values(kv) == {b"s": b"abcd"}


def test_setrange_pads_with_zero_bytes_and_overwrites() -> None:
    kv: dict[bytes, tuple[bytes, Version]] = {}
    assert run([SetRange(b"s", 3, b"ab"), SetRange(b"s", 1, b"XYZW")], kv) == [
        (None, True, 5),
        (None, True, 5),
    ]
    assert values(kv) == {b"s": b"\x00XYZW"}
    assert run([SetRange(b"s", 0, b"Q")], kv) == [(None, True, 5)]
    assert values(kv) == {b"s": b"QXYZW"}


def test_setrange_with_nothing_to_write_makes_no_key() -> None:
    kv: dict[bytes, tuple[bytes, Version]] = {}
    assert run([SetRange(b"s", 10, b"")], kv) == [(None, False, 0)]
    assert kv == {}
    kv[b"s"] = (b"abc", V)
    assert run([SetRange(b"s", 10, b"")], kv) == [(None, False, 3)]


def test_setrange_refuses_a_negative_offset_and_a_string_past_the_bound() -> None:
    kv = {b"s": (b"abc", V)}
    assert run([SetRange(b"s", -1, b"x")], kv) == [OFFSET_OUT_OF_RANGE]
    assert run([SetRange(b"s", 4, b"x", bytes_max=4)], kv) == [TOO_LONG]
    assert run([SetRange(b"s", 3, b"x", bytes_max=4)], kv) == [(None, True, 4)]
    assert run([SetRange(b"s", STRING_BYTES_MAX, b"x", bytes_max=2**62)], kv) == [TOO_LONG]


def test_mset_sets_every_pair_and_msetnx_only_when_none_exists() -> None:
    kv: dict[bytes, tuple[bytes, Version]] = {}
    assert run([MSet(((b"a", b"1"), (b"b", b"2"), (b"a", b"3")))], kv) == [(None, True, None)]
    assert values(kv) == {b"a": b"3", b"b": b"2"}
    assert run([MSet(((b"c", b"1"), (b"b", b"9")), nx=True)], kv) == [(None, False, None)]
    assert run([MSet(((b"c", b"1"), (b"d", b"9")), nx=True)], kv) == [(None, True, None)]
    assert values(kv) == {b"a": b"3", b"b": b"2", b"c": b"1", b"d": b"9"}


def test_rename_moves_the_value_and_its_expiry_and_replaces_the_destination() -> None:
    kv: dict[bytes, Any] = {}
    expiries = Expiries()
    ops: list[WriteOp] = [Set(b"a", b"1", expire_ms=5_000), Set(b"b", b"2", expire_ms=9_000)]
    for index, op in enumerate(ops, 1):
        apply_write(kv, op, Version(1, index), expiries, 1_000)
    assert apply_write(kv, Rename(b"a", b"b"), Version(1, 3), expiries, 1_000) == (
        None, True, 1, None
    )  # fmt: skip
    assert kv == {b"b": (b"1", Version(1, 3))}  # the moved key's version is the rename's
    assert dict(expiries) == {b"b": 5_000}  # a's expiry went with it; b's old one is gone
    apply_write(kv, Set(b"c", b"3"), Version(1, 4), expiries, 1_000)
    apply_write(kv, Rename(b"c", b"b"), Version(1, 5), expiries, 1_000)
    assert kv == {b"b": (b"3", Version(1, 5))} and dict(expiries) == {}  # no expiry moved


def test_rename_of_a_missing_or_expired_key_fails_and_renamenx_keeps_a_taken_name() -> None:
    kv: dict[bytes, Any] = {}
    expiries = Expiries()
    assert apply_write(kv, Rename(b"a", b"b"), V, expiries, 1_000)[3] == NO_SUCH_KEY
    apply_write(kv, Set(b"a", b"1", expire_ms=2_000), V, expiries, 1_000)
    apply_write(kv, Set(b"b", b"2"), V, expiries, 1_000)
    assert apply_write(kv, Rename(b"a", b"b", nx=True), V, expiries, 1_000) == (
        None, False, 0, None
    )  # fmt: skip
    assert apply_write(kv, Rename(b"a", b"a"), V, expiries, 1_000) == (None, False, 0, None)
    assert values(kv) == {b"a": b"1", b"b": b"2"}
    # Past its expiry (by the entry's time) the key is gone: no such key, on every replica.
    assert apply_write(kv, Rename(b"a", b"c"), V, expiries, 3_000)[3] == NO_SUCH_KEY
    assert values(kv) == {b"b": b"2"}


# --- through the replicated log --------------------------------------------------------------


def test_a_counter_is_applied_equally_on_every_replica_and_answered_from_the_apply() -> None:
    pump = ready_pump()
    for seq in range(1, 6):
        reply = pump.call("a", IncrBy(b"n", seq), ("c1", seq))
        assert acked(reply) and reply is not None and reply.result == seq * (seq + 1) // 2
    failed = pump.call("a", IncrByFloat(b"n", b"x"), ("c1", 6))
    assert failed is not None and failed.failure == NOT_A_FLOAT and not failed.applied
    pump.tick(60)
    for replica in pump.replicas.values():
        assert replica.applied[b"n"][0] == b"15"


def check_retry_applies_once(pump: Pump) -> None:
    """An INCR retried with its request id is answered from the dedup table, not re-run."""
    first = pump.call("a", IncrBy(b"n", 5), ("c1", 1))
    assert first is not None and first.result == 5
    again = pump.call("a", IncrBy(b"n", 5), ("c1", 1))
    assert again == first
    assert pump.call("a", Get(b"n"), ("c1", 100)) is not None
    assert pump.replicas["a"].applied[b"n"][0] == b"5"


def test_a_retried_incr_is_applied_once() -> None:
    check_retry_applies_once(ready_pump())


# Monkeypatching reaches only the Python sources: `make test` runs tests/core and tests/sim
# again against them after the compiled pass.
@pytest.mark.skipif(compiled(), reason="patches a method of the compiled Replica")
def test_the_retry_check_bites_when_the_dedup_table_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The mutation: the replica never finds a request id in its table (INCR applied twice).
    monkeypatch.setattr(Replica, "_seen", lambda self, request_id: None)
    with pytest.raises(AssertionError):
        check_retry_applies_once(ready_pump())


def test_a_counters_stored_replies_survive_a_snapshot_and_a_failover() -> None:
    pump = ready_pump()
    first = pump.call("a", IncrBy(b"n", 7), ("c1", 1))
    failed = pump.call("a", AppendTo(b"s", b"xyz", bytes_max=2), ("c1", 2))
    floated = pump.call("a", IncrByFloat(b"f", b"2.5"), ("c1", 3))
    assert failed is not None and failed.failure == TOO_LONG
    pump.tick(60)
    old = pump.replicas["b"]
    view = old.snapshot()
    copy = decode_state(view.index, view.epoch, encode_state(view))
    assert (dict(copy.kv), dict(copy.dedup)) == (dict(view.kv), dict(view.dedup))
    pump.replicas["b"] = Replica(
        "b",
        0,
        pump.settings,
        snapshot=copy,
        log=old.entries_after(view.index),
        epoch=old.epoch,
        commit_index=old.commit_index,
    )
    pump.crash("a")
    expire(pump, "a")
    pump.failover()
    pump.tick(60)
    assert pump.config.primary == "b"
    assert pump.call("b", IncrBy(b"n", 7), ("c1", 1)) == first
    assert pump.call("b", AppendTo(b"s", b"xyz", bytes_max=2), ("c1", 2)) == failed
    assert pump.call("b", IncrByFloat(b"f", b"2.5"), ("c1", 3)) == floated
    assert pump.replicas["b"].applied[b"n"][0] == b"7"


# --- codecs -----------------------------------------------------------------------------------

keys = st.binary(max_size=12)
ops = st.one_of(
    st.builds(Set, keys, keys, nx=st.booleans(), if_value=st.none() | keys),
    st.builds(Delete, keys),
    st.builds(IncrBy, keys, st.integers(INT64_MIN, INT64_MAX)),
    st.builds(IncrByFloat, keys, keys),
    st.builds(AppendTo, keys, keys, st.integers(0, 2**40)),
    st.builds(SetRange, keys, st.integers(0, 2**40), keys, st.integers(0, 2**40)),
    st.builds(
        MSet, st.lists(st.tuples(keys, keys), min_size=1, max_size=4).map(tuple), st.booleans()
    ),
)
results = st.none() | st.integers(INT64_MIN, INT64_MAX) | st.binary(max_size=20)


@settings(max_examples=200)
@given(seq=st.integers(0, 2**63 - 1), op=ops)
def test_every_write_entry_round_trips(seq: int, op: WriteOp) -> None:
    entry = Entry(3, 9, ("client", seq), op)
    assert decode_entry(3, 9, encode_entry(entry)) == entry


@settings(max_examples=100)
@given(
    replies=st.lists(
        st.tuples(
            st.booleans(),
            st.none() | keys,
            results,
            st.none() | st.sampled_from([NOT_AN_INTEGER, OVERFLOW, NOT_A_FLOAT, "ERR ü"]),
        ),
        max_size=5,
    )
)
def test_stored_replies_with_results_and_failures_round_trip(
    replies: list[tuple[bool, bytes | None, int | bytes | None, str | None]],
) -> None:
    stored = {
        seq: ClientReply(
            partition=2,
            request_id=("c", seq),
            value=value,
            applied=applied,
            version=Version(1, seq) if applied else None,
            epoch=1,
            result=result,
            failure=failure,
        )
        for seq, (applied, value, result, failure) in enumerate(replies, 1)
    }
    dedup = {"c": AppliedWrites(tuple(stored), stored)} if stored else {}
    snapshot = ReplicaSnapshot(2, 10, 1, {b"k": (b"v", Version(1, 3))}, dedup)
    copy = decode_state(10, 1, encode_state(snapshot))
    assert dict(copy.kv) == dict(snapshot.kv)
    assert {c: (a.seqs, dict(a.replies)) for c, a in copy.dedup.items()} == {
        c: (a.seqs, dict(a.replies)) for c, a in dedup.items()
    }


def test_a_state_written_before_results_existed_still_reads() -> None:
    # The layout of a SET's stored reply before flags 8/16/32 (bytes as an older node wrote).
    reply = ClientReply(0, ("c", 1), value=b"old", applied=True, version=Version(1, 2), epoch=1)
    snapshot = ReplicaSnapshot(
        0, 2, 1, {b"k": (b"v", Version(1, 2))}, {"c": AppliedWrites((1,), {1: reply})}
    )
    data = encode_state(snapshot)
    # client "c", 1 write: seq 1, flags 7 (applied, value, version), epoch 1, "old", (1, 2)
    old_layout = b"".join(
        (b"\x01\x00\x00\x00c", b"\x01\x00\x00\x00", b"\x01" + bytes(7), b"\x07",
         b"\x01" + bytes(7), b"\x03\x00\x00\x00old", b"\x01" + bytes(7), b"\x02" + bytes(7))
    )  # fmt: skip
    assert data.endswith(old_layout)
    assert decode_state(2, 1, data).dedup["c"].replies[1] == reply
