from __future__ import annotations

import asyncio
import dataclasses
import struct

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.core import messages as m
from planaria.errors import PeerError, UsageError
from planaria.net.frame import CODEC, Codec, FrameDecoder, FrameError, read_frame

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
names = st.text(max_size=8)
keys = st.binary(max_size=16)
request_ids = st.tuples(names, ints)
versions = st.builds(m.Version, ints, ints)
sets = st.builds(m.Set, keys, keys, st.booleans(), st.booleans(), st.none() | keys)
write_ops = (
    sets | st.builds(m.Delete, keys) | st.builds(m.IncrBy, keys, ints)
    | st.builds(m.IncrByFloat, keys, keys) | st.builds(m.AppendTo, keys, keys, ints)
    | st.builds(m.SetRange, keys, ints, keys, ints)
    | st.builds(m.MSet, st.lists(st.tuples(keys, keys), max_size=3).map(tuple), st.booleans())
)  # fmt: skip
ops = st.builds(m.Get, keys) | write_ops
entries = st.builds(m.Entry, ints, ints, st.none() | request_ids, st.none() | write_ops)
configs = st.builds(
    m.PartitionConfig, ints, ints, st.none() | names, st.lists(names, max_size=3).map(tuple),
    st.frozensets(names, max_size=3), ints, ints,
)  # fmt: skip
floats = st.floats(allow_nan=False)
client_requests = st.builds(m.ClientRequest, ints, names, request_ids, ops, st.booleans())
client_replies = st.builds(
    m.ClientReply, ints, request_ids, st.none() | st.sampled_from(m.ErrorCode), st.none() | keys,
    st.booleans(), st.none() | versions, st.booleans(), st.none() | names, ints,
    st.none() | ints | keys, st.none() | names,
)  # fmt: skip
appends = st.builds(
    m.Append, ints, ints, names, ints, ints, st.lists(entries, max_size=3).map(tuple), ints,
    floats,
)  # fmt: skip
append_replies = st.builds(m.AppendReply, ints, ints, names, st.booleans(), ints, ints, floats)
config_updates = st.builds(m.ConfigUpdate, configs)
chunks = st.builds(
    m.SnapshotChunk, ints, ints, names, ints, ints, ints, ints, ints, st.binary(max_size=64),
    floats,
)  # fmt: skip
chunk_acks = st.builds(
    m.SnapshotAck, ints, ints, names, ints, ints, st.booleans(), st.booleans(), floats
)
message_values = (
    client_requests | client_replies | appends | append_replies | config_updates | chunks
    | chunk_acks
)  # fmt: skip
persists = st.builds(
    m.Persist, ints, st.none() | ints, st.lists(entries, max_size=2).map(tuple), ints, ints
)
propose = st.builds(m.ProposeIsr, ints, ints, ints, st.frozensets(names, max_size=3))
sends = st.builds(m.Send, names, message_values)
replies = st.builds(m.Reply, names, client_replies)
readies = st.builds(
    m.Ready, st.lists(persists, max_size=2), st.lists(sends, max_size=2),
    st.lists(replies, max_size=2), st.lists(propose, max_size=2),
)  # fmt: skip
everything = (
    versions | ops | entries | configs | message_values | persists | propose | sends | replies
    | readies
)  # fmt: skip


# State, not messages: a snapshot travels as the bytes of ``core.codec.encode_state``.
NOT_ON_THE_WIRE = {m.AppliedWrites, m.ReplicaSnapshot}


def test_every_core_dataclass_is_registered() -> None:
    classes = {
        value
        for value in vars(m).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value)
    }
    assert classes - NOT_ON_THE_WIRE == set(CODEC.tags.values())


@settings(max_examples=300, deadline=None)
@given(everything)
def test_round_trip(message: object) -> None:
    decoded = CODEC.decode(CODEC.encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


@settings(max_examples=50, deadline=None)
@given(st.lists(message_values, max_size=5), st.integers(min_value=1, max_value=17))
def test_frames_split_anywhere(messages: list[object], step: int) -> None:
    wire = b"".join(CODEC.frame(message) for message in messages)
    decoder = FrameDecoder(CODEC)
    got: list[object] = []
    for i in range(0, len(wire), step):
        decoder.feed(wire[i : i + step])
        got += list(decoder.messages())
    assert got == messages


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_raises_only_frame_errors(data: bytes) -> None:
    try:
        decoded = CODEC.decode(data)
    except FrameError:
        return
    assert type(decoded) in set(CODEC.tags.values())


@settings(max_examples=200, deadline=None)
@given(everything, st.data())
def test_mutated_messages_raise_only_frame_errors(message: object, data: st.DataObject) -> None:
    payload = bytearray(CODEC.encode(message))
    at = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[at] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decoded = CODEC.decode(bytes(payload))
    except FrameError:
        return
    # Whatever decodes is a well-typed message that encodes again.
    CODEC.encode(decoded)


@pytest.mark.parametrize(
    "value",
    [
        [2, "text not bytes"],  # Get(key=str)
        [2, b"k", b"extra"],  # too many fields
        [5, 0, "c", ["c", 1], [99, b"k"], False],  # an op with an unknown tag
        [5, 0, "c", ["c", True], [2, b"k"], False],  # bool where an int belongs
        [6, 0, ["c", 1], "no-such-code", None, False, None, False, None, 0],
        [8, 0, 1, None, ["a"], "not-a-list", 1, 0],
        [13, "n", [1, 1, 2]],  # Send of a Version: not a Message
        {"a": 1},
        [],
    ],
)
def test_wrong_types_are_refused(value: object) -> None:
    with pytest.raises(FrameError, match="protocol error"):
        CODEC.decode(msgpack.packb(value, use_bin_type=True))


def test_frame_errors_are_peer_errors() -> None:
    assert issubclass(FrameError, PeerError)


def test_oversized_frames() -> None:
    small = Codec(CODEC.tags, frame_bytes_max=64)
    with pytest.raises(UsageError):
        small.frame(m.Get(b"k" * 100))
    decoder = FrameDecoder(small)
    decoder.feed(struct.pack(">I", 65))
    with pytest.raises(FrameError, match="exceeds"):
        list(decoder.messages())


def test_extend_with_runtime_messages() -> None:
    @dataclasses.dataclass(frozen=True)
    class Renew:
        node: str
        session: int | None

    codec = CODEC.extend({100: Renew})
    assert codec.decode(codec.encode(Renew("n", None))) == Renew("n", None)
    with pytest.raises(UsageError):
        CODEC.extend({1: Renew})
    with pytest.raises(UsageError):
        CODEC.encode(Renew("n", 1))


def test_read_frame_from_a_stream() -> None:
    async def main() -> list[object]:
        reader = asyncio.StreamReader()
        reader.feed_data(CODEC.frame(m.Get(b"a")) + CODEC.frame(m.Delete(b"b")))
        reader.feed_eof()
        got = [await read_frame(reader, CODEC), await read_frame(reader, CODEC)]
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(reader, CODEC)
        return got

    assert asyncio.run(main()) == [m.Get(b"a"), m.Delete(b"b")]
