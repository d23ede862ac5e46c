"""Network addresses, parsed and written in one place: ``HOST:PORT``, ``[IPv6]:PORT``.

Every user parses with :func:`parse_address`: the client (seeds, MOVED redirects, cluster
maps), the node (``--listen``, ``--advertise``, peers' bus addresses), the coordinator's
``--listen`` and URLs, and the tools. The rule:

- the port follows the last colon and is 1..65535 (0 too for an address to listen on:
  the system picks a free port);
- the host is a name or IPv4 address (letters, digits, ``.``, ``-``, ``_``) or an IPv6
  address, in brackets or, as Redis writes MOVED redirects, without (``::1:7001``; the
  part before the last colon must then be an IPv6 address on its own);
- a caller with a default port may take the port away (``HOST``, ``[IPv6]``).

Anything else is a ``UsageError`` that quotes the text and says what is wrong with it.
:func:`format_address` writes the form that parses back (brackets around IPv6).
"""

from __future__ import annotations

import ipaddress
import re

from planaria.errors import UsageError

__all__ = ["PORT_MAX", "format_address", "parse_address"]

PORT_MAX = 65535
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")


def parse_address(
    text: str,
    *,
    what: str = "address",
    listen: bool = False,
    default_port: int | None = None,
) -> tuple[str, int]:
    """``text`` as (host, port), an IPv6 host without brackets; ``UsageError`` naming
    ``text`` (and ``what`` it is) when malformed. ``listen``: port 0 is allowed (any free
    port). ``default_port``: the port when ``text`` gives none."""
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a HOST:PORT string, got {text!r}")

    def bad(reason: str) -> UsageError:
        return UsageError(f"{what} {text!r} is not HOST:PORT ([IPv6]:PORT): {reason}")

    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise bad("no ']' after the IPv6 address")
        if rest and not rest.startswith(":"):
            raise bad(f"{rest!r} after ']' (expected ':PORT')")
        port_text: str | None = rest[1:] if rest else None
        if not _is_ipv6(host):
            raise bad(f"{host!r} in brackets is not an IPv6 address")
    else:
        host, colon, after = text.rpartition(":")
        port_text = after if colon else None
        if not colon:
            host = text
        if ":" in host and not _is_ipv6(host):
            raise bad("an IPv6 host goes in brackets: [IPv6]:PORT")
        if not host:
            raise bad("no host")
        if ":" not in host and not _HOST_NAME.fullmatch(host):
            raise bad(f"{host!r} is not a host name or IP address")
    if port_text is None:
        if default_port is None:
            raise bad("no port")
        return host, default_port
    if not port_text:
        raise bad("no port after ':'")
    if not (port_text.isascii() and port_text.isdigit()):
        raise bad(f"bad port {port_text!r}: not a number")
    port = int(port_text)
    if port == 0 and not listen:
        raise bad("bad port 0: only an address to listen on may use 0 (any free port)")
    if port > PORT_MAX:
        raise bad(f"bad port {port}: above {PORT_MAX}")
    return host, port


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def format_address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets: what :func:`parse_address` reads back."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
