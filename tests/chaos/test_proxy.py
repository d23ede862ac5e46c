"""The fault-injecting proxy: the link table and /proc/net/tcp parsing (pure), then the
proxy process on loopback: a connection from a grouped process (this one) is held by a
black-hole and flows again after the heal, closed by a drop, slowed by a delay; one from an
ungrouped process (a client) is never cut."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from planaria.chaos.proxy import LinkTable, ProxyNet, dialer_inode, parse_proc_net_tcp
from planaria.errors import UsageError

_PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 777 1
"""


def test_proc_net_tcp_lines_become_addresses_and_inodes() -> None:
    table = parse_proc_net_tcp(_PROC_NET_TCP)
    assert table[(("127.0.0.1", 8080), ("0.0.0.0", 0))] == 4242
    assert dialer_inode(_PROC_NET_TCP, ("127.0.0.1", 50000), ("127.0.0.1", 8080)) == 777
    assert dialer_inode(_PROC_NET_TCP, ("127.0.0.1", 50001), ("127.0.0.1", 8080)) is None


def test_the_link_table_is_symmetric_and_leaves_clients_alone() -> None:
    table = LinkTable()
    table.cut("n1", "n2")
    table.cut("n1", "coordinator", "delay", 50)
    assert table.mode("n2", "n1") == ("blackhole", 0.0)
    assert table.mode("coordinator", "n1") == ("delay", 50)
    assert table.mode("n2", "n3") == ("open", 0.0)
    assert table.mode(None, "n1") == ("open", 0.0)  # no group: a client
    assert LinkTable.from_json(table.to_json()) == table


@pytest.mark.parametrize(
    ("a", "b", "mode", "delay_ms"),
    [("n1", "n1", "drop", 0), ("n1", "n2", "sever", 0), ("n1", "n2", "delay", 0)],
)
def test_bad_links_are_refused(a: str, b: str, mode: str, delay_ms: float) -> None:
    with pytest.raises(UsageError):
        LinkTable().cut(a, b, mode, delay_ms)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    stop = threading.Event()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def proxy() -> Iterator[ProxyNet]:
    net = ProxyNet()
    yield net
    net.close()


def _round_trip(conn: socket.socket, data: bytes, timeout_s: float) -> bytes | None:
    conn.settimeout(timeout_s)
    conn.sendall(data)
    try:
        return conn.recv(4096)
    except TimeoutError:
        return None


def test_a_blackhole_holds_the_bytes_until_the_heal(proxy: ProxyNet, echo_port: int) -> None:
    port = proxy.listen("server", echo_port)
    proxy.group("me", [os.getpid()])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        assert _round_trip(conn, b"a", 2.0) == b"a"
        proxy.partition(["me"], ["server"])
        assert _round_trip(conn, b"b", 0.2) is None
        proxy.heal()
        conn.settimeout(2.0)
        assert conn.recv(4096) == b"b"  # held, not lost: TCP's retransmission after a heal


def test_a_drop_closes_the_link_and_refuses_new_ones(proxy: ProxyNet, echo_port: int) -> None:
    port = proxy.listen("server", echo_port)
    proxy.group("me", [os.getpid()])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        assert _round_trip(conn, b"a", 2.0) == b"a"
        proxy.partition(["server"], ["me"], mode="drop")
        conn.settimeout(2.0)
        assert conn.recv(4096) == b""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(2.0)
        assert conn.recv(4096) == b""


def test_a_delay_slows_every_chunk(proxy: ProxyNet, echo_port: int) -> None:
    port = proxy.listen("server", echo_port)
    proxy.group("me", [os.getpid()])
    proxy.partition(["me"], ["server"], mode="delay", delay_ms=60)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        started = time.monotonic()
        assert _round_trip(conn, b"a", 2.0) == b"a"
        assert time.monotonic() - started >= 0.12  # both ways


_CLIENT = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as conn:
    conn.sendall(b"x")
    print(conn.recv(10).decode())
"""


def test_an_ungrouped_client_is_never_cut(proxy: ProxyNet, echo_port: int) -> None:
    port = proxy.listen("server", echo_port)
    proxy.group("me", [os.getpid()])
    proxy.partition(["me"], ["server"])
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, str(port)],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.stdout.strip() == "x", done.stderr
