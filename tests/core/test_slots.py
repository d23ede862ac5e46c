from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from planaria._native import compiled
from planaria.core.slots import SLOTS, hash_tag, keyslot, partition_of_slot, slot_range
from planaria.errors import UsageError


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        # Vectors from the Redis Cluster specification and redis-cli CLUSTER KEYSLOT.
        ("123456789", 12739),
        ("foo", 12182),
        ("bar", 5061),
        ("", 0),
        ("somekey", 11058),
        ("{user1000}.following", keyslot("user1000")),
        ("{user1000}.followers", keyslot("user1000")),
    ],
)
def test_keyslot_vectors(key: str, slot: int) -> None:
    assert keyslot(key) == slot
    assert keyslot(key.encode()) == slot


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        (b"foo{}{bar}", b"foo{}{bar}"),  # an empty first tag means the whole key is hashed
        (b"foo{{bar}}zap", b"{bar"),
        (b"foo{bar}{zap}", b"bar"),
        (b"{bar", b"{bar"),
        (b"bar}", b"bar}"),
        (b"a{b}c", b"b"),
    ],
)
def test_hash_tag_rules(key: bytes, hashed: bytes) -> None:
    assert hash_tag(key) == hashed


def test_keyslot_rejects_other_types() -> None:
    # Compiled (planaria._native), mypyc checks the annotation before the body can say why.
    if compiled():
        with pytest.raises(TypeError, match=r"union\[str, bytes\] object expected; got int"):
            keyslot(42)  # type: ignore[arg-type]
    else:
        with pytest.raises(UsageError, match="str or bytes"):
            keyslot(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("partitions", [1, 2, 3, 7, 64, 100, 1000, SLOTS])
def test_ranges_cover_every_slot_once(partitions: int) -> None:
    owners = [partition_of_slot(slot, partitions) for slot in range(SLOTS)]
    for partition in range(partitions):
        owned = slot_range(partition, partitions)
        assert len(owned) >= SLOTS // partitions
        assert all(owners[slot] == partition for slot in owned)
    assert owners == sorted(owners)


@given(st.integers(1, SLOTS), st.integers(0, SLOTS - 1))
def test_partition_of_slot_inverts_ranges(partitions: int, slot: int) -> None:
    assert slot in slot_range(partition_of_slot(slot, partitions), partitions)


@pytest.mark.parametrize(("slot", "partitions"), [(-1, 4), (SLOTS, 4), (0, 0), (0, SLOTS + 1)])
def test_out_of_range_is_a_usage_error(slot: int, partitions: int) -> None:
    with pytest.raises(UsageError):
        partition_of_slot(slot, partitions)
