"""What a partition's key index (core/keyspace.py) costs: per write, per build, in memory.

Measures, in one process, alternating the contenders in each repeat (medians):
- the scan-order position of a key: XXH3-64 (now) against BLAKE2b (before: the anchor);
- ``Replica._apply`` of the same writes (``--keys`` inserts, as many overwrites, as many
  deletes) on a replica whose index was never asked for (nothing to maintain) and on one
  whose index is built (kept in step with every apply); the difference is what a write
  pays for the index;
- building the index of ``--keys`` keys: eagerly (``KeyIndex(keys)``, what a partition
  open did before) and lazily (``LazyKeyIndex``: ``BUILD_SLICE_KEYS`` keys a step, as the
  node runs it), with the longest step;
- the memory of a built index per key (tracemalloc; the keys themselves are the state's,
  shared, and not counted).

Run: ``PYTHONPATH=src python benchmarks/bench_key_index.py [--keys 50000] [--repeats 5]``.
Against a checkout before the lazy index (``PYTHONPATH=<old>/src``) the apply rows measure
that code, whose index was always built.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import sys
import time
import tracemalloc
from binascii import crc_hqx
from collections.abc import Callable, Sequence
from typing import Any

from _common import write_results  # the script directory is on sys.path
from planaria.core import keyspace
from planaria.core.keyspace import KeyIndex, scan_order
from planaria.core.messages import Delete, Entry, Set, WriteOp
from planaria.core.replica import Replica
from planaria.core.slots import SLOTS, hash_tag

LAZY = hasattr(keyspace, "LazyKeyIndex")  # False on a checkout before the lazy index


def blake2b_order(key: bytes) -> int:
    """The position as it was computed before: BLAKE2b's 48 bits under the slot."""
    slot = crc_hqx(hash_tag(key), 0) & (SLOTS - 1)
    digest = hashlib.blake2b(key, digest_size=6).digest()
    return (slot << 48) | int.from_bytes(digest, "big")


def timed_s(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def writes(keys: list[bytes]) -> list[WriteOp]:
    """Inserts of every key, overwrites of every key, deletes of every key."""
    ops: list[WriteOp] = [Set(key, b"v") for key in keys]
    ops += [Set(key, b"w") for key in keys]
    ops += [Delete(key) for key in keys]
    return ops


def apply_all(indexed: bool, ops: list[WriteOp]) -> float:
    """Seconds to apply ``ops`` to a fresh replica, its index built first or never."""
    replica = Replica("a", 0)
    if indexed and LAZY:
        replica.start_key_index()
        while not replica.key_index_step():
            pass
    entries = [Entry(1, n, ("c", n), op) for n, op in enumerate(ops, start=1)]
    apply = replica._apply

    def run() -> None:
        for entry in entries:
            assert entry.request_id is not None and entry.op is not None
            apply(entry, entry.request_id, entry.op)

    return timed_s(run)


def lazy_build(keys: list[bytes]) -> tuple[float, float]:
    """Seconds for a lazy build of ``keys``, and its longest step."""
    kv = dict.fromkeys(keys, b"v")
    lazy = keyspace.LazyKeyIndex(kv)
    steps: list[float] = []
    gc.collect()
    start = time.perf_counter()
    lazy.start()
    done = False
    while not done:
        step_start = time.perf_counter()
        done = lazy.step()
        steps.append(time.perf_counter() - step_start)
    return time.perf_counter() - start, max(steps)


def index_bytes_per_key(keys: list[bytes]) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = KeyIndex(keys)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(index) == len(keys)
    return (after - before) / len(keys)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    keys = [b"key:%09d" % n for n in range(args.keys)]
    ops = writes(keys)
    samples: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    for _ in range(args.repeats):
        record("order_blake2b_ns", timed_s(lambda: [blake2b_order(k) for k in keys]) / len(keys))
        record("order_ns", timed_s(lambda: [scan_order(k) for k in keys]) / len(keys))
        if LAZY:
            record("apply_no_index_us", apply_all(False, ops) / len(ops))
        record("apply_index_us", apply_all(True, ops) / len(ops))
        record("build_eager_us", timed_s(lambda: KeyIndex(keys)) / len(keys))
        if LAZY:
            total_s, step_s = lazy_build(keys)
            record("build_lazy_us", total_s / len(keys))
            record("build_lazy_longest_step_ms", step_s * 1000)
    results: dict[str, Any] = {"keys": args.keys, "repeats": args.repeats, "lazy": LAZY}
    for name, values in samples.items():
        scale = 1e9 if name.endswith("_ns") else 1e6 if name.endswith("_us") else 1.0
        results[name] = round(statistics.median(values) * scale, 3)
    results["index_bytes_per_key"] = round(index_bytes_per_key(keys), 1)
    if LAZY:
        results["build_slice_keys"] = keyspace.BUILD_SLICE_KEYS
    for name, value in results.items():
        print(f"{name}: {value}")
    write_results("key_index" if LAZY else "key_index_before", results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
