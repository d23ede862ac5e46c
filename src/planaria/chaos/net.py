"""Network partitions for processes on loopback: iptables DROP rules matched by net_cls
cgroup (root only).

Each node's processes go into a cgroup of their own under a net_cls hierarchy this module
mounts privately (a per-run temporary mount point), with a class id unique to the run. A
partition between two groups is two rules in a chain of the run's own (``chaos-<id>``,
jumped to from OUTPUT): packets sent by one group's processes to a listening port of the
other are dropped, both ways. Every connection between nodes goes to some node's listening
port, so nothing flows between the sides, while clients (the harness, in no group) still
reach every node: the split Jepsen makes. Moving a process into a net_cls cgroup retags
the sockets it already has, so a node can be grouped after it started.

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
            self._chain_made = True
            _iptables("-I", "OUTPUT", "-j", self.chain)
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
        ports = ",".join(str(p) for p in self._groups[receiver][1])
        _iptables(
            "-A", self.chain, "-p", "tcp", "-m", "cgroup", "--cgroup", hex(classid),
            "-m", "multiport", "--dports", ports, "-j", "DROP",
        )  # fmt: skip

    def heal(self) -> None:
        _iptables("-F", self.chain)

    def close(self) -> None:
        if self._chain_made:
            with contextlib.suppress(NetError):
                _iptables("-D", "OUTPUT", "-j", self.chain)
            with contextlib.suppress(NetError):
                _iptables("-F", self.chain)
            with contextlib.suppress(NetError):
                _iptables("-X", self.chain)
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
