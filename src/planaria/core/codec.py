"""Log entries and state snapshots of the protocol as storage payloads (of a ``PartitionLog``
record, or of a snapshot file).

The storage record carries the epoch and index itself; the payload holds the request id and
the write. A barrier (``op is None``) is the empty payload. Layout (little-endian)::

    kind u8 | flags u8 | seq u64 | [time i64] | client (u32 length + bytes) |
    the op's fields (u32 + bytes each)

where the kind's high bit (128) says the entry's ``time_ms`` follows the head (entries of
logs from before expiry have none: time 0), and by kind (a number is an 8-byte field,
signed little-endian)::

    1 Set:         key | value | if_value | [expire_ms (number)]
                   flags: 1 nx, 2 xx, 4 if_value, 8 expire_ms, 16 keep_ttl
    2 Delete:      key
    3 IncrBy:      key | delta (number)
    4 IncrByFloat: key | delta (as sent)
    5 AppendTo:    key | value | bytes_max (number)
    6 SetRange:    key | value | offset (number) | bytes_max (number)
    7 MSet:        key | value | key | value ...   flags: 1 nx
    8 Expire:      key | expire_ms (number)        flags: 1 nx, 2 xx, 4 gt, 8 lt
    9 ClearExpiry: key
    10 GetEx:      key | [expire_ms (number)] | [error (UTF-8)]
                   flags: 1 expire_ms, 2 persist, 4 error
    11 ExpireKeys: key | key ...   (no request id: client "" and seq 0)
    12 HashSet:    key | field | value ...     flags: 1 nx
    13 HashDelete: key | field ...
    14 HashIncrBy: key | field | delta (number)
    15 HashIncrByFloat: key | field | delta (as sent)
    16 SetAdd:     key | member ...
    17 SetRemove:  key | member ...
    18 SetPop:     key | [count (number)]      flags: 1 count
    19 SetStore:   key | kind (inter, union, diff) | source ...
    20 Rename:     key | new key                   flags: 1 nx

and Set's flag 32 says GET (SET ... GET, GETSET), Delete's flag 1 GETDEL.

A logged op's expiry is always absolute (the primary made a relative one absolute).

Kinds are only ever added, so every log written before stays readable.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from itertools import islice
from types import MappingProxyType

from planaria.core.messages import (
    AppendTo,
    AppliedWrites,
    ClearExpiry,
    ClientReply,
    Delete,
    Entry,
    Expire,
    ExpireKeys,
    GetEx,
    HashDelete,
    HashIncrBy,
    HashIncrByFloat,
    HashSet,
    HashValue,
    IncrBy,
    IncrByFloat,
    MSet,
    Rename,
    ReplicaSnapshot,
    Result,
    Set,
    SetAdd,
    SetPop,
    SetRange,
    SetRemove,
    SetStore,
    SetValue,
    Value,
    Version,
    WriteOp,
)
from planaria.errors import InternalError, UsageError

__all__ = ["decode_entry", "decode_state", "encode_entry", "encode_state", "encode_state_parts"]

_HEAD = struct.Struct("<BBQ")
_LEN = struct.Struct("<I")
_NUMBER = struct.Struct("<q")
_SET, _DELETE, _INCR_BY, _INCR_BY_FLOAT, _APPEND_TO, _SET_RANGE, _MSET = 1, 2, 3, 4, 5, 6, 7
_EXPIRE, _CLEAR_EXPIRY, _GET_EX, _EXPIRE_KEYS = 8, 9, 10, 11
_HASH_SET, _HASH_DELETE, _HASH_INCR_BY, _HASH_INCR_BY_FLOAT = 12, 13, 14, 15
_SET_ADD, _SET_REMOVE, _SET_POP, _SET_STORE = 16, 17, 18, 19
_RENAME = 20
_GET = 32  # Set: SET ... GET, GETSET
_GETDEL = 1  # Delete
_COUNTED = 1  # SetPop
_TIMED = 128  # in the kind: the entry's time follows the head
_NX, _XX, _IF, _EXPIRES, _KEEP_TTL = 1, 2, 4, 8, 16  # Set
_GT, _LT = 4, 8  # Expire (with _NX, _XX)
_GETEX_EXPIRES, _GETEX_PERSIST, _GETEX_ERROR = 1, 2, 4
_TIME = struct.Struct("<q")


def _field(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def _number(value: int) -> bytes:
    return _field(_NUMBER.pack(value))


def _read_number(data: bytes) -> int:
    (value,) = _NUMBER.unpack(data)
    return int(value)


def _op_fields(op: WriteOp) -> tuple[int, int, list[bytes]]:
    """The kind, flags and encoded fields of every op but Set (the hot one, inline)."""
    if isinstance(op, Delete):
        return _DELETE, _GETDEL if op.get else 0, [_field(op.key)]
    if isinstance(op, IncrBy):
        return _INCR_BY, 0, [_field(op.key), _number(op.delta)]
    if isinstance(op, IncrByFloat):
        return _INCR_BY_FLOAT, 0, [_field(op.key), _field(op.delta)]
    if isinstance(op, AppendTo):
        return _APPEND_TO, 0, [_field(op.key), _field(op.value), _number(op.bytes_max)]
    if isinstance(op, SetRange):
        fields = [_field(op.key), _field(op.value), _number(op.offset), _number(op.bytes_max)]
        return _SET_RANGE, 0, fields
    if isinstance(op, MSet):
        pairs = [_field(part) for pair in op.pairs for part in pair]
        return _MSET, _NX if op.nx else 0, pairs
    if isinstance(op, Expire):
        _absolute(op.relative, op)
        flags = (_NX if op.nx else 0) | (_XX if op.xx else 0)
        flags |= (_GT if op.gt else 0) | (_LT if op.lt else 0)
        return _EXPIRE, flags, [_field(op.key), _number(op.expire_ms)]
    if isinstance(op, ClearExpiry):
        return _CLEAR_EXPIRY, 0, [_field(op.key)]
    if isinstance(op, GetEx):
        _absolute(op.relative, op)
        fields = [_field(op.key)]
        flags = _GETEX_PERSIST if op.persist else 0
        if op.expire_ms is not None:
            flags |= _GETEX_EXPIRES
            fields.append(_number(op.expire_ms))
        if op.error is not None:
            flags |= _GETEX_ERROR
            fields.append(_field(op.error.encode()))
        return _GET_EX, flags, fields
    if isinstance(op, ExpireKeys):
        return _EXPIRE_KEYS, 0, [_field(key) for key in op.keys]
    return _container_fields(op)


def _container_fields(op: WriteOp) -> tuple[int, int, list[bytes]]:
    key = _field(op.key)
    if isinstance(op, HashSet):
        pairs = [_field(part) for pair in op.items for part in pair]
        return _HASH_SET, _NX if op.nx else 0, [key, *pairs]
    if isinstance(op, HashDelete):
        return _HASH_DELETE, 0, [key, *map(_field, op.fields)]
    if isinstance(op, HashIncrBy):
        return _HASH_INCR_BY, 0, [key, _field(op.field), _number(op.delta)]
    if isinstance(op, HashIncrByFloat):
        return _HASH_INCR_BY_FLOAT, 0, [key, _field(op.field), _field(op.delta)]
    if isinstance(op, (SetAdd, SetRemove)):
        kind = _SET_ADD if isinstance(op, SetAdd) else _SET_REMOVE
        return kind, 0, [key, *map(_field, op.members)]
    if isinstance(op, SetPop):
        if op.count is None:
            return _SET_POP, 0, [key]
        return _SET_POP, _COUNTED, [key, _number(op.count)]
    if isinstance(op, SetStore):
        return _SET_STORE, 0, [key, _field(op.kind.encode()), *map(_field, op.sources)]
    if isinstance(op, Rename):
        return _RENAME, _NX if op.nx else 0, [key, _field(op.new_key)]
    raise InternalError(f"no entry kind for {type(op).__name__}")


def _absolute(relative: bool, op: WriteOp) -> None:
    if relative:
        raise InternalError(f"a relative expiry in a log entry: {op}")


def _decode_op(kind: int, flags: int, fields: list[bytes], index: int) -> WriteOp:
    """The op of an entry of ``kind`` (not Set) from its fields after the client's."""
    if kind == _DELETE:
        return Delete(fields[0], get=bool(flags & _GETDEL))
    if kind == _INCR_BY:
        return IncrBy(fields[0], _read_number(fields[1]))
    if kind == _INCR_BY_FLOAT:
        return IncrByFloat(fields[0], fields[1])
    if kind == _APPEND_TO:
        return AppendTo(fields[0], fields[1], _read_number(fields[2]))
    if kind == _SET_RANGE:
        return SetRange(fields[0], _read_number(fields[2]), fields[1], _read_number(fields[3]))
    if kind == _MSET:
        pairs = tuple(zip(fields[0::2], fields[1::2], strict=True))
        return MSet(pairs, nx=bool(flags & _NX))
    if kind == _EXPIRE:
        return Expire(
            fields[0],
            _read_number(fields[1]),
            nx=bool(flags & _NX),
            xx=bool(flags & _XX),
            gt=bool(flags & _GT),
            lt=bool(flags & _LT),
        )
    if kind == _CLEAR_EXPIRY:
        return ClearExpiry(fields[0])
    if kind == _GET_EX:
        rest = iter(fields[1:])
        expire_ms = _read_number(next(rest)) if flags & _GETEX_EXPIRES else None
        error = next(rest).decode() if flags & _GETEX_ERROR else None
        return GetEx(fields[0], expire_ms, persist=bool(flags & _GETEX_PERSIST), error=error)
    if kind == _EXPIRE_KEYS:
        return ExpireKeys(tuple(fields))
    if kind == _HASH_SET:
        pairs = tuple(zip(fields[1::2], fields[2::2], strict=True))
        return HashSet(fields[0], pairs, nx=bool(flags & _NX))
    if kind == _HASH_DELETE:
        return HashDelete(fields[0], tuple(fields[1:]))
    if kind == _HASH_INCR_BY:
        return HashIncrBy(fields[0], fields[1], _read_number(fields[2]))
    if kind == _HASH_INCR_BY_FLOAT:
        return HashIncrByFloat(fields[0], fields[1], fields[2])
    if kind == _SET_ADD:
        return SetAdd(fields[0], tuple(fields[1:]))
    if kind == _SET_REMOVE:
        return SetRemove(fields[0], tuple(fields[1:]))
    if kind == _SET_POP:
        return SetPop(fields[0], _read_number(fields[1]) if flags & _COUNTED else None)
    if kind == _SET_STORE:
        return SetStore(fields[0], tuple(fields[2:]), fields[1].decode())
    if kind == _RENAME:
        return Rename(fields[0], fields[1], nx=bool(flags & _NX))
    raise InternalError(f"unknown entry kind {kind} at index {index}")


def encode_entry(entry: Entry) -> bytes:
    op = entry.op
    if op is None:
        return b""
    if entry.request_id is None:
        if not isinstance(op, ExpireKeys):
            raise InternalError(f"a write entry without a request id: {entry}")
        client, seq = "", 0
    else:
        client, seq = entry.request_id
    timed = _TIMED if entry.time_ms else 0
    time = _TIME.pack(entry.time_ms) if timed else b""
    if isinstance(op, Set):
        flags = (_NX if op.nx else 0) | (_XX if op.xx else 0)
        flags |= _IF if op.if_value is not None else 0
        flags |= _KEEP_TTL if op.keep_ttl else 0
        flags |= _GET if op.get else 0
        expire = b""
        if op.expire_ms is not None:
            _absolute(op.relative, op)
            flags |= _EXPIRES
            expire = _number(op.expire_ms)
        return b"".join(
            (
                _HEAD.pack(_SET | timed, flags, seq),
                time,
                _field(client.encode()),
                _field(op.key),
                _field(op.value),
                _field(op.if_value or b""),
                expire,
            )
        )
    kind, flags, fields = _op_fields(op)
    return b"".join((_HEAD.pack(kind | timed, flags, seq), time, _field(client.encode()), *fields))


def decode_entry(epoch: int, index: int, record: bytes) -> Entry:
    if not record:
        return Entry(epoch, index, None, None)
    kind, flags, seq = _HEAD.unpack_from(record, 0)
    offset = _HEAD.size
    time_ms = 0
    if kind & _TIMED:
        kind &= ~_TIMED
        (time_ms,) = _TIME.unpack_from(record, offset)
        offset += _TIME.size
    fields: list[bytes] = []
    while offset < len(record):
        (length,) = _LEN.unpack_from(record, offset)
        offset += _LEN.size
        fields.append(record[offset : offset + length])
        offset += length
    client = fields[0].decode()
    if kind == _SET:
        # Built as _versions builds Versions: a restart decodes every entry its log keeps
        # after (and for catch-up, before) the snapshot, and the frozen dataclasses'
        # per-field object.__setattr__ was most of that.
        op: WriteOp = _new(Set)
        _SET_KEY.__set__(op, fields[1])
        _SET_VALUE.__set__(op, fields[2])
        _SET_NX.__set__(op, bool(flags & _NX))
        _SET_XX.__set__(op, bool(flags & _XX))
        _SET_IF_VALUE.__set__(op, fields[3] if flags & _IF else None)
        _SET_EXPIRE_MS.__set__(op, _read_number(fields[4]) if flags & _EXPIRES else None)
        _SET_RELATIVE.__set__(op, False)
        _SET_KEEP_TTL.__set__(op, bool(flags & _KEEP_TTL))
        _SET_GET.__set__(op, bool(flags & _GET))
    else:
        op = _decode_op(kind, flags, fields[1:], index)
    entry: Entry = _new(Entry)
    _ENTRY_EPOCH.__set__(entry, epoch)
    _ENTRY_INDEX.__set__(entry, index)
    _ENTRY_REQUEST_ID.__set__(entry, None if kind == _EXPIRE_KEYS else (client, seq))
    _ENTRY_OP.__set__(entry, op)
    _ENTRY_TIME_MS.__set__(entry, time_ms)
    return entry


# The slots of Set and Entry (frozen dataclasses: their __setattr__ refuses, slots do not).
_new = object.__new__
_SET_KEY = Set.__dict__["key"]
_SET_VALUE = Set.__dict__["value"]
_SET_NX = Set.__dict__["nx"]
_SET_XX = Set.__dict__["xx"]
_SET_IF_VALUE = Set.__dict__["if_value"]
_SET_EXPIRE_MS = Set.__dict__["expire_ms"]
_SET_RELATIVE = Set.__dict__["relative"]
_SET_KEEP_TTL = Set.__dict__["keep_ttl"]
_SET_GET = Set.__dict__["get"]
_ENTRY_EPOCH = Entry.__dict__["epoch"]
_ENTRY_INDEX = Entry.__dict__["index"]
_ENTRY_REQUEST_ID = Entry.__dict__["request_id"]
_ENTRY_OP = Entry.__dict__["op"]
_ENTRY_TIME_MS = Entry.__dict__["time_ms"]


# --- replica state snapshots ------------------------------------------------------------------
#
# The payload of a storage snapshot (``planaria.storage.format.Snapshot.data``); the storage
# record around it carries the index, the epoch and the checksum. Layout (little-endian)::
#
#     partition u32 | dedup_window u32 | keys u64 |
#     key lengths u32[keys] | value lengths u32[keys] |
#     version epochs u64[keys] | version indexes u64[keys] | keys' bytes | values' bytes |
#     clients u64 | per client (least recently written first): client (u32 + bytes) |
#         writes u32 | per write: seq u64 | flags u8 (1 applied, 2 value, 4 version,
#         8 a number result, 16 a string result, 32 a failure) | epoch u64 |
#         [value (u32 + bytes)] | [version epoch u64 | index u64] | [number i64] |
#         [string result (u32 + bytes)] | [failure (u32 + UTF-8)]
#
#     [expiries u64 | key lengths u32[expiries] | times i64[expiries] | keys' bytes]
#     [containers u64 | per hash or set: key (u32 + bytes) | kind u8 (1 hash, 2 set) |
#         version epoch u64 | index u64 | elements u32 | per element: field (u32 + bytes)
#         [| value (u32 + bytes), a hash's]]
#
# (Flags 8, 16 and 32 came with the counter and string commands: older states have none;
# flag 64, a list result (u32 count, then per item: u32 length + bytes), with SPOP.
# The expiry section came with TTLs, and is left out when no key has an expiry: a state
# that ends after the dedup table has none, so every state written before still decodes.
# The container section came with hashes and sets and is left out when there are none; a
# state with one has the expiry section, if empty. The key columns hold strings only.)
#
# Column by column, so that a restart decodes a partition of a million keys with a few
# C-speed passes (array.frombytes, slicing, zip into the dict) instead of a Python loop that
# parses every field (measured: about 5x faster; docs/BENCHMARKS.md, restart).

_STATE_HEAD = struct.Struct("<IIQ")
_VERSION = struct.Struct("<QQ")
_COUNT = struct.Struct("<Q")
_WRITE = struct.Struct("<QBQ")
_APPLIED, _HAS_VALUE, _HAS_VERSION = 1, 2, 4
_HAS_NUMBER, _HAS_STRING, _HAS_FAILURE, _HAS_LIST = 8, 16, 32, 64
_CONTAINER = struct.Struct("<BQQI")
_HASH_KIND, _SET_KIND = 1, 2
_LITTLE = sys.byteorder == "little"


def _column(typecode: str, values: Iterable[int]) -> bytes:
    column = array(typecode, values)
    if not _LITTLE:
        column.byteswap()
    return column.tobytes()


def _read_column(typecode: str, buf: memoryview, offset: int, count: int) -> array[int]:
    column = array(typecode)
    end = offset + count * column.itemsize
    if end > len(buf):
        raise struct.error("state cut short")
    column.frombytes(buf[offset:end])
    if not _LITTLE:
        column.byteswap()
    return column


def encode_state(snapshot: ReplicaSnapshot) -> bytes:
    """The replicated state of ``snapshot`` (not its index or epoch) as bytes."""
    return b"".join(encode_state_parts(snapshot, keys_per_part=max(1, len(snapshot.kv))))


def encode_state_parts(snapshot: ReplicaSnapshot, keys_per_part: int = 1024) -> Iterator[bytes]:
    """``encode_state`` in pieces (joined, the same bytes), the work done ``keys_per_part``
    keys a step: after each step's columns it yields ``b""``, so a node that encodes a large
    state on its event loop can give the loop a turn there (docs/operations.md,
    "Snapshots"); the columns' pieces, which cost nothing more, follow in layout order."""
    if keys_per_part < 1:
        raise UsageError(f"keys_per_part must be >= 1, not {keys_per_part}")
    kv = snapshot.kv
    # key lengths, value lengths, version epochs, version indexes, keys' bytes, values' bytes
    columns: tuple[list[bytes], ...] = ([], [], [], [], [], [])
    containers: list[tuple[bytes, tuple[Value, Version]]] = []
    strings = len(kv)
    items = iter(kv.items())
    while chunk := list(islice(items, keys_per_part)):
        values = [value for _, (value, _) in chunk]
        try:
            joined = b"".join(values)  # type: ignore[arg-type]
        except TypeError:  # hashes or sets among them: they have their own section
            containers += [item for item in chunk if item[1][0].__class__ is not bytes]
            chunk = [item for item in chunk if item[1][0].__class__ is bytes]
            strings -= len(values) - len(chunk)
            values = [value for _, (value, _) in chunk]
            joined = b"".join(values)  # type: ignore[arg-type]
        keys = [key for key, _ in chunk]
        versions = [version for _, (_, version) in chunk]
        pieces = (
            _column("I", map(len, keys)),
            _column("I", map(len, values)),
            _column("Q", [version.epoch for version in versions]),
            _column("Q", [version.index for version in versions]),
            b"".join(keys),
            joined,
        )
        for column, piece in zip(columns, pieces, strict=True):
            column.append(piece)
        yield b""
    yield _STATE_HEAD.pack(snapshot.partition, snapshot.dedup_window, strings)
    for column in columns:
        yield from filter(None, column)  # the only empty pieces are the steps' ends
    yield _encode_dedup(snapshot)
    expires = snapshot.expires
    if not expires and not containers:
        return
    # key lengths, times, keys' bytes
    expiry_columns: tuple[list[bytes], ...] = ([], [], [])
    expiry_items = iter(expires.items())
    while expiry_chunk := list(islice(expiry_items, keys_per_part)):
        keys = [key for key, _ in expiry_chunk]
        expiry_pieces = (
            _column("I", map(len, keys)),
            _column("q", [time_ms for _, time_ms in expiry_chunk]),
            b"".join(keys),
        )
        for column, piece in zip(expiry_columns, expiry_pieces, strict=True):
            column.append(piece)
        yield b""
    yield _COUNT.pack(len(expires))
    for column in expiry_columns:
        yield from filter(None, column)
    if containers:
        yield from _encode_containers(containers, keys_per_part)


def _encode_containers(
    containers: list[tuple[bytes, tuple[Value, Version]]], elements_per_part: int
) -> Iterator[bytes]:
    """The container section (layout above), a step (``b""``) after every
    ``elements_per_part`` elements, also inside one large hash or set (a snapshot's
    containers never change while it is encoded: core/containers.py)."""
    yield _COUNT.pack(len(containers))
    for key, (value, version) in containers:
        if isinstance(value, HashValue):
            kind = _HASH_KIND
            elements: Iterator[bytes] = (part for pair in value.items() for part in pair)
            per_part = 2 * elements_per_part
        elif isinstance(value, SetValue):
            kind, elements, per_part = _SET_KIND, iter(value), elements_per_part
        else:
            raise InternalError(f"not a container: {type(value).__name__}")
        yield _field(key) + _CONTAINER.pack(kind, version.epoch, version.index, len(value))
        while chunk := list(islice(elements, per_part)):
            yield b"".join([_field(part) for part in chunk])
            yield b""


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
            result = reply.result
            if isinstance(result, bool):  # an int to the type checker, not to a reply
                raise InternalError(f"a stored reply with a bool result: {reply}")
            flags |= _HAS_NUMBER if isinstance(result, int) else 0
            flags |= _HAS_STRING if isinstance(result, bytes) else 0
            flags |= _HAS_LIST if isinstance(result, tuple) else 0
            flags |= _HAS_FAILURE if reply.failure is not None else 0
            parts.append(_WRITE.pack(seq, flags, reply.epoch))
            if reply.value is not None:
                parts.append(_field(reply.value))
            if reply.version is not None:
                parts.append(_VERSION.pack(reply.version.epoch, reply.version.index))
            if isinstance(result, int):
                parts.append(_NUMBER.pack(result))
            elif isinstance(result, bytes):
                parts.append(_field(result))
            elif isinstance(result, tuple):  # SPOP's members
                if not all(isinstance(item, bytes) for item in result):
                    raise InternalError(f"a stored reply with a list not of strings: {reply}")
                parts.append(_LEN.pack(len(result)))
                parts += [_field(item) for item in result]  # type: ignore[arg-type]
            if reply.failure is not None:
                parts.append(_field(reply.failure.encode()))
    return b"".join(parts)


def decode_state(index: int, epoch: int, data: bytes | memoryview) -> ReplicaSnapshot:
    """The snapshot at (``index``, ``epoch``) whose state ``encode_state`` gave ``data``;
    InternalError if the bytes do not parse (the storage checksum passed: our bug)."""
    try:
        return _decode_state(index, epoch, memoryview(data))
    except (struct.error, UnicodeDecodeError, KeyError, ValueError) as exc:
        raise InternalError(f"snapshot state at {index} does not parse: {exc}") from exc


def _pieces(buf: memoryview, offset: int, lengths: array[int]) -> tuple[bytes, ...]:
    """The consecutive pieces of ``lengths`` bytes from ``offset`` on (each a copy), cut in
    one C call: a struct of one ``<n>s`` code per piece. (Slicing a copy of the bytes piece
    by piece took a slice object and a call each: a third more of a restart's decode.) A
    ``Struct`` of its own: the module's functions cache their formats, and these are as
    long as the keys are many."""
    if not lengths:
        return ()
    return struct.Struct("<" + "s".join(map(str, lengths)) + "s").unpack_from(buf, offset)


def _versions(epochs: array[int], indexes: array[int]) -> list[Version]:
    """``Version(epoch, index)`` for each pair, built without the frozen dataclass's
    ``__init__`` (its per-field ``object.__setattr__`` was most of a restart's decode)."""
    new = object.__new__
    set_epoch = _VERSION_EPOCH.__set__
    set_index = _VERSION_INDEX.__set__
    versions: list[Version] = []
    append = versions.append
    for version_epoch, version_index in zip(epochs, indexes, strict=True):
        version = new(Version)
        set_epoch(version, version_epoch)
        set_index(version, version_index)
        append(version)
    return versions


# The slots of Version (a frozen dataclass: its __setattr__ refuses, its slots do not).
_VERSION_EPOCH = Version.__dict__["epoch"]
_VERSION_INDEX = Version.__dict__["index"]


def _decode_state(index: int, epoch: int, buf: memoryview) -> ReplicaSnapshot:
    partition, window, keys = _STATE_HEAD.unpack_from(buf, 0)
    offset = _STATE_HEAD.size
    key_lengths = _read_column("I", buf, offset, keys)
    offset += keys * key_lengths.itemsize
    value_lengths = _read_column("I", buf, offset, keys)
    offset += keys * value_lengths.itemsize
    epochs = _read_column("Q", buf, offset, keys)
    offset += keys * epochs.itemsize
    indexes = _read_column("Q", buf, offset, keys)
    offset += keys * indexes.itemsize
    keys_bytes, values_bytes = sum(key_lengths), sum(value_lengths)
    if offset + keys_bytes + values_bytes > len(buf):
        raise struct.error("state cut short")
    key_list = _pieces(buf, offset, key_lengths)
    offset += keys_bytes
    value_list = _pieces(buf, offset, value_lengths)
    offset += values_bytes
    versions = _versions(epochs, indexes)
    kv: dict[bytes, tuple[Value, Version]] = dict(
        zip(key_list, zip(value_list, versions, strict=True), strict=True)
    )
    if len(kv) != keys:
        raise ValueError("a key appears twice")

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
            result: Result = None
            if flags & _HAS_NUMBER:
                (result,) = _NUMBER.unpack(take(_NUMBER.size))
            elif flags & _HAS_STRING:
                result = field_()
            elif flags & _HAS_LIST:
                (items,) = _LEN.unpack(take(_LEN.size))
                result = tuple(field_() for _ in range(items))
            failure = field_().decode() if flags & _HAS_FAILURE else None
            seqs.append(seq)
            replies[seq] = ClientReply(
                partition=partition,
                request_id=(client, seq),
                value=previous,
                applied=bool(flags & _APPLIED),
                version=version,
                epoch=reply_epoch,
                result=result,
                failure=failure,
            )
        dedup[client] = AppliedWrites(tuple(seqs), replies)
    expires: dict[bytes, int] = {}
    if offset < len(buf):  # the expiry section (states from before TTLs end above)
        (count,) = _COUNT.unpack(take(_COUNT.size))
        expiry_lengths = _read_column("I", buf, offset, count)
        offset += count * expiry_lengths.itemsize
        times = _read_column("q", buf, offset, count)
        offset += count * times.itemsize
        expiry_bytes = sum(expiry_lengths)
        if offset + expiry_bytes > len(buf):
            raise struct.error("state cut short")
        expiry_keys = _pieces(buf, offset, expiry_lengths)
        offset += expiry_bytes
        expires = dict(zip(expiry_keys, times, strict=True))
        if len(expires) != count:
            raise ValueError("an expiry twice")
    if offset < len(buf):  # the container section (states from before hashes end above)
        (count,) = _COUNT.unpack(take(_COUNT.size))
        strings = len(kv)
        for _ in range(count):
            key = field_()
            kind, version_epoch, version_index, elements = _CONTAINER.unpack(take(_CONTAINER.size))
            value: Value
            if kind == _HASH_KIND:
                value = HashValue((field_(), field_()) for _ in range(elements))
            elif kind == _SET_KIND:
                value = SetValue((field_(), None) for _ in range(elements))
            else:
                raise ValueError(f"container kind {kind}")
            if not elements or len(value) != elements:
                raise ValueError("an empty container, or an element twice")
            kv[key] = (value, Version(version_epoch, version_index))
        if len(kv) != strings + count:
            raise ValueError("a key appears twice")
    if not expires.keys() <= kv.keys():
        raise ValueError("an expiry of a key the state does not hold")
    if offset != len(buf):
        raise struct.error(f"{len(buf) - offset} bytes after the state")
    return ReplicaSnapshot(
        partition=partition,
        index=index,
        epoch=epoch,
        kv=MappingProxyType(kv),
        dedup=MappingProxyType(dedup),
        dedup_window=window,
        expires=MappingProxyType(expires),
    )
