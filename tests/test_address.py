"""The one address parser (planaria.address) and the places that use it: the same text
means the same address, and the same mistake gets the same error, wherever it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from planaria.address import format_address, parse_address
from planaria.cli._coord import parse_listen
from planaria.client import Client
from planaria.coord.memory import MemoryStore
from planaria.coord.memory_async import MemoryCoordinator
from planaria.coord.url import parse_url
from planaria.errors import UsageError
from planaria.node import Node


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:7001", ("127.0.0.1", 7001)),
        ("localhost:1", ("localhost", 1)),
        ("node-3.svc.cluster_local:65535", ("node-3.svc.cluster_local", 65535)),
        ("[::1]:7001", ("::1", 7001)),
        ("[2001:db8::7]:80", ("2001:db8::7", 80)),
        ("[fe80::1%eth0]:7001", ("fe80::1%eth0", 7001)),
        ("::1:7001", ("::1", 7001)),  # as Redis writes an IPv6 node in MOVED
    ],
)
def test_addresses_parse(text: str, parsed: tuple[str, int]) -> None:
    assert parse_address(text) == parsed
    assert parse_address(format_address(*parsed)) == parsed  # written back, it reads the same


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("localhost", "no port"),
        ("[::1]", "no port"),
        ("host:", "no port after ':'"),
        (":7001", "no host"),
        ("", "no host"),
        ("[]:7001", "'' in brackets is not an IPv6 address"),
        ("host:0", "bad port 0: only an address to listen on may use 0"),
        ("host:65536", "bad port 65536: above 65535"),
        ("host:70000", "bad port 70000"),
        ("host:x", "bad port 'x': not a number"),
        ("host:-1", "bad port '-1': not a number"),
        ("host: 7001", "bad port ' 7001': not a number"),
        ("host:٣", "bad port '٣': not a number"),  # a digit to str.isdigit, not a port
        ("fe80::1", "an IPv6 host goes in brackets"),
        ("[::1:7001", "no ']'"),
        ("[::1]7001", "'7001' after ']'"),
        ("[db.local]:7001", "'db.local' in brackets is not an IPv6 address"),
        ("my host:7001", "'my host' is not a host name or IP address"),
        ("user@host:7001", "is not a host name or IP address"),
    ],
)
def test_malformed_addresses_say_what_is_wrong_and_quote_the_text(text: str, says: str) -> None:
    with pytest.raises(UsageError, match="is not HOST:PORT") as caught:
        parse_address(text)
    assert says in str(caught.value)
    assert repr(text) in str(caught.value)


def test_the_error_names_what_the_address_is() -> None:
    with pytest.raises(UsageError, match=r"^seed address 'h:0' is not HOST:PORT"):
        parse_address("h:0", what="seed address")
    with pytest.raises(UsageError, match="must be a HOST:PORT string, got 7001"):
        parse_address(7001)  # type: ignore[arg-type]  # what an untyped caller may pass


def test_port_zero_only_where_one_listens_and_the_default_port_only_when_given() -> None:
    assert parse_address("0.0.0.0:0", listen=True) == ("0.0.0.0", 0)
    assert parse_address("[::]:0", listen=True) == ("::", 0)
    with pytest.raises(UsageError, match="above 65535"):
        parse_address("h:65536", listen=True)
    assert parse_address("h", default_port=2181) == ("h", 2181)
    assert parse_address("[::1]", default_port=2181) == ("::1", 2181)
    assert parse_address("h:1", default_port=2181) == ("h", 1)
    with pytest.raises(UsageError, match="no port after ':'"):
        parse_address("h:", default_port=2181)


# --- every user takes the same rule ------------------------------------------------------


def test_the_client_the_node_and_the_coordinator_refuse_the_same_bad_port(
    tmp_path: Path,
) -> None:
    with pytest.raises(UsageError, match="'h:65536' is not HOST:PORT"):
        Client("h:65536")
    with pytest.raises(UsageError, match="'h:65536' is not HOST:PORT"):
        parse_listen("h:65536")
    with pytest.raises(UsageError, match="'h:65536' is not HOST:PORT"):
        parse_url("zk://h:65536")
    with pytest.raises(UsageError, match="'h:65536' is not HOST:PORT"):
        parse_url("planaria://h:65536")
    with pytest.raises(UsageError, match="'h:65536' is not HOST:PORT"):
        Node(
            "n1",
            listen="h:65536",
            coordinator=MemoryCoordinator(MemoryStore()),
            data_dir=tmp_path,
        )


def test_port_zero_is_for_listening_not_for_connecting(tmp_path: Path) -> None:
    node = Node(
        "n1",
        listen="[::1]:0",
        coordinator=MemoryCoordinator(MemoryStore()),
        data_dir=tmp_path,
    )
    assert (node.host, node.port, node.bus_host, node.bus_port) == ("::1", 0, "::1", 0)
    assert node.address == "[::1]:0"  # what it registers parses back
    assert parse_listen(":0") == ("127.0.0.1", 0)
    with pytest.raises(UsageError, match="only an address to listen on may use 0"):
        Client("127.0.0.1:0")
    with pytest.raises(UsageError, match="only an address to listen on may use 0"):
        parse_url("planaria://127.0.0.1:0")


def test_coordinator_urls_write_ipv6_servers_so_they_parse_back() -> None:
    parsed = parse_url("zk://[::1]:2181,[2001:db8::2]/c")
    assert parsed.endpoints == (("::1", 2181), ("2001:db8::2", 2181))
    assert str(parsed) == "zk://[::1]:2181,[2001:db8::2]:2181/c"
    assert parse_url(str(parsed)) == parsed
    planaria = parse_url("planaria://[::1]")
    assert (planaria.host, planaria.port, str(planaria)) == ("::1", 7000, "planaria://[::1]:7000")
