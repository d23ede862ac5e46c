from __future__ import annotations

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.errors import UsageError
from planaria.net import resp
from planaria.net.resp import RequestReader, RespProtocolError, split_inline


def decode(data: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(data)
    value = reader.gets()
    assert reader.gets() is False
    return value


def test_encoders() -> None:
    assert resp.simple("OK") == b"+OK\r\n"
    assert resp.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert resp.integer(-3) == b":-3\r\n"
    assert resp.bulk(b"") == b"$0\r\n\r\n"
    assert resp.bulk(None) == b"$-1\r\n"
    assert resp.array(None) == b"*-1\r\n"
    nested = [b"a", "b", 1, None, [2, resp.RespSimple("x")], resp.RespMap(["k", 1])]
    assert decode(resp.encode(nested)) == [b"a", b"b", 1, None, [2, b"x"], [b"k", 1]]
    assert decode(resp.encode(resp.RespMap(["k", 1]), 3)) == {b"k": 1}
    with pytest.raises(UsageError):
        resp.encode(object())  # type: ignore[arg-type]


def command_bytes(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def reader(limit: int = 1 << 20) -> RequestReader:
    return RequestReader(request_bytes_max=limit)


def drain(r: RequestReader) -> list[list[bytes]]:
    out = []
    while (command := r.next_command()) is not None:
        out.append(command)
    return out


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[list[bytes]], bytes]:
    commands = draw(st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), max_size=8))
    wire = b""
    for args in commands:
        # Inline when it round-trips through split (no quotes, spaces or newlines).
        inline = all(a and not set(a) & set(b" \t\r\n\v\f\"'") for a in args) and not args[
            0
        ].startswith(b"*")
        wire += b" ".join(args) + b"\r\n" if inline and draw(st.booleans()) else command_bytes(args)
    return commands, wire


@settings(max_examples=150, deadline=None)
@given(requests(), st.lists(st.integers(min_value=1, max_value=64), max_size=20))
def test_any_split_of_a_stream_yields_the_same_commands(
    stream: tuple[list[list[bytes]], bytes], cuts: list[int]
) -> None:
    commands, wire = stream
    r = reader()
    got: list[list[bytes]] = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        r.feed(wire[pos : pos + cut])
        pos += cut
        got += drain(r)
    r.feed(wire[pos:])
    got += drain(r)
    assert got == commands
    assert r.buffered_bytes == 0


def test_empty_commands_are_skipped() -> None:
    r = reader()
    r.feed(b"*0\r\n\r\n*-1\r\n   \r\nPING\r\n")
    assert drain(r) == [[b"PING"]]


def test_commands_are_taken_one_at_a_time() -> None:
    r = reader()
    r.feed(command_bytes([b"GET", b"a"]) * 3)
    assert r.next_command() == [b"GET", b"a"]
    assert r.buffered_bytes == 2 * len(command_bytes([b"GET", b"a"]))
    assert drain(r) == [[b"GET", b"a"]] * 2


@pytest.mark.parametrize(
    ("wire", "detail"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n$03\r\nabc\r\n", "invalid bulk length"),
        (b"*1\r\n+OK\r\nPING\r\n", "expected '$', got '+'"),
        (b"*1\r\n*0\r\n", "expected '$', got '*'"),
        (b"*2\r\n$1\r\na\r\n:", "expected '$', got ':'"),
        (b"*2000000\r\n", "invalid multibulk length"),
        (b"*1\r\n$2000000\r\n", "invalid bulk length"),
        (b"*1\r\n$" + b"9" * 40, "invalid bulk length"),
        (b"x" * 70_000, "too big inline request"),
        (b"SET 'a\r\n", "unbalanced quotes in request"),
        (b"*2\r\n" + command_bytes([b"x" * 600_000])[4:] + b"$600000\r\n" + b"x" * 500_000,
         "request longer than 1048576 bytes"),
    ],
)  # fmt: skip
def test_malformed(wire: bytes, detail: str) -> None:
    r = reader()
    r.feed(wire)
    with pytest.raises(RespProtocolError) as caught:
        drain(r)
    assert caught.value.reply == f"-ERR Protocol error: {detail}\r\n".encode()
    # A failed reader stays failed.
    with pytest.raises(RespProtocolError):
        r.next_command()


@pytest.mark.parametrize(
    ("line", "args"),
    [
        (b"set a b", [b"set", b"a", b"b"]),
        (b'  set "a b"  c ', [b"set", b"a b", b"c"]),
        (b'set "\\x41\\n\\"" x', [b"set", b'A\n"', b"x"]),
        (b"set 'it\\'s' ''", [b"set", b"it's", b""]),
        (b"", []),
    ],
)
def test_split_inline(line: bytes, args: list[bytes]) -> None:
    assert split_inline(line) == args


@pytest.mark.parametrize("line", [b'set "a', b"set 'a", b'set "a"b', b"set 'a'b"])
def test_split_inline_unbalanced(line: bytes) -> None:
    with pytest.raises(RespProtocolError, match="unbalanced quotes"):
        split_inline(line)


def test_reader_limits_validated() -> None:
    with pytest.raises(UsageError):
        RequestReader(request_bytes_max=1)
