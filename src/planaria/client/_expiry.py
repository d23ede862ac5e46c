"""The expiry (TTL) commands of both clients and their arguments, as redis-py takes them:
a relative time as an int (seconds for ``ex``, ms for ``px``) or a ``timedelta``, an
absolute one as an int (Unix seconds for ``exat``, ms for ``pxat``) or a ``datetime``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from planaria.client._core import Command, _counted, _integer, _ok, _value
from planaria.errors import UsageError

__all__ = [
    "EXPIRE",
    "EXPIREAT",
    "EXPIRETIME",
    "GETEX",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PEXPIRETIME",
    "PSETEX",
    "PTTL",
    "RENAME",
    "RENAMENX",
    "SETEX",
    "TTL",
    "absolute_time",
    "expire_conditions",
    "expiry_arguments",
    "relative_time",
]


EXPIRE: Final = Command("EXPIRE", _counted)
PEXPIRE: Final = Command("PEXPIRE", _counted)
EXPIREAT: Final = Command("EXPIREAT", _counted)
PEXPIREAT: Final = Command("PEXPIREAT", _counted)
PERSIST: Final = Command("PERSIST", _counted)
# Keys, not expiry, but like PERSIST one key's state moved in one write.
RENAME: Final = Command("RENAME", _ok)
RENAMENX: Final = Command("RENAMENX", _counted)
TTL: Final = Command("TTL", _integer)
PTTL: Final = Command("PTTL", _integer)
EXPIRETIME: Final = Command("EXPIRETIME", _integer)
PEXPIRETIME: Final = Command("PEXPIRETIME", _integer)
GETEX: Final = Command("GETEX", _value)
SETEX: Final = Command("SETEX", _ok)
PSETEX: Final = Command("PSETEX", _ok)


def relative_time(what: str, value: object, *, ms: bool) -> bytes:
    """A delay: an int (seconds, or ms with ``ms``) or a timedelta."""
    if isinstance(value, timedelta):
        scaled = value.total_seconds() * (1000 if ms else 1)
        return b"%d" % int(scaled)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be an int or a timedelta, not {type(value).__name__}")
    return b"%d" % value


def absolute_time(what: str, value: object, *, ms: bool) -> bytes:
    """A Unix time: an int (seconds, or ms with ``ms``) or a datetime."""
    if isinstance(value, datetime):
        scaled = value.timestamp() * (1000 if ms else 1)
        return b"%d" % int(scaled)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be an int or a datetime, not {type(value).__name__}")
    return b"%d" % value


def expiry_arguments(
    *, ex: object, px: object, exat: object, pxat: object, keepttl: bool = False
) -> tuple[bytes, ...]:
    """SET's (and GETEX's) expiry option: at most one of them."""
    given = [name for name, value in (("ex", ex), ("px", px), ("exat", exat), ("pxat", pxat))
             if value is not None] + (["keepttl"] if keepttl else [])  # fmt: skip
    if len(given) > 1:
        raise UsageError(f"give at most one of ex, px, exat, pxat and keepttl, not {given}")
    if ex is not None:
        return (b"EX", relative_time("ex", ex, ms=False))
    if px is not None:
        return (b"PX", relative_time("px", px, ms=True))
    if exat is not None:
        return (b"EXAT", absolute_time("exat", exat, ms=False))
    if pxat is not None:
        return (b"PXAT", absolute_time("pxat", pxat, ms=True))
    return (b"KEEPTTL",) if keepttl else ()


def expire_conditions(*, nx: bool, xx: bool, gt: bool, lt: bool) -> tuple[bytes, ...]:
    """EXPIRE's conditions, as Redis combines them (NX alone; GT or LT, with XX or not)."""
    if nx and (xx or gt or lt):
        raise UsageError("nx cannot go with xx, gt or lt")
    if gt and lt:
        raise UsageError("gt and lt cannot go together")
    flags = (("NX", nx), ("XX", xx), ("GT", gt), ("LT", lt))
    return tuple(name.encode() for name, wanted in flags if wanted)
