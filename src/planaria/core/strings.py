"""Applying a write to a partition's state: the one dispatch over every
:data:`~planaria.core.messages.WriteOp`, with redis-server 7.0's semantics and error replies.

Pure and deterministic: every replica applies the same op to the same state (the state is
equal at the same log index) and reaches the same result, so a result (a counter's new
value, an error) is decided by the apply, never by the node that took the request.

INCRBYFLOAT is computed as redis-server computes it on x86-64: in the x87 80-bit extended
format (a 64-bit significand), the inputs read by ``strtold`` (correctly rounded), the sum
rounded to nearest even, the result written with ``%.17Lf`` and its trailing zeros cut. Here
with exact rationals (:class:`fractions.Fraction`), so no platform's ``long double`` (or
its absence) changes a result.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from fractions import Fraction
from typing import TypeAlias

from planaria.core.containers import (
    HASH_NOT_A_FLOAT,
    HASH_NOT_AN_INTEGER,
    WRONGTYPE,
    ContainerOp,
    apply_container,
    writable,
)
from planaria.core.expiry import Expiries
from planaria.core.keyspace import write_keys
from planaria.core.messages import (
    STRING_BYTES_MAX,
    AppendTo,
    ClearExpiry,
    Delete,
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
    Result,
    Set,
    SetAdd,
    SetPop,
    SetRange,
    SetRemove,
    SetStore,
    Value,
    Version,
    WriteOp,
)
from planaria.errors import InternalError

__all__ = [
    "NOT_AN_INTEGER",
    "NOT_A_FLOAT",
    "NOT_FINITE",
    "OFFSET_OUT_OF_RANGE",
    "OVERFLOW",
    "TOO_LONG",
    "Outcome",
    "apply_write",
    "format_long_double",
    "parse_int64",
    "parse_long_double",
]

# redis-server 7.0's error replies, byte for byte.
NOT_AN_INTEGER = "ERR value is not an integer or out of range"
OVERFLOW = "ERR increment or decrement would overflow"
NOT_A_FLOAT = "ERR value is not a valid float"
NOT_FINITE = "ERR increment would produce NaN or Infinity"
OFFSET_OUT_OF_RANGE = "ERR offset is out of range"
TOO_LONG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
NO_SUCH_KEY = "ERR no such key"

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

State: TypeAlias = MutableMapping[bytes, tuple[Value, Version]]
# (the previous value, whether the state changed, the result, the failure's error reply)
Outcome: TypeAlias = tuple[bytes | None, bool, Result, str | None]


def apply_write(  # noqa: PLR0917 (every write's hot path: positional is the cheapest call)
    state: State,
    op: WriteOp,
    version: Version,
    expiries: Expiries | None = None,
    now_ms: int = 0,
    generation: int = 0,
) -> Outcome:
    """Apply ``op`` (at ``version``, logged at ``now_ms``: Unix ms, 0 when unknown) to
    ``state`` and its keys' ``expiries`` in place and say what it did. A key whose expiry
    is before ``now_ms`` is gone first (Redis' lazy expiry, here decided by the logged time,
    so alike on every replica). A failure changes nothing else. A hash or set is changed in
    place only when it was made in ``generation`` (the replica's snapshot generation;
    core/containers.py)."""
    if expiries is None:
        expiries = Expiries()
    elif now_ms and expiries:
        _expire_keys(state, expiries, op, now_ms)
    if isinstance(op, Set):
        if op.relative:
            raise InternalError(f"a relative expiry reached the apply: {op}")
        current = state.get(op.key)
        previous = current[0] if current is not None else None
        if previous is not None and previous.__class__ is not bytes:  # a hash or set
            if op.get or op.if_value is not None:
                return None, False, None, WRONGTYPE
            previous = None  # SET replaces any type; only a string is ever answered
        # Conditions combine with AND (NX with XX can never hold).
        take = (
            (not op.nx or current is None)
            and (not op.xx or current is not None)
            and (op.if_value is None or previous == op.if_value)
        )
        if take:
            state[op.key] = (op.value, version)
            if op.expire_ms is not None:
                _set_expiry(state, expiries, op.key, op.expire_ms, now_ms)
            elif not op.keep_ttl and expiries:
                expiries.discard(op.key)
        return previous, take, None, None
    if isinstance(op, Delete):
        current = state.get(op.key)
        if current is None:
            return None, False, None, None
        previous = current[0]
        if previous.__class__ is not bytes:  # a hash or set: DEL takes it, GETDEL refuses
            if op.get:
                return None, False, None, WRONGTYPE
            previous = None
        del state[op.key]
        expiries.discard(op.key)
        return previous, True, None, None
    if isinstance(op, (Expire, ClearExpiry, GetEx, ExpireKeys)):
        return _apply_expiry(state, expiries, op, now_ms)
    if isinstance(op, Rename):
        return _rename(state, expiries, op, version)
    if isinstance(op, (HashSet, HashDelete, SetAdd, SetRemove, SetPop, SetStore)):
        return _apply_container(state, op, version, expiries, (now_ms, generation))
    if isinstance(op, (HashIncrBy, HashIncrByFloat)):
        return _hash_incr(state, op, version, generation)
    if isinstance(op, (IncrBy, IncrByFloat, AppendTo, SetRange)):
        found = state.get(op.key)
        if found is not None and found[0].__class__ is not bytes:
            return None, False, None, WRONGTYPE  # a string command on a hash or set
    if isinstance(op, IncrBy):
        return _incr_by(state, op, version)
    if isinstance(op, IncrByFloat):
        return _incr_by_float(state, op, version)
    if isinstance(op, AppendTo):
        current = state.get(op.key)
        old = current[0] if current is not None else b""
        assert isinstance(old, bytes)
        length = len(old) + len(op.value)
        if length > min(op.bytes_max, STRING_BYTES_MAX):
            return None, False, None, TOO_LONG
        state[op.key] = (old + op.value, version)
        return None, True, length, None
    if isinstance(op, SetRange):
        return _set_range(state, op, version)
    if isinstance(op, MSet):
        if op.nx and any(key in state for key, _ in op.pairs):
            return None, False, None, None
        for key, value in op.pairs:
            state[key] = (value, version)
            expiries.discard(key)
        return None, True, None, None
    raise InternalError(f"no apply for {type(op).__name__}")  # pragma: no cover


def _apply_container(
    state: State,
    op: ContainerOp,
    version: Version,
    expiries: Expiries,
    times: tuple[int, int],
) -> Outcome:
    now_ms, generation = times  # the entry's time, the replica's snapshot generation

    def live(key: bytes) -> Value | None:
        """A key's value as of the entry's time (SINTERSTORE's sources may have expired)."""
        found = state.get(key)
        if found is None:
            return None
        time_ms = expiries.get_time(key) if now_ms else None
        return None if time_ms is not None and time_ms < now_ms else found[0]

    had = op.key in state
    changed, result, failure = apply_container(state, op, version, generation, live)
    if isinstance(op, SetStore) and failure is None:
        expiries.discard(op.key)  # the destination is new (Redis' setKey), or gone
    elif had and op.key not in state:
        expiries.discard(op.key)  # the last field or member went, and the key with it
    return None, changed, result, failure


def _hash_incr(
    state: State, op: HashIncrBy | HashIncrByFloat, version: Version, generation: int
) -> Outcome:
    """HINCRBY, HINCRBYFLOAT: as INCRBY and INCRBYFLOAT on a field, with Redis' own words
    for a field that holds no number."""
    current = state.get(op.key)
    held = current[0] if current is not None else None
    fields = writable(held, HashValue, generation)
    if fields is None:
        return None, False, None, WRONGTYPE
    assert isinstance(fields, HashValue)
    old = fields.get(op.field)
    new: bytes
    result: Result
    if isinstance(op, HashIncrBy):
        number = parse_int64(old) if old is not None else 0
        if number is None:
            return None, False, None, HASH_NOT_AN_INTEGER
        total = number + op.delta
        if not INT64_MIN <= total <= INT64_MAX:
            return None, False, None, OVERFLOW
        new, result = b"%d" % total, total
    else:
        value = parse_long_double(old) if old is not None else Fraction(0)
        delta = parse_long_double(op.delta)
        if value is None or delta is None:
            return None, False, None, HASH_NOT_A_FLOAT
        if isinstance(value, float) or isinstance(delta, float):  # an infinity
            return None, False, None, NOT_FINITE
        total_value = _round_extended(value + delta)
        if total_value is None:
            return None, False, None, NOT_FINITE
        new = result = format_long_double(total_value)
    fields[op.field] = new
    state[op.key] = (fields, version)
    return None, True, result, None


def _rename(state: State, expiries: Expiries, op: Rename, version: Version) -> Outcome:
    """RENAME / RENAMENX as Redis 7.0: the value (any type) and its expiry move; RENAME to
    the same key is OK, RENAMENX to it 0."""
    current = state.get(op.key)
    if current is None:
        return None, False, None, NO_SUCH_KEY
    if op.key == op.new_key or (op.nx and op.new_key in state):
        return None, False, 0, None
    del state[op.key]
    state[op.new_key] = (current[0], version)
    time_ms = expiries.get_time(op.key)
    expiries.discard(op.key)
    if time_ms is None:
        expiries.discard(op.new_key)
    else:
        expiries.set(op.new_key, time_ms)
    return None, True, 1, None


def _expire_keys(state: State, expiries: Expiries, op: WriteOp, now_ms: int) -> None:
    """Lazy expiry: the keys ``op`` writes (``write_keys``, the one place that says which
    keys an op names) that expired before ``now_ms`` are deleted."""
    if isinstance(op, ExpireKeys):
        return  # its keys are its business
    for key in write_keys(op):
        time_ms = expiries.get_time(key)
        if time_ms is not None and time_ms < now_ms:
            state.pop(key, None)
            expiries.discard(key)


def _set_expiry(state: State, expiries: Expiries, key: bytes, expire_ms: int, now_ms: int) -> None:
    """Give ``key`` (which exists) the expiry ``expire_ms``; one not after the entry's time
    deletes it at once (as Redis' checkAlreadyExpired: nothing could read it anyway)."""
    if now_ms and expire_ms <= now_ms:
        state.pop(key, None)
        expiries.discard(key)
    else:
        expiries.set(key, expire_ms)


def _apply_expiry(
    state: State, expiries: Expiries, op: Expire | ClearExpiry | GetEx | ExpireKeys, now_ms: int
) -> Outcome:
    if isinstance(op, ExpireKeys):
        deleted = 0
        for key in op.keys:
            time_ms = expiries.get_time(key)
            if time_ms is not None and time_ms < now_ms:
                state.pop(key, None)
                expiries.discard(key)
                deleted += 1
        return None, deleted > 0, deleted, None
    if not isinstance(op, ClearExpiry) and op.relative:
        raise InternalError(f"a relative expiry reached the apply: {op}")
    current = state.get(op.key)
    if isinstance(op, GetEx):
        if current is None:
            return None, False, None, None
        if current[0].__class__ is not bytes:
            return None, False, None, WRONGTYPE  # before the expiry's error, as Redis
        if op.error is not None:
            return None, False, None, op.error
        if op.expire_ms is not None:
            _set_expiry(state, expiries, op.key, op.expire_ms, now_ms)
        elif op.persist:
            expiries.discard(op.key)
        return current[0], True, None, None
    if current is None:
        return None, False, 0, None
    existing = expiries.get_time(op.key)
    if isinstance(op, ClearExpiry):
        expiries.discard(op.key)
        return None, existing is not None, int(existing is not None), None
    # Redis' order: NX, XX, GT (no expiry is infinite: never greater), LT.
    if (
        (op.nx and existing is not None)
        or (op.xx and existing is None)
        or (op.gt and (existing is None or op.expire_ms <= existing))
        or (op.lt and existing is not None and op.expire_ms >= existing)
    ):
        return None, False, 0, None
    _set_expiry(state, expiries, op.key, op.expire_ms, now_ms)
    return None, True, 1, None


def _incr_by(state: State, op: IncrBy, version: Version) -> Outcome:
    current = state.get(op.key)
    value = parse_int64(current[0]) if current is not None else 0  # type: ignore[arg-type]
    if value is None:
        return None, False, None, NOT_AN_INTEGER
    total = value + op.delta
    if not INT64_MIN <= total <= INT64_MAX:
        return None, False, None, OVERFLOW
    state[op.key] = (b"%d" % total, version)
    return None, True, total, None


def _incr_by_float(state: State, op: IncrByFloat, version: Version) -> Outcome:
    current = state.get(op.key)
    value = parse_long_double(current[0]) if current is not None else Fraction(0)  # type: ignore[arg-type]
    delta = parse_long_double(op.delta)
    if value is None or delta is None:
        return None, False, None, NOT_A_FLOAT
    if isinstance(value, float) or isinstance(delta, float):  # an infinity: inf, -inf, NaN
        return None, False, None, NOT_FINITE
    total = _round_extended(value + delta)
    if total is None:
        return None, False, None, NOT_FINITE
    text = format_long_double(total)
    state[op.key] = (text, version)
    return None, True, text, None


def _set_range(state: State, op: SetRange, version: Version) -> Outcome:
    if op.offset < 0:
        return None, False, None, OFFSET_OUT_OF_RANGE
    current = state.get(op.key)
    old = current[0] if current is not None else b""
    assert isinstance(old, bytes)  # a hash or set failed before
    if not op.value:  # nothing to write: the length as it is, no key made
        return None, False, len(old), None
    end = op.offset + len(op.value)
    if end > min(op.bytes_max, STRING_BYTES_MAX):
        return None, False, None, TOO_LONG
    padded = old.ljust(op.offset, b"\x00")
    new = padded[: op.offset] + op.value + padded[end:]
    state[op.key] = (new, version)
    return None, True, len(new), None


# --- integers as Redis reads them (string2ll) ---------------------------------------------------


def parse_int64(data: bytes) -> int | None:
    """``data`` as Redis reads a signed 64-bit integer: decimal digits, an optional minus,
    no plus, spaces or leading zeros ("0" alone); None if it is not one or out of range."""
    if data == b"0":
        return 0
    digits = data[1:] if data[:1] == b"-" else data
    if not digits or len(digits) > 19 or not digits.isdigit() or digits[:1] == b"0":
        return None
    value = int(data)
    return value if INT64_MIN <= value <= INT64_MAX else None


# --- long doubles as redis-server on x86-64 reads, adds and writes them -------------------------

_LONG_DOUBLE_CHARS_MAX = 5 * 1024  # MAX_LONG_DOUBLE_CHARS: longer input is not a float
_DECIMAL = re.compile(rb"([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")
_HEX = re.compile(rb"([+-]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([+-]?\d+))?")
_INFINITY = re.compile(rb"([+-]?)(?:inf|infinity)", re.IGNORECASE)
_SPACE = b" \t\n\v\f\r"
_SIGNIFICAND_BITS = 64
_EXPONENT_MIN = -16382  # the smallest normal number is 2**-16382
_EXPONENT_LIMIT = 16384  # every finite number is below 2**16384
_CHUNK_DIGITS = 1000  # int <-> decimal text a chunk at a time (Python caps one at 4300)


def parse_long_double(data: bytes) -> Fraction | float | None:
    """``data`` as redis-server's ``string2ld`` reads it: the exact value of ``strtold``'s
    result (a Fraction, or a float only for an infinity), or None when Redis refuses it
    (empty, too long, leading space, trailing junk, NaN, out of range)."""
    if not data or len(data) >= _LONG_DOUBLE_CHARS_MAX or data[0] in _SPACE:
        return None
    data = data.split(b"\x00", 1)[0]  # a C string: strtold stops at the first NUL
    if (match := _INFINITY.fullmatch(data)) is not None:
        return float("-inf") if match[1] == b"-" else float("inf")
    if (match := _DECIMAL.fullmatch(data)) is not None:
        whole, fraction = match[2], match[3] or b""
        if not whole and not fraction:
            return None
        significant = (whole + fraction).lstrip(b"0")
        exponent = _exponent(match[4]) - len(fraction)
        magnitude = len(significant) + exponent
        mantissa = _digits_to_int(significant)
        value = _scaled(mantissa, 10, exponent, magnitude=magnitude, high=4940, low=-4960)
    elif (match := _HEX.fullmatch(data)) is not None:
        whole, fraction = match[2], match[3] or b""
        if not whole and not fraction:
            return None
        mantissa = int(whole + fraction, 16)
        exponent = _exponent(match[4]) - 4 * len(fraction)
        magnitude = mantissa.bit_length() + exponent
        value = _scaled(mantissa, 2, exponent, magnitude=magnitude, high=16400, low=-16460)
    else:
        return None
    if value is None:
        return None
    rounded = _round_extended(value)
    if rounded is None or (rounded == 0 and value != 0):  # ERANGE: overflow or underflow
        return None
    return -rounded if match[1] == b"-" else rounded


def _exponent(text: bytes | None) -> int:
    if text is None:
        return 0
    sign = -1 if text[:1] == b"-" else 1
    digits = text.lstrip(b"+-").lstrip(b"0") or b"0"
    if len(digits) > 7:  # far out of range either way: clamp (the range check decides)
        return sign * 10**7
    return sign * int(digits)


def _scaled(
    mantissa: int, base: int, exponent: int, *, magnitude: int, high: int, low: int
) -> Fraction | None:
    """``mantissa * base**exponent`` exactly, or None when it is far outside the range
    (``magnitude``: about its number of digits in ``base``; ``strtold`` fails with ERANGE)."""
    if mantissa == 0:
        return Fraction(0)
    if not low <= magnitude <= high:
        return None
    if exponent >= 0:
        return Fraction(mantissa * base**exponent)
    return Fraction(mantissa, base**-exponent)


def _round_extended(value: Fraction) -> Fraction | None:
    """``value`` rounded to the nearest x87 extended number (ties to even, subnormals
    included), or None when that overflows."""
    if value == 0:
        return Fraction(0)
    magnitude = abs(value)
    numerator, denominator = magnitude.numerator, magnitude.denominator
    exponent = numerator.bit_length() - denominator.bit_length()
    if (numerator << max(-exponent, 0)) < (denominator << max(exponent, 0)):
        exponent -= 1  # now 2**exponent <= magnitude < 2**(exponent + 1)
    unit = max(exponent, _EXPONENT_MIN) - (_SIGNIFICAND_BITS - 1)  # the last place: 2**unit
    if unit >= 0:
        quotient, remainder = divmod(numerator, denominator << unit)
        half_test = 2 * remainder - (denominator << unit)
    else:
        quotient, remainder = divmod(numerator << -unit, denominator)
        half_test = 2 * remainder - denominator
    if half_test > 0 or (half_test == 0 and quotient & 1):
        quotient += 1
    if quotient.bit_length() + unit > _EXPONENT_LIMIT:  # quotient * 2**unit >= 2**16384
        return None
    rounded = Fraction(quotient << unit) if unit >= 0 else Fraction(quotient, 1 << -unit)
    return rounded if value > 0 else -rounded


def format_long_double(value: Fraction) -> bytes:
    """``value`` as redis-server writes an INCRBYFLOAT result: ``%.17Lf`` (rounded to
    nearest, ties to even), trailing zeros and a trailing point cut, ``-0`` as ``0``."""
    magnitude = abs(value)
    scaled, remainder = divmod(magnitude.numerator * 10**17, magnitude.denominator)
    half_test = 2 * remainder - magnitude.denominator
    if half_test > 0 or (half_test == 0 and scaled & 1):
        scaled += 1
    digits = _int_to_digits(scaled).rjust(18, b"0")
    whole, fraction = digits[:-17], digits[-17:].rstrip(b"0")
    text = whole + b"." + fraction if fraction else whole
    return b"-" + text if value < 0 and text != b"0" else text


def _digits_to_int(digits: bytes) -> int:
    value = 0
    for start in range(0, len(digits), _CHUNK_DIGITS):
        chunk = digits[start : start + _CHUNK_DIGITS]
        value = value * 10 ** len(chunk) + int(chunk)
    return value


def _int_to_digits(value: int) -> bytes:
    chunks: list[bytes] = []
    base = 10**_CHUNK_DIGITS
    while value >= base:
        value, chunk = divmod(value, base)
        chunks.append(b"%0*d" % (_CHUNK_DIGITS, chunk))
    chunks.append(b"%d" % value)
    return b"".join(reversed(chunks))
