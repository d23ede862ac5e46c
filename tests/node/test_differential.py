"""Differential test: random sequences of the string, counter and key-space commands, sent to a real
redis-server 7 (in cluster mode, owning every slot) and to a planaria cluster (three
in-process nodes, every write through the replicated log), get the same replies: the same
bulk strings, integers, nils and arrays, and errors with the same text.

Expiry: replies that depend on the clock are kept comparable. Relative times (EX, PX,
EXPIRE, PEXPIRE, SETEX, PSETEX, GETEX EX/PX) are either not in the future (the key is
deleted at once) or far ahead and apart (100000 s and more, each value distinct by days),
so no key expires during a sequence and GT/LT between them never depends on the ms the
command arrived in; absolute times are far in the past or the future (the year 2096). TTL and
PTTL are compared within 10 s / 10,000 ms; EXPIRETIME and PEXPIRETIME exactly, unless a
relative time was set before in the sequence (then within 10 s / 10,000 ms as well: the two
servers read their clocks at different moments).

The node-wide commands (DBSIZE, KEYS, RANDOMKEY, SCAN) go to every planaria node (each
answers for the partitions it leads) and are compared as a whole: DBSIZE added up, KEYS
sorted, SCAN as the set of keys a full iteration returns (its order differs on purpose),
RANDOMKEY by whether there is a key and that it is one.

Marked ``process`` and ``ensemble`` (tests/conftest.py): it starts redis-server, a Debian
package (``make system-deps``). The differences that remain on purpose are listed in
docs/compatibility.md; none of them is reachable from these commands.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planaria.core.slots import keyslot, partition_of_slot
from planaria.net.resp import RespValue

from ._cluster import LocalCluster
from ._procs import free_ports

pytestmark = pytest.mark.timeout(300)

REDIS_SERVER = shutil.which("redis-server")
MISSING_TOOLS_FAIL = os.environ.get("CI") == "true"
# Three keys of one slot and one of another (for CROSSSLOT).
KEYS = (b"{t}a", b"{t}b", b"{t}c", b"other")
Command = list[bytes]


class Connection:
    """One blocking RESP connection; replies parsed by hiredis (errors as ReplyError)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = hiredis.Reader()

    def call(self, command: Command) -> object:
        parts = [b"*%d\r\n" % len(command)]
        parts += [b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in command]
        self.sock.sendall(b"".join(parts))
        while (reply := self.reader.gets()) is False:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.reader.feed(data)
        return reply

    def close(self) -> None:
        self.sock.close()


def shown(reply: object) -> RespValue | tuple[str, str]:
    """A reply as comparable plain values (an error as its text)."""
    if isinstance(reply, hiredis.ReplyError):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [shown(item) for item in reply]
    assert reply is None or isinstance(reply, bytes | int), reply
    return reply


# --- the two servers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    if REDIS_SERVER is None:
        if MISSING_TOOLS_FAIL:
            pytest.fail("redis-server not found (apt-get install redis-server)")
        pytest.skip("redis-server not found (apt-get install redis-server)")
    root = tmp_path_factory.mktemp("redis")
    (port,) = free_ports(1)  # and port + 10000 for its cluster bus
    # The same string limit as a planaria node's value_bytes_max (1 MiB).
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(root), "--cluster-enabled", "yes",
         "--cluster-config-file", str(root / "nodes.conf"), "--proto-max-bulk-len", "1mb"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        connection = _wait_for_redis(port)
        assert shown(connection.call([b"CLUSTER", b"ADDSLOTSRANGE", b"0", b"16383"])) == b"OK"
        deadline = time.monotonic() + 30
        while b"cluster_state:ok" not in _bytes(connection.call([b"CLUSTER", b"INFO"])):
            assert time.monotonic() < deadline, "redis-server's cluster never became ok"
            time.sleep(0.05)
        yield connection
        connection.close()
    finally:
        process.kill()
        process.wait(30)


def _bytes(reply: object) -> bytes:
    assert isinstance(reply, bytes), reply
    return reply


def _wait_for_redis(port: int) -> Connection:
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = Connection(port)
            if connection.call([b"PING"]) == b"PONG":
                return connection
            connection.close()
        except OSError:
            pass
        assert time.monotonic() < deadline, "redis-server did not answer PING"
        time.sleep(0.05)


class Planaria:
    """Three in-process nodes in a background event loop; each command goes to the primary
    of its first key's partition."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.connections: dict[str, Connection] = {}

    def on_node(self, name: str, command: Command) -> object:
        connection = self.connections.get(name)
        if connection is None:
            connection = Connection(self.cluster.nodes[name].port)
            self.connections[name] = connection
        return connection.call(command)

    def every_node(self, command: Command) -> list[object]:
        """``command`` on every node (a node-wide read: each answers for what it leads)."""
        return [self.on_node(name, command) for name in self.cluster.nodes]

    def call(self, command: Command) -> object:
        key = command[1] if len(command) > 1 else b""
        partition = partition_of_slot(keyslot(key), self.cluster.partitions)
        primary = self.cluster.primary_of(partition)
        assert primary is not None, f"partition {partition} has no primary"
        connection = self.connections.get(primary)
        if connection is None:
            connection = Connection(self.cluster.nodes[primary].port)
            self.connections[primary] = connection
        return connection.call(command)


@pytest.fixture(scope="module")
def planaria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planaria]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cluster = LocalCluster(tmp_path_factory.mktemp("planaria"), nodes=3, partitions=4)
    asyncio.run_coroutine_threadsafe(cluster.start(), loop).result(60)
    front = Planaria(cluster)
    try:
        yield front
    finally:
        for connection in front.connections.values():
            connection.close()
        asyncio.run_coroutine_threadsafe(cluster.close(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


# --- the commands ------------------------------------------------------------------------------

keys = st.sampled_from(KEYS)
multi_keys = st.sampled_from(KEYS[:3]) | keys  # mostly one slot, sometimes CROSSSLOT
values = st.sampled_from(
    [b"", b"0", b"1", b"-1", b"10", b"007", b"+5", b" 1", b"abc", b"10.5", b"5.0e3", b"3.0",
     b"9223372036854775806", b"9223372036854775807", b"-9223372036854775808",
     b"9223372036854775808", b"1e308", b"inf", b"0x1p3", b"\x00\xff"]
) | st.binary(max_size=6)  # fmt: skip
integers = st.sampled_from(
    [b"0", b"1", b"-1", b"100", b"9223372036854775807", b"-9223372036854775808",
     b"9223372036854775808", b"01", b"1.0", b"x", b""]
) | st.integers(-(2**63), 2**63 - 1).map(lambda n: b"%d" % n)  # fmt: skip
floats = (
    st.sampled_from(
        [b"0.1", b"-0.1", b"10.5", b"5.0e3", b"1e308", b"-1e308", b"1e4000", b"1e-4950",
         b"abc", b"inf", b"-inf", b"nan", b"0x1p-2", b"1.0000000000000000001", b"3", b"-3.25",
         b"1e-20", b".5", b"5.", b"1e", b" 1", b"1 ", b""]
    )
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode())
    | st.decimals(allow_nan=False, allow_infinity=False, places=6).map(lambda d: str(d).encode())
)  # fmt: skip
positions = st.integers(-20, 20).map(lambda n: b"%d" % n) | st.sampled_from(
    [b"-100", b"-200", b"9223372036854775807", b"-9223372036854775808", b"x"]
)
offsets = st.integers(-2, 20).map(lambda n: b"%d" % n) | st.sampled_from(
    [b"1048575", b"1048576", b"9223372036854775807", b"x"]
)


def _command(*parts: st.SearchStrategy[bytes] | bytes) -> st.SearchStrategy[Command]:
    return st.tuples(*(st.just(p) if isinstance(p, bytes) else p for p in parts)).map(list)


def _multi(name: bytes, pairs: bool) -> st.SearchStrategy[Command]:
    if pairs:
        items = st.lists(st.tuples(multi_keys, values), max_size=4).map(
            lambda kv: [part for pair in kv for part in pair]
        )
        dangling = st.sampled_from([[], [], [], [b"{t}a"]])  # a key without its value
        return st.tuples(items, dangling).map(lambda t: [name, *t[0], *t[1]])
    return st.lists(multi_keys, max_size=4).map(lambda ks: [name, *ks])


commands = st.one_of(
    _command(b"SET", keys, values),
    _command(b"GET", keys),
    _command(b"DEL", keys),
    _command(b"INCR", keys),
    _command(b"DECR", keys),
    _command(b"INCRBY", keys, integers),
    _command(b"DECRBY", keys, integers),
    _command(b"INCRBYFLOAT", keys, floats),
    _command(b"APPEND", keys, values),
    _command(b"STRLEN", keys),
    _command(b"GETRANGE", keys, positions, positions),
    _command(b"SETRANGE", keys, offsets, values),
    _command(b"GETSET", keys, values),
    _command(b"GETDEL", keys),
    _command(b"SETNX", keys, values),
    _multi(b"MGET", pairs=False),
    _multi(b"MSET", pairs=True),
    _multi(b"MSETNX", pairs=True),
    # Arity errors.
    st.sampled_from(
        [[b"INCR"], [b"INCRBY", b"{t}a"], [b"INCRBYFLOAT", b"{t}a"], [b"APPEND", b"{t}a"],
         [b"GETRANGE", b"{t}a", b"0"], [b"SETRANGE", b"{t}a", b"0"], [b"GETSET", b"{t}a"],
         [b"GETDEL", b"{t}a", b"{t}b"], [b"SETNX", b"{t}a"], [b"STRLEN"],
         [b"DECR", b"{t}a", b"1"]]
    ),
)  # fmt: skip


# --- expiry ------------------------------------------------------------------------------------

relative_seconds = st.sampled_from(
    [b"100000", b"300000", b"0", b"-1", b"-100", b"9223372036854775", b"9223372036854776",
     b"-9223372036854776", b"9223372036854775807", b"x", b"1.5", b""]
)  # fmt: skip
relative_ms = st.sampled_from(
    [b"200000000", b"400000000", b"0", b"-5", b"9223372036854775807", b"-9223372036854775808",
     b"x"]
)  # fmt: skip
absolute_seconds = st.sampled_from(
    [b"4000000000", b"4000000001", b"3999999999", b"1", b"100", b"0", b"-1",
     b"9223372036854775", b"9223372036854776", b"-9223372036854775808", b"x"]
)  # fmt: skip
absolute_ms = st.sampled_from(
    [b"4000000000000", b"4000000000499", b"4000000000500", b"4000000001000", b"1", b"0",
     b"-3", b"9223372036854775807", b"x"]
)  # fmt: skip
expire_options = st.lists(st.sampled_from([b"NX", b"XX", b"GT", b"LT", b"nx", b"gt"]), max_size=2)
set_options = st.lists(
    st.one_of(
        st.tuples(st.just(b"EX"), relative_seconds).map(list),
        st.tuples(st.just(b"PX"), relative_ms).map(list),
        st.tuples(st.just(b"EXAT"), absolute_seconds).map(list),
        st.tuples(st.just(b"PXAT"), absolute_ms).map(list),
        st.sampled_from([[b"KEEPTTL"], [b"NX"], [b"XX"], [b"GET"], [b"ex"], [b"PERSIST"]]),
    ),
    max_size=3,
).map(lambda options: [part for option in options for part in option])
getex_options = st.one_of(
    st.just([]),
    st.tuples(st.sampled_from([b"EX"]), relative_seconds).map(list),
    st.tuples(st.just(b"PX"), relative_ms).map(list),
    st.tuples(st.just(b"EXAT"), absolute_seconds).map(list),
    st.tuples(st.just(b"PXAT"), absolute_ms).map(list),
    st.sampled_from([[b"PERSIST"], [b"PERSIST", b"EX", b"100000"], [b"KEEPTTL"], [b"EX"]]),
)


def _expire_command(name: bytes, times: st.SearchStrategy[bytes]) -> st.SearchStrategy[Command]:
    return st.tuples(keys, times, expire_options).map(lambda t: [name, t[0], t[1], *t[2]])


expiry_commands = st.one_of(
    st.tuples(keys, values, set_options).map(lambda t: [b"SET", t[0], t[1], *t[2]]),
    _command(b"SETEX", keys, relative_seconds, values),
    _command(b"PSETEX", keys, relative_ms, values),
    st.tuples(keys, getex_options).map(lambda t: [b"GETEX", t[0], *t[1]]),
    *(
        _expire_command(name, times)
        for name, times in (
            (b"EXPIRE", relative_seconds),
            (b"PEXPIRE", relative_ms),
            (b"EXPIREAT", absolute_seconds),
            (b"PEXPIREAT", absolute_ms),
        )
    ),
    _command(b"TTL", keys),
    _command(b"PTTL", keys),
    _command(b"EXPIRETIME", keys),
    _command(b"PEXPIRETIME", keys),
    _command(b"PERSIST", keys),
    _command(b"RENAME", keys, multi_keys),  # the value and its expiry move; CROSSSLOT
    _command(b"RENAMENX", keys, multi_keys),
    st.sampled_from(
        [[b"EXPIRE", b"{t}a"], [b"TTL"], [b"PTTL", b"{t}a", b"{t}b"], [b"PERSIST"],
         [b"SETEX", b"{t}a", b"10"], [b"GETEX"], [b"EXPIRETIME"], [b"RENAME", b"{t}a"],
         [b"RENAMENX", b"{t}a", b"{t}b", b"{t}c"]]
    ),
)  # fmt: skip
_RELATIVE = frozenset((b"EX", b"PX", b"EXPIRE", b"PEXPIRE", b"SETEX", b"PSETEX"))
# Wide: on a loaded machine seconds may pass between the two servers' calls; the times are
# days apart, so a reading this far off still tells them apart.
_TOLERANCES = {b"TTL": 10, b"PTTL": 10_000, b"EXPIRETIME": 10, b"PEXPIRETIME": 10_000}


def _same_reply(command: Command, got: object, expected: object, relative_seen: bool) -> bool:
    """Equal, or for a reading of the clock within its tolerance (see the module)."""
    if got == expected:
        return True
    name = command[0].upper()
    tolerance = _TOLERANCES.get(name)
    if tolerance is None or (name.endswith(b"EXPIRETIME") and not relative_seen):
        return False
    return (
        isinstance(got, int)
        and isinstance(expected, int)
        and min(got, expected) >= 0
        and abs(got - expected) <= tolerance
    )


@settings(
    max_examples=int(os.environ.get("DIFFERENTIAL_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(sequence=st.lists(expiry_commands | commands, min_size=5, max_size=30))
def test_random_expiry_sequences_get_the_replies_redis_server_gives(
    redis_server: Connection, planaria: Planaria, sequence: list[Command]
) -> None:
    _reset(redis_server)
    _reset(planaria)
    relative_seen = False
    for command in sequence:
        expected = shown(redis_server.call(command))
        got = shown(planaria.call(command))
        assert _same_reply(command, got, expected, relative_seen), (
            f"{command!r}: planaria {got!r}, redis-server {expected!r}"
        )
        relative_seen |= any(part.upper() in _RELATIVE for part in command)
    for key in KEYS:
        assert planaria.call([b"GET", key]) == redis_server.call([b"GET", key])
        expected_time = shown(redis_server.call([b"PEXPIRETIME", key]))
        got_time = shown(planaria.call([b"PEXPIRETIME", key]))
        assert _same_reply([b"PEXPIRETIME"], got_time, expected_time, relative_seen)


def test_expiry_examples_on_both(redis_server: Connection, planaria: Planaria) -> None:
    """Named cases: a past time deletes, KEEPTTL keeps, a plain SET clears, INCR keeps,
    GT against no expiry, GETEX's invalid time only on an existing key."""
    script = [
        [b"DEL", b"{t}a", b"{t}b"],
        [b"SET", b"{t}a", b"1", b"EXAT", b"4000000000"],
        [b"EXPIRETIME", b"{t}a"],
        [b"INCR", b"{t}a"],
        [b"PEXPIRETIME", b"{t}a"],
        [b"SET", b"{t}a", b"3", b"KEEPTTL"],
        [b"EXPIRETIME", b"{t}a"],
        [b"SET", b"{t}a", b"4"],
        [b"TTL", b"{t}a"],
        [b"EXPIRE", b"{t}a", b"100", b"GT"],
        [b"EXPIRE", b"{t}a", b"100", b"LT"],
        [b"PERSIST", b"{t}a"],
        [b"EXPIREAT", b"{t}a", b"1"],
        [b"GET", b"{t}a"],
        [b"GETEX", b"{t}b", b"EX", b"-1"],
        [b"SET", b"{t}b", b"v"],
        [b"GETEX", b"{t}b", b"EX", b"-1"],
        [b"GETEX", b"{t}b", b"PXAT", b"4000000000500"],
        [b"EXPIRETIME", b"{t}b"],
        [b"GETEX", b"{t}b", b"EXAT", b"1"],
        [b"EXISTS", b"{t}b"],
        [b"EXPIRE", b"{t}a", b"1", b"NX", b"XX"],
        [b"SET", b"{t}a", b"v", b"EX", b"10", b"KEEPTTL"],
    ]
    replies = []
    for command in script:
        expected = shown(redis_server.call(command))
        assert shown(planaria.call(command)) == expected, command
        replies.append(expected)
    assert replies[2] == 4000000000 and replies[4] == 4000000000000
    assert replies[6] == 4000000000 and replies[8] == -1
    assert replies[9:13] == [0, 1, 1, 1] and replies[13] is None
    assert replies[14] is None
    assert replies[16] == ("error", "ERR invalid expire time in 'getex' command")
    assert replies[18] == 4000000001 and replies[20] == 0


patterns = st.lists(st.sampled_from(list(b"{}t*?[]^-\\abco")), max_size=5).map(bytes)
scan_options = st.lists(
    st.sampled_from([b"MATCH", b"COUNT", b"TYPE"]).flatmap(
        lambda option: st.tuples(
            st.just(option),
            patterns
            if option == b"MATCH"
            else st.sampled_from([b"1", b"2", b"10", b"0", b"-1", b"x"])
            if option == b"COUNT"
            else st.sampled_from([b"string", b"STRING", b"hash", b"set", b"none", b"foo"]),
        )
    ),
    max_size=3,
).map(lambda pairs: [part for pair in pairs for part in pair])
scans = st.tuples(
    st.sampled_from([b"0", b"0", b"0", b"", b"x", b" 1", b"+"]), scan_options,
    st.sampled_from([[], [], [], [b"COUNT"]]),  # a dangling option
).map(lambda t: [b"SCAN", t[0], *t[1], *t[2]])  # fmt: skip
keyspace_commands = st.one_of(
    _command(b"TYPE", keys),
    _multi(b"UNLINK", pairs=False),
    _multi(b"DEL", pairs=False),
    _multi(b"EXISTS", pairs=False),
    st.just([b"DBSIZE"]),
    st.just([b"RANDOMKEY"]),
    _command(b"KEYS", patterns),
    scans,
    st.sampled_from(
        [[b"TYPE"], [b"TYPE", b"{t}a", b"x"], [b"UNLINK"], [b"DBSIZE", b"x"],
         [b"RANDOMKEY", b"x"], [b"KEYS"], [b"KEYS", b"a", b"b"], [b"SCAN"]]
    ),
)  # fmt: skip
NODE_WIDE = {b"DBSIZE", b"KEYS", b"RANDOMKEY", b"SCAN"}


def _full_scan(
    call: Callable[[Command], object], command: Command
) -> list[bytes] | tuple[str, str]:
    """The set of keys a whole SCAN iteration returns, from the command's cursor on (or
    its error)."""
    found: set[bytes] = set()
    while True:
        reply = shown(call(command))
        if isinstance(reply, tuple):
            return reply
        assert isinstance(reply, list) and isinstance(reply[0], bytes), reply
        cursor = reply[0]
        keys = reply[1]
        assert isinstance(keys, list)
        found |= {key for key in keys if isinstance(key, bytes)}
        if cursor == b"0":
            return sorted(found)
        command = [command[0], cursor, *command[2:]]


def on_redis(redis_server: Connection, command: Command) -> object:
    """``command``'s reply from redis-server, as compared (see the module's docstring)."""
    name = command[0].upper()
    if name not in NODE_WIDE:
        return shown(redis_server.call(command))
    if name == b"SCAN":
        return _full_scan(redis_server.call, command)
    reply = shown(redis_server.call(command))
    if name == b"KEYS" and isinstance(reply, list):
        return sorted(key for key in reply if isinstance(key, bytes))
    if name == b"RANDOMKEY" and isinstance(reply, bytes):
        return ("a key", reply in KEYS + GLOB_KEYS)
    return reply


def on_planaria(planaria: Planaria, command: Command) -> object:
    """``command``'s reply from the planaria cluster, as compared: node-wide commands on
    every node, put together."""
    name = command[0].upper()
    if name not in NODE_WIDE:
        return shown(planaria.call(command))
    if name == b"SCAN":
        scanned: set[bytes] = set()
        for node in planaria.cluster.nodes:
            result = _full_scan(functools.partial(planaria.on_node, node), command)
            if isinstance(result, tuple):
                return result
            scanned |= set(result)
        return sorted(scanned)
    replies = [shown(reply) for reply in planaria.every_node(command)]
    errors = [r for r in replies if isinstance(r, tuple)]
    if errors:
        return errors[0]
    if name == b"DBSIZE":
        return sum(r for r in replies if isinstance(r, int))
    if name == b"KEYS":
        return sorted(k for r in replies if isinstance(r, list) for k in r if isinstance(k, bytes))
    found = [r for r in replies if r is not None]  # RANDOMKEY
    return ("a key", found[0] in KEYS + GLOB_KEYS) if found else None


def _reset(target: Connection | Planaria) -> None:
    for key in KEYS:
        target.call([b"DEL", key])


@settings(
    max_examples=int(os.environ.get("DIFFERENTIAL_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(sequence=st.lists(commands | keyspace_commands, min_size=5, max_size=30))
def test_random_command_sequences_get_the_replies_redis_server_gives(
    redis_server: Connection, planaria: Planaria, sequence: list[Command]
) -> None:
    _reset(redis_server)
    _reset(planaria)
    for command in sequence:
        expected = on_redis(redis_server, command)
        got = on_planaria(planaria, command)
        assert got == expected, f"{command!r}: planaria {got!r}, redis-server {expected!r}"
    for key in KEYS:
        assert planaria.call([b"GET", key]) == redis_server.call([b"GET", key])


def test_the_examples_of_the_brief(redis_server: Connection, planaria: Planaria) -> None:
    """The cases named when the commands were asked for, and the limits, on both."""
    script = [
        [b"DEL", b"{t}a"],
        [b"INCRBYFLOAT", b"{t}a", b"10.5"],
        [b"INCRBYFLOAT", b"{t}a", b"0.1"],
        [b"SET", b"{t}a", b"5.0e3"],
        [b"INCRBYFLOAT", b"{t}a", b"0"],
        [b"SET", b"{t}a", b"3.0"],
        [b"INCRBYFLOAT", b"{t}a", b"0"],
        [b"SET", b"{t}a", b"9223372036854775807"],
        [b"INCR", b"{t}a"],
        [b"DECRBY", b"{t}a", b"-9223372036854775808"],
        [b"SETRANGE", b"{t}b", b"1048576", b"x"],
        [b"SETRANGE", b"{t}b", b"-1", b"x"],
        [b"SETRANGE", b"{t}b", b"1048575", b"x"],
        [b"APPEND", b"{t}b", b"y"],
        [b"STRLEN", b"{t}b"],
        [b"MSET", b"{t}a", b"1", b"other", b"2"],
        [b"MGET", b"{t}a", b"other"],
        [b"GETRANGE", b"{t}a", b"-100", b"-200"],
        [b"GETRANGE", b"{t}a", b"-200", b"-100"],
        [b"MSET", b"{t}a", b"1", b"other"],
        [b"INCRBYFLOAT", b"{t}a", b"1e4932"],
        [b"DEL", b"{t}a", b"{t}b"],
    ]
    replies = []
    for command in script:
        expected = shown(redis_server.call(command))
        assert shown(planaria.call(command)) == expected, command
        replies.append(expected)
    assert replies[1:7] == [b"10.5", b"10.6", b"OK", b"5000", b"OK", b"3"]
    assert replies[8] == ("error", "ERR increment or decrement would overflow")
    assert replies[15] == ("error", "CROSSSLOT Keys in request don't hash to the same slot")


# Keys that glob patterns find hard: every special byte of a pattern, the empty key.
GLOB_KEYS = (b"", b"a*b", b"[x]", b"a\\b", b"-", b"^", b"{t}]", b"ab", b"a?", b"\\", b"{t}c-")


@settings(
    max_examples=int(os.environ.get("DIFFERENTIAL_EXAMPLES", "60")) * 2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(pattern=patterns | st.sampled_from([b"*", b"**", b"", b"[", b"[^", b"\\", b"[a-]", b"*[]"]))
def test_keys_and_scan_match_globs_as_redis_server(
    redis_server: Connection, planaria: Planaria, pattern: bytes
) -> None:
    for target in (redis_server, planaria):
        _reset(target)
        for key in GLOB_KEYS:
            assert shown(target.call([b"SET", key, b"v"])) == b"OK"
    try:
        for command in ([b"KEYS", pattern], [b"SCAN", b"0", b"MATCH", pattern, b"COUNT", b"3"]):
            expected = on_redis(redis_server, command)
            got = on_planaria(planaria, command)
            assert got == expected, f"{command!r}: planaria {got!r}, redis-server {expected!r}"
    finally:
        for target in (redis_server, planaria):
            for key in GLOB_KEYS:
                target.call([b"DEL", key])


# --- hashes and sets ----------------------------------------------------------------------------
#
# Hashes keep Redis' order while redis-server keeps them as a listpack (small fields and
# values: insertion order, as planaria always does): their replies are compared exactly then,
# else as multisets (a hashtable's order is its own). Sets are compared as multisets (an
# intset is sorted, a hashtable in its own order). SPOP and SRANDMEMBER are random on both
# sides: compared by size and by being members, and a SPOP that chose other members on
# planaria is reconciled (SADD/SREM there) so that the sequence goes on from equal states.

fields = st.sampled_from([b"f", b"g", b"h", b"", b"9"])
members = st.sampled_from([b"a", b"b", b"c", b"1", b"2", b"-3", b"", b"\x00"])
set_keys = st.lists(multi_keys, min_size=1, max_size=3)


def _pairs(name: bytes, items: st.SearchStrategy[bytes]) -> st.SearchStrategy[Command]:
    pairs = st.lists(st.tuples(fields, items), min_size=1, max_size=3).map(
        lambda kv: [part for pair in kv for part in pair]
    )
    dangling = st.sampled_from([[], [], [], [b"f"]])  # a field without its value
    return st.tuples(keys, pairs, dangling).map(lambda t: [name, t[0], *t[1], *t[2]])


def _variadic(name: bytes, items: st.SearchStrategy[bytes]) -> st.SearchStrategy[Command]:
    return st.tuples(keys, st.lists(items, min_size=1, max_size=4)).map(
        lambda t: [name, t[0], *t[1]]
    )


counts = st.sampled_from(
    [b"0", b"1", b"2", b"5", b"-2", b"-1", b"x", b"-9223372036854775808", b"99999999999999999999"]
)
container_scan_options = st.lists(
    st.sampled_from([b"MATCH", b"COUNT", b"TYPE", b"NOVALUES"]).flatmap(
        lambda option: st.tuples(
            st.just(option),
            patterns
            if option == b"MATCH"
            else st.sampled_from([b"1", b"10", b"100", b"0", b"x"])
            if option == b"COUNT"
            else st.sampled_from([b"string", b"hash"]),
        )
    ),
    max_size=2,
).map(lambda pairs: [part for pair in pairs for part in pair])
container_commands = st.one_of(
    _pairs(b"HSET", values),
    _command(b"HSETNX", keys, fields, values),
    _command(b"HGET", keys, fields),
    _variadic(b"HMGET", fields),
    _variadic(b"HDEL", fields),
    _command(b"HGETALL", keys),
    _command(b"HKEYS", keys),
    _command(b"HVALS", keys),
    _command(b"HLEN", keys),
    _command(b"HEXISTS", keys, fields),
    _command(b"HSTRLEN", keys, fields),
    _command(b"HINCRBY", keys, fields, integers),
    _command(b"HINCRBYFLOAT", keys, fields, floats),
    st.tuples(keys, st.sampled_from([b"0", b"0", b"x", b"-1"]), container_scan_options).map(
        lambda t: [b"HSCAN", t[0], t[1], *t[2]]
    ),
    _variadic(b"SADD", members),
    _variadic(b"SREM", members),
    _command(b"SISMEMBER", keys, members),
    _variadic(b"SMISMEMBER", members),
    _command(b"SMEMBERS", keys),
    _command(b"SCARD", keys),
    _command(b"SPOP", keys),
    _command(b"SPOP", keys, counts),
    _command(b"SRANDMEMBER", keys),
    _command(b"SRANDMEMBER", keys, counts),
    st.tuples(keys, st.sampled_from([b"0", b"0", b"x"]), container_scan_options).map(
        lambda t: [b"SSCAN", t[0], t[1], *t[2]]
    ),
    *(
        set_keys.map(lambda ks, name=name: [name, *ks])  # type: ignore[misc]
        for name in (b"SINTER", b"SUNION", b"SDIFF")
    ),
    *(
        st.tuples(multi_keys, set_keys).map(lambda t, name=name: [name, t[0], *t[1]])  # type: ignore[misc]
        for name in (b"SINTERSTORE", b"SUNIONSTORE", b"SDIFFSTORE")
    ),
    # Arity and syntax errors.
    st.sampled_from(
        [[b"HSET", b"{t}a", b"f"], [b"HSET", b"{t}a", b"f", b"1", b"g"], [b"HGET", b"{t}a"],
         [b"HGETALL"], [b"HINCRBY", b"{t}a", b"f"], [b"HSETNX", b"{t}a", b"f", b"1", b"2"],
         [b"SADD", b"{t}a"], [b"SPOP", b"{t}a", b"1", b"2"], [b"SRANDMEMBER", b"{t}a", b"1", b"2"],
         [b"SINTER"], [b"SINTERSTORE", b"{t}a"], [b"SISMEMBER", b"{t}a"], [b"HSCAN", b"{t}a"]]
    ),
)  # fmt: skip
_HASH_LISTS = frozenset((b"HGETALL", b"HKEYS", b"HVALS", b"HSCAN"))
_SET_LISTS = frozenset((b"SMEMBERS", b"SINTER", b"SUNION", b"SDIFF", b"SSCAN"))


def _items(reply: object) -> list[object] | None:
    """A list reply's items, a SCAN-style reply's items after its cursor, else None."""
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], list):
        return reply[1]
    return reply if isinstance(reply, list) else None


def _unordered(reply: object, pairs: bool) -> object:
    """A list reply as a sorted multiset (of pairs for a hash's HGETALL and HSCAN)."""
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], list):
        return [reply[0], _unordered(reply[1], pairs)]  # a cursor and its items
    if not isinstance(reply, list):
        return reply
    if pairs:
        return sorted(zip(reply[::2], reply[1::2], strict=True))
    return sorted(reply)


def _members(redis_server: Connection, key: bytes) -> set[bytes]:
    reply = shown(redis_server.call([b"SMEMBERS", key]))
    return {m for m in reply if isinstance(m, bytes)} if isinstance(reply, list) else set()


def compare_container(
    redis_server: Connection, planaria: Planaria, command: Command, relative_seen: bool
) -> None:
    """Send ``command`` to both and check the replies agree (see above)."""
    name = command[0].upper()
    random_reply = name in (b"SPOP", b"SRANDMEMBER") and len(command) >= 2
    before = _members(redis_server, command[1]) if random_reply else set()
    if name in NODE_WIDE:
        expected, got = on_redis(redis_server, command), on_planaria(planaria, command)
    else:
        expected = shown(redis_server.call(command))
        got = shown(planaria.call(command))
    where = f"{command!r}: planaria {got!r}, redis-server {expected!r}"
    if random_reply and not isinstance(expected, tuple):
        _check_random(planaria, command, got=got, expected=expected, before=before, where=where)
        return
    if name in _HASH_LISTS and got != expected:
        encoding = redis_server.call([b"OBJECT", b"ENCODING", command[1]])
        assert encoding != b"listpack", where  # then the order must be Redis' own
        pairs = name == b"HGETALL" or (name == b"HSCAN" and b"NOVALUES" not in command)
        got, expected = _unordered(got, pairs), _unordered(expected, pairs)
    elif name in _SET_LISTS:
        got, expected = _unordered(got, False), _unordered(expected, False)
    assert _same_reply(command, got, expected, relative_seen), where


def _check_random(
    planaria: Planaria,
    command: Command,
    *,
    got: object,
    expected: object,
    before: set[bytes],
    where: str,
) -> None:
    """SPOP / SRANDMEMBER: the same shape and size, members of the set; SPOP's choice
    reconciled on planaria."""
    if not isinstance(expected, list):
        assert got == expected or (isinstance(got, bytes) and got in before), where
        chosen_got = [got] if isinstance(got, bytes) else []
        chosen_expected = [expected] if isinstance(expected, bytes) else []
    else:
        assert isinstance(got, list) and len(got) == len(expected), where
        assert all(item in before for item in got), where
        if (
            len(command) == 3
            and command[2].lstrip(b"-").isdigit()
            and not command[2].startswith(b"-")
        ):
            assert len(set(got)) == len(got), where  # distinct, as Redis' positive count
        chosen_got = [m for m in got if isinstance(m, bytes)]
        chosen_expected = [m for m in expected if isinstance(m, bytes)]
    if command[0].upper() == b"SPOP" and set(chosen_got) != set(chosen_expected):
        key = command[1]
        for member in set(chosen_got) - set(chosen_expected):
            planaria.call([b"SADD", key, member])
        for member in set(chosen_expected) - set(chosen_got):
            planaria.call([b"SREM", key, member])


@settings(
    max_examples=int(os.environ.get("DIFFERENTIAL_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    sequence=st.lists(
        container_commands
        | container_commands
        | commands
        | keyspace_commands
        | _command(b"EXPIRE", keys, st.just(b"100000"))
        | _command(b"TTL", keys)
        | _command(b"PERSIST", keys)
        | _command(b"RENAME", keys, multi_keys),  # a hash or set moves whole
        min_size=5,
        max_size=30,
    )
)
def test_random_hash_and_set_sequences_get_the_replies_redis_server_gives(
    redis_server: Connection, planaria: Planaria, sequence: list[Command]
) -> None:
    """Hashes and sets among strings: their replies, WRONGTYPE both ways, TYPE, EXISTS,
    DEL, SCAN TYPE and expiry on them, as redis-server 7 gives them."""
    _reset(redis_server)
    _reset(planaria)
    relative_seen = False
    for command in sequence:
        compare_container(redis_server, planaria, command, relative_seen)
        relative_seen |= command[0].upper() == b"EXPIRE"
    for key in KEYS:
        assert planaria.call([b"TYPE", key]) == redis_server.call([b"TYPE", key])
        compare_container(redis_server, planaria, [b"HGETALL", key], relative_seen)
        compare_container(redis_server, planaria, [b"SMEMBERS", key], relative_seen)


def test_hash_and_set_examples_on_both(redis_server: Connection, planaria: Planaria) -> None:
    """Named cases: WRONGTYPE both ways (GETSET, GETDEL, SET GET, GETEX, APPEND on a hash;
    HSET on a string), SET and DEL replace or remove any type, an emptied hash is gone,
    HINCRBYFLOAT's words, SINTERSTORE's empty result deletes its destination."""
    _reset(redis_server)
    _reset(planaria)
    sequence = [
        [b"HSET", b"{t}a", b"f", b"1", b"g", b"x"],
        [b"GET", b"{t}a"],
        [b"GETSET", b"{t}a", b"v"],
        [b"GETDEL", b"{t}a"],
        [b"SET", b"{t}a", b"v", b"GET"],
        [b"GETEX", b"{t}a", b"EX", b"-1"],
        [b"APPEND", b"{t}a", b"x"],
        [b"INCR", b"{t}a"],
        [b"INCRBYFLOAT", b"{t}a", b"abc"],
        [b"SETRANGE", b"{t}a", b"0", b""],
        [b"STRLEN", b"{t}a"],
        [b"MGET", b"{t}a", b"{t}b"],
        [b"TYPE", b"{t}a"],
        [b"EXISTS", b"{t}a", b"{t}b"],
        [b"SADD", b"{t}a", b"m"],
        [b"HINCRBY", b"{t}a", b"g", b"1"],
        [b"HINCRBYFLOAT", b"{t}a", b"g", b"1"],
        [b"HINCRBYFLOAT", b"{t}a", b"f", b"inf"],
        [b"HINCRBYFLOAT", b"{t}a", b"f", b"1e4932"],
        [b"HINCRBYFLOAT", b"{t}a", b"f", b"0.1"],
        [b"HSCAN", b"{t}a", b"0", b"COUNT", b"0"],
        [b"HSCAN", b"{t}b", b"0", b"COUNT", b"0"],
        [b"SET", b"{t}b", b"s"],
        [b"HSET", b"{t}b", b"f", b"1"],
        [b"HSCAN", b"{t}b", b"0", b"BAD"],
        [b"SINTER", b"{t}c", b"{t}b"],
        [b"EXPIRE", b"{t}a", b"100000"],
        [b"HDEL", b"{t}a", b"f", b"g", b"f"],
        [b"EXISTS", b"{t}a"],
        [b"TTL", b"{t}a"],
        [b"SADD", b"{t}c", b"a", b"b", b"a"],
        [b"SINTERSTORE", b"{t}b", b"{t}c", b"{t}a"],
        [b"TYPE", b"{t}b"],
        [b"SUNIONSTORE", b"{t}b", b"{t}c", b"{t}a"],
        [b"TYPE", b"{t}b"],
        [b"SPOP", b"{t}c", b"5"],
        [b"SPOP", b"{t}c"],
        [b"SPOP", b"{t}c", b"-1"],
        [b"SET", b"{t}b", b"s"],
        [b"DEL", b"{t}b"],
        [b"SINTER", b"{t}a", b"other"],
    ]
    for command in sequence:
        compare_container(redis_server, planaria, command, False)
