"""On-disk formats: segment headers, records, snapshots and the meta file (pure).

Checksums are ``zlib.crc32`` (CRC-32/IEEE). Why not xxhash: a CRC *guarantees* detection of
every single-bit flip, every burst of up to 32 bits and every odd number of flipped bits in a
record, where a hash only makes misses unlikely; it is in the standard library; and for the
small records of a key-value log the cost is the Python call, not the checksum (both run at
GB/s in C).

Every integer is little-endian. A segment file::

    header : magic "PLNRSEG1" | first_index u64 | crc32 u32 (of the 16 bytes before it)
    record : crc32 u32 | length u32 | epoch u64 | index u64 | payload (length bytes)

A record's crc32 covers length, epoch, index and payload, so a flipped length or index is
caught too. Snapshot and meta files end with a crc32 of everything before it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from planaria.errors import UsageError

__all__ = [
    "RECORD_HEADER",
    "SEGMENT_HEADER",
    "Entry",
    "Meta",
    "Scan",
    "Snapshot",
    "decode_meta",
    "decode_segment_header",
    "decode_snapshot",
    "encode_meta",
    "encode_record",
    "encode_segment_header",
    "encode_snapshot",
    "encode_snapshot_parts",
    "find_record_after",
    "scan_records",
]

SEGMENT_MAGIC = b"PLNRSEG1"
SNAPSHOT_MAGIC = b"PLNRSNP1"
META_MAGIC = b"PLNRMET1"
SEGMENT_HEADER = struct.Struct("<8sQI")
RECORD_HEADER = struct.Struct("<IIQQ")
_RECORD_BODY = struct.Struct("<IQQ")  # the part of the header the crc covers
_INDEX = struct.Struct("<Q")
_SNAPSHOT_HEAD = struct.Struct("<8sQQQI")
_PAIR = struct.Struct("<II")
_CRC = struct.Struct("<I")
_META = struct.Struct("<8sQQ")
# How many records after a bad one are looked for before calling it a torn tail.
_SUCCESSOR_PROBES = 4


@dataclass(frozen=True, slots=True)
class Entry:
    epoch: int
    index: int
    record: bytes


@dataclass(frozen=True)
class Snapshot:
    """The replica's state as of log position (``index``, ``epoch``).

    ``data`` is the state machine's opaque state (read back from a file: a view of the
    file's bytes, not a copy: at a restart a copy of every partition's state cost about as
    much as checking its CRC); ``dedup`` maps request id -> stored reply (the at-most-once
    table, docs/design.md §4 invariant 8).
    """

    index: int
    epoch: int
    data: bytes | memoryview
    dedup: Mapping[bytes, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Meta:
    epoch: int = 0
    commit_index: int = 0


def encode_segment_header(first_index: int) -> bytes:
    head = SEGMENT_MAGIC + _INDEX.pack(first_index)
    return head + _CRC.pack(zlib.crc32(head))


def decode_segment_header(buf: bytes | memoryview) -> int | None:
    """The segment's first index, or None if the header is short or fails its check."""
    if len(buf) < SEGMENT_HEADER.size:
        return None
    magic, first_index, crc = SEGMENT_HEADER.unpack_from(buf)
    if magic != SEGMENT_MAGIC or crc != zlib.crc32(bytes(buf[: SEGMENT_HEADER.size - 4])):
        return None
    return int(first_index)


def encode_record(epoch: int, index: int, record: bytes) -> bytes:
    body = _RECORD_BODY.pack(len(record), epoch, index)
    return _CRC.pack(zlib.crc32(record, zlib.crc32(body))) + body + record


class Scan(NamedTuple):
    """The result of scanning a segment body: every good record up to the first bad byte."""

    offsets: list[int]
    epochs: list[tuple[int, int]]  # (epoch, first index) where the epoch changes
    end: int  # offset just past the last good record
    error: str | None  # why scanning stopped before the end of the buffer


def _record_at(buf: memoryview, offset: int, index: int, checksums: bool) -> tuple[int, int] | str:
    """(epoch, end offset) of a valid record ``index`` at ``offset``, else why not."""
    if len(buf) - offset < RECORD_HEADER.size:
        return "record header cut short"
    crc, length, epoch, found_index = RECORD_HEADER.unpack_from(buf, offset)
    end = offset + RECORD_HEADER.size + length
    if end > len(buf):
        return "record cut short"
    if checksums and crc != zlib.crc32(buf[offset + 4 : end]):
        return "record checksum mismatch"
    if found_index != index:
        return f"record has index {found_index}, expected {index}"
    return int(epoch), end


def scan_records(
    buf: memoryview, start: int, first_index: int, last_epoch: int, *, checksums: bool = True
) -> Scan:
    """Every good record from ``start`` on, up to the first bad one. ``checksums=False``
    checks the records' framing only (each header whole, its length inside the buffer, its
    index the next, its epoch not lower): for the sealed segments a snapshot wholly covers.
    Nothing reads their records at a start, and every ``PartitionLog.read`` checks the
    checksums of what it returns, so the records a lagging peer's catch-up reads are still
    checked; a checksum of each at every start was a third of opening a log. An error found
    so is not the last word: scan again with the checksums."""
    offsets: list[int] = []
    epochs: list[tuple[int, int]] = []
    offset = start
    index = first_index
    while offset < len(buf):
        found = _record_at(buf, offset, index, checksums)
        if isinstance(found, str):
            return Scan(offsets, epochs, offset, found)
        epoch, end = found
        if epoch < last_epoch:
            return Scan(offsets, epochs, offset, f"epoch {epoch} after epoch {last_epoch}")
        if epoch != last_epoch:
            epochs.append((epoch, index))
            last_epoch = epoch
        offsets.append(offset)
        offset = end
        index += 1
    return Scan(offsets, epochs, offset, None)


def find_record_after(buf: memoryview, bad_offset: int, bad_index: int) -> int | None:
    """Offset of a valid record that follows a bad one, if any: then the bad one is not a tail.

    Looks for the next few indexes by their encoded bytes (a C-speed search), and checks each
    candidate's checksum.
    """
    data = bytes(buf)
    index_field = 16  # offset of the index inside a record header
    for successor in range(bad_index + 1, bad_index + 1 + _SUCCESSOR_PROBES):
        needle = _INDEX.pack(successor)
        at = data.find(needle, bad_offset + 1 + index_field)
        while at != -1:
            candidate = at - index_field
            if not isinstance(_record_at(buf, candidate, successor, True), str):
                return candidate
            at = data.find(needle, at + 1)
    return None


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return b"".join(encode_snapshot_parts(snapshot))


def encode_snapshot_parts(snapshot: Snapshot) -> list[bytes | memoryview]:
    """The bytes of ``encode_snapshot`` in pieces, the state's bytes not copied (a snapshot
    file is written piece by piece: one copy of a large state less)."""
    parts: list[bytes | memoryview] = [
        _SNAPSHOT_HEAD.pack(
            SNAPSHOT_MAGIC, snapshot.index, snapshot.epoch, len(snapshot.data), len(snapshot.dedup)
        ),
        snapshot.data,
    ]
    for key, value in sorted(snapshot.dedup.items()):
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise UsageError("snapshot dedup table must map bytes to bytes")
        parts += [_PAIR.pack(len(key), len(value)), key, value]
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    parts.append(_CRC.pack(crc))
    return parts


def decode_snapshot(buf: bytes) -> Snapshot | str:
    """The snapshot, or why the bytes are not a valid one."""
    if len(buf) < _SNAPSHOT_HEAD.size + _CRC.size:
        return "snapshot file cut short"
    (crc,) = _CRC.unpack_from(buf, len(buf) - _CRC.size)
    body = memoryview(buf)[: len(buf) - _CRC.size]
    if crc != zlib.crc32(body):
        return "snapshot checksum mismatch"
    magic, index, epoch, data_len, pairs = _SNAPSHOT_HEAD.unpack_from(body)
    if magic != SNAPSHOT_MAGIC:
        return "not a snapshot file"
    offset = _SNAPSHOT_HEAD.size
    data = body[offset : offset + data_len]
    offset += data_len
    dedup: dict[bytes, bytes] = {}
    for _ in range(pairs):
        key_len, value_len = _PAIR.unpack_from(body, offset)
        offset += _PAIR.size
        dedup[bytes(body[offset : offset + key_len])] = bytes(
            body[offset + key_len : offset + key_len + value_len]
        )
        offset += key_len + value_len
    if offset != len(body):
        return "snapshot length mismatch"
    return Snapshot(index=index, epoch=epoch, data=data, dedup=dedup)


def encode_meta(meta: Meta) -> bytes:
    body = _META.pack(META_MAGIC, meta.epoch, meta.commit_index)
    return body + _CRC.pack(zlib.crc32(body))


def decode_meta(buf: bytes) -> Meta | str:
    if len(buf) != _META.size + _CRC.size:
        return "meta file has the wrong length"
    (crc,) = _CRC.unpack_from(buf, _META.size)
    if crc != zlib.crc32(buf[: _META.size]):
        return "meta checksum mismatch"
    magic, epoch, commit_index = _META.unpack_from(buf)
    if magic != META_MAGIC:
        return "not a meta file"
    return Meta(epoch=epoch, commit_index=commit_index)
