"""A small RESP client (the node's own protocol; no client library needed) for the probes
of the launcher and of ``planaria status``."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

import hiredis

from planaria.address import parse_address
from planaria.client._protocol import encode_command, to_bytes
from planaria.core.slots import keyslot, partition_of_slot

__all__ = ["is_error", "probe_keys", "resp_command"]


def resp_command(
    address: str, *commands: Sequence[str | bytes], timeout_s: float = 2.0
) -> list[Any]:
    """Send ``commands`` pipelined to ``host:port`` and return their replies in order
    (errors come back as ``hiredis.ReplyError`` values, not raised). Raises ``OSError`` when
    the node cannot be reached or does not answer within ``timeout_s``."""
    host, port = parse_address(address)
    payload = b"".join(
        encode_command([to_bytes("argument", arg) for arg in command]) for command in commands
    )
    reader = hiredis.Reader()
    replies: list[Any] = []
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        while len(replies) < len(commands):
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError(f"{address} closed the connection")
            reader.feed(data)
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is False:
                    break
                replies.append(reply)
    return replies


def is_error(reply: Any) -> bool:
    """Whether a reply of :func:`resp_command` is an error reply."""
    return isinstance(reply, hiredis.ReplyError)


def probe_keys(partitions: int) -> dict[int, str]:
    """One key per partition (``{probe-N}``), for checks that must touch every partition."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        key = f"{{probe-{n}}}"
        keys.setdefault(partition_of_slot(keyslot(key), partitions), key)
        n += 1
    return keys
