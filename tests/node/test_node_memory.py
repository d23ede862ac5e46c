"""maxmemory with the noeviction policy: past the limit a node refuses the commands that may
grow the data with Redis' OOM error, byte for byte; reads, deletes and expiry changes go on;
below it again, writes are taken again."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from planaria.errors import UsageError
from planaria.net.commands import ClientOp, Limits, parse_request
from planaria.node import NodeSettings, parse_memory
from planaria.node._memory import MemoryGauge, resident_bytes

from ._cluster import FAST, LocalCluster

pytestmark = pytest.mark.timeout(60)

OOM = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n"


def _op(*args: str) -> ClientOp:
    op = parse_request([a.encode() for a in args], Limits())
    assert isinstance(op, ClientOp)
    return op


def test_the_commands_refused_when_full_are_redis_denyoom_ones() -> None:
    for args in (
        ("set", "k", "v"), ("setnx", "k", "v"), ("setex", "k", "1", "v"), ("mset", "k", "v"),
        ("incr", "k"), ("incrbyfloat", "k", "1.5"), ("append", "k", "v"),
        ("setrange", "k", "0", "v"), ("getset", "k", "v"), ("decrby", "k", "2"),
        ("hset", "k", "f", "v"), ("hsetnx", "k", "f", "v"), ("hincrby", "k", "f", "1"),
        ("hincrbyfloat", "k", "f", "1"), ("sadd", "k", "m"), ("sinterstore", "k", "k"),
        ("sunionstore", "k", "k"), ("sdiffstore", "k", "k"),
    ):  # fmt: skip
        assert _op(*args).denied_when_full, args
    for args in (
        ("get", "k"), ("del", "k"), ("unlink", "k"), ("expire", "k", "10"), ("persist", "k"),
        ("getdel", "k"), ("ttl", "k"), ("exists", "k"), ("strlen", "k"), ("hdel", "k", "f"),
        ("srem", "k", "m"), ("spop", "k"), ("hget", "k", "f"), ("smembers", "k"),
    ):  # fmt: skip
        assert not _op(*args).denied_when_full, args


def test_the_gauge_is_full_only_past_a_limit() -> None:
    used = [100]
    gauge = MemoryGauge(150, read_bytes=lambda: used[0])
    assert gauge.used_bytes == 100 and not gauge.full
    used[0] = 151
    assert not gauge.full  # not read again yet
    gauge.refresh()
    assert gauge.full
    unlimited = MemoryGauge(0, read_bytes=lambda: 1 / 0)
    unlimited.refresh()  # nothing read without a limit
    assert not unlimited.full
    with pytest.raises(UsageError):
        MemoryGauge(-1)
    with pytest.raises(UsageError, match="maxmemory"):
        NodeSettings(maxmemory_bytes=-1)
    assert 10 << 20 < resident_bytes() < 64 << 30  # this very process


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("1000", 1000), ("1k", 1000), ("1kb", 1024), ("100MB", 100 << 20),
     ("2g", 2 * 10**9), ("2gb", 2 << 30), (" 5m ", 5 * 10**6)],
)  # fmt: skip
def test_memory_sizes_read_as_redis_configuration_does(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "x", "1tb", "-1", "1.5gb", "kb"])
def test_a_bad_memory_size_is_a_clear_error(text: str) -> None:
    with pytest.raises(UsageError, match="not a memory size"):
        parse_memory(text)


def _exchange(port: int, *commands: tuple[str, ...]) -> list[bytes]:
    """Each command's whole reply, read off one connection (RESP2 replies here are one
    line, or a bulk or an array of short bulks: read until the reply parses)."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for command in commands:
            parts = [f"*{len(command)}\r\n".encode()]
            for arg in command:
                parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
            sock.sendall(b"".join(parts))
            replies.append(_read_reply(reader))
    return replies


def _read_reply(reader: BinaryIO) -> bytes:
    line = reader.readline()
    if line[:1] == b"$" and line[1:3] != b"-1":
        return line + reader.read(int(line[1:]) + 2)
    if line[:1] == b"*":
        return line + b"".join(_read_reply(reader) for _ in range(int(line[1:])))
    return line


def test_a_full_node_refuses_growing_writes_and_serves_the_rest(tmp_path: Path) -> None:
    settings = replace(FAST, maxmemory_bytes=64 << 30)  # far above this process, at first

    async def scenario() -> None:
        cluster = LocalCluster(tmp_path, partitions=1, settings=settings)
        await cluster.start()
        try:
            await cluster.wait_for(cluster.all_serving, 30.0, "serving")
            primary = cluster.primary_of(0)
            assert primary is not None
            node = cluster.nodes[primary]
            loop = asyncio.get_running_loop()

            def exchange(*commands: tuple[str, ...]) -> list[bytes]:
                return _exchange(node.port, *commands)

            assert await loop.run_in_executor(
                None, exchange, ("set", "k", "v"), ("set", "gone", "soon")
            ) == [b"+OK\r\n", b"+OK\r\n"]
            node._memory.maxmemory_bytes = 1  # now any process is over it
            node._memory.refresh()
            replies = await loop.run_in_executor(
                None,
                exchange,
                ("set", "k", "w"),
                ("incr", "n"),
                ("append", "k", "more"),
                ("get", "k"),
                ("del", "gone"),
                ("expire", "k", "1000"),
                ("config", "get", "maxmemory-policy"),
                ("info", "memory"),
            )
            assert replies[:3] == [OOM, OOM, OOM]
            assert replies[3:6] == [b"$1\r\nv\r\n", b":1\r\n", b":1\r\n"]
            assert replies[6] == b"*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n"
            info = replies[7].decode()
            assert "maxmemory:1\r\n" in info and "maxmemory_policy:noeviction" in info
            assert "oom_refused:3" in info
            node._memory.maxmemory_bytes = 64 << 30  # room again: writes are taken
            node._memory.refresh()
            assert await loop.run_in_executor(None, exchange, ("set", "k", "w")) == [b"+OK\r\n"]
        finally:
            await cluster.close()

    asyncio.run(scenario())
