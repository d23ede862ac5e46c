"""``planaria demo``: by default the cluster demo (``planaria.cli._cluster_demo``: a real
cluster, kill -9, failover, catch-up, and the proof that nothing was lost); with
``--toolkit``, the fault-recovery toolkit at work, in about five seconds:

1. Placement: keys -> slots -> partitions -> three replicas in three zones, by consistent
   hashing with bounded loads; a node dies and only its replicas move.
2. Retry: a flaky dependency, ridden through with backoff, jitter and a retry budget.
3. Circuit breaker: the dependency goes down; the breaker trips, refuses fast, probes, heals.
4. Failure detection: a phi-accrual detector notices a peer that went silent.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from planaria.breaker import BreakerState, CircuitBreaker
from planaria.cli import _cluster_demo as cluster_demo
from planaria.core.slots import keyslot, partition_of_slot
from planaria.detect import PhiAccrualDetector
from planaria.errors import CircuitOpenError
from planaria.hashing import HashRing, assign_bounded, bounded_caps
from planaria.retry import RetryBudget, RetryState, retry

ZONES = {"n1": "zone-a", "n2": "zone-b", "n3": "zone-c", "n4": "zone-a", "n5": "zone-b"}
ZONES |= {"n6": "zone-c"}


TOOLKIT_PARTITIONS = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--toolkit", action="store_true", help="show the toolkit (placement, retry, breaker, ...)"
    )
    parser.add_argument("--seed", type=int, default=7, help="toolkit: seed of the flaky dependency")
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help=f"partitions (toolkit {TOOLKIT_PARTITIONS}, "
        f"cluster {cluster_demo.DEFAULT_PARTITIONS})",
    )
    parser.add_argument("--replicas", type=int, default=3, help="replicas per partition")
    cluster_demo.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if not args.toolkit:
        return 0 if cluster_demo.run_cluster_demo(args).passed else 1
    console = Console()
    console.rule("[bold]planaria demo[/]: the fault-recovery toolkit")
    _placement(console, args.partitions or TOOLKIT_PARTITIONS, args.replicas)
    rng = random.Random(args.seed)
    _retry(console, rng)
    _breaker(console)
    _detector(console)
    console.rule("[bold green]done[/]")
    return 0


def _placement(console: Console, partitions: int, replicas: int) -> None:
    console.rule("1. consistent hashing with bounded loads")
    ring = HashRing(list(ZONES), zones=ZONES)
    items = [f"p{i}" for i in range(partitions)]
    before = assign_bounded(items, ring, eps=0.25, replicas=replicas)
    caps = bounded_caps(ring, len(items), eps=0.25, replicas=replicas)
    key = "user:{42}:cart"
    partition = partition_of_slot(keyslot(key), partitions)
    console.print(
        f"key [cyan]{key!r}[/] -> slot {keyslot(key)} -> partition p{partition} -> "
        f"{' '.join(before[f'p{partition}'])} (primary first)"
    )

    dead = "n4"
    ring.remove(dead)
    after = assign_bounded(items, ring, eps=0.25, replicas=replicas)
    table = Table(title=f"{partitions} partitions x {replicas} replicas on 6 nodes in 3 zones")
    table.add_column("partition")
    table.add_column("replicas (primary first)")
    table.add_column(f"after {dead} dies")
    for item in items:
        old, new = before[item], after[item]
        shown = " ".join(f"[bold yellow]{n}[/]" if n not in old else n for n in new)
        table.add_row(item, " ".join(old), shown if new != old else "[dim]unchanged[/]")
    console.print(table)
    load = Counter(node for nodes in before.values() for node in nodes)
    console.print(
        "replicas per node: "
        + ", ".join(f"{n} {load[n]}/{caps[n]} ({ZONES[n]})" for n in sorted(ZONES))
    )
    moved = sum(len(set(after[i]) - set(before[i])) for i in items)
    console.print(
        f"{dead} held {load[dead]} replicas; {moved} replicas moved "
        f"(ideal: exactly the {load[dead]} that {dead} held); every partition still has "
        f"{replicas} replicas in {replicas} zones: "
        f"{all(len({ZONES[n] for n in after[i]}) == replicas for i in items)}"
    )


def _retry(console: Console, rng: random.Random) -> None:
    console.rule("2. retry: deadlines, backoff with full jitter, a retry budget")

    def before_sleep(state: RetryState) -> None:
        console.print(
            f"    attempt {state.attempt} failed: [red]{state.exception!r}[/]; "
            f"backing off {1000 * (state.next_wait_s or 0):.0f} ms"
        )

    budget = RetryBudget(ratio=0.5, min_retries_per_s=5.0)

    @retry(
        attempts_max=6,
        timeout_s=2.0,
        wait_initial_s=0.01,
        wait_max_s=0.2,
        budget=budget,
        before_sleep=before_sleep,
        rng=rng,
    )
    def fetch(key: str) -> str:
        if rng.random() < 0.5:
            raise ConnectionError("connection reset by peer")
        return f"value-of-{key}"

    for key in ("a", "b", "c", "d"):
        console.print(f"  fetch({key!r}) -> [green]{fetch(key)!r}[/]")
    stats = fetch.retry_stats  # type: ignore[attr-defined]
    console.print(
        f"  {stats.calls} calls, {stats.attempts} attempts, {stats.give_ups} give-ups: "
        "the caller never saw the flakiness"
    )


def _breaker(console: Console) -> None:
    console.rule("3. circuit breaker: trip, refuse fast, probe, heal")
    healthy = {"up": True}

    def on_change(_: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        console.print(f"    [bold magenta]breaker {old} -> {new}[/]")

    breaker = CircuitBreaker(
        "inventory", window_size=10, calls_min=4, open_s=0.3, half_open_calls=1
    )
    breaker.add_listener(on_change)

    @breaker
    def inventory(item: str) -> int:
        if not healthy["up"]:
            raise ConnectionError("inventory service unreachable")
        return len(item)

    def call(i: int) -> None:
        start = time.perf_counter()
        try:
            result = f"[green]{inventory(f'item-{i}')}[/]"
        except CircuitOpenError as error:
            result = f"[yellow]refused, next trial in {error.remaining_s * 1000:.0f} ms[/]"
        except ConnectionError as error:
            result = f"[red]{error}[/]"
        console.print(f"  call {i:2d} ({(time.perf_counter() - start) * 1e6:5.0f} µs): {result}")

    console.print("  the inventory service goes down")
    healthy["up"] = False
    for i in range(7):
        call(i)
    console.print("  ...it comes back; the breaker waits out its open time, then probes")
    healthy["up"] = True
    time.sleep(0.35)
    for i in range(7, 10):
        call(i)


def _detector(console: Console) -> None:
    console.rule("4. phi-accrual failure detection (simulated clock)")
    detector = PhiAccrualDetector()
    now_ms = 0.0
    for _ in range(20):
        detector.heartbeat(now_ms)
        now_ms += 100.0
    last = now_ms - 100.0
    console.print(
        f"  heartbeats every 100 ms, then silence; the detector suspects after "
        f"{detector.suspect_after_ms():.0f} ms of silence (threshold phi = {detector.threshold})"
    )
    for silence_ms in range(100, 701, 100):
        phi = detector.phi(last + silence_ms)
        verdict = "[red]suspected[/]" if detector.suspect(last + silence_ms) else "[green]alive[/]"
        console.print(f"  silent {silence_ms:3d} ms: phi = {phi:6.2f}  {verdict}")
