"""Network methods: choosing one, the namespace plan, and (as root) a real run's namespaces:
connected, cut both ways by a partition, healed, and gone after close."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from planaria.chaos.net import (
    LOOPBACK,
    NetError,
    NetnsNet,
    Placement,
    choose_method,
    pick_subnet,
    plan_netns,
)
from planaria.errors import UsageError


def test_auto_is_netns_for_root_and_the_proxy_otherwise() -> None:
    assert choose_method("auto", root=True) == "netns"
    assert choose_method("auto", root=False) == "proxy"
    assert choose_method("proxy", root=True) == "proxy"
    assert choose_method("iptables", root=True) == "iptables"


@pytest.mark.parametrize("method", ["netns", "iptables"])
def test_root_methods_refuse_other_users(method: str) -> None:
    with pytest.raises(UsageError, match="needs root"):
        choose_method(method, root=False)


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown --net"):
        choose_method("carrier-pigeon", root=True)


def test_the_plan_names_are_unique_per_run_and_fit_interface_names() -> None:
    nodes = [f"n{i}" for i in range(1, 11)]
    plan = plan_netns("a1b2c3", nodes, "10.200.7.0/24")
    other = plan_netns("d4e5f6", nodes, "10.200.7.0/24")
    assert plan.bridge_address == "10.200.7.1"
    assert plan.addresses["n1"] == "10.200.7.11" and plan.addresses["n10"] == "10.200.7.20"
    assert len(set(plan.addresses.values())) == 10
    names = [plan.bridge, *plan.host_links.values()]
    assert all(len(name) + 1 <= 15 for name in names)  # the veth peer adds a "p"
    assert not set(names) & {other.bridge, *other.host_links.values()}
    assert not set(plan.namespaces.values()) & set(other.namespaces.values())


@pytest.mark.parametrize(
    ("run_id", "subnet"), [("a1b2c3", "10.1.0.0/16"), ("a-b", "10.1.2.0/24"), ("abc", "::/120")]
)
def test_a_bad_plan_is_refused(run_id: str, subnet: str) -> None:
    with pytest.raises(UsageError):
        plan_netns(run_id, ["n1"], subnet)


def test_the_subnet_avoids_addresses_in_use() -> None:
    first = pick_subnet("", random.Random(1))
    in_use = f"2: br0    inet {first.replace('.0/24', '.1/24')} scope global br0\n"
    second = pick_subnet(in_use, random.Random(1))
    assert second != first and second.endswith(".0/24") and second.startswith("10.")
    everything = "".join(f" inet 10.{a}.{b}.5/24\n" for a in range(160, 255) for b in range(256))
    with pytest.raises(NetError, match="no free"):
        pick_subnet(everything, random.Random(1))


def test_placement_defaults_to_loopback() -> None:
    placement = Placement(hosts={"n1": "10.9.9.11"}, prefixes={"n1": ("ip", "netns", "exec", "x")})
    assert placement.host("n1") == "10.9.9.11" and placement.host("n2") == "127.0.0.1"
    assert placement.prefix("n2") == () and LOOPBACK.outside_host == "127.0.0.1"


_SERVE = """
import socket, sys
server = socket.socket()
server.bind((sys.argv[1], 7777))
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"hi")
    conn.close()
"""

_DIAL = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 7777), timeout=0.3) as conn:
        print(conn.recv(2).decode())
except OSError:
    print("cut")
"""


def _dial(net: NetnsNet, node: str, address: str) -> str:
    argv = ["ip", "netns", "exec", net.plan.namespaces[node], sys.executable, "-c", _DIAL]
    return subprocess.run([*argv, address], capture_output=True, text=True, check=True).stdout


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_namespaces_connect_partition_heal_and_vanish() -> None:
    net = NetnsNet(["n1", "n2"])
    server = None
    try:
        plan = net.plan
        placement = net.placement()
        assert placement.outside_host == plan.bridge_address
        assert placement.prefix("n2") == ("ip", "netns", "exec", plan.namespaces["n2"])
        server = subprocess.Popen(
            [*placement.prefix("n2"), sys.executable, "-c", _SERVE, placement.host("n2")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        address = placement.host("n2")
        assert _dial(net, "n1", address).strip() == "hi"
        net.partition(["n1"], ["n2"])
        assert _dial(net, "n1", address).strip() == "cut"
        assert _dial(net, "n2", address).strip() == "hi"  # inside n2 itself: not cut
        net.heal()
        assert _dial(net, "n1", address).strip() == "hi"
    finally:
        if server is not None:
            server.kill()
            server.wait()
        net.close()
    listed = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True
    ).stdout
    assert not any(ns in listed for ns in net.plan.namespaces.values())
    assert net.plan.bridge not in _links()
    net.close()  # idempotent
