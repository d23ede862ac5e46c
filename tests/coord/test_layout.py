"""Key layout and record codecs shared by every backend, the node and the simulator."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planaria.coord import (
    MalformedRecord,
    SessionId,
    VersionedValue,
    config_key,
    decode_config,
    decode_registration,
    encode_config,
    encode_registration,
    member_key,
    partition_of_key,
)
from planaria.core.messages import PartitionConfig
from planaria.errors import UsageError


def test_config_round_trip_is_byte_stable() -> None:
    config = PartitionConfig(7, 3, "n2", ("n2", "n1", "n3"), frozenset({"n3", "n2"}), 5, 9)
    data = encode_config(config)
    assert decode_config(data) == config
    same = PartitionConfig(7, 3, "n2", ("n2", "n1", "n3"), frozenset({"n2", "n3"}), 5, 9)
    assert encode_config(same) == data  # set order never shows in the bytes
    empty = PartitionConfig(0, 1, None, (), frozenset(), 1)
    assert decode_config(encode_config(empty)) == empty
    assert b"wiped" not in data  # written only once a loss was recorded
    wiped = PartitionConfig(7, 3, "n2", ("n2", "n1"), frozenset({"n2"}), 5, 9, wiped=(("n1", 4),))
    assert decode_config(encode_config(wiped)) == wiped
    assert b"data_ids" not in data  # written only once a node registered one
    disks = replace(wiped, data_ids=(("n1", 2**62 + 5), ("n2", 7)))
    assert decode_config(encode_config(disks)) == disks


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"[]",
        b'{"partition": 1}',
        b'{"replicas": [], "isr": [], "x": 1}',
        b'{"partition": "1", "epoch": 1, "primary": null, "replicas": [], "isr": [], "version": 1}',
        b'{"partition": 1, "epoch": 1, "primary": 2, "replicas": [], "isr": [], "version": 1}',
        b'{"partition": 1, "epoch": 1, "primary": null, "replicas": 5, "isr": [], "version": 1}',
        b'{"partition": 1, "epoch": 1, "primary": null, "replicas": [], "isr": [], "version": 1,'
        b' "wiped": [["a"]]}',
        b'{"partition": 1, "epoch": 1, "primary": null, "replicas": [], "isr": [], "version": 1,'
        b' "wiped": [["a", "1"]]}',
        b'{"partition": 1, "epoch": 1, "primary": null, "replicas": [], "isr": [], "version": 1,'
        b' "data_ids": [["a", "1"]]}',
        b'{"partition": 1, "epoch": 1, "primary": null, "replicas": [], "isr": [], "version": 1,'
        b' "data_ids": [[1, 1]]}',
    ],
)
def test_malformed_configs_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedRecord):
        decode_config(data)


def test_registration_round_trip() -> None:
    data = encode_registration("10.0.0.1:7000", {"zone": "b", "weight": "1"})
    reg = decode_registration(VersionedValue(member_key("n1"), data, 3, SessionId(4)))
    assert (reg.node_id, reg.address, reg.session, reg.version) == ("n1", "10.0.0.1:7000", 4, 3)
    assert reg.metadata == (("weight", "1"), ("zone", "b"))


@pytest.mark.parametrize(
    "item",
    [
        VersionedValue("/members/n1", b'{"address": "h:1", "metadata": {}}', 1, None),
        VersionedValue("/other/n1", b'{"address": "h:1", "metadata": {}}', 1, SessionId(1)),
        VersionedValue("/members/n1", b'{"address": 1}', 1, SessionId(1)),
        VersionedValue("/members/n1", b"nope", 1, SessionId(1)),
    ],
)
def test_malformed_registrations_are_refused(item: VersionedValue) -> None:
    with pytest.raises(MalformedRecord):
        decode_registration(item)


def test_keys() -> None:
    assert member_key("n1") == "/members/n1"
    assert config_key(12) == "/partitions/12"
    assert partition_of_key("/partitions/12") == 12
    assert partition_of_key("/partitions/x") is None
    assert partition_of_key("/members/12") is None
    for bad in (-1, True, "3"):
        with pytest.raises(UsageError):
            config_key(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        encode_config("not a config")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        encode_registration("", None)
