"""The hash and set commands' arguments as the clients build them (redis-py's shapes),
and what a bad one raises before anything is sent."""

from __future__ import annotations

import pytest

from planaria.client._containers import hash_pairs, items, scan_options
from planaria.errors import UsageError


def test_hset_takes_a_key_and_value_a_mapping_and_items_in_that_order() -> None:
    assert hash_pairs("f", "1", None, None) == (b"f", b"1")
    mixed: dict[str | bytes, str | bytes] = {"g": "2", b"h": b"3"}
    assert hash_pairs("f", b"1", mixed, ["i", "4"]) == (
        b"f", b"1", b"g", b"2", b"h", b"3", b"i", b"4",
    )  # fmt: skip
    assert hash_pairs(None, None, {"g": "2"}, None) == (b"g", b"2")
    with pytest.raises(UsageError, match="needs a value"):
        hash_pairs("f", None, None, None)
    with pytest.raises(UsageError, match="pairs"):
        hash_pairs(None, None, None, ["i"])
    with pytest.raises(UsageError, match="needs a key and value"):
        hash_pairs(None, None, {}, [])


def test_one_item_or_an_iterable_then_more() -> None:
    assert items("key", "a", ()) == (b"a",)
    assert items("key", ["a", b"b"], ("c",)) == (b"a", b"b", b"c")
    with pytest.raises(UsageError, match="at least one"):
        items("value", (), ())


def test_scan_options_as_redis_py_sends_them() -> None:
    assert scan_options(None, None) == ()
    assert scan_options("f*", 5) == (b"MATCH", b"f*", b"COUNT", b"5")
    for bad in (0, -1, True, 1.5):
        with pytest.raises(UsageError, match="count"):
            scan_options(None, bad)  # type: ignore[arg-type]
