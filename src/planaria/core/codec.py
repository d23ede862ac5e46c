"""Log entries and state snapshots of the protocol as storage payloads (of a ``PartitionLog``
record, or of a snapshot file).

The storage record carries the epoch and index itself; the payload holds the request id and
the write. A barrier (``op is None``) is the empty payload. Layout (little-endian)::

    kind u8 (1 = Set, 2 = Delete) | flags u8 (1 nx, 2 xx, 4 if_value) | seq u64 |
    client (u32 length + bytes) | key (u32 + bytes) | value (u32 + bytes) | if_value (u32 + bytes)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from types import MappingProxyType

from planaria.core.messages import (
    AppliedWrites,
    ClientReply,
    Delete,
    Entry,
    ReplicaSnapshot,
    Set,
    Version,
)
from planaria.errors import InternalError, UsageError

__all__ = ["decode_entry", "decode_state", "encode_entry", "encode_state", "encode_state_parts"]

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


# --- replica state snapshots ------------------------------------------------------------------
#
# The payload of a storage snapshot (``planaria.storage.format.Snapshot.data``); the storage
# record around it carries the index, the epoch and the checksum. Layout (little-endian)::
#
#     partition u32 | dedup_window u32 | keys u64 |
#     per key: key (u32 + bytes) | value (u32 + bytes) | epoch u64 | index u64
#     clients u64 | per client (least recently written first): client (u32 + bytes) |
#         writes u32 | per write: seq u64 | flags u8 (1 applied, 2 value, 4 version) |
#         epoch u64 | [value (u32 + bytes)] | [version epoch u64 | index u64]

_STATE_HEAD = struct.Struct("<IIQ")
_VERSION = struct.Struct("<QQ")
_COUNT = struct.Struct("<Q")
_WRITE = struct.Struct("<QBQ")
_APPLIED, _HAS_VALUE, _HAS_VERSION = 1, 2, 4


def encode_state(snapshot: ReplicaSnapshot) -> bytes:
    """The replicated state of ``snapshot`` (not its index or epoch) as bytes."""
    return b"".join(encode_state_parts(snapshot))


def encode_state_parts(snapshot: ReplicaSnapshot, keys_per_part: int = 1024) -> Iterator[bytes]:
    """``encode_state`` in pieces (joined, the same bytes), one per ``keys_per_part`` keys
    and one for the dedup table: a node encodes a large state on its event loop a piece per
    turn, so no turn stalls its writes for long (docs/operations.md, "Snapshots")."""
    if keys_per_part < 1:
        raise UsageError(f"keys_per_part must be >= 1, not {keys_per_part}")
    parts = [_STATE_HEAD.pack(snapshot.partition, snapshot.dedup_window, len(snapshot.kv))]
    for key, (value, version) in snapshot.kv.items():
        parts += (_field(key), _field(value), _VERSION.pack(version.epoch, version.index))
        if len(parts) >= 3 * keys_per_part:
            yield b"".join(parts)
            parts = []
    yield b"".join(parts) + _encode_dedup(snapshot)


def _encode_dedup(snapshot: ReplicaSnapshot) -> bytes:
    parts = [_COUNT.pack(len(snapshot.dedup))]
    for client, applied in snapshot.dedup.items():
        parts += (_field(client.encode()), _LEN.pack(len(applied.seqs)))
        for seq in applied.seqs:
            reply = applied.replies[seq]
            if reply.error is not None or reply.stale or reply.primary_hint is not None:
                raise InternalError(f"a stored reply that is not a plain success: {reply}")
            flags = _APPLIED if reply.applied else 0
            flags |= _HAS_VALUE if reply.value is not None else 0
            flags |= _HAS_VERSION if reply.version is not None else 0
            parts.append(_WRITE.pack(seq, flags, reply.epoch))
            if reply.value is not None:
                parts.append(_field(reply.value))
            if reply.version is not None:
                parts.append(_VERSION.pack(reply.version.epoch, reply.version.index))
    return b"".join(parts)


def decode_state(index: int, epoch: int, data: bytes) -> ReplicaSnapshot:
    """The snapshot at (``index``, ``epoch``) whose state ``encode_state`` gave ``data``;
    InternalError if the bytes do not parse (the storage checksum passed: our bug)."""
    try:
        return _decode_state(index, epoch, memoryview(data))
    except (struct.error, UnicodeDecodeError, KeyError) as exc:
        raise InternalError(f"snapshot state at {index} does not parse: {exc}") from exc


def _decode_state(index: int, epoch: int, buf: memoryview) -> ReplicaSnapshot:
    offset = 0

    def take(size: int) -> bytes:
        nonlocal offset
        if offset + size > len(buf):
            raise struct.error("state cut short")
        chunk = bytes(buf[offset : offset + size])
        offset += size
        return chunk

    def field_() -> bytes:
        nonlocal offset
        (length,) = _LEN.unpack_from(buf, offset)
        offset += _LEN.size
        return take(length)

    partition, window, keys = _STATE_HEAD.unpack_from(buf, 0)
    offset = _STATE_HEAD.size
    kv: dict[bytes, tuple[bytes, Version]] = {}
    for _ in range(keys):
        key = field_()
        value = field_()
        kv[key] = (value, Version(*_VERSION.unpack(take(_VERSION.size))))
    (clients,) = _COUNT.unpack(take(_COUNT.size))
    dedup: dict[str, AppliedWrites] = {}
    for _ in range(clients):
        client = field_().decode()
        (count,) = _LEN.unpack(take(_LEN.size))
        seqs: list[int] = []
        replies: dict[int, ClientReply] = {}
        for _ in range(count):
            seq, flags, reply_epoch = _WRITE.unpack(take(_WRITE.size))
            previous = field_() if flags & _HAS_VALUE else None
            version = (
                Version(*_VERSION.unpack(take(_VERSION.size))) if flags & _HAS_VERSION else None
            )
            seqs.append(seq)
            replies[seq] = ClientReply(
                partition=partition,
                request_id=(client, seq),
                value=previous,
                applied=bool(flags & _APPLIED),
                version=version,
                epoch=reply_epoch,
            )
        dedup[client] = AppliedWrites(tuple(seqs), replies)
    if offset != len(buf):
        raise struct.error(f"{len(buf) - offset} bytes after the state")
    return ReplicaSnapshot(
        partition=partition,
        index=index,
        epoch=epoch,
        kv=MappingProxyType(kv),
        dedup=MappingProxyType(dedup),
        dedup_window=window,
    )
