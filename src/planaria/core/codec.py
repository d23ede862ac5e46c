"""Log entries of the protocol as storage records (the payload of a ``PartitionLog`` record).

The storage record carries the epoch and index itself; the payload holds the request id and
the write. A barrier (``op is None``) is the empty payload. Layout (little-endian)::

    kind u8 (1 = Set, 2 = Delete) | flags u8 (1 nx, 2 xx, 4 if_value) | seq u64 |
    client (u32 length + bytes) | key (u32 + bytes) | value (u32 + bytes) | if_value (u32 + bytes)
"""

from __future__ import annotations

import struct

from planaria.core.messages import Delete, Entry, Set
from planaria.errors import InternalError

__all__ = ["decode_entry", "encode_entry"]

_HEAD = struct.Struct("<BBQ")
_LEN = struct.Struct("<I")
_SET, _DELETE = 1, 2
_NX, _XX, _IF = 1, 2, 4


def _field(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def encode_entry(entry: Entry) -> bytes:
    op = entry.op
    if op is None:
        return b""
    if entry.request_id is None:
        raise InternalError(f"a write entry without a request id: {entry}")
    client, seq = entry.request_id
    if isinstance(op, Set):
        flags = (_NX if op.nx else 0) | (_XX if op.xx else 0)
        flags |= _IF if op.if_value is not None else 0
        return b"".join(
            (
                _HEAD.pack(_SET, flags, seq),
                _field(client.encode()),
                _field(op.key),
                _field(op.value),
                _field(op.if_value or b""),
            )
        )
    return b"".join((_HEAD.pack(_DELETE, 0, seq), _field(client.encode()), _field(op.key)))


def decode_entry(epoch: int, index: int, record: bytes) -> Entry:
    if not record:
        return Entry(epoch, index, None, None)
    kind, flags, seq = _HEAD.unpack_from(record, 0)
    offset = _HEAD.size
    fields: list[bytes] = []
    while offset < len(record):
        (length,) = _LEN.unpack_from(record, offset)
        offset += _LEN.size
        fields.append(record[offset : offset + length])
        offset += length
    client = fields[0].decode()
    if kind == _SET:
        op: Set | Delete = Set(
            fields[1],
            fields[2],
            nx=bool(flags & _NX),
            xx=bool(flags & _XX),
            if_value=fields[3] if flags & _IF else None,
        )
    elif kind == _DELETE:
        op = Delete(fields[1])
    else:
        raise InternalError(f"unknown entry kind {kind} at index {index}")
    return Entry(epoch, index, (client, seq), op)
