"""Network partitions for the chaos harness, three ways (``--net``):

``netns`` (root; the default for root)
    :class:`NetnsNet`: one network namespace per node, created by the harness, each with a
    veth link into a bridge of the run's own on a private ``10.x.y.0/24`` it picks; a node
    listens on its namespace's address, processes outside any node (the harness's clients,
    planaria's coordinator) stay in the root namespace and reach the nodes over the bridge.
    A partition is iptables DROP rules inside the cut nodes' namespaces (their own tables:
    nothing of the host's is touched but one FORWARD accept when br_netfilter is on).
``iptables`` (root)
    :class:`IptablesNet`: processes stay on loopback, each node's in a net_cls cgroup of its
    own; a partition is DROP rules matched by cgroup (below).
``proxy`` (anyone; the default otherwise)
    :class:`planaria.chaos.proxy.ProxyNet`: a fault-injecting TCP proxy on every link.

All three cut the same shape: any set of nodes from any other (and from planaria's
coordinator), both directions, every connection whoever opened it, while the clients still
reach every node (the split Jepsen makes). Every name is unique per run; :meth:`close`
removes everything and is idempotent; the harness calls it from ``finally`` (Ctrl-C too).

iptables method in detail: each node's processes go into a cgroup of their own under a
net_cls hierarchy this module mounts privately (a per-run temporary mount point), with a
class id unique to the run. A partition between two groups is DROP rules in a chain of the
run's own (``chaos-<id>``, jumped to from OUTPUT), for each direction: packets a group's
processes send to a listening port of the other group, and packets they send on connections
the other group opened. The second needs to know who opened a connection: a rule in
``chaos-<id>-m`` marks each connection (connmark) with the class id of the group whose
process sent its first packet in the original direction; the connection tracking it relies
on is switched on before the target starts, so the original direction is the opener's.
Moving a process into a net_cls cgroup retags the sockets it already has, so a node can be
grouped after it started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from planaria.errors import PlanariaError, UsageError

__all__ = [
    "LOOPBACK",
    "NET_METHODS",
    "IptablesNet",
    "Net",
    "NetError",
    "NetnsNet",
    "NetnsPlan",
    "Placement",
    "choose_method",
    "make_net",
    "netns_supported",
    "partitions_supported",
    "pick_subnet",
    "plan_netns",
]

NET_METHODS: Final = ("auto", "netns", "iptables", "proxy")

_CLASS_MAJOR: Final = 0x7CA0


class NetError(PlanariaError):
    """A partition could not be set up or removed (the message has iptables' answer)."""


@dataclass(frozen=True)
class Placement:
    """Where a target's processes run: a node's listening host and the launcher its
    processes start under (``ip netns exec NS``), and the host processes outside the nodes
    (planaria's coordinator) listen on. Unlisted nodes: loopback, no launcher."""

    hosts: Mapping[str, str] = field(default_factory=dict)
    prefixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    outside_host: str = "127.0.0.1"

    def host(self, node: str) -> str:
        return self.hosts.get(node, "127.0.0.1")

    def prefix(self, node: str) -> tuple[str, ...]:
        return self.prefixes.get(node, ())


LOOPBACK: Final = Placement()


class Net(Protocol):
    """A network method: where processes go, and the partitions between groups of them."""

    method: str

    def placement(self) -> Placement: ...

    def group(self, name: str, pids: Iterable[int], ports: Sequence[int]) -> None:
        """Group ``name`` is the processes ``pids`` listening on ``ports`` (a node's, or a
        bystander's such as the coordinator); call again after a restart."""

    def partition(self, side_a: Sequence[str], side_b: Sequence[str]) -> None:
        """Cut every group of ``side_a`` off from every group of ``side_b``, both ways."""

    def heal(self) -> None: ...

    def close(self) -> None: ...


def choose_method(requested: str, *, root: bool) -> str:
    """The method ``--net requested`` means: ``auto`` is netns for root, else proxy."""
    if requested not in NET_METHODS:
        raise UsageError(f"unknown --net {requested!r} (known: {', '.join(NET_METHODS)})")
    if requested == "auto":
        return "netns" if root else "proxy"
    if requested in ("netns", "iptables") and not root:
        raise UsageError(f"--net {requested} needs root; --net proxy works for anyone")
    return requested


def make_net(method: str, nodes: Sequence[str]) -> Net:
    """A fresh network of ``method`` (after :func:`choose_method`) for ``nodes``."""
    if method == "netns":
        return NetnsNet(nodes)
    if method == "iptables":
        return IptablesNet()
    if method == "proxy":
        from planaria.chaos.proxy import ProxyNet  # noqa: PLC0415

        return ProxyNet()
    raise UsageError(f"unknown network method {method!r}")


def netns_supported() -> str | None:
    """None when this process can make namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root; --net proxy works for anyone"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables)"
    return None


def partitions_supported() -> str | None:
    """None when this process can make iptables partitions, else why not."""
    if os.geteuid() != 0:
        return "partitions need root (iptables and cgroups); run as root or drop 'partition'"
    if shutil.which("iptables") is None:
        return "iptables is not installed (apt-get install iptables)"
    if not Path("/proc/cgroups").exists() or "net_cls" not in Path("/proc/cgroups").read_text():
        return "the kernel has no net_cls cgroup controller"
    return None


def _iptables(*args: str) -> None:
    done = subprocess.run(
        ["iptables", "-w", "5", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise NetError(f"iptables {' '.join(args)}: {done.stderr.strip() or done.returncode}")


class IptablesNet:
    """Groups of processes and the partitions between them (see the module docstring)."""

    method = "iptables"

    def placement(self) -> Placement:
        return LOOPBACK

    def __init__(self) -> None:
        reason = partitions_supported()
        if reason is not None:
            raise NetError(reason)
        self.run_id = secrets.token_hex(3)
        self.chain = f"chaos-{self.run_id}"
        self.mark_chain = f"chaos-{self.run_id}-m"
        self._mount = Path(tempfile.mkdtemp(prefix=f"planaria-chaos-netcls-{self.run_id}-"))
        self._root = self._mount / f"chaos-{self.run_id}"
        self._groups: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> classid, ports
        self._mounted = False
        self._chain_made = False
        self._minor = int(self.run_id, 16) % 0xF000  # unique-ish per run
        try:
            subprocess.run(
                ["mount", "-t", "cgroup", "-o", "net_cls", "none", str(self._mount)],
                check=True,
                capture_output=True,
                text=True,
            )
            self._mounted = True
            self._root.mkdir()
            _iptables("-N", self.chain)
            _iptables("-N", self.mark_chain)
            self._chain_made = True
            _iptables("-I", "OUTPUT", "-j", self.chain)
            _iptables("-I", "OUTPUT", "-j", self.mark_chain)  # first: mark, then cut
            # A conntrack rule from the start, so every connection of the target is tracked
            # from its first packet (its original direction is then its opener's).
            _iptables(
                "-A", self.mark_chain, "-m", "conntrack", "--ctstate", "INVALID", "-j", "RETURN"
            )  # fmt: skip
        except (subprocess.CalledProcessError, OSError, NetError) as exc:
            self.close()
            detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else exc
            raise NetError(f"could not set up partitions: {detail}") from exc

    def group(self, name: str, pids: Iterable[int], ports: Sequence[int]) -> None:
        """Put ``pids`` in group ``name`` (created on first use) whose processes listen on
        ``ports``; call again after a restart with the new pids."""
        path = self._root / name
        if name not in self._groups:
            path.mkdir(exist_ok=True)
            classid = (_CLASS_MAJOR << 16) | ((self._minor + len(self._groups)) & 0xFFFF)
            (path / "net_cls.classid").write_text(str(classid))
            self._groups[name] = (classid, tuple(ports))
            _iptables(
                "-A", self.mark_chain, "-m", "cgroup", "--cgroup", hex(classid),
                "-m", "conntrack", "--ctdir", "ORIGINAL", "-m", "connmark", "--mark", "0",
                "-j", "CONNMARK", "--set-mark", hex(classid),
            )  # fmt: skip
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, OSError):
                (path / "cgroup.procs").write_text(str(pid))

    def partition(self, side_a: Sequence[str], side_b: Sequence[str]) -> None:
        """Cut every group of ``side_a`` off from every group of ``side_b``, both ways."""
        for a in side_a:
            for b in side_b:
                self._drop(a, b)
                self._drop(b, a)

    def _drop(self, sender: str, receiver: str) -> None:
        classid = self._groups[sender][0]
        receiver_id, receiver_ports = self._groups[receiver]
        ports = ",".join(str(p) for p in receiver_ports)
        sent_by = ["-p", "tcp", "-m", "cgroup", "--cgroup", hex(classid)]
        # to the receiver's listening ports; and on connections the receiver opened
        _iptables("-A", self.chain, *sent_by, "-m", "multiport", "--dports", ports, "-j", "DROP")
        _iptables(
            "-A", self.chain, *sent_by, "-m", "connmark", "--mark", hex(receiver_id), "-j", "DROP"
        )  # fmt: skip

    def heal(self) -> None:
        _iptables("-F", self.chain)

    def close(self) -> None:
        if self._chain_made:
            for chain in (self.chain, self.mark_chain):
                with contextlib.suppress(NetError):
                    _iptables("-D", "OUTPUT", "-j", chain)
                with contextlib.suppress(NetError):
                    _iptables("-F", chain)
                with contextlib.suppress(NetError):
                    _iptables("-X", chain)
            self._chain_made = False
        if self._mounted:
            # Processes still in a group go back to the root cgroup so the group can go.
            for name in list(self._groups):
                path = self._root / name
                with contextlib.suppress(OSError):
                    for pid in (path / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            (self._mount / "cgroup.procs").write_text(pid)
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                self._root.rmdir()
            subprocess.run(["umount", str(self._mount)], capture_output=True, check=False)
            self._mounted = False
        with contextlib.suppress(OSError):
            self._mount.rmdir()


_SUBNET_FIRST_OCTET: Final = (160, 254)  # 10.160.0.0 .. 10.254.255.0: rarely anyone's
_NODE_HOST_BASE: Final = 10  # node i (from 1) is .10+i; the bridge is .1


@dataclass(frozen=True)
class NetnsPlan:
    """The names and addresses of one run's namespaces (:func:`plan_netns`)."""

    bridge: str
    bridge_address: str  # the root namespace's address on the bridge
    prefix_len: int
    namespaces: dict[str, str]  # node -> namespace
    host_links: dict[str, str]  # node -> the veth end on the bridge (root namespace)
    addresses: dict[str, str]  # node -> its address inside its namespace


def plan_netns(run_id: str, nodes: Sequence[str], subnet: str) -> NetnsPlan:
    """Names unique to ``run_id`` (interface names fit Linux's 15 characters) and one
    address per node in ``subnet`` (a /24)."""
    network = ipaddress.ip_network(subnet)
    if network.prefixlen != 24 or network.version != 4:
        raise UsageError(f"the namespaces' subnet is an IPv4 /24, not {subnet}")
    if not run_id.isalnum() or len(run_id) > 6:
        raise UsageError(f"a run id is at most 6 letters and digits, not {run_id!r}")
    if len(nodes) > 200:
        raise UsageError(f"at most 200 nodes in namespaces, not {len(nodes)}")
    base = network.network_address
    names = list(nodes)
    return NetnsPlan(
        bridge=f"pcb{run_id}",
        bridge_address=str(base + 1),
        prefix_len=24,
        namespaces={node: f"planaria-chaos-{run_id}-{node}" for node in names},
        host_links={node: f"pc{run_id}v{i}" for i, node in enumerate(names, 1)},
        addresses={node: str(base + _NODE_HOST_BASE + i) for i, node in enumerate(names, 1)},
    )


def pick_subnet(in_use: str, rng: random.Random) -> str:
    """A 10.x.y.0/24 that no address in ``in_use`` (``ip -o -4 addr`` output) is in."""
    for _ in range(1000):
        subnet = f"10.{rng.randint(*_SUBNET_FIRST_OCTET)}.{rng.randint(0, 255)}.0/24"
        if f" {subnet.rsplit('.', 1)[0]}." not in in_use:
            return subnet
    raise NetError("no free 10.x.y.0/24 for the namespaces")


def _run(*argv: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


class NetnsNet:
    """One network namespace per node on a bridge of the run's own (see the module
    docstring). Build the target with :meth:`placement`; bystanders (processes outside
    the nodes) stay in the root namespace on the bridge address."""

    method = "netns"

    def __init__(self, nodes: Sequence[str]) -> None:
        reason = netns_supported()
        if reason is not None:
            raise NetError(reason)
        self.run_id = secrets.token_hex(3)
        in_use = _run("ip", "-o", "-4", "addr", "show")
        subnet = pick_subnet(in_use, random.Random(secrets.randbits(64)))
        self.plan = plan_netns(self.run_id, nodes, subnet)
        self._made_namespaces: list[str] = []
        self._made_links: list[str] = []
        self._forward_rule: tuple[str, ...] | None = None
        self._bystander_ports: dict[str, tuple[int, ...]] = {}
        self._cut: set[str] = set()  # namespaces with rules in place
        try:
            self._build()
        except (NetError, OSError) as exc:
            self.close()
            raise NetError(f"could not set up the network namespaces: {exc}") from exc

    def _build(self) -> None:
        plan = self.plan
        _run("ip", "link", "add", plan.bridge, "type", "bridge")
        self._made_links.append(plan.bridge)
        _run("ip", "addr", "add", f"{plan.bridge_address}/{plan.prefix_len}", "dev", plan.bridge)
        _run("ip", "link", "set", plan.bridge, "up")
        # With br_netfilter loaded (Docker's hosts) bridged packets go through the host's
        # FORWARD chain, often with a DROP policy: let the run's bridge through.
        bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if bridge_nf.exists() and bridge_nf.read_text().strip() == "1":
            rule = ("FORWARD", "-i", plan.bridge, "-o", plan.bridge, "-j", "ACCEPT")
            _iptables("-I", *rule)
            self._forward_rule = rule
        for node, namespace in plan.namespaces.items():
            host_link = plan.host_links[node]
            _run("ip", "netns", "add", namespace)
            self._made_namespaces.append(namespace)
            _run("ip", "link", "add", host_link, "type", "veth", "peer", "name", f"{host_link}p")
            self._made_links.append(host_link)
            _run("ip", "link", "set", f"{host_link}p", "netns", namespace)
            _run("ip", "link", "set", host_link, "master", plan.bridge, "up")
            inside = ("ip", "-n", namespace)
            _run(*inside, "link", "set", f"{host_link}p", "name", "eth0")
            _run(*inside, "addr", "add", f"{plan.addresses[node]}/{plan.prefix_len}", "dev", "eth0")
            _run(*inside, "link", "set", "eth0", "up")
            _run(*inside, "link", "set", "lo", "up")
            _run(*inside, "route", "add", "default", "via", plan.bridge_address)

    def placement(self) -> Placement:
        plan = self.plan
        return Placement(
            hosts=dict(plan.addresses),
            prefixes={n: ("ip", "netns", "exec", ns) for n, ns in plan.namespaces.items()},
            outside_host=plan.bridge_address,
        )

    def group(self, name: str, pids: Iterable[int], ports: Sequence[int]) -> None:
        # A node is its namespace; a bystander is known by its ports on the bridge address.
        if name not in self.plan.namespaces:
            self._bystander_ports[name] = tuple(ports)

    def partition(self, side_a: Sequence[str], side_b: Sequence[str]) -> None:
        for a in side_a:
            for b in side_b:
                if a in self.plan.namespaces:
                    self._drop(a, b)
                elif b in self.plan.namespaces:
                    self._drop(b, a)
                else:
                    raise UsageError(f"cannot cut {a} from {b}: neither is a node")

    def _drop(self, node: str, other: str) -> None:
        """Rules in ``node``'s namespace dropping everything to and from ``other``."""
        namespace = self.plan.namespaces[node]
        rules: list[tuple[str, ...]] = []
        if other in self.plan.addresses:
            address = self.plan.addresses[other]
            rules += [("INPUT", "-s", address), ("OUTPUT", "-d", address)]
        else:
            ports = ",".join(str(p) for p in self._bystander_ports[other])
            bridge = self.plan.bridge_address
            tcp = ("-p", "tcp", "-m", "multiport")
            rules += [
                ("INPUT", "-s", bridge, *tcp, "--sports", ports),
                ("OUTPUT", "-d", bridge, *tcp, "--dports", ports),
            ]
        self._cut.add(namespace)
        for rule in rules:
            _run("ip", "netns", "exec", namespace, "iptables", "-w", "5", "-A", *rule, "-j", "DROP")

    def heal(self) -> None:
        for namespace in sorted(self._cut):
            _run("ip", "netns", "exec", namespace, "iptables", "-w", "5", "-F")
        self._cut.clear()

    def close(self) -> None:
        """Remove the links, the bridge, the namespaces and the FORWARD rule (idempotent;
        every step is tried even when one fails)."""
        if self._forward_rule is not None:
            with contextlib.suppress(NetError):
                _iptables("-D", *self._forward_rule)
            self._forward_rule = None
        for link in reversed(self._made_links):  # veths (both ends go), then the bridge
            with contextlib.suppress(NetError):
                _run("ip", "link", "del", link)
        self._made_links.clear()
        for namespace in self._made_namespaces:
            with contextlib.suppress(NetError):
                _run("ip", "netns", "del", namespace)
        self._made_namespaces.clear()
        self._cut.clear()
