"""The node's half of ``planaria backup``: BACKUP BEGIN, READ and END (docs/operations.md,
"Backup and restore").

BEGIN on a partition's primary takes the replica's state at its commit index, as a
linearizable read does: only while the replica *serves* (primary of the config's epoch, its
barrier committed, its lease valid), so every write any primary acknowledged before BEGIN
arrived is in it (committed writes survive failovers; a deposed primary stops acknowledging
before its lease ends, and none is elected before). The copy is taken on the event loop in
one step (``Replica.snapshot``, as a scheduled snapshot does), then serialised and written to
``<data>/backups/<token>.snap`` in a storage thread while the partition goes on serving. The
file is a snapshot exactly as a partition log stores it. READ sends it in chunks of at most
``read_bytes_max``; END removes it.

Bounds: at most ``exports_max`` exports at once (then BUSY); one left idle for ``idle_ms`` is
removed (a backup tool that died); leftovers of an earlier process are removed at start.
Memory: serialising holds the encoded state once, as a scheduled snapshot does; a READ holds
one chunk.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from planaria.core.codec import encode_state
from planaria.core.messages import ReplicaSnapshot
from planaria.net import resp
from planaria.storage.format import Snapshot, encode_snapshot

__all__ = ["BACKUP_DIR", "BackupExports", "Servable", "remove_files"]

log = logging.getLogger("planaria.node")

BACKUP_DIR = "backups"


class Servable(Protocol):
    """What BEGIN needs of a partition (``PartitionRuntime``)."""

    def committed_view(self, now_ms: float) -> tuple[ReplicaSnapshot, int] | None: ...


@dataclass(slots=True)
class _Export:
    partition: int
    path: Path
    index: int
    snapshot_epoch: int
    epoch: int
    size_bytes: int = 0
    last_used_ms: float = 0.0
    ready: bool = False  # written (until then READ is refused)


class BackupExports:
    """The exported snapshots of one node, by token."""

    def __init__(
        self,
        data_dir: Path,
        executor: Executor,
        clock_ms: Callable[[], float],
        *,
        exports_max: int = 8,
        idle_ms: float = 60_000.0,
        read_bytes_max: int = 4 * 1024 * 1024,
    ) -> None:
        self.directory = data_dir / BACKUP_DIR
        self._executor = executor
        self._clock_ms = clock_ms
        self.exports_max = exports_max
        self.idle_ms = idle_ms
        self.read_bytes_max = read_bytes_max
        self._exports: dict[str, _Export] = {}
        self.exported = 0  # snapshots taken by BEGIN, for INFO

    def __len__(self) -> int:
        return len(self._exports)

    def clear(self) -> None:
        """Remove what an earlier process left (blocking; at start and at close)."""
        self._exports.clear()
        if self.directory.exists():
            shutil.rmtree(self.directory)

    async def begin(self, partition: int, runtime: Servable | None, node_id: str) -> bytes:
        """BACKUP BEGIN: the reply is ``[token, index, snapshot epoch, epoch, bytes]``."""
        if len(self._exports) >= self.exports_max:
            return resp.error(
                f"BUSY {len(self._exports)} backup snapshots are open on this node "
                f"(limit {self.exports_max}); END some or wait {self.idle_ms / 1000:g} s"
            )
        now = self._clock_ms()
        # No await before the view is taken: it is the state at the moment serving was checked.
        view = runtime.committed_view(now) if runtime is not None else None
        if view is None:
            return resp.error(
                f"TRYAGAIN partition {partition} has no serving primary on {node_id}; "
                "ask its primary (CLUSTER SLOTS)"
            )
        state, epoch = view
        token = secrets.token_hex(8)
        export = _Export(
            partition,
            self.directory / f"p{partition}-{token}.snap",
            state.index,
            state.epoch,
            epoch,
            last_used_ms=now,
        )
        self._exports[token] = export
        loop = asyncio.get_running_loop()
        try:
            export.size_bytes = await loop.run_in_executor(
                self._executor, _write_export, export.path, state
            )
        except OSError as exc:
            self._exports.pop(token, None)
            await loop.run_in_executor(self._executor, _remove, export.path)
            log.error("p%d: backup snapshot not written: %s", partition, exc)
            return resp.error(f"ERR backup snapshot of partition {partition} not written: {exc}")
        export.ready = True
        export.last_used_ms = self._clock_ms()
        self.exported += 1
        log.info("p%d: backup snapshot at index %d (%d bytes) for token %s",
                 partition, state.index, export.size_bytes, token)  # fmt: skip
        return resp.array(
            [
                resp.bulk(token.encode()),
                resp.integer(export.index),
                resp.integer(export.snapshot_epoch),
                resp.integer(export.epoch),
                resp.integer(export.size_bytes),
            ]
        )

    async def read(self, token: str, offset: int, length: int) -> bytes:
        export = self._exports.get(token)
        if export is None or not export.ready:
            return resp.error(f"ERR no backup snapshot {token!r} on this node (ended or expired)")
        if length > self.read_bytes_max:
            return resp.error(f"ERR length {length} is over the limit of {self.read_bytes_max}")
        if offset > export.size_bytes:
            return resp.error(f"ERR offset {offset} is past the end ({export.size_bytes} bytes)")
        export.last_used_ms = self._clock_ms()
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(
                self._executor, _read, export.path, offset, min(length, export.size_bytes - offset)
            )
        except OSError as exc:
            return resp.error(f"ERR backup snapshot {token!r} not readable: {exc}")
        export.last_used_ms = self._clock_ms()
        return resp.bulk(data)

    async def end(self, token: str) -> bytes:
        export = self._exports.pop(token, None)
        if export is None:
            return resp.integer(0)
        await asyncio.get_running_loop().run_in_executor(self._executor, _remove, export.path)
        return resp.integer(1)

    def expire(self, now_ms: float) -> list[Path]:
        """Forget the exports idle for ``idle_ms``; their files, for the caller to remove."""
        idle = [
            token
            for token, export in self._exports.items()
            if export.ready and now_ms - export.last_used_ms >= self.idle_ms
        ]
        for token in idle:
            log.info("backup snapshot %s idle for %g s: removed", token, self.idle_ms / 1000)
        return [self._exports.pop(token).path for token in idle]


def _write_export(path: Path, state: ReplicaSnapshot) -> int:
    """Serialise ``state`` as a snapshot file at ``path``; its size (in a storage thread)."""
    data = encode_snapshot(Snapshot(state.index, state.epoch, encode_state(state)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    return len(data)


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as source:
        source.seek(offset)
        return source.read(length)


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        _remove(path)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)  # an expired export may have gone already
