"""Hand-written histories: every model and the edge cases of unknown and failed outcomes."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from planaria.check import (
    UNKNOWN,
    CasRegister,
    Input,
    KvModel,
    Verdict,
    check_operations,
    check_partition,
    explain,
)
from planaria.check.models import FITS, SETS
from planaria.errors import HistoryError

from ._histories import LIN, NOT, Row, check_kv, check_register, ops_of


def test_sequential_register() -> None:
    result = check_register(
        (0, "invoke", "write", None, 1),
        (0, "ok", "write", None, 1),
        (0, "invoke", "read", None, None),
        (0, "ok", "read", None, 1),
    )
    assert result.verdict is LIN


@pytest.mark.parametrize("seen", [1, 2])
def test_concurrent_writes_either_order(seen: int) -> None:
    result = check_register(
        (0, "invoke", "write", None, 1),
        (1, "invoke", "write", None, 2),
        (0, "ok", "write", None, 1),
        (1, "ok", "write", None, 2),
        (2, "invoke", "read", None, None),
        (2, "ok", "read", None, seen),
    )
    assert result.verdict is LIN


def test_stale_read_after_sequential_writes() -> None:
    result = check_register(
        (0, "invoke", "write", None, 1),
        (0, "ok", "write", None, 1),
        (1, "invoke", "write", None, 2),
        (1, "ok", "write", None, 2),
        (2, "invoke", "read", None, None),
        (2, "ok", "read", None, 1),
    )
    assert result.verdict is NOT
    failing = result.failing
    assert failing is not None and failing.blocked is not None
    assert failing.blocked.f == "read" and failing.blocked_states == frozenset({2})
    assert "read -> 1" in explain(CasRegister(), result)


def test_unknown_write_may_take_effect_later() -> None:
    result = check_register(
        (0, "invoke", "write", None, 1),
        (0, "info", "write", None, "timed-out"),
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, None),
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, 1),
    )
    assert result.verdict is LIN


def test_unknown_write_may_never_take_effect() -> None:
    result = check_register(
        (0, "invoke", "write", None, 1),
        (0, "info", "write", None, None),
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, None),
    )
    assert result.verdict is LIN


def test_unknown_write_cannot_act_before_its_invocation() -> None:
    result = check_register(
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, 1),
        (0, "invoke", "write", None, 1),
        (0, "info", "write", None, None),
    )
    assert result.verdict is NOT


def test_unknown_write_cannot_take_effect_twice() -> None:
    result = check_register(
        (0, "invoke", "write", None, 1),
        (0, "info", "write", None, None),
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, 1),
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, None),
    )
    assert result.verdict is NOT


def test_never_completed_operation_is_unknown() -> None:
    ops = ops_of(
        (0, "invoke", "write", None, 1),
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, 1),
    )
    assert [op.output for op in ops] == [UNKNOWN, 1]
    assert check_operations(CasRegister(), ops).verdict is LIN


def test_unknown_read_is_dropped() -> None:
    ops = ops_of((0, "invoke", "read", None, None), (0, "info", "read", None, None))
    result = check_operations(CasRegister(), ops)
    assert result.verdict is LIN
    assert result.partitions[0].operations == ()


def test_failed_cas_did_not_happen() -> None:
    not_written = check_register(
        (0, "invoke", "cas", None, (None, 1)),
        (0, "fail", "cas", None, (None, 1)),
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, 1),
    )
    assert not_written.verdict is NOT
    assert "no operation ever wrote 1" in explain(CasRegister(), not_written)
    unchanged = check_register(
        (0, "invoke", "write", None, 1),
        (0, "ok", "write", None, 1),
        (0, "invoke", "cas", None, (1, 2)),
        (0, "fail", "cas", None, (1, 2)),
        (1, "invoke", "read", None, None),
        (1, "ok", "read", None, 1),
    )
    assert unchanged.verdict is LIN


def test_acknowledged_cas_needs_the_old_value() -> None:
    result = check_register(
        (0, "invoke", "write", None, 1),
        (0, "ok", "write", None, 1),
        (0, "invoke", "cas", None, (2, 3)),
        (0, "ok", "cas", None, (2, 3)),
    )
    assert result.verdict is NOT


def test_unknown_cas_takes_effect_only_on_a_match() -> None:
    rows = [
        (0, "invoke", "write", None, 1),
        (0, "ok", "write", None, 1),
        (0, "invoke", "cas", None, (1, 2)),
        (0, "info", "cas", None, None),
        (1, "invoke", "read", None, None),
    ]
    assert check_register(*rows, (1, "ok", "read", None, 2)).verdict is LIN
    assert check_register(*rows, (1, "ok", "read", None, 1)).verdict is LIN
    missed = [*rows[:2], (0, "invoke", "cas", None, (5, 2)), *rows[3:]]
    assert check_register(*missed, (1, "ok", "read", None, 2)).verdict is NOT


def test_kv_missing_keys_read_as_missing_value() -> None:
    assert check_kv((0, "invoke", "get", "k", None), (0, "ok", "get", "k", None)).verdict is LIN
    empty = check_kv((0, "invoke", "get", "k", None), (0, "ok", "get", "k", ""), missing="")
    assert empty.verdict is LIN
    wrong = check_kv((0, "invoke", "get", "k", None), (0, "ok", "get", "k", ""))
    assert wrong.verdict is NOT


def test_kv_delete() -> None:
    rows = [
        (0, "invoke", "put", "k", 1),
        (0, "ok", "put", "k", 1),
        (0, "invoke", "delete", "k", None),
        (0, "ok", "delete", "k", None),
        (1, "invoke", "get", "k", None),
    ]
    assert check_kv(*rows, (1, "ok", "get", "k", None)).verdict is LIN
    assert check_kv(*rows, (1, "ok", "get", "k", 1)).verdict is NOT


def test_kv_cas_per_key_and_failing_key_is_named() -> None:
    rows = [
        (0, "invoke", "put", "a", 1),
        (0, "ok", "put", "a", 1),
        (1, "invoke", "put", "b", 1),
        (1, "ok", "put", "b", 1),
        (0, "invoke", "cas", "a", (1, 2)),
        (0, "ok", "cas", "a", (1, 2)),
        (1, "invoke", "cas", "b", (5, 6)),
        (1, "ok", "cas", "b", (5, 6)),
    ]
    assert check_kv(*rows[:6]).verdict is LIN
    result = check_kv(*rows)
    assert result.verdict is NOT
    assert result.failing is not None and result.failing.key == "b"
    assert explain(KvModel(), result).startswith('key "b": not linearizable')


def test_kv_append_strings_and_lists() -> None:
    rows = [
        (0, "invoke", "append", "s", "x"),
        (1, "invoke", "append", "s", "y"),
        (0, "ok", "append", "s", "x"),
        (1, "ok", "append", "s", "y"),
        (2, "invoke", "get", "s", None),
    ]
    assert check_kv(*rows, (2, "ok", "get", "s", "yx")).verdict is LIN
    assert check_kv(*rows, (2, "ok", "get", "s", "xz")).verdict is NOT
    listed = [
        (0, "invoke", "append", "l", 1),
        (0, "ok", "append", "l", 1),
        (0, "invoke", "append", "l", 2),
        (0, "ok", "append", "l", 2),
        (1, "invoke", "get", "l", None),
    ]
    assert check_kv(*listed, (1, "ok", "get", "l", (1, 2))).verdict is LIN
    assert check_kv(*listed, (1, "ok", "get", "l", (2, 1))).verdict is NOT


def _impossible_to_place_read(writers: int) -> list[tuple[Hashable, str, str, Hashable, Hashable]]:
    # Concurrent writes, then two sequential reads of different values: the search has to
    # try every order of the writes before it can say no.
    rows: list[tuple[Hashable, str, str, Hashable, Hashable]] = []
    rows += [(p, "invoke", "write", None, p) for p in range(writers)]
    rows += [(p, "ok", "write", None, p) for p in range(writers)]
    rows += [(99, "invoke", "read", None, None), (99, "ok", "read", None, 1)]
    rows += [(99, "invoke", "read", None, None), (99, "ok", "read", None, 2)]
    return rows


def test_search_proves_a_violation_the_precheck_cannot_see() -> None:
    result = check_register(*_impossible_to_place_read(8))
    assert result.verdict is NOT
    failing = result.failing
    assert failing is not None and failing.reason is None and failing.steps > 8
    assert failing.blocked is not None and failing.blocked.output == 2


def test_timeout_gives_unknown() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 100.0
        return now[0]

    ops = ops_of(*_impossible_to_place_read(12))
    result = check_operations(CasRegister(), ops, clock=clock, timeout_s=1.0)
    assert result.verdict is Verdict.UNKNOWN
    assert "ran out of time" in explain(CasRegister(), result)


def test_operation_unknown_to_the_model_is_an_error() -> None:
    ops = ops_of((0, "invoke", "frobnicate", None, 1), (0, "ok", "frobnicate", None, 1))
    with pytest.raises(HistoryError, match="frobnicate"):
        check_operations(CasRegister(), ops)
    with pytest.raises(HistoryError, match="cas needs"):
        check_operations(CasRegister(), ops_of((0, "invoke", "cas", None, 3)))


def test_models_are_extensible_objects() -> None:
    model = KvModel()
    assert model.step(None, Input("put", 3), None) == (True, 3)
    assert model.step(3, Input("get", None), 4) == (False, 3)
    assert model.step(3, Input("get", None), UNKNOWN) == (True, 3)
    ops = ops_of((0, "invoke", "get", "k", None), (0, "ok", "get", "k", 5))
    assert check_partition(model, "k", ops).reason == "no operation ever wrote 5"

    class NoPrecheck(KvModel):
        def impossible(self, ops: object) -> None:
            return None

    # without the pre-check the search itself rejects the impossible read
    part = check_partition(NoPrecheck(), "k", ops)
    assert part.verdict is NOT and part.reason is None and part.blocked is not None


def test_a_step_bound_gives_unknown_without_a_clock() -> None:
    ops = ops_of(*_impossible_to_place_read(12))
    result = check_operations(CasRegister(), ops, steps_max=5000)
    assert result.verdict is Verdict.UNKNOWN
    assert "gave up" in explain(CasRegister(), result)
    assert check_operations(CasRegister(), ops).verdict is NOT


def test_a_stale_read_may_return_any_earlier_value() -> None:
    writes = [(0, "invoke", "put", "x", "a"), (0, "ok", "put", "x", "a")]
    writes += [(0, "invoke", "put", "x", "b"), (0, "ok", "put", "x", "b")]
    for seen in (None, "a", "b"):
        stale = [(1, "invoke", "stale-read", "x", None), (1, "ok", "stale-read", "x", seen)]
        assert check_kv(*writes, *stale).verdict is LIN, seen
    # As a linearizable read, the old value is a violation.
    read = [(1, "invoke", "get", "x", None), (1, "ok", "get", "x", "a")]
    assert check_kv(*writes, *read).verdict is NOT


def test_a_stale_read_cannot_see_the_future_or_a_value_never_held() -> None:
    early = [(1, "invoke", "stale-read", "x", None), (1, "ok", "stale-read", "x", "b")]
    writes = [(0, "invoke", "put", "x", "a"), (0, "ok", "put", "x", "a")]
    writes += [(0, "invoke", "put", "x", "b"), (0, "ok", "put", "x", "b")]
    assert check_kv(*early, *writes).verdict is NOT  # b was written after the read returned
    # A value held only inside a failed cas was never the key's value.
    never = [(2, "invoke", "cas", "x", ("z", "c")), (2, "fail", "cas", "x", None)]
    seen_c = [(1, "invoke", "stale-read", "x", None), (1, "ok", "stale-read", "x", "c")]
    assert check_kv(*writes, *never, *seen_c).verdict is NOT
    # Two stale reads of one key may go back and forth (different backups).
    both = [(1, "invoke", "stale-read", "x", None), (1, "ok", "stale-read", "x", "b")]
    both += [(1, "invoke", "stale-read", "x", None), (1, "ok", "stale-read", "x", "a")]
    assert check_kv(*writes, *both).verdict is LIN


def test_the_register_model_has_no_stale_reads() -> None:
    ops = ops_of((0, "invoke", "stale-read", None, None), (0, "ok", "stale-read", None, 1))
    with pytest.raises(HistoryError, match="stale-read"):
        check_operations(CasRegister(), ops)


_SHORTCUT_STATES: list[Hashable] = [None, "", "a", "ab", 1, 2, ("a",)]


@pytest.mark.parametrize("model", [CasRegister(), KvModel(), KvModel("")])
def test_shortcuts_say_what_step_says(model: CasRegister) -> None:
    # The search trusts a shortcut instead of calling step: a read fits exactly its value's
    # state and keeps it, a blind write leaves its value in every state.
    rows: list[Row] = []
    for f in ("read", "get", "stale-read", "write", "put", "delete", "append", "cas"):
        for value in (None, "a", 2):
            argument = ("a", value) if f == "cas" else value
            rows += [(0, "invoke", f, "k", argument), (0, "ok", f, "k", value)]
            rows += [(1, "invoke", f, "k", argument), (1, "info", f, "k", None)]
    ops = [op for op in ops_of(*rows) if model.validate(op) is None]
    shortcuts = [(op, model.shortcut(op)) for op in ops]
    assert {s[0] for _, s in shortcuts if s is not None} == {FITS, SETS}
    for op, shortcut in shortcuts:
        if shortcut is None:
            continue
        kind, state_of_op = shortcut
        for state in [*_SHORTCUT_STATES, model.init()]:
            legal, after = model.step(state, Input(op.f, op.value), op.output)
            if kind == FITS:
                assert (legal, after) == (state == state_of_op, state), (op, state)
            else:
                assert (legal, after) == (True, state_of_op), (op, state)
