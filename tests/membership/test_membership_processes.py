"""Membership changes on real processes (loopback, bounded): a 3-node cluster holding keys
under a running workload gets a 4th node, then drains and removes one of the first three.

Every acknowledged write stays readable, the whole history is linearizable
(``planaria.check``), no client sees an error, and no partition goes without an
acknowledged write for more than a second while replicas move. The issue asks for 100k
keys; this CI test loads ``KEYS`` (2,000) so it stays well under a minute on a busy 2-core
machine. ``PLANARIA_MEMBERSHIP_KEYS=100000`` runs it at the issue's size (a few minutes;
recorded in docs/BENCHMARKS.md); ``benchmarks/bench_rebalance.py`` measures migration.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from planaria.check import (
    Verdict,
    check_operations,
    default_model,
    find_lost_writes,
    operations_from_events,
)
from planaria.cli._cluster_demo import _client_factory, _read_all, _Recorder, _Worker
from planaria.cluster import LocalCluster, free_base_port, probe_keys

pytestmark = pytest.mark.slow

PARTITIONS = 8
KEYS = int(os.environ.get("PLANARIA_MEMBERSHIP_KEYS", "2000"))
LOADERS = 16  # client threads that preload the keys
WORKERS = 2
MOVES_TIMEOUT_S = 30.0
WRITE_GAP_MAX_S = 1.0
PROBE_PAUSE_S = 0.005


def _wait_moves(cluster: LocalCluster, done: Callable[[Any], bool], workers: list[_Worker]) -> None:
    deadline = time.monotonic() + MOVES_TIMEOUT_S
    while time.monotonic() < deadline:
        assert all(w.error is None for w in workers), [w.error for w in workers]
        progress = cluster.move_progress()
        if progress is not None and done(progress):
            return
        time.sleep(0.1)
    raise AssertionError(f"moves not done after {MOVES_TIMEOUT_S} s: {cluster.move_progress()}")


def _longest_write_gap(recorder: _Recorder, start_s: float, end_s: float) -> float:
    """Per partition, the longest time without an acknowledged write inside the window."""
    longest = 0.0
    for partition in range(PARTITIONS):
        acks = sorted(
            w.completed_s
            for w in recorder.writes
            if w.partition == partition and w.type == "ok" and start_s <= w.completed_s <= end_s
        )
        marks = [start_s, *acks, end_s]
        longest = max(longest, *(b - a for a, b in itertools.pairwise(marks)))
    return longest


def test_add_then_drain_and_remove_under_load(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, nodes=3, partitions=PARTITIONS, base_port=free_base_port(6))
    with cluster:
        cluster.start(timeout_s=60.0)
        make_client = _client_factory(list(cluster.addresses.values()))
        preloaded = {f"pre-{i}": f"v{i}" for i in range(KEYS)}

        def load(offset: int) -> None:
            loader = make_client()
            try:
                for key in itertools.islice(preloaded, offset, None, LOADERS):
                    assert loader.set(key, preloaded[key])
            finally:
                loader.close()

        with concurrent.futures.ThreadPoolExecutor(LOADERS) as pool:
            list(pool.map(load, range(LOADERS)))

        recorder = _Recorder(PARTITIONS)
        stop = threading.Event()
        probes = probe_keys(PARTITIONS)
        keys = [*probes.values(), *(f"hot-{i}" for i in range(8))]
        workers = [_Worker(i, recorder, make_client, keys, stop) for i in range(WORKERS)]
        # One writer per partition (a write every few ms): a gap in its acks is a time the
        # partition could not take writes, not a lull of the random workload.
        workers += [
            _Worker(WORKERS + p, recorder, make_client, [key], stop, writes_only=True,
                    pause_s=PROBE_PAUSE_S)
            for p, key in sorted(probes.items())
        ]  # fmt: skip
        for worker in workers:
            worker.start()
        try:
            time.sleep(0.5)
            add_s = recorder.now()
            added = cluster.add_node()
            _wait_moves(cluster, lambda p: p.done, workers)
            added_s = recorder.now()

            leaving = "n1"
            cluster.drain(leaving)
            _wait_moves(cluster, lambda p: p.held.get(leaving) == 0 and not p.moving, workers)
            cluster.remove_node(leaving)
            removed_s = recorder.now()
            time.sleep(0.3)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=15.0)
        assert all(w.error is None for w in workers), [w.error for w in workers]
        assert cluster.node_ids == ["n2", "n3", added]
        status = cluster.status()
        assert all(leaving not in p.replicas for p in status.partitions)
        assert sum(added in p.replicas for p in status.partitions) > 0

        # Every acknowledged write is still there (the preloaded keys, and the workload's).
        final = _read_all(make_client, [*preloaded, *keys])
        assert {k: final.get(k) for k in preloaded} == preloaded
        operations = operations_from_events(recorder.events)
        assert not find_lost_writes(operations, final)
        checked = check_operations(default_model("jsonl"), operations, timeout_s=30.0)
        assert checked.verdict is Verdict.LINEARIZABLE

        # Clients saw redirects at most: no error, no unknown outcome, no long write gap.
        assert recorder.counts["fail"] == 0 and recorder.counts["info"] == 0, recorder.counts
        assert recorder.counts["ok"] > 200
        gap_s = max(
            _longest_write_gap(recorder, add_s, added_s),
            _longest_write_gap(recorder, added_s, removed_s),
        )
        slow = sorted(
            ((w.completed_s - w.invoked_s, w.partition, w.invoked_s) for w in recorder.writes),
            reverse=True,
        )[:5]
        windows = f"add {add_s:.2f}..{added_s:.2f}, drain+remove ..{removed_s:.2f}"
        assert gap_s < WRITE_GAP_MAX_S, (
            f"a partition took no write for {gap_s:.2f} s ({windows}); slowest writes "
            f"(latency s, partition, invoked at s): {slow}"
        )
