"""Property tests for planaria.hashing (hypothesis) and the cross-process stability check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.hashing import (
    HashRing,
    assign_bounded,
    bounded_caps,
    jump_hash,
    rendezvous_nodes,
    stable_hash64,
)

# Few vnodes keep each example cheap; the properties hold for any count.
VNODES = 16
FAST = settings(max_examples=40, deadline=None)

names = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=8)
node_sets = st.lists(names, min_size=1, max_size=8, unique=True)
keys = st.lists(st.binary(max_size=12) | st.text(max_size=12), min_size=1, max_size=200)
weights = st.sampled_from([1, 1, 1, 2, 3, 0.5])


@FAST
@given(nodes=node_sets, newcomer=names, data=keys)
def test_on_add_keys_move_only_to_the_new_node(
    nodes: list[str], newcomer: str, data: list[str | bytes]
) -> None:
    if newcomer in nodes:
        nodes.remove(newcomer)
    if not nodes:
        return
    ring = HashRing(nodes, vnodes=VNODES)
    before = ring.nodes_for_keys(data)
    ring.add(newcomer)
    after = ring.nodes_for_keys(data)
    assert all(new in (old, newcomer) for old, new in zip(before, after, strict=True))


@FAST
@given(
    nodes=st.lists(names, min_size=2, max_size=8, unique=True), pick=st.integers(0, 7), data=keys
)
def test_on_remove_only_the_removed_nodes_keys_move(
    nodes: list[str], pick: int, data: list[str | bytes]
) -> None:
    ring = HashRing({name: 1 + i % 3 for i, name in enumerate(nodes)}, vnodes=VNODES)
    gone = nodes[pick % len(nodes)]
    before = ring.nodes_for_keys(data)
    ring.remove(gone)
    after = ring.nodes_for_keys(data)
    assert all(old in (new, gone) for old, new in zip(before, after, strict=True))
    assert gone not in after


@FAST
@given(
    nodes=st.lists(names, min_size=1, max_size=9, unique=True),
    zone_count=st.integers(1, 4),
    n=st.integers(1, 9),
    data=keys,
)
def test_preference_lists_are_distinct_and_zone_distinct_when_possible(
    nodes: list[str], zone_count: int, n: int, data: list[str | bytes]
) -> None:
    zones = {name: f"z{i % zone_count}" for i, name in enumerate(nodes)}
    ring = HashRing(nodes, vnodes=VNODES, zones=zones)
    n = min(n, len(nodes))
    zones_present = len(set(zones.values()))
    for key in data[:50]:
        preference = ring.nodes_for(key, n)
        assert len(preference) == n
        assert len(set(preference)) == n
        assert preference[0] == ring.node_for(key)
        distinct = min(n, zones_present)
        assert len({zones[node] for node in preference[:distinct]}) == distinct


@settings(max_examples=30, deadline=None)
@given(
    nodes=st.dictionaries(names, weights, min_size=1, max_size=7),
    zone_count=st.integers(0, 3),
    replicas=st.integers(1, 3),
    eps=st.sampled_from([0.0, 0.05, 0.25, 1.0]),
    item_count=st.integers(0, 150),
)
def test_bounded_loads_never_exceed_the_cap(
    nodes: dict[str, float], zone_count: int, replicas: int, eps: float, item_count: int
) -> None:
    zones = {name: f"z{i % zone_count}" for i, name in enumerate(nodes)} if zone_count else None
    ring = HashRing(nodes, vnodes=4, zones=zones)
    replicas = min(replicas, len(nodes))
    assignment = assign_bounded(range(item_count), ring, eps=eps, replicas=replicas)
    caps = bounded_caps(ring, item_count, eps=eps, replicas=replicas)
    assert set(assignment) == set(range(item_count))
    counts = Counter(node for chosen in assignment.values() for node in chosen)
    assert all(counts[node] <= caps[node] for node in counts)
    for chosen in assignment.values():
        assert len(chosen) == len(set(chosen)) == replicas
        if zones is not None and len(set(zones.values())) >= replicas:
            assert len({zones[node] for node in chosen}) == replicas


@FAST
@given(key=st.integers(0, 2**64 - 1) | st.binary(max_size=16), buckets=st.integers(1, 500))
def test_jump_hash_growing_buckets_moves_keys_only_to_the_new_bucket(
    key: int | bytes, buckets: int
) -> None:
    before = jump_hash(key, buckets)
    after = jump_hash(key, buckets + 1)
    assert 0 <= before < buckets
    assert after in (before, buckets)


@FAST
@given(
    nodes=st.lists(names, min_size=2, max_size=8, unique=True),
    pick=st.integers(0, 7),
    key=st.text(max_size=12),
    weighted=st.booleans(),
)
def test_rendezvous_removal_moves_only_the_removed_nodes_keys(
    nodes: list[str], pick: int, key: str, weighted: bool
) -> None:
    members: dict[str, float] | list[str]
    members = {name: 1 + i % 3 for i, name in enumerate(nodes)} if weighted else nodes
    top = rendezvous_nodes(key, members, len(nodes))
    assert sorted(top) == sorted(nodes)
    gone = nodes[pick % len(nodes)]
    rest = (
        {n: w for n, w in members.items() if n != gone}
        if isinstance(members, dict)
        else [n for n in members if n != gone]
    )
    # Dropping a node leaves everyone else's relative order untouched.
    assert rendezvous_nodes(key, rest, len(nodes) - 1) == [n for n in top if n != gone]


PROBE = """
import json, sys
from planaria.hashing import HashRing, KetamaRing, jump_hash, rendezvous_nodes, stable_hash64
keys = [f"key-{i}" for i in range(300)] + ["héllo", "日本"]
ring = HashRing({"a": 1, "b": 2, "c": 1}, vnodes=64, zones={"a": "z1", "b": "z2"})
ketama = KetamaRing(["a", "b", "c"])
print(json.dumps([stable_hash64("planaria"), ring.nodes_for_keys(keys),
                  [ring.nodes_for(k, 3) for k in keys[:50]], ketama.nodes_for_keys(keys),
                  [jump_hash(k, 17) for k in keys],
                  [rendezvous_nodes(k, ["a", "b"]) for k in keys]]))
"""


def test_placement_is_the_same_in_processes_with_different_hash_seeds() -> None:
    outputs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == stable_hash64("planaria")
    assert len(set(outputs[0][1])) == 3  # a real map, not a constant
