from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable

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
    nested: list[resp.RespValue] = [
        b"a",
        "b",
        1,
        None,
        [2, resp.RespSimple("x")],
        resp.RespMap(["k", 1]),
    ]
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


# --- hostile headers: nothing is built for what was not sent ---------------------------------

# Issue #16: this header, on ~55 connections, wedged a node (hiredis sized a list from it).
WEDGE = b"*546681266\r\n$1\r\nx\r\n"


def peak_bytes_while(action: Callable[[], object]) -> int:
    """The peak of Python allocations (tracemalloc sees hiredis' lists too) above the start."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("wire", "detail"),
    [
        (WEDGE, "invalid multibulk length"),
        (b"*1\r\n*546681266\r\n", "expected '$', got '*'"),
        (b"*2\r\n$1\r\nx\r\n%546681266\r\n", "expected '$', got '%'"),
        (b"*1\r\n>546681266\r\n$1\r\nx\r\n", "expected '$', got '>'"),
        (b"*1\r\n$4294967295\r\n", "invalid bulk length"),
    ],
)
def test_a_hostile_header_is_refused_before_anything_is_allocated(wire: bytes, detail: str) -> None:
    refused: list[str] = []

    def run() -> None:
        r = reader()
        r.feed(wire)
        try:
            drain(r)
        except RespProtocolError as exc:
            refused.append(exc.detail)

    assert peak_bytes_while(run) < 64 * 1024
    assert refused == [detail]


def test_an_announced_count_within_the_limit_costs_only_what_arrived() -> None:
    # A million arguments is a valid count (Redis' own limit), but only one has come: the
    # reader holds that one, not a list sized for a million (8 MB).
    r = reader()
    r.feed(b"*1000000\r\n$1\r\nx\r\n")
    assert peak_bytes_while(lambda: drain(r)) < 64 * 1024
    assert r.buffered_bytes == len(b"*1000000\r\n$1\r\nx\r\n")


@pytest.mark.parametrize("args_max", [1, 10])
def test_args_max_at_the_limit(args_max: int) -> None:
    r = RequestReader(request_bytes_max=1 << 20, args_max=args_max)
    r.feed(command_bytes([b"x"] * args_max))
    assert drain(r) == [[b"x"] * args_max]
    r.feed(b"*%d\r\n" % (args_max + 1))
    with pytest.raises(RespProtocolError, match="invalid multibulk length"):
        drain(r)


def test_request_bytes_max_at_the_limit() -> None:
    limit = 1000
    prefix = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$972\r\n"
    at_limit = prefix + b"v" * 972 + b"\r\n"
    assert len(at_limit) == limit
    r = reader(limit)
    r.feed(at_limit)
    assert drain(r) == [[b"SET", b"k", b"v" * 972]]
    # One byte more is refused as soon as the last header announces it, before the data.
    r.feed(prefix.replace(b"$972", b"$973"))
    with pytest.raises(RespProtocolError, match=f"request longer than {limit} bytes"):
        drain(r)


def test_inline_bytes_max_at_the_limit() -> None:
    r = RequestReader(request_bytes_max=1 << 20, inline_bytes_max=100)
    r.feed(b"ECHO " + b"x" * 95 + b"\n")
    assert drain(r) == [[b"ECHO", b"x" * 95]]
    r.feed(b"ECHO " + b"x" * 96 + b"\n")
    with pytest.raises(RespProtocolError, match="too big inline request"):
        drain(r)


def test_buffered_bytes_max_at_the_limit() -> None:
    r = RequestReader(request_bytes_max=1000, inline_bytes_max=100, buffered_bytes_max=3000)
    ping = command_bytes([b"PING"])
    r.feed(ping * (3000 // len(ping)))  # at most the limit: kept, though nobody takes them
    r.feed(b"x" * (3000 - r.buffered_bytes))
    assert r.buffered_bytes == 3000
    r.feed(b"x")  # one byte more: dropped, and the connection is done
    assert r.buffered_bytes == 0
    with pytest.raises(RespProtocolError, match="more than 3000 unread bytes"):
        r.next_command()
    with pytest.raises(UsageError):
        RequestReader(request_bytes_max=1000, inline_bytes_max=100, buffered_bytes_max=999)


def test_a_request_trickling_in_is_scanned_once() -> None:
    # Byte by byte: the arguments read so far are kept, and a later byte does not rescan them.
    wire = command_bytes([b"SET", b"key", b"v" * 2000])
    r = reader()
    for i in range(len(wire) - 1):
        r.feed(wire[i : i + 1])
        assert r.next_command() is None
    assert r._args == [b"SET", b"key"]
    r.feed(wire[-1:])
    assert r.next_command() == [b"SET", b"key", b"v" * 2000]
    assert r.buffered_bytes == 0


HOSTILE_HEADERS = [b"*546681266\r\n", b"*1000000\r\n", b"$546681266\r\n", b"*1\r\n*99999\r\n",
                   b"%99999\r\n", b"~99999\r\n", b">99999\r\n", b"*-5\r\n", b"$-1\r\n"]  # fmt: skip


@st.composite
def hostile_streams(draw: st.DrawFn) -> list[bytes]:
    """Reads a hostile client might send: random bytes, hostile headers and valid requests
    mixed, cut anywhere."""
    parts = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=64),
                st.sampled_from(HOSTILE_HEADERS),
                st.lists(st.binary(max_size=20), min_size=1, max_size=4).map(command_bytes),
                st.integers(min_value=-3, max_value=1 << 40).map(lambda n: b"*%d\r\n" % n),
                st.integers(min_value=-3, max_value=1 << 40).map(lambda n: b"$%d\r\n" % n),
            ),
            max_size=12,
        )
    )
    wire = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(wire)), max_size=6)))
    return [wire[a:b] for a, b in itertools.pairwise([0, *cuts, len(wire)])]


@settings(max_examples=300, deadline=None)
@given(hostile_streams())
def test_random_bytes_cost_at_most_a_multiple_of_what_was_sent(reads: list[bytes]) -> None:
    r = RequestReader(request_bytes_max=1 << 20, args_max=1 << 20)

    def run() -> None:
        for data in reads:
            try:
                r.feed(data)
                drain(r)
            except RespProtocolError:
                return  # the only error allowed; the server closes the connection

    sent = sum(map(len, reads))
    # Arguments cost their bytes plus an object header and a list slot each; the reader's own
    # state a little more. hiredis' answer to "*546681266" was 4.4 GB.
    assert peak_bytes_while(run) <= 64 * sent + 16 * 1024
