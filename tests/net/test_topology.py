from __future__ import annotations

import re

import hiredis
import pytest
from redis._parsers.helpers import parse_cluster_nodes
from redis.cluster import parse_cluster_shards, parse_cluster_slots

from planaria.core.messages import PartitionConfig
from planaria.errors import UsageError
from planaria.net.topology import (
    NodeAddress,
    SlotRange,
    Topology,
    cluster_info,
    cluster_nodes,
    cluster_shards,
    cluster_slots,
    node_id_hex,
)

NODES = {n: NodeAddress("127.0.0.1", 7000 + i) for i, n in enumerate(("a", "b", "c"))}


def decode(data: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(data)
    return reader.gets()


def config(
    partition: int, primary: str | None, replicas: tuple[str, ...], isr: str
) -> PartitionConfig:
    return PartitionConfig(partition, 1 + partition, primary, replicas, frozenset(isr), 1)


def sample() -> Topology:
    configs = [
        config(0, "a", ("a", "b", "c"), "abc"),
        config(1, "a", ("a", "b", "c"), "abc"),  # merges with 0
        config(2, "b", ("b", "c", "a"), "b"),  # no in-sync backups
        config(3, None, ("c", "a", "b"), ""),  # no primary: its slots are served by nobody
    ]
    return Topology.from_configs(NODES, configs, 4)


def test_from_configs() -> None:
    topology = sample()
    assert topology.ranges == (
        SlotRange(0, 8191, "a", ("b", "c")),
        SlotRange(8192, 12287, "b", ()),
    )
    assert topology.epoch == 4
    assert topology.owner(0) == topology.owner(8191) == topology.ranges[0]
    assert topology.owner(12287) == topology.ranges[1]
    assert topology.owner(12288) is None
    assert topology.address("b") == "127.0.0.1:7001"
    assert topology.slots_assigned == 12288


@pytest.mark.parametrize(
    "ranges",
    [
        (SlotRange(0, 10, "a"), SlotRange(10, 20, "b")),
        (SlotRange(5, 4, "a"),),
        (SlotRange(0, 16384, "a"),),
        (SlotRange(0, 10, "zz"),),
    ],
)
def test_bad_topologies(ranges: tuple[SlotRange, ...]) -> None:
    with pytest.raises(UsageError):
        Topology(NODES, ranges)


def test_node_ids_are_40_hex_and_stable() -> None:
    assert re.fullmatch("[0-9a-f]{40}", node_id_hex("a"))
    assert node_id_hex("a") == node_id_hex("a") != node_id_hex("b")


def test_cluster_slots_as_redis_py_reads_it() -> None:
    parsed = parse_cluster_slots(decode(cluster_slots(sample())))
    assert parsed == {
        (0, 8191): {
            "primary": ("127.0.0.1", 7000),
            "replicas": [("127.0.0.1", 7001), ("127.0.0.1", 7002)],
        },
        (8192, 12287): {"primary": ("127.0.0.1", 7001), "replicas": []},
    }
    raw = decode(cluster_slots(sample()))
    assert isinstance(raw, list)
    assert raw[0][2][2] == node_id_hex("a").encode()


@pytest.mark.parametrize("protocol", [2, 3])
def test_cluster_shards_as_redis_py_reads_it(protocol: int) -> None:
    raw = decode(cluster_shards(sample(), protocol))
    assert isinstance(raw, list)
    if protocol == 3:
        assert isinstance(raw[0], dict)
        assert raw[0][b"slots"] == [0, 8191]
        return
    shards = parse_cluster_shards(raw)
    assert shards[0]["slots"] == [(0, 8191)]
    roles = [(node[b"port"], node[b"role"]) for node in shards[0]["nodes"]]
    assert roles == [(7000, b"master"), (7001, b"replica"), (7002, b"replica")]
    assert shards[1]["nodes"][0][b"id"] == node_id_hex("b").encode()


def test_cluster_nodes_as_redis_py_reads_it() -> None:
    text = decode(cluster_nodes(sample(), "b"))
    assert isinstance(text, bytes)
    parsed = parse_cluster_nodes(text.decode())
    assert set(parsed) == {"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"}
    assert parsed["127.0.0.1:7000"]["slots"] == [["0", "8191"]]
    assert parsed["127.0.0.1:7001"]["flags"] == "myself,master"
    assert parsed["127.0.0.1:7002"]["slots"] == []
    assert all(node["master_id"] == "-" for node in parsed.values())


def test_cluster_info() -> None:
    text = decode(cluster_info(sample(), "a"))
    assert isinstance(text, bytes)
    assert b"cluster_state:fail\r\n" in text
    assert b"cluster_slots_assigned:12288\r\n" in text
    full = Topology(NODES, (SlotRange(0, 16383, "a"),))
    assert b"cluster_state:ok\r\n" in (decode(cluster_info(full)) or b"")  # type: ignore[operator]
