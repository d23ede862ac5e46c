"""The hash and set commands of both clients, their replies as redis-py gives them (HGETALL
a dict, SMEMBERS a set, HSCAN a cursor and a dict), and their arguments as redis-py takes
them (``hset(name, key, value, mapping=...)``, ``sadd(name, *values)``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, TypeAlias

from planaria.client._core import (
    Call,
    Command,
    _counted,
    _float,
    _integer,
    _unexpected,
    _value,
    number,
)
from planaria.client._protocol import to_bytes
from planaria.errors import UsageError

__all__ = [
    "HDEL",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HSCAN",
    "HSET",
    "HSETNX",
    "HSTRLEN",
    "HVALS",
    "SADD",
    "SCARD",
    "SDIFF",
    "SDIFFSTORE",
    "SINTER",
    "SINTERSTORE",
    "SISMEMBER",
    "SMEMBERS",
    "SMISMEMBER",
    "SPOP",
    "SPOP_COUNT",
    "SRANDMEMBER",
    "SRANDMEMBER_COUNT",
    "SREM",
    "SSCAN",
    "SUNION",
    "SUNIONSTORE",
    "FieldMapping",
    "count_argument",
    "hash_pairs",
    "items",
    "scan_options",
]


def _strings(call: Call[list[bytes]], reply: object) -> list[bytes]:
    if isinstance(reply, list) and all(isinstance(item, bytes) for item in reply):
        return reply
    raise _unexpected(call, reply)


def _optional_strings(call: Call[list[bytes | None]], reply: object) -> list[bytes | None]:
    if isinstance(reply, list) and all(item is None or isinstance(item, bytes) for item in reply):
        return reply
    raise _unexpected(call, reply)


def _mapping(call: Call[dict[bytes, bytes]], reply: object) -> dict[bytes, bytes]:
    if isinstance(reply, dict):  # a RESP3 map
        return reply
    if (
        isinstance(reply, list)
        and len(reply) % 2 == 0
        and all(isinstance(item, bytes) for item in reply)
    ):
        return dict(zip(reply[::2], reply[1::2], strict=True))
    raise _unexpected(call, reply)


def _members(call: Call[set[bytes]], reply: object) -> set[bytes]:
    if isinstance(reply, list | set) and all(isinstance(item, bytes) for item in reply):
        return set(reply)
    raise _unexpected(call, reply)


def _flags(call: Call[list[bool]], reply: object) -> list[bool]:
    if isinstance(reply, list) and all(item in (0, 1) for item in reply):
        return [bool(item) for item in reply]
    raise _unexpected(call, reply)


def _hash_scan(
    call: Call[tuple[int, dict[bytes, bytes]]], reply: object
) -> tuple[int, dict[bytes, bytes]]:
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], bytes):
        cursor, flat = reply
        pairs = isinstance(flat, list) and len(flat) % 2 == 0
        if cursor.isdigit() and pairs and all(isinstance(item, bytes) for item in flat):
            return int(cursor), dict(zip(flat[::2], flat[1::2], strict=True))
    raise _unexpected(call, reply)


def _set_scan(call: Call[tuple[int, list[bytes]]], reply: object) -> tuple[int, list[bytes]]:
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], bytes):
        cursor, found = reply
        listed = isinstance(found, list)
        if cursor.isdigit() and listed and all(isinstance(item, bytes) for item in found):
            return int(cursor), found
    raise _unexpected(call, reply)


HSET: Final = Command("HSET", _integer)
HSETNX: Final = Command("HSETNX", _counted)
HGET: Final = Command("HGET", _value)
HMGET: Final = Command("HMGET", _optional_strings)
HDEL: Final = Command("HDEL", _integer)
HGETALL: Final = Command("HGETALL", _mapping)
HKEYS: Final = Command("HKEYS", _strings)
HVALS: Final = Command("HVALS", _strings)
HLEN: Final = Command("HLEN", _integer)
HEXISTS: Final = Command("HEXISTS", _counted)
HINCRBY: Final = Command("HINCRBY", _integer)
HINCRBYFLOAT: Final = Command("HINCRBYFLOAT", _float)
HSTRLEN: Final = Command("HSTRLEN", _integer)
HSCAN: Final = Command("HSCAN", _hash_scan)
SADD: Final = Command("SADD", _integer)
SREM: Final = Command("SREM", _integer)
SISMEMBER: Final = Command("SISMEMBER", _counted)
SMISMEMBER: Final = Command("SMISMEMBER", _flags)
SMEMBERS: Final = Command("SMEMBERS", _members)
SCARD: Final = Command("SCARD", _integer)
SPOP: Final = Command("SPOP", _value)
SPOP_COUNT: Final = Command("SPOP", _strings)
SRANDMEMBER: Final = Command("SRANDMEMBER", _value)
SRANDMEMBER_COUNT: Final = Command("SRANDMEMBER", _strings)
SSCAN: Final = Command("SSCAN", _set_scan)
SINTER: Final = Command("SINTER", _members)
SUNION: Final = Command("SUNION", _members)
SDIFF: Final = Command("SDIFF", _members)
SINTERSTORE: Final = Command("SINTERSTORE", _integer)
SUNIONSTORE: Final = Command("SUNIONSTORE", _integer)
SDIFFSTORE: Final = Command("SDIFFSTORE", _integer)


# HSET's mapping: keys all str, all bytes, or either (Mapping is invariant in its keys).
FieldMapping: TypeAlias = (
    Mapping[str, str | bytes] | Mapping[bytes, str | bytes] | Mapping[str | bytes, str | bytes]
)


def hash_pairs(
    key: str | bytes | None,
    value: str | bytes | None,
    mapping: FieldMapping | None,
    pairs: Iterable[str | bytes] | None,
) -> tuple[bytes, ...]:
    """HSET's field-value arguments as redis-py's ``hset`` takes them: ``key`` and
    ``value``, then ``mapping``'s, then ``items`` (a flat field, value, ... list)."""
    flat: list[bytes] = []
    if key is not None:
        if value is None:
            raise UsageError("hset's key needs a value")
        flat += [to_bytes("key", key), to_bytes("value", value)]
    for field, field_value in dict(mapping or {}).items():
        flat += [to_bytes("key", field), to_bytes("value", field_value)]
    listed = [to_bytes("items", item) for item in pairs or ()]
    if len(listed) % 2:
        raise UsageError("hset's items must be field, value pairs")
    flat += listed
    if not flat:
        raise UsageError("hset needs a key and value, a mapping or items")
    return tuple(flat)


def items(
    what: str, first: str | bytes | Iterable[str | bytes], more: tuple[str | bytes, ...]
) -> tuple[bytes, ...]:
    """One item or an iterable of them, then more (HMGET's fields, SINTER's keys); at
    least one."""
    listed = [first] if isinstance(first, str | bytes) else list(first)
    found = tuple(to_bytes(what, item) for item in (*listed, *more))
    if not found:
        raise UsageError(f"{what} needs at least one")
    return found


def scan_options(match: str | bytes | None, count: int | None) -> tuple[bytes, ...]:
    """HSCAN / SSCAN's MATCH and COUNT."""
    options: list[bytes] = []
    if match is not None:
        options += [b"MATCH", to_bytes("match", match)]
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UsageError(f"count must be a positive int, not {count!r}")
        options += [b"COUNT", b"%d" % count]
    return tuple(options)


def count_argument(what: str, value: object) -> bytes:
    """SRANDMEMBER's count (its parameter is named ``number``, as redis-py's)."""
    return number(what, value)
