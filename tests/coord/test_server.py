"""Coordinator URLs and the ``planaria coordinator`` process (start, serve, SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from planaria.cli._coord import parse_listen
from planaria.coord import MemoryCoordinator
from planaria.coord.remote import RemoteCoordinator
from planaria.coord.url import CoordinatorUrl, connect, parse_url
from planaria.errors import UsageError


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("planaria://127.0.0.1:7100", CoordinatorUrl("planaria", "127.0.0.1", 7100)),
        ("planaria://localhost", CoordinatorUrl("planaria", "localhost", 7000)),
        ("planaria://[::1]:7001/", CoordinatorUrl("planaria", "::1", 7001)),
        ("memory://", CoordinatorUrl("memory", "default", 0)),
        ("memory://t1", CoordinatorUrl("memory", "t1", 0)),
    ],
)
def test_urls_parse(url: str, parsed: CoordinatorUrl) -> None:
    assert parse_url(url) == parsed


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("zk://127.0.0.1:99999", "bad port"),
        ("etcd://h1:2379,,h2:2379", "empty host"),
        ("127.0.0.1:7000", "planaria://HOST:PORT"),
        ("http://x:1", "unknown scheme"),
        ("planaria://x:99999", "bad port"),
        ("planaria://:7000", "no host"),
        ("planaria://x:1/path", "no path"),
    ],
)
def test_bad_urls_say_why(url: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_url(url)


def test_connect_builds_the_right_client() -> None:
    async def main() -> None:
        remote = connect("planaria://127.0.0.1:7999", request_timeout_s=0.5)
        assert isinstance(remote, RemoteCoordinator) and remote.port == 7999
        await remote.close()
        a, b = connect("memory://shared"), connect("memory://shared")
        assert isinstance(a, MemoryCoordinator) and isinstance(b, MemoryCoordinator)
        await a.create("/k", b"1")
        item = await b.get("/k")  # one store per name
        assert item is not None and item.value == b"1"
        other = connect("memory://elsewhere")
        assert await other.get("/k") is None
        for client in (a, b, other):
            await client.close()

    asyncio.run(main())


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:7100") == ("0.0.0.0", 7100)
    assert parse_listen(":0") == ("127.0.0.1", 0)
    assert parse_listen("localhost") == ("localhost", 7000)
    with pytest.raises(UsageError):
        parse_listen("host:port")


def test_coordinator_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "planaria.cli", "coordinator", "--listen", "127.0.0.1:0",
         "--data", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on planaria://127.0.0.1:" in line, line
        url = line.split()[4]

        async def use() -> None:
            async with connect(url) as client:
                await client.create("/cluster", b"{}")

        asyncio.run(use())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert any(segment.stat().st_size > 0 for segment in (tmp_path / "coord-log").glob("seg-*"))
