"""Active expiry of many keys at once: the work one log entry costs a replica.

A partition holds ``--keys`` keys that all expire at the same instant. The primary finds the
keys due (``Expiries.due``) and every replica applies the ``ExpireKeys`` entry that deletes
them (``apply_write``). Side by side in one run:

- planaria: slices of ``EXPIRE_KEYS_PER_ENTRY`` (128) keys, one entry each: the time one
  slice holds the partition (what a client write may wait behind), its median, p99 and max;
- the anchor: one entry that deletes every key at once (what an unbounded expiry would do):
  the time it holds the partition.

Both run on fresh copies of the same state, ``--repeats`` times alternating; the table
gives medians. Pure Python sources unless compiled (the JSON says which).

Run: ``.venv/bin/python benchmarks/bench_expiry.py [--keys 1000000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import write_results  # the script directory is on sys.path
from planaria.core.expiry import Expiries
from planaria.core.messages import EXPIRE_KEYS_PER_ENTRY, ExpireKeys, Version
from planaria.core.strings import apply_write

EXPIRE_AT_MS = 1_000
NOW_MS = 2_000


def build(keys: int) -> tuple[dict[bytes, tuple[bytes, Version]], Expiries]:
    version = Version(1, 1)
    kv = {b"key:%d" % i: (b"v", version) for i in range(keys)}
    expiries = Expiries(dict.fromkeys(kv, EXPIRE_AT_MS))
    return kv, expiries


def sliced(keys: int) -> tuple[float, list[float]]:
    """Every key deleted slice by slice: (total s, seconds per slice)."""
    kv, expiries = build(keys)
    per_slice: list[float] = []
    version = Version(1, 2)
    while True:
        start = time.perf_counter()
        due = expiries.due(NOW_MS, EXPIRE_KEYS_PER_ENTRY)
        if not due:
            break
        apply_write(kv, ExpireKeys(tuple(due)), version, expiries, NOW_MS)
        per_slice.append(time.perf_counter() - start)
    assert not kv and not expiries
    return sum(per_slice), per_slice


def at_once(keys: int) -> float:
    """Every key deleted by one entry: seconds."""
    kv, expiries = build(keys)
    start = time.perf_counter()
    due = expiries.due(NOW_MS, keys)
    apply_write(kv, ExpireKeys(tuple(due)), Version(1, 2), expiries, NOW_MS)
    elapsed = time.perf_counter() - start
    assert not kv and not expiries
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    totals, medians, p99s, maxima, anchors = [], [], [], [], []
    for round_index in range(args.repeats):
        runs = ["sliced", "at-once"] if round_index % 2 == 0 else ["at-once", "sliced"]
        for run in runs:
            if run == "sliced":
                total, per_slice = sliced(args.keys)
                per_slice.sort()
                totals.append(total)
                medians.append(statistics.median(per_slice))
                p99s.append(per_slice[int(0.99 * (len(per_slice) - 1))])
                maxima.append(per_slice[-1])
            else:
                anchors.append(at_once(args.keys))
    results = {
        "keys": args.keys,
        "slice_keys": EXPIRE_KEYS_PER_ENTRY,
        "slices": -(-args.keys // EXPIRE_KEYS_PER_ENTRY),
        "sliced_total_s": statistics.median(totals),
        "slice_median_ms": statistics.median(medians) * 1000,
        "slice_p99_ms": statistics.median(p99s) * 1000,
        "slice_max_ms": statistics.median(maxima) * 1000,
        "at_once_s": statistics.median(anchors),
    }
    results["at_once_over_slice_p99"] = results["at_once_s"] * 1000 / results["slice_p99_ms"]
    for name, value in results.items():
        print(f"{name:>24}: {value:.4g}" if isinstance(value, float) else f"{name:>24}: {value}")
    write_results("bench_expiry", results)


if __name__ == "__main__":
    main()
