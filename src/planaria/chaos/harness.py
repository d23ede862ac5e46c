"""The chaos run: start a target, run the workload, apply the nemesis schedule, heal, read
every key back, check, and write the output directory::

    history.jsonl    every register operation (planaria check reads it)
    counters.jsonl   the counter keys' operations (planaria.check.counters judges them)
    ttl.jsonl        the TTL keys' operations (planaria.check.expiry judges them)
    results.json     the measurements (planaria.chaos.results.summarize)
    latency.png      latency of every operation over time, faults shaded
    throughput.png   throughput over time by outcome, faults shaded
    data/            the target's data directories and logs

Everything it starts is stopped, and every partition rule removed, before it returns or
raises, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from planaria.chaos.net import Net, NetError, choose_method, make_net
from planaria.chaos.plots import plot_run
from planaria.chaos.results import (
    FaultRecord,
    completed_ops,
    counter_results,
    summarize,
    ttl_results,
)
from planaria.chaos.schedule import FAULT_KINDS, LEADER, Fault, format_schedule, random_schedule
from planaria.chaos.targets import Target, TargetError, make_target
from planaria.chaos.workload import (
    OpFailed,
    OpUnknown,
    Recorder,
    Worker,
    counter_keys,
    read_final,
    ttl_keys,
    write_history,
    written_keys,
)
from planaria.check import (
    Event,
    Verdict,
    check_counters,
    check_expired_reads,
    check_operations,
    default_model,
    explain_partition,
    find_lost_writes,
    operations_from_events,
)
from planaria.check.linearizability import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S
from planaria.errors import UsageError

__all__ = ["ChaosConfig", "run_chaos", "summary_table"]

_FINAL_READ_TIMEOUT_S: Final = 30.0
_JOIN_TIMEOUT_S: Final = 15.0
_SETTLE_S: Final = 1.0
KEYS_MAX: Final = 64  # counter keys, TTL keys: a few is the point (bounded)
# How far past a SET's latest possible expiry (its completion + ttl, on the harness's clock)
# a read may still return the value. The node judges expiry by its own wall clock in whole
# ms (at most 1 ms behind), its wall offset taken next to its monotonic clock every tick;
# the harness stamps with time.monotonic, which Linux slews at the same rate as the wall
# clock, invocations before the request is sent and completions after the answer came. On
# one host a correct node is thus never more than ~1 ms late; 5 ms leaves room for
# rounding. A step of the wall clock during the run (NTP) is measured and added.
EXPIRY_TOLERANCE_MS: Final = 5.0


@dataclass(frozen=True)
class ChaosConfig:
    out: Path
    target: str = "planaria"
    nodes: int = 3
    duration_s: float = 60.0
    faults: tuple[str, ...] = FAULT_KINDS
    clients: int = 8
    seed: int = 1
    schedule: tuple[Fault, ...] | None = None  # scripted; None: random from the seed
    bugs: tuple[str, ...] = ()
    partitions: int = 8
    check_timeout_s: float = DEFAULT_TIMEOUT_S
    check_memory_mb: float = DEFAULT_MEMORY_MB
    plots: bool = True
    net: str = "auto"  # auto | netns | iptables | proxy (planaria.chaos.net)
    # planaria's node options (None: the node's defaults); small values force snapshots
    # and compaction every few seconds, and transfers to nodes back from a kill.
    snapshot_entries: int | None = None
    snapshot_catchup_entries: int | None = None
    # Counter and TTL keys beside the registers (targets that cannot: skipped, and said so).
    counters: int = 3
    ttls: int = 4

    def faults_to_run(self) -> tuple[Fault, ...]:
        if self.schedule is not None:
            return self.schedule
        return random_schedule(
            random.Random(self.seed),
            duration_s=self.duration_s,
            kinds=self.faults,
            nodes=self.nodes,
        )


@dataclass
class _Nemesis:
    target: Target
    net: Net | None
    recorder: Recorder
    console: Console
    records: list[FaultRecord] = field(default_factory=list)
    paused: set[str] = field(default_factory=set)

    def group_all(self) -> None:
        if self.net is None:
            return
        for node in self.target.node_names:
            self.net.group(node, self.target.net_pids(node), self.target.ports(node))
        for name, (pids, ports) in self.target.bystanders().items():
            self.net.group(name, pids, ports)

    def resolve(self, fault: Fault) -> tuple[str, tuple[int, ...]]:
        """The node the fault hits and the shards it leads now."""
        try:
            leaders = self.target.leaders()
        except (OSError, TargetError) as exc:
            self.console.print(f"[yellow]leaders unknown ({exc}); the fault hits n1[/]")
            leaders = {}
        node = fault.node
        if node == LEADER:
            counts: dict[str, int] = {}
            for leader in leaders.values():
                counts[leader] = counts.get(leader, 0) + 1
            node = max(sorted(counts), key=lambda n: counts[n]) if counts else "n1"
        return node, tuple(sorted(s for s, leader in leaders.items() if leader == node))

    def inject(self, fault: Fault) -> tuple[str, tuple[int, ...], float]:
        node, affected = self.resolve(fault)
        if fault.kind == "kill":
            self.target.kill(node)
        elif fault.kind == "pause":
            self.target.signal(node, signal.SIGSTOP)
            self.paused.add(node)
        else:
            if self.net is None:
                raise UsageError("a partition fault needs a network method (--net)")
            others = [n for n in self.target.node_names if n != node]
            self.net.partition([node], [*others, *self.target.bystanders()])
        # The fault starts once it is in place (the node is gone, stopped, or every rule is
        # installed): an operation invoked earlier may still complete normally.
        start_s = self.recorder.now()
        self.console.print(
            f"  t={start_s:6.2f} s  [bold red]{fault.kind}[/] {node}"
            f"  (leads {len(affected)} shard{'s' if len(affected) != 1 else ''})"
        )
        return node, affected, start_s

    def heal(self, fault: Fault, node: str) -> None:
        if fault.kind == "kill":
            self.target.restart(node)
            if self.net is not None:
                self.net.group(node, self.target.net_pids(node), self.target.ports(node))
        elif fault.kind == "pause":
            self.target.signal(node, signal.SIGCONT)
            self.paused.discard(node)
        elif self.net is not None:
            self.net.heal()
        self.console.print(f"  t={self.recorder.now():6.2f} s  [green]healed[/] {node}")

    def heal_everything(self) -> None:
        for node in list(self.paused):
            with contextlib.suppress(ProcessLookupError):
                self.target.signal(node, signal.SIGCONT)
        self.paused.clear()
        if self.net is not None:
            self.net.heal()


def _wait(
    until_s: float, recorder: Recorder, workers: Sequence[Worker], poll_s: float = 0.05
) -> None:
    """Until the history clock reaches ``until_s``; a failed client fails the run at once."""
    while recorder.now() < until_s:
        for worker in workers:
            if worker.error is not None:
                raise TargetError(f"client {worker.name} failed: {worker.error!r}") from (
                    worker.error
                )
        time.sleep(min(poll_s, max(0.0, until_s - recorder.now())))


def run_chaos(config: ChaosConfig, console: Console | None = None) -> dict[str, Any]:
    """Run one chaos test (see the module docstring); returns the results.json record."""
    console = console or Console()
    if config.clients < 1 or config.duration_s <= 0:
        raise UsageError("--clients and --duration-s must be positive")
    if not 0 <= config.counters <= KEYS_MAX or not 0 <= config.ttls <= KEYS_MAX:
        raise UsageError(f"--counters and --ttls must be within 0..{KEYS_MAX}")
    schedule = config.faults_to_run()
    # the targets start processes in directories of their own: no path may be relative
    config = replace(config, out=config.out.resolve())
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    method = "none"
    if any(fault.kind == "partition" for fault in schedule):
        method = choose_method(config.net, root=os.geteuid() == 0)
    net: Net | None = None
    if method != "none":
        node_names = [f"n{i}" for i in range(1, config.nodes + 1)]
        try:
            net = make_net(method, node_names)
        except NetError as exc:
            raise UsageError(f"{exc} (or leave partition out of --faults)") from exc
    try:
        return _run_with_net(config, console, schedule, net, method)
    finally:
        if net is not None:
            net.close()


def _run_with_net(
    config: ChaosConfig,
    console: Console,
    schedule: Sequence[Fault],
    net: Net | None,
    method: str,
) -> dict[str, Any]:
    out = config.out
    target = make_target(
        config.target,
        out / "data",
        config.nodes,
        bugs=config.bugs,
        partitions=config.partitions,
        net=net,
        snapshot_entries=config.snapshot_entries,
        snapshot_catchup_entries=config.snapshot_catchup_entries,
    )
    console.rule(f"[bold]planaria chaos[/]: {config.target}, seed {config.seed}")
    console.print(f"schedule: {format_schedule(schedule) or '(no faults)'}")
    skipped = None
    if (config.counters or config.ttls) and not target.counters_and_ttls:
        skipped = f"{config.target} target: registers only"
        console.print(f"[yellow]counters and TTL keys skipped[/] ({skipped})")
        config = replace(config, counters=0, ttls=0)
    counters, ttls = counter_keys(config.counters), ttl_keys(config.ttls)
    recorder: Recorder | None = None
    compaction: dict[str, object] | None = None
    started = time.monotonic()
    try:
        with console.status(f"starting {config.target} ({config.nodes} nodes) ..."):
            target.start()
        recorder = Recorder()
        wall_offset_s = time.time() - time.monotonic()
        nemesis = _Nemesis(target, net, recorder, console)
        nemesis.group_all()
        try:
            workload_events, records = _run_workload(config, target, nemesis, recorder, schedule)
        finally:
            nemesis.heal_everything()
        with console.status("healed; reading every key back ..."):
            time.sleep(_SETTLE_S)
            keys = written_keys(workload_events)
            final = read_final(
                _recorded(target.read_many, recorder),
                [*keys, *counters, *ttls],
                timeout_s=_FINAL_READ_TIMEOUT_S,
                batch=target.read_batch,
            )
            # The final reads are part of the history: a lost write is then also a read
            # the checker cannot linearize.
            events = list(recorder.events)
            wall_step_ms = abs(time.time() - time.monotonic() - wall_offset_s) * 1000
            compaction = target.compaction()
    finally:
        with console.status("stopping ..."):
            target.stop()
    streams = _split(events, set(counters), set(ttls))
    events = streams["registers"]
    write_history(out / "history.jsonl", events)
    if counters:
        write_history(out / "counters.jsonl", streams["counters"])
    if ttls:
        write_history(out / "ttl.jsonl", streams["ttls"])
    operations = operations_from_events(events)
    lost = find_lost_writes(operations, final)
    with console.status(f"checking {len(operations)} operations for linearizability ..."):
        checked = check_operations(
            default_model("jsonl"),
            operations,
            clock=time.monotonic,
            timeout_s=config.check_timeout_s,
            memory_mb=config.check_memory_mb,
        )
    linearizable = {Verdict.LINEARIZABLE: True, Verdict.NOT_LINEARIZABLE: False}.get(
        checked.verdict
    )
    ops = completed_ops(workload_events, target.shard_of)
    results = summarize(
        ops=ops,
        faults=records,
        acked_writes_lost=len(lost),
        linearizable=linearizable,
        run={
            "target": config.target,
            "seed": config.seed,
            "net": method,
            "nodes": config.nodes,
            "clients": config.clients,
            "duration_s": config.duration_s,
            "schedule": format_schedule(schedule),
            "config": target.config(),
            "keys_read_back": len(keys),
        },
    )
    results["counters"] = counter_results(
        check_counters(streams["counters"], final) if counters else None, skipped
    )
    expiry = None
    if ttls:
        expiry = check_expired_reads(
            streams["ttls"], tolerance_ms=EXPIRY_TOLERANCE_MS + wall_step_ms
        )
    results["ttl"] = ttl_results(expiry, skipped, wall_step_ms)
    failing = checked.failing
    results["linearizability_failure"] = (
        None if failing is None else {"key": str(failing.key), "reason": failing.reason}
    )
    # Undecided within the limits: say which key and which limit, never a silent pass.
    undecided = checked.undecided if linearizable is None else None
    results["linearizability_unknown"] = (
        None if undecided is None else explain_partition(default_model("jsonl"), undecided)
    )
    results["lost_examples"] = [
        {
            "key": str(item.op.key),
            "value": list(item.op.value) if isinstance(item.op.value, tuple) else item.op.value,
            "reason": item.reason,
        }
        for item in lost[:10]
    ]
    results["compaction"] = compaction
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    if config.plots:
        title = f"{config.target} seed {config.seed}"
        results["plots"] = [p.name for p in plot_run(ops, records, out, title)]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(summary_table(results))
    return results


def _split(events: Sequence[Event], counters: set[str], ttls: set[str]) -> dict[str, list[Event]]:
    """The history by kind of key: registers (the kv model's), counters, TTL keys."""
    streams: dict[str, list[Event]] = {"registers": [], "counters": [], "ttls": []}
    for event in events:
        key = str(event.key)
        kind = "counters" if key in counters else "ttls" if key in ttls else "registers"
        streams[kind].append(event)
    return streams


def _recorded(
    read_many: Callable[[list[str]], dict[str, str | None]], recorder: Recorder
) -> Callable[[list[str]], dict[str, str | None]]:
    """``read_many`` with each key's read recorded as a get by a process of its own (all
    invoked before the batch is sent, all completed after it answered)."""
    batches = 0

    def read(keys: list[str]) -> dict[str, str | None]:
        nonlocal batches
        batches += 1
        processes = [f"final-{batches}-{i}" for i in range(len(keys))]
        for process, key in zip(processes, keys, strict=True):
            recorder.invoke(process, "get", key, None)
        try:
            values = read_many(keys)
        except (OpFailed, OpUnknown):
            for process, key in zip(processes, keys, strict=True):
                recorder.complete(process, "fail", "get", key, None)
            raise
        for process, key in zip(processes, keys, strict=True):
            recorder.complete(process, "ok", "get", key, values.get(key))
        return values

    return read


def _run_workload(
    config: ChaosConfig,
    target: Target,
    nemesis: _Nemesis,
    recorder: Recorder,
    schedule: Sequence[Fault],
) -> tuple[list[Any], list[FaultRecord]]:
    stop = threading.Event()
    workers = [
        Worker(
            i,
            config.clients,
            recorder,
            target.client,
            stop,
            seed=config.seed,
            counters=config.counters,
            ttls=config.ttls,
        )
        for i in range(config.clients)
    ]
    for worker in workers:
        worker.start()
    try:
        for fault in schedule:
            _wait(fault.start_s, recorder, workers)
            node, affected, start_s = nemesis.inject(fault)
            try:
                _wait(start_s + fault.duration_s, recorder, workers)
            finally:
                nemesis.heal(fault, node)
            nemesis.records.append(FaultRecord(fault.kind, node, start_s, recorder.now(), affected))
        _wait(config.duration_s, recorder, workers)
    finally:
        stop.set()
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
    stuck = [w.name for w in workers if w.is_alive()]
    if stuck:
        raise TargetError(f"clients still running {_JOIN_TIMEOUT_S:g} s after the stop: {stuck}")
    return list(recorder.events), nemesis.records


def summary_table(results: dict[str, Any], title: str | None = None) -> Table:
    """The terminal summary of one run."""
    table = Table(title=title or f"chaos: {results.get('target')} seed {results.get('seed')}")
    table.add_column("measure")
    table.add_column("result", justify="right")
    ops = results["ops"]
    table.add_row("operations ok / fail / info", f"{ops['ok']} / {ops['fail']} / {ops['info']}")
    table.add_row("faults", ", ".join(f"{f['kind']} {f['node']}" for f in results["faults"]))
    lost = results["acked_writes_lost"]
    table.add_row("acknowledged writes lost", "[green]0[/]" if lost == 0 else f"[red]{lost}[/]")
    lin = results["linearizable"]
    table.add_row(
        "linearizable",
        "[green]yes[/]"
        if lin is True
        else "[red]NO[/]"
        if lin is False
        else f"[yellow]unknown[/] {results.get('linearizability_unknown') or ''}",
    )
    _counter_rows(table, results.get("counters"))
    _ttl_rows(table, results.get("ttl"))
    fo = results["failover_ms"]

    def ms(value: Any) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    table.add_row(
        f"failover p50 / p99 / max ({fo['samples']} shards)",
        f"{ms(fo['p50'])} / {ms(fo['p99'])} / {ms(fo['max'])}",
    )
    if fo["unrecovered"]:
        table.add_row("shards with no acked write after a fault", f"[red]{fo['unrecovered']}[/]")
    table.add_row("longest gap without an acked write", ms(results["longest_write_gap_ms"]))
    table.add_row("network method", str(results["net"]))
    compaction = results.get("compaction")
    if compaction:
        indexes = [p["snapshot_index"] for p in compaction["partitions"].values()]
        table.add_row(
            "snapshots taken / installed (processes up at the end)",
            f"{compaction['snapshots_taken']} / {compaction['snapshots_installed']}",
        )
        if indexes:
            table.add_row("primaries' snapshot index min / max", f"{min(indexes)} / {max(indexes)}")
    return table


def _counter_rows(table: Table, counters: dict[str, Any] | None) -> None:
    if not counters:
        return
    if not counters["checked"]:
        table.add_row("counters", f"[yellow]skipped[/] ({counters['skipped'] or 'off'})")
        return
    for row in counters["keys"]:
        verdict = "[green]ok[/]" if not row["problems"] else "[red]FAIL[/]"
        table.add_row(
            f"counter {row['key']} acked/unknown/failed -> final",
            f"{row['acked']} (+{row['acked_sum']}) / {row['unknown']} (+{row['unknown_sum']})"
            f" / {row['failed']} -> {row['final']}  lost {row['lost']}, doubled "
            f"{row['doubled']} {verdict}",
        )
    for row in counters["keys"]:
        for problem in row["problems"][:2]:
            table.add_row(f"[red]{problem['check']}[/]", problem["detail"])


def _ttl_rows(table: Table, ttl: dict[str, Any] | None) -> None:
    if not ttl:
        return
    if not ttl["checked"]:
        table.add_row("TTL keys", f"[yellow]skipped[/] ({ttl['skipped'] or 'off'})")
        return
    expired = ttl["expired_reads"]
    table.add_row(
        f"TTL keys ({ttl['keys']}) SETs acked/unknown, reads",
        f"{ttl['sets_acked']} / {ttl['sets_unknown']}, {ttl['reads_judged']} judged of "
        f"{ttl['reads']}",
    )
    table.add_row(
        f"expired reads (> {ttl['tolerance_ms']:.1f} ms late)",
        "[green]0[/]" if expired == 0 else f"[red]{expired}[/]",
    )
