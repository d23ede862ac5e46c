"""Coordinator URLs, parsed in one place: ``connect(url) -> Coordinator``.

- ``planaria://HOST:PORT``: the embedded coordinator (``planaria coordinator``); the port
  defaults to 7000.
- ``memory://NAME``: an in-process store shared by every ``connect`` with the same NAME in
  this process (tests, single-process demos); ``memory://`` alone is the name "default".
- ``zk://`` and ``etcd://``: not built yet (``UsageError``).

Connecting is lazy: ``connect`` only builds the client; the first call opens the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from planaria.coord.interface import Coordinator
from planaria.coord.memory import MemoryStore
from planaria.coord.server import DEFAULT_PORT
from planaria.errors import UsageError

__all__ = ["CoordinatorUrl", "connect", "parse_url"]

_MEMORY_STORES: dict[str, MemoryStore] = {}
_NOT_BUILT = {"zk": "ZooKeeper", "etcd": "etcd"}


@dataclass(frozen=True, slots=True)
class CoordinatorUrl:
    scheme: str  # "planaria" or "memory"
    host: str  # the host, or the memory store's name
    port: int  # 0 for memory

    def __str__(self) -> str:
        if self.scheme == "memory":
            return f"memory://{self.host}"
        return f"planaria://{self.host}:{self.port}"


def parse_url(url: str) -> CoordinatorUrl:
    """The parts of a coordinator URL; ``UsageError`` saying what is wrong otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise UsageError(f"a coordinator URL looks like planaria://HOST:PORT, not {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _NOT_BUILT:
        raise UsageError(
            f"{url}: the {_NOT_BUILT[scheme]} backend is not built yet; "
            "use the embedded coordinator (planaria://HOST:PORT)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"{url}: a coordinator URL has no path, query or fragment")
    if scheme == "memory":
        return CoordinatorUrl("memory", parts.netloc or "default", 0)
    if scheme != "planaria":
        raise UsageError(f"{url}: unknown scheme {parts.scheme!r} (use planaria:// or memory://)")
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{url}: bad port: {exc}") from None
    if not parts.hostname:
        raise UsageError(f"{url}: no host")
    return CoordinatorUrl("planaria", parts.hostname, DEFAULT_PORT if port is None else port)


def connect(url: str, **options: Any) -> Coordinator:
    """A client for the coordinator at ``url``. ``options`` go to the backend's client
    (``RemoteCoordinator``: ``request_timeout_s``, ``reconnect_wait_initial_s``,
    ``reconnect_wait_max_s``, ``rng``; ``MemoryCoordinator``: ``clock``,
    ``expiry_check_interval_s``)."""
    parsed = parse_url(url)
    if parsed.scheme == "memory":
        from planaria.coord.memory_async import MemoryCoordinator  # noqa: PLC0415 (asyncio)

        store = _MEMORY_STORES.setdefault(parsed.host, MemoryStore())
        return MemoryCoordinator(store, **options)
    from planaria.coord.remote import RemoteCoordinator  # noqa: PLC0415 (asyncio)

    return RemoteCoordinator(parsed.host, parsed.port, **options)
