"""The client's pure parts: the slot map from the topology renderers' own replies, address
parsing, and what each error reply means."""

from __future__ import annotations

import itertools

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.client._protocol import (
    ClusterDown,
    CommandRefused,
    Overloaded,
    TryAgain,
    encode_command,
    error_from_reply,
)
from planaria.client._routing import MalformedTopology, Shard, SlotMap
from planaria.core.slots import SLOTS
from planaria.errors import InternalError, Moved, UsageError
from planaria.net import topology


def parsed(data: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(data)
    return reader.gets()


NODES = {f"n{i}": topology.NodeAddress("127.0.0.1", 7001 + i) for i in range(4)}


@st.composite
def topologies(draw: st.DrawFn) -> topology.Topology:
    cuts = sorted(draw(st.sets(st.integers(1, SLOTS - 1), max_size=6)))
    bounds = [0, *cuts, SLOTS]
    ranges = []
    for start, stop in itertools.pairwise(bounds):
        if draw(st.booleans()) and len(bounds) > 2:
            continue  # a gap: nobody serves these slots
        names = draw(st.permutations(list(NODES)))
        replicas = tuple(names[1 : 1 + draw(st.integers(0, 2))])
        ranges.append(topology.SlotRange(start, stop - 1, names[0], replicas))
    return topology.Topology(NODES, tuple(ranges))


@settings(max_examples=40, deadline=None)
@given(topologies(), st.sampled_from(["shards", "slots"]))
def test_slot_map_matches_the_rendered_topology(topo: topology.Topology, kind: str) -> None:
    if kind == "shards":
        slot_map = SlotMap.from_cluster_shards(parsed(topology.cluster_shards(topo)), "h")
    else:
        slot_map = SlotMap.from_cluster_slots(parsed(topology.cluster_slots(topo)), "h")
    for slot in {0, SLOTS - 1, *(r.start for r in topo.ranges), *(r.end for r in topo.ranges)}:
        owner = topo.owner(slot)
        expected = None
        if owner is not None:
            expected = Shard(
                topo.address(owner.primary), tuple(topo.address(r) for r in owner.replicas)
            )
        assert slot_map.shard(slot) == expected
    assert slot_map.slots_served == topo.slots_assigned


def test_an_empty_host_is_the_host_the_reply_came_from() -> None:
    reply = [[0, SLOTS - 1, [b"", 7001, b"id"], [b"?", 7002, b"id2"]]]
    slot_map = SlotMap.from_cluster_slots(reply, "10.0.0.5")
    assert slot_map.shard(5) == Shard("10.0.0.5:7001", ("10.0.0.5:7002",))


def test_redirect_repoints_one_slot() -> None:
    slot_map = SlotMap.from_ranges([(0, SLOTS - 1, Shard("a:1", ("b:2",)))])
    slot_map.redirect(7, "b:2")
    assert slot_map.shard(7) == Shard("b:2", ("a:1",))
    assert slot_map.shard(8) == Shard("a:1", ("b:2",))
    assert list(slot_map.addresses()) == ["a:1", "b:2"]
    assert "b:2" in slot_map and "c:3" not in slot_map


@pytest.mark.parametrize(
    "reply", [b"oops", [[1]], [[0, 5, [b"h"]]], [[0, SLOTS, [b"h", 1]]], [[b"x", 5, [b"h", 1]]]]
)
def test_malformed_maps_are_refused(reply: object) -> None:
    with pytest.raises(MalformedTopology):
        SlotMap.from_cluster_slots(reply, "h")


def test_error_replies() -> None:
    moved = error_from_reply("MOVED 12 10.0.0.2:7002", "h")
    assert isinstance(moved, Moved) and (moved.slot, moved.address) == (12, "10.0.0.2:7002")
    same_host = error_from_reply("MOVED 12 :7002", "10.0.0.9")
    assert isinstance(same_host, Moved) and same_host.address == "10.0.0.9:7002"
    assert isinstance(error_from_reply("MOVED x y", "h"), InternalError)
    assert isinstance(error_from_reply("TRYAGAIN partition 1 is not ready", "h"), TryAgain)
    assert isinstance(error_from_reply("CLUSTERDOWN no primary", "h"), ClusterDown)
    assert isinstance(error_from_reply("BUSY overloaded", "h"), Overloaded)
    assert isinstance(error_from_reply("ERR max number of clients reached", "h"), Overloaded)
    assert isinstance(error_from_reply("ERR internal error: boom", "h"), InternalError)
    refused = error_from_reply("ERR syntax error", "h")
    assert isinstance(refused, CommandRefused) and isinstance(refused, UsageError)


def test_encode_command_is_what_the_server_reads_back() -> None:
    from planaria.net.resp import RequestReader

    reader = RequestReader(request_bytes_max=1024)
    reader.feed(encode_command([b"SET", b"k", b"", b"\r\n"]))
    assert reader.next_command() == [b"SET", b"k", b"", b"\r\n"]
