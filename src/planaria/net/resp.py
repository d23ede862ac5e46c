"""RESP2, the Redis protocol: reply encoders and a bounded per-connection request reader.

Replies are plain ``bytes`` built by the encoders here (``+OK``, errors, integers, bulk
strings, nulls, arrays). Requests come in as Redis servers accept them: multibulk arrays of
bulk strings (what every client library sends) or inline lines (``PING\\r\\n`` from telnet
or ``redis-benchmark -t ping_inline``), split the way Redis' ``sdssplitargs`` does.

The reader is built for untrusted input, and parses requests itself rather than with
hiredis (whose reader sizes an array from its header before a byte of it arrives): every
``*N`` and ``$N`` is checked on the raw bytes before anything is built for it, an argument
list grows only as arguments arrive, one request may not exceed ``request_bytes_max`` bytes
on the wire nor ``args_max`` arguments, an inline line may not exceed ``inline_bytes_max``,
only bulk strings may appear inside a request (nothing nests), and a connection may not hold
more than ``buffered_bytes_max`` unread bytes. Anything else raises
:class:`RespProtocolError`, whose text Redis would send before closing the connection
(``-ERR Protocol error: ...``). Commands are handed out one at a time (:meth:`RequestReader.
next_command`), so a server can stop taking them when too many are pending and leave the
rest buffered (bounded by what it has read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from planaria.errors import UsageError

__all__ = [
    "NULL",
    "NULL_ARRAY",
    "OK",
    "PONG",
    "RequestReader",
    "RespError",
    "RespMap",
    "RespProtocolError",
    "RespSimple",
    "RespValue",
    "array",
    "bulk",
    "encode",
    "error",
    "integer",
    "simple",
    "split_inline",
]

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL = b"$-1\r\n"  # RESP2 null bulk string: a missing key
NULL_ARRAY = b"*-1\r\n"

# Redis' own defaults: PROTO_INLINE_MAX_SIZE and the multibulk length limit.
INLINE_BYTES_MAX = 64 * 1024
ARGS_MAX = 1024 * 1024
# A length line ("*123\r\n", "$123\r\n") longer than this cannot be valid.
_LENGTH_LINE_BYTES_MAX = 32
_COMPACT_AFTER_BYTES = 64 * 1024
# Room past the largest request for what one read brings (asyncio reads 256 KiB at most).
_READ_SLACK_BYTES = 1024 * 1024


class RespProtocolError(UsageError):
    """The client broke RESP; the connection must be answered with :attr:`reply` and closed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Protocol error: {detail}")
        self.detail = detail

    @property
    def reply(self) -> bytes:
        return error(f"ERR Protocol error: {self.detail}")


# --- replies ----------------------------------------------------------------------------------


class RespSimple(str):
    """A string :func:`encode` sends as a simple string (``+...``) instead of a bulk string."""

    __slots__ = ()


class RespError(str):
    """A string :func:`encode` sends as an error (``-CODE message``)."""

    __slots__ = ()


class RespMap(tuple):  # type: ignore[type-arg]
    """Key, value pairs: a RESP3 map (``%``) on a RESP3 connection, else a flat array."""

    __slots__ = ()


RespValue: TypeAlias = "bytes | str | int | Sequence[RespValue] | RespMap | None"


def _line(text: str) -> str:
    # A status or error line cannot hold CR or LF: they would end the line early.
    if "\r" in text or "\n" in text:
        return text.replace("\r", " ").replace("\n", " ")
    return text


def simple(text: str) -> bytes:
    """``+text``: a simple string."""
    return b"+" + _line(text).encode() + b"\r\n"


def error(message: str) -> bytes:
    """``-message``; by Redis convention the message starts with a code: ``ERR ...``."""
    return b"-" + _line(message).encode() + b"\r\n"


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def bulk(data: bytes | None) -> bytes:
    """A bulk string, or the null bulk string for None."""
    if data is None:
        return NULL
    return b"$%d\r\n%b\r\n" % (len(data), data)


def array(items: Sequence[bytes] | None) -> bytes:
    """An array of already encoded ``items``; None is the null array."""
    if items is None:
        return NULL_ARRAY
    return b"*%d\r\n%b" % (len(items), b"".join(items))


def encode(value: RespValue, protocol: int = 2) -> bytes:
    """Encode a nested value: bytes and str -> bulk (RespSimple/RespError -> ``+``/``-``),
    int -> integer (bool too), None -> null, list/tuple -> array, RespMap -> map (RESP3) or
    flat array (RESP2). Everything else is RESP2 whatever ``protocol`` (RESP3 clients read
    RESP2 replies, e.g. the null bulk string)."""
    if isinstance(value, bytes):
        return bulk(value)
    if isinstance(value, RespSimple):
        return simple(value)
    if isinstance(value, RespError):
        return error(value)
    if isinstance(value, str):
        return bulk(value.encode())
    if isinstance(value, int):
        return integer(int(value))
    if value is None:
        return NULL
    if isinstance(value, RespMap):
        if protocol == 3:
            return b"%%%d\r\n%b" % (len(value) // 2, b"".join(encode(v, 3) for v in value))
        return array([encode(item, protocol) for item in value])
    if isinstance(value, (list, tuple)):
        return array([encode(item, protocol) for item in value])
    raise UsageError(f"cannot encode {type(value).__name__} as RESP")


# --- inline commands --------------------------------------------------------------------------

_SPACE = frozenset(b" \t\n\r\v\f")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command line into arguments like Redis' ``sdssplitargs``: whitespace
    separates, ``"..."`` takes C escapes (``\\n``, ``\\xHH``), ``'...'`` takes ``\\'``.
    Raises RespProtocolError for unbalanced quotes."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    size = len(line)
    i = 0
    while True:
        while i < size and line[i] in _SPACE:
            i += 1
        if i >= size:
            return args
        current = bytearray()
        quote = 0  # 0, or the opening quote character
        while True:
            if i >= size:
                if quote:
                    raise RespProtocolError("unbalanced quotes in request")
                break
            char = line[i]
            if quote == ord('"'):
                if (
                    char == ord("\\")
                    and i + 3 < size
                    and line[i + 1] == ord("x")
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif char == ord("\\") and i + 1 < size:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif char == ord('"'):
                    # A closing quote must be followed by a space or the end.
                    if i + 1 < size and line[i + 1] not in _SPACE:
                        raise RespProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    current.append(char)
            elif quote == ord("'"):
                if char == ord("\\") and i + 1 < size and line[i + 1] == ord("'"):
                    i += 1
                    current.append(ord("'"))
                elif char == ord("'"):
                    if i + 1 < size and line[i + 1] not in _SPACE:
                        raise RespProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    current.append(char)
            elif char in _SPACE:
                break
            elif char in (ord('"'), ord("'")):
                quote = char
            else:
                current.append(char)
            i += 1
        args.append(bytes(current))


# --- requests ---------------------------------------------------------------------------------


class RequestReader:
    """Turns the bytes of one client connection into commands (lists of bytes), in order.

    ``feed(data)`` whatever arrived; call ``next_command()`` until it returns None (needs more
    data). It raises RespProtocolError on malformed input; the reader is then unusable.

    Every length on the wire (``*N``, ``$N``) is checked against the limits before anything
    is built for it, and a request's argument list grows one received argument at a time:
    what a connection holds is bounded by what it sent, whatever a header announces. (A
    parser that sizes its array from ``*N``, as hiredis does, allocates 4 GB for
    ``*546681266`` and gives it back only by touching every page of it.)
    """

    def __init__(
        self,
        *,
        request_bytes_max: int,
        args_max: int = ARGS_MAX,
        inline_bytes_max: int = INLINE_BYTES_MAX,
        buffered_bytes_max: int | None = None,
    ) -> None:
        if request_bytes_max < 16 or args_max < 1 or inline_bytes_max < 16:
            raise UsageError("request_bytes_max, inline_bytes_max >= 16 and args_max >= 1")
        self.request_bytes_max = request_bytes_max
        self.args_max = args_max
        self.inline_bytes_max = inline_bytes_max
        # A server stops reading while requests wait (see RespServer), so the buffer holds at
        # most one partial request plus what one read brought; past this something is wrong.
        self.buffered_bytes_max = buffered_bytes_max or (
            max(request_bytes_max, inline_bytes_max) + _READ_SLACK_BYTES
        )
        if self.buffered_bytes_max < max(request_bytes_max, inline_bytes_max):
            raise UsageError("buffered_bytes_max must hold the largest request")
        # The unparsed bytes, from ``_offset``: the bytes of the last read as they came when
        # nothing was left before them (slices of bytes are bytes: one copy less), else a
        # bytearray they are appended to (no quadratic copying when a request trickles in).
        self._buf: bytes | bytearray = b""
        self._offset = 0
        # The multibulk request at ``_offset`` while it is incomplete: the arguments read so
        # far, how many are still to come (-1: between requests) and where the next begins.
        self._args: list[bytes] = []
        self._args_left = -1
        self._scan_pos = 0
        self._failed: RespProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as commands."""
        return len(self._buf) - self._offset

    def feed(self, data: bytes) -> None:
        """Take what arrived. Past ``buffered_bytes_max`` the data is dropped and the next
        :meth:`next_command` raises."""
        if self._failed is not None:
            raise self._failed
        left = len(self._buf) - self._offset
        if left + len(data) > self.buffered_bytes_max:
            self._fail(RespProtocolError(f"more than {self.buffered_bytes_max} unread bytes"))
            return
        if not left:
            self._buf = data
            self._offset = 0
            return
        buf = self._buf
        if not isinstance(buf, bytearray) or self._offset > _COMPACT_AFTER_BYTES:
            buf = bytearray(memoryview(buf)[self._offset :])
            self._scan_pos -= self._offset
            self._offset = 0
        buf += data
        self._buf = buf

    def next_command(self) -> list[bytes] | None:
        """The next complete command, or None when more bytes are needed. Empty commands
        (blank inline lines, ``*0``) are skipped, as Redis does."""
        if self._failed is not None:
            raise self._failed
        try:
            while self._offset < len(self._buf):
                if self._args_left < 0 and self._buf[self._offset] != 0x2A:  # not "*": inline
                    command = self._next_inline()
                elif self._read_multibulk():
                    command = self._args
                    self._args = []
                    self._args_left = -1
                    self._offset = self._scan_pos
                else:
                    return None
                if command is None:
                    return None
                if command:  # else a blank line, "*0" or "*-1": nothing to do
                    return command
            return None
        except RespProtocolError as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: RespProtocolError) -> None:
        self._failed = exc
        self._buf = b""
        self._offset = 0
        self._args = []

    def _read_multibulk(self) -> bool:
        """Read the multibulk request at ``_offset`` as far as it arrived into ``_args``:
        True when it is complete (maybe empty), False when more bytes are needed. Every ``*N``
        and ``$N`` is checked before the elements or bytes it announces are waited for."""
        buf = self._buf
        size = len(buf)
        request_bytes_max = self.request_bytes_max
        left = self._args_left
        pos = self._scan_pos
        if left < 0:
            pos = self._offset
            end = buf.find(b"\r\n", pos + 1, pos + _LENGTH_LINE_BYTES_MAX)
            if end < 0:
                if size - pos >= _LENGTH_LINE_BYTES_MAX:
                    raise RespProtocolError("invalid multibulk length")
                return False
            digits = bytes(buf[pos + 1 : end])
            if digits == b"-1":
                left = 0
            else:
                left = _LENGTHS.get(digits, -1)
                if left < 0:
                    left = _parse_length(digits, "multibulk")
            if left > self.args_max:
                raise RespProtocolError("invalid multibulk length")
            pos = end + 2
        args = self._args  # grows as arguments arrive, whatever the header announced
        while left > 0 and pos < size:
            if buf[pos] != 0x24:  # "$": a request holds bulk strings only, so nothing nests
                raise RespProtocolError(f"expected '$', got '{_printable(buf[pos])}'")
            end = buf.find(b"\r\n", pos + 1, pos + _LENGTH_LINE_BYTES_MAX)
            if end < 0:
                if size - pos >= _LENGTH_LINE_BYTES_MAX:
                    raise RespProtocolError("invalid bulk length")
                break
            digits = bytes(buf[pos + 1 : end])
            length = _LENGTHS.get(digits, -1)
            if length < 0:
                length = _parse_length(digits, "bulk")
                if length > request_bytes_max:
                    raise RespProtocolError("invalid bulk length")
            data_end = end + 2 + length
            if data_end + 2 - self._offset > request_bytes_max:
                raise RespProtocolError(f"request longer than {request_bytes_max} bytes")
            if data_end + 2 > size:
                break
            args.append(bytes(buf[end + 2 : data_end]))
            pos = data_end + 2  # the CRLF after the data is skipped unread, as Redis does
            left -= 1
        self._args_left = left
        self._scan_pos = pos
        if left == 0:
            return True
        if size - self._offset > request_bytes_max:
            raise RespProtocolError(f"request longer than {request_bytes_max} bytes")
        return False

    def _next_inline(self) -> list[bytes] | None:
        buf = self._buf
        end = buf.find(b"\n", self._offset)
        if end < 0:
            if len(buf) - self._offset > self.inline_bytes_max:
                raise RespProtocolError("too big inline request")
            return None
        if end - self._offset > self.inline_bytes_max:
            raise RespProtocolError("too big inline request")
        line = bytes(buf[self._offset : end])
        self._offset = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        return split_inline(line)


# The lengths most requests use, by their canonical text: one dict lookup per header instead
# of a check and a conversion (a non-canonical text like "03" is not a key).
_LENGTHS = {b"%d" % n: n for n in range(1024)}


def _parse_length(digits: bytes, what: str) -> int:
    """A ``*N`` / ``$N`` length not in ``_LENGTHS``: a canonical non-negative integer."""
    if digits.isdigit() and digits[0] != 0x30:
        return int(digits)
    raise RespProtocolError(f"invalid {what} length")


def _printable(byte: int) -> str:
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"
