"""The lost-write check reports only acknowledged writes that the final state contradicts."""

from __future__ import annotations

from planaria.check import find_lost_writes

from ._histories import ops_of


def test_unique_key_writes_are_exact() -> None:
    ops = ops_of(
        (0, "invoke", "put", "a", 1),
        (0, "ok", "put", "a", 1),
        (0, "invoke", "put", "b", 2),
        (0, "ok", "put", "b", 2),
        (0, "invoke", "put", "c", 3),
        (0, "info", "put", "c", 3),
    )
    lost = find_lost_writes(ops, {"a": 1})
    assert [(w.op.key, w.final) for w in lost] == [("b", None)]


def test_overwritten_write_is_not_lost() -> None:
    rows = [
        (0, "invoke", "put", "k", 1),
        (0, "ok", "put", "k", 1),
        (1, "invoke", "put", "k", 2),
        (1, "info", "put", "k", 2),
    ]
    assert find_lost_writes(ops_of(*rows), {"k": 2}) == ()
    # the final value 3 came from nowhere after put 1: put 1 was lost
    lost = find_lost_writes(ops_of(*rows), {"k": 3})
    assert [w.op.value for w in lost] == [1]


def test_write_before_a_later_acked_write_is_not_reported() -> None:
    ops = ops_of(
        (0, "invoke", "put", "k", 1),
        (0, "ok", "put", "k", 1),
        (0, "invoke", "put", "k", 2),
        (0, "ok", "put", "k", 2),
    )
    lost = find_lost_writes(ops, {"k": 1})
    assert [w.op.value for w in lost] == [2]


def test_acked_append_missing_from_final_value() -> None:
    ops = ops_of(
        (0, "invoke", "append", "s", "x1;"),
        (0, "ok", "append", "s", "x1;"),
        (1, "invoke", "append", "s", "x2;"),
        (1, "ok", "append", "s", "x2;"),
        (2, "invoke", "append", "l", 7),
        (2, "ok", "append", "l", 7),
    )
    lost = find_lost_writes(ops, {"s": "x2;", "l": (7,)})
    assert [w.op.value for w in lost] == ["x1;"]


def test_append_that_a_later_put_may_replace_is_not_reported() -> None:
    ops = ops_of(
        (0, "invoke", "append", "s", "x1;"),
        (0, "ok", "append", "s", "x1;"),
        (1, "invoke", "put", "s", "y"),
        (1, "ok", "put", "s", "y"),
    )
    assert find_lost_writes(ops, {"s": "y"}) == ()


def test_acked_delete_contradicted() -> None:
    ops = ops_of(
        (0, "invoke", "put", "k", 1),
        (0, "ok", "put", "k", 1),
        (0, "invoke", "delete", "k", None),
        (0, "ok", "delete", "k", None),
    )
    assert find_lost_writes(ops, {}) == ()
    assert [w.op.f for w in find_lost_writes(ops, {"k": 1})] == ["delete"]
