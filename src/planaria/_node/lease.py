"""Session keep-alives in a dedicated thread, so a busy event loop cannot starve them.

The node's lease counts from the *send* time of the last keep-alive the coordinator
acknowledged. If keep-alives ran on the node's event loop, a loop busy with client traffic
would delay them, the session would expire and the controller would fail the node over
although it is healthy. Here a thread with its own event loop and its own coordinator client
renews the session every ``interval_ms``; the main loop only reads the lease.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from planaria import _loop
from planaria.coord import Coordinator, CoordinatorUnavailable, SessionExpired, SessionId

__all__ = ["KeepAliveThread", "keep_alive_forever"]

log = logging.getLogger("planaria.node.lease")


async def keep_alive_forever(
    coordinator: Coordinator,
    *,
    session: Callable[[], SessionId | None],
    stopped: Callable[[], bool],
    interval_ms: float,
    timeout_ms: float,
    on_ack: Callable[[SessionId, float], None],
    on_expired: Callable[[SessionId], None],
) -> None:
    """Renew ``session()`` every ``interval_ms`` until ``stopped()``. ``on_ack(session,
    sent_ms)`` after each acknowledged renewal (``sent_ms``: ``time.monotonic()`` in ms when
    it was sent, where the lease counts from); ``on_expired(session)`` when the coordinator
    says it ended. An unreachable coordinator is logged (once per outage) and retried."""
    interval_s = interval_ms / 1000
    unreachable = False
    while not stopped():
        sent_ms = time.monotonic() * 1000.0
        current = session()
        if current is not None:
            try:
                await asyncio.wait_for(coordinator.keep_alive(current), timeout_ms / 1000)
                on_ack(current, sent_ms)
                if unreachable:
                    log.info("keep-alives reach the coordinator again")
                    unreachable = False
            except SessionExpired:
                on_expired(current)
            except (CoordinatorUnavailable, TimeoutError) as exc:
                if not unreachable:
                    log.warning("keep-alive failed, serving only under the lease: %s", exc)
                    unreachable = True
            except Exception:
                log.exception("keep-alive failed unexpectedly")
        elapsed_s = time.monotonic() - sent_ms / 1000.0
        await asyncio.sleep(max(0.0, interval_s - elapsed_s))


class KeepAliveThread:
    """:func:`keep_alive_forever` in a thread of its own, with its own event loop and its
    own coordinator client (``connect()``), until :meth:`stop`."""

    def __init__(
        self,
        connect: Callable[[], Coordinator],
        *,
        interval_ms: float,
        timeout_ms: float,
        on_ack: Callable[[SessionId, float], None],
        on_expired: Callable[[SessionId], None],
    ) -> None:
        self._connect = connect
        self._interval_ms = interval_ms
        self._timeout_ms = timeout_ms
        self._on_ack = on_ack
        self._on_expired = on_expired
        self._session: SessionId | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="planaria-keepalive", daemon=True)

    def start(self, session: SessionId) -> None:
        self._session = session
        self._thread.start()

    def set_session(self, session: SessionId | None) -> None:
        self._session = session

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _main(self) -> None:
        try:
            _loop.run(self._run())
        except Exception:
            log.exception("the keep-alive thread failed")

    def _expired(self, session: SessionId) -> None:
        if self._session == session:
            self._session = None  # renew nothing until the node opened a new session
            self._on_expired(session)

    async def _run(self) -> None:
        coordinator = self._connect()
        try:
            await keep_alive_forever(
                coordinator,
                session=lambda: self._session,
                stopped=self._stop.is_set,
                interval_ms=self._interval_ms,
                timeout_ms=self._timeout_ms,
                on_ack=self._on_ack,
                on_expired=self._expired,
            )
        finally:
            await coordinator.close()
