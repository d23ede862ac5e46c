"""``planaria demo`` (what ``make demo`` runs): a real cluster cut and grown back, in about
a minute, in a temporary directory.

1. Start a coordinator and 3 nodes on loopback (:class:`planaria.cluster.LocalCluster`).
2. Run a client workload (``planaria.Client`` in several threads: reads and writes of a set
   of keys, plus one writer per partition of the node about to die), recording a history in
   ``planaria.check``'s format (invoke / ok / fail / info per operation, with times).
3. ``kill -9`` the node that is primary for the most partitions; for each of its partitions,
   the failover time is from the kill to the first acknowledged write on that partition
   invoked after the kill.
4. Restart the node; it recovers from its log, catches up (lag -> 0) and rejoins the ISR.
5. Prove it: read every key back (``find_lost_writes``: no acknowledged write lost) and check
   the whole history for linearizability. A summary table; everything stopped and removed,
   also on Ctrl-C or error. Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from planaria.check import (
    Event,
    Verdict,
    check_operations,
    default_model,
    explain,
    find_lost_writes,
    operations_from_events,
)
from planaria.cluster import ClusterStatus, LocalCluster, free_base_port, probe_keys
from planaria.core.slots import keyslot, partition_of_slot
from planaria.errors import PlanariaError, UnknownOutcome, UsageError

__all__ = ["DEFAULT_PARTITIONS", "DemoResult", "add_arguments", "run_cluster_demo"]

DEFAULT_PARTITIONS = 64
_WRITE_SHARE = 0.6
_PROBE_PAUSE_S = 0.005


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster demo's own options (``--partitions`` and ``--replicas`` are shared with
    the toolkit demo and added by ``planaria._demo``)."""
    group = parser.add_argument_group("cluster demo")
    group.add_argument("--nodes", type=int, default=3, help="nodes (default 3)")
    group.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    group.add_argument("--keys", type=int, default=256, help="keys the workload uses (256)")
    group.add_argument(
        "--duration-s",
        type=float,
        default=10.0,
        help="seconds of steady workload around the faults (default 10; starting, checking "
        "and stopping add about 10 s)",
    )
    group.add_argument(
        "--fsync", choices=("always", "interval", "never"), default=None, help="nodes' fsync"
    )
    group.add_argument(
        "--keep", metavar="DIR", default=None, help="run in DIR and keep it (logs, history)"
    )


# --- the history ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Done:
    """One completed operation, for the failover measurement."""

    partition: int
    f: str
    type: str
    invoked_s: float
    completed_s: float


class _Recorder:
    """The shared history: events in time order (times taken under the lock, so they never
    go backwards line by line), counters, and completed writes per partition."""

    def __init__(self, partitions: int) -> None:
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._partitions = partitions
        self.events: list[Event] = []
        self.counts: Counter[str] = Counter()
        self.writes: list[_Done] = []

    def now(self) -> float:
        return time.monotonic() - self._start

    def invoke(self, process: int, f: str, key: str, value: str | None) -> float:
        with self._lock:
            moment = self.now()
            self.events.append(Event(process, "invoke", f, key, value, moment))
            return moment

    def complete(
        self, process: int, kind: str, f: str, key: str, value: Hashable, *, invoked_s: float
    ) -> None:
        with self._lock:
            moment = self.now()
            self.events.append(Event(process, kind, f, key, value, moment))  # type: ignore[arg-type]
            self.counts[kind] += 1
            if f == "put":
                partition = partition_of_slot(keyslot(key), self._partitions)
                self.writes.append(_Done(partition, f, kind, invoked_s, moment))

    def first_ack_after(self, partition: int, moment_s: float) -> float | None:
        """Completion time of the first acknowledged write on ``partition`` invoked at or
        after ``moment_s``."""
        with self._lock:
            times = [
                w.completed_s
                for w in self.writes
                if w.partition == partition and w.type == "ok" and w.invoked_s >= moment_s
            ]
        return min(times, default=None)


# --- the workload -----------------------------------------------------------------------------


def _client_factory(seeds: list[str]) -> Callable[[], Any]:
    from planaria.client import Client  # noqa: PLC0415 -- the client loads with the demo

    def make() -> Any:
        return Client(seeds)

    return make


def _decode(value: Any) -> Hashable:
    return value.decode() if isinstance(value, bytes) else value


class _Worker(threading.Thread):
    """Runs operations until stopped: random gets and puts of ``keys``, or, as a prober,
    puts of one key only (every write a new unique value)."""

    def __init__(
        self,
        index: int,
        recorder: _Recorder,
        make_client: Callable[[], Any],
        keys: list[str],
        stop: threading.Event,
        *,
        writes_only: bool = False,
        pause_s: float = 0.0,
    ) -> None:
        super().__init__(name=f"demo-worker-{index}", daemon=True)
        self._index = index
        self._process = index
        self._recorder = recorder
        self._make_client = make_client
        self._keys = keys
        self._stopping = stop
        self._writes_only = writes_only
        self._pause_s = pause_s
        self._rng = random.Random(index)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = self._make_client()
            try:
                self._loop(client)
            finally:
                client.close()
        except BaseException as exc:  # reported by the demo, which then fails
            self.error = exc

    def _loop(self, client: Any) -> None:
        seq = 0
        while not self._stopping.is_set():
            key = self._rng.choice(self._keys)
            if self._writes_only or self._rng.random() < _WRITE_SHARE:
                seq += 1
                self._put(client, key, f"{self._index}.{seq}")
            else:
                self._get(client, key)
            if self._pause_s:
                self._stopping.wait(self._pause_s)

    def _put(self, client: Any, key: str, value: str) -> None:
        invoked = self._recorder.invoke(self._process, "put", key, value)
        try:
            client.set(key, value)
        except UnknownOutcome:
            self._recorder.complete(self._process, "info", "put", key, None, invoked_s=invoked)
            # Jepsen's rule: a process with an operation of unknown outcome never issues
            # another; a fresh process id carries on.
            self._process += 1_000
            return
        except UsageError:
            raise
        except PlanariaError:
            self._recorder.complete(self._process, "fail", "put", key, None, invoked_s=invoked)
            return
        self._recorder.complete(self._process, "ok", "put", key, value, invoked_s=invoked)

    def _get(self, client: Any, key: str) -> None:
        invoked = self._recorder.invoke(self._process, "get", key, None)
        try:
            value = _decode(client.get(key))
        except UsageError:
            raise
        except PlanariaError:
            # A read changes nothing: one that did not answer is dropped (fail).
            self._recorder.complete(self._process, "fail", "get", key, None, invoked_s=invoked)
            return
        self._recorder.complete(self._process, "ok", "get", key, value, invoked_s=invoked)


# --- the demo ---------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What the demo measured; ``passed`` when every check held."""

    ops: Counter[str] = field(default_factory=Counter)
    victim: str | None = None
    failover_ms: dict[int, float | None] = field(default_factory=dict)
    catch_up_s: float | None = None
    lost_writes: int | None = None
    verdict: str | None = None
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems and self.lost_writes == 0 and self.verdict == "linearizable"


class _Phase:
    """The live view: a phase line, the counters, and what happened so far."""

    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder
        self.phase = "starting"
        self.lines: list[str] = []
        self._started = time.monotonic()
        self._last = (time.monotonic(), 0)
        self._rate = 0.0

    def __rich__(self) -> RenderableType:
        counts = self.recorder.counts
        done = sum(counts.values())
        now = time.monotonic()
        if now - self._last[0] >= 0.5:
            self._rate = (done - self._last[1]) / (now - self._last[0])
            self._last = (now, done)
        line = Text.assemble(
            ("● ", "bold cyan"),
            (f"{self.phase}", "bold"),
            f"   {now - self._started:5.1f} s   ops ",
            (f"ok {counts['ok']}", "green"),
            "  ",
            (f"fail {counts['fail']}", "yellow"),
            "  ",
            (f"info {counts['info']}", "magenta"),
            f"   {self._rate:6.0f} ops/s",
        )
        return Group(*(Text.from_markup(entry) for entry in self.lines[-12:]), line)


def run_cluster_demo(args: argparse.Namespace, console: Console | None = None) -> DemoResult:
    """Run the demo (see the module docstring); everything is stopped and, unless
    ``--keep``, removed before this returns or raises."""
    console = console or Console()
    if args.nodes < 3:
        raise UsageError("the demo kills a node and needs at least 3 (--nodes)")
    if args.threads < 1 or args.keys < 1 or args.duration_s <= 0:
        raise UsageError("--threads, --keys and --duration-s must be positive")
    result = DemoResult()
    started = time.monotonic()
    with _work_dir(args.keep) as data_dir:
        base_port = free_base_port(args.nodes)
        cluster = LocalCluster(
            data_dir,
            nodes=args.nodes,
            partitions=args.partitions or DEFAULT_PARTITIONS,
            replicas=args.replicas,
            base_port=base_port,
            fsync=args.fsync,
        )
        console.rule("[bold]planaria demo[/]: a cluster cut and grown back")
        try:
            _run(console, cluster, args, result)
        finally:
            with console.status("stopping the cluster ..."):
                cluster.stop()
            if args.keep:
                console.print(f"kept {data_dir} (logs, cluster.json, history.jsonl)")
    result.elapsed_s = time.monotonic() - started
    _summary(console, result)
    return result


@contextlib.contextmanager
def _work_dir(keep: str | None) -> Iterator[Path]:
    if keep is not None:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="planaria-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(
    console: Console, cluster: LocalCluster, args: argparse.Namespace, result: DemoResult
) -> None:
    with console.status(f"starting a coordinator and {args.nodes} nodes ..."):
        t0 = time.monotonic()
        cluster.start(timeout_s=60.0)
    console.print(
        f"[green]✓[/] {args.nodes} nodes serving {cluster.partitions} partitions x "
        f"{args.replicas} replicas "
        f"after {time.monotonic() - t0:.1f} s: "
        + ", ".join(f"{n} {a}" for n, a in cluster.addresses.items())
    )
    status = cluster.status()
    counts = status.primary_counts()
    victim = max(sorted(counts), key=lambda n: counts[n])
    affected = sorted(p.id for p in status.partitions if p.primary == victim)
    result.victim = victim
    console.print(
        f"  primaries: {', '.join(f'{n} {c}' for n, c in sorted(counts.items()))}; "
        f"the victim will be [bold red]{victim}[/] ({len(affected)} partitions)"
    )

    recorder = _Recorder(cluster.partitions)
    make_client = _client_factory(list(cluster.addresses.values()))
    stop = threading.Event()
    keys = [f"key-{i}" for i in range(args.keys)]
    probes = probe_keys(cluster.partitions)
    workers = [_Worker(i, recorder, make_client, keys, stop) for i in range(args.threads)] + [
        _Worker(
            args.threads + j,
            recorder,
            make_client,
            [probes[p]],
            stop,
            writes_only=True,
            pause_s=_PROBE_PAUSE_S,
        )
        for j, p in enumerate(affected)
    ]
    view = _Phase(recorder)
    steady_s = args.duration_s / 2
    try:
        with Live(view, console=console, refresh_per_second=8, transient=True):
            for worker in workers:
                worker.start()
            view.phase = f"workload: {args.threads} threads + {len(affected)} probes"
            _wait_while_healthy(workers, steady_s)

            view.phase = f"kill -9 {victim}"
            kill_s = recorder.now()
            cluster.kill(victim, signal.SIGKILL)
            view.lines.append(f"[bold red]✗ kill -9 {victim}[/] at t={kill_s:.2f} s")
            view.phase = f"waiting for {len(affected)} partitions to fail over"
            result.failover_ms = _wait_failover(recorder, affected, kill_s, workers, 15.0)
            done = [ms for ms in result.failover_ms.values() if ms is not None]
            if done:
                view.lines.append(
                    f"[green]✓[/] {len(done)}/{len(affected)} partitions failed over: "
                    f"p50 {statistics.median(done):.0f} ms, max {max(done):.0f} ms"
                )
            _wait_while_healthy(workers, steady_s / 2)

            view.phase = f"restarting {victim}"
            restart_s = time.monotonic()
            cluster.start(victim)
            view.lines.append(f"[cyan]↻ {victim} restarted[/] (pid {cluster.pid(victim)})")
            view.phase = f"{victim} catching up"
            caught_up = _wait_caught_up(cluster, victim, view, workers, 30.0)
            if caught_up is not None:
                result.catch_up_s = caught_up - restart_s
                view.lines.append(
                    f"[green]✓[/] {victim} caught up: back in the ISR of every partition it "
                    f"replicates {result.catch_up_s:.1f} s after its restart"
                )
            _wait_while_healthy(workers, steady_s / 2)
            view.phase = "stopping the workload"
    finally:
        stop.set()
        join_deadline = time.monotonic() + 15.0
        for worker in workers:
            worker.join(timeout=max(0.0, join_deadline - time.monotonic()))
    for line in view.lines:
        console.print(line)
    with console.status("writes stopped; waiting for lag 0 everywhere ..."):
        settled = _wait_settled(cluster, 10.0)
    if settled is None:
        result.problems.append("replicas did not reach lag 0 with full ISRs within 10 s")
    else:
        console.print(
            f"[green]✓[/] writes stopped: all {len(settled.partitions)} partitions have "
            "their full ISR and lag 0"
        )
    _failover_table(console, result.failover_ms)
    errors = [w.error for w in workers if w.error is not None]
    stuck = [w.name for w in workers if w.is_alive()]
    if stuck:
        result.problems.append(f"workers still running after 15 s: {', '.join(stuck)}")
    if errors:
        result.problems.append(f"a worker failed: {errors[0]!r}")
    if any(ms is None for ms in result.failover_ms.values()):
        result.problems.append("some partitions did not fail over within 15 s")
    if result.catch_up_s is None:
        result.problems.append(f"{victim} did not catch up within 30 s")
    result.ops = Counter(recorder.counts)
    keep = cluster.data_dir if args.keep else None
    _prove(console, make_client, recorder, keys + list(probes.values()), result, keep=keep)


def _wait_while_healthy(workers: list[_Worker], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        failed = next((w.error for w in workers if w.error is not None), None)
        if failed is not None:
            raise failed
        time.sleep(0.05)


def _wait_failover(
    recorder: _Recorder,
    affected: list[int],
    kill_s: float,
    workers: list[_Worker],
    timeout_s: float,
) -> dict[int, float | None]:
    deadline = time.monotonic() + timeout_s
    acked: dict[int, float | None] = dict.fromkeys(affected)
    while time.monotonic() < deadline:
        for partition in affected:
            if acked[partition] is None:
                moment = recorder.first_ack_after(partition, kill_s)
                if moment is not None:
                    acked[partition] = (moment - kill_s) * 1000
        if all(ms is not None for ms in acked.values()):
            break
        _wait_while_healthy(workers, 0.05)
    return acked


def _isr_of(status: ClusterStatus, node: str) -> tuple[int, int, int | None]:
    """(partitions whose ISR holds ``node``, partitions it replicates, their largest lag)."""
    mine = [p for p in status.partitions if node in p.replicas]
    lags = [p.lag for p in mine if p.lag is not None]
    return sum(node in p.isr for p in mine), len(mine), max(lags, default=None)


def _wait_caught_up(
    cluster: LocalCluster, node: str, view: _Phase, workers: list[_Worker], timeout_s: float
) -> float | None:
    """When ``node`` is back in the ISR of every partition it replicates (the primaries
    add it once it reached their log end), while the workload keeps writing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        in_isr, total, lag = _isr_of(cluster.status(), node)
        lag_text = "" if lag is None else f", lag {lag} entries"
        view.phase = f"{node} catching up: in the ISR of {in_isr}/{total} partitions{lag_text}"
        if total and in_isr == total:
            return time.monotonic()
        _wait_while_healthy(workers, 0.1)
    return None


def _wait_settled(cluster: LocalCluster, timeout_s: float) -> ClusterStatus | None:
    """Once writes stopped: every partition with a primary, its full ISR, and lag 0."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = cluster.status()
        if all(
            p.primary is not None and len(p.isr) == len(p.replicas) and p.lag == 0
            for p in status.partitions
        ):
            return status
        time.sleep(0.1)
    return None


def _failover_table(console: Console, failover_ms: dict[int, float | None]) -> None:
    if not failover_ms:
        return
    table = Table(title="failover per partition (kill -> first acknowledged write)")
    columns = 4
    for _ in range(columns):
        table.add_column("partition", justify="right")
        table.add_column("ms", justify="right")
    cells = [
        (str(p), "[red]none[/]" if ms is None else f"{ms:.0f}")
        for p, ms in sorted(failover_ms.items())
    ]
    for start in range(0, len(cells), columns):
        row = cells[start : start + columns]
        row += [("", "")] * (columns - len(row))
        table.add_row(*(item for cell in row for item in cell))
    console.print(table)


def _prove(
    console: Console,
    make_client: Callable[[], Any],
    recorder: _Recorder,
    keys: list[str],
    result: DemoResult,
    *,
    keep: Path | None,
) -> None:
    with console.status(f"reading back all {len(keys)} keys ..."):
        final = _read_all(make_client, keys)
    operations = operations_from_events(recorder.events)
    lost = find_lost_writes(operations, final)
    result.lost_writes = len(lost)
    for item in lost[:5]:
        console.print(f"[red]lost[/] {item.op.key} = {item.op.value!r}: {item.reason}")
    model = default_model("jsonl")
    with console.status(f"checking {len(operations)} operations for linearizability ..."):
        checked = check_operations(model, operations, clock=time.monotonic, timeout_s=60.0)
    result.verdict = str(checked.verdict)
    if checked.verdict is not Verdict.LINEARIZABLE:
        console.print(explain(model, checked), markup=False)
    if keep is not None:
        _write_history(keep / "history.jsonl", recorder.events)


def _read_all(make_client: Callable[[], Any], keys: list[str]) -> dict[Hashable, Hashable]:
    """The final value of every key (after the workload stopped), each read retried."""
    client = make_client()
    try:
        final: dict[Hashable, Hashable] = {}
        for key in keys:
            for attempt in range(20):
                try:
                    value = _decode(client.get(key))
                    break
                except (UnknownOutcome, PlanariaError):
                    if attempt == 19:
                        raise
                    time.sleep(0.1)
            if value is not None:
                final[key] = value
        return final
    finally:
        client.close()


def _write_history(path: Path, events: list[Event]) -> None:
    import json  # noqa: PLC0415 -- only with --keep

    with open(path, "w") as out:
        for event in events:
            record = {
                "process": event.process,
                "type": event.type,
                "f": event.f,
                "key": event.key,
                "value": event.value,
                "time": round(event.time, 6),
            }
            out.write(json.dumps(record) + "\n")


def _summary(console: Console, result: DemoResult) -> None:
    done = [ms for ms in result.failover_ms.values() if ms is not None]
    table = Table(title="planaria demo: summary", show_header=False)
    table.add_column("what")
    table.add_column("result", justify="right")
    ops = result.ops
    table.add_row("operations ok / fail / info", f"{ops['ok']} / {ops['fail']} / {ops['info']}")
    table.add_row("node killed (kill -9)", result.victim or "-")
    if done:
        table.add_row(
            f"failover p50 / max ({len(done)} partitions)",
            f"{statistics.median(done):.0f} ms / {max(done):.0f} ms",
        )
    else:
        table.add_row("failover", "[red]not measured[/]")
    table.add_row(
        "restarted node caught up",
        "-" if result.catch_up_s is None else f"in {result.catch_up_s:.1f} s",
    )
    lost = result.lost_writes
    table.add_row(
        "acknowledged writes lost",
        "-" if lost is None else ("[green]0[/]" if lost == 0 else f"[red]{lost}[/]"),
    )
    verdict = result.verdict or "-"
    table.add_row(
        "history linearizable",
        "[green]yes[/]" if verdict == "linearizable" else f"[red]{verdict}[/]",
    )
    table.add_row("demo took", f"{result.elapsed_s:.1f} s")
    console.print(table)
    for problem in result.problems:
        console.print(f"[red]✗ {problem}[/]")
    console.print("[bold green]PASS[/]" if result.passed else "[bold red]FAIL[/]")
