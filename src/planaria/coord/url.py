"""Coordinator URLs, parsed in one place: ``connect(url) -> Coordinator``.

- ``planaria://HOST:PORT``: the embedded coordinator (``planaria coordinator``); the port
  defaults to 7000.
- ``memory://NAME``: an in-process store shared by every ``connect`` with the same NAME in
  this process (tests, single-process demos); ``memory://`` alone is the name "default".
- ``zk://H1:2181,H2:2181,H3:2181/CHROOT``: a ZooKeeper ensemble (port default 2181); the
  cluster lives under the znode ``/CHROOT`` (default ``/planaria``).
- ``etcd://H1:2379,H2:2379,H3:2379/NAMESPACE``: an etcd v3 cluster through its gRPC gateway
  (plain HTTP, port default 2379); keys live under ``/NAMESPACE`` (default ``/planaria``).

Connecting is lazy: ``connect`` only builds the client; the first call opens the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from planaria.address import format_address, parse_address
from planaria.coord._ensemble import TtlNotGranted, grantable_ttl_ms
from planaria.coord.interface import Coordinator
from planaria.coord.memory import MemoryStore
from planaria.coord.server import DEFAULT_PORT
from planaria.coord.types import validate_key
from planaria.errors import UsageError

__all__ = [
    "DEFAULT_NAMESPACE",
    "CoordinatorUrl",
    "TtlNotGranted",
    "connect",
    "grantable_ttl_ms",
    "parse_url",
]

_MEMORY_STORES: dict[str, MemoryStore] = {}
DEFAULT_NAMESPACE = "/planaria"
_ENSEMBLE_PORTS = {"zk": 2181, "etcd": 2379}
_SCHEMES = "planaria://HOST:PORT, zk://H1:2181,H2:2181/CHROOT, etcd://H1:2379,H2:2379/NS"


@dataclass(frozen=True, slots=True)
class CoordinatorUrl:
    scheme: str  # "planaria", "memory", "zk" or "etcd"
    host: str  # the host, or the memory store's name ("" for zk/etcd: see endpoints)
    port: int  # 0 for memory, zk and etcd
    endpoints: tuple[tuple[str, int], ...] = ()  # zk and etcd: every server
    namespace: str = ""  # zk: the chroot; etcd: the key prefix

    def __str__(self) -> str:
        if self.scheme == "memory":
            return f"memory://{self.host}"
        if self.scheme in _ENSEMBLE_PORTS:
            hosts = ",".join(format_address(host, port) for host, port in self.endpoints)
            return f"{self.scheme}://{hosts}{self.namespace}"
        return f"planaria://{format_address(self.host, self.port)}"


def _endpoint(url: str, text: str, default_port: int) -> tuple[str, int]:
    if not text:
        raise UsageError(f"{url}: an empty host in the server list")
    return parse_address(text, what=f"{url}: server", default_port=default_port)


def _parse_ensemble(url: str, scheme: str) -> CoordinatorUrl:
    rest = url.split("://", 1)[1]
    if "?" in rest or "#" in rest or "@" in rest:
        raise UsageError(f"{url}: a {scheme}:// URL has no query, fragment or user")
    hosts, _, path = rest.partition("/")
    endpoints = tuple(_endpoint(url, h.strip(), _ENSEMBLE_PORTS[scheme]) for h in hosts.split(","))
    namespace = DEFAULT_NAMESPACE if path.strip("/") == "" else "/" + path.rstrip("/")
    try:
        validate_key(namespace)
    except UsageError as exc:
        raise UsageError(
            f"{url}: bad {'chroot' if scheme == 'zk' else 'namespace'}: {exc}"
        ) from None
    return CoordinatorUrl(scheme, "", 0, endpoints, namespace)


def parse_url(url: str) -> CoordinatorUrl:
    """The parts of a coordinator URL; ``UsageError`` saying what is wrong otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise UsageError(f"a coordinator URL looks like {_SCHEMES}; not {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _ENSEMBLE_PORTS:
        return _parse_ensemble(url, scheme)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"{url}: a {scheme}:// URL has no path, query or fragment")
    if scheme == "memory":
        return CoordinatorUrl("memory", parts.netloc or "default", 0)
    if scheme != "planaria":
        raise UsageError(f"{url}: unknown scheme {parts.scheme!r} (use {_SCHEMES}, or memory://)")
    if "@" in parts.netloc:
        raise UsageError(f"{url}: a planaria:// URL has no user")
    host, port = parse_address(parts.netloc, what=f"{url}: host", default_port=DEFAULT_PORT)
    return CoordinatorUrl("planaria", host, port)


def connect(url: str, **options: Any) -> Coordinator:
    """A client for the coordinator at ``url``. ``options`` go to the backend's client
    (``RemoteCoordinator``: ``request_timeout_s``, ``reconnect_wait_initial_s``,
    ``reconnect_wait_max_s``, ``rng``; ``MemoryCoordinator``: ``clock``,
    ``expiry_check_interval_s``; ``ZooKeeperCoordinator`` and ``EtcdCoordinator``:
    ``request_timeout_s``)."""
    parsed = parse_url(url)
    if parsed.scheme == "memory":
        from planaria.coord.memory_async import MemoryCoordinator  # noqa: PLC0415 (asyncio)

        store = _MEMORY_STORES.setdefault(parsed.host, MemoryStore())
        return MemoryCoordinator(store, **options)
    if parsed.scheme == "zk":
        from planaria.coord.zookeeper import ZooKeeperCoordinator  # noqa: PLC0415 (kazoo)

        return ZooKeeperCoordinator(parsed.endpoints, chroot=parsed.namespace, **options)
    if parsed.scheme == "etcd":
        from planaria.coord.etcd import EtcdCoordinator  # noqa: PLC0415 (asyncio)

        return EtcdCoordinator(parsed.endpoints, namespace=parsed.namespace, **options)
    from planaria.coord.remote import RemoteCoordinator  # noqa: PLC0415 (asyncio)

    return RemoteCoordinator(parsed.host, parsed.port, **options)
