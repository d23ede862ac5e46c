"""Unit tests for planaria.hashing: rings, ketama compatibility, bounded loads, jump, rendezvous."""

from __future__ import annotations

import bisect
import random
from collections import Counter

import pytest
import uhashring  # type: ignore[import-untyped]
import xxhash

from planaria.errors import UsageError
from planaria.hashing import (
    DEFAULT_VNODES,
    HashRing,
    KetamaRing,
    assign_bounded,
    bounded_caps,
    jump_hash,
    rendezvous_nodes,
    stable_hash64,
)

NAMES = [f"node-{i}" for i in range(10)]


def random_keys(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"user:{rng.getrandbits(48):x}" for _ in range(count)]


# ---- stable_hash64 and key types ----------------------------------------------------------


def test_stable_hash64_is_xxh3_of_utf8() -> None:
    assert stable_hash64("héllo") == xxhash.xxh3_64_intdigest("héllo".encode())
    assert stable_hash64(b"abc") == xxhash.xxh3_64_intdigest(b"abc")
    assert stable_hash64("abc") == stable_hash64(b"abc")
    # A pinned value: changing the hash would silently move every key in a deployed cluster.
    assert stable_hash64(b"planaria") == xxhash.xxh3_64(b"planaria").intdigest()
    assert 0 <= stable_hash64("") < 2**64


@pytest.mark.parametrize("bad", [1, 1.5, None, bytearray(b"a"), ["a"], ("a",)])
def test_bad_key_types_are_usage_errors(bad: object) -> None:
    ring = HashRing(["a", "b"], vnodes=8)
    with pytest.raises(UsageError, match="must be str or bytes"):
        ring.node_for(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="must be str or bytes"):
        ring.nodes_for(bad, 1)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="must be str or bytes"):
        ring.nodes_for_keys([bad])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="must be str or bytes"):
        KetamaRing(["a"]).node_for(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="must be str or bytes"):
        stable_hash64(bad)  # type: ignore[arg-type]


def test_unencodable_str_key_is_usage_error() -> None:
    ring = HashRing(["a"], vnodes=8)
    with pytest.raises(UsageError, match="UTF-8"):
        ring.node_for("\ud800")
    with pytest.raises(UsageError, match="UTF-8"):
        stable_hash64("\ud800")


def test_str_and_bytes_keys_agree_and_str_subclasses_work() -> None:
    class Name(str):
        pass

    ring = HashRing(NAMES, vnodes=64)
    for key in random_keys(200):
        assert ring.node_for(key) == ring.node_for(key.encode()) == ring.node_for(Name(key))


def test_empty_ring_lookups_are_usage_errors() -> None:
    for ring in (HashRing(), KetamaRing()):
        with pytest.raises(UsageError, match="empty"):
            ring.node_for("k")
        with pytest.raises(UsageError):
            ring.nodes_for("k", 1)
        with pytest.raises(UsageError):
            ring.nodes_for_keys(["k"])
    ring = HashRing(["a"])
    ring.remove("a")
    with pytest.raises(UsageError, match="empty"):
        ring.node_for("k")


# ---- construction and membership ----------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ("node-a", "single str"),
        (b"node-a", "single bytes"),
        (["a", "a"], "twice"),
        ([1, 2], "non-empty str"),
        ([""], "non-empty str"),
        ({"a": 0}, "positive finite"),
        ({"a": -1}, "positive finite"),
        ({"a": float("nan")}, "positive finite"),
        ({"a": float("inf")}, "positive finite"),
        ({"a": True}, "positive finite"),
        ({"a": "2"}, "positive finite"),
        (42, "iterable"),
    ],
)
def test_bad_nodes_are_usage_errors(nodes: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        HashRing(nodes)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=message):
        KetamaRing(nodes)  # type: ignore[arg-type]


def test_bad_options_are_usage_errors() -> None:
    for vnodes in (0, -3, 1.5, True):
        with pytest.raises(UsageError, match="vnodes"):
            HashRing(["a"], vnodes=vnodes)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not in nodes"):
        HashRing(["a"], zones={"b": "z1"})
    with pytest.raises(UsageError, match="zone"):
        HashRing(["a"], zones={"a": ""})
    with pytest.raises(UsageError, match="zone"):
        HashRing(["a"], zones={"a": 3})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="mapping"):
        HashRing(["a"], zones=["a"])  # type: ignore[arg-type]


def test_membership_accessors() -> None:
    ring = HashRing({"a": 1, "b": 2.5}, vnodes=16, zones={"a": "z1"})
    assert ring.nodes == ("a", "b")
    assert len(ring) == 2
    assert "a" in ring
    assert "c" not in ring
    assert ring.weight("b") == 2.5
    assert ring.zone("a") == "z1"
    assert ring.zone("b") is None
    assert ring.vnodes == 16
    ring.add("c", 3, "z2")
    nodes: tuple[str, ...] = ring.nodes  # not the 2-tuple asserted before the add
    assert nodes == ("a", "b", "c")
    assert (ring.weight("c"), ring.zone("c")) == (3, "z2")
    ring.add("a", 2)  # re-adding sets weight and zone
    assert (ring.weight("a"), ring.zone("a")) == (2, None)
    ring.remove("b")
    assert ring.nodes == ("a", "c")
    for call in (ring.remove, ring.weight, ring.zone):
        with pytest.raises(UsageError, match="not in the ring"):
            call("b")
    with pytest.raises(UsageError, match="positive finite"):
        ring.add("d", 0)
    with pytest.raises(UsageError, match="zone"):
        ring.add("d", 1, "")
    assert "d" not in ring
    assert ring.nodes_for("k", 2)  # still consistent after the refused adds


def test_ring_does_not_depend_on_insertion_order() -> None:
    weights = {name: 1 + i % 3 for i, name in enumerate(NAMES)}
    forward = HashRing(weights, vnodes=32)
    backward = HashRing(dict(reversed(list(weights.items()))), vnodes=32)
    grown = HashRing(vnodes=32)
    for name in reversed(NAMES):
        grown.add(name, weights[name])
    keys = random_keys(3000)
    expected = forward.nodes_for_keys(keys)
    assert backward.nodes_for_keys(keys) == expected
    assert grown.nodes_for_keys(keys) == expected


def reference_owner(ring: HashRing, key: bytes) -> str:
    """The plain definition: owner of the first point strictly after the key's hash."""
    points = sorted(
        (xxhash.xxh3_64_intdigest(xxhash.xxh3_128_digest(n.encode()), s), n)
        for n in ring.nodes
        for s in range(max(1, round(ring.vnodes * ring.weight(n))))
    )
    index = bisect.bisect_right([p for p, _ in points], xxhash.xxh3_64_intdigest(key))
    return points[index % len(points)][1]


@pytest.mark.parametrize("vnodes", [1, 3, 50])
def test_node_for_matches_the_plain_ring_definition(vnodes: int) -> None:
    ring = HashRing({"a": 1, "b": 2, "c": 0.5}, vnodes=vnodes)
    keys = [k.encode() for k in random_keys(2000)] + [b"a", b"b", b"c"]
    for key in keys:
        assert ring.node_for(key) == reference_owner(ring, key)
    assert ring.nodes_for_keys(keys) == [ring.node_for(k) for k in keys]


def test_weight_two_node_gets_about_twice_the_keys() -> None:
    ring = HashRing({"light-1": 1, "light-2": 1, "heavy": 2})
    counts = Counter(ring.nodes_for_keys(random_keys(40_000)))
    assert counts["heavy"] / counts["light-1"] == pytest.approx(2, rel=0.1)
    assert counts["heavy"] / counts["light-2"] == pytest.approx(2, rel=0.1)


def test_default_ring_balances_ten_nodes() -> None:
    assert DEFAULT_VNODES >= 1000
    counts = Counter(HashRing(NAMES).nodes_for_keys(random_keys(50_000)))
    assert max(counts.values()) / (50_000 / 10) < 1.07  # 1.05 plus sampling noise of 5k keys


# ---- preference lists and zones -----------------------------------------------------------


def test_nodes_for_counts_and_order() -> None:
    ring = HashRing(NAMES, vnodes=32)
    for key in random_keys(300):
        preference = ring.nodes_for(key, 4)
        assert len(set(preference)) == 4
        assert preference[0] == ring.node_for(key)
        assert ring.nodes_for(key, 10)[:4] == preference
    for bad in (0, -1, 11, True, 2.0):
        with pytest.raises(UsageError):
            ring.nodes_for("k", bad)  # type: ignore[arg-type]


def test_zones_fall_back_only_when_there_are_too_few() -> None:
    zones = {name: f"zone-{i % 2}" for i, name in enumerate(NAMES)}
    ring = HashRing(NAMES, vnodes=32, zones=zones)
    for key in random_keys(300):
        pair = ring.nodes_for(key, 2)
        assert {zones[n] for n in pair} == {"zone-0", "zone-1"}
        four = ring.nodes_for(key, 4)
        assert len(set(four)) == 4
        assert {zones[n] for n in four[:2]} == {"zone-0", "zone-1"}
        assert four[0] == ring.node_for(key)


def test_nodes_without_zone_count_as_their_own_zone() -> None:
    ring = HashRing(["a1", "a2", "solo"], vnodes=32, zones={"a1": "a", "a2": "a"})
    for key in random_keys(200):
        assert "solo" in ring.nodes_for(key, 2)


# ---- ketama compatibility with uhashring --------------------------------------------------

KETAMA_NODE_SETS: list[list[str] | dict[str, int]] = [
    ["127.0.0.1:11211"],
    ["a", "b", "c"],
    [f"cache-{i}.example:11211" for i in range(10)],
    {"x": 1, "y": 2, "z": 5},
    {f"mc{i}": i + 1 for i in range(7)},
]


@pytest.mark.parametrize("nodes", KETAMA_NODE_SETS, ids=lambda n: f"{len(n)}-nodes")
def test_ketama_ring_equals_uhashring(nodes: list[str] | dict[str, int]) -> None:
    theirs = uhashring.HashRing(nodes, hash_fn="ketama")
    ours = KetamaRing(nodes)
    keys = random_keys(20_000, seed=len(nodes))
    assert ours.nodes_for_keys(keys) == [theirs.get_node(k) for k in keys]
    assert sorted(set(ours._points)) == sorted(set(theirs.runtime._keys))
    for key in keys[:300]:
        n = min(3, len(nodes))
        assert ours.nodes_for(key, n) == list(theirs.iterate_nodes(key))[:n]


def test_ketama_ring_follows_uhashring_through_adds_and_removes() -> None:
    theirs = uhashring.HashRing(["a", "b"], hash_fn="ketama")
    ours = KetamaRing(["a", "b"])
    keys = random_keys(5000, seed=7)
    steps = [("add", "c", 1), ("add", "d", 3), ("remove", "a", 0), ("add", "a", 2), ("add", "c", 2)]
    for action, name, weight in steps:
        if action == "add":
            theirs.add_node(name, weight)
            ours.add(name, weight)
        else:
            theirs.remove_node(name)
            ours.remove(name)
        assert ours.nodes_for_keys(keys) == [theirs.get_node(k) for k in keys], (action, name)


def test_ketama_bytes_keys_hash_as_raw_bytes() -> None:
    ring = KetamaRing(["a", "b", "c"])
    for key in random_keys(200):
        assert ring.node_for(key.encode()) == ring.node_for(key)


# ---- bounded loads ------------------------------------------------------------------------


def loads(assignment: dict[int, list[str]]) -> Counter[str]:
    return Counter(node for nodes in assignment.values() for node in nodes)


def test_bounded_assignment_respects_caps_and_beats_the_plain_ring() -> None:
    ring = HashRing(NAMES, vnodes=8)  # few vnodes: a badly balanced ring to begin with
    items = list(range(5000))
    plain = Counter(ring.node_for(str(i)) for i in items)
    assignment = assign_bounded(items, ring, eps=0.1)
    caps = bounded_caps(ring, len(items), eps=0.1)
    assert caps == dict.fromkeys(NAMES, 550)
    counts = loads(assignment)
    assert max(counts.values()) <= 550 < max(plain.values())
    assert sum(counts.values()) == 5000
    # Items whose ring owner has room stay there: most items do not move.
    same = sum(assignment[i] == [ring.node_for(str(i))] for i in items)
    assert same > 0.8 * len(items)


def test_bounded_assignment_is_deterministic_and_order_independent() -> None:
    ring = HashRing(NAMES[:5], vnodes=16, zones={n: f"z{i % 3}" for i, n in enumerate(NAMES[:5])})
    items: list[str | int] = [*range(300), *(f"p{i}" for i in range(300))]
    shuffled = list(items)
    random.Random(3).shuffle(shuffled)
    first = assign_bounded(items, ring, replicas=3)
    assert assign_bounded(shuffled, ring, replicas=3) == first
    assert assign_bounded(iter(items), ring, replicas=3) == first


def test_bounded_replicas_are_distinct_and_zone_distinct() -> None:
    zones = {name: f"z{i % 3}" for i, name in enumerate(NAMES)}
    ring = HashRing(NAMES, vnodes=16, zones=zones)
    assignment = assign_bounded(range(64), ring, replicas=3)
    caps = bounded_caps(ring, 64, replicas=3)
    for replicas in assignment.values():
        assert len({zones[n] for n in replicas}) == 3
    assert all(loads(assignment)[n] <= caps[n] for n in NAMES)


def test_bounded_keeps_zones_distinct_with_unbalanced_zones() -> None:
    # Two nodes share zone a: plain greedy under node caps alone would pair them up.
    zones = {"a1": "a", "a2": "a", "b1": "b", "c1": "c"}
    ring = HashRing(list(zones), vnodes=8, zones=zones)
    assignment = assign_bounded(range(400), ring, replicas=2)
    caps = bounded_caps(ring, 400, replicas=2)
    assert all(zones[x] != zones[y] for x, y in assignment.values())
    assert all(loads(assignment)[n] <= caps[n] for n in zones)
    # Zone a can hold each item once: 400 of the 800 replicas, split over its two nodes.
    assert caps == {"a1": 250, "a2": 250, "b1": 250, "c1": 250}


def test_bounded_moves_few_items_when_a_node_joins() -> None:
    ring = HashRing(NAMES, vnodes=64)
    items = list(range(4000))
    before = assign_bounded(items, ring, eps=0.25)
    ring.add("node-10")
    after = assign_bounded(items, ring, eps=0.25)
    moved = sum(before[i] != after[i] for i in items) / len(items)
    assert moved < 1.5 / 11


def test_bounded_caps_follow_weights_and_spread_the_excess() -> None:
    ring = HashRing({"a": 1, "b": 1, "c": 2}, vnodes=16)
    assert bounded_caps(ring, 100, eps=0) == {"a": 25, "b": 25, "c": 50}
    # Two replicas: c's proportional share (100) is all it can hold, one per item.
    heavy = HashRing({"big": 100, "s1": 1, "s2": 1}, vnodes=4)
    assert bounded_caps(heavy, 100, eps=0.25, replicas=2) == {"big": 125, "s1": 63, "s2": 63}
    counts = loads(assign_bounded(range(100), heavy, eps=0.25, replicas=2))
    assert counts["s1"] <= 63
    assert counts["s2"] <= 63


def test_bounded_never_paints_itself_into_a_corner() -> None:
    # 3 nodes, 2 replicas, eps 0: every node must end with exactly its cap; plain greedy can
    # fill two nodes together and leave the last items a single node.
    ring = HashRing(["a", "b", "c"], vnodes=2)
    for count in (3, 30, 299):
        assignment = assign_bounded(range(count), ring, eps=0, replicas=2)
        counts = loads(assignment)
        caps = bounded_caps(ring, count, eps=0, replicas=2)
        assert all(len(set(nodes)) == 2 for nodes in assignment.values())
        assert all(counts[n] <= caps[n] for n in caps)


def test_bounded_bad_input() -> None:
    ring = HashRing(["a", "b"], vnodes=4)
    with pytest.raises(UsageError, match="replicas"):
        assign_bounded(range(3), ring, replicas=3)
    with pytest.raises(UsageError, match="replicas"):
        assign_bounded(range(3), ring, replicas=0)
    with pytest.raises(UsageError, match="eps"):
        assign_bounded(range(3), ring, eps=-0.1)
    with pytest.raises(UsageError, match="eps"):
        assign_bounded(range(3), ring, eps=float("nan"))
    with pytest.raises(UsageError, match="twice"):
        assign_bounded([1, 2, 1], ring)
    with pytest.raises(UsageError, match="items must be"):
        assign_bounded([1.5], ring)  # type: ignore[type-var]
    with pytest.raises(UsageError, match="ring must be"):
        assign_bounded([1], {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        assign_bounded([1], HashRing())
    with pytest.raises(UsageError, match="item_count"):
        bounded_caps(ring, -1)
    assert assign_bounded([], ring) == {}
    # 1 and "1" hash alike but are different items.
    mixed: list[int | str | bytes] = [1, "1", b"1"]
    assert set(assign_bounded(mixed, ring)) == {1, "1", b"1"}


# ---- jump hash ----------------------------------------------------------------------------

GUAVA_GOLDEN_100 = [0, 55, 62, 8, 45, 59, 86, 97, 82, 59, 73, 37, 17, 56, 86, 21, 90, 37, 38, 83]


def test_jump_hash_known_vectors() -> None:
    # Guava's Hashing.consistentHash compatibility vectors and ClickHouse's jumpConsistentHash.
    assert [jump_hash(i, 100) for i in range(20)] == GUAVA_GOLDEN_100
    assert jump_hash(10863919174838991, 11) == 6
    assert jump_hash(2016238256797177309, 11) == 3
    assert jump_hash(1673758223894951030, 11) == 5
    assert jump_hash(2, 100001) == 80343
    assert jump_hash(2201, 100001) == 22152
    assert jump_hash(2202, 100001) == 15018
    assert jump_hash(42, 57) == 43
    assert jump_hash(256, 1024) == 520
    assert jump_hash(3735883980, 666) == 361
    assert jump_hash(16045690984833335023, 255) == 237


def test_jump_hash_key_forms_and_bad_input() -> None:
    assert jump_hash("user:1", 1000) == jump_hash(stable_hash64("user:1"), 1000)
    assert jump_hash(b"user:1", 1000) == jump_hash("user:1", 1000)
    assert jump_hash(-1, 1000) == jump_hash(2**64 - 1, 1000)
    assert all(jump_hash(k, 1) == 0 for k in range(50))
    for key in (2**64, -(2**63) - 1, 1.5, None, True):
        with pytest.raises(UsageError):
            jump_hash(key, 10)  # type: ignore[arg-type]
    for buckets in (0, -1, 2.0, True):
        with pytest.raises(UsageError, match="buckets"):
            jump_hash(1, buckets)  # type: ignore[arg-type]


def test_jump_hash_is_balanced() -> None:
    counts = Counter(jump_hash(k, 10) for k in random_keys(20_000))
    assert set(counts) == set(range(10))
    assert max(counts.values()) / 2000 < 1.1


# ---- rendezvous ---------------------------------------------------------------------------


def test_rendezvous_basics() -> None:
    top = rendezvous_nodes("user:1", NAMES, 3)
    assert len(set(top)) == 3
    assert top[0] == rendezvous_nodes("user:1", NAMES)[0]
    assert rendezvous_nodes("user:1", reversed(NAMES), 3) == top
    assert rendezvous_nodes(b"user:1", NAMES, 3) == top
    assert rendezvous_nodes("user:1", dict.fromkeys(NAMES, 1), 3) == top
    assert set(rendezvous_nodes("k", NAMES, 10)) == set(NAMES)


def test_rendezvous_weights() -> None:
    weights = {"light-1": 1, "light-2": 1, "heavy": 2}
    counts = Counter(rendezvous_nodes(k, weights)[0] for k in random_keys(20_000))
    assert counts["heavy"] / counts["light-1"] == pytest.approx(2, rel=0.12)
    assert counts["heavy"] / counts["light-2"] == pytest.approx(2, rel=0.12)


def test_rendezvous_bad_input() -> None:
    with pytest.raises(UsageError, match="exceeds"):
        rendezvous_nodes("k", ["a"], 2)
    with pytest.raises(UsageError, match="positive int"):
        rendezvous_nodes("k", ["a"], 0)
    with pytest.raises(UsageError, match="twice"):
        rendezvous_nodes("k", ["a", "a"])
    with pytest.raises(UsageError, match="single str"):
        rendezvous_nodes("k", "abc")
    with pytest.raises(UsageError, match="positive finite"):
        rendezvous_nodes("k", {"a": -1})
    with pytest.raises(UsageError, match="must be str or bytes"):
        rendezvous_nodes(7, ["a"])  # type: ignore[arg-type]


def test_short_similar_names_get_their_share() -> None:
    # Regression: points seeded from the raw name collided for 1-3 byte names sharing
    # characters (n1 and n10), so n10..n20 owned almost nothing.
    names = [f"n{i}" for i in range(1, 21)]
    ring = HashRing(names)
    counts = Counter(ring.node_for(f"key{i}") for i in range(40_000))
    mean = 40_000 / len(names)
    assert max(counts.values()) / mean < 1.2
    assert min(counts.get(name, 0) for name in names) / mean > 0.8
