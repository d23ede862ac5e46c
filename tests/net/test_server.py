"""RespServer on loopback with the toy in-memory cluster: raw sockets, redis-py (plain and
cluster), redis-cli and redis-benchmark."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import LoadBalancingStrategy, RedisCluster

from planaria.net.commands import ClientOp
from planaria.net.server import RespServer

from ._toy import ToyCluster, serving

TIMEOUT_S = 5.0


@pytest.fixture
def one() -> Iterator[tuple[ToyCluster, RespServer]]:
    cluster = ToyCluster(1)
    with serving(cluster) as servers:
        yield cluster, servers[0]


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError("server did not close the connection")


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT_S
    while len(data) < size and time.monotonic() < deadline:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def roundtrip(port: int, request: bytes, expected: bytes) -> None:
    with connect(port) as sock:
        sock.sendall(request)
        assert read_exactly(sock, len(expected)) == expected


def test_inline_and_multibulk_mixed_in_one_write(one: tuple[ToyCluster, RespServer]) -> None:
    _, server = one
    request = b'PING\r\nSET k "a b"\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nEXISTS k\n\r\n'
    roundtrip(server.port, request, b"+PONG\r\n+OK\r\n$3\r\na b\r\n:1\r\n")


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$x\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n:5\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*2\r\n$3\r\nGET\r\n*0\r\n", b"-ERR Protocol error: expected '$', got '*'\r\n"),
        (b"*1\r\n$-1\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$99999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*9999999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        # Issue #16: hiredis sized a 4 GB list from this header; now refused before.
        (b"*546681266\r\n$1\r\nx\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n*546681266\r\n", b"-ERR Protocol error: expected '$', got '*'\r\n"),
        (b'SET k "unterminated\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    ],
)
def test_malformed_input_gets_an_error_then_close(
    one: tuple[ToyCluster, RespServer], garbage: bytes, error: bytes
) -> None:
    _, server = one
    with connect(server.port) as bystander, connect(server.port) as sock:
        sock.sendall(b"PING\r\n" + garbage + b"PING\r\n")
        assert read_until_closed(sock) == b"+PONG\r\n" + error
        bystander.sendall(b"PING\r\n")
        assert read_exactly(bystander, 7) == b"+PONG\r\n"


def test_request_over_the_size_limit_is_cut_off() -> None:
    cluster = ToyCluster(1)
    with serving(cluster, request_bytes_max=10_000) as servers, connect(servers[0].port) as s:
        # Every argument is small; together they are over the limit.
        s.sendall(b"*1000\r\n$3\r\nDEL\r\n" + (b"$100\r\n" + b"k" * 100 + b"\r\n") * 120)
        assert read_until_closed(s) == b"-ERR Protocol error: request longer than 10000 bytes\r\n"
        assert not cluster.seen


def test_oversized_key_and_value_keep_the_connection() -> None:
    cluster = ToyCluster(1)
    with serving(cluster, key_bytes_max=10, value_bytes_max=100) as servers:
        r = redis.Redis(port=servers[0].port, protocol=2, socket_timeout=TIMEOUT_S)
        with pytest.raises(redis.ResponseError, match=r"key too long \(11 bytes, limit 10\)"):
            r.set("k" * 11, "v")
        with pytest.raises(redis.ResponseError, match=r"value too long \(101 bytes, limit 100\)"):
            r.set("k", "v" * 101)
        assert r.set("k", "v" * 100)
        assert r.get("k") == b"v" * 100
        r.close()


def test_pipeline_answers_in_order_with_slow_handler() -> None:
    cluster = ToyCluster(1, delay_s=0.001)
    with serving(cluster, pipeline_depth_max=8) as servers, connect(servers[0].port) as sock:
        count = 200
        request = b"".join(
            b"*3\r\n$3\r\nSET\r\n$%d\r\nk%d\r\n$%d\r\n%d\r\n"
            % (len(b"%d" % i) + 1, i, len(b"%d" % i), i)
            + b"PING\r\n"
            + b"*2\r\n$3\r\nGET\r\n$%d\r\nk%d\r\n" % (len(b"%d" % i) + 1, i)
            for i in range(count)
        )
        sock.sendall(request)
        expected = b"".join(
            b"+OK\r\n+PONG\r\n$%d\r\n%d\r\n" % (len(b"%d" % i), i) for i in range(count)
        )
        assert read_exactly(sock, len(expected)) == expected


def test_pipeline_depth_stops_reading() -> None:
    cluster = ToyCluster(1, hold=True)
    with serving(cluster, pipeline_depth_max=4) as servers, connect(servers[0].port) as sock:
        sock.sendall(b"GET k\r\n" * 20)
        answered = 0
        deadline = time.monotonic() + TIMEOUT_S
        while answered < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
            # Never more than depth_max requests taken and unanswered.
            taken = sum(isinstance(request, ClientOp) for *_, request in cluster.seen)
            assert taken - answered <= 4
            answered += cluster.release()
        assert answered == 20
        assert read_exactly(sock, 5 * 20) == b"$-1\r\n" * 20


def test_abrupt_disconnects_leave_the_server_healthy(one: tuple[ToyCluster, RespServer]) -> None:
    _, server = one
    for request in (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc", b"GET k\r\n" * 1000, b"PI"):
        sock = connect(server.port)
        sock.sendall(request)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST
    roundtrip(server.port, b"PING\r\n", b"+PONG\r\n")
    deadline = time.monotonic() + TIMEOUT_S
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.connections == 0


def test_connection_limit() -> None:
    cluster = ToyCluster(1)
    with serving(cluster, connections_max=2) as servers:
        port = servers[0].port
        with connect(port) as a, connect(port) as b:
            for sock in (a, b):
                sock.sendall(b"PING\r\n")
                assert read_exactly(sock, 7) == b"+PONG\r\n"
            with connect(port) as c:
                assert read_until_closed(c) == b"-ERR max number of clients reached\r\n"
        deadline = time.monotonic() + TIMEOUT_S
        while servers[0].connections and time.monotonic() < deadline:
            time.sleep(0.005)
        roundtrip(port, b"PING\r\n", b"+PONG\r\n")


def test_quit_closes_after_the_replies(one: tuple[ToyCluster, RespServer]) -> None:
    _, server = one
    with connect(server.port) as sock:
        sock.sendall(b"PING\r\nQUIT\r\nPING\r\n")
        assert read_until_closed(sock) == b"+PONG\r\n+OK\r\n"


def test_handler_failure_is_an_error_reply() -> None:
    def broken(state: object, request: object) -> bytes:
        raise RuntimeError("boom")

    cluster = ToyCluster(1)
    with serving(cluster) as servers:
        servers[0].handler = broken
        roundtrip(
            servers[0].port,
            b"GET k\r\nPING\r\n",
            b"-ERR internal error: RuntimeError: boom\r\n+PONG\r\n",
        )


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py(one: tuple[ToyCluster, RespServer], protocol: int) -> None:
    _, server = one
    r = redis.Redis(port=server.port, protocol=protocol, socket_timeout=TIMEOUT_S)
    assert r.ping()
    assert r.set("a", "1")
    assert r.get("a") == b"1"
    assert r.get("missing") is None
    assert r.set("a", "2", nx=True) is None
    assert r.set("a", "2", xx=True)
    assert r.set("a", "3", get=True) == b"2"
    assert r.execute_command("SET", "a", "4", "IFEQ", "3") is True
    assert r.execute_command("SET", "a", "5", "IFEQ", "3") is None
    assert r.exists("a", "{a}x") == 1
    assert r.delete("a", "{a}x") == 1
    assert r.exists("a") == 0
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        r.delete("a", "b")
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.set("a", "1", ex=-5)
    assert r.config_get("save") == {"save": ""}
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"p{i}", i)
        pipe.get(f"p{i}")
    assert pipe.execute() == [x for i in range(50) for x in (True, str(i).encode())]
    assert "redis_version" in r.info()
    r.close()


def test_redis_cluster_client_follows_moved_and_reads_replicas() -> None:
    cluster = ToyCluster(3)
    with serving(cluster) as servers:
        rc = RedisCluster(host="127.0.0.1", port=servers[0].port, socket_timeout=TIMEOUT_S)
        assert len(rc.get_nodes()) == 3
        for i in range(30):
            owner = cluster.topology.owner(rc.keyslot(f"key{i}"))
            assert owner is not None
            expected = cluster.topology.nodes[owner.primary].port
            assert rc.get_node_from_key(f"key{i}").port == expected
            assert rc.set(f"key{i}", i)
        assert all(rc.get(f"key{i}") == str(i).encode() for i in range(30))
        assert rc.delete("key0") == 1
        rc.close()
        # A client with a stale map is redirected (MOVED) to the owner.
        plain = redis.Redis(port=servers[0].port, socket_timeout=TIMEOUT_S)
        slot = int(plain.execute_command("CLUSTER KEYSLOT", "key1"))
        owner = cluster.topology.owner(slot)
        assert owner is not None
        if owner.primary != cluster.names[0]:
            with pytest.raises(redis.exceptions.MovedError):
                plain.get("key1")
        plain.close()
        readers = RedisCluster(
            host="127.0.0.1",
            port=servers[0].port,
            load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN_REPLICAS,
            socket_timeout=TIMEOUT_S,
        )
        for i in range(1, 30):
            assert readers.get(f"key{i}") == str(i).encode()
        readers.close()
        assert any(readonly for _, _, readonly, _ in cluster.seen)


# `make test` installs redis-tools; under CI a missing tool fails instead of skipping.
REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
MISSING_TOOLS_FAIL = os.environ.get("CI") == "true"


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


@pytest.mark.skipif(
    REDIS_CLI is None and not MISSING_TOOLS_FAIL,
    reason="redis-cli not found (apt-get install redis-tools)",
)
def test_redis_cli() -> None:
    cluster = ToyCluster(3)
    with serving(cluster) as servers:
        port = str(servers[0].port)
        assert run("redis-cli", "-p", port, "PING") == "PONG\n"
        for i in range(10):
            assert run("redis-cli", "-c", "-p", port, "SET", f"k{i}", f"v{i}") == "OK\n"
        assert run("redis-cli", "-c", "-p", port, "GET", "k3") == "v3\n"
        assert run("redis-cli", "-p", port, "CLUSTER", "KEYSLOT", "foo") == "12182\n"
        nodes = run("redis-cli", "-p", port, "CLUSTER", "NODES").splitlines()
        assert len(nodes) == 3
        assert sum("myself" in line for line in nodes) == 1
        assert "unknown command 'NOPE'" in run("redis-cli", "-p", port, "NOPE")


@pytest.mark.skipif(
    REDIS_BENCHMARK is None and not MISSING_TOOLS_FAIL,
    reason="redis-benchmark not found (apt-get install redis-tools)",
)
@pytest.mark.parametrize("extra", [[], ["--cluster"], ["-P", "8"]])
def test_redis_benchmark_runs(extra: list[str]) -> None:
    cluster = ToyCluster(3 if "--cluster" in extra else 1)
    with serving(cluster) as servers:
        out = run(
            "redis-benchmark", "-p", str(servers[0].port), "-t", "set,get,incr,mset,hset,sadd",
            "-n", "600", "-c", "4", "-q", *extra,
        )  # fmt: skip
        for test in ("SET:", "GET:", "INCR:", "MSET (10 keys):", "HSET:", "SADD:"):
            assert test in out
        assert len(cluster.data) > 0
        counters = [
            value
            for key, (value, _) in cluster.data.items()
            if key.startswith(b"counter:") and isinstance(value, bytes)
        ]
        assert counters and sum(int(value) for value in counters) == 600  # every INCR once
