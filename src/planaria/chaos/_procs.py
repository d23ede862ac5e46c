"""Plain local processes for the peer targets: spawn with output to a log, wait for a port,
stop (SIGCONT + SIGTERM, then SIGKILL), all bounded."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from planaria.chaos.targets import TargetError

__all__ = ["free_ports", "log_tail", "spawn", "stop_process", "wait_port"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free now on ``host`` (from the kernel's ephemeral range)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def log_tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def spawn(
    argv: Sequence[str], log: Path, cwd: Path, prefix: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``argv`` under the launcher ``prefix`` (``ip netns exec NS``, which execs: the pid
    is the program's)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # Ctrl-C reaches the harness only, which stops them
        )


def wait_port(
    process: subprocess.Popen[bytes],
    port: int,
    log: Path,
    timeout_s: float,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise TargetError(
                f"{process.args!r} exited with {process.returncode}:\n{log_tail(log)}"
            )
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise TargetError(
                    f"{process.args!r} did not listen on {host}:{port} within {timeout_s:g} s:\n"
                    + log_tail(log)
                ) from None
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGCONT (a paused one must see the SIGTERM) and SIGTERM, SIGKILL after
    ``timeout_s``; always reaped."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)
        process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5.0)
