"""Client workloads for bench_cluster.py: ``planaria.Client`` threads that record every
acknowledged write (partition, invoke and completion times, and which node answered), and
the failover measurement built on them. Every loop stops on an event and every call has the
client's deadline, so nothing runs unbounded."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from planaria.client import Client, CommandRefused
from planaria.core.slots import keyslot, partition_of_slot
from planaria.errors import PlanariaError, UnknownOutcome, UsageError

__all__ = [
    "Ack",
    "AckRecorder",
    "TrackingClient",
    "WorkerPool",
    "first_acks_after",
    "percentile",
]

VALUE_BYTES = 100


class TrackingClient(Client):
    """``planaria.Client`` that remembers, per thread, the node that answered its last call
    (a failover counts only acknowledgements from a node other than the victim: an ack the
    victim sent just before the fault may be read just after it)."""

    def __init__(self, seeds: Sequence[str], **options: float) -> None:
        super().__init__(seeds, **options)  # type: ignore[arg-type]
        self._answered = threading.local()

    def _exchange(self, address: str, readonly: bool, payload: bytes, deadline_s: float) -> object:
        reply = super()._exchange(address, readonly, payload, deadline_s)
        self._answered.address = address
        return reply

    @property
    def last_address(self) -> str:
        return str(getattr(self._answered, "address", ""))


@dataclass(frozen=True, slots=True)
class Ack:
    partition: int
    invoked_s: float
    completed_s: float
    address: str


@dataclass
class AckRecorder:
    """Acknowledged writes while ``recording`` (a fault window), and counters always."""

    partitions: int
    recording: bool = False
    acks: list[Ack] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start_window(self) -> None:
        with self._lock:
            self.acks = []
            self.recording = True

    def stop_window(self) -> list[Ack]:
        with self._lock:
            self.recording = False
            acks, self.acks = self.acks, []
            return acks

    def snapshot(self) -> list[Ack]:
        with self._lock:
            return list(self.acks)

    def count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def ack(self, key: str, invoked_s: float, address: str) -> None:
        completed = time.monotonic()
        with self._lock:
            self.counts["write_ok"] += 1
            if self.recording:
                partition = partition_of_slot(keyslot(key), self.partitions)
                self.acks.append(Ack(partition, invoked_s, completed, address))


class WorkerPool:
    """Threads, each with its own TrackingClient, that run until :meth:`stop`: probers
    (writes of one key each, a short pause between them) and loaders (random keys at full
    speed, ``write_share`` of them writes, the rest reads)."""

    def __init__(
        self,
        seeds: Sequence[str],
        recorder: AckRecorder,
        *,
        probe_keys: Sequence[str] = (),
        probe_pause_s: float = 0.005,
        loaders: int = 0,
        loader_keys: int = 1024,
        write_share: float = 0.6,
        client_options: dict[str, float] | None = None,
    ) -> None:
        self._seeds = list(seeds)
        self._recorder = recorder
        self._stopping = threading.Event()
        self._options = client_options or {}
        self.errors: list[BaseException] = []
        keys = [f"load-{i}" for i in range(loader_keys)]
        self._threads = [
            threading.Thread(
                target=self._run, args=([key], probe_pause_s, 1.0, i), daemon=True,
                name=f"prober-{i}",
            )
            for i, key in enumerate(probe_keys)
        ] + [
            threading.Thread(
                target=self._run, args=(keys, 0.0, write_share, 1000 + i), daemon=True,
                name=f"loader-{i}",
            )
            for i in range(loaders)
        ]  # fmt: skip

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop and join every thread (each call ends within the client's deadline)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise RuntimeError(f"workers still running after {timeout_s:g} s: {stuck}")

    def check(self) -> None:
        if self.errors:
            raise RuntimeError(f"a workload thread failed: {self.errors[0]!r}") from self.errors[0]

    def _run(self, keys: list[str], pause_s: float, write_share: float, seed: int) -> None:
        rng = random.Random(seed)
        value = (f"{seed:08d}" * (VALUE_BYTES // 8 + 1))[:VALUE_BYTES]
        recorder = self._recorder
        try:
            with TrackingClient(self._seeds, **self._options) as client:
                while not self._stopping.is_set():
                    key = keys[0] if len(keys) == 1 else rng.choice(keys)
                    invoked = time.monotonic()
                    try:
                        if write_share >= 1.0 or rng.random() < write_share:
                            client.set(key, value)
                            recorder.ack(key, invoked, client.last_address)
                        else:
                            client.get(key)
                            recorder.count("read_ok")
                    except CommandRefused as refused:
                        # The node's "-UNKNOWN ..." (a primary stepped down with the write
                        # pending) reaches the client as a refusal, not UnknownOutcome:
                        # counted apart, so the gap shows.
                        if not str(refused).startswith("UNKNOWN"):
                            raise
                        recorder.count("unknown_reported_as_refused")
                    except UsageError:
                        raise
                    except UnknownOutcome:
                        recorder.count("unknown")
                    except PlanariaError:
                        recorder.count("failed")
                    if pause_s:
                        self._stopping.wait(pause_s)
        except BaseException as exc:  # surfaced by check()
            self.errors.append(exc)


def first_acks_after(
    acks: Sequence[Ack], partitions: Sequence[int], fault_s: float, victim_address: str
) -> dict[int, tuple[float | None, float | None]]:
    """Per partition, milliseconds from ``fault_s`` to the first write acknowledged by a node
    other than the victim: (completed after the fault: the lower bound, invoked after the
    fault: the upper bound); None where there is none."""
    result: dict[int, tuple[float | None, float | None]] = {}
    for partition in partitions:
        mine = [
            a for a in acks
            if a.partition == partition and a.address != victim_address
            and a.completed_s >= fault_s
        ]  # fmt: skip
        completed = min((a.completed_s for a in mine), default=None)
        invoked = min((a.completed_s for a in mine if a.invoked_s >= fault_s), default=None)
        result[partition] = (
            None if completed is None else (completed - fault_s) * 1000,
            None if invoked is None else (invoked - fault_s) * 1000,
        )
    return result


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``fraction`` of the values
    at or below it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]
