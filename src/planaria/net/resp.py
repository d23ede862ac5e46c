"""RESP2, the Redis protocol: reply encoders and a bounded per-connection request reader.

Replies are plain ``bytes`` built by the encoders here (``+OK``, errors, integers, bulk
strings, nulls, arrays). Requests come in as Redis servers accept them: multibulk arrays of
bulk strings (what every client library sends), parsed in C by ``hiredis.Reader``, or inline
lines (``PING\\r\\n`` from telnet or ``redis-benchmark -t ping_inline``), which hiredis does
not parse and this module splits the way Redis' ``sdssplitargs`` does.

The reader is built for untrusted input: one request may not exceed ``request_bytes_max``
bytes on the wire nor ``args_max`` arguments, an inline line may not exceed
``inline_bytes_max``, and only bulk strings may appear inside a request. Anything else
raises :class:`RespProtocolError`, whose text Redis would send before closing the connection
(``-ERR Protocol error: ...``). Commands are handed out one at a time (:meth:`RequestReader.
next_command`), so a server can stop taking them when too many are pending and leave the
rest buffered (bounded by what it has read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import hiredis

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
    if isinstance(value, list | tuple):
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

_HIREDIS_ERRORS = {
    "Bad multi-bulk length": "invalid multibulk length",
    "Multi-bulk length out of range": "invalid multibulk length",
    "Bad bulk string length": "invalid bulk length",
    "Bulk string length out of range": "invalid bulk length",
}


class RequestReader:
    """Turns the bytes of one client connection into commands (lists of bytes), in order.

    ``feed(data)`` whatever arrived; call ``next_command()`` until it returns None (needs more
    data). It raises RespProtocolError on malformed input; the reader is then unusable.
    """

    def __init__(
        self,
        *,
        request_bytes_max: int,
        args_max: int = ARGS_MAX,
        inline_bytes_max: int = INLINE_BYTES_MAX,
    ) -> None:
        if request_bytes_max < 16 or args_max < 1 or inline_bytes_max < 16:
            raise UsageError("request_bytes_max, inline_bytes_max >= 16 and args_max >= 1")
        self.request_bytes_max = request_bytes_max
        self.args_max = args_max
        self.inline_bytes_max = inline_bytes_max
        # Our copy of the unparsed bytes, from ``_offset``: inline commands are split here, and
        # a partial multibulk is checked against the limits here before hiredis builds it.
        self._buf = bytearray()
        self._offset = 0
        self._hiredis = hiredis.Reader()
        self._synced = True  # hiredis holds exactly _buf[_offset:], nothing more or less
        # Progress of the limit check through the partial command at _offset (so a request
        # arriving in many pieces is scanned once, not once per piece).
        self._scan_pos = 0
        self._scan_args_left = -1  # -1: the multibulk header is not read yet
        self._failed: RespProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as commands."""
        return len(self._buf) - self._offset

    def feed(self, data: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        if self._synced:
            self._hiredis.feed(data)

    def next_command(self) -> list[bytes] | None:
        """The next complete command, or None when more bytes are needed. Empty commands
        (blank inline lines, ``*0``) are skipped, as Redis does."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next_command()
        except RespProtocolError as exc:
            self._failed = exc
            raise

    def _next_command(self) -> list[bytes] | None:
        buf = self._buf
        while self._offset < len(buf):
            if buf[self._offset] != 0x2A:  # not "*": an inline command
                command = self._next_inline()
                if command is None:
                    return None
                if command:
                    return command
                continue
            if not self._synced:
                self._hiredis = hiredis.Reader()
                self._hiredis.feed(bytes(buf[self._offset :]))
                self._synced = True
            try:
                command = self._hiredis.gets()
            except hiredis.ProtocolError as exc:
                raise RespProtocolError(_HIREDIS_ERRORS.get(str(exc), str(exc))) from None
            if command is False:
                self._check_partial()
                return None
            self._scan_args_left = -1
            for arg in command or ():
                if type(arg) is not bytes:
                    raise RespProtocolError(_not_bulk(arg))
            if self._hiredis.has_data():
                # More requests follow: find where this one ended, to look at the next one.
                self._offset = self._command_end(self._offset)
                if self._offset > _COMPACT_AFTER_BYTES:
                    del buf[: self._offset]
                    self._offset = 0
            else:
                buf.clear()
                self._offset = 0
            if not command:  # "*0" or "*-1": nothing to do
                continue
            args: list[bytes] = command
            return args
        if self._offset:
            buf.clear()
            self._offset = 0
        return None

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
        self._synced = False  # hiredis was fed this line: it must start afresh after it
        if line.endswith(b"\r"):
            line = line[:-1]
        return split_inline(line)

    def _command_end(self, start: int) -> int:
        """Where the complete multibulk at ``start`` ends, walking its headers (this also
        rejects elements hiredis accepts but Redis does not, like ``+OK``)."""
        buf = self._buf
        end = buf.index(b"\r\n", start)
        count = int(buf[start + 1 : end])
        pos = end + 2
        for _ in range(count):
            if buf[pos] != 0x24:  # "$"
                raise RespProtocolError(f"expected '$', got '{chr(buf[pos])}'")
            end = buf.index(b"\r\n", pos)
            pos = end + 2 + int(buf[pos + 1 : end]) + 2
        return pos

    def _check_partial(self) -> None:
        """Limits on the incomplete multibulk at ``_offset``, checked on the raw bytes before
        hiredis has all of it: its header, every bulk header so far, and its total size."""
        buf = self._buf
        start = self._offset
        if len(buf) - start > self.request_bytes_max:
            raise RespProtocolError(f"request longer than {self.request_bytes_max} bytes")
        if self._scan_args_left < 0:
            count = self._length_at(start, "multibulk")
            if count is None:
                return
            if count > self.args_max:
                raise RespProtocolError("invalid multibulk length")
            self._scan_args_left = count
            self._scan_pos = buf.index(b"\r\n", start) + 2
        while self._scan_args_left > 0 and self._scan_pos < len(buf):
            kind = buf[self._scan_pos]
            if kind != 0x24:  # "$"
                raise RespProtocolError(f"expected '$', got '{chr(kind)}'")
            length = self._length_at(self._scan_pos, "bulk")
            if length is None:
                return
            if length > self.request_bytes_max:
                raise RespProtocolError("invalid bulk length")
            self._scan_pos = buf.index(b"\r\n", self._scan_pos) + 2 + length + 2
            self._scan_args_left -= 1

    def _length_at(self, pos: int, what: str) -> int | None:
        """The length on the ``*N`` / ``$N`` line at ``pos``; None if the line is incomplete.
        hiredis has already rejected a complete line that is not a canonical integer.
        (A lone request may hold other simple RESP types hiredis reads as bytes, e.g. ``+OK``:
        taken as arguments, harmlessly; between pipelined requests they are rejected.)"""
        end = self._buf.find(b"\r\n", pos, pos + _LENGTH_LINE_BYTES_MAX)
        if end < 0:
            if len(self._buf) - pos >= _LENGTH_LINE_BYTES_MAX:
                raise RespProtocolError(f"invalid {what} length")
            return None
        try:
            return int(self._buf[pos + 1 : end])
        except ValueError:
            raise RespProtocolError(f"invalid {what} length") from None


def _not_bulk(value: object) -> str:
    """Redis' words for a request element that is not a bulk string (hiredis parsed it as
    another RESP type: the type byte is known from the Python type)."""
    if value is None:
        return "invalid bulk length"
    kinds = ((bool, "#"), (int, ":"), (float, ","), (list, "*"), (dict, "%"), (set, "~"))
    for kind, byte in kinds:
        if isinstance(value, kind):
            return f"expected '$', got '{byte}'"
    return f"expected '$', got '{'-' if isinstance(value, Exception) else '+'}'"
