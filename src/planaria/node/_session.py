"""A node's coordinator session (:class:`SessionKeeper`): opening it and registering
under it, the lease its keep-alives extend (on the loop, or from a thread of their own with
the loop watchdog), rebuilding after it expires, the controller candidate that runs under it,
and what the registration tells the controller about this node's disk (losses, data id)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from planaria.coord import (
    Coordinator,
    CoordinatorUnavailable,
    NodeIdInUse,
    SessionExpired,
    SessionId,
)
from planaria.core.messages import PartitionConfig
from planaria.errors import UsageError
from planaria.node._context import NodeContext
from planaria.node._control import ControllerService
from planaria.node._lease import KeepAliveThread, LoopWatchdog, keep_alive_forever
from planaria.node._partition import (
    LOST_ALL,
    NO_LEASE,
    SessionOpened,
    claim_data_id,
    claim_lost_all,
    drop_data_id_new,
    lost_partitions,
)
from planaria.node._settings import EXIT_LOOP_STALLED, monotonic_ms
from planaria.storage import OsFS
from planaria.storage.errors import storage_error_from_os

__all__ = ["SessionKeeper"]

log = logging.getLogger("planaria.node")


class SessionKeeper:
    """The node's session, lease and registration. ``session`` and ``lease_until_ms`` are
    written under a lock (the keep-alive thread acknowledges too) and read without one.

    ``address`` and ``bus_address`` give what to register (known once the node listens),
    ``loop_beats`` the tick count the watchdog watches; after a session expired,
    ``fail_waiting`` answers the waiting requests and ``reload_configs`` re-reads the configs.
    """

    def __init__(
        self,
        context: NodeContext,
        *,
        data_dir: Path,
        zone: str | None,
        weight: float,
        address: Callable[[], str],
        bus_address: Callable[[], str],
        loop_beats: Callable[[], int],
        keepalive_connect: Callable[[], Coordinator] | None,
        fail_waiting: Callable[[int | None, str], None],
        reload_configs: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self._context = context
        self._node_id = context.node_id
        self._settings = context.settings
        self._coordinator = context.coordinator
        self._data_dir = data_dir
        self._zone = zone
        self._weight = weight
        self._address = address
        self._bus_address = bus_address
        self._loop_beats = loop_beats
        self._fail_waiting = fail_waiting
        self._reload_configs = reload_configs
        self.session: SessionId | None = None
        self.lease_until_ms = NO_LEASE
        self.sessions_lost = 0
        self.lost_all: int | None = None  # a replaced disk's loss id, until recorded
        self.data_id = 0  # the data directory's id (storage/identity.py), once started
        self.data_id_new = False  # ...made at a start the configs may not know yet
        self.controller_task: asyncio.Task[None] | None = None
        self._session_lock = asyncio.Lock()
        # A second coordinator client for keep-alives in their own thread (None: on the loop).
        self._keepalive_connect = keepalive_connect
        self._keepalive_thread: KeepAliveThread | None = None
        self._lease_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def claim_data_dir(self) -> None:
        """Read (or make) the locked data directory's loss marker and id."""
        self.lost_all = claim_lost_all(self._data_dir)
        self.data_id, self.data_id_new = claim_data_id(self._data_dir)

    def incarnation(self) -> int | None:
        return None if self.session is None else int(self.session)

    async def open(self) -> None:
        """Open a session (unless one is open), register under it, tell every replica, and
        start the controller candidate and the keep-alives under it."""
        self._loop = asyncio.get_running_loop()
        if self.session is None:
            sent_ms = monotonic_ms()
            session = await self._context.coord(
                self._coordinator.open_session(self._node_id, self._settings.session_ttl_ms)
            )
            with self._lease_lock:
                self.session = session
                self.lease_until_ms = sent_ms + self._settings.lease_ms
        await self._register(self.session, self._registration_metadata())
        for runtime in self._context.partitions.values():
            runtime.deliver(SessionOpened(int(self.session)))
        if self.controller_task is not None:
            self.controller_task.cancel()
        self.controller_task = asyncio.create_task(
            self._controller_loop(self.session), name=f"planaria-{self._node_id}-controller"
        )
        if self._keepalive_connect is None:
            if not any(t.get_name().endswith("-keepalive") for t in self._context.tasks):
                self._context.spawn(self._keepalive_loop(), "keepalive")
        elif self._keepalive_thread is None:
            self._keepalive_thread = KeepAliveThread(
                self._keepalive_connect,
                interval_ms=self._settings.keepalive_interval_ms,
                timeout_ms=self._settings.lease_ms,
                on_ack=self._on_keepalive_ack,
                on_expired=self._on_keepalive_expired,
                watchdog=LoopWatchdog(
                    self._loop_beats,
                    stall_max_ms=self._settings.loop_stall_max_ms,
                    step_max_ms=2 * self._settings.keepalive_interval_ms,
                ),
                on_stalled=self._on_loop_stalled,
            )
            self._keepalive_thread.start(self.session)
        else:
            self._keepalive_thread.set_session(self.session)

    async def stop_keepalives(self) -> None:
        """Stop the keep-alive thread, if any (the loop's keep-alives are a task)."""
        if self._keepalive_thread is not None:
            await asyncio.to_thread(self._keepalive_thread.stop)

    async def close_session(self) -> None:
        """End the session so the controller fails over at once (else it expires)."""
        if self.session is None:
            return
        try:
            await asyncio.wait_for(
                self._coordinator.close_session(self.session),
                self._settings.coordinator_timeout_ms / 1000,
            )
        except (CoordinatorUnavailable, TimeoutError, UsageError) as exc:
            log.warning("closing the session failed (it will expire): %s", exc)

    async def _register(self, session: SessionId, metadata: dict[str, str]) -> None:
        """Register under ``session``. While another live session holds the node id (this
        node's previous incarnation, whose lease may still run, or another process with the
        same id), renew ours and wait for it to end, up to ``start_timeout_ms``: taking the
        registration over would let the controller fail over before the old lease ran out."""
        deadline_ms = monotonic_ms() + self._settings.start_timeout_ms
        warned = False
        while True:
            try:
                await self._context.coord(
                    self._coordinator.register(session, self._node_id, self._address(), metadata)
                )
                return
            except NodeIdInUse as exc:
                if monotonic_ms() >= deadline_ms:
                    raise
                if not warned:
                    log.warning("%s; waiting for it to end", exc)
                    warned = True
            await asyncio.sleep(self._settings.keepalive_interval_ms / 1000)
            sent_ms = monotonic_ms()
            await self._context.coord(self._coordinator.keep_alive(session))
            self._on_keepalive_ack(session, sent_ms)

    def _on_keepalive_ack(self, session: SessionId, sent_ms: float) -> None:
        # Called from the keep-alive thread too: a lock keeps the check and the write whole.
        with self._lease_lock:
            if session == self.session:
                self.lease_until_ms = max(self.lease_until_ms, sent_ms + self._settings.lease_ms)

    def _on_keepalive_expired(self, session: SessionId) -> None:
        """From the keep-alive thread: hand the loss over to the event loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._session_expired, session)

    def _on_loop_stalled(self, stalled_ms: float) -> None:
        """From the keep-alive thread, which renews no more: the loop is wedged, so nothing
        on it can step down or rebuild. Exit at once, as after kill -9 (what was
        acknowledged is on disk): the session expires within its TTL, the partitions fail
        over, and a supervisor restarts the node from its data."""
        if self._context.stopping:
            return  # closing: the tick is cancelled before the keep-alive thread stops
        log.critical(
            "node %s: event loop stalled for %.0f ms (limit %.0f ms, lease %.0f ms): leaving "
            "the cluster, exit code %d (restart me)",
            self._node_id, stalled_ms, self._settings.loop_stall_max_ms,
            self._settings.lease_ms, EXIT_LOOP_STALLED,
        )  # fmt: skip
        logging.shutdown()  # flush the log line: os._exit skips every other cleanup
        os._exit(EXIT_LOOP_STALLED)

    def _session_expired(self, session: SessionId) -> None:
        if session == self.session and not self._context.stopping:
            self._context.spawn(self._session_lost(session), "session-lost")

    async def _keepalive_loop(self) -> None:
        """Keep-alives on the event loop (when no keep-alive thread is configured)."""
        await keep_alive_forever(
            self._coordinator,
            session=lambda: self.session,
            stopped=lambda: self._context.stopping,
            interval_ms=self._settings.keepalive_interval_ms,
            timeout_ms=self._settings.lease_ms,
            on_ack=self._on_keepalive_ack,
            on_expired=self._session_expired,
        )

    async def _session_lost(self, session: SessionId) -> None:
        """The coordinator expired our session: another node may lead our partitions now.
        Rebuild every replica from disk and start over under a new session."""
        async with self._session_lock:
            if self.session != session:
                return  # already handled
            self.sessions_lost += 1
            log.warning("session %s expired: rebuilding every replica from disk", self.session)
            with self._lease_lock:
                self.session = None
                self.lease_until_ms = NO_LEASE
            if self.controller_task is not None:
                self.controller_task.cancel()
            partitions = self._context.partitions
            for runtime in list(partitions.values()):
                await runtime.reset()
            self._fail_waiting(None, "the node lost its coordinator session")
            delay_s = 0.05
            while not self._context.stopping:
                try:
                    await self.open()
                    break
                except (CoordinatorUnavailable, SessionExpired, NodeIdInUse) as exc:
                    log.warning("reopening a session: %s", exc)
                    self.session = None
                await asyncio.sleep(delay_s)  # outside the handler (see _native)
                delay_s = min(delay_s * 2, 1.0)
            for runtime in partitions.values():
                if runtime.config is not None:
                    runtime.deliver(runtime.config)
            self._context.spawn(self._reload_configs(), "reload")

    def _registration_metadata(self) -> dict[str, str]:
        metadata = {
            "bus": self._bus_address(),
            "weight": repr(self._weight),
            "pid": str(os.getpid()),
        }
        if self._zone is not None:
            metadata["zone"] = self._zone
        # The controller takes this node out of these partitions' ISRs (invariant 7):
        # "<partition>:<loss id>,...", and "all:<loss id>" for a replaced disk.
        losses = [f"{p}:{loss}" for p, loss in sorted(lost_partitions(self._data_dir).items())]
        if self.lost_all is not None:
            losses.append(f"all:{self.lost_all}")
        if losses:
            metadata["lost"] = ",".join(losses)
        # A new disk has another: the controller then takes this node out of every ISR.
        metadata["data-id"] = str(self.data_id)
        return metadata

    def confirm_data_id(
        self, configs: Mapping[int, PartitionConfig], partition_count: int | None
    ) -> None:
        """A new data id stops being new once the node read every config and each one
        that lists it knows the id (then a restart may trust what its logs say they led)."""
        if not self.data_id_new or partition_count is None:
            return
        if len(configs) < partition_count:
            return
        for config in configs.values():
            if self._node_id in config.replicas and config.data_id(self._node_id) != self.data_id:
                return
        self.data_id_new = False
        drop_data_id_new(self._data_dir)

    def forget_lost_all(self, configs: Mapping[int, PartitionConfig]) -> None:
        """A replaced disk's marker goes once every config listing this node records its
        loss (then nothing it holds counts as in sync by mistake)."""
        loss = self.lost_all
        if loss is None:
            return
        for config in configs.values():
            if self._node_id in config.replicas and config.wiped_loss(self._node_id) != loss:
                return
        self.lost_all = None
        marker = self._data_dir / LOST_ALL
        fs = OsFS()
        try:
            fs.remove(str(marker))
            fs.fsync_dir(str(self._data_dir))
        except OSError as exc:
            # Kept, it only registers the loss again at the next start: log and go on.
            log.warning("%s", storage_error_from_os(exc, "removing", str(marker)))

    async def register_loss(self, partition: int) -> None:
        """A log found damaged when its partition opened: register the loss with the
        session before the replica steps (a new session registers it anyway)."""
        delay_s = 0.05
        while not self._context.stopping and self.session is not None:
            try:
                await self._context.coord(
                    self._coordinator.register(
                        self.session, self._node_id, self._address(), self._registration_metadata()
                    )
                )
                return
            except SessionExpired:
                return  # the next session registers it
            except CoordinatorUnavailable as exc:
                log.warning("p%d: registering the loss of its log: %s", partition, exc)
            await asyncio.sleep(delay_s)  # outside the handler (see _native)
            delay_s = min(delay_s * 2, 1.0)

    async def _controller_loop(self, session: SessionId) -> None:
        delay_s = 0.1
        while not self._context.stopping:
            try:
                service = ControllerService(self._coordinator, self._node_id, session)
                await service.run()
                return
            except asyncio.CancelledError:
                raise
            except SessionExpired:
                return  # the keep-alive loop starts over with a new session
            except CoordinatorUnavailable as exc:
                log.info("controller: coordinator unreachable (%s); retrying", exc)
            except Exception:
                log.exception("controller failed; restarting it")
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 2.0)
