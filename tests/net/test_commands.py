from __future__ import annotations

from typing import cast

import hiredis
import pytest
from redis._parsers.helpers import parse_command

from planaria.core.containers import WRONGTYPE
from planaria.core.messages import (
    AppendTo,
    ClearExpiry,
    ClientReply,
    Delete,
    ErrorCode,
    Expire,
    Get,
    GetEx,
    GetExpiry,
    HashDelete,
    HashIncrBy,
    HashIncrByFloat,
    HashSet,
    IncrBy,
    IncrByFloat,
    MSet,
    Rename,
    Set,
    SetAdd,
    SetPop,
    SetRange,
    SetRemove,
    SetStore,
    ValueRead,
)
from planaria.core.slots import keyslot
from planaria.net import resp
from planaria.net.commands import (
    COMMANDS,
    ClientOp,
    ClusterKeyslot,
    ClusterSlots,
    CommandError,
    CommandQuery,
    ConfigGet,
    ConnectionState,
    DataCommand,
    DbSize,
    Hello,
    Keys,
    Limits,
    RandomKey,
    ReadOnly,
    Scan,
    answer_local,
    error_reply,
    getrange,
    parse_request,
    render_reply,
)
from planaria.net.resp import ARGS_MAX, RequestReader, RespProtocolError

LIMITS = Limits(key_bytes_max=16, value_bytes_max=32)


def parse(*args: bytes | str) -> object:
    return parse_request([a.encode() if isinstance(a, str) else a for a in args], LIMITS)


def refused(*args: bytes | str) -> bytes:
    with pytest.raises(CommandError) as caught:
        parse(*args)
    return caught.value.reply


def decode(data: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(data)
    return reader.gets()


def test_expiry_commands_parse_into_ops_with_their_request_ids() -> None:
    slot = keyslot(b"k")
    assert parse("set", "k", "v", "ex", "10", "REQID", "c", "1") == ClientOp(
        DataCommand.SET,
        (Set(b"k", b"v", expire_ms=10_000, relative=True),),
        slot,
        request_id=("c", 1),
    )
    assert parse("set", "k", "v", "ex", "1", "ex", "2") == ClientOp(
        DataCommand.SET, (Set(b"k", b"v", expire_ms=2000, relative=True),), slot
    )
    assert parse("setex", "k", "10", "v", "REQID", "c", "2") == ClientOp(
        DataCommand.SETEX,
        (Set(b"k", b"v", expire_ms=10_000, relative=True),),
        slot,
        request_id=("c", 2),
    )
    assert parse("expire", "k", "10", "nx", "REQID", "c", "3") == ClientOp(
        DataCommand.EXPIRE,
        (Expire(b"k", 10_000, relative=True, nx=True),),
        slot,
        request_id=("c", 3),
    )
    assert parse("pexpireat", "k", "-5", "XX", "lt") == ClientOp(
        DataCommand.PEXPIREAT, (Expire(b"k", -5, xx=True, lt=True),), slot
    )
    assert parse("persist", "k", "REQID", "c", "4") == ClientOp(
        DataCommand.PERSIST, (ClearExpiry(b"k"),), slot, request_id=("c", 4)
    )
    assert parse("getex", "k", "exat", "7", "REQID", "c", "5") == ClientOp(
        DataCommand.GETEX, (GetEx(b"k", 7000),), slot, request_id=("c", 5)
    )
    assert parse("getex", "k", "px", "-1") == ClientOp(
        DataCommand.GETEX,
        (GetEx(b"k", error="ERR invalid expire time in 'getex' command"),),
        slot,
    )
    assert parse("pttl", "k") == ClientOp(DataCommand.PTTL, (GetExpiry(b"k", relative=True),), slot)
    assert parse("expiretime", "k") == ClientOp(DataCommand.EXPIRETIME, (GetExpiry(b"k"),), slot)
    ttl = parse("ttl", "k")
    assert isinstance(ttl, ClientOp) and not ttl.is_write


def test_data_commands() -> None:
    assert parse("get", "k") == ClientOp(DataCommand.GET, (Get(b"k"),), keyslot(b"k"))
    assert parse("SET", "k", "v", "nx", "get") == ClientOp(
        DataCommand.SET, (Set(b"k", b"v", nx=True, get=True),), keyslot(b"k"), return_old=True
    )
    conditional = parse("set", "k", "v", "IFEQ", "old", "KEEPTTL")
    assert isinstance(conditional, ClientOp)
    assert conditional.ops == (Set(b"k", b"v", if_value=b"old", keep_ttl=True),)
    both = parse("del", "{u}a", "{u}b")
    assert isinstance(both, ClientOp)
    assert both.ops == (Delete(b"{u}a"), Delete(b"{u}b"))
    assert both.keys == (b"{u}a", b"{u}b")
    assert both.is_write
    exists = parse("exists", "a", "a")
    assert isinstance(exists, ClientOp)
    assert exists.ops == (Get(b"a"), Get(b"a"))
    assert not exists.is_write


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        (("get",), b"-ERR wrong number of arguments for 'get' command\r\n"),
        (("get", "a", "b"), b"-ERR wrong number of arguments for 'get' command\r\n"),
        (("set", "k"), b"-ERR wrong number of arguments for 'set' command\r\n"),
        (("cluster", "slots", "x"),
         b"-ERR wrong number of arguments for 'cluster|slots' command\r\n"),
        (("cluster", "bogus"), b"-ERR unknown subcommand 'bogus'. Try CLUSTER HELP.\r\n"),
        (("FOO", "a", "b"), b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"),
        (("set", "k", "v", "nx", "xx"), b"-ERR syntax error\r\n"),
        (("set", "k", "v", "ifeq"), b"-ERR syntax error\r\n"),
        (("set", "k", "v", "xx", "ifeq", "a"), b"-ERR syntax error\r\n"),
        (("set", "k", "v", "bogus"), b"-ERR syntax error\r\n"),
        (("set", "k", "v", "px", "0"), b"-ERR invalid expire time in 'set' command\r\n"),
        (("set", "k", "v", "ex", "x"), b"-ERR value is not an integer or out of range\r\n"),
        (("set", "k", "v", "ex", "1", "px", "1"), b"-ERR syntax error\r\n"),
        (("set", "k", "v", "keepttl", "exat", "1"), b"-ERR syntax error\r\n"),
        (("set", "k", "v", "ex"), b"-ERR syntax error\r\n"),
        (("setex", "k", "-1", "v"), b"-ERR invalid expire time in 'setex' command\r\n"),
        (("psetex", "k", "0", "v"), b"-ERR invalid expire time in 'psetex' command\r\n"),
        (("getex", "k", "persist", "ex", "1"), b"-ERR syntax error\r\n"),
        (("expire", "k", "1", "nx", "xx"),
         b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"),
        (("expire", "k", "1", "gt", "lt"),
         b"-ERR GT and LT options at the same time are not compatible\r\n"),
        (("expire", "k", "1", "Foo"), b"-ERR Unsupported option Foo\r\n"),
        (("pexpire", "k", "x"), b"-ERR value is not an integer or out of range\r\n"),
        (("expire", "k", "9223372036854776"), b"-ERR invalid expire time in 'expire' command\r\n"),
        (("expireat", "k", "-9223372036854776"),
         b"-ERR invalid expire time in 'expireat' command\r\n"),
        (("ttl", "k", "x"), b"-ERR wrong number of arguments for 'ttl' command\r\n"),
        (("del", "a", "b"), b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"),
        (("get", "k" * 17), b"-ERR key too long (17 bytes, limit 16)\r\n"),
        (("set", "k", "v" * 33), b"-ERR value too long (33 bytes, limit 32)\r\n"),
        (("set", "k", "v", "ifeq", "v" * 33), b"-ERR value too long (33 bytes, limit 32)\r\n"),
        (("select", "x"), b"-ERR value is not an integer or out of range\r\n"),
    ],
)  # fmt: skip
def test_refusals_use_redis_words(args: tuple[str, ...], reply: bytes) -> None:
    assert refused(*args) == reply


def test_unknown_command_args_are_cut_at_128_bytes() -> None:
    reply = refused("nope", "x" * 300, "y")
    assert reply.startswith(b"-ERR unknown command 'nope', with args beginning with: 'xxx")
    assert b"y" not in reply
    assert len(reply) < 220


def test_admin_requests() -> None:
    assert parse("cluster", "SLOTS") == ClusterSlots()
    assert parse("cluster", "keyslot", "foo") == ClusterKeyslot(b"foo")
    assert parse("command") == CommandQuery("")
    assert parse("config", "get", "SAVE", "app*") == ConfigGet(("save", "app*"))
    assert parse("hello", "3", "setname", "me") == Hello(3, b"me")
    assert parse("readonly") == ReadOnly()


def test_answer_local() -> None:
    state = ConnectionState(7)
    settings = {"save": "", "appendonly": "no", "maxclients": "10"}
    local = [
        (("ping",), b"+PONG\r\n"),
        (("ping", "hi"), b"$2\r\nhi\r\n"),
        (("echo", "x"), b"$1\r\nx\r\n"),
        (("select", "0"), b"+OK\r\n"),
        (("select", "1"), b"-ERR SELECT is not allowed in cluster mode\r\n"),
        (("cluster", "keyslot", "foo"), b":12182\r\n"),
        (("client", "setinfo", "lib-name", "redis-py"), b"+OK\r\n"),
        (("client", "setname", "worker"), b"+OK\r\n"),
        (("client", "getname"), b"$6\r\nworker\r\n"),
        (("client", "id"), b":7\r\n"),
        (("command", "count"), b":%d\r\n" % len(COMMANDS)),
        (("command", "getkeys", "del", "a", "b"), b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        (("command", "getkeys", "ping"), b"-ERR The command has no key arguments\r\n"),
        (("hello", "4"), b"-NOPROTO unsupported protocol version\r\n"),
    ]
    for args, reply in local:
        request = parse(*args)
        assert answer_local(request, state, settings) == reply, args  # type: ignore[arg-type]
    assert state.library == {"lib-name": b"redis-py"}
    assert decode(answer_local(ConfigGet(("save", "append*")), state, settings)) == [
        b"save", b"", b"appendonly", b"no",
    ]  # fmt: skip
    assert not state.readonly
    answer_local(ReadOnly(), state, settings)
    assert state.readonly
    hello = decode(answer_local(Hello(3), state, settings))
    assert state.protocol == 3
    assert isinstance(hello, dict)
    assert hello[b"proto"] == 3
    assert decode(answer_local(ConfigGet(("save",)), state, settings)) == {b"save": b""}


def test_command_table_is_what_redis_py_reads() -> None:
    table = parse_command(decode(answer_local(CommandQuery(""), ConnectionState(1), {})))
    assert set(table) == set(COMMANDS)
    assert (table["get"]["first_key_pos"], table["get"]["last_key_pos"]) == (1, 1)
    assert table["del"]["last_key_pos"] == -1
    assert "readonly" in table["get"]["flags"]
    assert table["set"]["arity"] == -3


def reply(**fields: object) -> ClientReply:
    return ClientReply(0, ("c", 1), **fields)  # type: ignore[arg-type]


def test_render_reply() -> None:
    get = ClientOp(DataCommand.GET, (Get(b"k"),), 1)
    assert render_reply(get, [reply(value=b"v")]) == b"$1\r\nv\r\n"
    assert render_reply(get, [reply()]) == b"$-1\r\n"
    set_ = ClientOp(DataCommand.SET, (Set(b"k", b"v", nx=True),), 1)
    assert render_reply(set_, [reply(applied=True)]) == b"+OK\r\n"
    assert render_reply(set_, [reply(applied=False, value=b"old")]) == b"$-1\r\n"
    set_get = ClientOp(DataCommand.SET, (Set(b"k", b"v", get=True),), 1, return_old=True)
    assert render_reply(set_get, [reply(applied=True, value=b"old")]) == b"$3\r\nold\r\n"
    delete = ClientOp(DataCommand.DEL, (Delete(b"a"), Delete(b"a")), 1)
    assert render_reply(delete, [reply(applied=True), reply(applied=False)]) == b":1\r\n"
    exists = ClientOp(DataCommand.EXISTS, (Get(b"a"), Get(b"b")), 1)
    assert render_reply(exists, [reply(value=b""), reply()]) == b":1\r\n"
    moved = render_reply(get, [reply(error=ErrorCode.NOT_PRIMARY)], moved_to="10.0.0.2:7001")
    assert moved == b"-MOVED 1 10.0.0.2:7001\r\n"


@pytest.mark.parametrize(
    ("code", "prefix"),
    [
        (ErrorCode.NOT_PRIMARY, b"-CLUSTERDOWN "),
        (ErrorCode.NOT_READY, b"-TRYAGAIN "),
        (ErrorCode.NOT_ENOUGH_REPLICAS, b"-CLUSTERDOWN "),
        (ErrorCode.STALE_EPOCH, b"-TRYAGAIN "),
        (ErrorCode.OVERLOADED, b"-BUSY "),
        (ErrorCode.SEQ_TOO_OLD, b"-SEQTOOOLD "),
    ],
)
def test_error_replies(code: ErrorCode, prefix: bytes) -> None:
    rendered = error_reply(code, slot=5, partition=3)
    assert rendered.startswith(prefix)
    assert b"partition 3" in rendered
    assert rendered.endswith(b"\r\n")
    assert rendered.count(b"\r\n") == 1


def test_resp_error_classes_in_redis_py() -> None:
    from redis._parsers.base import BaseParser
    from redis.exceptions import ClusterDownError, MovedError, TryAgainError

    for code, kind in [
        (ErrorCode.NOT_READY, TryAgainError),
        (ErrorCode.NOT_ENOUGH_REPLICAS, ClusterDownError),
    ]:
        text = error_reply(code, slot=5, partition=3)[1:-2].decode()
        assert type(BaseParser.parse_error(text)) is kind
    moved = BaseParser.parse_error(
        error_reply(ErrorCode.NOT_PRIMARY, slot=5, partition=3, moved_to="h:1")[1:-2].decode()
    )
    assert isinstance(moved, MovedError)
    assert (moved.slot_id, moved.host, moved.port) == (5, "h", 1)


def test_resp_module_constants() -> None:
    assert resp.OK == b"+OK\r\n"
    assert resp.NULL == b"$-1\r\n"


# --- REQID <client-id> <seq> on SET and single-key DEL ------------------------------------------


def test_set_and_del_carry_a_request_id() -> None:
    cid = "0123456789abcdef0123456789abcdef"
    assert parse("set", "k", "v", "REQID", cid, "7") == ClientOp(
        DataCommand.SET, (Set(b"k", b"v"),), keyslot(b"k"), request_id=(cid, 7)
    )
    conditional = parse("SET", "k", "v", "xx", "reqid", "c", "0")
    assert isinstance(conditional, ClientOp)
    assert conditional.ops == (Set(b"k", b"v", xx=True),)
    assert conditional.request_id == ("c", 0)
    ifeq = parse("set", "k", "v", "ifeq", "old", "reqid", "c", str(2**63 - 1))
    assert isinstance(ifeq, ClientOp)
    assert ifeq.ops == (Set(b"k", b"v", if_value=b"old"),)
    assert ifeq.request_id == ("c", 2**63 - 1)
    assert parse("del", "k", "ReqId", cid, "12") == ClientOp(
        DataCommand.DEL, (Delete(b"k"),), keyslot(b"k"), request_id=(cid, 12)
    )


def test_without_reqid_there_is_no_request_id() -> None:
    for args in (("set", "k", "v"), ("del", "k"), ("get", "k"), ("exists", "k")):
        op = parse(*args)
        assert isinstance(op, ClientOp)
        assert op.request_id is None
    # Fewer than the three REQID words: DEL's arguments are all keys (same slot here).
    short = parse("del", "{t}reqid", "{t}c")
    assert isinstance(short, ClientOp)
    assert short.keys == (b"{t}reqid", b"{t}c")
    assert short.request_id is None


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        (("set", "k", "v", "reqid", "c", "1", "nx"),
         b"-ERR syntax error: REQID <client-id> <seq> must be the last option of SET\r\n"),
        (("set", "k", "v", "reqid", "c"),
         b"-ERR syntax error: REQID <client-id> <seq> must be the last option of SET\r\n"),
        (("set", "k", "v", "reqid", "c", "-1"),
         b"-ERR REQID sequence must be an integer from 0 to 2^63-1\r\n"),
        (("set", "k", "v", "reqid", "c", "1_000"),
         b"-ERR REQID sequence must be an integer from 0 to 2^63-1\r\n"),
        (("set", "k", "v", "reqid", "c", str(2**63)),
         b"-ERR REQID sequence must be an integer from 0 to 2^63-1\r\n"),
        (("set", "k", "v", "reqid", "has space", "1"),
         b"-ERR REQID client id must be 1 to 64 printable ASCII characters without spaces\r\n"),
        (("del", "k", "reqid", "", "1"),
         b"-ERR REQID client id must be 1 to 64 printable ASCII characters without spaces\r\n"),
        (("del", "k", "reqid", "c" * 65, "1"),
         b"-ERR REQID client id must be 1 to 64 printable ASCII characters without spaces\r\n"),
        (("del", "{t}a", "{t}b", "reqid", "c", "1"),
         b"-ERR DEL with REQID takes exactly one key: DEL key REQID cid seq\r\n"),
        (("del", "k" * 17, "reqid", "c", "1"), b"-ERR key too long (17 bytes, limit 16)\r\n"),
        (("get", "k", "reqid", "c", "1"),
         b"-ERR REQID is only valid on SET and DEL, not GET (reads need no request id)\r\n"),
        (("exists", "k", "reqid", "c", "1"),
         b"-ERR REQID is only valid on SET and DEL, not EXISTS (reads need no request id)\r\n"),
    ],
)  # fmt: skip
def test_reqid_refusals(args: tuple[str, ...], reply: bytes) -> None:
    assert refused(*args) == reply


# --- the string and counter commands ------------------------------------------------------------


def one_op(*args: bytes | str) -> tuple[object, tuple[str, int] | None]:
    request = parse(*args)
    assert isinstance(request, ClientOp) and len(request.ops) == 1
    return request.ops[0], request.request_id


def test_counter_commands_parse_into_increments() -> None:
    assert one_op("incr", "n") == (IncrBy(b"n", 1), None)
    assert one_op("DECR", "n") == (IncrBy(b"n", -1), None)
    assert one_op("incrby", "n", "-5") == (IncrBy(b"n", -5), None)
    assert one_op("decrby", "n", "9223372036854775807") == (IncrBy(b"n", -(2**63 - 1)), None)
    assert one_op("incrbyfloat", "f", "1.5e3") == (IncrByFloat(b"f", b"1.5e3"), None)
    for bad in ("1.0", " 1", "+1", "01", "9223372036854775808", ""):
        assert refused("incrby", "n", bad) == b"-ERR value is not an integer or out of range\r\n"
    assert refused("decrby", "n", "-9223372036854775808") == b"-ERR decrement would overflow\r\n"
    # Not a float: the apply refuses it, after WRONGTYPE (Redis reads the key first).
    assert one_op("incrbyfloat", "f", "abc") == (IncrByFloat(b"f", b"abc"), None)
    assert one_op("incrbyfloat", "f", "nan") == (IncrByFloat(b"f", b"nan"), None)


def test_string_commands_parse_into_ops_with_the_nodes_bound() -> None:
    assert one_op("append", "s", "xy") == (AppendTo(b"s", b"xy", 32), None)
    assert one_op("setrange", "s", "3", "xy") == (SetRange(b"s", 3, b"xy", 32), None)
    assert refused("setrange", "s", "-1", "x") == b"-ERR offset is out of range\r\n"
    assert refused("setrange", "s", "x", "x") == b"-ERR value is not an integer or out of range\r\n"
    assert one_op("getset", "s", "v") == (Set(b"s", b"v", get=True), None)
    assert one_op("getdel", "s") == (Delete(b"s", get=True), None)
    assert one_op("setnx", "s", "v") == (Set(b"s", b"v", nx=True), None)
    assert one_op("strlen", "s") == (Get(b"s"), None)
    getrange = parse("getrange", "s", "-3", "-1")
    assert isinstance(getrange, ClientOp) and getrange.span == (-3, -1)
    assert not getrange.is_write and parse("strlen", "s") is not None
    assert refused("append", "s", "x" * 33).startswith(b"-ERR value too long")


def test_every_write_takes_a_trailing_request_id() -> None:
    assert one_op("incr", "n", "REQID", "c1", "7") == (IncrBy(b"n", 1), ("c1", 7))
    assert one_op("getset", "s", "v", "reqid", "c1", "8") == (Set(b"s", b"v", get=True), ("c1", 8))
    mset = parse("mset", "{t}a", "1", "{t}b", "2", "REQID", "c1", "9")
    assert isinstance(mset, ClientOp) and mset.request_id == ("c1", 9)
    assert mset.ops == (MSet(((b"{t}a", b"1"), (b"{t}b", b"2"))),)
    # A value "reqid" of a plain client is a value: MSET without REQID has an odd count.
    plain = parse("mset", "{t}a", "reqid", "{t}b", "2")
    assert isinstance(plain, ClientOp) and plain.request_id is None
    assert plain.ops == (MSet(((b"{t}a", b"reqid"), (b"{t}b", b"2"))),)
    # Not where the arity says it cannot be one, and never on reads.
    assert refused("incr", "n", "REQID", "c1") == (
        b"-ERR wrong number of arguments for 'incr' command\r\n"
    )
    assert refused("strlen", "s", "REQID", "c1", "1") == (
        b"-ERR wrong number of arguments for 'strlen' command\r\n"
    )


def test_multi_key_commands_stay_in_one_slot() -> None:
    mget = parse("mget", "{t}a", "{t}b")
    assert isinstance(mget, ClientOp) and mget.ops == (Get(b"{t}a"), Get(b"{t}b"))
    assert (
        refused("mget", "a", "b") == b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    )
    assert refused("mset", "a", "1", "b", "2").startswith(b"-CROSSSLOT")
    assert refused("mset", "{t}a", "1", "{t}b") == (
        b"-ERR wrong number of arguments for 'mset' command\r\n"
    )
    assert refused("msetnx", "a") == b"-ERR wrong number of arguments for 'msetnx' command\r\n"
    msetnx = parse("msetnx", "{t}a", "1")
    assert isinstance(msetnx, ClientOp) and msetnx.ops == (MSet(((b"{t}a", b"1"),), nx=True),)


def test_render_string_replies() -> None:
    def render(
        command: DataCommand, *replies: ClientReply, span: tuple[int, int] = (0, 0)
    ) -> bytes:
        ops = tuple(Get(b"k") for _ in replies)
        return render_reply(ClientOp(command, ops, 1, span=span), list(replies))

    assert render(DataCommand.INCR, reply(applied=True, result=-3)) == b":-3\r\n"
    assert render(DataCommand.INCRBYFLOAT, reply(applied=True, result=b"10.6")) == (
        b"$4\r\n10.6\r\n"
    )
    failed = reply(failure="ERR value is not an integer or out of range")
    assert render(DataCommand.INCR, failed) == b"-ERR value is not an integer or out of range\r\n"
    assert render(DataCommand.STRLEN, reply(value=b"abc")) == b":3\r\n"
    assert render(DataCommand.STRLEN, reply()) == b":0\r\n"
    assert render(DataCommand.GETRANGE, reply(value=b"Hello"), span=(1, -2)) == b"$3\r\nell\r\n"
    assert render(DataCommand.GETRANGE, reply(), span=(0, -1)) == b"$0\r\n\r\n"
    assert render(DataCommand.GETDEL, reply(value=b"v", applied=True)) == b"$1\r\nv\r\n"
    assert render(DataCommand.SETNX, reply(applied=False, value=b"v")) == b":0\r\n"
    assert render(DataCommand.MGET, reply(value=b"a"), reply()) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert render(DataCommand.MSET, reply(applied=True)) == b"+OK\r\n"
    assert render(DataCommand.MSETNX, reply(applied=True)) == b":1\r\n"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(0, 3, b"This"), (-3, -1, b"ing"), (0, -1, b"This is a string"), (10, 100, b"string"),
     (-1, -5, b""), (5, 3, b""), (-100, 2, b"Thi"), (3, -100, b""), (100, 200, b""),
     (-100, -200, b""), (-200, -100, b"T")],
)  # fmt: skip
def test_getrange_cuts_as_redis(start: int, end: int, expected: bytes) -> None:
    assert getrange(b"This is a string", start, end) == expected


# --- the key-space commands ------------------------------------------------------------------


def test_keyspace_commands_parse() -> None:
    assert parse("dbsize") == DbSize()
    assert parse("RANDOMKEY") == RandomKey()
    assert parse("keys", "h*llo") == Keys(b"h*llo")
    assert parse("scan", "0") == Scan(0)
    assert parse("scan", "42", "match", "a*", "COUNT", "5", "type", "STRING") == Scan(
        42, b"a*", 5, b"STRING"
    )
    assert parse("scan", "0", "match", "*") == Scan(0)  # "*" matches all: no filter
    assert parse("scan", "0", "count", "1", "count", "7") == Scan(0, count=7)  # the last wins
    op = parse("type", "k")
    assert op == ClientOp(DataCommand.TYPE, (Get(b"k"),), keyslot("k"))
    assert isinstance(op, ClientOp) and not op.is_write
    unlink = parse("unlink", "{t}a", "{t}b")
    assert unlink == ClientOp(DataCommand.UNLINK, (Delete(b"{t}a"), Delete(b"{t}b")), keyslot("t"))
    assert isinstance(unlink, ClientOp) and unlink.is_write
    with_id = parse("unlink", "k", "REQID", "c1", "9")
    assert isinstance(with_id, ClientOp) and with_id.request_id == ("c1", 9)


@pytest.mark.parametrize(
    ("cursor", "value"),
    [("0", 0), ("", 0), ("+7", 7), ("18446744073709551615", 2**64 - 1), ("-1", 2**64 - 1)],
)
def test_scan_cursors_read_as_strtoul(cursor: str, value: int) -> None:
    assert parse("scan", cursor) == Scan(value)


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        (("scan", "x"), b"-ERR invalid cursor\r\n"),
        (("scan", " 1"), b"-ERR invalid cursor\r\n"),
        (("scan", "1 "), b"-ERR invalid cursor\r\n"),
        (("scan", "+"), b"-ERR invalid cursor\r\n"),
        (("scan", "18446744073709551616"), b"-ERR invalid cursor\r\n"),
        (("scan", "0", "count", "0"), b"-ERR syntax error\r\n"),
        (("scan", "0", "count", "x"), b"-ERR value is not an integer or out of range\r\n"),
        (("scan", "0", "match"), b"-ERR syntax error\r\n"),
        (("scan", "0", "bogus", "1"), b"-ERR syntax error\r\n"),
        (("scan",), b"-ERR wrong number of arguments for 'scan' command\r\n"),
        (("keys",), b"-ERR wrong number of arguments for 'keys' command\r\n"),
        (("dbsize", "x"), b"-ERR wrong number of arguments for 'dbsize' command\r\n"),
        (("randomkey", "x"), b"-ERR wrong number of arguments for 'randomkey' command\r\n"),
        (("type", "a", "b"), b"-ERR wrong number of arguments for 'type' command\r\n"),
        (("unlink",), b"-ERR wrong number of arguments for 'unlink' command\r\n"),
        (("unlink", "a", "b"), b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"),
        (("exists", "a", "b"), b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"),
        (
            ("unlink", "a", "b", "REQID", "c", "1"),
            b"-ERR UNLINK with REQID takes exactly one key: UNLINK key REQID cid seq\r\n",
        ),
    ],
)
def test_keyspace_refusals(args: tuple[str, ...], reply: bytes) -> None:
    assert refused(*args) == reply


def test_render_type_and_unlink() -> None:
    type_op = parse("type", "k")
    unlink = parse("unlink", "{t}a", "{t}b")
    assert isinstance(type_op, ClientOp) and isinstance(unlink, ClientOp)
    found = ClientReply(0, ("c", 1), value=b"v")
    assert render_reply(type_op, [found]) == b"+string\r\n"
    assert render_reply(type_op, [ClientReply(0, ("c", 1))]) == b"+none\r\n"
    replies = [ClientReply(0, ("c", 1), applied=True), ClientReply(0, ("c", 2))]
    assert render_reply(unlink, replies) == b":1\r\n"


def test_keyspace_commands_are_in_the_table_as_redis_lists_them() -> None:
    assert COMMANDS["type"].flags == ("readonly", "fast")
    assert (COMMANDS["unlink"].first_key, COMMANDS["unlink"].last_key) == (1, -1)
    for name in ("dbsize", "keys", "randomkey", "scan"):
        assert COMMANDS[name].first_key == 0  # keyless: a cluster client picks a node
        assert "readonly" in COMMANDS[name].flags


def test_ttl_and_expiretime_round_to_the_nearest_second_as_redis() -> None:
    """redis-server answers TTL and EXPIRETIME as (ms + 500) / 1000 (the differential test's
    clock tolerance cannot see a second's difference, so it is pinned here)."""

    def op(*args: str) -> ClientOp:
        parsed = parse(*args)
        assert isinstance(parsed, ClientOp)
        return parsed

    ttl = op("ttl", "k")
    assert render_reply(ttl, [reply(result=1499)]) == b":1\r\n"
    assert render_reply(ttl, [reply(result=1500)]) == b":2\r\n"
    assert render_reply(ttl, [reply(result=0)]) == b":0\r\n"
    assert render_reply(ttl, [reply(result=-2)]) == b":-2\r\n"
    expiretime = op("expiretime", "k")
    assert render_reply(expiretime, [reply(result=4_000_000_000_499)]) == b":4000000000\r\n"
    assert render_reply(expiretime, [reply(result=4_000_000_000_500)]) == b":4000000001\r\n"
    assert render_reply(op("pttl", "k"), [reply(result=1499)]) == b":1499\r\n"


# --- hashes and sets -----------------------------------------------------------------------------


def test_hash_commands_parse_in_redis_order() -> None:
    slot = keyslot(b"h")
    assert one_op("hset", "h", "f", "1", "g", "2") == (
        HashSet(b"h", ((b"f", b"1"), (b"g", b"2"))),
        None,
    )
    assert one_op("HSETNX", "h", "f", "1", "REQID", "c", "3") == (
        HashSet(b"h", ((b"f", b"1"),), nx=True),
        ("c", 3),
    )
    assert (
        refused("hset", "h", "f", "1", "g")
        == b"-ERR wrong number of arguments for 'hset' command\r\n"
    )
    assert refused("hset", "h", "f") == b"-ERR wrong number of arguments for 'hset' command\r\n"
    assert one_op("hdel", "h", "f", "g") == (HashDelete(b"h", (b"f", b"g")), None)
    assert one_op("hincrby", "h", "f", "-5") == (HashIncrBy(b"h", b"f", -5), None)
    assert refused("hincrby", "h", "f", "x") == b"-ERR value is not an integer or out of range\r\n"
    assert one_op("hincrbyfloat", "h", "f", "1e3") == (HashIncrByFloat(b"h", b"f", b"1e3"), None)
    assert refused("hincrbyfloat", "h", "f", "x") == b"-ERR value is not a valid float\r\n"
    assert refused("hincrbyfloat", "h", "f", "inf") == b"-ERR value is NaN or Infinity\r\n"
    assert parse("hmget", "h", "f", "g") == ClientOp(
        DataCommand.HMGET, (ValueRead(b"h", "hmget", (b"f", b"g")),), slot
    )
    assert not cast(ClientOp, parse("hgetall", "h")).is_write
    # HSCAN: the cursor at once; a bad option travels (Redis reads it after the key).
    assert refused("hscan", "h", "x") == b"-ERR invalid cursor\r\n"
    assert one_op("hscan", "h", "0", "MATCH", "f*", "COUNT", "5") == (
        ValueRead(b"h", "hscan", (b"0", b"5", b"f*")),
        None,
    )
    assert one_op("hscan", "h", "0", "COUNT", "0") == (
        ValueRead(b"h", "hscan", (b"0", b"10"), error="ERR syntax error"),
        None,
    )
    assert one_op("hscan", "h", "0", "TYPE", "hash")[0] == ValueRead(
        b"h", "hscan", (b"0", b"10"), error="ERR syntax error"
    )
    # Fields and values are values: the node's value limit holds for each.
    assert refused("hset", "h", "f" * 33, "1").startswith(b"-ERR value too long")
    assert refused("sadd", "s", "m" * 33).startswith(b"-ERR value too long")


def test_set_commands_parse_in_redis_order() -> None:
    assert one_op("sadd", "s", "a", "b") == (SetAdd(b"s", (b"a", b"b")), None)
    assert one_op("srem", "s", "a", "REQID", "c", "9") == (SetRemove(b"s", (b"a",)), ("c", 9))
    # A trailing REQID that is not a valid one is members (a plain client's).
    assert one_op("sadd", "s", "reqid", "c", "x") == (SetAdd(b"s", (b"reqid", b"c", b"x")), None)
    assert one_op("spop", "s") == (SetPop(b"s"), None)
    assert one_op("spop", "s", "3") == (SetPop(b"s", 3), None)
    assert refused("spop", "s", "-1") == b"-ERR value is out of range, must be positive\r\n"
    assert refused("spop", "s", "x") == b"-ERR value is out of range, must be positive\r\n"
    assert refused("spop", "s", "1", "2") == b"-ERR syntax error\r\n"
    assert refused("srandmember", "s", "1", "2") == b"-ERR syntax error\r\n"
    assert refused("srandmember", "s", "-9223372036854775808") == (
        b"-ERR value is out of range, value must between -9223372036854775807 and "
        b"9223372036854775807\r\n"
    )
    assert refused("srandmember", "s", "-1048577").startswith(b"-ERR SRANDMEMBER with a negative")
    assert one_op("srandmember", "s", "-1048576")[0] == ValueRead(
        b"s", "srandmember", (b"-1048576",)
    )
    assert parse("sinter", "{t}a", "{t}b") == ClientOp(
        DataCommand.SINTER, (ValueRead(b"{t}a", "sinter", (), (b"{t}b",)),), keyslot(b"{t}a")
    )
    assert refused("sunion", "{t}a", "b") == (
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    )
    assert one_op("sdiffstore", "{t}d", "{t}a", "{t}b", "REQID", "c", "1") == (
        SetStore(b"{t}d", (b"{t}a", b"{t}b"), "diff"),
        ("c", 1),
    )
    assert refused("sinterstore", "{t}d", "x") == (
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    )
    assert COMMANDS["sinter"].entry()[3:6] == [1, -1, 1]


def test_one_command_holds_as_many_fields_as_the_reader_lets_in() -> None:
    """The bound on a hash's or set's growth per command: the RESP reader's ``args_max``
    (Redis' own 1M) and ``request_bytes_max``; at the limit an HSET parses whole, one more
    argument is refused before it is buffered."""
    command = [b"HSET", b"h"] + [b"f%d" % (i // 2) for i in range(ARGS_MAX - 2)]
    reader = RequestReader(request_bytes_max=64 << 20)
    reader.feed(
        b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in command)
    )
    read = reader.next_command()
    assert read is not None
    op = one_op(*read)[0]
    assert isinstance(op, HashSet) and len(op.items) == (ARGS_MAX - 2) // 2
    reader.feed(b"*%d\r\n" % (ARGS_MAX + 1))
    with pytest.raises(RespProtocolError, match="invalid multibulk length"):
        reader.next_command()


def test_hash_and_set_replies_render_as_redis() -> None:
    def rendered(
        command: str, result: object, *, failure: str | None = None, protocol: int = 2
    ) -> bytes:
        request = parse(command, "k", *(["0"] if command.endswith("scan") else []))
        assert isinstance(request, ClientOp)
        reply = ClientReply(0, ("c", 1), result=result, failure=failure)  # type: ignore[arg-type]
        return render_reply(request, [reply], protocol=protocol)

    assert rendered("hlen", 2) == b":2\r\n"
    assert rendered("hgetall", (b"f", b"1")) == b"*2\r\n$1\r\nf\r\n$1\r\n1\r\n"
    assert rendered("hgetall", (b"f", b"1"), protocol=3) == b"%1\r\n$1\r\nf\r\n$1\r\n1\r\n"
    assert rendered("smembers", ()) == b"*0\r\n"
    assert rendered("spop", None) == b"$-1\r\n"
    assert rendered("hscan", (b"0", b"f", b"1")) == b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\nf\r\n$1\r\n1\r\n"
    assert rendered("smembers", None, failure=WRONGTYPE) == b"-" + WRONGTYPE.encode() + b"\r\n"
    # GET of a hash: WRONGTYPE; TYPE names it; EXISTS counts it; MGET answers null.
    hash_read = ClientReply(0, ("c", 1), result=b"hash", failure=WRONGTYPE)
    for command, expected in (
        ("get", b"-" + WRONGTYPE.encode() + b"\r\n"),
        ("type", b"+hash\r\n"),
        ("exists", b":1\r\n"),
        ("mget", b"*1\r\n$-1\r\n"),
    ):
        request = parse(command, "k")
        assert isinstance(request, ClientOp)
        assert render_reply(request, [hash_read]) == expected, command


def test_rename_parses_within_a_slot_and_renders_as_redis() -> None:
    rename = parse("rename", "{t}a", "{t}b")
    assert rename == ClientOp(DataCommand.RENAME, (Rename(b"{t}a", b"{t}b"),), keyslot("t"))
    assert isinstance(rename, ClientOp) and rename.is_write and not rename.denied_when_full
    with_id = parse("renamenx", "{t}a", "{t}b", "REQID", "c", "3")
    assert with_id == ClientOp(
        DataCommand.RENAMENX, (Rename(b"{t}a", b"{t}b", nx=True),), keyslot("t"),
        request_id=("c", 3),
    )  # fmt: skip
    assert refused("rename", "a", "b") == (
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    )
    assert refused("renamenx", "a") == (
        b"-ERR wrong number of arguments for 'renamenx' command\r\n"
    )
    assert isinstance(with_id, ClientOp)
    moved = ClientReply(0, ("c", 1), applied=True, result=1)
    assert render_reply(rename, [moved]) == b"+OK\r\n"
    assert render_reply(with_id, [moved]) == b":1\r\n"
    kept = ClientReply(0, ("c", 1), result=0)
    assert render_reply(with_id, [kept]) == b":0\r\n"
    missing = ClientReply(0, ("c", 1), failure="ERR no such key")
    assert render_reply(rename, [missing]) == b"-ERR no such key\r\n"
