"""Session keep-alives in a dedicated thread, so a busy event loop cannot starve them.

The node's lease counts from the *send* time of the last keep-alive the coordinator
acknowledged. If keep-alives ran on the node's event loop, a loop busy with client traffic
would delay them, the session would expire and the controller would fail the node over
although it is healthy. Here a thread with its own event loop and its own coordinator client
renews the session every ``interval_ms``; the main loop only reads the lease.

The same thread watches the main loop (:class:`LoopWatchdog`): keep-alives from a thread
would otherwise keep a wedged node's session, and its partitions, forever. When the loop
has made no progress for ``stall_max_ms`` of the thread's own running time, the thread
renews no more and calls ``on_stalled`` (the node exits, so a supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from planaria import _loop
from planaria.coord import Coordinator, CoordinatorUnavailable, SessionExpired, SessionId
from planaria.errors import UsageError

__all__ = ["KeepAliveThread", "LoopWatchdog", "keep_alive_forever"]

log = logging.getLogger("planaria.node.lease")


class LoopWatchdog:
    """Whether an event loop, seen from another thread, stopped making progress.

    ``beats()`` is a counter the loop advances (the node's tick). :meth:`observe` is called
    by the watching thread now and then; the loop counts as stalled once ``beats()`` stayed
    the same over ``stall_max_ms`` of *observed* time. A gap between two observations longer
    than ``step_max_ms`` counts as ``step_max_ms`` only: the watcher did not run either
    (SIGSTOP, an overloaded machine), so the loop had no chance to beat."""

    def __init__(
        self, beats: Callable[[], int], *, stall_max_ms: float, step_max_ms: float
    ) -> None:
        if not 0 < step_max_ms < stall_max_ms:
            raise UsageError("a loop watchdog needs 0 < step_max_ms < stall_max_ms")
        self._beats = beats
        self.stall_max_ms = stall_max_ms
        self._step_max_ms = step_max_ms
        self._seen = beats()
        self._last_ms: float | None = None
        self.stalled_ms = 0.0

    def observe(self, now_ms: float) -> bool:
        """Look at the loop at ``now_ms`` (monotonic): True when it is stalled."""
        beats = self._beats()
        if beats != self._seen or self._last_ms is None:
            self._seen = beats
            self.stalled_ms = 0.0
        else:
            self.stalled_ms += min(max(0.0, now_ms - self._last_ms), self._step_max_ms)
        self._last_ms = now_ms
        return self.stalled_ms >= self.stall_max_ms


async def keep_alive_forever(
    coordinator: Coordinator,
    *,
    session: Callable[[], SessionId | None],
    stopped: Callable[[], bool],
    interval_ms: float,
    timeout_ms: float,
    on_ack: Callable[[SessionId, float], None],
    on_expired: Callable[[SessionId], None],
    watchdog: LoopWatchdog | None = None,
    on_stalled: Callable[[float], None] | None = None,
) -> None:
    """Renew ``session()`` every ``interval_ms`` until ``stopped()``. ``on_ack(session,
    sent_ms)`` after each acknowledged renewal (``sent_ms``: ``time.monotonic()`` in ms when
    it was sent, where the lease counts from); ``on_expired(session)`` when the coordinator
    says it ended. An unreachable coordinator is logged (once per outage) and retried.
    With a ``watchdog``, a stalled loop ends the renewals: ``on_stalled(stalled_ms)``."""
    interval_s = interval_ms / 1000
    unreachable = False
    while not stopped():
        sent_ms = time.monotonic() * 1000.0
        if watchdog is not None and watchdog.observe(sent_ms):
            if on_stalled is not None:
                on_stalled(watchdog.stalled_ms)
            return
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
        watchdog: LoopWatchdog | None = None,
        on_stalled: Callable[[float], None] | None = None,
    ) -> None:
        self._connect = connect
        self._interval_ms = interval_ms
        self._timeout_ms = timeout_ms
        self._on_ack = on_ack
        self._on_expired = on_expired
        self._watchdog = watchdog
        self._on_stalled = on_stalled
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
                watchdog=self._watchdog,
                on_stalled=self._on_stalled,
            )
        finally:
            await coordinator.close()
