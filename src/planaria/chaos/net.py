"""Network partitions for processes on loopback: iptables DROP rules matched by net_cls
cgroup (root only).

Each node's processes go into a cgroup of their own under a net_cls hierarchy this module
mounts privately (a per-run temporary mount point), with a class id unique to the run. A
partition between two groups is DROP rules in a chain of the run's own (``chaos-<id>``,
jumped to from OUTPUT), for each direction: packets a group's processes send to a listening
port of the other group, and packets they send on connections the other group opened. The
second needs to know who opened a connection: a rule in ``chaos-<id>-m`` marks each
connection (connmark) with the class id of the group whose process sent its first packet in
the original direction; the connection tracking it relies on is switched on before the
target starts, so the original direction is the opener's. Then nothing flows between the
sides on any connection (a replica's stream from its primary, a peer's push on a stream the
other dialed), while clients (the harness, in no group) still reach every node: the split
Jepsen makes. Moving a process into a net_cls cgroup retags the sockets it already has, so
a node can be grouped after it started.

:meth:`IptablesNet.close` removes the rules, the chain, the cgroups and the mount; it is
idempotent and runs from the harness's ``finally`` (also on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from planaria.errors import PlanariaError

__all__ = ["IptablesNet", "NetError", "partitions_supported"]

_CLASS_MAJOR: Final = 0x7CA0


class NetError(PlanariaError):
    """A partition could not be set up or removed (the message has iptables' answer)."""


def partitions_supported() -> str | None:
    """None when this process can make partitions, else why not."""
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
